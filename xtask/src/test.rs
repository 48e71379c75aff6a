//! `cargo xtask test`: lint, unit tests, then the privileged end-to-end tests.
use anyhow::Context as _;

use crate::{
    build::{build, cargo, run},
    setup::{say, setup},
};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip rustfmt and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Only run end-to-end tests whose name contains this.
    filter: Option<String>,
}

pub fn test(args: TestArgs) -> anyhow::Result<()> {
    setup()?;
    let target = build()?;
    let images = crate::images::build_images()?;
    if !args.no_lint {
        say("checking formatting and lints");
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    say("unit tests");
    run(cargo().args(["test", "--workspace", "--exclude", "hostnetd-tests"]))?;
    say("end-to-end tests (privileged, serial: they share the host's ports and sysctls)");
    let hostnetd = target.join("debug/hostnetd");
    let mut e2e = cargo();
    e2e.args(["test", "--package", "hostnetd-tests", "--"])
        .arg("--test-threads=1");
    if let Some(filter) = &args.filter {
        e2e.arg(filter);
    }
    run(e2e
        .env("HOSTNETD_BIN", &hostnetd)
        .env("HOSTNETD_TEST_IMAGES", &images))
    .context("end-to-end tests failed")
}
