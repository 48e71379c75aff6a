//! hostnetd's fuzz targets, one function per input surface; fuzz_targets/*.rs hand each to
//! libFuzzer (libfuzzer-sys), which `cargo xtask fuzz` runs.
//!
//! The targets ([`targets`]) take raw bytes and must never panic; they also check properties
//! that hold for every input a parser accepts (what it prints parses back to the same value).
pub mod targets;
