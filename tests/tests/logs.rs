//! Container logs with limits: `--log-opt max-size=100k --log-opt max-file=3` keeps a
//! container that writes without pause within 300k of disk, and `logs`, `logs -f` and the
//! foreground `run` read across the rotated files.
use std::{
    collections::HashSet,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use hostnetd_tests::*;

const LIMITS: [&str; 4] = ["--log-opt", "max-size=100k", "--log-opt", "max-file=3"];
const MAX_SIZE: u64 = 100 * 1024;
const MAX_FILE: usize = 3;

/// Numbered lines, 1 to `count`, a pause of a millisecond after every ten: a moderate pace a
/// follower keeps up with (about 100 kB a second, a rotation a second).
fn paced_writer(count: u32) -> String {
    format!(
        "sleep 1; i=0; while [ $i -lt {count} ]; do i=$((i+1)); echo $i; \
         if [ $((i % 10)) -eq 0 ]; then sleep 0.001; fi; done"
    )
}

/// `hostnetd run -d --name NAME --rootfs / [extra] -- sh -c SCRIPT`; the container's id.
fn run_detached(host: &TestHost, name: &str, extra: &[&str], script: &str) -> String {
    let mut args = vec!["run", "-d", "--name", name, "--rootfs", "/"];
    args.extend(extra);
    args.extend(["--", "/bin/sh", "-c", script]);
    let output = host.exec(&args);
    assert!(output.status.success(), "run -d: {}", describe(&output));
    stdout(&output).trim().to_string()
}

/// The container's log files (`<id>.log`, `<id>.log.N`, and a new one mid-rotation).
fn log_files(host: &TestHost, id: &str) -> Vec<PathBuf> {
    let prefix = format!("{id}.log");
    (std::fs::read_dir(host.scratch().join("state/logs")).expect("the logs directory"))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.strip_prefix(&prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
        .collect()
}

/// The disk the log holds: (bytes, files with content), each file counted once whatever its
/// names (a rotation names the full file twice for a moment).
fn disk_use(host: &TestHost, id: &str) -> (u64, usize) {
    let mut seen = HashSet::new();
    let sizes: Vec<u64> = (log_files(host, id).iter())
        .filter_map(|path| std::fs::metadata(path).ok())
        .filter(|metadata| seen.insert(metadata.ino()))
        .map(|metadata| metadata.len())
        .collect();
    (
        sizes.iter().sum(),
        sizes.iter().filter(|&&size| size > 0).count(),
    )
}

fn numbers(text: &str) -> Vec<u64> {
    (text.lines())
        .map(|line| {
            line.parse()
                .unwrap_or_else(|_| panic!("not a number: {line:?}"))
        })
        .collect()
}

fn logs(host: &TestHost, args: &[&str]) -> Vec<u64> {
    let output = host.exec(&[&["logs"], args].concat());
    assert!(output.status.success(), "logs: {}", describe(&output));
    numbers(&stdout(&output))
}

fn assert_consecutive(numbers: &[u64], what: &str) {
    if let Some(pair) = numbers.windows(2).find(|pair| pair[1] != pair[0] + 1) {
        panic!(
            "{what}: {} follows {} ({} lines)",
            pair[1],
            pair[0],
            numbers.len()
        );
    }
}

/// Every number from 1 to `count`, each once, in order.
fn assert_all(numbers: &[u64], count: u32, what: &str) {
    assert_consecutive(numbers, what);
    assert_eq!(
        numbers.first(),
        Some(&1),
        "{what}: the first lines are missing"
    );
    assert_eq!(
        numbers.last(),
        Some(&u64::from(count)),
        "{what}: the last lines are missing"
    );
}

fn wait_exited(host: &TestHost, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.inspect(name)["state"] != "exited" {
        assert!(Instant::now() < deadline, "{name} did not exit");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_container_writing_without_pause_stays_within_its_limits_and_logs_reads_every_file() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let id = run_detached(
        &host,
        "chatty",
        &LIMITS,
        "i=0; while :; do i=$((i+1)); echo $i; done",
    );
    let bound = MAX_SIZE * MAX_FILE as u64;
    for _ in 0..60 {
        let (bytes, files) = disk_use(&host, &id);
        assert!(bytes <= bound, "{bytes} bytes on disk, more than {bound}");
        assert!(files <= MAX_FILE, "{files} log files");
        thread::sleep(Duration::from_millis(50));
    }
    let view = host.inspect("chatty");
    assert_eq!(view["log_config"]["driver"], "json-file");
    assert_eq!(view["log_config"]["config"]["max-size"], "100k");
    assert_eq!(view["log_config"]["config"]["max-file"], "3");
    let killed = host.exec(&["kill", "chatty"]);
    assert!(killed.status.success(), "kill: {}", describe(&killed));
    wait_exited(&host, "chatty");
    let (bytes, _) = disk_use(&host, &id);
    assert!(bytes <= bound, "{bytes} bytes on disk, more than {bound}");
    // Every file read, oldest first: one unbroken run of numbers, the oldest rotated away.
    let all = logs(&host, &["chatty"]);
    assert_consecutive(&all, "logs");
    assert!(all[0] > 1, "nothing was rotated away: {} lines", all.len());
    assert!(
        log_files(&host, &id).len() == MAX_FILE,
        "{:?}",
        log_files(&host, &id)
    );
    let tail = logs(&host, &["--tail", "5", "chatty"]);
    assert_eq!(tail, all[all.len() - 5..]);
    let removed = host.exec(&["rm", "chatty"]);
    assert!(removed.status.success(), "rm: {}", describe(&removed));
    assert_eq!(log_files(&host, &id), Vec::<PathBuf>::new());
    host.assert_no_container_left();
}

#[test]
fn logs_f_follows_across_rotations_without_losing_or_repeating_a_line() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let count = 15_000;
    let id = run_detached(&host, "paced", &LIMITS, &paced_writer(count));
    let mut follower = KillOnDrop::new(
        host.hostnetd()
            .args(["logs", "-f", "paced"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hostnetd logs -f"),
    );
    let mut out = follower
        .child()
        .stdout
        .take()
        .expect("the follower's stdout");
    let reading = thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    while follower.child().try_wait().expect("try_wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "logs -f did not end with the container"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let status = follower.finish().status;
    assert!(status.success(), "logs -f exited with {status}");
    let followed = numbers(&reading.join().expect("the reader").expect("read"));
    assert_all(&followed, count, "logs -f");
    // It did cross rotations: the first lines are gone from the disk.
    assert_eq!(log_files(&host, &id).len(), MAX_FILE);
    assert!(logs(&host, &["paced"])[0] > 1);
    let removed = host.exec(&["rm", "paced"]);
    assert!(removed.status.success(), "rm: {}", describe(&removed));
    assert_eq!(log_files(&host, &id), Vec::<PathBuf>::new());
}

#[test]
fn a_foreground_run_streams_every_line_across_rotations_and_rm_leaves_no_file() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let count = 10_000;
    let script = paced_writer(count);
    let output = host.run_to_end("", &LIMITS, &["/bin/sh", "-c", &script]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_all(&numbers(&stdout(&output)), count, "run");
    let left: Vec<_> = (std::fs::read_dir(host.scratch().join("state/logs")).expect("logs"))
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "--rm left log files: {left:?}");
    host.assert_no_container_left();
}

#[test]
fn config_toml_sets_the_defaults_and_log_opts_override_them_one_by_one() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let config = host.scratch().join("config.toml");
    std::fs::write(&config, "log_max_size = \"200k\"\nlog_max_file = 4\n").expect("config");
    host.set_env("HOSTNETD_CONFIG", &config.to_string_lossy());
    run_detached(&host, "defaults", &[], "sleep 60");
    run_detached(&host, "mixed", &["--log-opt", "max-file=2"], "sleep 60");
    for (name, size, files) in [("defaults", "200k", "4"), ("mixed", "200k", "2")] {
        let config = &host.inspect(name)["log_config"]["config"];
        assert_eq!(
            (config["max-size"].as_str(), config["max-file"].as_str()),
            (Some(size), Some(files)),
            "{name}"
        );
    }
    let removed = host.exec(&["rm", "-f", "defaults", "mixed"]);
    assert!(removed.status.success(), "rm -f: {}", describe(&removed));
    host.assert_no_container_left();
}
