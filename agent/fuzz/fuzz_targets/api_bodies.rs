//! Fuzz target: see [`hostnetd_fuzz::targets::api_bodies`].
fn main() -> std::process::ExitCode {
    hostnetd_fuzz::engine::main("api_bodies", hostnetd_fuzz::targets::api_bodies)
}
