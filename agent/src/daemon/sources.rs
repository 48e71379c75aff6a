//! The daemon's two event sources, each a background task feeding the [`EventHub`]: the
//! datapath's denial ring and the container records (see [`super::feed`] for why records).
use std::{path::Path, sync::Arc};

use tokio::io::unix::AsyncFd;

use super::feed::{Event, EventHub, LIFECYCLE_POLL};
use crate::{
    datapath::{Datapath, DatapathError, EventRing},
    store::{ContainerRecord, FileStamp, Store, StoreError},
    sys::time::boot_to_wall_ns,
};

/// Compares the store's records every [`LIFECYCLE_POLL`], for as long as the process runs.
/// Records are listed again only when their directory changed: listing hundreds ten times a
/// second kept a CPU busy on a host that changed nothing.
pub fn spawn_lifecycle_watch(hub: Arc<EventHub>, store: Store) {
    if let Ok(records) = store.list() {
        hub.observe(&records, true);
    }
    std::thread::spawn(move || {
        let mut unchanged_since = None;
        loop {
            std::thread::sleep(LIFECYCLE_POLL);
            let stamp = store.records_stamp();
            if stamp.is_some() && stamp == unchanged_since {
                continue;
            }
            observe_now(&hub, &|| store.list());
            // Taken before the listing, and trusted only once settled: a change within the
            // same tick of the file system's clock would leave the stamp as it is.
            unchanged_since = stamp.filter(FileStamp::is_settled);
        }
    });
}

fn observe_now(hub: &EventHub, list: &dyn Fn() -> Result<Vec<Arc<ContainerRecord>>, StoreError>) {
    // A record removed while being listed fails this look; the next one sees it gone.
    match list() {
        Ok(records) => hub.observe(&records, false),
        Err(error) => tracing::debug!(%error, "cannot list containers for events"),
    }
}

/// Opens the `EVENTS` ring under `bpf_dir` and publishes every denial it yields.
pub fn spawn_denial_reader(
    hub: Arc<EventHub>,
    store: Store,
    bpf_dir: &Path,
) -> Result<(), DatapathError> {
    let ring = EventRing::open(&Datapath::pin_root(bpf_dir))?;
    // SAFETY: the ring owns its map fd, opened once and closed only when the ring drops, so
    // it stays the same open fd for as long as the AsyncFd holds the ring.
    let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|error| DatapathError::Io {
            action: "poll the event ring under",
            path: bpf_dir.to_path_buf(),
            source: error.into(),
        })?;
    tokio::spawn(read_denials(ring, hub, store));
    Ok(())
}

async fn read_denials(mut ring: AsyncFd<EventRing>, hub: Arc<EventHub>, store: Store) {
    loop {
        let mut ready = match ring.readable_mut().await {
            Ok(ready) => ready,
            Err(error) => {
                tracing::error!(%error, "cannot poll the event ring; denial events stop");
                return;
            }
        };
        while let Some(raw) = ready.get_inner_mut().next_denial() {
            let subject = hub.subject(raw.cgroup_id).or_else(|| {
                // A container younger than the last look at the store: look again.
                hub.observe(&store.list().unwrap_or_default(), false);
                hub.subject(raw.cgroup_id)
            });
            let wall = boot_to_wall_ns(raw.boot_ns);
            hub.publish(Event::denial(&raw, wall, subject.as_ref()));
        }
        ready.clear_ready();
    }
}
