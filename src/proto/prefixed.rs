//! A stream that first yields bytes already read from it: the connection
//! sniffer reads the start of a plain connection to tell HTTP/1.1 from an
//! HTTP/2 preface, and the chosen protocol must still see those bytes.

use bytes::{Buf, Bytes};
use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

/// `io`, with `prefix` read before anything from `io` itself.
pub(crate) struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Prefixed<IO> {
    pub(crate) fn new(prefix: Bytes, io: IO) -> Prefixed<IO> {
        Prefixed { prefix, io }
    }

    /// Copies as much of the prefix as fits into `dst` (of `room` bytes at `ptr`).
    fn take_prefix(&mut self, ptr: *mut u8, room: usize) -> usize {
        let amt = room.min(self.prefix.len());
        // SAFETY: the caller passes a buffer's write pointer and its total
        // capacity, so `amt` bytes fit; the prefix is a separate allocation.
        unsafe { ptr.copy_from_nonoverlapping(self.prefix.as_ptr(), amt) };
        self.prefix.advance(amt);
        amt
    }
}

impl<IO: AsyncReadRent> AsyncReadRent for Prefixed<IO> {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if self.prefix.is_empty() {
            return self.io.read(buf).await;
        }
        let amt = self.take_prefix(buf.write_ptr(), buf.bytes_total());
        // SAFETY: `take_prefix` initialised the first `amt` bytes.
        unsafe { buf.set_init(amt) };
        (Ok(amt), buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if self.prefix.is_empty() {
            return self.io.readv(buf).await;
        }
        // SAFETY: the raw view lives only within this call, while `buf` is held.
        let amt = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
            Some(mut raw) => {
                let amt = self.take_prefix(raw.write_ptr(), raw.bytes_total());
                // SAFETY: `take_prefix` initialised the first `amt` bytes.
                unsafe { raw.set_init(amt) };
                amt
            }
            None => 0,
        };
        // SAFETY: as above; the iovec's first `amt` bytes were written.
        unsafe { buf.set_init(amt) };
        (Ok(amt), buf)
    }
}

impl<IO: AsyncWriteRent> AsyncWriteRent for Prefixed<IO> {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl std::future::Future<Output = BufResult<usize, T>> {
        self.io.write(buf)
    }

    fn writev<T: IoVecBuf>(&mut self, buf: T) -> impl std::future::Future<Output = BufResult<usize, T>> {
        self.io.writev(buf)
    }

    fn flush(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> {
        self.io.flush()
    }

    fn shutdown(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> {
        self.io.shutdown()
    }
}
