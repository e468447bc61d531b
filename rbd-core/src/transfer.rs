//! Image-to-image diff transfer, in process: what `rbd export-diff ... - | rbd import-diff - ...`
//! does, without a stream, without subprocesses, between two pools of one cluster or two
//! clusters (say `volumes` on the primary to `backups` on the backup cluster).
//!
//! ```no_run
//! use rbd_core::transfer::Transfer;
//! use rbd_core::{Cluster, Image, Pool, Progress};
//! let primary = Cluster::shared(None, "cinder")?;
//! let backup = Cluster::shared(Some("/etc/ceph/backup.conf".as_ref()), "cinder-backup")?;
//! let src = Image::open_at_snap(&Pool::open(&primary, "volumes")?, "volume-1", "s2")?;
//! let dst = Image::open(&Pool::open(&backup, "backups")?, "volume-1")?; // holds s1 already
//! let stats = Transfer::new(&src, &dst)
//!     .from_snap(Some("s1"))
//!     .to_snap(Some("s2"))
//!     .in_flight(16)
//!     .granularity(4096)
//!     .run(&mut Progress::none())?;
//! println!("{} bytes written, {} zeroed in {:?}", stats.bytes_written, stats.bytes_zeroed, stats.elapsed);
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! # What happens
//!
//! 1. Checks: the from-snapshot exists on both images ([`ErrorKind::NotFound`] naming the side),
//!    the to-snapshot does not exist on the destination ([`ErrorKind::Exists`]), the destination
//!    is open read-write at its head. Nothing is changed before these pass.
//! 2. The destination is resized to the source size at the end point (grow or shrink, as
//!    `rbd import-diff` does with the `'s'` record).
//! 3. The changed extents (`rbd_diff_iterate2`, parent included, merged) are read from the source
//!    with up to `in_flight` `rbd_aio_read2` of at most 4 MiB and written to the destination with
//!    up to `in_flight` asynchronous writes ([`AioReader`] and [`AioWriter`]), each side holding
//!    at most `window_bytes` of buffers: memory stays about `2 × window_bytes` (32 MiB).
//!    Inside each read, runs of all-zero `granularity` blocks become
//!    `rbd_aio_write_zeroes` instead of data, and extents that do not exist become zero writes,
//!    except where the destination is **known to read zeros** already, where they are skipped
//!    (counted in [`TransferStats::bytes_skipped`]). The destination is asked which ranges it has
//!    allocated (`rbd_diff_iterate2` from the beginning of time on its head, parent included,
//!    within the span of the diff); everything else reads as zeros. This matters because Pacific
//!    reports a write into an object that did not exist at the from-snapshot as an extent
//!    covering the object from its start, and a write past an object's end as an extent from the
//!    old end: without the check, those zero prefixes would be zeroed on the destination again.
//!    [`dst_is_zero(true)`](Transfer::dst_is_zero) promises a zero destination (a freshly created
//!    image and no from-snapshot) and skips the query; [`skip_known_zeros(false)`](Transfer::skip_known_zeros)
//!    turns the check off (every zero range is written, as `rbd import-diff` does).
//! 4. All writes are drained and flushed (`rbd_aio_flush`); only then is the to-snapshot created
//!    on the destination.
//!
//! Progress reports `(bytes of changed extents processed, bytes of all changed extents)`;
//! cancelling stops the transfer with [`ErrorKind::Cancelled`].
//!
//! Like `rbd import-diff`, a transfer is **not atomic**: after a failure or cancellation the
//! writes already applied stay on the destination head and no to-snapshot exists. Roll the
//! destination back with [`crate::import::rollback_to_from_snap`], or simply run the same
//! transfer again (it rewrites the same ranges).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::aio::{zero_runs, AioReader, AioWriter};
use crate::diff::{DiffExtent, DiffOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::export::{next_read, Op, Planner, Tracker, DEFAULT_GRANULARITY, DEFAULT_IN_FLIGHT, DEFAULT_MAX_IO};
use crate::image::{fadvise, Image};
use crate::progress::Progress;

/// Default buffer bytes in flight on each side of a [`Transfer`] (16 MiB): 16 small extents still
/// fit, but only 4 reads of 4 MiB. That was as fast locally as an unbounded window and cut a
/// 4 GiB backup's peak RSS from 301 MiB to 152 MiB; 8 MiB gave 124 MiB but an incremental backup
/// about 15 % slower.
pub const DEFAULT_WINDOW_BYTES: u64 = 16 << 20;

/// What a transfer moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written to the destination as data (`rbd_aio_write2`).
    pub bytes_written: u64,
    /// Bytes zeroed on the destination (`rbd_aio_write_zeroes`).
    pub bytes_zeroed: u64,
    /// Zero bytes not written at all because the destination was known to be zero there.
    pub bytes_skipped: u64,
    /// Changed extents (after merging touching extents).
    pub extents: u64,
    /// Wall time, checks and snapshot creation included.
    pub elapsed: Duration,
}

/// A diff transfer from `src` (opened at the end point: a snapshot or the head) to `dst` (opened
/// read-write at its head). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Transfer<'a> {
    src: &'a Image,
    dst: &'a Image,
    from_snap: Option<String>,
    to_snap: Option<Option<String>>,
    in_flight: usize,
    window_bytes: u64,
    granularity: usize,
    dst_is_zero: bool,
    skip_known_zeros: bool,
    whole_object: bool,
    max_io: usize,
}

impl<'a> Transfer<'a> {
    /// A full transfer (no from-snapshot) of `src` into `dst`, 16 operations in flight on each
    /// side, 4 KiB zero detection; the to-snapshot defaults to the snapshot `src` is opened at.
    pub fn new(src: &'a Image, dst: &'a Image) -> Transfer<'a> {
        Transfer {
            src,
            dst,
            from_snap: None,
            to_snap: None,
            in_flight: DEFAULT_IN_FLIGHT,
            window_bytes: DEFAULT_WINDOW_BYTES,
            granularity: DEFAULT_GRANULARITY,
            dst_is_zero: false,
            skip_known_zeros: true,
            whole_object: false,
            max_io: DEFAULT_MAX_IO,
        }
    }

    /// Transfers only what changed since user snapshot `snap`, which must exist on both images
    /// (with the same content, which is the caller's promise: typically the destination's copy
    /// was made by an earlier transfer). `None`: everything.
    pub fn from_snap(&mut self, snap: Option<&str>) -> &mut Self {
        self.from_snap = snap.map(str::to_string);
        self
    }

    /// The snapshot to create on the destination after the data (`None`: create none). Defaults
    /// to the name of the snapshot `src` is opened at, as the `'t'` record of `rbd export-diff`.
    pub fn to_snap(&mut self, snap: Option<&str>) -> &mut Self {
        self.to_snap = Some(snap.map(str::to_string));
        self
    }

    /// Operations in flight on each side (at least 1; default 16).
    pub fn in_flight(&mut self, n: usize) -> &mut Self {
        self.in_flight = n.max(1);
        self
    }

    /// Buffer bytes each side may hold in flight (default [`DEFAULT_WINDOW_BYTES`], 16 MiB):
    /// many small extents stay in flight to hide latency, but few large reads, which bounds
    /// memory to about 2 × this.
    pub fn window_bytes(&mut self, bytes: u64) -> &mut Self {
        self.window_bytes = bytes.max(1);
        self
    }

    /// Zero-detection block size (default 4096); 0 only detects reads that are entirely zero.
    pub fn granularity(&mut self, bytes: usize) -> &mut Self {
        self.granularity = bytes;
        self
    }

    /// Declares that the destination reads as zeros wherever this diff touches it (a freshly
    /// created image and no from-snapshot): zero ranges are then skipped instead of written.
    /// Default false. Wrong data results if the promise is false.
    pub fn dst_is_zero(&mut self, yes: bool) -> &mut Self {
        self.dst_is_zero = yes;
        self
    }

    /// Skips zero ranges where the destination's head has nothing allocated (so it reads zeros
    /// already), found by asking the destination (see the [module docs](self)). Default true;
    /// false writes every zero range, as `rbd import-diff` does.
    pub fn skip_known_zeros(&mut self, yes: bool) -> &mut Self {
        self.skip_known_zeros = yes;
        self
    }

    /// Compares whole objects (`rbd_diff_iterate2` `whole_object`). Default false.
    pub fn whole_object(&mut self, yes: bool) -> &mut Self {
        self.whole_object = yes;
        self
    }

    /// Largest single read/write (at least 4 KiB; default 4 MiB).
    pub fn max_io(&mut self, bytes: usize) -> &mut Self {
        self.max_io = bytes.max(4096);
        self
    }

    /// Runs the transfer (see the [module docs](self) for the steps).
    ///
    /// Uses `rbd_snap_exists`, `rbd_get_size`, `rbd_resize2`, `rbd_diff_iterate2`,
    /// `rbd_aio_read2`, `rbd_aio_write2`, `rbd_aio_write_zeroes`, `rbd_aio_flush` and
    /// `rbd_snap_create2`.
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::NotFound`]: the from-snapshot is missing on the source or the destination;
    /// * [`ErrorKind::Exists`]: the to-snapshot already exists on the destination;
    /// * [`ErrorKind::InvalidArgument`]: the destination is not open read-write at its head, or
    ///   is the source image itself;
    /// * [`ErrorKind::Cancelled`]: the progress callback or token stopped it;
    /// * librbd read, write, resize and snapshot errors (for example
    ///   [`ErrorKind::PermissionDenied`]).
    pub fn run(&self, progress: &mut Progress<'_>) -> Result<TransferStats> {
        let (src, dst) = (self.src, self.dst);
        let _s = tracing::debug_span!("transfer", src_pool = %src.pool().name(), src_image = %src.name(),
            snap = ?src.snap_name(), from = ?self.from_snap, dst_pool = %dst.pool().name(), dst_image = %dst.name())
        .entered();
        let t0 = Instant::now();
        let from = self.from_snap.as_deref();
        let to = match &self.to_snap {
            Some(t) => t.as_deref(),
            None => src.snap_name(),
        };
        self.check(from, to)?;

        let size = src.size()?;
        let opts = DiffOptions { include_parent: true, whole_object: self.whole_object };
        let extents = DiffExtent::coalesce(src.diff_extents(from, 0, size, opts)?);
        let total = extents.iter().map(|e| e.len).sum();
        let mut track = Tracker::new(progress, total);
        track.report().map_err(|e| e.with_target(dst.spec()))?;
        let mut known_zero = self.known_zero(&extents)?;
        if dst.size()? != size {
            dst.resize(size, true)?;
        }

        let mut stats = TransferStats { extents: extents.len() as u64, ..TransferStats::default() };
        let mut writer =
            AioWriter::new(dst, self.in_flight).with_max_bytes(self.window_bytes).with_flags(fadvise::NOCACHE);
        let res = self.copy(&extents, &mut known_zero, &mut writer, &mut track, &mut stats);
        if let Err(e) = res {
            let _ = writer.drain();
            return Err(e);
        }
        let ws = writer.finish()?;
        stats.bytes_written = ws.bytes_written;
        stats.bytes_zeroed = ws.bytes_zeroed;
        if let Some(t) = to {
            dst.snap_create(t)?;
        }
        stats.elapsed = t0.elapsed();
        tracing::debug!(?stats, "transfer done");
        Ok(stats)
    }

    fn check(&self, from: Option<&str>, to: Option<&str>) -> Result<()> {
        let (src, dst) = (self.src, self.dst);
        let fail = |kind, msg: String| Err(Error::new(kind, "transfer", msg).with_target(dst.spec()));
        if dst.is_read_only() {
            return fail(
                ErrorKind::InvalidArgument,
                format!("the destination {} must be opened read-write at its head", dst.spec()),
            );
        }
        if src.pool().cluster().same_connection(dst.pool().cluster())
            && src.pool().id() == dst.pool().id()
            && src.pool().namespace() == dst.pool().namespace()
            && src.name() == dst.name()
        {
            return fail(ErrorKind::InvalidArgument, format!("{} cannot be transferred onto itself", src.spec()));
        }
        if let Some(f) = from {
            if !src.snap_exists(f)? {
                return fail(
                    ErrorKind::NotFound,
                    format!("from-snapshot '{f}' does not exist on the source {}", src.spec()),
                );
            }
            if !dst.snap_exists(f)? {
                return fail(
                    ErrorKind::NotFound,
                    format!(
                        "from-snapshot '{f}' does not exist on the destination {}; transfer the earlier diffs first",
                        dst.spec()
                    ),
                );
            }
        }
        if let Some(t) = to {
            if dst.snap_exists(t)? {
                return fail(
                    ErrorKind::Exists,
                    format!("to-snapshot '{t}' already exists on the destination {}", dst.spec()),
                );
            }
        }
        Ok(())
    }

    /// The read → zero-detect → write pipeline.
    fn copy(
        &self,
        extents: &[DiffExtent],
        known_zero: &mut ZeroMap,
        writer: &mut AioWriter<'_>,
        track: &mut Tracker<'_, '_>,
        stats: &mut TransferStats,
    ) -> Result<()> {
        let src = self.src;
        let mut reader = AioReader::new(src, self.in_flight).with_max_bytes(self.window_bytes).nocache(true);
        let mut plan = Planner::new(extents, self.max_io).peekable();
        let mut pending: VecDeque<Op> = VecDeque::new();
        let pending_cap = self.in_flight.saturating_mul(4).max(16);
        loop {
            while pending.len() < pending_cap {
                match plan.peek() {
                    None => break,
                    Some(Op::Piece { .. }) if reader.is_full() => break,
                    Some(_) => {}
                }
                let Some(op) = plan.next() else { break };
                if let Op::Piece { off, len, .. } = op {
                    // Move a buffer the writer is done with over to the reader.
                    let spare = writer.buffer();
                    if spare.capacity() > 0 {
                        reader.recycle(spare);
                    }
                    reader.submit(off, len)?;
                }
                pending.push_back(op);
            }
            let Some(op) = pending.pop_front() else { break };
            match op {
                Op::Zero { off, len } => {
                    zero(writer, known_zero, stats, off, len)?;
                    track.advance(len)?;
                }
                Op::Piece { off, len, .. } => {
                    let data = next_read(&mut reader, src, off, len)?;
                    stats.bytes_read += len as u64;
                    let all_data = {
                        let mut runs = zero_runs(&data, self.granularity);
                        matches!(runs.next(), Some((0, n, false)) if n == data.len()) && runs.next().is_none()
                    };
                    if all_data {
                        writer.write(off, data)?;
                    } else {
                        for (start, n, is_zero) in zero_runs(&data, self.granularity) {
                            let at = off + start as u64;
                            if is_zero {
                                zero(writer, known_zero, stats, at, n as u64)?;
                            } else {
                                let mut buf = writer.buffer();
                                buf.extend_from_slice(&data[start..start + n]);
                                writer.write(at, buf)?;
                            }
                        }
                        reader.recycle(data);
                    }
                    track.advance(len as u64)?;
                }
            }
        }
        Ok(())
    }

    /// Where the destination reads zeros before the transfer writes anything.
    fn known_zero(&self, extents: &[DiffExtent]) -> Result<ZeroMap> {
        if self.dst_is_zero {
            return Ok(ZeroMap::new(vec![(0, u64::MAX)]));
        }
        let (Some(first), Some(last)) = (extents.first(), extents.last()) else {
            return Ok(ZeroMap::new(Vec::new()));
        };
        if !self.skip_known_zeros {
            return Ok(ZeroMap::new(Vec::new()));
        }
        let dst = self.dst;
        let dsize = dst.size()?;
        let (lo, hi) = (first.offset.min(dsize), last.end().min(dsize));
        let mut allocated = Vec::new();
        if hi > lo {
            let opts = DiffOptions { include_parent: true, whole_object: false };
            allocated = DiffExtent::coalesce(dst.diff_extents(None, lo, hi - lo, opts)?);
            allocated.retain(|e| e.exists);
        }
        // The complement of the allocated extents within lo..hi, plus everything past the
        // destination's current end (zeros once it grows).
        let mut zeros = Vec::new();
        let mut pos = lo;
        for e in &allocated {
            if e.offset > pos {
                zeros.push((pos, e.offset.min(hi)));
            }
            pos = pos.max(e.end());
        }
        if pos < hi {
            zeros.push((pos, hi));
        }
        zeros.push((dsize, u64::MAX));
        zeros.retain(|(a, b)| a < b);
        Ok(ZeroMap::new(zeros))
    }
}

/// Zeros `off..off + len` on the destination, skipping the parts it already reads as zeros.
fn zero(
    writer: &mut AioWriter<'_>,
    known_zero: &mut ZeroMap,
    stats: &mut TransferStats,
    off: u64,
    len: u64,
) -> Result<()> {
    let mut pos = off;
    let end = off.saturating_add(len);
    while pos < end {
        let (until, known) = known_zero.at(pos, end);
        if known {
            stats.bytes_skipped += until - pos;
        } else {
            writer.write_zeroes(pos, until - pos)?;
        }
        pos = until;
    }
    Ok(())
}

/// Sorted, disjoint `[start, end)` ranges known to read as zeros on the destination, queried in
/// ascending offset order.
#[derive(Debug)]
struct ZeroMap {
    ranges: Vec<(u64, u64)>,
    idx: usize,
}

impl ZeroMap {
    fn new(ranges: Vec<(u64, u64)>) -> ZeroMap {
        ZeroMap { ranges, idx: 0 }
    }

    /// For `pos` (not below any earlier query): whether it is known zero, and where that answer
    /// stops holding (at most `end`).
    fn at(&mut self, pos: u64, end: u64) -> (u64, bool) {
        while self.ranges.get(self.idx).is_some_and(|r| r.1 <= pos) {
            self.idx += 1;
        }
        match self.ranges.get(self.idx) {
            Some(&(s, e)) if s <= pos => (e.min(end), true),
            Some(&(s, _)) => (s.min(end), false),
            None => (end, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_map_splits_ranges() {
        let mut m = ZeroMap::new(vec![(10, 20), (30, 40)]);
        assert_eq!(m.at(0, 100), (10, false));
        assert_eq!(m.at(10, 100), (20, true));
        assert_eq!(m.at(15, 18), (18, true));
        assert_eq!(m.at(20, 100), (30, false));
        assert_eq!(m.at(35, 100), (40, true));
        assert_eq!(m.at(40, 100), (100, false));
        let mut empty = ZeroMap::new(Vec::new());
        assert_eq!(empty.at(5, 9), (9, false));
        let mut all = ZeroMap::new(vec![(0, u64::MAX)]);
        assert_eq!(all.at(5, 9), (9, true));
    }
}
