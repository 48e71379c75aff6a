//! The user's terminal during a session with a container's terminal: raw mode (every key goes
//! to the container, whose own terminal echoes and interprets it), restored however the
//! session ends, and the window size.
use std::{io, os::fd::RawFd};

/// Raw mode on a terminal until dropped (on return, error or panic alike).
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    pub fn enable(fd: RawFd) -> io::Result<Self> {
        // SAFETY: a zeroed termios is valid storage for tcgetattr to fill.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr and tcsetattr read and write the termios given.
        unsafe {
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read at enable.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// The terminal's size (rows, columns), if `fd` is a terminal that knows it.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: a zeroed winsize is valid storage for TIOCGWINSZ to fill.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize.
    let known = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0;
    (known && size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

/// docker's detach keys, ctrl-p ctrl-q: found across reads; a ctrl-p followed by anything
/// else is passed on with what follows.
#[derive(Default)]
pub struct DetachKeys {
    pending_ctrl_p: bool,
}

const CTRL_P: u8 = 0x10;
const CTRL_Q: u8 = 0x11;

impl DetachKeys {
    /// The bytes to pass on from `input`, and whether the keys were typed (then what
    /// followed them is dropped).
    pub fn filter(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &byte in input {
            if std::mem::take(&mut self.pending_ctrl_p) {
                if byte == CTRL_Q {
                    return (out, true);
                }
                out.push(CTRL_P);
            }
            if byte == CTRL_P {
                self.pending_ctrl_p = true;
            } else {
                out.push(byte);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_p_ctrl_q_detaches_even_across_reads_and_a_lone_ctrl_p_passes() {
        let mut keys = DetachKeys::default();
        assert_eq!(keys.filter(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(keys.filter(&[b'a', CTRL_P]), (b"a".to_vec(), false));
        assert_eq!(keys.filter(&[CTRL_Q, b'x']), (Vec::new(), true));
        let mut keys = DetachKeys::default();
        assert_eq!(keys.filter(&[CTRL_P, b'x']), (vec![CTRL_P, b'x'], false));
        assert_eq!(keys.filter(&[CTRL_P, CTRL_P, CTRL_Q]), (vec![CTRL_P], true));
    }
}
