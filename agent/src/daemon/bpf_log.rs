//! The eBPF programs' aya-log records, forwarded into the daemon's own log under the target
//! `ebpf`. Off unless the datapath was loaded with `--bpf-log-level`.
use tokio::io::{unix::AsyncFd, Interest};

/// Starts reading the log ring of the object `program_id` belongs to.
pub fn forward(program_id: u32) -> std::io::Result<()> {
    let logger = aya_log::EbpfLogger::init_from_id_with_logger(program_id, TracingLog)
        .map_err(std::io::Error::other)?;
    // SAFETY: the logger owns its ring's fd, opened once and closed only when the logger
    // drops, so it stays the same open fd for as long as the AsyncFd holds the logger.
    let mut ring = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }?;
    tokio::spawn(async move {
        while let Ok(mut guard) = ring.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}

/// A `log` sink that hands each record to `tracing`.
struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "ebpf", "{message}"),
            log::Level::Warn => tracing::warn!(target: "ebpf", "{message}"),
            log::Level::Info => tracing::info!(target: "ebpf", "{message}"),
            log::Level::Debug => tracing::debug!(target: "ebpf", "{message}"),
            log::Level::Trace => tracing::trace!(target: "ebpf", "{message}"),
        }
    }

    fn flush(&self) {}
}
