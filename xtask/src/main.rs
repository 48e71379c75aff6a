//! `cargo xtask`: set-up, build, test, demo and benchmarks for hostnetd.
mod bench;
mod build;
mod demo;
mod fuzz;
mod images;
mod install;
mod layers;
mod setup;
mod shell;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "hostnetd's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what hostnetd needs on this machine (idempotent).
    Setup,
    /// Set up, then build the eBPF object, the agent and the test binaries.
    Build,
    /// Set up, build, and run every check and test (unit, fuzz and privileged end-to-end).
    Test(test::TestArgs),
    /// Set up, build, and show port ownership at work with real containers.
    Demo,
    /// Build hostnetd and hostnetd-runc (release) and install them on the PATH with the
    /// systemd unit; prints the Docker, containerd and podman snippets.
    Install(install::InstallArgs),
    /// Remove what `install` put in place (the config and the state stay).
    Uninstall(install::InstallArgs),
    /// Run each fuzz target (agent/fuzz: cargo fuzz, libFuzzer, nightly) for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Build the sample images (busybox, nginx) offline from Debian packages.
    Images,
    /// Check that no source file reaches itself through its imports, nor any of the agent's
    /// module groups (api, daemon, host...) another that reaches back; part of `test`.
    Layers,
    /// Set up, build (release), and measure hostnetd against bare host processes and NAT;
    /// writes target/bench/ and, in full mode, docs/PERFORMANCE.md. Not part of `test`.
    Bench(bench::BenchArgs),
    /// Boot one of Debian's kernels (5.10, 6.1, 6.12) in QEMU and run a shell command there,
    /// in the e2e tests' environment; exits with the command's exit code.
    VmRun(vm::VmRunArgs),
    /// Run the privileged e2e tests in QEMU on Debian's kernels 5.10, 6.1 and 6.12; writes
    /// target/vm-test/summary.md.
    VmTest(vm::VmTestArgs),
}

fn main() -> std::process::ExitCode {
    // Printed plainly: a backtrace of xtask itself never helps the reader.
    match run(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Setup => setup::setup(),
        Task::Build => {
            setup::setup()?;
            build::build().map(drop)
        }
        Task::Test(args) => test::test(args),
        Task::Demo => demo::demo(),
        Task::Install(args) => install::install(args),
        Task::Uninstall(args) => install::uninstall(args),
        Task::Fuzz(args) => fuzz::fuzz(args),
        Task::Images => {
            setup::setup()?;
            images::build_images().map(drop)
        }
        Task::Layers => layers::layers(),
        Task::Bench(args) => bench::bench(args),
        Task::VmRun(args) => vm::vm_run(args),
        Task::VmTest(args) => vm::vm_test(args),
    }
}
