//! Dropping root: a server started as root (to bind :80 and :443 and read
//! its keys) continues as an ordinary user, with no way back.

use std::ffi::CString;

use crate::error::{Error, Result};

/// Switches to `user` (else `SUDO_USER`) and `group` (else the user's primary
/// group) when running as root: supplementary groups, gid, then uid. Does
/// nothing when not root or when no user is named. `hand_over` first gives
/// the new owner what root made and the server must remove at exit.
pub(crate) fn drop_privileges(
    user: Option<&str>,
    group: Option<&str>,
    hand_over: impl FnOnce(libc::uid_t, libc::gid_t) -> std::io::Result<()>,
) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if user.is_some() {
            tracing::warn!("not running as root: server.user is ignored");
        }
        return Ok(());
    }
    let from_sudo = std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty() && u != "root");
    let Some(name) = user.map(str::to_owned).or(from_sudo) else { return Ok(()) };
    let (uid, primary_gid) = lookup_user(&name)?;
    let gid = match group {
        Some(g) => lookup_group(g)?,
        None => primary_gid,
    };
    hand_over(uid, gid).map_err(|e| Error::config("server.user", format!("cannot hand the state file over: {e}")))?;
    let cname = CString::new(name.clone()).map_err(|_| Error::config("server.user", "contains NUL"))?;
    // SAFETY: plain syscalls with valid arguments; each result is checked.
    unsafe {
        if libc::initgroups(cname.as_ptr(), gid) != 0 {
            return Err(os_error("server.user", "initgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(os_error("server.group", "setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(os_error("server.user", "setuid"));
        }
        // The switch must be one-way.
        if libc::setuid(0) == 0 {
            return Err(Error::config("server.user", "could still regain root after dropping it"));
        }
    }
    tracing::info!(user = %name, uid, gid, "dropped root privileges");
    Ok(())
}

fn os_error(key: &str, call: &str) -> Error {
    Error::config(key, format!("{call} failed: {}", std::io::Error::last_os_error()))
}

fn lookup_user(name: &str) -> Result<(libc::uid_t, libc::gid_t)> {
    let cname = CString::new(name).map_err(|_| Error::config("server.user", "contains NUL"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; all-zero is a valid value to be filled in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` is as long as stated.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(Error::config("server.user", format!("no such user: {name}")));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn lookup_group(name: &str) -> Result<libc::gid_t> {
    let cname = CString::new(name).map_err(|_| Error::config("server.group", "contains NUL"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: group is plain data; all-zero is a valid value to be filled in.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` is as long as stated.
    let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(Error::config("server.group", format!("no such group: {name}")));
    }
    Ok(grp.gr_gid)
}
