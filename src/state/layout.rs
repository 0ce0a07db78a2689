//! The byte layout of the shared-memory state file (version 1).
//!
//! ```text
//! 0      header (256 bytes): magic, version, sizes, pid, start time, names
//! 256    shard table: one 64-byte line per shard (driver, broadcasts received, messages dropped)
//! ...    state names: `slots` × 64 bytes (length byte + up to 63 bytes UTF-8)
//! ...    cache key names: `slots` × 64 bytes
//! ...    state values: `slots` × 64 bytes, an `AtomicI64` at the start of each
//! ...    cache key values: `slots` × 64 bytes, an `AtomicI64` (µs since the epoch)
//! ```
//!
//! Every value sits on its own 64-byte cache line, so shards hammering
//! different states never contend on the same line (false sharing). Every
//! field is naturally aligned, and the file is mapped at a page boundary, so
//! every field can be read and written as an atomic. The magic is written
//! last (release) and checked first (acquire): a reader that sees it sees a
//! complete header.

/// Marks a skitai state file; also catches a file of the other byte order.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SKITAIst");
/// Layout version; a reader refuses any other.
pub(crate) const VERSION: u32 = 1;
/// Bytes per line: names, shard entries and values are each one cache line.
pub(crate) const LINE: usize = 64;
/// Size of the header.
pub(crate) const HEADER_SIZE: usize = 256;
/// Longest state or cache-key name, bytes (one byte of the line holds the length).
pub(crate) const MAX_NAME_LEN: usize = LINE - 1;
/// Longest instance name stored in the header, bytes.
pub(crate) const MAX_INSTANCE_NAME_LEN: usize = 63;
/// Longest skitai version string stored in the header, bytes.
pub(crate) const MAX_VERSION_LEN: usize = 31;

/// Header field offsets (bytes from the start of the file).
pub(crate) mod header {
    /// `u64`: [`super::MAGIC`], written last.
    pub(crate) const MAGIC: usize = 0;
    /// `u32`: [`super::VERSION`].
    pub(crate) const VERSION: usize = 8;
    /// `u32`: number of shards in the shard table.
    pub(crate) const SHARDS: usize = 12;
    /// `u32`: capacity of each of the two arrays.
    pub(crate) const SLOTS: usize = 16;
    /// `u32`: registered states.
    pub(crate) const STATES: usize = 20;
    /// `u32`: registered cache keys.
    pub(crate) const CACHE_KEYS: usize = 24;
    /// `u32`: pid of the process that created the file.
    pub(crate) const PID: usize = 28;
    /// `i64`: start time of the instance, µs since the Unix epoch.
    pub(crate) const STARTED: usize = 32;
    /// `u64`: total file size, a check against truncation.
    pub(crate) const FILE_SIZE: usize = 40;
    /// 64 bytes: length byte + instance name.
    pub(crate) const NAME: usize = 64;
    /// 32 bytes: length byte + skitai version string.
    pub(crate) const SKITAI_VERSION: usize = 128;
}

/// Offsets within one shard-table line.
pub(crate) mod shard {
    /// `u32`: the shard's I/O driver (see [`super::Driver`]).
    pub(crate) const DRIVER: usize = 0;
    /// `u64`: broadcasts this shard has handled.
    pub(crate) const RECEIVED: usize = 8;
    /// `u64`: bus messages (broadcasts, fan-out work) dropped because this shard's queue was full.
    pub(crate) const DROPPED: usize = 16;
}

/// The I/O driver a shard reports in the shard table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Driver {
    /// The shard has not started yet.
    Starting = 0,
    /// io_uring.
    IoUring = 1,
    /// epoll.
    Epoll = 2,
    /// The shard has exited.
    Exited = 3,
}

impl Driver {
    /// Decodes the shard-table value; unknown values read as [`Driver::Starting`].
    pub(crate) fn from_code(code: u32) -> Driver {
        match code {
            1 => Driver::IoUring,
            2 => Driver::Epoll,
            3 => Driver::Exited,
            _ => Driver::Starting,
        }
    }

    /// The name used in logs and `skitai status`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Driver::Starting => "starting",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
            Driver::Exited => "exited",
        }
    }
}

/// Where each region of a file with `shards` shards and `slots` slots starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) shards: usize,
    pub(crate) slots: usize,
}

impl Layout {
    /// Offset of shard `i`'s line.
    pub(crate) fn shard_line(&self, i: usize) -> usize {
        debug_assert!(i < self.shards);
        HEADER_SIZE + i * LINE
    }

    /// Offset of the name line of state slot `i`.
    pub(crate) fn state_name(&self, i: usize) -> usize {
        debug_assert!(i < self.slots);
        HEADER_SIZE + self.shards * LINE + i * LINE
    }

    /// Offset of the name line of cache-key slot `i`.
    pub(crate) fn cache_key_name(&self, i: usize) -> usize {
        debug_assert!(i < self.slots);
        HEADER_SIZE + (self.shards + self.slots + i) * LINE
    }

    /// Offset of the value of state slot `i`.
    pub(crate) fn state_value(&self, i: usize) -> usize {
        debug_assert!(i < self.slots);
        HEADER_SIZE + (self.shards + 2 * self.slots + i) * LINE
    }

    /// Offset of the value of cache-key slot `i`.
    pub(crate) fn cache_key_value(&self, i: usize) -> usize {
        debug_assert!(i < self.slots);
        HEADER_SIZE + (self.shards + 3 * self.slots + i) * LINE
    }

    /// Total size of the file.
    pub(crate) fn file_size(&self) -> usize {
        HEADER_SIZE + (self.shards + 4 * self.slots) * LINE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_disjoint_aligned_and_in_order() {
        let l = Layout { shards: 3, slots: 5 };
        let mut lines = Vec::new();
        lines.extend((0..3).map(|i| l.shard_line(i)));
        lines.extend((0..5).map(|i| l.state_name(i)));
        lines.extend((0..5).map(|i| l.cache_key_name(i)));
        lines.extend((0..5).map(|i| l.state_value(i)));
        lines.extend((0..5).map(|i| l.cache_key_value(i)));
        assert_eq!(lines[0], HEADER_SIZE, "the shard table follows the header");
        for pair in lines.windows(2) {
            assert_eq!(pair[1], pair[0] + LINE, "one line after another, no overlap, no gap");
        }
        assert!(lines.iter().all(|o| o % LINE == 0), "every line is cache-line aligned");
        assert_eq!(l.file_size(), lines.last().unwrap() + LINE, "the file ends after the last value");
    }

    #[test]
    fn header_fields_fit_and_are_aligned() {
        for (offset, size) in [
            (header::MAGIC, 8),
            (header::VERSION, 4),
            (header::SHARDS, 4),
            (header::SLOTS, 4),
            (header::STATES, 4),
            (header::CACHE_KEYS, 4),
            (header::PID, 4),
            (header::STARTED, 8),
            (header::FILE_SIZE, 8),
        ] {
            assert_eq!(offset % size, 0, "field at {offset} is aligned for its size");
            assert!(offset + size <= header::NAME, "field at {offset} ends before the name");
        }
        const { assert!(header::NAME + 1 + MAX_INSTANCE_NAME_LEN <= header::SKITAI_VERSION) };
        const { assert!(header::SKITAI_VERSION + 1 + MAX_VERSION_LEN <= HEADER_SIZE) };
        const { assert!(shard::DROPPED + 8 <= LINE) };
    }

    #[test]
    fn default_file_is_small() {
        // 256 slots on a 64-core machine: the whole file stays well under 100 KiB.
        assert!(Layout { shards: 64, slots: 256 }.file_size() < 100 << 10);
    }

    #[test]
    fn magic_spells_the_format() {
        assert_eq!(&MAGIC.to_le_bytes(), b"SKITAIst");
        for code in 0..5 {
            let d = Driver::from_code(code);
            assert_eq!(d as u32, if code < 4 { code } else { 0 });
        }
    }
}
