//! The worker critical point (Skitai's `set_worker_critical_point`): the
//! master samples the CPU time of each of a worker's shard threads from
//! `/proc` and says when the busiest shard stayed over the threshold for
//! the configured number of checks in a row.
//!
//! The busiest shard, not the whole process: a handler stuck in a loop
//! pins one shard's core, which a worker-wide average over many shards
//! would hide.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::CriticalPoint;

/// The thread-name prefix of shard threads (`skitai-shard-<id>`).
const SHARD_THREAD_PREFIX: &str = "skitai-shard-";

/// Watches one worker process against a critical point.
#[derive(Debug)]
pub(crate) struct CpuWatch {
    point: CriticalPoint,
    interval: Duration,
    next: Instant,
    /// The previous sample: when, and CPU ticks per shard thread id.
    last: Option<(Instant, HashMap<u32, u64>)>,
    /// Checks in a row over the threshold so far.
    over: u32,
}

impl CpuWatch {
    /// A watch starting now, or `None` when the point is off (interval 0).
    pub(crate) fn new(point: CriticalPoint, now: Instant) -> Option<CpuWatch> {
        let interval = Duration::from_secs(point.interval);
        (!interval.is_zero()).then_some(CpuWatch { point, interval, next: now, last: None, over: 0 })
    }

    /// Samples worker `pid` when a check is due; returns the busiest
    /// shard's CPU percent when it has now been over the threshold for
    /// `continuous` checks in a row (the worker should be replaced).
    pub(crate) fn check(&mut self, pid: u32, now: Instant) -> Option<f64> {
        if now < self.next {
            return None;
        }
        self.next = now + self.interval;
        let ticks = shard_ticks(pid);
        let previous = self.last.replace((now, ticks));
        let (then, before) = previous?;
        let (_, after) = self.last.as_ref()?;
        let percent = busiest_percent(&before, after, now.duration_since(then), clock_ticks_per_second());
        self.judge(percent).then_some(percent)
    }

    /// Counts one check at `percent`; true once `continuous` checks in a
    /// row were over the threshold (the count starts again after).
    fn judge(&mut self, percent: f64) -> bool {
        if percent > self.point.cpu_percent {
            self.over += 1;
        } else {
            self.over = 0;
        }
        if self.over >= self.point.continuous {
            self.over = 0;
            return true;
        }
        false
    }
}

/// The highest CPU use, percent of one core, of any thread present in both
/// samples taken `elapsed` apart.
fn busiest_percent(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>, elapsed: Duration, hz: u64) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 || hz == 0 {
        return 0.0;
    }
    after
        .iter()
        .filter_map(|(tid, now)| before.get(tid).map(|then| now.saturating_sub(*then)))
        .map(|ticks| ticks as f64 / hz as f64 / seconds * 100.0)
        .fold(0.0, f64::max)
}

/// User plus system CPU ticks of each shard thread of process `pid`.
fn shard_ticks(pid: u32) -> HashMap<u32, u64> {
    let mut ticks = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return ticks };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        if let Some((name, cpu)) = parse_stat(&stat) {
            if name.starts_with(SHARD_THREAD_PREFIX) {
                ticks.insert(tid, cpu);
            }
        }
    }
    ticks
}

/// The thread name and user + system ticks from a `/proc/.../stat` line.
/// The name is in parentheses and may itself hold spaces and parentheses,
/// so the fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<(&str, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?;
    // Fields after the name start at field 3 (state); utime is field 14, stime 15.
    let mut rest = line.get(close + 1..)?.split_ascii_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime + stime))
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(cpu_percent: f64, continuous: u32) -> CriticalPoint {
        CriticalPoint { cpu_percent, continuous, interval: 1 }
    }

    #[test]
    fn parses_a_stat_line_with_an_awkward_name() {
        let line = "4242 (skitai-shard-3) R 1 4242 4242 0 -1 4194560 120 0 0 0 700 55 0 0 20 0 3 0 12345 1000 200 18446744073709551615";
        assert_eq!(parse_stat(line), Some(("skitai-shard-3", 755)));
        let odd = "7 (a) b (c)) S 1 7 7 0 -1 0 0 0 0 0 9 1 0 0 20 0 1 0 1 1 1 1";
        assert_eq!(parse_stat(odd), Some(("a) b (c)", 10)));
        assert_eq!(parse_stat("7 (short) S 1 2"), None);
    }

    #[test]
    fn reads_this_process_shard_threads() {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel::<u32>();
        let thread = std::thread::Builder::new()
            .name(format!("{SHARD_THREAD_PREFIX}77"))
            .spawn(move || {
                // SAFETY: gettid has no arguments.
                tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
                let _ = done_rx.recv();
            })
            .unwrap();
        let tid = tid_rx.recv().unwrap();
        let ticks = shard_ticks(std::process::id());
        done_tx.send(()).unwrap();
        thread.join().unwrap();
        assert!(ticks.contains_key(&tid), "the shard-named thread {tid} is missing: {ticks:?}");
        // SAFETY: gettid has no arguments.
        let me = unsafe { libc::gettid() } as u32;
        assert!(!ticks.contains_key(&me), "a thread not named like a shard was counted");
    }

    #[test]
    fn busiest_thread_counts_and_new_threads_do_not() {
        let before = HashMap::from([(1, 100), (2, 100)]);
        let after = HashMap::from([(1, 150), (2, 190), (3, 10_000)]);
        let percent = busiest_percent(&before, &after, Duration::from_secs(1), 100);
        assert!((percent - 90.0).abs() < 1e-9, "{percent}");
        assert_eq!(busiest_percent(&before, &after, Duration::ZERO, 100), 0.0);
    }

    #[test]
    fn trips_after_continuous_checks_in_a_row_only() {
        let mut watch = CpuWatch::new(point(80.0, 3), Instant::now()).unwrap();
        assert!(!watch.judge(95.0));
        assert!(!watch.judge(95.0));
        assert!(!watch.judge(50.0), "a cool check starts the count again");
        assert!(!watch.judge(95.0));
        assert!(!watch.judge(81.0));
        assert!(watch.judge(99.0));
        assert!(!watch.judge(99.0), "the count starts again after tripping");
        assert!(!watch.judge(80.0) && watch.over == 0, "at the threshold is not over it");
    }

    #[test]
    fn interval_zero_is_off() {
        assert!(CpuWatch::new(CriticalPoint { interval: 0, ..CriticalPoint::default() }, Instant::now()).is_none());
    }

    #[test]
    fn first_check_only_samples() {
        let now = Instant::now();
        let mut watch = CpuWatch::new(point(0.0001, 1), now).unwrap();
        assert_eq!(watch.check(std::process::id(), now), None, "nothing to compare with yet");
        assert!(watch.last.is_some());
        assert_eq!(watch.check(std::process::id(), now), None, "not due again before the interval");
    }
}
