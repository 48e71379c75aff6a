//! Fuzz target: see [`hostnetd_fuzz::targets::port_specs`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hostnetd_fuzz::targets::port_specs(data));
