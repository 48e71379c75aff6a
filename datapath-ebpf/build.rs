//! Rebuilds the programs when the bpf-linker binary changes: cargo cannot see that dependency.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
