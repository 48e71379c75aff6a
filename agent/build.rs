//! Builds the eBPF object (the `hostnetd-datapath` binary of `datapath-ebpf`) with the nightly
//! toolchain and bpf-linker, into OUT_DIR, where `datapath.rs` embeds it.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../datapath-ebpf");
    let datapath = Package {
        name: "hostnetd-datapath-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([datapath], Toolchain::default())
}
