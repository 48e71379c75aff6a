//! The operating system as hostnetd uses it: state files, the mount table, cgroup v2, the
//! kernel's socket tables (sock_diag), directory listings kept while unchanged, processes,
//! time, and removal that never crosses a mount. Nothing here knows containers.
pub mod cgroup;
pub mod files;
pub mod listing;
pub mod mounts;
pub mod process;
pub mod safe_remove;
pub mod sock_diag;
pub mod time;
