//! Where logs go: the console or files (reopened on SIGUSR1, for logrotate),
//! the `tracing` writer that routes the server and app logs, and the
//! request log's writer thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

/// The `tracing` target of the app log (`cx.log`).
pub const APP_TARGET: &str = "app";
/// Batches the request log thread holds before shards drop new ones.
const QUEUED_BATCHES: usize = 256;

/// Where one log's bytes go.
enum Target {
    Stdout,
    Stderr,
    File {
        path: PathBuf,
        file: File,
    },
    /// A file and the console (the server log of a foreground server with log files).
    FileAndStderr {
        path: PathBuf,
        file: File,
    },
}

/// One log destination; writes of whole lines are atomic with respect to each other.
pub(crate) struct Output {
    target: Mutex<Target>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output")
    }
}

/// Every output that writes a file, for [`reopen_files`].
static FILES: Mutex<Vec<Weak<Output>>> = Mutex::new(Vec::new());

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Output {
    /// Standard output.
    pub(crate) fn stdout() -> Arc<Output> {
        Arc::new(Output { target: Mutex::new(Target::Stdout) })
    }

    /// Standard error.
    pub(crate) fn stderr() -> Arc<Output> {
        Arc::new(Output { target: Mutex::new(Target::Stderr) })
    }

    /// A file, appended to (created if missing); with `also_stderr`, every
    /// line goes to standard error too.
    pub(crate) fn file(path: PathBuf, also_stderr: bool) -> io::Result<Arc<Output>> {
        let file = open_append(&path)?;
        let target = if also_stderr { Target::FileAndStderr { path, file } } else { Target::File { path, file } };
        let output = Arc::new(Output { target: Mutex::new(target) });
        let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
        files.retain(|w| w.strong_count() > 0);
        files.push(Arc::downgrade(&output));
        Ok(output)
    }

    /// Writes `bytes` (whole lines); errors are dropped: a full disk must not stop the server.
    pub(crate) fn write_all(&self, bytes: &[u8]) {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        let _ = match &mut *target {
            Target::Stdout => io::stdout().lock().write_all(bytes),
            Target::Stderr => io::stderr().lock().write_all(bytes),
            Target::File { file, .. } => file.write_all(bytes),
            Target::FileAndStderr { file, .. } => {
                let _ = io::stderr().lock().write_all(bytes);
                file.write_all(bytes)
            }
        };
    }

    /// Opens the file again by its path (after logrotate renamed it).
    fn reopen(&self) -> io::Result<()> {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *target {
            Target::File { path, file } | Target::FileAndStderr { path, file } => {
                *file = open_append(path)?;
                Ok(())
            }
            Target::Stdout | Target::Stderr => Ok(()),
        }
    }
}

/// Reopens every log file by its path (SIGUSR1); returns how many were reopened.
pub(crate) fn reopen_files() -> usize {
    let outputs: Vec<Arc<Output>> =
        FILES.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
    let mut reopened = 0;
    for output in outputs {
        match output.reopen() {
            Ok(()) => reopened += 1,
            Err(e) => tracing::error!("cannot reopen a log file: {e}"),
        }
    }
    reopened
}

/// Where the server log and the app log go; set by each server start.
struct Routes {
    server: Arc<Output>,
    app: Arc<Output>,
}

static ROUTES: RwLock<Option<Routes>> = RwLock::new(None);

/// Sends the server log and the app log to these outputs from now on.
pub(crate) fn route_logs(server: Arc<Output>, app: Arc<Output>) {
    *ROUTES.write().unwrap_or_else(|e| e.into_inner()) = Some(Routes { server, app });
}

/// The `tracing` writer: events of target [`APP_TARGET`] go to the app log,
/// the rest to the server log (standard error until a server routes them).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogRouter;

/// One event, written to its output as one write when dropped.
pub(crate) struct EventWriter {
    buf: Vec<u8>,
    output: Option<Arc<Output>>,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        match &self.output {
            Some(output) => output.write_all(&self.buf),
            None => {
                let _ = io::stderr().lock().write_all(&self.buf);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogRouter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        let routes = ROUTES.read().unwrap_or_else(|e| e.into_inner());
        EventWriter { buf: Vec::with_capacity(256), output: routes.as_ref().map(|r| r.server.clone()) }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> EventWriter {
        let routes = ROUTES.read().unwrap_or_else(|e| e.into_inner());
        let output =
            routes.as_ref().map(|r| if meta.target() == APP_TARGET { r.app.clone() } else { r.server.clone() });
        EventWriter { buf: Vec::with_capacity(256), output }
    }
}

/// The request log's sink, shared by the shards: batches go to a writer
/// thread, and come back empty to be filled again.
#[derive(Debug)]
pub(crate) struct RequestSink {
    batches: Sender<Vec<u8>>,
    empties: Receiver<Vec<u8>>,
    /// Lines dropped because the writer fell behind.
    dropped: AtomicU64,
    /// Set by [`RequestSink::close`]: the next empty batch ends the writer.
    closed: Arc<AtomicBool>,
}

impl RequestSink {
    /// Starts the writer thread for `output`; it ends (after writing
    /// everything queued before) at [`RequestSink::close`], or once every
    /// clone of the sink is dropped.
    pub(crate) fn start(output: Arc<Output>) -> io::Result<(Arc<RequestSink>, JoinHandle<()>)> {
        let (batches, queued) = bounded::<Vec<u8>>(QUEUED_BATCHES);
        let (give_back, empties) = bounded::<Vec<u8>>(QUEUED_BATCHES);
        let closed = Arc::new(AtomicBool::new(false));
        let closing = closed.clone();
        let thread = std::thread::Builder::new().name("skitai-log".into()).spawn(move || {
            for mut batch in queued {
                if batch.is_empty() {
                    if closing.load(Ordering::Acquire) {
                        break;
                    }
                    continue;
                }
                output.write_all(&batch);
                batch.clear();
                let _ = give_back.try_send(batch);
            }
        })?;
        Ok((Arc::new(RequestSink { batches, empties, dropped: AtomicU64::new(0), closed }), thread))
    }

    /// Ends the writer thread once it has written every batch sent before
    /// (called when the shards are gone; tasks a runtime leaves behind may
    /// still hold the sink, so its drop cannot be the signal).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.batches.send(Vec::new());
    }

    /// Hands a batch of lines to the writer; if it is too far behind, the
    /// batch is dropped and counted (a shard never waits for the disk).
    /// Returns an empty buffer to fill next.
    pub(crate) fn send(&self, batch: Vec<u8>) -> Vec<u8> {
        match self.batches.try_send(batch) {
            Ok(()) => self.empties.try_recv().unwrap_or_default(),
            Err(TrySendError::Full(mut batch) | TrySendError::Disconnected(mut batch)) => {
                let lines = memchr::memchr_iter(b'\n', &batch).count() as u64;
                self.dropped.fetch_add(lines, Ordering::Relaxed);
                batch.clear();
                batch
            }
        }
    }

    /// Lines dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
