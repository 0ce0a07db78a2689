//! Binary upgrade without downtime (SIGUSR2), the way nginx does it: the
//! master starts the program's executable again as a new master, passing it
//! every listening socket and its own descriptor of the state file (which
//! carries the instance's lock); the new master starts its workers on those
//! sockets and says when they serve; then the old master and its workers
//! drain and exit. If the new program fails to start, the old one keeps
//! serving as if nothing happened.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

use super::listeners::{Bound, LISTEN_ENV};
use super::master::{MASTER_PID_ENV, READY_FD_ENV, TITLED_ENV, WORKER_ENV, master_title, pass_descriptors, pipe};
use crate::error::{Error, ErrorKind, Result};

/// Set in a new master started by a binary upgrade: the old master's pid.
pub(crate) const UPGRADE_FROM_ENV: &str = "SKITAI_UPGRADE_FROM";
/// Set with [`UPGRADE_FROM_ENV`]: the inherited descriptor of the state file.
pub(crate) const UPGRADE_STATE_FD_ENV: &str = "SKITAI_UPGRADE_STATE_FD";

/// What a new master inherits from the master it replaces.
#[derive(Debug)]
pub(crate) struct Inherited {
    /// The old master's pid.
    pub(crate) from: u32,
    /// The state file, locked (the lock is shared with the old master's descriptor).
    pub(crate) state: File,
    /// Every listener, named as in [`LISTEN_ENV`].
    pub(crate) listen: String,
}

/// In a new master started by an upgrade, what the old master passed;
/// `None` in a master started any other way.
pub(crate) fn inherited() -> Result<Option<Inherited>> {
    let Some(from) = std::env::var(UPGRADE_FROM_ENV).ok() else { return Ok(None) };
    let bad = |why: &str| Error::new(ErrorKind::Internal, format!("binary upgrade: {why}"));
    let from: u32 = from.parse().map_err(|_| bad("the old master's pid is not a number"))?;
    let fd: RawFd = std::env::var(UPGRADE_STATE_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no state file descriptor"))?;
    // SAFETY: fcntl on a descriptor number only reads its flags.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad("the state file descriptor is not open"));
    }
    // SAFETY: the old master passed this descriptor, open, to this process
    // alone for this use; nothing else here owns it.
    let state = unsafe { File::from_raw_fd(fd) };
    // SAFETY: setting FD_CLOEXEC on a descriptor we now own: workers attach by path.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let listen = std::env::var(LISTEN_ENV).map_err(|_| bad("no listeners"))?;
    Ok(Some(Inherited { from, state, listen }))
}

/// A new master being started by this (old) master.
#[derive(Debug)]
pub(crate) struct Upgrade {
    pub(crate) child: Child,
    /// Read end of its ready pipe (non-blocking).
    ready: File,
    pub(crate) started: Instant,
}

impl Upgrade {
    /// Starts `exe` (the program's path: a new file there is the new
    /// version) as the new master of `name`, with `args`, every listener of
    /// `bound` (`count` per group) and the state file descriptor `state_fd`.
    pub(crate) fn spawn(
        exe: &Path,
        name: &str,
        args: &[OsString],
        bound: &Bound,
        count: usize,
        state_fd: RawFd,
    ) -> std::io::Result<Upgrade> {
        let (ready_read, ready_write) = pipe()?;
        let (mut fds, listen) = bound.for_worker(0, count);
        fds.push(state_fd);
        fds.push(ready_write.as_raw_fd());
        let mut command = Command::new(exe);
        command
            .arg0(master_title(name))
            .args(args)
            .env(UPGRADE_FROM_ENV, std::process::id().to_string())
            .env(UPGRADE_STATE_FD_ENV, state_fd.to_string())
            .env(LISTEN_ENV, listen)
            .env(READY_FD_ENV, ready_write.as_raw_fd().to_string())
            .env(TITLED_ENV, "1")
            .env_remove(WORKER_ENV)
            .env_remove(MASTER_PID_ENV)
            // Not systemd's sockets of the old master: ours are passed above.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            // The watchdog is for the main pid, which the new master becomes:
            // without this it would take WATCHDOG_PID (ours) as someone else's
            // and never ping.
            .env_remove("WATCHDOG_PID");
        // The new master outlives this one: no parent-death signal.
        pass_descriptors(&mut command, fds, false);
        let child = command.spawn()?;
        drop(ready_write);
        Ok(Upgrade { child, ready: File::from(ready_read), started: Instant::now() })
    }

    /// True once the new master wrote its ready byte (its workers serve).
    pub(crate) fn is_ready(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.ready.read(&mut byte), Ok(1))
    }
}
