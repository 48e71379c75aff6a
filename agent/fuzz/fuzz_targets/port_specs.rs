//! Fuzz target: see [`hostnetd_fuzz::targets::port_specs`].
fn main() -> std::process::ExitCode {
    hostnetd_fuzz::engine::main("port_specs", hostnetd_fuzz::targets::port_specs)
}
