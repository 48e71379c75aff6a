//! The clsact qdisc, for kernels without TCX: aya adds the qdisc and the filters, but cannot
//! tell whether a qdisc still has filters of others, which decides whether hostnetd may
//! remove the qdisc it added. Two rtnetlink requests do that here.
use std::io;

use super::netlink::{
    exchange, TcMsg, TcRequest, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, RTM_DELQDISC, RTM_GETTFILTER,
    RTM_NEWTFILTER, TC_H_CLSACT,
};

/// The two blocks of `TC_H_CLSACT`, as `tc filter show dev X ingress|egress` names them.
const INGRESS_BLOCK: u32 = 0xffff_fff2;
const EGRESS_BLOCK: u32 = 0xffff_fff3;
const CLSACT_HANDLE: u32 = 0xffff_0000;

/// Whether the clsact qdisc of `ifindex` holds any filter, on either side.
pub fn has_filters(ifindex: u32) -> io::Result<bool> {
    for block in [INGRESS_BLOCK, EGRESS_BLOCK] {
        let tc = TcMsg {
            ifindex,
            parent: block,
            handle: 0,
        };
        let mut found = false;
        let request = TcRequest::new(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, tc);
        exchange(&request, |kind, _| found |= kind == RTM_NEWTFILTER)?;
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the clsact qdisc of `ifindex` (and with it any filter it still holds).
pub fn remove_qdisc(ifindex: u32) -> io::Result<()> {
    let tc = TcMsg {
        ifindex,
        parent: TC_H_CLSACT,
        handle: CLSACT_HANDLE,
    };
    exchange(
        &TcRequest::new(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK, tc),
        |_, _| {},
    )
}
