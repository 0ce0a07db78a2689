//! systemd: `install` / `remove` write and delete a unit for the instance,
//! and the master speaks the `sd_notify` protocol (READY, RELOADING,
//! STOPPING, and the watchdog when the unit asks for it).

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};

/// Overrides the directory units are written to (packaging, tests).
pub(crate) const UNIT_DIR_ENV: &str = "SKITAI_SYSTEMD_DIR";

/// Where the unit of `name` goes: `/etc/systemd/system` for a system unit,
/// `~/.config/systemd/user` for a user unit.
fn unit_path(config: &Config, user_unit: bool) -> PathBuf {
    let dir = match std::env::var_os(UNIT_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None if user_unit => {
            let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
            home.join(".config/systemd/user")
        }
        None => PathBuf::from("/etc/systemd/system"),
    };
    dir.join(format!("{}.service", config.name))
}

/// Quotes an argument for a unit's `ExecStart=` line.
fn quote(arg: &str) -> String {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b)) {
        arg.to_owned()
    } else {
        format!("\"{}\"", arg.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%"))
    }
}

/// The unit's text: `Type=notify`, reload by SIGHUP, restart on failure.
/// `args` are the command's arguments without the `install` command.
pub(crate) fn unit_text(config: &Config, exe: &str, args: &[String], user_unit: bool) -> String {
    let mut exec = vec![quote(exe)];
    exec.extend(args.iter().map(|a| quote(a)));
    let stop = config.server.shutdown_timeout + 10;
    let target = if user_unit { "default.target" } else { "multi-user.target" };
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| "/".to_owned());
    format!(
        "# Written by `{name} install`; `{name} remove` deletes it.\n\
         [Unit]\n\
         Description=skitai instance {name}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         WorkingDirectory={cwd}\n\
         ExecStart={exec}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         KillMode=mixed\n\
         Restart=on-failure\n\
         RestartSec=1\n\
         TimeoutStopSec={stop}\n\
         \n\
         [Install]\n\
         WantedBy={target}\n",
        name = config.name,
        exec = exec.join(" "),
    )
}

/// The program's arguments `args` for the unit's `ExecStart`: without the
/// `install` command (its first occurrence) and its `--user-unit` flag, and
/// without `-d`/`--daemon` (under `Type=notify` the service must not fork away).
fn run_args(args: &[OsString]) -> Vec<String> {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    if let Some(at) = args.iter().position(|a| a == "install") {
        args.remove(at);
    }
    args.retain(|a| a != "--user-unit" && a != "-d" && a != "--daemon");
    args
}

/// `install`: writes the unit; prints how to enable it. Returns the exit status.
/// `args` are the program's arguments, without its name.
pub(crate) fn install(config: &Config, user_unit: bool, args: &[OsString]) -> Result<i32> {
    let path = unit_path(config, user_unit);
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot find this program").with_source(e))?;
    let text = unit_text(config, &exe.display().to_string(), &run_args(args), user_unit);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::config("install", format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, text)
        .map_err(|e| Error::config("install", format!("cannot write {}: {e}", path.display())))?;
    let scope = if user_unit { " --user" } else { "" };
    println!("wrote {}", path.display());
    println!(
        "enable and start it with: systemctl{scope} daemon-reload && systemctl{scope} enable --now {}",
        config.name
    );
    Ok(0)
}

/// `remove`: deletes the unit written by `install`. Returns the exit status.
pub(crate) fn remove(config: &Config, user_unit: bool) -> Result<i32> {
    let path = unit_path(config, user_unit);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            let scope = if user_unit { " --user" } else { "" };
            println!("removed {}", path.display());
            println!(
                "if it was enabled: systemctl{scope} disable --now {0}; systemctl{scope} daemon-reload",
                config.name
            );
            Ok(0)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no unit at {}", path.display());
            Ok(0)
        }
        Err(e) => Err(Error::config("remove", format!("cannot remove {}: {e}", path.display()))),
    }
}

/// The master's line to systemd (`NOTIFY_SOCKET`), if it runs under it.
pub(crate) struct Notifier {
    socket: UnixDatagram,
    target: std::os::unix::net::SocketAddr,
    /// Half the watchdog interval, when the unit has one.
    watchdog: Option<Duration>,
    last_ping: Instant,
}

impl Notifier {
    /// Connects to `NOTIFY_SOCKET` (a path, or `@abstract`); `None` outside systemd.
    pub(crate) fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_string_lossy().into_owned();
        let target = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| std::env::var("WATCHDOG_PID").ok().is_none_or(|p| p == std::process::id().to_string()))
            .map(|us| Duration::from_micros(us / 2));
        Some(Notifier { socket, target, watchdog, last_ping: Instant::now() })
    }

    /// Sends `state` (e.g. `READY=1`).
    pub(crate) fn send(&self, state: &str) {
        let _ = self.socket.send_to_addr(state.as_bytes(), &self.target);
    }

    /// Tells systemd the instance serves.
    pub(crate) fn ready(&self) {
        self.send(&format!("READY=1\nMAINPID={}\nSTATUS=serving", std::process::id()));
    }

    /// Tells systemd a reload started.
    pub(crate) fn reloading(&self) {
        let now = monotonic_usec();
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS=reloading"));
    }

    /// Tells systemd the instance stops.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// Pings the watchdog when half its interval has passed.
    pub(crate) fn tick(&mut self) {
        if let Some(every) = self.watchdog {
            if self.last_ping.elapsed() >= every {
                self.send("WATCHDOG=1");
                self.last_ping = Instant::now();
            }
        }
    }
}

/// CLOCK_MONOTONIC in microseconds (what `RELOADING=1` is stamped with).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec on our stack.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_has_notify_reload_and_restart() {
        let config = Config { name: "shop".into(), ..Default::default() };
        let text = unit_text(&config, "/usr/local/bin/shop", &["-c".into(), "/etc/shop and more.toml".into()], false);
        assert!(text.contains("Type=notify\n"), "{text}");
        assert!(text.contains("ExecStart=/usr/local/bin/shop -c \"/etc/shop and more.toml\"\n"), "{text}");
        assert!(text.contains("ExecReload=/bin/kill -HUP $MAINPID\n"), "{text}");
        assert!(text.contains("Restart=on-failure\n"), "{text}");
        assert!(text.contains("WantedBy=multi-user.target\n"), "{text}");
        assert!(unit_text(&config, "/x", &[], true).contains("WantedBy=default.target\n"));
    }

    #[test]
    fn exec_start_leaves_out_the_install_command_and_daemon_flags() {
        let args: Vec<OsString> =
            ["-c", "install", "install", "--user-unit", "-d", "--port", "80"].iter().map(OsString::from).collect();
        assert_eq!(run_args(&args), ["-c", "install", "--port", "80"]);
    }

    #[test]
    fn notifier_sends_datagrams_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let target = std::os::unix::net::SocketAddr::from_pathname(&path).unwrap();
        let n =
            Notifier { socket: UnixDatagram::unbound().unwrap(), target, watchdog: None, last_ping: Instant::now() };
        n.ready();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("READY=1\nMAINPID="), "{text}");
    }
}
