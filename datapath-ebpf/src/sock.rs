//! cgroup/sock_create: raw sockets would see and forge traffic of every port on the host, so
//! containers get them only with `--cap-add NET_RAW`. The kernel runs this hook from
//! inet_create and inet6_create only, so packet sockets never reach it (they are kept from
//! containers by the missing CAP_NET_RAW, and by `lsm/socket_create` where BPF LSM is active);
//! AF_PACKET is still refused here should that change.
use aya_ebpf::{macros::cgroup_sock, programs::SockContext};
use aya_log_ebpf::debug;
use hostnetd_common::POLICY_ALLOW_RAW_SOCKETS;

use crate::{container::current_container, report::report_raw_socket};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const AF_PACKET: u32 = 17;
const SOCK_RAW: u32 = 3;

#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the kernel hands every sock program a valid socket.
    let (family, kind, protocol) =
        unsafe { ((*ctx.sock).family, (*ctx.sock).type_, (*ctx.sock).protocol) };
    let raw =
        family == AF_PACKET || ((family == AF_INET || family == AF_INET6) && kind == SOCK_RAW);
    if !raw {
        return 1;
    }
    let container = current_container();
    let allowed = container.is_some_and(|(_, policy)| policy.flags & POLICY_ALLOW_RAW_SOCKETS != 0);
    if let (false, Some((cgroup_id, _))) = (allowed, container) {
        debug!(
            &ctx,
            "raw socket (family {}, protocol {}) refused", family, protocol
        );
        report_raw_socket(cgroup_id, protocol);
    }
    // Refused with EPERM, the errno a missing CAP_NET_RAW gives.
    i32::from(allowed)
}
