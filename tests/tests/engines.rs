//! hostnetd-runc under a real engine: a private dockerd (Debian's docker.io) with hostnetd-runc
//! registered as the runtime `hostnetd`, its containers on the host network owning the ports
//! their `io.hostnetd.ports` label declares; the same through containerd's `ctr` and podman
//! with annotations. Ports 26200-26299.
use std::net::TcpListener;

use hostnetd_tests::{
    cri, denied, describe,
    engines::{TestContainerd, TestDocker, TestPodman, CRI_NAMESPACE},
    fetch, netprobe, probe_results, sample_image, skip_unless_root, stdout, taken, TestHost,
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

    // The engine runs the process: hostnetd's own verbs for it name the engine's command.
    let stop = host.exec(&["stop", "docker/web"]);
    assert!(!stop.status.success());
    assert!(
        String::from_utf8_lossy(&stop.stderr).contains("use `docker stop web`"),
        "{}",
        describe(&stop)
    );
    // Its ports are hostnetd's to change, live.
    let update = host.exec(&["update", "--ports", "26200,26201,26203", "docker/web"]);
    assert!(update.status.success(), "{}", describe(&update));
    assert_eq!(host_bind(26203), Err(taken()));

    // A process docker exec'd into the container is held to its ports.
    let exec = docker.docker(&["exec", "web", "nc", "-l", "-p", "26202"]);
    assert!(!exec.status.success());
    assert!(
        String::from_utf8_lossy(&exec.stderr).contains(&strerror(denied())),
        "{}",
        describe(&exec)
    );

    // Its processes, as docker top would list them.
    let top = host.exec(&["top", "docker/web"]);
    assert!(top.status.success(), "{}", describe(&top));
    assert!(
        stdout(&top).contains("httpd -f -p 26200"),
        "{}",
        describe(&top)
    );

    // Its traffic and the refused bind are counted to it, as to hostnetd's own.
    let stats = host.exec(&["stats", "--no-stream", "--format", "json", "docker/web"]);
    assert!(stats.status.success(), "{}", describe(&stats));
    let figures: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats json");
    let web = &figures[0];
    let served = (web["ports"].as_array().into_iter().flatten())
        .find(|row| row["port"] == "26200/tcp")
        .unwrap_or_else(|| panic!("no row for 26200/tcp: {web}"));
    assert!(served["rx_bytes"].as_u64() > Some(0), "{web}");
    assert!(served["tx_bytes"].as_u64() > Some(0), "{web}");
    assert!(web["denials"]["binds"].as_u64() >= Some(1), "{web}");
    assert!(web["pids"].as_u64() >= Some(1), "{web}");

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

    // A bandwidth limit, from a label like the rest.
    let limited = run_args(
        "limited",
        "io.hostnetd.egress-rate=10mbit",
        &["sleep", "60"],
    );
    docker.ok(&limited);
    let inspect = host.inspect("docker/limited");
    assert_eq!(inspect["policy"]["egress_rate"], "10mbit", "{inspect}");
    docker.ok(&["rm", "-f", "limited"]);

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
    assert_eq!(host_bind(26203), Ok(()));
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
        (
            "io.hostnetd.egress-rate=12parsecs",
            "io.hostnetd.egress-rate: \"12parsecs\" is not a rate",
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

/// The kubelet's path: a hostNetwork pod run through containerd's CRI under the runtime
/// handler `hostnetd`, its pods' cgroups four deep (as `kubepods/<qos>/pod<uid>/<id>`) beside
/// hostnetd's own containers two deep.
#[test]
fn kubernetes_pods_declare_ports_with_annotations_through_the_cri() {
    if skip_unless_root() {
        return;
    }
    let host = host_with_daemon();
    let containerd = TestContainerd::start_with_cri(&host);
    containerd.load_sample_in(CRI_NAMESPACE, "busybox.tar", IMAGE);
    containerd.load_sample_in(CRI_NAMESPACE, "pause.tar", "hostnetd-test/pause:latest");
    let cri = containerd.cri();
    let image = format!("docker.io/{IMAGE}");
    let pod_config = |name: &str, annotations: &[(&str, &str)]| {
        let mut config = cri::host_network_pod(name, annotations);
        let uid = config
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        if let Some(linux) = config.linux.as_mut() {
            linux.cgroup_parent = format!("{}/besteffort/pod{uid}", containerd.pod_cgroup_parent());
        }
        config
    };
    let web_pod = pod_config(
        "web",
        &[
            ("io.hostnetd.ports.server", "26250"),
            ("io.hostnetd.ports", "26251"),
        ],
    );
    let pod = cri
        .run_pod_sandbox(&web_pod, "hostnetd")
        .unwrap_or_else(|e| panic!("the pod's sandbox: {e}\n{}", containerd.log()));
    let server = cri::host_network_container("server", &image, &["httpd", "-f", "-p", "26250"]);
    let server = cri
        .create_container(&pod, &server, &web_pod)
        .expect("create server");
    cri.start_container(&server).expect("start server");
    let sidecar = cri::host_network_container("sidecar", &image, &["sleep", "600"]);
    let sidecar = cri
        .create_container(&pod, &sidecar, &web_pod)
        .expect("create sidecar");
    cri.start_container(&sidecar).expect("start sidecar");

    assert!(wait_until_serving(26250).starts_with("HTTP/1"));
    let inspect = host.inspect("kubernetes/default/web/server");
    assert_eq!(inspect["engine"], "kubernetes", "{inspect}");
    assert_eq!(inspect["image"], image, "{inspect}");
    assert_eq!(inspect["ports"][0]["port"], "26250/tcp", "{inspect}");
    let sidecar_view = host.inspect("kubernetes/default/web/sidecar");
    assert_eq!(
        sidecar_view["ports"][0]["port"], "26251/tcp",
        "{sidecar_view}"
    );
    assert_eq!(host_bind(26250), Err(taken()));
    assert_eq!(host_bind(26251), Err(taken()));
    // The sandbox passes through: it is no container of hostnetd's.
    assert!(!names(&host).contains("kubernetes/default/web/POD"));

    // hostnetd's own containers, two levels deep, are held to their ports meanwhile.
    let own = host.run_to_end(
        "26252",
        &[],
        &[
            &netprobe(),
            "bind",
            "tcp",
            "0.0.0.0",
            "26252",
            "tcp",
            "0.0.0.0",
            "26253",
        ],
    );
    assert_eq!(probe_results(&own), vec![0, denied()], "{}", describe(&own));

    // Another pod for the same port: the kubelet's CreateContainer fails naming the owner.
    let rival_pod = pod_config("rival", &[("io.hostnetd.ports", "26250")]);
    let rival = cri
        .run_pod_sandbox(&rival_pod, "hostnetd")
        .expect("the rival's sandbox");
    let contender = cri::host_network_container("server", &image, &["sleep", "600"]);
    let refused = cri
        .create_container(&rival, &contender, &rival_pod)
        .and_then(|id| cri.start_container(&id));
    let error = refused.expect_err("a second owner of 26250");
    assert!(
        error.contains("port 26250/tcp is owned by container kubernetes/default/web/server"),
        "{error}"
    );

    for container in [&server, &sidecar] {
        cri.stop_container(container, 0).expect("stop");
        cri.remove_container(container).expect("remove");
    }
    for sandbox in [&pod, &rival] {
        cri.stop_pod_sandbox(sandbox).expect("stop the sandbox");
        cri.remove_pod_sandbox(sandbox).expect("remove the sandbox");
    }
    assert_eq!(host_bind(26250), Ok(()));
    assert_eq!(host_bind(26251), Ok(()));
    assert!(!names(&host).contains("kubernetes/"));
}
