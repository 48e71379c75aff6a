//! `cargo xtask fuzz`: builds agent/fuzz with the nightly toolchain (its coverage
//! instrumentation needs it) and runs each target for a bounded time. New inputs go to
//! target/fuzz/corpus/TARGET, panicking ones to target/fuzz/artifacts/TARGET (replay one with
//! `target/fuzz/x86_64-unknown-linux-gnu/release/TARGET FILE`); the committed
//! seeds in agent/fuzz/corpus/TARGET are only read.
use std::{path::Path, process::Command};

use crate::{
    build::{run, workspace_root},
    setup::say,
};

/// agent/fuzz/.cargo/config.toml builds for this target, so that its instrumentation flags
/// stay off build scripts.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The targets, as agent/fuzz/Cargo.toml names its binaries.
pub const TARGETS: [&str; 4] = ["port_specs", "rules", "policy_file", "api_bodies"];

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
        anyhow::bail!(
            "no fuzz target {unknown:?}: the targets are {}",
            TARGETS.join(", ")
        );
    }
    let chosen: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    fuzz_targets(&chosen, args.seconds)
}

/// Builds the fuzz targets and runs each for `seconds`; fails on the first panic found.
pub fn fuzz_targets(targets: &[&str], seconds: u64) -> anyhow::Result<()> {
    let root = workspace_root();
    let fuzz_dir = root.join("agent/fuzz");
    let out = root.join("target/fuzz");
    say("building the fuzz targets (nightly, coverage-instrumented)");
    run(nightly_cargo()
        .current_dir(&fuzz_dir)
        .args(["build", "--release", "--bins", "--target-dir"])
        .arg(&out))?;
    for target in targets {
        say(&format!("fuzzing {target} for {seconds}s"));
        run(Command::new(out.join(TRIPLE).join("release").join(target))
            .arg("--seconds")
            .arg(seconds.to_string())
            .args(corpus_args(&fuzz_dir, &out, target))
            .arg("--dict")
            .arg(fuzz_dir.join("dictionary")))?;
    }
    Ok(())
}

/// `rustup run nightly cargo`: `cargo +nightly` only works through rustup's proxy, and xtask
/// runs under the real cargo binary of the default toolchain.
fn nightly_cargo() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo"])
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    command
}

fn corpus_args(fuzz_dir: &Path, out: &Path, target: &str) -> Vec<std::ffi::OsString> {
    let found = out.join("corpus").join(target);
    let seeds = fuzz_dir.join("corpus").join(target);
    let artifacts = out.join("artifacts").join(target);
    vec![
        "--corpus".into(),
        found.into(),
        "--corpus".into(),
        seeds.into(),
        "--artifacts".into(),
        artifacts.into(),
    ]
}
