//! Images: loaded from docker and OCI archives, pulled from a real registry, run with their
//! configuration honoured, refused when corrupt, and removed only when unused.
use std::{fs, path::Path, process::Command};

use hostnetd_tests::{
    describe, fetch, probe_on_host, registry::Registry, sample_image, skip_unless_root, stderr,
    stdout, taken, TestHost,
};

fn images_json(host: &TestHost) -> Vec<serde_json::Value> {
    let output = host.exec(&["images", "--format", "json"]);
    assert!(output.status.success(), "images: {}", describe(&output));
    serde_json::from_str(&stdout(&output)).expect("images --format json")
}

fn all_tags(host: &TestHost) -> Vec<String> {
    images_json(host)
        .iter()
        .flat_map(|image| image["tags"].as_array().cloned().unwrap_or_default())
        .filter_map(|tag| tag.as_str().map(str::to_string))
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn image_store(host: &TestHost) -> std::path::PathBuf {
    host.scratch().join("state/images")
}

/// Nothing of a failed import stays: no record, blob, layer or staging directory.
fn assert_store_empty(host: &TestHost) {
    let store = image_store(host);
    for sub in ["records", "blobs/sha256", "layers", "tmp"] {
        assert_eq!(
            entries(&store.join(sub)),
            Vec::<String>::new(),
            "{sub} is not empty"
        );
    }
}

fn load(host: &TestHost, archive: &Path) -> String {
    let output = host.exec(&["load", "-i", &archive.display().to_string()]);
    assert!(output.status.success(), "load: {}", describe(&output));
    stdout(&output)
}

fn run_output(host: &TestHost, args: &[&str]) -> String {
    let mut full = vec!["run", "--rm"];
    full.extend(args);
    let output = host.exec(&full);
    assert!(
        output.status.success(),
        "run {args:?}: {}",
        describe(&output)
    );
    stdout(&output)
}

#[test]
fn archives_of_both_formats_load_share_layers_and_run() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let busybox = sample_image("busybox.tar");
    assert_eq!(load(&host, &busybox).trim(), "Loaded image: busybox:latest");

    // The same image as a docker-archive, converted by skopeo: another tag, the same layer.
    let docker_archive = host.scratch().join("busybox-docker.tar");
    let converted = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", busybox.display()))
        .arg(format!(
            "docker-archive:{}:hostnetd-test/busybox-docker:v1",
            docker_archive.display()
        ))
        .output()
        .expect("skopeo");
    assert!(converted.status.success(), "{}", describe(&converted));
    assert_eq!(
        load(&host, &docker_archive).trim(),
        "Loaded image: hostnetd-test/busybox-docker:v1"
    );
    let web = load(&host, &sample_image("web.tar"));
    assert_eq!(web.trim(), "Loaded image: hostnetd-test/web:latest");

    let tags = all_tags(&host);
    for tag in [
        "busybox:latest",
        "hostnetd-test/busybox-docker:v1",
        "hostnetd-test/web:latest",
    ] {
        assert!(tags.contains(&tag.to_string()), "{tag} not in {tags:?}");
    }
    // busybox is one layer, shared by all three images; web adds one of its own.
    assert_eq!(entries(&image_store(&host).join("layers")).len(), 2);

    assert_eq!(
        run_output(&host, &["busybox", "echo", "from oci"]),
        "from oci\n"
    );
    assert_eq!(
        run_output(
            &host,
            &["hostnetd-test/busybox-docker:v1", "echo", "from docker"]
        ),
        "from docker\n"
    );
    // The writable layer is the container's own: a file written in one run is gone in the next.
    assert_eq!(
        run_output(
            &host,
            &[
                "busybox",
                "sh",
                "-c",
                "echo x > /etc/marker; cat /etc/marker"
            ]
        ),
        "x\n"
    );
    assert_eq!(
        run_output(
            &host,
            &["busybox", "sh", "-c", "test -e /etc/marker; echo $?"]
        ),
        "1\n"
    );
    assert_eq!(
        entries(&host.scratch().join("state/rootfs")),
        Vec::<String>::new(),
        "--rm left a writable layer"
    );
    host.assert_no_container_left();
}

#[test]
fn image_config_is_honoured_and_exposed_ports_are_owned() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    load(&host, &sample_image("web.tar"));
    // No --ports: the image's ExposedPorts (20480/tcp, 20481/udp) are owned.
    let started = host.exec(&["run", "-d", "--name", "web", "hostnetd-test/web"]);
    assert!(started.status.success(), "{}", describe(&started));
    let view = host.inspect("web");
    assert_eq!(view["image"], "hostnetd-test/web:latest");
    assert_eq!(
        view["exposed_ports"],
        serde_json::json!(["20480/tcp", "20481/udp"])
    );
    let owned: Vec<&str> = (view["ports"].as_array().unwrap().iter())
        .filter_map(|port| port["port"].as_str())
        .collect();
    assert_eq!(owned, ["20480/tcp", "20481/udp"]);
    // Entrypoint + Cmd run as the image's User in its WorkingDir: busybox httpd serves /www.
    let page = wait_for_page(20480);
    assert!(page.contains("hostnetd web test page"), "{page}");
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "20480"]), vec![taken()]);

    // A second container of the image would own the same ports: refused, naming the owner.
    let conflict = host.exec(&["run", "--rm", "hostnetd-test/web", "true"]);
    assert!(!conflict.status.success());
    assert!(
        stderr(&conflict).contains("container web"),
        "{}",
        describe(&conflict)
    );

    // Env, WorkingDir and User from the image; a command replaces Cmd, not Entrypoint.
    let defaults = run_output(
        &host,
        &[
            "--ports",
            "20482",
            "hostnetd-test/web",
            "sh",
            "-c",
            "pwd; id -u; echo $GREETING",
        ],
    );
    assert_eq!(defaults, "/www\n1000\nhello-from-image\n");
    // Flags override each of them.
    let overridden = run_output(
        &host,
        &[
            "--ports",
            "20482",
            "-e",
            "GREETING=overridden",
            "-w",
            "/tmp",
            "-u",
            "root",
            "--entrypoint",
            "/bin/sh",
            "hostnetd-test/web",
            "-c",
            "pwd; id -u; echo $GREETING",
        ],
    );
    assert_eq!(overridden, "/tmp\n0\noverridden\n");

    // rmi: refused while web runs, and while it exists (exited) without --force.
    let refused = host.exec(&["rmi", "hostnetd-test/web"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("used by container web"),
        "{}",
        describe(&refused)
    );
    assert!(host.exec(&["stop", "-t", "2", "web"]).status.success());
    let still = host.exec(&["rmi", "hostnetd-test/web"]);
    assert!(!still.status.success(), "{}", describe(&still));
    assert!(host.exec(&["rm", "web"]).status.success());
    let removed = host.exec(&["rmi", "hostnetd-test/web"]);
    assert!(removed.status.success(), "{}", describe(&removed));
    assert!(stdout(&removed).contains("Untagged: hostnetd-test/web:latest"));
    assert_store_empty(&host);
    host.assert_no_container_left();
}

fn wait_for_page(port: u16) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match fetch(port) {
            Ok(page) if !page.is_empty() => return page,
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => panic!("nothing served on {port}: {other:?}"),
        }
    }
}

#[test]
fn nginx_is_pulled_from_a_registry_and_serves_on_an_owned_port() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let registry = Registry::start(host.scratch(), 20600);
    let nginx = registry.push(&sample_image("nginx.tar"), "library/nginx:1");

    // A plain-HTTP registry is not used unless named insecure, and the error says so.
    let https = host.exec(&["pull", &nginx]);
    assert!(!https.status.success());
    assert!(
        stderr(&https).contains("--insecure-registry 127.0.0.1:20600"),
        "{}",
        describe(&https)
    );
    assert_store_empty(&host);

    // `run` pulls a missing image, then runs it; nginx's port moved into our range.
    let run = host.exec(&[
        "run",
        "-d",
        "--name",
        "nginx",
        "--insecure-registry",
        &registry.address,
        "-e",
        "NGINX_PORT=20610",
        "--ports",
        "20610",
        &nginx,
    ]);
    assert!(run.status.success(), "{}", describe(&run));
    assert!(
        stderr(&run).contains("Unable to find image"),
        "{}",
        describe(&run)
    );
    let page = wait_for_page(20610);
    assert!(page.contains("Welcome to nginx on hostnetd"), "{page}");
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "20610"]), vec![taken()]);
    let logs = host.exec(&["logs", "nginx"]);
    assert!(
        stdout(&logs).contains("\"GET / HTTP/1.0\" 200"),
        "{}",
        describe(&logs)
    );
    let view = host.inspect("nginx");
    assert_eq!(view["exposed_ports"], serde_json::json!(["80/tcp"]));
    assert!(host.exec(&["stop", "-t", "5", "nginx"]).status.success());
    assert_eq!(
        host.inspect("nginx")["exit_code"],
        0,
        "nginx stops cleanly on its StopSignal"
    );

    // An image the registry does not have, and a registry that is not there.
    let unknown = host.exec(&[
        "pull",
        "--insecure-registry",
        &registry.address,
        &format!("{}/library/nope:1", registry.address),
    ]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("not found"),
        "{}",
        describe(&unknown)
    );
    let gone = host.exec(&[
        "pull",
        "--insecure-registry",
        "127.0.0.1:20699",
        "127.0.0.1:20699/library/nginx:1",
    ]);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("Connection refused"),
        "{}",
        describe(&gone)
    );
    host.exec(&["rm", "nginx"]);
    host.assert_no_container_left();
}

#[test]
fn corrupt_blobs_and_archives_are_refused_and_nothing_is_stored() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let registry = Registry::start(host.scratch(), 20601);
    let busybox = registry.push(&sample_image("busybox.tar"), "library/busybox:1");
    // Flip bytes in the middle of every layer-sized blob the registry stores.
    let mut corrupted = 0;
    for blob in find_files(&registry.storage.join("docker/registry/v2/blobs"), "data") {
        let mut bytes = fs::read(&blob).unwrap();
        if bytes.len() > 100_000 {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            fs::write(&blob, bytes).unwrap();
            corrupted += 1;
        }
    }
    assert_eq!(corrupted, 1, "busybox has one layer");
    let pull = host.exec(&["pull", "--insecure-registry", &registry.address, &busybox]);
    assert!(!pull.status.success());
    assert!(stderr(&pull).contains("Digest"), "{}", describe(&pull));
    assert_store_empty(&host);

    let archive = sample_image("busybox.tar");
    let bytes = fs::read(&archive).unwrap();
    let truncated = host.scratch().join("truncated.tar");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_a_tar = host.scratch().join("text.tar");
    fs::write(&not_a_tar, "this is not an archive\n").unwrap();
    let tampered = tamper_with_layer(&host, &archive);
    for (file, expected) in [
        (&truncated, "not a readable image archive"),
        (&not_a_tar, "not a readable image archive"),
        (&tampered, "corrupt"),
    ] {
        let output = host.exec(&["load", "-i", &file.display().to_string()]);
        assert!(!output.status.success(), "{}", describe(&output));
        assert!(
            stderr(&output).contains(expected),
            "{}: {}",
            file.display(),
            describe(&output)
        );
        assert_store_empty(&host);
    }
    let missing = host.exec(&["run", "--rm", "--pull", "never", "busybox", "true"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no such image: busybox"),
        "{}",
        describe(&missing)
    );
    host.assert_no_container_left();
}

/// A copy of an oci-archive whose layer blob has one byte changed (its name still claims the
/// old digest).
fn tamper_with_layer(host: &TestHost, archive: &Path) -> std::path::PathBuf {
    let dir = host.scratch().join("tampered");
    fs::create_dir_all(&dir).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let layer = find_files(&dir.join("blobs/sha256"), "")
        .into_iter()
        .max_by_key(|path| fs::metadata(path).map(|m| m.len()).unwrap_or(0))
        .expect("a layer blob");
    let mut bytes = fs::read(&layer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&layer, bytes).unwrap();
    let output = host.scratch().join("tampered.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&output)
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    output
}

/// Files under `dir` named `name` (any name when empty).
fn find_files(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_files(&path, name));
        } else if name.is_empty() || entry.file_name() == name {
            found.push(path);
        }
    }
    found
}
