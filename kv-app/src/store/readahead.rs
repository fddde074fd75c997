//! A read-ahead window for scanning the log at open: one device read of up to
//! [`CHUNK_BYTES`](super::CHUNK_BYTES) serves the headers and payloads of many small records, so
//! rebuilding the index costs about one request per 64 KiB of log instead of one or more per
//! record (each request costs milliseconds on a nested Xen). The window is a fixed size.

use alloc::vec::Vec;

use xen_blkfront::BlockDevice;

/// Up to `cap` blocks read from the device, starting at block `base`.
#[derive(Debug)]
pub(super) struct ReadAhead {
    buf: Vec<u8>,
    block_size: usize,
    cap: u64,
    base: u64,
    valid: u64,
}

impl ReadAhead {
    /// An empty window of `cap` (at least one) blocks of `block_size` bytes.
    pub(super) fn new(block_size: usize, cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            block_size,
            cap: cap.max(1) as u64,
            base: 0,
            valid: 0,
        }
    }

    /// Blocks the window holds at most.
    pub(super) fn cap(&self) -> u64 {
        self.cap
    }

    /// Blocks `lba .. lba + n` (`n` at most [`cap`](Self::cap) and `lba + n <= end`), reading
    /// a new window from `lba` up to `end` (never past it) if they are not all held.
    pub(super) fn blocks<D: BlockDevice>(
        &mut self,
        dev: &mut D,
        lba: u64,
        n: u64,
        end: u64,
    ) -> Result<&[u8], D::Error> {
        let n = n.min(self.cap);
        let held = lba >= self.base && lba + n <= self.base + self.valid;
        if !held {
            let count = self.cap.min(end.saturating_sub(lba)).max(n);
            let bytes = count as usize * self.block_size;
            self.buf.resize(bytes, 0);
            // Until the read succeeds the window holds nothing.
            self.valid = 0;
            dev.read_blocks(lba, &mut self.buf[..bytes])?;
            self.base = lba;
            self.valid = count;
        }
        let from = (lba - self.base) as usize * self.block_size;
        Ok(&self.buf[from..from + n as usize * self.block_size])
    }
}
