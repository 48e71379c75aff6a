//! lsm/socket_create (BPF LSM, where `bpf` is an active LSM): packet sockets see and forge every
//! port's traffic, and the cgroup sock_create hook never sees them (the kernel runs it for
//! inet sockets only). Here every socket creation passes, so a container's process without
//! `--cap-add NET_RAW` is refused AF_PACKET even when it holds CAP_NET_RAW (a root process
//! moved into the container's cgroup, say).
use aya_ebpf::{macros::lsm, programs::LsmContext};
use hostnetd_common::{EPERM, POLICY_ALLOW_RAW_SOCKETS};

use crate::{container::current_container, report::report_raw_socket};

const AF_PACKET: i32 = 17;

#[lsm(hook = "socket_create")]
pub fn socket_create(ctx: LsmContext) -> i32 {
    // socket_create(int family, int type, int protocol, int kern), then the verdict of the
    // LSM programs before this one.
    let (family, protocol, kern, earlier): (i32, i32, i32, i32) =
        (ctx.arg(0), ctx.arg(2), ctx.arg(3), ctx.arg(4));
    if earlier != 0 || kern != 0 || family != AF_PACKET {
        return earlier;
    }
    let Some((cgroup_id, policy)) = current_container() else {
        return 0;
    };
    if policy.flags & POLICY_ALLOW_RAW_SOCKETS != 0 {
        return 0;
    }
    report_raw_socket(cgroup_id, protocol as u32);
    -EPERM
}
