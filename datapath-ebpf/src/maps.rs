//! Every map the programs share, pinned by name under the agent's versioned bpffs directory.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use hostnetd_common::{BindAddrKey, PortOwner, MAX_BIND_ADDRS, PORTS_PER_PROTO, TRACKED_PROTOS};

/// Owner of every (protocol, port): an array, so a lookup is one index, whatever the count.
#[map]
pub static PORT_OWNERS: Array<PortOwner> = Array::pinned(PORTS_PER_PROTO * TRACKED_PROTOS, 0);

/// Addresses an owner restricted its ports to; consulted only for owners that declared some.
#[map]
pub static BIND_ADDRS: HashMap<BindAddrKey, u8> = HashMap::pinned(MAX_BIND_ADDRS, 0);
