//! Compiles the coverage callbacks in C: compiled by rustc with the rest, they would be
//! instrumented themselves and call themselves.
fn main() {
    println!("cargo:rerun-if-changed=src/coverage.c");
    cc::Build::new()
        .file("src/coverage.c")
        .opt_level(2)
        .compile("hostnetd_fuzz_coverage");
}
