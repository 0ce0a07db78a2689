//! Metrics across worker processes. With more than one worker, every shard
//! publishes its snapshot each second to a small file beside the state file
//! (`skitai-<name>.metrics.<shard>`, shards numbered across workers), and
//! whichever worker answers a metrics request adds the other workers'
//! latest snapshots to its own live ones: a scrape sees the whole instance,
//! whichever worker's admin listener took it.

use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::metrics::ShardSnapshot;
use crate::config::Config;
use crate::state::state_file_path;

/// How often a shard publishes its snapshot.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// A published snapshot older than this is a worker that is gone (or
/// draining, which stops publishing) and is left out.
const STALE_AFTER: Duration = Duration::from_secs(5);

/// The other workers' published metrics, seen from one worker.
#[derive(Debug)]
pub(crate) struct Peers {
    /// The state file's path: the snapshots live beside it.
    state_file: PathBuf,
    /// Shards of the whole instance.
    total: usize,
    /// This worker's shards, numbered across workers.
    mine: Range<usize>,
}

impl Peers {
    /// For worker `worker` of `shards` shards; `None` with a single worker
    /// (nothing to publish, nothing to read).
    pub(crate) fn new(config: &Config, worker: usize, shards: usize) -> Option<Peers> {
        let workers = config.server.workers;
        (workers > 1).then(|| Peers {
            state_file: state_file_path(config),
            total: workers * shards,
            mine: worker * shards..(worker + 1) * shards,
        })
    }

    fn path(state_file: &std::path::Path, shard: usize) -> PathBuf {
        state_file.with_extension(format!("metrics.{shard}"))
    }

    /// Writes `snapshot` (whose `shard` is numbered across workers) for the
    /// other workers: a new file renamed into place, so a reader never sees
    /// half of one.
    pub(crate) fn publish(&self, snapshot: &ShardSnapshot) -> std::io::Result<()> {
        let path = Peers::path(&self.state_file, snapshot.shard);
        let fresh = PathBuf::from(format!("{}.new{}", path.display(), std::process::id()));
        let mut file = std::fs::File::create(&fresh)?;
        file.write_all(&serde_json::to_vec(snapshot).map_err(std::io::Error::other)?)?;
        std::fs::rename(&fresh, &path)
    }

    /// The other workers' shards' latest snapshots (fresh ones only).
    pub(crate) fn others(&self) -> Vec<ShardSnapshot> {
        let now = SystemTime::now();
        (0..self.total)
            .filter(|shard| !self.mine.contains(shard))
            .filter_map(|shard| {
                let path = Peers::path(&self.state_file, shard);
                let age = now.duration_since(std::fs::metadata(&path).ok()?.modified().ok()?).unwrap_or_default();
                if age > STALE_AFTER {
                    return None;
                }
                serde_json::from_slice::<ShardSnapshot>(&std::fs::read(&path).ok()?).ok()
            })
            .collect()
    }

    /// Removes every published snapshot of `config`'s instance of `total`
    /// shards (the master, when the instance stops).
    pub(crate) fn remove_all(config: &Config, total: usize) {
        let state_file = state_file_path(config);
        for shard in 0..total {
            let _ = std::fs::remove_file(Peers::path(&state_file, shard));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::ShardMetrics;

    #[test]
    fn a_published_snapshot_is_read_by_the_other_worker_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { name: "peers".into(), ..Config::default() };
        config.state.dir = Some(dir.path().to_owned());
        config.server.workers = 2;
        let first = Peers::new(&config, 0, 2).unwrap();
        let second = Peers::new(&config, 1, 2).unwrap();

        let metrics = ShardMetrics::new(["/api"].into_iter());
        metrics.record(http::Version::HTTP_11, 200, 0, Duration::from_millis(7), 3, 11);
        let mut snapshot = metrics.snapshot();
        snapshot.shard = 3; // worker 1's shard 1
        second.publish(&snapshot).unwrap();

        assert!(second.others().is_empty(), "a worker does not read its own shards back");
        let seen = first.others();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].shard, 3);
        assert_eq!(seen[0].requests[0][1], 1);
        assert_eq!((seen[0].request_bytes, seen[0].response_bytes), (3, 11));
        assert_eq!(&*seen[0].histograms[0].0, "/api");
        assert_eq!(seen[0].histograms[0].1.len(), 1);
        let p50 = seen[0].histograms[0].1.value_at_quantile(0.5);
        assert!((6900..=7100).contains(&p50), "{p50}");

        Peers::remove_all(&config, 4);
        assert!(first.others().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
    }

    #[test]
    fn one_worker_publishes_nothing() {
        assert!(Peers::new(&Config::default(), 0, 4).is_none());
    }
}
