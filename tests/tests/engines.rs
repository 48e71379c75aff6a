//! hostnetd-runc under a real engine: a private dockerd (Debian's docker.io) with hostnetd-runc
//! registered as the runtime `hostnetd`, its containers on the host network owning the ports
//! their `io.hostnetd.ports` label declares; the same through containerd's `ctr` and podman
//! with annotations. Ports 26200-26299.
use std::net::TcpListener;

use hostnetd_tests::{
    denied, describe,
    engines::{TestContainerd, TestDocker, TestPodman},
    fetch, sample_image, skip_unless_root, stdout, taken, TestHost,
};

const IMAGE: &str = "hostnetd-test/busybox:latest";

/// A test host whose daemon already runs, as a host's service manager would run it: a daemon
/// that hostnetd-runc starts itself lives in the cgroup of the engine process that called it
/// (podman's conmon), which then cannot be removed while it runs.
fn host_with_daemon() -> TestHost {
    let host = TestHost::new();
    let info = host.exec(&["info"]);
    assert!(info.status.success(), "{}", describe(&info));
    host
}

fn docker_for(host: &TestHost, live_restore: bool) -> TestDocker {
    let docker = TestDocker::start(host, live_restore);
    docker.load_sample("busybox.tar", IMAGE);
    docker
}

/// `docker run -d` of a host-network container under hostnetd-runc declaring `ports`.
fn run_args<'a>(name: &'a str, declaration: &'a str, command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "-d", "--name", name, "--runtime", "hostnetd"];
    args.extend(["--network", "host", "-l", declaration, IMAGE]);
    args.extend(command);
    args
}

/// What a host bind of `port` on every address got: Ok, or the errno.
fn host_bind(port: u16) -> Result<(), i32> {
    TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .map_err(|error| error.raw_os_error().unwrap_or(0))
}

/// The text libc gives `errno` (busybox tools print it after their own words).
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    text.split(" (os error")
        .next()
        .unwrap_or_default()
        .to_string()
}

fn wait_until_serving(port: u16) -> String {
    for _ in 0..100 {
        if let Ok(reply) = fetch(port) {
            return reply;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("nothing serves on port {port}");
}

fn names(host: &TestHost) -> String {
    let ps = host.exec(&["ps", "-a"]);
    assert!(ps.status.success(), "{}", describe(&ps));
    stdout(&ps)
}

#[test]
fn docker_containers_on_the_host_network_own_their_declared_ports() {
    if skip_unless_root() {
        return;
    }
    let host = host_with_daemon();
    let docker = docker_for(&host, false);
    let declaration = "io.hostnetd.ports=26200,26201";
    docker.ok(&run_args(
        "web",
        declaration,
        &["httpd", "-f", "-p", "26200"],
    ));
    assert!(wait_until_serving(26200).starts_with("HTTP/1"));

    let inspect = host.inspect("docker/web");
    assert_eq!(inspect["engine"], "docker", "{inspect}");
    assert_eq!(inspect["engine_name"], "web", "{inspect}");
    assert_eq!(inspect["image"], IMAGE, "{inspect}");
    assert_eq!(inspect["ports"][1]["port"], "26201/tcp", "{inspect}");
    assert!(names(&host).contains("docker/web"));
    // Declared but unbound: the host cannot take it meanwhile.
    assert_eq!(host_bind(26201), Err(taken()));
    assert_eq!(host_bind(26200), Err(taken()));

    // A process docker exec'd into the container is held to its ports.
    let exec = docker.docker(&["exec", "web", "nc", "-l", "-p", "26202"]);
    assert!(!exec.status.success());
    assert!(
        String::from_utf8_lossy(&exec.stderr).contains(&strerror(denied())),
        "{}",
        describe(&exec)
    );

    // A second container for an owned port: docker's own error names the owner.
    let second = docker.docker(&run_args(
        "second",
        "io.hostnetd.ports=26200",
        &["sleep", "60"],
    ));
    assert_eq!(second.status.code(), Some(125), "{}", describe(&second));
    let error = String::from_utf8_lossy(&second.stderr);
    assert!(
        error.contains("port 26200/tcp is owned by container docker/web"),
        "{error}"
    );
    assert!(!names(&host).contains("docker/second"));

    // Undeclared: the container owns nothing and binds nothing.
    let undeclared = docker.docker(&[
        "run",
        "--rm",
        "--runtime",
        "hostnetd",
        "--network",
        "host",
        IMAGE,
        "nc",
        "-l",
        "-p",
        "26210",
    ]);
    assert!(!undeclared.status.success());
    assert!(
        String::from_utf8_lossy(&undeclared.stderr).contains(&strerror(denied())),
        "{}",
        describe(&undeclared)
    );

    // A container with a network namespace of its own passes through untouched, and binds
    // the owned port number in its own port space.
    let isolated = docker.ok(&[
        "run",
        "--rm",
        "--runtime",
        "hostnetd",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "nc -l -p 26200 & sleep 0.5; kill $! && echo bound",
    ]);
    assert_eq!(isolated, "bound");

    docker.ok(&["rm", "-f", "web"]);
    assert!(!names(&host).contains("docker/web"));
    assert_eq!(host_bind(26200), Ok(()));
    assert_eq!(host_bind(26201), Ok(()));
}

#[test]
fn bad_declarations_fail_the_engines_create_and_leave_nothing() {
    if skip_unless_root() {
        return;
    }
    let host = host_with_daemon();
    let docker = docker_for(&host, false);
    for (declaration, complaint) in [
        ("io.hostnetd.ports=http", "io.hostnetd.ports: "),
        (
            "io.hostnetd.egress-allow=10.0.0.0/33",
            "io.hostnetd.egress-allow",
        ),
    ] {
        let run = docker.docker(&run_args("bad", declaration, &["sleep", "60"]));
        assert_eq!(run.status.code(), Some(125), "{}", describe(&run));
        let error = String::from_utf8_lossy(&run.stderr);
        assert!(error.contains(complaint), "{declaration}: {error}");
        assert_eq!(
            docker.ok(&["inspect", "-f", "{{.State.Running}}", "bad"]),
            "false"
        );
        docker.ok(&["rm", "-f", "bad"]);
    }
    let ps = host.exec(&["ps", "-a", "-q"]);
    assert!(ps.status.success(), "{}", describe(&ps));
    assert_eq!(stdout(&ps).trim(), "", "hostnetd kept a record");
}

#[test]
fn enforcement_survives_restarts_of_hostnetd_and_dockerd() {
    if skip_unless_root() {
        return;
    }
    let host = host_with_daemon();
    let mut docker = docker_for(&host, true);
    let declaration = "io.hostnetd.ports=26220,26221";
    docker.ok(&run_args(
        "web",
        declaration,
        &["httpd", "-f", "-p", "26220"],
    ));
    wait_until_serving(26220);

    let daemon = host.daemon_pid().expect("hostnetd-runc started a daemon");
    // SAFETY: the daemon of this test's own host.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    assert_eq!(host_bind(26221), Err(taken()));
    docker.restart();
    assert_eq!(
        docker.ok(&["inspect", "-f", "{{.State.Running}}", "web"]),
        "true"
    );
    assert_eq!(host_bind(26221), Err(taken()));
    let exec = docker.docker(&["exec", "web", "nc", "-l", "-p", "26222"]);
    assert!(!exec.status.success(), "{}", describe(&exec));
    // A new daemon (started by this command) finds the container as it was.
    assert!(names(&host).contains("docker/web"));
    assert!(wait_until_serving(26220).starts_with("HTTP/1"));

    // Removed while no hostnetd daemon runs: the runtime's delete starts one and releases.
    let daemon = host.daemon_pid().expect("a daemon");
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    docker.ok(&["rm", "-f", "web"]);
    assert_eq!(host_bind(26220), Ok(()));
    assert_eq!(host_bind(26221), Ok(()));
    assert!(!names(&host).contains("docker/web"));
}

#[test]
fn containerd_clients_declare_ports_with_annotations() {
    if skip_unless_root() {
        return;
    }
    let host = host_with_daemon();
    let containerd = TestContainerd::start(&host);
    let image = format!("docker.io/{IMAGE}");
    containerd.load_sample("busybox.tar", IMAGE);
    let runtime = containerd.runtime.to_string_lossy().into_owned();
    let run = |id: &str, port: &str| {
        let declaration = "io.hostnetd.ports=26230";
        containerd.ctr(&[
            "run",
            "-d",
            "--runc-binary",
            &runtime,
            "--net-host",
            "--annotation",
            declaration,
            &image,
            id,
            "httpd",
            "-f",
            "-p",
            port,
        ])
    };
    let first = run("web", "26230");
    assert!(first.status.success(), "{}", describe(&first));
    assert!(wait_until_serving(26230).starts_with("HTTP/1"));
    let name = format!("containerd/{}/web", containerd.namespace);
    assert_eq!(host.inspect(&name)["engine"], "containerd");
    assert_eq!(host_bind(26230), Err(taken()));

    let second = run("second", "26230");
    assert!(!second.status.success(), "{}", describe(&second));
    let error = String::from_utf8_lossy(&second.stderr);
    assert!(
        error.contains(&format!("port 26230/tcp is owned by container {name}")),
        "{error}"
    );

    containerd.remove("web");
    assert_eq!(host_bind(26230), Ok(()));
    assert!(!names(&host).contains(&name));
}

#[test]
fn podman_containers_declare_ports_with_annotations() {
    if skip_unless_root() {
        return;
    }
    let host = host_with_daemon();
    let podman = TestPodman::new(&host);
    podman.ok(&["load", "-i", &sample_image("busybox.tar").to_string_lossy()]);
    let image = "localhost/busybox:latest";
    let declaration = ["--annotation", "io.hostnetd.ports=26240"];
    let first = podman.run_detached(
        &[&["--name", "web"][..], &declaration].concat(),
        &[image, "httpd", "-f", "-p", "26240"],
    );
    assert!(first.status.success(), "{}", describe(&first));
    assert!(wait_until_serving(26240).starts_with("HTTP/1"));
    assert_eq!(host.inspect("podman/web")["engine"], "podman");
    assert_eq!(host_bind(26240), Err(taken()));

    let second = podman.run_detached(
        &[&["--name", "second"][..], &declaration].concat(),
        &[image, "httpd", "-f", "-p", "26240"],
    );
    assert!(!second.status.success(), "{}", describe(&second));
    let error = String::from_utf8_lossy(&second.stderr);
    assert!(
        error.contains("port 26240/tcp is owned by container podman/web"),
        "{error}"
    );

    podman.ok(&["rm", "--force", "--time", "0", "web"]);
    assert_eq!(host_bind(26240), Ok(()));
    assert!(!names(&host).contains("podman/web"));
}
