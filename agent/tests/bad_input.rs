//! Bad input, table-driven: invalid flags, port specs, egress rules, policy files and API
//! bodies, each with the exact error it gets. Every case must be refused before anything
//! happens, and each one checks that nothing changed: no daemon started, no state written, no
//! cgroup made, no container recorded. None of it needs root.
use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use hostnetd::{Host, HostConfig};
use hostnetd_tests::scratch::ScratchHost;

/// `hostnetd ARGS...` fails with `exit` and `stderr` as its first line. `{dir}` stands for the
/// scratch directory (policy files live there).
struct CliCase {
    args: &'static [&'static str],
    exit: i32,
    stderr: &'static str,
}

const fn cli(args: &'static [&'static str], exit: i32, stderr: &'static str) -> CliCase {
    CliCase { args, exit, stderr }
}

/// clap's own errors (unknown flags, missing or malformed values) exit with 2.
const USAGE: i32 = 2;
/// hostnetd's errors exit with 125, as docker's do.
const REFUSED: i32 = 125;

const CLI_CASES: &[CliCase] = &[
    // Flags.
    cli(&["run", "--bogus"], USAGE, "error: unexpected argument '--bogus' found"),
    cli(&["run"], USAGE, "error: the following required arguments were not provided:"),
    cli(&["run", "--rootfs", "/"], USAGE, "error: the following required arguments were not provided:"),
    cli(&["run", "--pull", "sometimes", "busybox"], USAGE, "error: invalid value 'sometimes' for '--pull <PULL>'"),
    cli(&["stop", "-t", "soon", "web"], USAGE, "error: invalid value 'soon' for '--time <TIME>': invalid digit found in string"),
    cli(&["logs", "--tail", "-1", "web"], USAGE, "error: unexpected argument '-1' found"),
    cli(&["inspect"], USAGE, "error: the following required arguments were not provided:"),
    cli(&["completion", "tcsh"], USAGE, "error: invalid value 'tcsh' for '<SHELL>'"),
    cli(&["rename", "web", "-web"], USAGE, "error: unexpected argument '-w' found"),
    cli(&["rename", "web", "web 2"], REFUSED, "hostnetd: invalid container name \"web 2\": use letters, digits, '_', '.' and '-', starting with a letter or digit"),
    cli(&["port", "web", "http"], REFUSED, "hostnetd: invalid port \"http\": give PORT or PORT/tcp or PORT/udp, as 80/tcp"),
    cli(&["port", "web", "80/sctp"], REFUSED, "hostnetd: invalid port \"80/sctp\": give PORT or PORT/tcp or PORT/udp, as 80/tcp"),
    cli(&["update", "--no-egress-rules", "--egress-allow", "10.0.0.0/8", "web"], USAGE, "error: the argument '--no-egress-rules' cannot be used with '--egress-allow <RULE>'"),
    cli(&["--tc-attach", "clsact", "ps"], REFUSED, "hostnetd: invalid TC attach mode \"clsact\": use auto, tcx or netlink"),
    cli(&["--tc-attach", "clsact", "daemon"], REFUSED, "hostnetd: invalid TC attach mode \"clsact\": use auto, tcx or netlink"),
    cli(&["--config", "{dir}/missing.toml", "ps"], REFUSED, "hostnetd: cannot read config file {dir}/missing.toml: No such file or directory (os error 2)"),
    cli(&["--config", "{dir}/bad-config.toml", "ps"], REFUSED, "hostnetd: invalid config file {dir}/bad-config.toml: line 1: invalid type: integer `5`, expected path string"),
    cli(&["run", "--rootfs", "/", "--name=-web", "--", "true"], REFUSED, "hostnetd: invalid container name \"-web\": use letters, digits, '_', '.' and '-', starting with a letter or digit"),
    cli(&["run", "--rootfs", "/", "--restart", "sometimes", "--", "true"], REFUSED, "hostnetd: invalid restart policy \"sometimes\": use no, on-failure, on-failure:N (N >= 1) or always"),
    cli(&["run", "--rootfs", "/", "--rm", "--restart", "always", "--", "true"], REFUSED, "hostnetd: --rm and --restart cannot be combined: a restarted container is never removed"),
    cli(&["run", "--rootfs", "/", "-e", "=x", "--", "true"], REFUSED, "hostnetd: invalid environment entry \"=x\": use KEY=VALUE"),
    cli(&["run", "--rootfs", "/", "-w", "srv", "--", "true"], REFUSED, "hostnetd: invalid working directory \"srv\": it must be an absolute path inside the container"),
    cli(&["run", "--rootfs", "/", "-v", "tmp:/data", "--", "true"], REFUSED, "hostnetd: invalid volume \"tmp:/data\": both paths must be absolute"),
    cli(&["run", "--rootfs", "/", "-v", "/nonexistent:/data", "--", "true"], REFUSED, "hostnetd: invalid volume \"/nonexistent:/data\": /nonexistent: No such file or directory (os error 2)"),
    cli(&["run", "--rootfs", "/", "--cap-add", "NET_WIZARD", "--", "true"], REFUSED, "hostnetd: unknown capability \"NET_WIZARD\": use a name such as NET_RAW or CAP_NET_ADMIN, or ALL"),
    cli(&["run", "--rootfs", "/", "--entrypoint", "sh", "--", "true"], REFUSED, "hostnetd: --entrypoint applies to images; with --rootfs give the whole command"),
    cli(&["run", "--rootfs", "/nonexistent", "--", "true"], REFUSED, "hostnetd: invalid rootfs /nonexistent: No such file or directory (os error 2); give an existing host directory"),
    cli(&["run", "--rootfs", "{dir}/not-a-dir", "--", "true"], REFUSED, "hostnetd: invalid rootfs {dir}/not-a-dir: not a directory; give an existing host directory"),
    cli(&["run", "UPPER/Case"], REFUSED, "hostnetd: invalid image reference \"UPPER/Case\": invalid reference format; use [REGISTRY[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST] in lowercase"),
    cli(&["pull", "nginx:"], REFUSED, "hostnetd: invalid image reference \"nginx:\": invalid reference format; use [REGISTRY[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST] in lowercase"),
    cli(&["load", "-i", "{dir}/missing.tar"], REFUSED, "hostnetd: {dir}/missing.tar is not a file: give an image archive made by `docker save`, `podman save` or `skopeo copy`"),
    cli(&["start"], USAGE, "error: the following required arguments were not provided:"),
    cli(&["restart", "-t", "soon", "web"], USAGE, "error: invalid value 'soon' for '--time <TIME>': invalid digit found in string"),
    cli(&["run", "-it", "--rootfs", "/", "--", "sh"], REFUSED, "hostnetd: the input device is not a TTY: leave out -t to pipe input, or run `hostnetd run -it` in a terminal"),
    cli(&["attach"], USAGE, "error: the following required arguments were not provided:"),
    cli(&["attach", "--sig-proxy", "maybe", "web"], USAGE, "error: invalid value 'maybe' for '--sig-proxy <BOOL>'"),
    cli(&["exec", "web"], USAGE, "error: the following required arguments were not provided:"),
    cli(&["exec", "-w", "tmp", "web", "sh"], REFUSED, "hostnetd: invalid working directory \"tmp\": it must be an absolute path inside the container"),
    cli(&["exec", "-e", "=x", "web", "sh"], REFUSED, "hostnetd: invalid environment entry \"=x\": use KEY=VALUE"),
    cli(&["exec", "web", ""], REFUSED, "hostnetd: no command to run: give it after the container, e.g. `hostnetd exec web sh`"),
    cli(&["exec", "-it", "web", "sh"], REFUSED, "hostnetd: the input device is not a TTY: leave out -t to pipe input to the process, or run `hostnetd exec -it` in a terminal"),
    cli(&["login", "-u", "alice", "-p", "pw", "--password-stdin", "registry.lan:5000"], USAGE, "error: the argument '--password <PASSWORD>' cannot be used with '--password-stdin'"),
    cli(&["login", "-p", "pw", "registry.lan:5000"], REFUSED, "hostnetd: no username: give -u USER (standard input is not a terminal to ask on)"),
    cli(&["login", "-u", "alice", "registry.lan:5000"], REFUSED, "hostnetd: no password: give --password-stdin and pipe it in (standard input is not a terminal to ask on)"),
    cli(&["login", "--password-stdin", "registry.lan:5000"], REFUSED, "hostnetd: --password-stdin needs --username: standard input carries the password"),
    cli(&["login", "-u", "alice", "--password-stdin", "registry.lan:5000"], REFUSED, "hostnetd: no password on standard input: pipe it in, as `hostnetd login -u USER --password-stdin REGISTRY < FILE`"),
    cli(&["login", "-u", "alice", "-p", "", "registry.lan:5000"], REFUSED, "hostnetd: empty password: give the password (--password-stdin reads it from standard input)"),
    cli(&["login", "-u", "alice", "-p", "pw", "registry.lan/team"], REFUSED, "hostnetd: invalid registry name \"registry.lan/team\": give HOST[:PORT], as registry.example.com:5000"),
    cli(&["login", "-u", "alice", "-p", "pw", "registry.lan:99999"], REFUSED, "hostnetd: invalid registry name \"registry.lan:99999\": give HOST[:PORT], as registry.example.com:5000"),
    cli(&["logout", "-registry.lan"], USAGE, "error: unexpected argument '-r' found"),
    cli(&["logout", "registry_lan"], REFUSED, "hostnetd: invalid registry name \"registry_lan\": give HOST[:PORT], as registry.example.com:5000"),
    cli(&["kill", "-s", "NOPE", "web"], REFUSED, "hostnetd: invalid signal \"NOPE\": use a name such as TERM, KILL, HUP or a number from 1 to 64"),
    cli(&["kill", "-s", "65", "web"], REFUSED, "hostnetd: invalid signal \"65\": use a name such as TERM, KILL, HUP or a number from 1 to 64"),
    // Log options.
    cli(&["run", "--rootfs", "/", "--log-opt", "max-size=0", "--", "true"], REFUSED, "hostnetd: invalid --log-opt \"max-size=0\": it must be at least 1 byte; give a size in bytes or with a unit k, m or g, such as 100k, 10m or 1g"),
    cli(&["run", "--rootfs", "/", "--log-opt", "max-size=10q", "--", "true"], REFUSED, "hostnetd: invalid --log-opt \"max-size=10q\": give a size in bytes or with a unit k, m or g, such as 100k, 10m or 1g"),
    cli(&["run", "--rootfs", "/", "--log-opt", "max-file=0", "--", "true"], REFUSED, "hostnetd: invalid --log-opt \"max-file=0\": give a whole number of files from 1 to 100, such as 3"),
    cli(&["run", "--rootfs", "/", "--log-opt", "max-file=x", "--", "true"], REFUSED, "hostnetd: invalid --log-opt \"max-file=x\": give a whole number of files from 1 to 100, such as 3"),
    cli(&["run", "--rootfs", "/", "--log-opt", "max-file=101", "--", "true"], REFUSED, "hostnetd: invalid --log-opt \"max-file=101\": give a whole number of files from 1 to 100, such as 3"),
    cli(&["run", "--rootfs", "/", "--log-opt", "max-sise=1m", "--", "true"], REFUSED, "hostnetd: invalid --log-opt \"max-sise=1m\": unknown option \"max-sise\"; use max-size=SIZE or max-file=N"),
    cli(&["run", "--rootfs", "/", "--log-opt", "max-size", "--", "true"], REFUSED, "hostnetd: invalid --log-opt \"max-size\": expected KEY=VALUE, as max-size=10m or max-file=3"),
    cli(&["run", "--rootfs", "/", "--log-opt", "--", "true"], USAGE, "error: a value is required for '--log-opt <KEY=VALUE>' but none was supplied"),
    cli(&["--log-max-size", "0", "ps"], REFUSED, "hostnetd: invalid log_max_size \"0\": it must be at least 1 byte; give a size in bytes or with a unit k, m or g, such as 100k, 10m or 1g"),
    cli(&["--log-max-file", "x", "ps"], USAGE, "error: invalid value 'x' for '--log-max-file <N>': invalid digit found in string"),
    cli(&["--log-max-file", "0", "daemon"], REFUSED, "hostnetd: invalid log_max_file 0: give a whole number of files from 1 to 100, such as 3"),
    cli(&["--config", "{dir}/bad-log-size.toml", "ps"], REFUSED, "hostnetd: invalid log_max_size \"10q\": give a size in bytes or with a unit k, m or g, such as 100k, 10m or 1g"),
    cli(&["--config", "{dir}/bad-log-file.toml", "ps"], REFUSED, "hostnetd: invalid log_max_file 0: give a whole number of files from 1 to 100, such as 3"),
    cli(&["--config", "{dir}/bad-log-type.toml", "ps"], REFUSED, "hostnetd: invalid config file {dir}/bad-log-type.toml: line 1: invalid type: string \"3\", expected u32"),
    // Port specs.
    cli(&["run", "--rootfs", "/", "--ports", "0", "--", "true"], REFUSED, "hostnetd: invalid port spec \"0\": port 0 cannot be owned (ephemeral binds are always allowed); use 1-65535"),
    cli(&["run", "--rootfs", "/", "--ports", "65536", "--", "true"], REFUSED, "hostnetd: invalid port spec \"65536\": port 65536 is out of range (1-65535)"),
    cli(&["run", "--rootfs", "/", "--ports", "22090-22080", "--", "true"], REFUSED, "hostnetd: invalid port spec \"22090-22080\": the range is reversed; write it low-high"),
    cli(&["run", "--rootfs", "/", "--ports", "22080/sctp", "--", "true"], REFUSED, "hostnetd: invalid port spec \"22080/sctp\": unknown protocol \"sctp\"; use tcp or udp"),
    cli(&["run", "--rootfs", "/", "--ports", "web", "--", "true"], REFUSED, "hostnetd: invalid port spec \"web\": \"web\" is not a port number (1-65535)"),
    cli(&["run", "--rootfs", "/", "--ports", "22080,,22081", "--", "true"], REFUSED, "hostnetd: invalid port spec \"\": empty item; expected [ADDR:]PORT[-PORT][/tcp|udp]"),
    cli(&["run", "--rootfs", "/", "--ports", "::1:22080", "--", "true"], REFUSED, "hostnetd: invalid port spec \"::1:22080\": \"::1\" is not an IP address; IPv6 goes in brackets, as [::1]:8080"),
    cli(&["run", "--rootfs", "/", "--ports", "[::1]", "--", "true"], REFUSED, "hostnetd: invalid port spec \"[::1]\": \"[::1]\" is not an IP address; IPv6 goes in brackets, as [::1]:8080"),
    cli(&["run", "--rootfs", "/", "--ports", "22080-", "--", "true"], REFUSED, "hostnetd: invalid port spec \"22080-\": \"\" is not a port number (1-65535)"),
    cli(&["run", "--rootfs", "/", "--ports", "127.0.0.1:22080,127.0.0.2:22080,127.0.0.3:22080,127.0.0.4:22080,127.0.0.5:22080", "--", "true"], REFUSED, "hostnetd: invalid port spec \"127.0.0.5:22080/tcp\": port 22080/tcp is restricted to more than 4 addresses"),
    // Egress rules.
    cli(&["run", "--rootfs", "/", "--egress-allow", "10.0.0.1/8", "--", "true"], REFUSED, "hostnetd: invalid egress rule \"10.0.0.1/8\": 10.0.0.1/8 has host bits set: did you mean 10.0.0.0/8?; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443"),
    cli(&["run", "--rootfs", "/", "--egress-allow", "", "--", "true"], REFUSED, "hostnetd: invalid egress rule \"\": it is empty; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443"),
    cli(&["run", "--rootfs", "/", "--egress-deny", "10.0.0.0/8,,10.1.0.0/16", "--", "true"], REFUSED, "hostnetd: invalid egress rule \"\": it is empty; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443"),
    cli(&["run", "--rootfs", "/", "--egress-deny", "nonsense", "--", "true"], REFUSED, "hostnetd: invalid egress rule \"nonsense\": \"nonsense\" is not an IP address; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443"),
    cli(&["update", "--egress-allow", "10.0.0.0/8:70000", "web"], REFUSED, "hostnetd: invalid egress rule \"10.0.0.0/8:70000\": port \"70000\" is not a number from 1 to 65535; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443"),
    cli(&["update", "web"], REFUSED, "hostnetd: nothing to update: give --ports SPEC (or --no-ports), --egress-allow, --egress-deny RULE (or --no-egress-rules), --ingress-allow RULE (or --no-ingress-rules) and/or --egress-rate, --ingress-rate RATE (or --no-egress-rate, --no-ingress-rate)"),
    cli(&["update", "--egress-rate", "12 parsecs", "web"], REFUSED, "hostnetd: egress_rate: \"12 parsecs\" is not a rate: use a number with a unit as tc writes it (kbit, mbit, gbit, or bytes per second with kbps, mbps), e.g. 200mbit or 200mbit:2mb"),
    // Policy files.
    cli(&["run", "--rootfs", "/", "--policy", "{dir}/missing.toml", "--", "true"], REFUSED, "hostnetd: cannot read policy file {dir}/missing.toml: No such file or directory (os error 2)"),
    cli(&["run", "--rootfs", "/", "--policy", "{dir}/unknown-key.toml", "--", "true"], REFUSED, "hostnetd: policy file {dir}/unknown-key.toml, line 2: unknown field `portz`, expected one of `ports`, `raw_sockets`, `egress`, `ingress`"),
    cli(&["run", "--rootfs", "/", "--policy", "{dir}/wrong-type.toml", "--", "true"], REFUSED, "hostnetd: policy file {dir}/wrong-type.toml, line 2: invalid type: string \"10.0.0.0/8\", expected a sequence"),
    cli(&["run", "--rootfs", "/", "--policy", "{dir}/bad-port.toml", "--", "true"], REFUSED, "hostnetd: policy file {dir}/bad-port.toml, line 2: invalid port spec \"99999\": port 99999 is out of range (1-65535)"),
    cli(&["run", "--rootfs", "/", "--policy", "{dir}/bad-rule.toml", "--", "true"], REFUSED, "hostnetd: policy file {dir}/bad-rule.toml, line 3: invalid egress rule \"10.0.0.1/8\": 10.0.0.1/8 has host bits set: did you mean 10.0.0.0/8?; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443"),
    cli(&["run", "--rootfs", "/", "--policy", "{dir}/unclosed.toml", "--", "true"], REFUSED, "hostnetd: policy file {dir}/unclosed.toml, line 1: unclosed array, expected `]`"),
    cli(&["run", "--rootfs", "/", "--policy", "{dir}/too-many-rules.toml", "--", "true"], REFUSED, "hostnetd: policy file {dir}/too-many-rules.toml: too many egress rules: 257 (at most 256 per container)"),
    cli(&["run", "--rootfs", "/", "--policy", "{dir}/wide-overlap.toml", "--", "true"], REFUSED, "hostnetd: policy file {dir}/wide-overlap.toml: too many egress rules apply to 10.0.0.16/32: 17 (at most 16 rules may cover one prefix, its own and those of wider prefixes)"),
];

/// The policy and config files the cases above name, by file name.
fn files() -> Vec<(&'static str, String)> {
    let many: Vec<String> = (0..257)
        .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
        .collect();
    // 10.0.0.16/32 lies under 16 wider prefixes (/16 to /31), and has a rule of its own.
    let nested: Vec<String> = (16..=32)
        .map(|bits: u32| {
            let network = 0x0a00_0010u32 & (u32::MAX << (32 - bits));
            format!("\"{}/{bits}\"", std::net::Ipv4Addr::from(network))
        })
        .collect();
    vec![
        ("bad-config.toml", "state_dir = 5\n".into()),
        ("bad-log-size.toml", "log_max_size = \"10q\"\n".into()),
        ("bad-log-file.toml", "log_max_file = 0\n".into()),
        ("bad-log-type.toml", "log_max_file = \"3\"\n".into()),
        ("unknown-key.toml", "ports = [\"80\"]\nportz = []\n".into()),
        (
            "wrong-type.toml",
            "[egress]\nallow = \"10.0.0.0/8\"\n".into(),
        ),
        ("bad-port.toml", "ports = [\"22080\",\n \"99999\"]\n".into()),
        (
            "bad-rule.toml",
            "[egress]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.0.0.1/8\"]\n".into(),
        ),
        ("unclosed.toml", "ports = [\n".into()),
        (
            "too-many-rules.toml",
            format!("[egress]\nallow = [{}]\n", many.join(", ")),
        ),
        (
            "wide-overlap.toml",
            format!("[egress]\ndeny = [{}]\n", nested.join(", ")),
        ),
    ]
}

/// A scratch host whose hostnetd can do no harm: no BPF filesystem (none can be mounted
/// below a file), no runc, an empty config. A case that got through could change nothing.
fn harmless_host(tag: &str) -> ScratchHost {
    let mut host = ScratchHost::new(
        &format!("hostnetd-bad-input-{tag}"),
        Path::new(env!("CARGO_BIN_EXE_hostnetd")),
    );
    let dir = host.scratch().to_path_buf();
    std::fs::write(dir.join("empty-config.toml"), "").unwrap();
    std::fs::write(dir.join("not-a-dir"), "").unwrap();
    for (key, value) in [
        ("HOSTNETD_CONFIG", dir.join("empty-config.toml")),
        ("HOSTNETD_BPFFS", dir.join("not-a-dir/bpffs")),
        ("HOSTNETD_BPF_DIR", dir.join("not-a-dir/bpffs/hostnetd")),
        ("HOSTNETD_RUNC", PathBuf::from("/nonexistent/runc")),
    ] {
        host.set_env(key, &value.to_string_lossy());
    }
    host
}

/// Every path below the scratch directory, sorted.
fn listing(host: &ScratchHost) -> Vec<PathBuf> {
    fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            into.push(entry.path());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), into);
            }
        }
    }
    let mut paths = Vec::new();
    walk(host.scratch(), &mut paths);
    paths.sort();
    paths
}

#[test]
fn bad_command_lines_are_refused_with_exact_errors_and_change_nothing() {
    let host = harmless_host("cli");
    let dir = host.scratch().display().to_string();
    for (name, text) in files() {
        std::fs::write(host.scratch().join(name), text).unwrap();
    }
    let before = listing(&host);
    let mismatches: Vec<String> = CLI_CASES
        .iter()
        .filter_map(|case| {
            let args: Vec<String> = case.args.iter().map(|a| a.replace("{dir}", &dir)).collect();
            let output = (host.hostnetd())
                .args(&args)
                .env_remove("HOSTNETD_SOCKET")
                .output()
                .expect("run hostnetd");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            let expected = case.stderr.replace("{dir}", &dir);
            let first_line = stderr.lines().next().unwrap_or_default();
            let ours_in_one_line = case.exit != REFUSED || stderr.lines().count() == 1;
            let right = output.status.code() == Some(case.exit)
                && first_line == expected
                && ours_in_one_line
                && output.stdout.is_empty();
            // Checked after every case, so that a failure names the case that did it.
            assert_eq!(listing(&host), before, "{args:?} left files behind");
            assert!(!host.cgroup_parent_path().exists(), "{args:?} created a cgroup");
            (!right).then(|| {
                format!(
                    "hostnetd {args:?}\n  expected {} {expected:?}\n  got      {:?} {stderr:?} (stdout {:?})",
                    case.exit,
                    output.status.code(),
                    String::from_utf8_lossy(&output.stdout)
                )
            })
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// An API request and the exact message of its `400 invalid_argument` answer.
struct ApiCase {
    method: &'static str,
    path: &'static str,
    body: &'static str,
    message: &'static str,
}

const fn api(
    method: &'static str,
    path: &'static str,
    body: &'static str,
    message: &'static str,
) -> ApiCase {
    ApiCase {
        method,
        path,
        body,
        message,
    }
}

const API_CASES: &[ApiCase] = &[
    // POST /v1/containers: the body.
    api("POST", "/v1/containers", "{not json", "invalid request body: key must be a string at line 1 column 2"),
    api("POST", "/v1/containers", "", "invalid request body: EOF while parsing a value at line 1 column 0"),
    api("POST", "/v1/containers", "\"busybox\"", "invalid request body: invalid type: string \"busybox\", expected struct RunSpec at line 1 column 9"),
    api("POST", "/v1/containers", r#"{"image":"busybox","bogus":1}"#, "invalid request body: unknown field `bogus`, expected one of `name`, `image`, `rootfs`, `command`, `entrypoint`, `ports`, `env`, `volumes`, `workdir`, `user`, `cap_add`, `cap_drop`, `egress_allow`, `egress_deny`, `ingress_allow`, `egress_rate`, `ingress_rate`, `restart`, `log_opts`, `auto_remove`, `tty`, `interactive`, `terminal_size` at line 1 column 26"),
    api("POST", "/v1/containers/web/exec", r#"{"command":[]}"#, "no command to run: give it after the container, e.g. `hostnetd exec web sh`"),
    api("POST", "/v1/containers/web/exec", r#"{"command":["sh"],"tty":"yes"}"#, "invalid request body: invalid type: string \"yes\", expected a boolean at line 1 column 29"),
    api("POST", "/v1/containers", r#"{"image":"busybox","terminal_size":[0]}"#, "invalid request body: invalid length 1, expected an array of length 2 at line 1 column 38"),
    api("POST", "/v1/containers", r#"{"image":"busybox","ports":"80"}"#, "invalid request body: invalid type: string \"80\", expected a sequence at line 1 column 31"),
    api("POST", "/v1/containers", r#"{"image":"busybox","auto_remove":"yes"}"#, "invalid request body: invalid type: string \"yes\", expected a boolean at line 1 column 38"),
    api("POST", "/v1/containers", "{}", "no image: give the image to run (or --rootfs DIR to run a host directory)"),
    api("POST", "/v1/containers", r#"{"image":"busybox","rootfs":"/"}"#, "give an image or --rootfs DIR, not both"),
    api("POST", "/v1/containers", r#"{"rootfs":"/"}"#, "no command: give the command to run after the flags"),
    api("POST", "/v1/containers", r#"{"rootfs":"/nonexistent","command":["true"]}"#, "invalid rootfs /nonexistent: No such file or directory (os error 2); give an existing host directory"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"entrypoint":"sh"}"#, "--entrypoint applies to images; with --rootfs give the whole command"),
    api("POST", "/v1/containers", r#"{"image":"UPPER/Case"}"#, "invalid image reference \"UPPER/Case\": invalid reference format; use [REGISTRY[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST] in lowercase"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"ports":["70000"]}"#, "invalid port spec \"70000\": port 70000 is out of range (1-65535)"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"ports":["22080","22081,"]}"#, "invalid port spec \"\": empty item; expected [ADDR:]PORT[-PORT][/tcp|udp]"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"egress_allow":["10.0.0.1/8"]}"#, "invalid egress rule \"10.0.0.1/8\": 10.0.0.1/8 has host bits set: did you mean 10.0.0.0/8?; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"egress_deny":[""]}"#, "invalid egress rule \"\": it is empty; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"cap_add":["NET_WIZARD"]}"#, "unknown capability \"NET_WIZARD\": use a name such as NET_RAW or CAP_NET_ADMIN, or ALL"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"name":"web/1"}"#, "invalid container name \"web/1\": use letters, digits, '_', '.' and '-', starting with a letter or digit"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"env":["NOVALUE"]}"#, "invalid environment entry \"NOVALUE\": use KEY=VALUE"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"workdir":"srv"}"#, "invalid working directory \"srv\": it must be an absolute path inside the container"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"volumes":["/tmp:/data:rx"]}"#, "invalid volume \"/tmp:/data:rx\": expected HOST:CONTAINER[:ro|rw]"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"restart":"on-failure:0"}"#, "invalid restart policy \"on-failure:0\": use no, on-failure, on-failure:N (N >= 1) or always"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"restart":"always","auto_remove":true}"#, "--rm and --restart cannot be combined: a restarted container is never removed"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"log_opts":["max-size=10q"]}"#, "invalid --log-opt \"max-size=10q\": give a size in bytes or with a unit k, m or g, such as 100k, 10m or 1g"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"log_opts":["max-file=0"]}"#, "invalid --log-opt \"max-file=0\": give a whole number of files from 1 to 100, such as 3"),
    api("POST", "/v1/containers", r#"{"rootfs":"/","command":["true"],"log_opts":"max-size=1m"}"#, "invalid request body: invalid type: string \"max-size=1m\", expected a sequence at line 1 column 57"),
    // Queries.
    api("POST", "/v1/containers?attach=maybe", r#"{"rootfs":"/","command":["true"]}"#, "invalid query \"attach=maybe\": Failed to deserialize query string: attach: provided string was not `true` or `false`"),
    api("GET", "/v1/containers?all=1&bogus=2", "", "invalid query \"all=1&bogus=2\": Failed to deserialize query string: all: provided string was not `true` or `false`"),
    api("GET", "/v1/containers?everything=true", "", "invalid query \"everything=true\": Failed to deserialize query string: everything: unknown field `everything`, expected `all`"),
    api("POST", "/v1/containers/web/stop?t=soon", "", "invalid query \"t=soon\": Failed to deserialize query string: t: invalid digit found in string"),
    api("GET", "/v1/containers/web/logs?tail=-1", "", "invalid query \"tail=-1\": Failed to deserialize query string: tail: invalid digit found in string"),
    api("POST", "/v1/containers/web/kill?signal=NOPE", "", "invalid signal \"NOPE\": use a name such as TERM, KILL, HUP or a number from 1 to 64"),
    api("GET", "/v1/ports?kernel=yes", "", "invalid query \"kernel=yes\": Failed to deserialize query string: kernel: provided string was not `true` or `false`"),
    api("DELETE", "/v1/images/busybox?force=maybe", "", "invalid query \"force=maybe\": Failed to deserialize query string: force: provided string was not `true` or `false`"),
    // Policy updates.
    api("POST", "/v1/containers/web/update", r#"{"egress_allow":["nonsense"]}"#, "invalid egress rule \"nonsense\": \"nonsense\" is not an IP address; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443"),
    api("POST", "/v1/containers/web/update", r#"{"egress":[]}"#, "invalid request body: unknown field `egress`, expected one of `ports`, `egress_allow`, `egress_deny`, `ingress_allow`, `egress_rate`, `ingress_rate` at line 1 column 9"),
    api("POST", "/v1/containers/web/update", r#"{"egress_deny":"10.0.0.0/8"}"#, "invalid request body: invalid type: string \"10.0.0.0/8\", expected a sequence at line 1 column 27"),
    // Images.
    api("POST", "/v1/images/pull", r#"{"reference":"UPPER/Case"}"#, "invalid image reference \"UPPER/Case\": invalid reference format; use [REGISTRY[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST] in lowercase"),
    api("POST", "/v1/images/pull", r#"{"ref":"nginx"}"#, "invalid request body: unknown field `ref`, expected `reference` or `insecure_registries` at line 1 column 6"),
    api("POST", "/v1/auth", r#"{"registry":"registry.lan/team","username":"alice","password":"pw"}"#, "invalid registry name \"registry.lan/team\": give HOST[:PORT], as registry.example.com:5000"),
    api("POST", "/v1/auth", r#"{"registry":"registry.lan","password":"pw"}"#, "no username: give -u USER"),
    api("POST", "/v1/auth", r#"{"registry":"registry.lan","username":"alice"}"#, "empty password: give the password (--password-stdin reads it from standard input)"),
    api("POST", "/v1/auth", r#"{"registry":"registry.lan","user":"alice"}"#, "invalid request body: unknown field `user`, expected one of `registry`, `username`, `password`, `insecure_registries` at line 1 column 33"),
    api("DELETE", "/v1/auth/registry.lan:0", "", "invalid registry name \"registry.lan:0\": give HOST[:PORT], as registry.example.com:5000"),
    api("POST", "/v1/images/load", r#"{"path":"image.tar"}"#, "the archive path image.tar must be absolute (it is read by the daemon)"),
];

/// The API of a daemon over a scratch host, served in-process on a Unix socket: no BPF, no
/// root; none of these requests may get as far as needing either.
struct InProcessApi {
    socket: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl InProcessApi {
    fn start(host: &ScratchHost) -> Self {
        let scratch = host.scratch();
        let config = HostConfig {
            state_dir: scratch.join("state"),
            run_dir: scratch.join("run"),
            bpffs: scratch.join("not-a-dir/bpffs"),
            bpf_dir: scratch.join("not-a-dir/bpffs/hostnetd"),
            cgroup_parent: host.cgroup_parent().to_string(),
            runc: "/nonexistent/runc".into(),
            host_protection: true,
            manage_qdisc: String::new(),
            bpf_log_level: Default::default(),
            tc_attach: Default::default(),
            log_limits: Default::default(),
            traffic_rows: None,
        };
        let host = Host::open(config).expect("open the scratch host");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let socket = scratch.join("api.sock");
        let listener = runtime
            .block_on(async { tokio::net::UnixListener::bind(&socket) })
            .expect("bind");
        runtime.spawn(async move {
            axum::serve(listener, hostnetd::daemon::api(host, Default::default())).await
        });
        Self {
            socket,
            _runtime: runtime,
        }
    }

    /// One HTTP request: (status, JSON body).
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let mut stream = UnixStream::connect(&self.socket).expect("connect");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: hostnetd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().expect("status");
        let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        (
            status,
            serde_json::from_str(json.trim()).unwrap_or_default(),
        )
    }
}

#[test]
fn bad_api_requests_get_400_invalid_argument_with_exact_messages_and_change_nothing() {
    let host = harmless_host("api");
    let api = InProcessApi::start(&host);
    let before = listing(&host);
    let mismatches: Vec<String> = API_CASES
        .iter()
        .filter_map(|case| {
            let (status, json) = api.request(case.method, case.path, case.body);
            let what = format!("{} {} {}", case.method, case.path, case.body);
            assert_eq!(listing(&host), before, "{what} left files behind");
            assert!(
                !host.cgroup_parent_path().exists(),
                "{what} created a cgroup"
            );
            let expected =
                serde_json::json!({ "code": "invalid_argument", "message": case.message });
            (status != 400 || json != expected)
                .then(|| format!("{what}\n  expected 400 {expected}\n  got      {status} {json}"))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let records = std::fs::read_dir(host.scratch().join("state/containers"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "no container was recorded");
}
