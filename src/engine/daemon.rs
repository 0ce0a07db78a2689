//! The daemon commands: `start` runs the instance in the background and
//! returns once it serves; `stop`, `restart`, `reload` and `upgrade` act on
//! the running instance through its pid file.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::master::{READY_FD_ENV, TITLED_ENV, master_title, pipe};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};

/// Set in the environment of a master that `start` put in the background.
pub(crate) const DAEMON_ENV: &str = "SKITAI_DAEMON";
/// How long `start` waits for the instance to serve.
const START_WAIT: Duration = Duration::from_secs(90);
/// How often `stop` looks whether the master is gone.
const STOP_POLL: Duration = Duration::from_millis(20);
/// What `stop` waits beyond the instance's `shutdown_timeout`.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the pid file says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PidState {
    /// No pid file.
    Absent,
    /// The master of this instance runs with this pid.
    Running(u32),
    /// A pid file whose process is gone (or is something else now).
    Stale(u32),
}

/// Reads the instance's pid file and checks that its process is this
/// instance's master (by its process title).
pub(crate) fn pid_state(config: &Config) -> PidState {
    let Ok(text) = std::fs::read_to_string(config.pid_file()) else { return PidState::Absent };
    let Ok(pid) = text.trim().parse::<u32>() else { return PidState::Stale(0) };
    let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let expected = master_title(&config.name);
    if title.split(|&b| b == 0).next() == Some(expected.as_bytes()) {
        PidState::Running(pid)
    } else {
        PidState::Stale(pid)
    }
}

/// `start`: runs this program again as a background master (its own
/// session, stdin from /dev/null, stdout and stderr appended to
/// `<data_dir>/.stderr`) and waits until it serves. `args` are the
/// program's arguments (without its name). Returns the exit status.
pub(crate) fn start(config: &Config, args: &[OsString]) -> Result<i32> {
    let name = &config.name;
    match pid_state(config) {
        PidState::Running(pid) => {
            println!("{name} [running:{pid}] (already running)");
            return Ok(0);
        }
        PidState::Stale(pid) => {
            println!("{name}: removing the stale pid file of pid {pid}");
            let _ = std::fs::remove_file(config.pid_file());
        }
        PidState::Absent => {}
    }
    let dir = config.data_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::config("server.data_dir", format!("cannot create {}: {e}", dir.display())))?;
    let stderr_path = dir.join(".stderr");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr_path)
        .map_err(|e| Error::config("server.data_dir", format!("cannot open {}: {e}", stderr_path.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot find this program").with_source(e))?;
    let (ready_read, ready_write) = pipe().map_err(Error::from)?;
    let ready_fd = ready_write.as_raw_fd();
    let mut command = Command::new(exe);
    command
        .arg0(master_title(name))
        .args(args)
        .env(DAEMON_ENV, "1")
        .env(TITLED_ENV, "1")
        .env(READY_FD_ENV, ready_fd.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(Error::from)?)
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // (a session of its own, no controlling terminal) and fcntl.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(ready_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child =
        command.spawn().map_err(|e| Error::new(ErrorKind::Internal, "cannot start the daemon").with_source(e))?;
    drop(ready_write);
    let mut ready = File::from(ready_read);
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + START_WAIT;
    loop {
        match ready.read(&mut byte) {
            Ok(1) => {
                println!("{name} started (pid {})", child.id());
                return Ok(0);
            }
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    eprintln!("{name}: not serving after {START_WAIT:?}; see {}", stderr_path.display());
                    return Ok(1);
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(STOP_POLL);
            }
            Err(_) => break,
        }
    }
    let code = child.wait().ok().and_then(|s| s.code()).filter(|&c| c != 0).unwrap_or(1);
    let tail = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
    eprintln!("{name} did not start (exit status {code}); from {}:", stderr_path.display());
    for line in tail.iter().rev() {
        eprintln!("  {line}");
    }
    Ok(code)
}

/// `stop`: SIGTERM to the master, then waits until it is gone (the drain,
/// bounded by `shutdown_timeout`). Returns the exit status.
pub(crate) fn stop(config: &Config) -> Result<i32> {
    let name = &config.name;
    match pid_state(config) {
        PidState::Running(pid) => {
            // SAFETY: kill(2) with a pid read from our pid file and checked to be our master.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            let limit = Duration::from_secs(config.server.shutdown_timeout) + STOP_GRACE;
            let deadline = Instant::now() + limit;
            while alive(pid) {
                if Instant::now() > deadline {
                    eprintln!("{name} (pid {pid}) did not stop within {limit:?}");
                    return Ok(1);
                }
                std::thread::sleep(STOP_POLL);
            }
            println!("{name} stopped (pid {pid})");
            Ok(0)
        }
        PidState::Stale(pid) => {
            let _ = std::fs::remove_file(config.pid_file());
            println!("{name} [stopped] (removed the stale pid file of pid {pid})");
            Ok(0)
        }
        PidState::Absent => {
            println!("{name} [stopped]");
            Ok(0)
        }
    }
}

/// `reload`: SIGHUP to the master (new workers, old ones drain).
pub(crate) fn reload(config: &Config) -> Result<i32> {
    match pid_state(config) {
        PidState::Running(pid) => {
            // SAFETY: kill(2) with a pid checked to be our master.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
            println!("{} reloading (pid {pid})", config.name);
            Ok(0)
        }
        _ => {
            eprintln!("{} is not running", config.name);
            Ok(3)
        }
    }
}

/// `upgrade`: SIGUSR2 to the master, which starts the program's executable
/// (a new version, once installed at the same path) as a new master on the
/// same sockets; waits until the pid file names the new master, or the old
/// one reports (in the daemon's stderr file) that it did not upgrade.
pub(crate) fn upgrade(config: &Config) -> Result<i32> {
    let name = &config.name;
    let PidState::Running(old) = pid_state(config) else {
        eprintln!("{name} is not running");
        return Ok(3);
    };
    let stderr_path = config.data_dir().join(".stderr");
    let seen = std::fs::metadata(&stderr_path).map(|m| m.len()).unwrap_or(0);
    // SAFETY: kill(2) with a pid checked to be our master.
    unsafe { libc::kill(old as libc::pid_t, libc::SIGUSR2) };
    let deadline = Instant::now() + START_WAIT;
    while Instant::now() < deadline {
        if let PidState::Running(new) = pid_state(config) {
            if new != old {
                println!("{name} upgraded: new master pid {new} (the old one, {old}, drains)");
                return Ok(0);
            }
        }
        let news = std::fs::read(&stderr_path).ok().and_then(|t| t.get(seen as usize..).map(<[u8]>::to_vec));
        let news = String::from_utf8_lossy(news.as_deref().unwrap_or_default()).into_owned();
        if let Some(line) = news.lines().find(|l| l.contains("not upgraded")) {
            eprintln!("{name} not upgraded; from {}:\n  {line}", stderr_path.display());
            return Ok(1);
        }
        if !alive(old) {
            break;
        }
        std::thread::sleep(STOP_POLL);
    }
    eprintln!("{name}: no new master after {START_WAIT:?}; see {}", stderr_path.display());
    Ok(1)
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `Z` is a zombie.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
