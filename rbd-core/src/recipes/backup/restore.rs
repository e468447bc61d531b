//! `backup.restore`: diff restore, rollback restore, comparing restore.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{backup_snaps, locate_or_not_found, validate_backup_id, validate_volume_id, VolumeRef};
use crate::aio::{zero_runs, AioReader, AioWriter};
use crate::diff::{DiffExtent, DiffOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::export::{next_read, Op, Planner, Tracker, DEFAULT_IN_FLIGHT, DEFAULT_MAX_IO};
use crate::image::{fadvise, Image};
use crate::options::ImageOptions;
use crate::pool::Pool;
use crate::progress::Progress;
use crate::recipes::glance::remove_image_if_exists;
use crate::recipes::saga::Saga;
use crate::snapshot::SnapNamespace;
use crate::transfer::Transfer;

/// Step names of `backup.restore`, in order; failpoints are `backup.restore.<step>`.
/// `create_image` runs only when the target does not exist, `rollback` only when it shares a
/// snapshot with the backup chain, `transfer` or `compare` depending on the kind.
pub const RESTORE_STEPS: [&str; 5] = ["create_image", "rollback", "transfer", "compare", "resize"];

/// Block size of the comparing restore: only blocks that differ are written.
pub const COMPARE_BLOCK: usize = 64 << 10;

/// How a restore wrote the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreKind {
    /// The target was new or empty: the whole diff up to the backup snapshot was transferred
    /// (only data; holes stay holes).
    Diff,
    /// The target still had the backup's own snapshot (it is the source volume): rolled back
    /// to it.
    Rollback {
        /// The snapshot rolled back to.
        snap: String,
    },
    /// The target had an older snapshot of the backup chain: rolled back to it, then the diff
    /// from it to the backup snapshot was transferred.
    RollbackDiff {
        /// The common snapshot rolled back to and diffed from.
        from_snap: String,
    },
    /// The target had other data: both sides were read and only the blocks that differ were
    /// written (zeros as `write_zeroes`).
    Full,
}

impl RestoreKind {
    /// `diff`, `rollback`, `rollback-diff` or `full`.
    pub fn name(&self) -> &'static str {
        match self {
            RestoreKind::Diff => "diff",
            RestoreKind::Rollback { .. } => "rollback",
            RestoreKind::RollbackDiff { .. } => "rollback-diff",
            RestoreKind::Full => "full",
        }
    }
}

/// The result of [`Restore::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreResult {
    /// The backup id.
    pub backup_id: String,
    /// How the target was written.
    pub kind: RestoreKind,
    /// The backup image the data came from.
    pub image: String,
    /// The backup snapshot.
    pub snap: String,
    /// The target, `pool/image`.
    pub target: String,
    /// The target did not exist and was created.
    pub created: bool,
    /// The target's final size (bytes).
    pub size: u64,
    /// Bytes read from the backup image.
    pub bytes_read: u64,
    /// Bytes written to the target as data.
    pub bytes_written: u64,
    /// Bytes zeroed on the target.
    pub bytes_zeroed: u64,
    /// Bytes compared equal and left alone (comparing restore).
    pub bytes_unchanged: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// A restore of a backup into a volume. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Restore<'a> {
    backups: &'a Pool,
    volume_id: String,
    backup_id: String,
    target: VolumeRef<'a>,
    size: Option<u64>,
    create: bool,
    in_flight: usize,
}

impl<'a> Restore<'a> {
    /// Restores backup `backup_id` of volume `volume_id` (in `backups`) into `target` (any
    /// pool, any cluster; the source volume itself is fine).
    pub fn new(backups: &'a Pool, volume_id: &str, backup_id: &str, target: &VolumeRef<'a>) -> Restore<'a> {
        Restore {
            backups,
            volume_id: volume_id.to_string(),
            backup_id: backup_id.to_string(),
            target: target.clone(),
            size: None,
            create: true,
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }

    /// The target's final size (at least the backup's size). Default: the target's current
    /// size, or the backup's size for a target this restore creates.
    pub fn size(&mut self, bytes: Option<u64>) -> &mut Self {
        self.size = bytes;
        self
    }

    /// Create the target when it does not exist (default true; removed again on failure).
    pub fn create_missing(&mut self, yes: bool) -> &mut Self {
        self.create = yes;
        self
    }

    /// Operations in flight on each side (default 16).
    pub fn in_flight(&mut self, n: usize) -> &mut Self {
        self.in_flight = n.max(1);
        self
    }

    /// Restores (see the [module docs](super)); `progress` reports the data phase and may
    /// cancel. A restore overwrites the target: it is not undone on failure, except that a
    /// target this call created is removed again.
    ///
    /// Wraps `rbd_snap_list`, `rbd_diff_iterate2`, `rbd_create4`, `rbd_snap_rollback`, the calls
    /// of [`Transfer::run`], `rbd_aio_read2`, `rbd_aio_write2`, `rbd_aio_write_zeroes` and
    /// `rbd_resize2`.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`] before anything changes: bad ids or target name, a
    ///   final size smaller than the backup.
    /// - [`ErrorKind::NotFound`]: the backup does not exist, or the target does not and
    ///   `create_missing(false)`.
    /// - [`ErrorKind::Cancelled`], read/write errors.
    pub fn run(&self, progress: &mut Progress<'_>) -> Result<RestoreResult> {
        const OP: &str = "backup.restore";
        let (backups, target, bid) = (self.backups, &self.target, self.backup_id.as_str());
        let _span = tracing::info_span!("backup.restore", backup_pool = %backups.name(), volume = %self.volume_id,
            backup = bid, pool = %target.pool().name(), image = %target.image_name())
        .entered();
        let t0 = Instant::now();
        validate_volume_id(OP, &self.volume_id)?;
        validate_backup_id(OP, bid)?;
        target.validate(OP)?;

        let loc = locate_or_not_found(OP, backups, &self.volume_id, bid)?;
        let snap = loc.snap.name.clone();
        let backup_size = loc.snap.size;
        let (exists, current) = match Image::open_read_only(target.pool(), target.image_name()) {
            Ok(img) => (true, img.size()?),
            Err(e) if e.kind() == ErrorKind::NotFound && self.create => (false, backup_size),
            Err(e) => return Err(e),
        };
        let final_size = self.size.unwrap_or(current);
        if final_size < backup_size {
            return Err(Error::invalid(
                OP,
                format!(
                    "the target {} would be {final_size} bytes, smaller than the backup ({backup_size} bytes); \
                     grow it first or pass a size",
                    target.spec()
                ),
            ));
        }
        let kind = if exists { self.choose(&loc.image, loc.snap.id)? } else { RestoreKind::Diff };

        let mut s = Saga::new(OP);
        if !exists {
            s.step(
                "create_image",
                || target.pool().create_image(target.image_name(), final_size, &ImageOptions::new()),
                || remove_image_if_exists(target.pool(), target.image_name()),
            )?;
        }
        // Images are opened inside each step, so that an undo never meets our own watch.
        let open_src = || Image::open_at_snap(backups, &loc.image, &snap);
        let open_dst = || Image::open(target.pool(), target.image_name());
        let from = match &kind {
            RestoreKind::Rollback { snap: c } | RestoreKind::RollbackDiff { from_snap: c } => {
                s.check("rollback", || open_dst()?.snap_rollback_with_progress(c, progress))?;
                Some(c.as_str())
            }
            _ => None,
        };
        let mut result = RestoreResult {
            backup_id: bid.to_string(),
            kind: kind.clone(),
            image: loc.image.clone(),
            snap: snap.clone(),
            target: target.spec(),
            created: !exists,
            size: final_size,
            bytes_read: 0,
            bytes_written: 0,
            bytes_zeroed: 0,
            bytes_unchanged: 0,
            elapsed: Duration::ZERO,
        };
        match &kind {
            RestoreKind::Rollback { .. } => {}
            RestoreKind::Diff | RestoreKind::RollbackDiff { .. } => {
                let st = s.check("transfer", || {
                    let (src, dst) = (open_src()?, open_dst()?);
                    let mut t = Transfer::new(&src, &dst);
                    t.from_snap(from).to_snap(None).dst_is_zero(from.is_none()).in_flight(self.in_flight);
                    t.run(progress)
                })?;
                result.bytes_read = st.bytes_read;
                result.bytes_written = st.bytes_written;
                result.bytes_zeroed = st.bytes_zeroed;
            }
            RestoreKind::Full => {
                let st =
                    s.check("compare", || compare_restore(&open_src()?, &open_dst()?, self.in_flight, progress))?;
                result.bytes_read = st.bytes_read;
                result.bytes_written = st.bytes_written;
                result.bytes_zeroed = st.bytes_zeroed;
                result.bytes_unchanged = st.bytes_unchanged;
            }
        }
        s.check("resize", || {
            let dst = open_dst()?;
            if dst.size()? == final_size {
                Ok(())
            } else {
                dst.resize(final_size, true)
            }
        })?;
        s.commit()?;
        result.elapsed = t0.elapsed();
        Ok(result)
    }

    /// How to restore into an existing target: through the newest chain snapshot it shares
    /// (at or before the backup's), else a diff when it holds no data, else comparing.
    fn choose(&self, image: &str, snap_id: u64) -> Result<RestoreKind> {
        let target = &self.target;
        let chain: Vec<String> = backup_snaps(&Image::open_read_only(self.backups, image)?)?
            .into_iter()
            .filter(|s| s.info.id <= snap_id)
            .map(|s| s.info.name)
            .collect();
        let dst = Image::open_read_only(target.pool(), target.image_name())?;
        let theirs: Vec<String> =
            dst.snapshots()?.into_iter().filter(|s| s.namespace == SnapNamespace::User).map(|s| s.name).collect();
        if let Some(common) = chain.iter().rev().find(|n| theirs.contains(n)) {
            return Ok(if chain.last() == Some(common) {
                RestoreKind::Rollback { snap: common.clone() }
            } else {
                RestoreKind::RollbackDiff { from_snap: common.clone() }
            });
        }
        let size = dst.size()?;
        let opts = DiffOptions { include_parent: true, whole_object: false };
        let mut has_data = false;
        dst.diff_iterate(None, 0, size, opts, |e| {
            if e.exists {
                has_data = true;
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })?;
        Ok(if has_data { RestoreKind::Full } else { RestoreKind::Diff })
    }
}

/// [`Restore`] in one call.
///
/// # Errors
/// As [`Restore::run`].
pub fn restore(
    backups: &Pool,
    volume_id: &str,
    backup_id: &str,
    target: &VolumeRef<'_>,
    progress: &mut Progress<'_>,
) -> Result<RestoreResult> {
    Restore::new(backups, volume_id, backup_id, target).run(progress)
}

/// Counters of a comparing restore.
#[derive(Debug, Clone, Copy, Default)]
struct CompareStats {
    bytes_read: u64,
    bytes_written: u64,
    bytes_zeroed: u64,
    bytes_unchanged: u64,
}

/// The extents holding data in `a` or in `b` (each at its own snapshot or head), merged, within
/// `0..size`.
pub(crate) fn union_of_data(a: &Image, b: &Image, size: u64) -> Result<Vec<DiffExtent>> {
    let opts = DiffOptions { include_parent: true, whole_object: false };
    let mut all = a.diff_extents(None, 0, size.min(a.size()?), opts)?;
    all.extend(b.diff_extents(None, 0, size.min(b.size()?), opts)?);
    all.retain(|e| e.exists);
    Ok(DiffExtent::coalesce(all))
}

/// Reads `ranges` from `a` and `b` in pieces of at most 4 MiB, `in_flight` reads on each side,
/// and hands each pair of pieces to `f(offset, a_bytes, b_bytes)` in offset order.
pub(crate) fn for_each_pair(
    a: &Image,
    b: &Image,
    ranges: &[DiffExtent],
    in_flight: usize,
    progress: &mut Progress<'_>,
    mut f: impl FnMut(u64, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let total = ranges.iter().map(|e| e.len).sum();
    let mut track = Tracker::new(progress, total);
    track.report()?;
    let mut ra = AioReader::new(a, in_flight).nocache(true);
    let mut rb = AioReader::new(b, in_flight).nocache(true);
    let mut plan = Planner::new(ranges, DEFAULT_MAX_IO);
    let mut pending: VecDeque<(u64, usize)> = VecDeque::new();
    loop {
        while !ra.is_full() && !rb.is_full() {
            match plan.next() {
                Some(Op::Piece { off, len, .. }) => {
                    ra.submit(off, len)?;
                    rb.submit(off, len)?;
                    pending.push_back((off, len));
                }
                Some(Op::Zero { .. }) => {}
                None => break,
            }
        }
        let Some((off, len)) = pending.pop_front() else { break };
        let da = next_read(&mut ra, a, off, len)?;
        let db = next_read(&mut rb, b, off, len)?;
        f(off, &da, &db)?;
        ra.recycle(da);
        rb.recycle(db);
        track.advance(len as u64)?;
    }
    Ok(())
}

/// Makes `dst` equal to `src` (the backup at its snapshot) by reading both and writing only the
/// [`COMPARE_BLOCK`]s that differ (zeros as `write_zeroes`). Regions where neither side holds
/// data are not read at all. `dst` ends up with `src`'s size.
fn compare_restore(src: &Image, dst: &Image, in_flight: usize, progress: &mut Progress<'_>) -> Result<CompareStats> {
    let size = src.size()?;
    if dst.size()? != size {
        // Shrinking drops what lies beyond the backup (Cinder discards excess bytes); growing
        // adds zeros.
        dst.resize(size, true)?;
    }
    let ranges = union_of_data(src, dst, size)?;
    let mut stats = CompareStats::default();
    let mut writer = AioWriter::new(dst, in_flight).with_flags(fadvise::NOCACHE);
    let res = for_each_pair(src, dst, &ranges, in_flight, progress, |off, want, have| {
        stats.bytes_read += want.len() as u64;
        if want == have {
            stats.bytes_unchanged += want.len() as u64;
            return Ok(());
        }
        let len = want.len();
        let same = |i: usize, j: usize| want[i..j] == have[i..j];
        let mut i = 0;
        while i < len {
            let end = (i + COMPARE_BLOCK).min(len);
            if same(i, end) {
                stats.bytes_unchanged += (end - i) as u64;
                i = end;
                continue;
            }
            let mut j = end;
            while j < len {
                let e = (j + COMPARE_BLOCK).min(len);
                if same(j, e) {
                    break;
                }
                j = e;
            }
            for (start, n, zero) in zero_runs(&want[i..j], COMPARE_BLOCK) {
                let at = off + (i + start) as u64;
                if zero {
                    writer.write_zeroes(at, n as u64)?;
                } else {
                    let mut buf = writer.buffer();
                    buf.extend_from_slice(&want[i + start..i + start + n]);
                    writer.write(at, buf)?;
                }
            }
            i = j;
        }
        Ok(())
    });
    if let Err(e) = res {
        let _ = writer.drain();
        return Err(e);
    }
    let ws = writer.finish()?;
    stats.bytes_written = ws.bytes_written;
    stats.bytes_zeroed = ws.bytes_zeroed;
    Ok(stats)
}
