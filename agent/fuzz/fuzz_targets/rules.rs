//! Fuzz target: see [`hostnetd_fuzz::targets::rules`].
fn main() -> std::process::ExitCode {
    hostnetd_fuzz::engine::main("rules", hostnetd_fuzz::targets::rules)
}
