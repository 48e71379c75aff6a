//! `cargo xtask install` and `uninstall`: release builds of `hostnetd` and `hostnetd-runc` on
//! the PATH, the systemd unit in place, and the engines' snippets printed.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};

use crate::shell::{cargo, run, say, workspace_root};

const BINARIES: [&str; 2] = ["hostnetd", "hostnetd-runc"];
const UNIT: &str = "hostnetd.service";
/// What marks a unit file as the one this installs (an administrator's own is left alone).
const UNIT_MARK: &str = "hostnetd daemon for systemd hosts";

#[derive(clap::Args, Clone)]
pub struct InstallArgs {
    /// Where the binaries go, below `--root`: PREFIX/bin.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// A staging root every path is placed under (a package build, a test); `/` installs on
    /// this host.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Install what target/release already holds instead of building it.
    #[arg(long)]
    no_build: bool,
}

/// Where each installed file goes.
struct Layout {
    bin: PathBuf,
    unit: PathBuf,
    config_dir: PathBuf,
    /// The binaries' directory as the installed system sees it (without the staging root).
    bin_on_host: PathBuf,
}

impl Layout {
    fn new(args: &InstallArgs) -> anyhow::Result<Self> {
        if !args.prefix.is_absolute() || !args.root.is_absolute() {
            bail!(
                "--prefix and --root must be absolute paths (got {} and {})",
                args.prefix.display(),
                args.root.display()
            );
        }
        let under_root = |path: &Path| args.root.join(path.strip_prefix("/").unwrap_or(path));
        Ok(Self {
            bin: under_root(&args.prefix.join("bin")),
            unit: under_root(&Path::new("/etc/systemd/system").join(UNIT)),
            config_dir: under_root(Path::new("/etc/hostnetd")),
            bin_on_host: args.prefix.join("bin"),
        })
    }
}

pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    let layout = Layout::new(&args)?;
    if !args.no_build {
        say("building hostnetd and hostnetd-runc (release)");
        run(cargo().args(["build", "--release", "-p", "hostnetd", "--bins"]))?;
    }
    let release = workspace_root().join("target/release");
    fs::create_dir_all(&layout.bin)
        .with_context(|| format!("cannot create {}", layout.bin.display()))?;
    for binary in BINARIES {
        let from = release.join(binary);
        if !from.is_file() {
            bail!("{} is missing: build it (drop --no-build)", from.display());
        }
        replace_file(&fs::read(&from)?, &layout.bin.join(binary), 0o755)?;
    }
    let unit = fs::read_to_string(workspace_root().join("contrib").join(UNIT))?;
    let unit = unit.replace(
        "/usr/local/bin/hostnetd",
        &layout.bin_on_host.join("hostnetd").to_string_lossy(),
    );
    fs::create_dir_all(layout.unit.parent().expect("the unit has a directory"))?;
    replace_file(unit.as_bytes(), &layout.unit, 0o644)?;
    fs::create_dir_all(&layout.config_dir)
        .with_context(|| format!("cannot create {}", layout.config_dir.display()))?;
    say(&format!(
        "installed {} and {} in {}, {}",
        BINARIES[0],
        BINARIES[1],
        layout.bin.display(),
        layout.unit.display()
    ));
    println!("{}", next_steps(&layout.bin_on_host.join("hostnetd-runc")));
    Ok(())
}

pub fn uninstall(args: InstallArgs) -> anyhow::Result<()> {
    let layout = Layout::new(&args)?;
    for binary in BINARIES {
        remove_if_present(&layout.bin.join(binary))?;
    }
    match fs::read_to_string(&layout.unit) {
        Ok(text) if text.contains(UNIT_MARK) => remove_if_present(&layout.unit)?,
        Ok(_) => say(&format!(
            "{} is not the unit hostnetd installs: left as it is",
            layout.unit.display()
        )),
        Err(_) => {}
    }
    say(&format!(
        "uninstalled; {} and the state in /var/lib/hostnetd are kept (remove them by hand)",
        layout.config_dir.display()
    ));
    Ok(())
}

/// Writes `bytes` to a temporary sibling and renames it over `path`: a running binary keeps
/// its old file, and a failure leaves the old one whole.
fn replace_file(bytes: &[u8], path: &Path, mode: u32) -> anyhow::Result<()> {
    let name = path.file_name().expect("a file name").to_string_lossy();
    let staged = path.with_file_name(format!(".{name}.new"));
    fs::write(&staged, bytes).with_context(|| format!("cannot write {}", staged.display()))?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(mode))?;
    fs::rename(&staged, path).with_context(|| format!("cannot replace {}", path.display()))
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            say(&format!("removed {}", path.display()));
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn next_steps(runtime: &Path) -> String {
    let runtime = runtime.display();
    format!(
        "\nStart the daemon:\n  systemctl daemon-reload && systemctl enable --now hostnetd\n\n\
         Docker (/etc/docker/daemon.json, then restart dockerd):\n  \
         {{\"runtimes\": {{\"hostnetd\": {{\"path\": \"{runtime}\"}}}}}}\n  \
         docker run --runtime hostnetd --network host -l io.hostnetd.ports=80 nginx\n\n\
         containerd (/etc/containerd/config.toml, then restart containerd; for Kubernetes add\n\
         deploy/kubernetes/runtimeclass.yaml):\n  \
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.hostnetd]\n    \
         runtime_type = \"io.containerd.runc.v2\"\n    \
         pod_annotations = [\"io.hostnetd.*\"]\n    \
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.hostnetd.options]\n      \
         BinaryName = \"{runtime}\"\n\n\
         podman:\n  podman run --runtime {runtime} --network host --annotation io.hostnetd.ports=80 nginx\n\n\
         See docs/engines.md."
    )
}

/// What `cargo xtask test` checks: an install into a staging root gives binaries that run (the
/// runtime finds runc and hands `--version` on), and an uninstall takes them away again.
pub fn check_install() -> anyhow::Result<()> {
    let root = workspace_root().join("target/install-check");
    hostnetd_tests::mounts::remove_scratch(&root);
    let args = InstallArgs {
        prefix: "/usr/local".into(),
        root: root.clone(),
        no_build: false,
    };
    install(args.clone())?;
    let layout = Layout::new(&args)?;
    for binary in BINARIES {
        let path = layout.bin.join(binary);
        let output = std::process::Command::new(&path)
            .arg("--version")
            .output()?;
        if !output.status.success() {
            bail!(
                "the installed {} --version failed: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    if !fs::read_to_string(&layout.unit)?.contains("ExecStart=/usr/local/bin/hostnetd daemon") {
        bail!("the installed unit does not start /usr/local/bin/hostnetd");
    }
    uninstall(args)?;
    let left: Vec<PathBuf> = (BINARIES.iter().map(|b| layout.bin.join(b)))
        .chain([layout.unit.clone()])
        .filter(|path| path.exists())
        .collect();
    if !left.is_empty() {
        bail!("uninstall left {left:?}");
    }
    hostnetd_tests::mounts::remove_scratch(&root);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(prefix: &str, root: &str) -> InstallArgs {
        InstallArgs {
            prefix: prefix.into(),
            root: root.into(),
            no_build: true,
        }
    }

    #[test]
    fn paths_go_under_the_staging_root() {
        let layout = Layout::new(&args("/usr/local", "/tmp/stage")).unwrap();
        assert_eq!(layout.bin, Path::new("/tmp/stage/usr/local/bin"));
        assert_eq!(
            layout.unit,
            Path::new("/tmp/stage/etc/systemd/system/hostnetd.service")
        );
        assert_eq!(layout.bin_on_host, Path::new("/usr/local/bin"));
        let host = Layout::new(&args("/opt/hostnetd", "/")).unwrap();
        assert_eq!(host.bin, Path::new("/opt/hostnetd/bin"));
        assert!(Layout::new(&args("usr", "/")).is_err());
    }
}
