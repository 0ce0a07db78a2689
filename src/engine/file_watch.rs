//! Devel mode's file watch: the master starts new workers when the
//! program's binary or its configuration file changes.
//!
//! A change counts once the file stayed the same for one more check, so a
//! build or an editor that is still writing it is not caught half-way.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How often the files are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What identifies one version of a file: modification time, size, inode
/// (a build that renames a new file into place changes the inode).
type Stamp = (SystemTime, u64, u64);

/// One watched path.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    /// The version the running workers were started from.
    seen: Option<Stamp>,
    /// A different version seen at the previous check, waiting to settle.
    settling: Option<Stamp>,
}

/// Watches files for changes.
#[derive(Debug)]
pub(crate) struct FileWatch {
    files: Vec<Watched>,
    next: Instant,
}

impl FileWatch {
    /// Watches `paths` from their current versions.
    pub(crate) fn new(paths: impl IntoIterator<Item = PathBuf>) -> FileWatch {
        let files = paths.into_iter().map(|path| Watched { seen: stamp(&path), settling: None, path }).collect();
        FileWatch { files, next: Instant::now() + CHECK_EVERY }
    }

    /// When a check is due, the first file that changed and has settled;
    /// from then on its new version is the one seen.
    pub(crate) fn changed(&mut self, now: Instant) -> Option<&Path> {
        if now < self.next {
            return None;
        }
        self.next = now + CHECK_EVERY;
        let mut found = None;
        for (i, file) in self.files.iter_mut().enumerate() {
            let current = stamp(&file.path);
            if current == file.seen {
                file.settling = None;
            } else if current.is_some() && current == file.settling {
                file.seen = current;
                file.settling = None;
                found.get_or_insert(i);
            } else {
                file.settling = current;
            }
        }
        found.map(|i| self.files[i].path.as_path())
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check as if the interval had passed.
    fn check(watch: &mut FileWatch) -> Option<PathBuf> {
        watch.next = Instant::now();
        watch.changed(Instant::now()).map(Path::to_path_buf)
    }

    #[test]
    fn reports_a_change_once_it_settles_and_only_once() {
        let dir = std::env::temp_dir().join(format!("skitai-file-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("skitai.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let mut watch = FileWatch::new([file.clone(), dir.join("absent")]);
        assert_eq!(check(&mut watch), None, "nothing changed");

        // Replaced by rename, as a build does: a new inode.
        let fresh = dir.join("fresh");
        std::fs::write(&fresh, "a = 22\n").unwrap();
        std::fs::rename(&fresh, &file).unwrap();
        assert_eq!(check(&mut watch), None, "a change waits one check to settle");
        assert_eq!(check(&mut watch), Some(file.clone()));
        assert_eq!(check(&mut watch), None, "reported once");

        std::fs::remove_file(&file).unwrap();
        assert_eq!(check(&mut watch), None);
        assert_eq!(check(&mut watch), None, "a missing file is not a version to start from");
        std::fs::write(&file, "a = 333\n").unwrap();
        assert_eq!(check(&mut watch), None);
        assert_eq!(check(&mut watch), Some(file.clone()), "back with new content");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn not_due_before_the_interval() {
        let mut watch = FileWatch::new([PathBuf::from("/nonexistent/skitai")]);
        assert_eq!(watch.changed(Instant::now()), None);
        assert!(watch.next > Instant::now());
    }
}
