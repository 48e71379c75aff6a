//! What every step of a run shares: the binaries, the ports, the hostnetd instance and the
//! NAT network.
use std::path::PathBuf;

use super::{host::BenchHost, nat::NatNetwork, nginx::Nginx, plan::PortRange};

/// What every step needs: the binaries, the ports, the hostnetd instance and the NAT network.
/// Fields drop in order: the hostnetd instance is removed before the network.
pub struct Env {
    pub host: BenchHost,
    pub nat: NatNetwork,
    pub benchpeer: PathBuf,
    pub ports: PortRange,
    pub logs: PathBuf,
    pub nginx: Nginx,
    pub nginx_image: PathBuf,
    /// The sample images' directory (busybox.tar for the start-up peers).
    pub images: PathBuf,
    pub scratch: PathBuf,
}
