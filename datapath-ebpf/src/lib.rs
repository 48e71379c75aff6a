//! Empty on purpose: the agent's build script depends on this crate so that cargo rebuilds the
//! eBPF object (the `hostnetd-datapath` binary target) whenever its sources change.
#![no_std]
