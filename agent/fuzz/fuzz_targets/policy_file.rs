//! Fuzz target: see [`hostnetd_fuzz::targets::policy_file`].
fn main() -> std::process::ExitCode {
    hostnetd_fuzz::engine::main("policy_file", hostnetd_fuzz::targets::policy_file)
}
