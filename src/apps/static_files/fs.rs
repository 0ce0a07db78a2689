//! Opening files below a root without ever leaving it.
//!
//! `openat2(2)` with `RESOLVE_BENEATH` makes the kernel refuse any path (or
//! symlink) that resolves outside the root directory, atomically. Where the
//! kernel lacks `openat2` (before 5.6) the path is opened normally and its
//! canonical form checked against the root. A mount with `follow_symlinks`
//! opens normally: symlinks may point anywhere, while `..` is still refused
//! earlier by [`super::resolve`].
//!
//! Everything here blocks; callers run it on the blocking pool.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// Set once `openat2` answered ENOSYS: use the canonicalize check from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// A mounted directory, held open.
#[derive(Debug)]
pub(crate) struct Root {
    dir: OwnedFd,
    canonical: PathBuf,
    follow_symlinks: bool,
}

/// What `fstat` says about an opened path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) is_dir: bool,
    pub(crate) is_file: bool,
    pub(crate) len: u64,
    pub(crate) ino: u64,
    pub(crate) modified: SystemTime,
}

impl Meta {
    fn of(file: &File) -> io::Result<Meta> {
        let m = file.metadata()?;
        Ok(Meta {
            is_dir: m.is_dir(),
            is_file: m.is_file(),
            len: m.len(),
            ino: m.ino(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }
}

impl Root {
    /// Opens `path` as a root; it must be a directory.
    pub(crate) fn open(path: &Path, follow_symlinks: bool) -> io::Result<Root> {
        let canonical = path.canonicalize()?;
        if !canonical.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        let dir = File::open(&canonical)?;
        Ok(Root { dir: dir.into(), canonical, follow_symlinks })
    }

    /// The root's canonical path.
    pub(crate) fn path(&self) -> &Path {
        &self.canonical
    }

    /// True when symlinks may lead outside the root.
    pub(crate) fn follows_symlinks(&self) -> bool {
        self.follow_symlinks
    }

    /// Opens `rel` (a checked relative path, empty for the root) read-only
    /// and stats it. `Ok(None)` when it does not exist or may not be served.
    pub(crate) fn open_rel(&self, rel: &str) -> io::Result<Option<(File, Meta)>> {
        let rel = if rel.is_empty() { "." } else { rel };
        let file =
            if self.follow_symlinks { open_nonblocking(&self.canonical.join(rel)) } else { self.open_beneath(rel) };
        let file = match file {
            Ok(f) => f,
            Err(e) if refused(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = Meta::of(&file)?;
        if !meta.is_dir && !meta.is_file {
            // Devices, FIFOs and sockets are never served.
            return Ok(None);
        }
        Ok(Some((file, meta)))
    }

    fn open_beneath(&self, rel: &str) -> io::Result<File> {
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match openat2_beneath(&self.dir, rel) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                // EXDEV: the path left the root, or went through an absolute
                // symlink (refused by RESOLVE_BENEATH even when it points
                // back inside); EPERM: a seccomp profile that predates
                // openat2. The check below decides.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM)) => {}
                other => return other,
            }
        }
        // Old kernel, seccomp, or absolute symlink: make sure the real path is
        // below the root, then check again what was actually opened (the
        // path may have been swapped for a symlink in between).
        let real = self.canonical.join(rel).canonicalize()?;
        if !real.starts_with(&self.canonical) {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let file = open_nonblocking(&real)?;
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        if !opened.starts_with(&self.canonical) {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        Ok(file)
    }
}

/// Opens read-only without ever blocking in `open` itself: a FIFO would
/// otherwise wait for a writer (and hold a blocking-pool thread forever).
/// `O_NONBLOCK` changes nothing for reading regular files.
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)
}

/// Errors that mean "not servable" rather than "something broke".
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::ENOTDIR
                | libc::EXDEV
                | libc::ELOOP
                | libc::EACCES
                | libc::EPERM
                | libc::ENAMETOOLONG
                | libc::ENXIO
        )
    )
}

fn openat2_beneath(dir: &OwnedFd, rel: &str) -> io::Result<File> {
    let path = CString::new(Path::new(rel).as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: open_how is a plain C struct; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // O_NONBLOCK: opening a FIFO must not wait for a writer (see `open_nonblocking`).
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `path` (NUL-terminated, alive for the call) and
    // `how` (size passed exactly); it returns a new fd or -1 with errno.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_unless_allowed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink(root.path().join("a.txt"), root.path().join("in")).unwrap();
        std::os::unix::fs::symlink("../", root.path().join("up")).unwrap();
        let fifo = CString::new(root.path().join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path that lives through the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

        let strict = Root::open(root.path(), false).unwrap();
        let (_, meta) = strict.open_rel("a.txt").unwrap().unwrap();
        assert_eq!(meta.len, 5);
        assert!(meta.is_file);
        assert!(strict.open_rel("in").unwrap().is_some());
        assert!(strict.open_rel("out").unwrap().is_none());
        assert!(strict.open_rel("up/secret").unwrap().is_none());
        assert!(strict.open_rel("missing").unwrap().is_none());
        assert!(strict.open_rel("").unwrap().unwrap().1.is_dir);
        // A FIFO is neither waited on (no writer comes) nor served.
        assert!(strict.open_rel("fifo").unwrap().is_none());

        let loose = Root::open(root.path(), true).unwrap();
        assert!(loose.open_rel("out").unwrap().is_some());
        assert!(loose.open_rel("fifo").unwrap().is_none());
    }

    #[test]
    fn a_root_must_be_a_directory() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(Root::open(f.path(), false).is_err());
        assert!(Root::open(Path::new("/nonexistent/skitai"), false).is_err());
    }
}
