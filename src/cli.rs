//! The command line shared by the `skitai` binary and every embedding program.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, IoMode, MountConfig};
use crate::error::{Error, Result};

/// skitai: a thread-per-core application engine and web server.
#[derive(Debug, Parser)]
#[command(name = "skitai", version, about, args_conflicts_with_subcommands = false)]
pub struct Cli {
    /// What to do (default: run in the foreground).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file (default: ./skitai.toml when present).
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Instance name.
    #[arg(long, global = true)]
    pub name: Option<String>,
    /// Address to listen on (repeatable: `--address 0.0.0.0 --address ::`).
    #[arg(long, global = true)]
    pub address: Vec<IpAddr>,
    /// TCP port (0 picks a free one).
    #[arg(long, global = true)]
    pub port: Option<u16>,
    /// Number of shards per worker (0 = one per core).
    #[arg(long, global = true)]
    pub shards: Option<usize>,
    /// Worker processes (each runs the shards).
    #[arg(long, global = true)]
    pub workers: Option<usize>,
    /// Data directory: pid file, daemon stderr, default logs (default ~/.skitai/<name>).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Run in the background (the same as `start`).
    #[arg(short = 'd', long = "daemon", global = true)]
    pub daemon: bool,
    /// Threads in the blocking pool.
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// I/O driver.
    #[arg(long, global = true, value_enum)]
    pub io: Option<IoMode>,
    /// Development mode: verbose logs and error details in responses.
    #[arg(long, global = true, conflicts_with = "silent")]
    pub devel: bool,
    /// Quiet: warnings and errors only.
    #[arg(long, global = true)]
    pub silent: bool,
    /// When started as root: the user to switch to once the ports are bound
    /// and the keys read (default: `SUDO_USER`, if set).
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// When started as root: the group to switch to (default: the user's primary group).
    #[arg(long, global = true)]
    pub group: Option<String>,
    /// Mount a target at a path, e.g. `--mount /static=./public` (repeatable).
    #[arg(long = "mount", global = true, value_name = "POINT=TARGET")]
    pub mounts: Vec<String>,
}

/// Subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the server in the foreground (the default).
    Run,
    /// Validate the configuration and exit.
    Check,
    /// Start in the background (a daemon); returns once it serves.
    Start,
    /// Stop the running instance (graceful: waits for the drain).
    Stop,
    /// Stop the running instance, then start it in the background.
    Restart,
    /// Reload the running instance: new workers with the configuration read
    /// again, the old ones drain (zero downtime).
    Reload,
    /// Binary upgrade: the running instance starts this program's
    /// executable (a new version installed at the same path) as its new
    /// master on the same sockets, then drains (zero downtime).
    Upgrade,
    /// Write a systemd unit for this instance (`Type=notify`, reload by
    /// SIGHUP, restart on failure) with the current command line.
    Install {
        /// A user unit (`~/.config/systemd/user`) instead of a system one.
        #[arg(long)]
        user_unit: bool,
    },
    /// Delete the systemd unit `install` wrote.
    Remove {
        /// The user unit instead of the system one.
        #[arg(long)]
        user_unit: bool,
    },
    /// Show whether the instance (`--name`, or the config's `name`) runs, and
    /// its shards and shared state; exit status 0 running, 3 stopped.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    /// Applies the flags on top of `config` (flags win).
    pub fn apply(&self, config: &mut Config) -> Result<()> {
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        let s = &mut config.server;
        if !self.address.is_empty() {
            s.address = self.address.clone();
        }
        if let Some(v) = self.port {
            s.port = v;
        }
        if let Some(v) = self.shards {
            s.shards = v;
        }
        if let Some(v) = self.workers {
            s.workers = v;
        }
        if let Some(v) = &self.data_dir {
            s.data_dir = Some(v.clone());
        }
        if let Some(v) = self.threads {
            s.threads = v;
        }
        if let Some(v) = self.io {
            s.io = v;
        }
        if let Some(v) = &self.user {
            s.user = Some(v.clone());
        }
        if let Some(v) = &self.group {
            s.group = Some(v.clone());
        }
        for spec in &self.mounts {
            let (path, target) = spec
                .split_once('=')
                .ok_or_else(|| Error::config("--mount", format!("{spec:?} is not POINT=TARGET")))?;
            config.mounts.push(MountConfig { path: path.to_owned(), target: target.to_owned(), ..Default::default() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_config() {
        let cli =
            Cli::try_parse_from(["skitai", "--port", "8080", "--io", "epoll", "--mount", "/s=./d", "check"]).unwrap();
        assert_eq!(cli.command, Some(Command::Check));
        let mut c = Config::default();
        cli.apply(&mut c).unwrap();
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.io, IoMode::Epoll);
        assert_eq!(c.mounts[0], MountConfig { path: "/s".into(), target: "./d".into(), ..Default::default() });
    }

    #[test]
    fn bad_mount_flag_is_named() {
        let cli = Cli::try_parse_from(["skitai", "--mount", "nothing"]).unwrap();
        let e = cli.apply(&mut Config::default()).unwrap_err();
        assert!(e.to_string().starts_with("--mount:"), "{e}");
    }

    #[test]
    fn devel_and_silent_conflict() {
        assert!(Cli::try_parse_from(["skitai", "--devel", "--silent"]).is_err());
    }
}
