//! A response body that is (parts of) an open file, sent without copying
//! through user space where the connection allows it (`sendfile(2)`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};

/// Largest piece read into memory at a time when a file body is read as chunks.
const READ_CHUNK: u64 = 64 * 1024;

/// One piece of a file body.
#[derive(Debug, Clone)]
pub(crate) enum FilePart {
    /// Bytes held in memory (multipart boundaries and part headers).
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    Range { offset: u64, len: u64 },
}

/// An open file and the pieces of it (and of memory) that make up a body.
#[derive(Debug, Clone)]
pub struct FileBody {
    pub(crate) file: Arc<File>,
    pub(crate) parts: Vec<FilePart>,
}

impl FileBody {
    /// `len` bytes of `file` starting at `offset`.
    pub fn range(file: Arc<File>, offset: u64, len: u64) -> FileBody {
        FileBody { file, parts: vec![FilePart::Range { offset, len }] }
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                FilePart::Bytes(b) => b.len() as u64,
                FilePart::Range { len, .. } => *len,
            })
            .sum()
    }

    /// True when the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next chunk, read on the blocking pool (for transports that cannot
    /// send a file directly); `None` at the end.
    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        let first = self.parts.first()?.clone();
        match first {
            FilePart::Bytes(b) => {
                self.parts.remove(0);
                Some(Ok(b))
            }
            FilePart::Range { offset, len } => {
                let take = len.min(READ_CHUNK);
                let file = self.file.clone();
                let read = monoio::spawn_blocking(move || read_exact_at(&file, offset, take)).await;
                let chunk = match read {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(e)) => return Some(Err(e)),
                    Err(_) => return Some(Err(Error::new(ErrorKind::Internal, "file read task failed"))),
                };
                if take == len {
                    self.parts.remove(0);
                } else {
                    self.parts[0] = FilePart::Range { offset: offset + take, len: len - take };
                }
                Some(Ok(chunk))
            }
        }
    }
}

/// Reads exactly `len` bytes at `offset`; a file that shrank is an error.
pub(crate) fn read_exact_at(file: &File, offset: u64, len: u64) -> Result<Bytes> {
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| Error::new(ErrorKind::Internal, "file read failed").with_source(e))?;
    Ok(Bytes::from(buf))
}
