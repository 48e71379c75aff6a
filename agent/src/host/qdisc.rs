//! `--manage-qdisc IFACES`: fq as the root qdisc of the interfaces named (or `all` but
//! loopback), so that bandwidth limits pace by departure time instead of policing. Off by
//! default: a qdisc is the administrator's. What hostnetd replaced is listed in
//! `STATE_DIR/qdiscs.json` and put back once an interface is no longer named (at the daemon's
//! next start) and at teardown: deleting the root qdisc gives a device the kernel's default
//! one again, which is what it had unless the administrator had configured one (which only
//! an interface named here loses).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Host, HostError};
use crate::{
    datapath::{
        device_pacing, remove_fq_root, replace_root_with_fq, Datapath, DevicePacing, PacingMode,
    },
    sys::files::{read_json, write_json},
};

/// One root qdisc hostnetd replaced with fq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Replaced {
    device: String,
    ifindex: u32,
    /// The kind it replaced (`pfifo_fast`, `mq`, ...).
    previous: String,
}

const LOOPBACK: &str = "lo";
/// `--manage-qdisc all`: every interface hostnetd attaches to, loopback aside.
const ALL: &str = "all";

impl Host {
    /// Puts fq on the interfaces `--manage-qdisc` names where it does not pace already, puts
    /// back what it replaced on those no longer named, then tells the hooks which devices
    /// pace.
    pub fn manage_qdiscs(&self, datapath: &mut Datapath) -> Result<(), HostError> {
        let named = |device: &str| {
            let list = self.config.manage_qdisc.as_str();
            device != LOOPBACK && (list == ALL || list.split(',').any(|name| name.trim() == device))
        };
        let (mut replaced, released): (Vec<Replaced>, Vec<Replaced>) = (self.replaced_qdiscs())
            .into_iter()
            .partition(|entry| named(&entry.device));
        restore(&released);
        for device in device_pacing()? {
            if named(&device.device) {
                pace(&device, &mut replaced);
            }
        }
        self.save_replaced(&replaced)?;
        datapath.policies().sync_paced_devices()?;
        Ok(())
    }

    /// Gives back every device hostnetd put fq on its previous (kernel default) root qdisc.
    pub(crate) fn restore_qdiscs(&self) {
        restore(&self.replaced_qdiscs());
        let _ = std::fs::remove_file(self.replaced_path());
    }

    fn replaced_qdiscs(&self) -> Vec<Replaced> {
        read_json(&self.replaced_path()).unwrap_or_default()
    }

    fn save_replaced(&self, replaced: &[Replaced]) -> Result<(), HostError> {
        let path = self.replaced_path();
        if replaced.is_empty() {
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        write_json(&path, &replaced).map_err(|error| HostError::Io {
            action: "record the replaced qdiscs in",
            path: path.clone(),
            source: std::io::Error::other(error.to_string()),
        })
    }

    fn replaced_path(&self) -> PathBuf {
        self.config.state_dir.join("qdiscs.json")
    }
}

/// Puts fq on `device` unless fq paces it already, noting what it replaced. A device that
/// refuses fq (a kernel without it) stays policed, with a warning: the daemon runs on.
fn pace(device: &DevicePacing, replaced: &mut Vec<Replaced>) {
    if device.egress_limits == PacingMode::Edt {
        return;
    }
    match replace_root_with_fq(device.ifindex) {
        Ok(()) => {
            tracing::info!(device = %device.device, previous = %device.qdisc, "fq is the root qdisc now (--manage-qdisc)");
            replaced.retain(|entry| entry.ifindex != device.ifindex);
            replaced.push(Replaced {
                device: device.device.clone(),
                ifindex: device.ifindex,
                previous: device.qdisc.clone(),
            });
        }
        Err(error) => {
            tracing::warn!(device = %device.device, %error, "cannot put fq on the device: bandwidth limits through it are policed")
        }
    }
}

/// Deletes the fq hostnetd put on each device: the kernel gives it its default qdisc again.
fn restore(replaced: &[Replaced]) {
    for entry in replaced {
        match remove_fq_root(entry.ifindex) {
            Ok(()) => {
                tracing::info!(device = %entry.device, "hostnetd's fq removed; the kernel's default qdisc is back")
            }
            Err(error) => {
                tracing::warn!(device = %entry.device, %error, "cannot remove hostnetd's fq")
            }
        }
    }
}
