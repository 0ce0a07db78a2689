//! `skitai status`: what a running instance's state file says, read from
//! another process without disturbing the server.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde_json::json;

use super::layout::{self, Driver, header, shard};
use super::shm::{OpenError, StateFile};
use super::{from_micros, micros};

/// What `skitai status` found.
#[derive(Debug)]
pub(crate) enum Status {
    /// No state file: not running.
    Stopped,
    /// A state file nobody holds: the instance died without cleaning up.
    Stale(Snapshot),
    /// The instance is running.
    Running(Snapshot),
    /// A file that cannot be read as a state file.
    Unreadable(String),
}

/// One shard's line of the shard table.
#[derive(Debug)]
pub(crate) struct ShardLine {
    pub(crate) driver: Driver,
    pub(crate) received: u64,
    /// Bus messages (broadcasts and fan-out work) dropped on a full queue.
    pub(crate) dropped: u64,
}

/// The contents of a state file at one moment.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) version: String,
    pub(crate) started_micros: i64,
    pub(crate) slots: usize,
    pub(crate) shards: Vec<ShardLine>,
    pub(crate) states: Vec<(String, i64)>,
    /// Name and last update (µs since the epoch; 0 = never set).
    pub(crate) cache_keys: Vec<(String, i64)>,
}

/// Reads the state file at `path`.
pub(crate) fn read(path: &Path) -> Status {
    let file = match StateFile::open_read_only(path) {
        Ok(f) => f,
        Err(OpenError::Missing(_)) => return Status::Stopped,
        Err(e) => return Status::Unreadable(e.to_string()),
    };
    let snapshot = snapshot(&file);
    if file.is_locked() { Status::Running(snapshot) } else { Status::Stale(snapshot) }
}

fn snapshot(file: &StateFile) -> Snapshot {
    let l = file.layout();
    let count = |offset| (file.u32_at(offset).load(Ordering::Relaxed) as usize).min(l.slots);
    let shards = (0..l.shards)
        .map(|i| {
            let line = l.shard_line(i);
            ShardLine {
                driver: Driver::from_code(file.u32_at(line + shard::DRIVER).load(Ordering::Relaxed)),
                received: file.u64_at(line + shard::RECEIVED).load(Ordering::Relaxed),
                dropped: file.u64_at(line + shard::DROPPED).load(Ordering::Relaxed),
            }
        })
        .collect();
    let states = (0..count(header::STATES))
        .map(|i| {
            let name = file.string_at(l.state_name(i), layout::MAX_NAME_LEN);
            (name, file.i64_at(l.state_value(i)).load(Ordering::Acquire))
        })
        .collect();
    let cache_keys = (0..count(header::CACHE_KEYS))
        .map(|i| {
            let name = file.string_at(l.cache_key_name(i), layout::MAX_NAME_LEN);
            (name, file.i64_at(l.cache_key_value(i)).load(Ordering::Acquire))
        })
        .collect();
    Snapshot {
        name: file.string_at(header::NAME, layout::MAX_INSTANCE_NAME_LEN),
        pid: file.u32_at(header::PID).load(Ordering::Relaxed),
        version: file.string_at(header::SKITAI_VERSION, layout::MAX_VERSION_LEN),
        started_micros: file.u64_at(header::STARTED).load(Ordering::Relaxed) as i64,
        slots: l.slots,
        shards,
        states,
        cache_keys,
    }
}

/// Seconds since the epoch of 10000-01-01, the end of `httpdate`'s range.
const YEAR_10000: i64 = 253_402_300_800;

/// A time as an HTTP date (when it has one: 1970 to 9999; a broken clock
/// or file must not crash `status`).
fn http_date(us: i64) -> String {
    if (0..YEAR_10000 * 1_000_000).contains(&us) {
        httpdate::fmt_http_date(from_micros(us))
    } else {
        "(out of range)".to_owned()
    }
}

/// A time as an HTTP date plus its microseconds since the epoch.
fn format_time(us: i64) -> String {
    format!("{} ({us} µs)", http_date(us))
}

/// `3725` seconds → `1h 02m 05s`.
fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

impl Snapshot {
    fn uptime_secs(&self, now: SystemTime) -> u64 {
        (micros(now).saturating_sub(self.started_micros) / 1_000_000).max(0) as u64
    }

    /// The human report (after the `name [running:pid]` line).
    pub(crate) fn to_text(&self, now: SystemTime) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "  pid         {}", self.pid);
        let _ = writeln!(out, "  version     skitai {}", self.version);
        let _ = writeln!(
            out,
            "  uptime      {} (since {})",
            format_uptime(self.uptime_secs(now)),
            http_date(self.started_micros)
        );
        let drivers: Vec<String> =
            self.shards.iter().enumerate().map(|(i, s)| format!("#{i} {}", s.driver.name())).collect();
        let _ = writeln!(out, "  shards      {} ({})", self.shards.len(), drivers.join(", "));
        let received: Vec<String> = self.shards.iter().map(|s| s.received.to_string()).collect();
        let dropped: u64 = self.shards.iter().map(|s| s.dropped).sum();
        let _ = writeln!(
            out,
            "  bus         broadcasts received per shard [{}], messages dropped {dropped}",
            received.join(", ")
        );
        let _ = writeln!(out, "  states      {} registered of {} slots", self.states.len(), self.slots);
        let width = self.states.iter().chain(&self.cache_keys).map(|(n, _)| n.chars().count()).max().unwrap_or(0);
        for (name, value) in &self.states {
            let _ = writeln!(out, "    {name:<width$}  {value}");
        }
        let _ = writeln!(out, "  cache keys  {} registered of {} slots", self.cache_keys.len(), self.slots);
        for (name, us) in &self.cache_keys {
            let when = if *us == 0 { "never set".to_owned() } else { format_time(*us) };
            let _ = writeln!(out, "    {name:<width$}  {when}");
        }
        out
    }

    /// The report as JSON (`skitai status --json`).
    pub(crate) fn to_json(&self, running: bool, now: SystemTime) -> serde_json::Value {
        let states: serde_json::Map<String, serde_json::Value> =
            self.states.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
        let keys: serde_json::Map<String, serde_json::Value> = self
            .cache_keys
            .iter()
            .map(|(n, us)| (n.clone(), if *us == 0 { serde_json::Value::Null } else { json!(us) }))
            .collect();
        let shards: Vec<serde_json::Value> = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({"id": i, "driver": s.driver.name(), "broadcasts_received": s.received, "bus_dropped": s.dropped})
            })
            .collect();
        json!({
            "name": self.name,
            "running": running,
            "pid": self.pid,
            "version": self.version,
            "started_micros": self.started_micros,
            "uptime_secs": self.uptime_secs(now),
            "slots": self.slots,
            "shards": shards,
            "states": states,
            "cache_keys": keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_naturally() {
        assert_eq!(format_uptime(5), "5s");
        assert_eq!(format_uptime(65), "1m 05s");
        assert_eq!(format_uptime(3725), "1h 02m 05s");
        assert_eq!(format_uptime(90_061), "1d 01h 01m 01s");
    }

    #[test]
    fn report_lists_every_value() {
        let s = Snapshot {
            name: "site".into(),
            pid: 42,
            version: "0.1.0".into(),
            started_micros: 1_000_000,
            slots: 8,
            shards: vec![ShardLine { driver: Driver::Epoll, received: 3, dropped: 1 }],
            states: vec![("hits".into(), -5)],
            cache_keys: vec![("users".into(), 2_000_000), ("posts".into(), 0)],
        };
        let text = s.to_text(from_micros(62_000_000));
        assert!(text.contains("uptime      1m 01s"), "{text}");
        assert!(text.contains("#0 epoll"), "{text}");
        assert!(text.contains("hits   -5"), "{text}");
        assert!(text.contains("users  Thu, 01 Jan 1970 00:00:02 GMT (2000000 µs)"), "{text}");
        assert!(text.contains("posts  never set"), "{text}");
        assert!(text.contains("messages dropped 1"), "{text}");
        let j = s.to_json(true, from_micros(62_000_000));
        assert_eq!(j["states"]["hits"], -5);
        assert_eq!(j["cache_keys"]["posts"], serde_json::Value::Null);
        assert_eq!(j["shards"][0]["broadcasts_received"], 3);
        assert_eq!(j["shards"][0]["bus_dropped"], 1);
        assert_eq!(j["uptime_secs"], 61);
        let odd = Snapshot { started_micros: -5, cache_keys: vec![("k".into(), i64::MAX)], ..s };
        let text = odd.to_text(from_micros(0));
        assert!(text.contains("(out of range)"), "a broken clock does not crash status: {text}");
    }
}
