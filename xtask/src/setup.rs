//! Installing what hostnetd needs on a fresh Debian host; each step is skipped when done.
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

use crate::shell::{cargo, cargo_bin_dir, run, say};

/// runc runs containers; skopeo and docker-registry serve the image tests (a real registry on
/// loopback); docker.io, containerd and podman are the engines the engine tests drive
/// hostnetd-runc through (each test starts its own private daemon or storage); the rest build
/// bpf-linker, and g++ libFuzzer (libfuzzer-sys compiles it).
const APT_PACKAGES: [&str; 17] = [
    "runc",
    "skopeo",
    "docker-registry",
    "docker.io",
    "containerd",
    "podman",
    "busybox-static",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    // The accounting tests turn TSO off on a veth so that GSO splits packets at the device.
    "ethtool",
    // The churn and limits tests count the rows of the datapath's pinned maps; the limits
    // test also fills some to capacity (`bpftool batch`).
    "bpftool",
    "g++",
    // The registry-credential tests make their own CA and registry certificate.
    "openssl",
    // The bandwidth tests measure a limited container's TCP stream.
    "iperf3",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The version `cargo xtask fuzz` was checked with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn setup() -> anyhow::Result<()> {
    require_root()?;
    install_apt_packages("apt packages", &APT_PACKAGES)?;
    install_rust_src()?;
    install_bpf_linker()?;
    install_cargo_fuzz()?;
    mount_bpffs()?;
    say("setup complete");
    Ok(())
}

pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("hostnetd's set-up and tests need root (cgroups, BPF, runc): run as root");
    }
    Ok(())
}

/// Installs those of `packages` that are missing; `what` names them in what is printed.
pub fn install_apt_packages(what: &str, packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = (packages.iter().copied())
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        say(&format!(
            "{what} ({}): already installed",
            packages.join(" ")
        ));
        return Ok(());
    }
    say(&format!("{what}: installing {}", missing.join(" ")));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    // docker-registry's package would start a registry service on :5000 (iperf3's, a server
    // on :5201); the tests and benchmarks start their own on loopback ports, so services are
    // kept from starting during the install.
    let _no_services = NoServiceStarts::install();
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Debian's policy-rc.d hook answering "not now" (101) to every service start; removed on
/// drop. An administrator's own policy-rc.d is left as it is.
struct NoServiceStarts(Option<&'static Path>);

impl NoServiceStarts {
    fn install() -> Self {
        let path = Path::new("/usr/sbin/policy-rc.d");
        if path.exists() {
            return Self(None);
        }
        let written = std::fs::write(path, "#!/bin/sh\nexit 101\n").and_then(|()| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        });
        Self(written.ok().map(|()| path))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// What `rustup ARGS` prints, for a question about the nightly toolchain; a missing rustup or
/// nightly toolchain is an error that says how to get it.
fn ask_rustup_about_nightly(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("rustup")
        .args(args)
        .output()
        .context("rustup is needed for the nightly toolchain (eBPF programs, fuzz targets)")?;
    if !output.status.success() {
        bail!("no nightly toolchain: install one with `rustup toolchain install nightly`");
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn install_rust_src() -> anyhow::Result<()> {
    let installed =
        ask_rustup_about_nightly(&["component", "list", "--installed", "--toolchain", "nightly"])?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        say("nightly rust-src: already installed");
        return Ok(());
    }
    say("nightly rust-src: installing");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn install_bpf_linker() -> anyhow::Result<()> {
    let linker = cargo_bin_dir().join("bpf-linker");
    let version = Command::new(&linker).arg("--version").output();
    if version.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)) {
        say(&format!(
            "bpf-linker {BPF_LINKER_VERSION}: already installed"
        ));
        return Ok(());
    }
    say(&format!(
        "bpf-linker {BPF_LINKER_VERSION}: building against LLVM 22 (a few minutes)"
    ));
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("PATH", path))
}

/// cargo-fuzz builds the fuzz targets (agent/fuzz) with libFuzzer; any installed version will
/// do, and a missing one is built from crates.io. Of the nightly toolchain it needs only what
/// every nightly has: AddressSanitizer's runtime, checked here so that its absence is named.
pub fn install_cargo_fuzz() -> anyhow::Result<()> {
    require_nightly_asan_runtime()?;
    let version = cargo().args(["fuzz", "--version"]).output();
    if let Some(out) = version.ok().filter(|out| out.status.success()) {
        let version = String::from_utf8_lossy(&out.stdout);
        say(&format!("{}: already installed", version.trim()));
        return Ok(());
    }
    say(&format!(
        "cargo-fuzz {CARGO_FUZZ_VERSION}: building it for the fuzz targets (a few minutes)"
    ));
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

fn require_nightly_asan_runtime() -> anyhow::Result<()> {
    let sysroot = ask_rustup_about_nightly(&["run", "nightly", "rustc", "--print", "sysroot"])?;
    let runtime = Path::new(sysroot.trim())
        .join("lib/rustlib/x86_64-unknown-linux-gnu/lib/librustc-nightly_rt.asan.a");
    if !runtime.exists() {
        bail!(
            "the nightly toolchain lacks AddressSanitizer's runtime ({}), which the fuzz \
             targets link: reinstall it with `rustup component add rust-std --toolchain nightly`",
            runtime.display()
        );
    }
    say("nightly AddressSanitizer runtime (for the fuzz targets): present");
    Ok(())
}

fn mount_bpffs() -> anyhow::Result<()> {
    let bpffs = Path::new("/sys/fs/bpf");
    if hostnetd_tests::mounts::is_mount_point(bpffs).context("reading the mount table")? {
        say("bpffs: mounted at /sys/fs/bpf");
        return Ok(());
    }
    say("bpffs: mounting at /sys/fs/bpf");
    std::fs::create_dir_all(bpffs).ok();
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
