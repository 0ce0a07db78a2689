//! An instance's listening sockets: bound once (by the master, or by an
//! in-process server), one per shard for every address and role, and handed
//! to worker processes as inherited file descriptors.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::net::bind_shard_listeners;
use crate::proto::ListenerRole;

/// The environment variable that carries a worker's listeners:
/// `main=3,4;redirect=5,6;admin=7,8` (one descriptor per shard per group).
pub(crate) const LISTEN_ENV: &str = "SKITAI_LISTEN";

/// Listening sockets by group (a role on one address), each with one
/// listener per shard of every worker.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) groups: Vec<(ListenerRole, Vec<TcpListener>)>,
}

fn role_name(role: ListenerRole) -> &'static str {
    match role {
        ListenerRole::Main => "main",
        ListenerRole::RedirectToHttps => "redirect",
        ListenerRole::Admin => "admin",
    }
}

fn role_of(name: &str) -> Option<ListenerRole> {
    match name {
        "main" => Some(ListenerRole::Main),
        "redirect" => Some(ListenerRole::RedirectToHttps),
        "admin" => Some(ListenerRole::Admin),
        _ => None,
    }
}

impl Bound {
    /// Binds `count` listeners per group: the site on every address, the
    /// https redirect port, the admin listener. With port 0 the first bind
    /// picks the port and the other addresses reuse it. Errors name the key.
    pub(crate) fn bind(config: &Config, count: usize) -> Result<Bound> {
        let s = &config.server;
        let mut groups = Vec::new();
        // Socket activation: systemd bound the site's sockets and passed
        // them (fds 3.., `LISTEN_FDS`); every shard accepts on them.
        let activated = socket_activation(count)?;
        let main_bound = !activated.is_empty();
        groups.extend(activated);
        let mut bind_all = |port: u16, role: ListenerRole, key: &str| -> Result<()> {
            let mut port = port;
            for &ip in &s.address {
                let listeners = bind_shard_listeners(SocketAddr::new(ip, port), s.backlog, count)
                    .map_err(|e| Error::new(ErrorKind::Config, format!("{key}: {e}")))?;
                port = listeners[0].local_addr().map_err(Error::from)?.port();
                groups.push((role, listeners));
            }
            Ok(())
        };
        if !main_bound {
            bind_all(s.port, ListenerRole::Main, "server.address/port")?;
        }
        if let Some(forward) = config.tls.as_ref().and_then(|t| t.forward_port) {
            bind_all(forward, ListenerRole::RedirectToHttps, "tls.forward_port")?;
        }
        if let Some(port) = config.admin.port {
            let listeners = bind_shard_listeners(SocketAddr::new(config.admin.address, port), s.backlog, count)
                .map_err(|e| Error::new(ErrorKind::Config, format!("admin.address/port: {e}")))?;
            groups.push((ListenerRole::Admin, listeners));
        }
        Ok(Bound { groups })
    }

    /// The addresses of the groups of `role`.
    pub(crate) fn addrs(&self, role: ListenerRole) -> Vec<SocketAddr> {
        self.groups
            .iter()
            .filter(|(r, _)| *r == role)
            .filter_map(|(_, listeners)| listeners.first().and_then(|l| l.local_addr().ok()))
            .collect()
    }

    /// The descriptors worker `worker` (of `shards` shards) gets, and the
    /// [`LISTEN_ENV`] value that names them.
    pub(crate) fn for_worker(&self, worker: usize, shards: usize) -> (Vec<RawFd>, String) {
        let mut fds = Vec::new();
        let mut text = String::new();
        for (role, listeners) in &self.groups {
            let mine: Vec<RawFd> =
                listeners[worker * shards..(worker + 1) * shards].iter().map(AsRawFd::as_raw_fd).collect();
            if !text.is_empty() {
                text.push(';');
            }
            text.push_str(role_name(*role));
            text.push('=');
            text.push_str(&mine.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
            fds.extend(mine);
        }
        (fds, text)
    }

    /// The listeners a master passed to this worker process (see [`Bound::for_worker`]).
    pub(crate) fn inherited(text: &str, shards: usize) -> Result<Bound> {
        let bad = |why: &str| Error::new(ErrorKind::Internal, format!("{LISTEN_ENV}={text:?}: {why}"));
        let mut groups = Vec::new();
        for group in text.split(';').filter(|g| !g.is_empty()) {
            let (name, fds) = group.split_once('=').ok_or_else(|| bad("a group without '='"))?;
            let role = role_of(name).ok_or_else(|| bad("unknown role"))?;
            let mut listeners = Vec::new();
            for fd in fds.split(',') {
                let fd: RawFd = fd.parse().map_err(|_| bad("not a descriptor number"))?;
                // SAFETY: fcntl on a descriptor number only reads its flags.
                if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                    return Err(bad("a descriptor that is not open"));
                }
                // SAFETY: the master passed this descriptor, open, to this
                // process alone for this use; nothing else here owns it.
                let listener = unsafe { TcpListener::from_raw_fd(fd) };
                // SAFETY: setting FD_CLOEXEC on a descriptor we now own.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                listeners.push(listener);
            }
            if listeners.len() != shards {
                return Err(bad("the number of listeners differs from the number of shards"));
            }
            groups.push((role, listeners));
        }
        if !groups.iter().any(|(r, _)| *r == ListenerRole::Main) {
            return Err(bad("no main listeners"));
        }
        Ok(Bound { groups })
    }
}

/// The sockets systemd passed (`LISTEN_PID` = us, `LISTEN_FDS` = n, fds 3..3+n),
/// each as a group of `count` descriptors (duplicates: the shards share one
/// accept queue). Empty without socket activation.
fn socket_activation(count: usize) -> Result<Vec<(ListenerRole, Vec<TcpListener>)>> {
    let for_us = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS").ok().and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    if !for_us || n <= 0 {
        return Ok(Vec::new());
    }
    let mut groups = Vec::new();
    for fd in 3..3 + n {
        // SAFETY: fcntl on a descriptor number only reads its flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::config("LISTEN_FDS", format!("descriptor {fd} is not open")));
        }
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID
        // is ours) for us to listen on; nothing else here owns it.
        let first = unsafe { TcpListener::from_raw_fd(fd) };
        // SAFETY: setting FD_CLOEXEC on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        if let Err(e) = first.local_addr() {
            // Not a socket we can use: leave the descriptor as it was.
            std::mem::forget(first);
            return Err(Error::config("LISTEN_FDS", format!("descriptor {fd} is not a TCP socket: {e}")));
        }
        let mut listeners = Vec::with_capacity(count);
        for _ in 1..count {
            listeners.push(first.try_clone().map_err(Error::from)?);
        }
        listeners.insert(0, first);
        groups.push((ListenerRole::Main, listeners));
    }
    tracing::info!("socket activation: {n} socket(s) from systemd");
    Ok(groups)
}
