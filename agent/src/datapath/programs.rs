//! The programs the TC hooks attach, and where the host's interfaces are listed.
use aya::programs::TcAttachType;

pub const TC_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("tc_ingress", TcAttachType::Ingress),
    ("tc_egress", TcAttachType::Egress),
];
pub const LAST_PROGRAM: &str = TC_PROGRAMS[1].0;
pub const SYS_CLASS_NET: &str = "/sys/class/net";
