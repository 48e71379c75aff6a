//! Process plumbing for monitors and clients: becoming a container's parent, collecting its
//! exit status, detaching into a new session, signals, ids and times.
use std::{
    collections::{HashMap, HashSet},
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    process::Child,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use signal_hook::consts::signal;

use crate::sys::process::ProcessIdentity;

/// Signals a foreground `run` passes on to the container, as `docker run` does.
pub const FORWARDED: [i32; 6] = [
    signal::SIGINT,
    signal::SIGTERM,
    signal::SIGHUP,
    signal::SIGQUIT,
    signal::SIGUSR1,
    signal::SIGUSR2,
];

/// `TERM`, `SIGTERM`, `sigterm` or `15`, as `docker kill -s` takes them.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    const NAMES: [(&str, i32); 12] = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("TERM", libc::SIGTERM),
        ("STOP", libc::SIGSTOP),
        ("CONT", libc::SIGCONT),
        ("WINCH", libc::SIGWINCH),
        ("ALRM", libc::SIGALRM),
        ("PIPE", libc::SIGPIPE),
    ];
    if let Ok(number) = text.parse::<i32>() {
        if (1..=64).contains(&number) {
            return Ok(number);
        }
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, number)| *number).ok_or_else(|| {
        format!("invalid signal {text:?}: use a name such as TERM, KILL, HUP or a number from 1 to 64")
    })
}

/// Starts the command's process in a session of its own, so that it outlives its parent and
/// never gets the parent terminal's signals.
pub fn in_new_session(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: setsid is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The liveness of processes asked after again and again: the daemon checks every container's
/// supervisor on each command, and reading each one's /proc/PID/stat every time made every
/// command slower with each container. A pidfd, opened once and checked then against the
/// recorded start time, says when its process exits; it also sees a supervisor that died but
/// was not reaped, which /proc still shows. The pidfds sit in one epoll set, so that a check
/// of them all ([`LivenessCache::dead_among`]) is one epoll_wait that names only those that
/// exited, not a poll(2) each.
pub struct LivenessCache {
    watched: Mutex<Watched>,
    /// Descriptors this process may spend on it: past that, processes are checked through
    /// /proc as before.
    most: usize,
}

struct Watched {
    pidfds: HashMap<ProcessIdentity, OwnedFd>,
    /// The epoll set of `pidfds`; None where epoll cannot be had (each is then polled).
    exits: Option<OwnedFd>,
}

impl Default for LivenessCache {
    fn default() -> Self {
        Self {
            watched: Mutex::new(Watched {
                pidfds: HashMap::new(),
                exits: epoll_create().ok(),
            }),
            most: pidfd_budget(),
        }
    }
}

impl LivenessCache {
    pub fn is_alive(&self, process: &ProcessIdentity) -> bool {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(exited) = watched.pidfds.get(process).and_then(has_exited) {
            return !exited;
        }
        self.watch(&mut watched, process)
    }

    /// Those of `processes` that are not alive, with one look at every watched process.
    pub fn dead_among<'a>(
        &self,
        processes: impl IntoIterator<Item = &'a ProcessIdentity>,
    ) -> HashSet<ProcessIdentity> {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let exited = watched.exited();
        let mut dead = HashSet::new();
        for process in processes {
            let known = match (watched.pidfds.get(process), &exited) {
                (Some(pidfd), Some(exited)) => Some(!exited.contains(&pidfd.as_raw_fd())),
                (Some(pidfd), None) => has_exited(pidfd).map(|exited| !exited),
                (None, _) => None,
            };
            // Not watched, or its pidfd cannot say: looked at afresh, as `is_alive` does.
            let alive = known.unwrap_or_else(|| self.watch(&mut watched, process));
            if !alive {
                dead.insert(*process);
            }
        }
        dead
    }

    /// Whether `process` is alive, watching it from now on if it is.
    fn watch(&self, watched: &mut Watched, process: &ProcessIdentity) -> bool {
        let pidfd = match pidfd_open(process.pid) {
            Ok(pidfd) => pidfd,
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => return false,
            // No pidfds (kernel before 5.3) or no descriptor left.
            Err(_) => return process.is_alive(),
        };
        // The start time is read with the pidfd open: the pid cannot be reused meanwhile, so a
        // match means the pidfd is the recorded process's.
        if !process.is_alive() {
            return false;
        }
        if watched.pidfds.len() < self.most {
            let added = watched
                .exits
                .as_ref()
                .is_none_or(|exits| epoll_add(exits, &pidfd).is_ok());
            if added {
                watched.pidfds.insert(*process, pidfd);
            }
        }
        true
    }

    /// Stops watching the processes `keep` refuses, closing their descriptors (which takes
    /// them out of the epoll set).
    pub fn retain(&self, keep: impl Fn(&ProcessIdentity) -> bool) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched.pidfds.retain(|process, _| keep(process));
    }
}

impl Watched {
    /// The pidfds whose process has exited; None when the epoll set cannot say.
    fn exited(&self) -> Option<HashSet<RawFd>> {
        let exits = self.exits.as_ref()?;
        // Room for every watched pidfd: one call names them all, however many exited.
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; self.pidfds.len().max(1)];
        loop {
            // SAFETY: the buffer holds `events.len()` entries; no wait.
            let ready = unsafe {
                libc::epoll_wait(
                    exits.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    0,
                )
            };
            if ready >= 0 {
                let ready = &events[..ready as usize];
                return Some(ready.iter().map(|event| event.u64 as RawFd).collect());
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return None;
            }
        }
    }
}

fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes flags and returns a new descriptor or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `pidfd` to `epoll`, level-triggered: it stays ready from its process's exit on.
fn epoll_add(epoll: &OwnedFd, pidfd: &OwnedFd) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: pidfd.as_raw_fd() as u64,
    };
    // SAFETY: valid descriptors and an event that lives across the call.
    let rc = unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            pidfd.as_raw_fd(),
            &mut event,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process behind `pidfd` has exited (a pidfd polls readable once it has); None
/// when poll fails.
fn has_exited(pidfd: &OwnedFd) -> Option<bool> {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, no wait.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    (ready >= 0).then_some(ready > 0)
}

/// The pidfds each of [`LivenessCache`] and the reaper may hold: a quarter of the open-file
/// limit each, so that the daemon keeps half of it for its API connections, maps and files.
fn pidfd_budget() -> usize {
    open_files_limit() / 4
}

/// The soft limit on this process's open files.
fn open_files_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// Reaps `child` once it ends, so that it never lingers as a zombie, without a thread of its
/// own: the daemon starts a monitor for every container, and a waiting thread each made one
/// thread per running container. One thread polls the pidfds of all of them.
pub fn reap_in_background(child: Child) {
    static REAPER: OnceLock<Option<Reaper>> = OnceLock::new();
    match REAPER.get_or_init(Reaper::start) {
        Some(reaper) => reaper.hand_over(child),
        None => wait_in_a_thread(child),
    }
}

/// Reaps `pid`, an orphan this process (a subreaper) adopted, once it ends: a detached `exec`
/// outlives the runc that started it. Rare enough for a thread each.
pub fn reap_pid_in_background(pid: u32) {
    std::thread::spawn(move || wait_exit_code(pid));
}

fn wait_in_a_thread(mut child: Child) {
    std::thread::spawn(move || child.wait());
}

struct Reaper {
    handed_over: Arc<Mutex<Vec<Child>>>,
    /// An eventfd that wakes the reaping thread for a new child.
    wake: Arc<OwnedFd>,
}

impl Reaper {
    fn start() -> Option<Self> {
        // SAFETY: eventfd takes an initial value and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the descriptor was just opened and is owned by nobody else.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let handed_over = Arc::new(Mutex::new(Vec::new()));
        let reaper = Self {
            handed_over: Arc::clone(&handed_over),
            wake: Arc::clone(&wake),
        };
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reap_forever(&handed_over, &wake))
            .ok()?;
        Some(reaper)
    }

    fn hand_over(&self, child: Child) {
        (self.handed_over.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .push(child);
        let one: u64 = 1;
        // SAFETY: an eventfd takes 8-byte writes.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

fn reap_forever(handed_over: &Mutex<Vec<Child>>, wake: &OwnedFd) {
    let most = pidfd_budget();
    let mut waiting: Vec<(Child, OwnedFd)> = Vec::new();
    loop {
        let new = std::mem::take(&mut *handed_over.lock().unwrap_or_else(PoisonError::into_inner));
        for child in new {
            match pidfd_open(child.id()) {
                Ok(pidfd) if waiting.len() < most => waiting.push((child, pidfd)),
                // No pidfds, no descriptor left, or the budget spent: this one gets a thread.
                _ => wait_in_a_thread(child),
            }
        }
        let mut polled: Vec<libc::pollfd> = std::iter::once(wake.as_raw_fd())
            .chain(waiting.iter().map(|(_, pidfd)| pidfd.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `polled` is a valid array of its length; -1 waits until one is ready.
        if unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) } < 0 {
            continue;
        }
        if polled[0].revents != 0 {
            let mut count = 0u64;
            // SAFETY: an eventfd gives 8-byte reads.
            unsafe { libc::read(wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        }
        let mut ended = polled[1..].iter().map(|poll| poll.revents != 0);
        waiting.retain_mut(|(child, _)| {
            if ended.next().unwrap_or(false) {
                let _ = child.wait();
                false
            } else {
                true
            }
        });
    }
}

/// Makes this process the reaper of its orphaned descendants: runc's container init is
/// re-parented to us when `runc create` exits, so we can wait for it like a child.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for `pid` (our child or adopted orphan) and returns its exit code the way a shell
/// reports it: the status, or 128 + the signal that killed it.
pub fn wait_exit_code(pid: u32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes into our status integer.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if rc == pid as i32 {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Ok(128 + libc::WTERMSIG(status))
    }
}

/// 64 hex characters from the kernel's random source, as docker's container ids.
pub fn new_container_id() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    // SAFETY: getrandom fills our buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessIdentity::current();
        assert!(me.is_alive());
        assert!(!ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        }
        .is_alive());
    }

    #[test]
    // The child is reaped by wait_exit_code, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn a_watched_process_is_seen_to_exit_and_one_with_another_start_time_is_not_it() {
        let watch = LivenessCache::default();
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        let process = ProcessIdentity::of(pid).unwrap();
        assert!(watch.is_alive(&process));
        assert!(!watch.is_alive(&ProcessIdentity {
            start_time: process.start_time + 1,
            ..process
        }));
        assert_eq!(watch.watched.lock().unwrap().pidfds.len(), 1);
        assert!(watch.dead_among([&process]).is_empty());
        // SAFETY: signalling the child this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        // Seen dead as soon as it exits, before it is reaped: /proc still shows a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while watch.is_alive(&process) {
            assert!(std::time::Instant::now() < deadline, "never seen to exit");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(watch.dead_among([&process]), HashSet::from([process]));
        assert_eq!(wait_exit_code(pid).unwrap(), 137);
        assert!(!watch.is_alive(&process));
        watch.retain(|_| false);
        assert!(watch.watched.lock().unwrap().pidfds.is_empty());
    }

    #[test]
    fn children_handed_to_the_reaper_leave_no_zombie() {
        let children: Vec<Child> = (0..3)
            .map(|_| std::process::Command::new("true").spawn().unwrap())
            .collect();
        let pids: Vec<u32> = children.iter().map(Child::id).collect();
        children.into_iter().for_each(reap_in_background);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // A zombie keeps its /proc entry until it is reaped.
        while pids
            .iter()
            .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        {
            assert!(std::time::Instant::now() < deadline, "not reaped: {pids:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    // wait_exit_code reaps the children by pid, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn exit_codes_follow_the_shell() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        assert_eq!(wait_exit_code(child.id()).unwrap(), 7);
        let child = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        assert_eq!(wait_exit_code(child.id()).unwrap(), 137);
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Ok(libc::SIGKILL));
        assert_eq!(parse_signal("1"), Ok(libc::SIGHUP));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("NOPE").unwrap_err().contains("TERM"));
    }

    #[test]
    fn container_ids_are_64_hex_characters() {
        let id = new_container_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_container_id().unwrap());
    }
}
