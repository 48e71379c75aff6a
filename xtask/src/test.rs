//! `cargo xtask test`: lint, unit tests, the privileged end-to-end tests, then the same in VMs
//! on the kernels of the matrix.
use anyhow::Context as _;

use crate::{
    build::build,
    setup::setup,
    shell::{cargo, run, say},
};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip rustfmt, clippy and the import-cycle check (`cargo xtask layers`).
    #[arg(long)]
    no_lint: bool,
    /// Skip the fuzz targets' bounded run.
    #[arg(long)]
    no_fuzz: bool,
    /// How long each fuzz target runs.
    #[arg(long, default_value_t = 15)]
    fuzz_seconds: u64,
    /// Skip the kernel matrix (the end-to-end tests in QEMU on Debian's 5.10, 6.1 and 6.12).
    #[arg(long)]
    no_vm: bool,
    /// Only run end-to-end tests whose name contains this (on this host; the kernel matrix is
    /// then skipped).
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
        crate::layers::layers()?;
    }
    say("unit tests");
    run(cargo().args(["test", "--workspace", "--exclude", "hostnetd-tests"]))?;
    if !args.no_fuzz {
        crate::fuzz::fuzz_targets(&crate::fuzz::TARGETS, args.fuzz_seconds)?;
    }
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
    .context("end-to-end tests failed")?;
    say("install: release builds into a staging root, run, and uninstalled again");
    crate::install::check_install().context("the install check failed")?;
    if args.no_vm || args.filter.is_some() {
        return Ok(());
    }
    say("the kernel matrix: end-to-end tests in QEMU on Debian's 5.10, 6.1 and 6.12 kernels");
    crate::vm::vm_matrix().context("the kernel matrix failed")
}
