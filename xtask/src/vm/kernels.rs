//! Debian's cloud kernels (5.10 from bullseye, 6.1 from bookworm, 6.12 from trixie), fetched
//! with apt through a private configuration (the host's sources and lists are untouched) and
//! kept extracted in the xtask cache, so a fresh clone does not fetch them again.
//!
//! Layout of `$HOSTNETD_XTASK_CACHE/kernels/<suite>/`: `sources.list`, apt's `lists/` and
//! `cache/`, the `debs/`, one extracted tree per package version, and `current`, naming the
//! tree in use (re-resolved at most once a day, so vm-run does not wait for apt).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _};

use crate::shell::say;

/// A kernel the VM tests run on.
pub struct KernelSpec {
    /// What the user names it by (`--kernel 6.1`).
    pub name: &'static str,
    pub suite: &'static str,
    /// The suites searched, newest kernels first; a security suite whose pool answers 404 (a
    /// mirror may lack it) is skipped for the next newest version.
    sources: &'static str,
}

pub const KERNELS: [KernelSpec; 3] = [
    KernelSpec {
        name: "5.10",
        suite: "bullseye",
        sources: "deb http://deb.debian.org/debian bullseye main\n\
                  deb http://deb.debian.org/debian-security bullseye-security main\n",
    },
    KernelSpec {
        name: "6.1",
        suite: "bookworm",
        sources: "deb http://deb.debian.org/debian bookworm main\n\
                  deb http://deb.debian.org/debian-security bookworm-security main\n",
    },
    KernelSpec {
        name: "6.12",
        suite: "trixie",
        sources: "deb http://deb.debian.org/debian trixie main\n\
                  deb http://deb.debian.org/debian-security trixie-security main\n",
    },
];

/// The metapackage that names each suite's current cloud kernel.
const METAPACKAGE: &str = "linux-image-cloud-amd64";
/// How long a resolved kernel is used before apt is asked whether a newer one exists.
const RESOLUTION_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A kernel ready to boot: its image and its modules, extracted.
pub struct Kernel {
    pub name: &'static str,
    /// The Debian package it came from and that package's version.
    pub package: String,
    pub version: String,
    /// `uname -r`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`, with a modules.dep made by depmod.
    pub modules: PathBuf,
}

/// The kernels named by `selection`: one name of [`KERNELS`], or "all".
pub fn select(selection: &str) -> anyhow::Result<Vec<&'static KernelSpec>> {
    if selection == "all" {
        return Ok(KERNELS.iter().collect());
    }
    match KERNELS.iter().find(|spec| spec.name == selection) {
        Some(spec) => Ok(vec![spec]),
        None => bail!(
            "unknown kernel {selection:?}: choose one of {} or all",
            KERNELS.map(|spec| spec.name).join(", ")
        ),
    }
}

/// The xtask cache (`HOSTNETD_XTASK_CACHE`, default /var/cache/hostnetd-xtask), the one the
/// sample images' packages are kept in (images.rs).
fn xtask_cache() -> PathBuf {
    std::env::var_os("HOSTNETD_XTASK_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/hostnetd-xtask"), PathBuf::from)
}

/// The kernel of `spec`, fetched and extracted unless the cache has it.
pub fn fetch(spec: &'static KernelSpec) -> anyhow::Result<Kernel> {
    let apt = PrivateApt::new(spec)?;
    let current = apt.dir.join("current");
    if let Some((package, version)) = fresh_resolution(&current) {
        if let Ok(kernel) = extracted(spec, &apt.dir, &package, &version) {
            return Ok(kernel);
        }
    }
    let (package, version) = match resolve_and_download(&apt) {
        Ok(found) => found,
        Err(error) => {
            // Offline, or the mirror is down: the kernel used last time will do.
            let Some((package, version)) = read_resolution(&current) else {
                return Err(error);
            };
            say(&format!(
                "kernel {}: cannot ask apt for a newer one ({error:#}); using {package} {version}",
                spec.name
            ));
            (package, version)
        }
    };
    let kernel = extracted(spec, &apt.dir, &package, &version)
        .or_else(|_| extract(spec, &apt, &package, &version))?;
    fs::write(&current, format!("{package} {version}\n"))
        .with_context(|| format!("cannot write {}", current.display()))?;
    Ok(kernel)
}

/// The package and version named by `current` when it was written less than a day ago.
fn fresh_resolution(current: &Path) -> Option<(String, String)> {
    let age = fs::metadata(current)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())?;
    (age < RESOLUTION_MAX_AGE)
        .then(|| read_resolution(current))
        .flatten()
}

fn read_resolution(current: &Path) -> Option<(String, String)> {
    let text = fs::read_to_string(current).ok()?;
    let (package, version) = text.trim().split_once(' ')?;
    Some((package.to_string(), version.to_string()))
}

/// apt with its sources, lists, caches and downloads under `dir`: the host's apt
/// configuration (proxies, keyrings) applies, its sources.list and lists do not.
struct PrivateApt {
    /// The kernel's name, for messages.
    kernel: &'static str,
    dir: PathBuf,
}

impl PrivateApt {
    fn new(spec: &'static KernelSpec) -> anyhow::Result<Self> {
        let dir = xtask_cache().join("kernels").join(spec.suite);
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        // Signatures are checked with the keys apt trusts on the host: bookworm's
        // debian-archive-keyring (2023.3) installs bullseye's, bookworm's and trixie's in
        // /etc/apt/trusted.gpg.d. An older keyring makes apt-get update fail, saying so.
        fs::write(dir.join("sources.list"), spec.sources)?;
        Ok(Self {
            kernel: spec.name,
            dir,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let dir = self.dir.display();
        for option in [
            format!("Dir::Etc::sourcelist={dir}/sources.list"),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={dir}/lists"),
            format!("Dir::Cache={dir}/cache"),
            format!("Dir::Cache::archives={dir}/cache/archives"),
            "Acquire::Languages=none".to_string(),
            // apt's sandbox user cannot write into a root-owned cache.
            "APT::Sandbox::User=root".to_string(),
        ] {
            command.arg("-o").arg(option);
        }
        command
    }
}

/// Refreshes the suite's lists, then downloads the newest cloud kernel the mirror serves;
/// returns its package and version.
fn resolve_and_download(apt: &PrivateApt) -> anyhow::Result<(String, String)> {
    let update = apt
        .command("apt-get")
        .args(["update", "-q"])
        .output()
        .context("cannot run apt-get")?;
    if !update.status.success() {
        bail!(
            "apt-get update failed: {}",
            String::from_utf8_lossy(&update.stderr).trim()
        );
    }
    let show = apt
        .command("apt-cache")
        .args(["show", METAPACKAGE])
        .output()
        .context("cannot run apt-cache")?;
    let candidates = parse_metapackage_versions(&String::from_utf8_lossy(&show.stdout));
    if candidates.is_empty() {
        bail!("apt-cache show {METAPACKAGE} names no kernel package");
    }
    let mut failures = Vec::new();
    for (package, version) in candidates {
        if find_deb(&apt.dir.join("debs"), &package, &version).is_some() {
            return Ok((package, version));
        }
        let download = apt
            .command("apt-get")
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(apt.dir.join("debs"))
            .output()
            .context("cannot run apt-get")?;
        if download.status.success() {
            return Ok((package, version));
        }
        let error = String::from_utf8_lossy(&download.stderr);
        let error = error.lines().last().unwrap_or_default().trim().to_string();
        say(&format!(
            "kernel {}: cannot download {package} {version} ({error}); trying the next newest",
            apt.kernel
        ));
        failures.push(format!("{package} {version}: {error}"));
    }
    bail!(
        "no cloud kernel could be downloaded:\n{}",
        failures.join("\n")
    )
}

/// The unsigned kernel packages of each version of the metapackage in `apt-cache show`'s
/// output, in its order (apt lists a package's versions newest first): the metapackage
/// depends on the signed image `linux-image-R-cloud-amd64 (= V)`, whose unsigned twin holds
/// the same kernel without the Secure Boot signature a VM has no use for.
pub fn parse_metapackage_versions(show: &str) -> Vec<(String, String)> {
    show.split("\n\n")
        .filter_map(|stanza| {
            let depends = stanza
                .lines()
                .find_map(|line| line.strip_prefix("Depends: "))?;
            depends.split(',').map(str::trim).find_map(|dependency| {
                let (package, version) = dependency.split_once(" (= ")?;
                let version = version.strip_suffix(')')?;
                package
                    .starts_with("linux-image-")
                    .then(|| (format!("{package}-unsigned"), version.to_string()))
            })
        })
        .collect()
}

/// The .deb of `package` at `version` in `debs`, if downloaded.
fn find_deb(debs: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let path = debs.join(format!("{package}_{version}_amd64.deb"));
    path.is_file().then_some(path)
}

fn extracted_dir(suite_dir: &Path, package: &str, version: &str) -> PathBuf {
    suite_dir.join(format!("{package}_{version}"))
}

/// The kernel extracted in the cache, if it is there complete.
fn extracted(
    spec: &'static KernelSpec,
    suite_dir: &Path,
    package: &str,
    version: &str,
) -> anyhow::Result<Kernel> {
    let root = extracted_dir(suite_dir, package, version);
    let boot = root.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .with_context(|| format!("{} is not extracted", boot.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    let file_name = vmlinuz.file_name().unwrap_or_default().to_string_lossy();
    let release = file_name.trim_start_matches("vmlinuz-").to_string();
    // Since trixie the modules live in /usr/lib; `lib` is linked to it on extraction.
    let modules = root.join("lib/modules").join(&release);
    if !modules.join("modules.dep").is_file() {
        bail!("{} has no modules.dep", modules.display());
    }
    Ok(Kernel {
        name: spec.name,
        package: package.to_string(),
        version: version.to_string(),
        release,
        vmlinuz,
        modules,
    })
}

/// Extracts the downloaded package into the cache (through a temporary directory, so an
/// interrupted extraction is never taken for a complete one) and indexes its modules.
fn extract(
    spec: &'static KernelSpec,
    apt: &PrivateApt,
    package: &str,
    version: &str,
) -> anyhow::Result<Kernel> {
    let deb = find_deb(&apt.dir.join("debs"), package, version)
        .with_context(|| format!("{package} {version} was not downloaded"))?;
    say(&format!(
        "kernel {}: extracting {package} {version}",
        spec.name
    ));
    let target = extracted_dir(&apt.dir, package, version);
    let partial = target.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove {}", partial.display()))?;
    }
    fs::create_dir_all(&partial)?;
    crate::shell::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))
        .with_context(|| format!("cannot extract {}", deb.display()))?;
    if !partial.join("lib").exists() && partial.join("usr/lib/modules").is_dir() {
        std::os::unix::fs::symlink("usr/lib", partial.join("lib"))?;
    }
    // Debian makes modules.dep on installation; depmod makes it here, from the tree.
    let release = fs::read_dir(partial.join("lib/modules"))?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{package} has no lib/modules/<release>"))?;
    crate::shell::run(Command::new("depmod").arg("-b").arg(&partial).arg(&release))
        .with_context(|| format!("depmod failed on {package}'s modules"))?;
    fs::rename(&partial, &target)
        .with_context(|| format!("cannot move the kernel to {}", target.display()))?;
    extracted(spec, &apt.dir, package, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: linux-image-cloud-amd64\n\
        Source: linux-signed-amd64 (5.10.262+1)\n\
        Version: 5.10.262-1\n\
        Depends: linux-image-5.10.0-46-cloud-amd64 (= 5.10.262-1)\n\
        Description: Linux for x86-64 cloud (meta-package)\n\
        \n\
        Package: linux-image-cloud-amd64\n\
        Version: 5.10.223-1\n\
        Depends: linux-image-5.10.0-32-cloud-amd64 (= 5.10.223-1), other (>= 1)\n\
        \n";

    #[test]
    fn each_metapackage_version_names_its_unsigned_kernel_in_order() {
        assert_eq!(
            parse_metapackage_versions(SHOW),
            vec![
                (
                    "linux-image-5.10.0-46-cloud-amd64-unsigned".to_string(),
                    "5.10.262-1".to_string()
                ),
                (
                    "linux-image-5.10.0-32-cloud-amd64-unsigned".to_string(),
                    "5.10.223-1".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_stanza_without_an_exact_kernel_dependency_is_skipped() {
        let show = "Package: linux-image-cloud-amd64\nDepends: linux-image-6.1 (>= 1)\n\n";
        assert!(parse_metapackage_versions(show).is_empty());
    }

    #[test]
    fn kernels_are_selected_by_name_or_all() {
        assert_eq!(select("6.1").unwrap()[0].suite, "bookworm");
        assert_eq!(select("all").unwrap().len(), 3);
        let error = select("4.19").err().unwrap().to_string();
        assert!(error.contains("5.10, 6.1, 6.12"), "{error}");
    }
}
