//! `cargo xtask fuzz`: builds agent/fuzz (a cargo-fuzz project) with `cargo fuzz build` and the
//! nightly toolchain, then runs each target's libFuzzer binary for a bounded time. New inputs go
//! to target/fuzz/corpus/TARGET and failing ones to target/fuzz/artifacts/TARGET; the committed
//! seeds in agent/fuzz/corpus/TARGET are only read.
use std::{
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _};

use crate::{
    setup::install_cargo_fuzz,
    shell::{cargo_bin_dir, run, say, workspace_root},
};

/// cargo fuzz's default target, spelled out because it names the binaries' directory.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The targets, as agent/fuzz/Cargo.toml names its binaries.
pub const TARGETS: [&str; 4] = ["port_specs", "rules", "policy_file", "api_bodies"];

/// Longest input libFuzzer makes: the real inputs (a `--ports` value, a policy file, an API
/// body) are far shorter, and longer ones only slow each run.
const MAX_LEN: usize = 4096;

/// Seconds one input may take before libFuzzer reports it as a hang: parsing 4 KiB takes
/// microseconds, so anything near this is a finding, even on a loaded machine.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Only these targets (port_specs, rules, policy_file, api_bodies).
    targets: Vec<String>,
}

pub fn fuzz(args: FuzzArgs) -> anyhow::Result<()> {
    if let Some(unknown) = args.targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
        bail!(
            "no fuzz target {unknown:?}: the targets are {}",
            TARGETS.join(", ")
        );
    }
    let chosen: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    install_cargo_fuzz()?;
    fuzz_targets(&chosen, args.seconds)
}

/// Where the fuzz project and its outputs live.
struct FuzzPaths {
    /// agent/fuzz: the cargo-fuzz project, its seeds and dictionary.
    project: PathBuf,
    /// target/fuzz: cargo fuzz's target directory, the found inputs and the artifacts.
    out: PathBuf,
}

impl FuzzPaths {
    fn new() -> Self {
        let root = workspace_root();
        Self {
            project: root.join("agent/fuzz"),
            out: root.join("target/fuzz"),
        }
    }

    fn binary(&self, target: &str) -> PathBuf {
        self.out.join(TRIPLE).join("release").join(target)
    }

    fn seeds(&self, target: &str) -> PathBuf {
        self.project.join("corpus").join(target)
    }

    fn found(&self, target: &str) -> PathBuf {
        self.out.join("corpus").join(target)
    }

    fn artifacts(&self, target: &str) -> PathBuf {
        self.out.join("artifacts").join(target)
    }

    fn log(&self, target: &str) -> PathBuf {
        self.out.join("logs").join(format!("{target}.log"))
    }
}

/// Builds the fuzz targets and runs each for `seconds`; fails on the first input that panics,
/// crashes or hangs, naming the saved input and how to replay it.
pub fn fuzz_targets(targets: &[&str], seconds: u64) -> anyhow::Result<()> {
    let paths = FuzzPaths::new();
    build_targets(&paths)?;
    for target in targets {
        run_target(&paths, target, seconds)?;
    }
    Ok(())
}

fn build_targets(paths: &FuzzPaths) -> anyhow::Result<()> {
    say("building the fuzz targets (cargo fuzz build: nightly, libFuzzer, coverage-instrumented)");
    let mut command = nightly_cargo();
    command
        .current_dir(&paths.project)
        .args(["fuzz", "build", "--release", "--fuzz-dir"])
        .arg(&paths.project)
        .arg("--target-dir")
        .arg(&paths.out);
    run(&mut command).context("building the fuzz targets failed")
}

/// Runs one target's libFuzzer binary for `seconds` over the seeds and the inputs found by
/// earlier runs.
fn run_target(paths: &FuzzPaths, target: &str, seconds: u64) -> anyhow::Result<()> {
    let artifacts = paths.artifacts(target);
    fs::create_dir_all(&artifacts)?;
    fs::create_dir_all(paths.found(target))?;
    let log = paths.log(target);
    say(&format!(
        "fuzzing {target} for {seconds}s (libFuzzer; its full output in {})",
        log.display()
    ));
    // A second early: file times come from the kernel's coarse clock, which may lag this one.
    let started = SystemTime::now() - Duration::from_secs(1);
    let mut command = Command::new(paths.binary(target));
    command
        .args(libfuzzer_args(paths, target, seconds))
        .env("ASAN_OPTIONS", asan_options());
    let status = run_logged(&mut command, &log)?;
    if status.success() {
        return Ok(());
    }
    let saved = inputs_saved_since(&artifacts, started);
    if saved.is_empty() {
        bail!(
            "fuzz target {target} failed ({status}) and saved no input: see its output above \
             and in {}",
            log.display()
        );
    }
    let listed: Vec<String> = saved.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "fuzz target {target} found an input that fails ({status}): saved as {}\n\
         replay it with `{} {}`\n\
         (or `cargo +nightly fuzz run --fuzz-dir agent/fuzz --target-dir target/fuzz {target} \
         {}`); once fixed, add it to agent/fuzz/corpus/{target} so that it stays fixed",
        listed.join(", "),
        paths.binary(target).display(),
        listed[0],
        listed[0],
    )
}

/// Runs `command`, writing all it prints on stderr (where libFuzzer prints everything) to
/// `log` and passing it on to ours without the line for each input that joins the corpus:
/// thousands a minute, which would bury the progress lines, the totals and any crash report.
fn run_logged(command: &mut Command, log: &Path) -> anyhow::Result<ExitStatus> {
    fs::create_dir_all(log.parent().expect("has a parent"))?;
    let mut file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut output = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let mut ours = std::io::stderr().lock();
    let mut line = Vec::new();
    while output.read_until(b'\n', &mut line)? > 0 {
        file.write_all(&line)?;
        if !is_new_input_line(&line) {
            ours.write_all(&line)?;
        }
        line.clear();
    }
    Ok(child.wait()?)
}

/// libFuzzer's `#RUNS\tNEW ...` and `#RUNS\tREDUCE ...` lines.
fn is_new_input_line(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"#") else {
        return false;
    };
    let after_runs = rest
        .iter()
        .position(|&b| b == b'\t')
        .map(|at| &rest[at + 1..]);
    after_runs.is_some_and(|event| event.starts_with(b"NEW ") || event.starts_with(b"REDUCE "))
}

/// libFuzzer's flags: new inputs go to the first corpus directory (target/fuzz/corpus), never
/// to the committed seeds, which are only read.
fn libfuzzer_args(paths: &FuzzPaths, target: &str, seconds: u64) -> Vec<OsString> {
    let mut prefix = paths.artifacts(target).into_os_string();
    // libFuzzer prepends the prefix to the file name as it is: the slash makes it a directory.
    prefix.push("/");
    let mut args: Vec<OsString> = vec![
        format!("-max_total_time={seconds}").into(),
        format!("-max_len={MAX_LEN}").into(),
        format!("-timeout={INPUT_TIMEOUT_SECONDS}").into(),
        "-print_final_stats=1".into(),
    ];
    let mut dict = OsString::from("-dict=");
    dict.push(paths.project.join("dictionary"));
    let mut artifact_prefix = OsString::from("-artifact_prefix=");
    artifact_prefix.push(prefix);
    args.extend([dict, artifact_prefix]);
    args.extend([
        paths.found(target).into_os_string(),
        paths.seeds(target).into_os_string(),
    ]);
    args
}

/// AddressSanitizer's options as `cargo fuzz run` sets them (cargo fuzz builds with it): the
/// caller's, plus no ODR-violation reports, which are false ones in Rust builds.
fn asan_options() -> String {
    let mut options = std::env::var("ASAN_OPTIONS").unwrap_or_default();
    if !options.is_empty() {
        options.push(':');
    }
    options.push_str("detect_odr_violation=0");
    options
}

/// Files in `dir` written at or after `since`: what the run that just failed saved.
fn inputs_saved_since(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut saved: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            (entry.metadata().and_then(|m| m.modified())).is_ok_and(|written| written >= since)
        })
        .map(|entry| entry.path())
        .collect();
    saved.sort();
    saved
}

/// `rustup run nightly cargo`, with ~/.cargo/bin (cargo-fuzz, bpf-linker for the agent's build
/// script) on PATH: `cargo +nightly` only works through rustup's proxy, and xtask runs under
/// the real cargo binary of the default toolchain.
fn nightly_cargo() -> Command {
    let mut command = Command::new("rustup");
    let path = format!(
        "{}:{}",
        cargo_bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    command
        .args(["run", "nightly", "cargo"])
        .env("PATH", path)
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    command
}

#[cfg(test)]
mod tests {
    use super::is_new_input_line;

    #[test]
    fn only_the_new_input_lines_are_left_out() {
        // Lines as libFuzzer printed them in a run of port_specs.
        let left_out = [
            "#2083\tREDUCE cov: 581 ft: 2543 corp: 286/7367b lim: 247 exec/s: 0 rss: 125Mb L: 54/233 MS: 1 EraseBytes-\n",
            "#5253\tNEW    cov: 581 ft: 2545 corp: 287/7373b lim: 261 exec/s: 5253 rss: 151Mb L: 22/233 MS: 3 ChangeBit-\n",
        ];
        let kept = [
            "#352\tINITED cov: 581 ft: 2543 corp: 286/7381b exec/s: 0 rss: 113Mb\n",
            "#16384\tpulse  cov: 581 ft: 2551 corp: 289/7572b lim: 293 exec/s: 5461 rss: 318Mb\n",
            "#288208\tDONE   cov: 648 ft: 2939 corp: 395/27Kb lim: 1440 exec/s: 4724 rss: 450Mb\n",
            "==6733== ERROR: libFuzzer: deadly signal\n",
            "    #17 0x560bb4e2bb65 in hostnetd_fuzz::targets::port_specs targets.rs:22:9\n",
            "#NEW is not a run count\n",
            "\n",
        ];
        for line in left_out {
            assert!(is_new_input_line(line.as_bytes()), "{line}");
        }
        for line in kept {
            assert!(!is_new_input_line(line.as_bytes()), "{line}");
        }
    }
}
