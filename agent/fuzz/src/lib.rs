//! hostnetd's fuzz targets and the small coverage-guided engine that runs them.
//!
//! The targets ([`targets`]) take raw bytes and must never panic; they also check properties
//! that hold for every input a parser accepts (what it prints parses back to the same value).
//! The engine ([`engine`]) reads SanitizerCoverage's trace-pc-guard callbacks from the
//! instrumented hostnetd crates and keeps the inputs that reach new code.
pub mod engine;
pub mod targets;
