//! Reading the `EVENTS` ring buffer: the denials the hooks report. The daemon is its only
//! reader; an event is consumed once.
use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    path::Path,
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use hostnetd_common::{
    traffic::{DenialEvent, STAT_EVENTS_LOST, STAT_TRAFFIC_TABLE_FULL},
    MapName,
};

use super::{error::DatapathError, pins::open_map, traffic::DatapathHealth};

/// The pinned ring, opened for reading. Poll its fd for readability, then drain it with
/// [`EventRing::next_denial`].
pub struct EventRing {
    ring: RingBuf<MapData>,
}

impl EventRing {
    /// Opens the ring pinned under the datapath's pin root (`<bpf_dir>/v<ABI>`).
    pub fn open(pin_root: &Path) -> Result<Self, DatapathError> {
        let name = MapName::Events.as_str();
        let map = open_map(&pin_root.join("maps"), name)?;
        let ring = RingBuf::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
        Ok(Self { ring })
    }

    /// The next denial in the ring, if any. Entries of another size (none today) are skipped.
    pub fn next_denial(&mut self) -> Option<DenialEvent> {
        loop {
            let item = self.ring.next()?;
            if item.len() == size_of::<DenialEvent>() {
                // SAFETY: DenialEvent is plain old data of exactly this size, read unaligned.
                return Some(unsafe { item.as_ptr().cast::<DenialEvent>().read_unaligned() });
            }
        }
    }
}

impl AsFd for EventRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// The datapath's health counters (events dropped on a full ring, packets not counted on a
/// full traffic table), read straight from the pinned stats: a read-only look that needs
/// neither the host lock nor the rest of the datapath.
pub fn read_health(pin_root: &Path) -> Result<DatapathHealth, DatapathError> {
    let name = MapName::DatapathStats.as_str();
    let map_error = |source| DatapathError::Map { name, source };
    let stats: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(open_map(&pin_root.join("maps"), name)?).map_err(map_error)?;
    let stat = |index: u32| -> Result<u64, DatapathError> {
        Ok(stats.get(&index, 0).map_err(map_error)?.iter().sum())
    };
    Ok(DatapathHealth {
        events_lost: stat(STAT_EVENTS_LOST)?,
        traffic_table_full: stat(STAT_TRAFFIC_TABLE_FULL)?,
    })
}
