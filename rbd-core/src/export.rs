//! Export what changed in an image as an `rbd diff v1` stream (what `rbd export-diff` writes),
//! and a whole image with every snapshot as an `rbd image v2` container (what
//! `rbd export --export-format 2` writes), into any [`std::io::Write`].
//!
//! ```no_run
//! use rbd_core::export::DiffExport;
//! use rbd_core::{Image, Pool, Progress};
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! let pool = Pool::open(&cluster, "volumes")?;
//! // The end point is the snapshot the handle is opened at (or the head).
//! let at_s2 = Image::open_at_snap(&pool, "volume-1", "s2")?;
//! let file = std::fs::File::create("/tmp/volume-1.s1-s2.diff")?;
//! let stats = DiffExport::new(&at_s2).from_snap(Some("s1")).run(file, &mut Progress::none())?;
//! println!("{} records, {} stream bytes", stats.records(), stats.stream_bytes);
//! // `rbd import-diff /tmp/volume-1.s1-s2.diff backups/volume-1` accepts it.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Two modes
//!
//! * **Fine-grained** (the default): extents are merged ([`DiffExtent::coalesce`]) and every
//!   data extent is read in pieces of at most [`DEFAULT_MAX_IO`] bytes; inside each piece, runs of
//!   all-zero [`granularity`](DiffExport::granularity)-sized blocks (default 4 KiB) become `'z'`
//!   records and only the rest is sent as `'w'` data. Adjacent zero ranges are merged into one
//!   `'z'`. Pacific's `rbd_diff_iterate2` reports a write into an object that did not exist at
//!   the from-snapshot as an extent covering the object from its start, so a 64 KiB write into a
//!   new object costs the CLI a `'w'` record of everything before it too; this mode sends 64 KiB.
//! * **CLI-identical** ([`cli_identical(true)`](DiffExport::cli_identical)): the same records, byte
//!   for byte, as `rbd export-diff` (Pacific `Export.cc`): one record per extent reported by
//!   `rbd_diff_iterate2`, in offset order; an extent that does not exist, or whose whole buffer is
//!   zeros, is a `'z'`, anything else one `'w'` with the whole extent. To decide `'z'` versus
//!   `'w'` before writing the record header the extent is buffered; it is still *read* in pieces
//!   of at most [`DEFAULT_MAX_IO`]. librbd reports extents per object (at most the object size,
//!   32 MiB for the largest order, 25), so the buffer is bounded by
//!   [`cli_buffer_limit`](DiffExport::cli_buffer_limit) (default [`DEFAULT_CLI_BUFFER_LIMIT`],
//!   32 MiB). An extent larger than that (none in Pacific) falls back to one record per piece:
//!   still a valid stream with the same content, no longer byte-identical
//!   ([`ExportStats::cli_fallbacks`] counts them).
//!
//! Both modes write valid v1 streams that `rbd import-diff` and [`crate::import::DiffImport`]
//! accept, with records in ascending offset order and `'e'` at the end.
//!
//! # Memory and concurrency
//!
//! Reads go through an [`AioReader`] window: at most [`in_flight`](DiffExport::in_flight)
//! (default [`DEFAULT_IN_FLIGHT`]) reads of at most [`DEFAULT_MAX_IO`] bytes are outstanding or
//! waiting to be written, so memory is about `in_flight × 4 MiB` (plus one buffered extent in
//! CLI-identical mode) whatever the image size. The list of extents itself is held in memory
//! (24 bytes per extent). Output goes through a 1 MiB [`BufWriter`].

use std::collections::VecDeque;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use crate::aio::{is_all_zero, zero_runs, AioReader};
use crate::diff::{DiffExtent, DiffOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::progress::Progress;
use crate::snapshot::SnapNamespace;
use crate::stream::{DiffWriter, ImageExportWriter, ImageHeader};

/// Default number of reads (and, for transfers, writes) in flight.
pub const DEFAULT_IN_FLIGHT: usize = 16;

/// Default zero-detection granularity of the fine-grained mode: 4 KiB, the `--sparse-size`
/// `rbd import-diff` splits `'w'` records at.
pub const DEFAULT_GRANULARITY: usize = 4096;

/// Largest single read (and write) issued: 4 MiB, one default-sized object.
pub const DEFAULT_MAX_IO: usize = 4 << 20;

/// Largest extent the CLI-identical mode buffers to decide `'w'` versus `'z'`: 32 MiB, the largest
/// RBD object size (order 25), which bounds the extents Pacific's `rbd_diff_iterate2` reports.
pub const DEFAULT_CLI_BUFFER_LIMIT: usize = 32 << 20;

/// Output buffer size.
const OUT_BUF: usize = 1 << 20;

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportStats {
    /// Diff streams written (1 for a v1 diff, snapshots + 1 for an image v2 container).
    pub diffs: u64,
    /// Extents reported by `rbd_diff_iterate2` (before merging).
    pub extents: u64,
    /// `'w'` records written.
    pub write_records: u64,
    /// `'z'` records written.
    pub zero_records: u64,
    /// Payload bytes in `'w'` records.
    pub data_bytes: u64,
    /// Bytes covered by `'z'` records.
    pub zero_bytes: u64,
    /// Bytes read from the image.
    pub bytes_read: u64,
    /// Bytes written to the output, banners and headers included.
    pub stream_bytes: u64,
    /// CLI-identical mode only: extents larger than the buffer limit, written as several records.
    pub cli_fallbacks: u64,
    /// Wall time of the export.
    pub elapsed: Duration,
}

impl ExportStats {
    /// `'w'` plus `'z'` records.
    pub fn records(&self) -> u64 {
        self.write_records + self.zero_records
    }
}

/// Settings shared by the v1 and v2 exporters (and, for the planner, the transfer engine).
#[derive(Debug, Clone, Copy)]
struct Settings {
    cli_identical: bool,
    whole_object: bool,
    in_flight: usize,
    granularity: usize,
    max_io: usize,
    cli_buffer_limit: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cli_identical: false,
            whole_object: false,
            in_flight: DEFAULT_IN_FLIGHT,
            granularity: DEFAULT_GRANULARITY,
            max_io: DEFAULT_MAX_IO,
            cli_buffer_limit: DEFAULT_CLI_BUFFER_LIMIT,
        }
    }
}

/// Export of one image's changes as an `rbd diff v1` stream (`rbd export-diff`).
///
/// The **end point** is the snapshot `image` is opened at (written as the `'t'` record), or the
/// head (no `'t'`). The start is [`from_snap`](Self::from_snap) (`'f'`), or the beginning of
/// time. The `'s'` record is the image size at the end point. Extents come from
/// `rbd_diff_iterate2` with `include_parent = true` (a clone's parent data is included when there
/// is no from-snap), data from `rbd_aio_read2` with `FADVISE_NOCACHE`, as the CLI does. See the
/// [module docs](self) for the two modes.
///
/// ```no_run
/// # use rbd_core::{export::DiffExport, Image, Pool, Progress};
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// # let pool = Pool::open(&cluster, "volumes")?;
/// let at_s1 = Image::open_at_snap(&pool, "volume-1", "s1")?;
/// let mut out = Vec::new();
/// DiffExport::new(&at_s1).cli_identical(true).run(&mut out, &mut Progress::none())?;
/// assert_eq!(&out[..12], b"rbd diff v1\n");
/// # Ok::<(), rbd_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DiffExport<'a> {
    image: &'a Image,
    from_snap: Option<String>,
    settings: Settings,
}

impl<'a> DiffExport<'a> {
    /// An export of `image` (at its snapshot, or head) from the beginning of time, fine-grained.
    pub fn new(image: &'a Image) -> DiffExport<'a> {
        DiffExport { image, from_snap: None, settings: Settings::default() }
    }

    /// Starts the diff at user snapshot `snap` (written as the `'f'` record); `None` exports
    /// everything up to the end point.
    pub fn from_snap(&mut self, snap: Option<&str>) -> &mut Self {
        self.from_snap = snap.map(str::to_string);
        self
    }

    /// Writes exactly what `rbd export-diff` writes (see the [module docs](self)). Default false.
    pub fn cli_identical(&mut self, yes: bool) -> &mut Self {
        self.settings.cli_identical = yes;
        self
    }

    /// Compares whole objects (`--whole-object`: `rbd_diff_iterate2` with `whole_object`, fast
    /// with a valid object map / fast-diff, coarser). Default false.
    pub fn whole_object(&mut self, yes: bool) -> &mut Self {
        self.settings.whole_object = yes;
        self
    }

    /// Reads in flight at once (at least 1; default [`DEFAULT_IN_FLIGHT`]).
    pub fn in_flight(&mut self, n: usize) -> &mut Self {
        self.settings.in_flight = n.max(1);
        self
    }

    /// Zero-detection block size of the fine-grained mode (default [`DEFAULT_GRANULARITY`]);
    /// 0 only drops pieces that are entirely zero.
    pub fn granularity(&mut self, bytes: usize) -> &mut Self {
        self.settings.granularity = bytes;
        self
    }

    /// Largest single read (at least 4 KiB; default [`DEFAULT_MAX_IO`]).
    pub fn max_io(&mut self, bytes: usize) -> &mut Self {
        self.settings.max_io = bytes.max(4096);
        self
    }

    /// Largest extent the CLI-identical mode buffers (default [`DEFAULT_CLI_BUFFER_LIMIT`]).
    pub fn cli_buffer_limit(&mut self, bytes: usize) -> &mut Self {
        self.settings.cli_buffer_limit = bytes;
        self
    }

    /// Writes the stream to `out` and returns what was written. Pass `&mut writer` to keep the
    /// writer; it is wrapped in a [`BufWriter`] and flushed at the end.
    ///
    /// Progress reports `(bytes of extents processed, bytes of all extents)`; a `Break` or a
    /// cancelled token stops the export with [`ErrorKind::Cancelled`], leaving a stream without
    /// its `'e'` record (which importers reject as truncated).
    ///
    /// Uses `rbd_snap_exists`, `rbd_get_size`, `rbd_diff_iterate2` and `rbd_aio_read2`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] when the from-snapshot does not exist;
    /// [`ErrorKind::InvalidArgument`] when it is not older than the end point (librbd);
    /// [`ErrorKind::Cancelled`]; read errors from librbd; the writer's error kind (usually
    /// [`ErrorKind::Io`]) if writing fails.
    pub fn run<W: Write>(&self, out: W, progress: &mut Progress<'_>) -> Result<ExportStats> {
        let image = self.image;
        let _s = tracing::debug_span!("export_diff", pool = %image.pool().name(), image = %image.name(),
            snap = ?image.snap_name(), from = ?self.from_snap, cli_identical = self.settings.cli_identical)
        .entered();
        let t0 = Instant::now();
        let from = self.from_snap.as_deref();
        check_from_snap(image, from)?;
        let size = image.size()?;
        let extents = diff_extents(image, from, size, &self.settings)?;
        let mut stats = ExportStats { diffs: 1, extents: extents.reported, ..ExportStats::default() };
        let mut track = Tracker::new(progress, extents.total());
        track.report()?;

        let mut w = DiffWriter::new_v1(BufWriter::with_capacity(OUT_BUF, out))?;
        if let Some(f) = from {
            w.from_snap(f)?;
        }
        if let Some(t) = image.snap_name() {
            w.to_snap(t)?;
        }
        w.size(size)?;
        write_body(image, &extents.list, &self.settings, &mut w, &mut track, &mut stats)?;
        // The 'e' record is one byte.
        stats.stream_bytes = w.bytes_written() + 1;
        let buffered = w.end()?;
        buffered.into_inner().map_err(|e| {
            let (err, _) = e.into_parts();
            Error::from(err).with_message("flushing the diff stream")
        })?;
        stats.elapsed = t0.elapsed();
        tracing::debug!(records = stats.records(), bytes = stats.stream_bytes, "export_diff done");
        Ok(stats)
    }
}

/// Export of a whole image, every user snapshot included, as an `rbd image v2` container
/// (`rbd export --export-format 2`), which `rbd import --export-format 2` and
/// [`crate::import::ImageImport`] turn back into an image with the same snapshots (and
/// protection) and metadata.
///
/// The container holds a header (`'O'` order, `'T'` features, `'U'`/`'C'` striping, one `'M'`
/// per image-metadata key in key order, as the CLI writes them), then one diff-v2 stream per user
/// snapshot in creation order (each from the previous one, with `'p'` protection status) and a
/// last one from the newest snapshot to the head. The head is exported even when `image` is
/// opened at a snapshot (as the CLI does); snapshots in other namespaces (group, trash, mirror)
/// are left out. The diffs use the same engine and modes as [`DiffExport`]; with
/// [`cli_identical(true)`](Self::cli_identical) the output is byte-identical to Pacific's.
///
/// ```no_run
/// # use rbd_core::{export::ImageExport, Image, Pool, Progress};
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// # let pool = Pool::open(&cluster, "volumes")?;
/// let image = Image::open_read_only(&pool, "volume-1")?;
/// let file = std::fs::File::create("/tmp/volume-1.exp2")?;
/// let stats = ImageExport::new(&image).run(file, &mut Progress::none())?;
/// println!("{} diffs", stats.diffs);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ImageExport<'a> {
    image: &'a Image,
    settings: Settings,
}

impl<'a> ImageExport<'a> {
    /// An export of `image` with all its user snapshots, fine-grained.
    pub fn new(image: &'a Image) -> ImageExport<'a> {
        ImageExport { image, settings: Settings::default() }
    }

    /// Writes exactly what `rbd export --export-format 2` writes. Default false.
    pub fn cli_identical(&mut self, yes: bool) -> &mut Self {
        self.settings.cli_identical = yes;
        self
    }

    /// Reads in flight at once (at least 1; default [`DEFAULT_IN_FLIGHT`]).
    pub fn in_flight(&mut self, n: usize) -> &mut Self {
        self.settings.in_flight = n.max(1);
        self
    }

    /// Zero-detection block size of the fine-grained mode (default [`DEFAULT_GRANULARITY`]).
    pub fn granularity(&mut self, bytes: usize) -> &mut Self {
        self.settings.granularity = bytes;
        self
    }

    /// Writes the container to `out` (wrapped in a [`BufWriter`], flushed at the end).
    ///
    /// Progress reports bytes of extents processed over all diffs. Each diff's end point is read
    /// through a read-only handle opened at that snapshot (`rbd_open_read_only`), one at a time.
    ///
    /// Uses `rbd_stat`, `rbd_get_features`, `rbd_get_stripe_unit`, `rbd_get_stripe_count`,
    /// `rbd_metadata_list`, `rbd_snap_list`, `rbd_snap_is_protected`, `rbd_diff_iterate2` and
    /// `rbd_aio_read2`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] when a snapshot disappears during the export;
    /// [`ErrorKind::Cancelled`]; librbd read errors; the writer's error kind if writing fails.
    pub fn run<W: Write>(&self, out: W, progress: &mut Progress<'_>) -> Result<ExportStats> {
        let image = self.image;
        let _s = tracing::debug_span!("export_image_v2", pool = %image.pool().name(), image = %image.name()).entered();
        let t0 = Instant::now();
        let info = image.stat()?;
        let mut metadata = image.metadata_list()?;
        metadata.sort();
        let header = ImageHeader {
            order: Some(u64::from(info.order)),
            features: Some(image.features()?.bits()),
            stripe_unit: Some(image.stripe_unit()?),
            stripe_count: Some(image.stripe_count()?),
            metadata,
        };
        let mut snaps: Vec<_> = image.snapshots()?.into_iter().filter(|s| s.namespace == SnapNamespace::User).collect();
        snaps.sort_by_key(|s| s.id);

        // One diff per snapshot, then the head: (from, to). Extents first, for the progress total.
        let mut plan: Vec<(Option<String>, Option<String>, Extents)> = Vec::with_capacity(snaps.len() + 1);
        let mut prev: Option<String> = None;
        for s in snaps.iter().map(|s| Some(s.name.clone())).chain(std::iter::once(None)) {
            let handle = self.end_point(s.as_deref())?;
            let h = handle.as_ref().unwrap_or(image);
            let size = h.size()?;
            let ext = diff_extents(h, prev.as_deref(), size, &self.settings)?;
            plan.push((prev.clone(), s.clone(), ext));
            prev = s;
        }
        let total = plan.iter().map(|p| p.2.total()).sum();
        let mut track = Tracker::new(progress, total);
        track.report()?;
        let mut stats = ExportStats::default();

        let mut w = ImageExportWriter::new(BufWriter::with_capacity(OUT_BUF, out), &header)?;
        w.begin_diffs(plan.len() as u64)?;
        for (from, to, ext) in &plan {
            let handle = self.end_point(to.as_deref())?;
            let h = handle.as_ref().unwrap_or(image);
            let mut d = w.next_diff()?;
            if let Some(f) = from {
                d.from_snap(f)?;
            }
            if let Some(t) = to {
                d.to_snap(t)?;
                d.protected(h.snap_is_protected(t)?)?;
            }
            d.size(h.size()?)?;
            write_body(h, &ext.list, &self.settings, &mut *d, &mut track, &mut stats)?;
            d.end()?;
            stats.diffs += 1;
            stats.extents += ext.reported;
        }
        stats.stream_bytes = w.bytes_written();
        let buffered = w.finish()?;
        buffered.into_inner().map_err(|e| {
            let (err, _) = e.into_parts();
            Error::from(err).with_message("flushing the image export")
        })?;
        stats.elapsed = t0.elapsed();
        Ok(stats)
    }

    /// A read-only handle at `snap`, or at the head when `image` is not already there (`None`
    /// means: use `image` itself).
    fn end_point(&self, snap: Option<&str>) -> Result<Option<Image>> {
        let image = self.image;
        match snap {
            Some(s) => Image::open_at_snap(image.pool(), image.name(), s).map(Some),
            None if image.snap_name().is_none() => Ok(None),
            None => Image::open_read_only(image.pool(), image.name()).map(Some),
        }
    }
}

/// [`ErrorKind::NotFound`] with a clear message when `from` is given but does not exist.
fn check_from_snap(image: &Image, from: Option<&str>) -> Result<()> {
    if let Some(f) = from {
        if !image.snap_exists(f)? {
            return Err(Error::new(
                ErrorKind::NotFound,
                "export_diff",
                format!("from-snapshot '{f}' does not exist on {}", image.spec()),
            )
            .with_target(image.spec()));
        }
    }
    Ok(())
}

/// The extents of one diff, as the export will walk them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extents {
    /// Sorted by offset; merged in fine-grained mode, as reported in CLI-identical mode.
    pub(crate) list: Vec<DiffExtent>,
    /// How many extents librbd reported.
    pub(crate) reported: u64,
}

impl Extents {
    /// Bytes covered (the progress total).
    pub(crate) fn total(&self) -> u64 {
        self.list.iter().map(|e| e.len).sum()
    }
}

/// `rbd_diff_iterate2(from, 0, size, include_parent = true, whole_object)`, sorted, and merged
/// unless the CLI's one-record-per-extent is wanted.
fn diff_extents(image: &Image, from: Option<&str>, size: u64, s: &Settings) -> Result<Extents> {
    let opts = DiffOptions { include_parent: true, whole_object: s.whole_object };
    let list = image.diff_extents(from, 0, size, opts)?;
    let reported = list.len() as u64;
    let list = if s.cli_identical { list } else { DiffExtent::coalesce(list) };
    Ok(Extents { list, reported })
}

/// Progress over a known total; every report is also a cancellation point.
pub(crate) struct Tracker<'p, 'a> {
    progress: &'p mut Progress<'a>,
    pub(crate) done: u64,
    pub(crate) total: u64,
}

impl<'p, 'a> Tracker<'p, 'a> {
    pub(crate) fn new(progress: &'p mut Progress<'a>, total: u64) -> Tracker<'p, 'a> {
        Tracker { progress, done: 0, total }
    }

    pub(crate) fn report(&mut self) -> Result<()> {
        self.progress.report(self.done, self.total)
    }

    pub(crate) fn advance(&mut self, n: u64) -> Result<()> {
        self.done = self.done.saturating_add(n).min(self.total.max(self.done));
        self.report()
    }
}

/// One step of walking a diff: a range known to be zero, or one read of a data extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// An extent that does not exist (reads as zeros).
    Zero { off: u64, len: u64 },
    /// A piece of the data extent `ext_off..ext_off + ext_len`, at most `max_io` bytes and ending
    /// on a `max_io` boundary (object-aligned for default layouts); `last` for its final piece.
    Piece { off: u64, len: usize, ext_off: u64, ext_len: u64, last: bool },
}

/// Walks extents in order, cutting data extents into reads.
pub(crate) struct Planner<'e> {
    extents: &'e [DiffExtent],
    idx: usize,
    pos: u64,
    max_io: u64,
}

impl<'e> Planner<'e> {
    pub(crate) fn new(extents: &'e [DiffExtent], max_io: usize) -> Planner<'e> {
        Planner { extents, idx: 0, pos: 0, max_io: (max_io as u64).max(1) }
    }
}

impl Iterator for Planner<'_> {
    type Item = Op;

    fn next(&mut self) -> Option<Op> {
        loop {
            let e = *self.extents.get(self.idx)?;
            if e.len == 0 {
                self.idx += 1;
                continue;
            }
            if !e.exists {
                self.idx += 1;
                return Some(Op::Zero { off: e.offset, len: e.len });
            }
            let start = e.offset + self.pos;
            let end = e.end();
            let boundary = (start / self.max_io).saturating_add(1).saturating_mul(self.max_io);
            let piece_end = end.min(boundary);
            let len = piece_end - start;
            let last = piece_end == end;
            if last {
                self.idx += 1;
                self.pos = 0;
            } else {
                self.pos += len;
            }
            // At most max_io, which is a usize.
            return Some(Op::Piece { off: start, len: len as usize, ext_off: e.offset, ext_len: e.len, last });
        }
    }
}

/// The record side of an export: counts records and, in fine-grained mode, merges adjacent zero
/// ranges into one `'z'`.
struct Sink<'w, W: Write> {
    out: &'w mut DiffWriter<W>,
    merge_zeros: bool,
    pending_zero: Option<(u64, u64)>,
}

impl<W: Write> Sink<'_, W> {
    fn zero(&mut self, stats: &mut ExportStats, off: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if !self.merge_zeros {
            return self.emit_zero(stats, off, len);
        }
        match &mut self.pending_zero {
            Some((o, l)) if *o + *l == off => *l += len,
            _ => {
                self.flush_zero(stats)?;
                self.pending_zero = Some((off, len));
            }
        }
        Ok(())
    }

    fn data(&mut self, stats: &mut ExportStats, off: u64, data: &[u8]) -> Result<()> {
        self.flush_zero(stats)?;
        self.out.write(off, data)?;
        stats.write_records += 1;
        stats.data_bytes += data.len() as u64;
        Ok(())
    }

    fn emit_zero(&mut self, stats: &mut ExportStats, off: u64, len: u64) -> Result<()> {
        self.out.zero(off, len)?;
        stats.zero_records += 1;
        stats.zero_bytes += len;
        Ok(())
    }

    fn flush_zero(&mut self, stats: &mut ExportStats) -> Result<()> {
        if let Some((o, l)) = self.pending_zero.take() {
            self.emit_zero(stats, o, l)?;
        }
        Ok(())
    }
}

/// A CLI-identical extent being assembled from its pieces.
struct Assembly {
    buf: Vec<u8>,
    all_zero: bool,
}

/// Writes the `'w'`/`'z'` records of one diff (everything between `'s'` and `'e'`).
fn write_body<W: Write>(
    image: &Image,
    extents: &[DiffExtent],
    s: &Settings,
    out: &mut DiffWriter<W>,
    track: &mut Tracker<'_, '_>,
    stats: &mut ExportStats,
) -> Result<()> {
    let mut reader = AioReader::new(image, s.in_flight).nocache(true);
    let mut plan = Planner::new(extents, s.max_io).peekable();
    let mut pending: VecDeque<Op> = VecDeque::new();
    // Zero ops cost no memory; cap them anyway so the queue stays small.
    let pending_cap = s.in_flight.saturating_mul(4).max(16);
    let mut sink = Sink { out, merge_zeros: !s.cli_identical, pending_zero: None };
    let mut assembly: Option<Assembly> = None;

    loop {
        while pending.len() < pending_cap {
            match plan.peek() {
                None => break,
                Some(Op::Piece { .. }) if reader.is_full() => break,
                Some(_) => {}
            }
            let Some(op) = plan.next() else { break };
            if let Op::Piece { off, len, .. } = op {
                reader.submit(off, len)?;
            }
            pending.push_back(op);
        }
        let Some(op) = pending.pop_front() else { break };
        match op {
            Op::Zero { off, len } => {
                sink.zero(stats, off, len)?;
                track.advance(len)?;
            }
            Op::Piece { off, len, ext_off, ext_len, last } => {
                let data = next_read(&mut reader, image, off, len)?;
                stats.bytes_read += len as u64;
                if !s.cli_identical {
                    for (start, n, zero) in zero_runs(&data, s.granularity) {
                        let at = off + start as u64;
                        if zero {
                            sink.zero(stats, at, n as u64)?;
                        } else {
                            sink.data(stats, at, &data[start..start + n])?;
                        }
                    }
                } else if ext_len > s.cli_buffer_limit as u64 {
                    // Too large to buffer: one record per piece (same content, not byte-identical).
                    if off == ext_off {
                        stats.cli_fallbacks += 1;
                        tracing::warn!(image = %image.spec(), ext_off, ext_len,
                            "extent larger than the CLI-identical buffer limit; writing it as several records");
                    }
                    if is_all_zero(&data) {
                        sink.zero(stats, off, len as u64)?;
                    } else {
                        sink.data(stats, off, &data)?;
                    }
                } else if off == ext_off && last {
                    // The whole extent in one piece (the usual case): no copy.
                    if is_all_zero(&data) {
                        sink.zero(stats, ext_off, ext_len)?;
                    } else {
                        sink.data(stats, ext_off, &data)?;
                    }
                } else {
                    let a = assembly.get_or_insert_with(|| Assembly {
                        // Bounded by cli_buffer_limit (checked above).
                        buf: Vec::with_capacity(ext_len as usize),
                        all_zero: true,
                    });
                    a.all_zero = a.all_zero && is_all_zero(&data);
                    a.buf.extend_from_slice(&data);
                    if last {
                        if let Some(a) = assembly.take() {
                            if a.all_zero {
                                sink.zero(stats, ext_off, ext_len)?;
                            } else {
                                sink.data(stats, ext_off, &a.buf)?;
                            }
                        }
                    }
                }
                reader.recycle(data);
                track.advance(len as u64)?;
            }
        }
    }
    sink.flush_zero(stats)
}

/// The next read result, which must be `len` bytes at `off`.
pub(crate) fn next_read(reader: &mut AioReader<'_>, image: &Image, off: u64, len: usize) -> Result<Vec<u8>> {
    let Some(res) = reader.next() else {
        return Err(Error::new(ErrorKind::Other, "rbd_aio_read2", format!("no read pending for offset {off}"))
            .with_target(image.spec()));
    };
    let (at, data) = res?;
    if at != off || data.len() != len {
        return Err(Error::new(
            ErrorKind::Io,
            "rbd_aio_read2",
            format!("short read: {} of {len} bytes at offset {off} (got offset {at})", data.len()),
        )
        .with_target(image.spec()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(offset: u64, len: u64, exists: bool) -> DiffExtent {
        DiffExtent { offset, len, exists }
    }

    #[test]
    fn planner_cuts_at_max_io_boundaries() {
        let ext = [e(0, 10, false), e(6, 20, true), e(26, 0, true), e(30, 4, true)];
        let ops: Vec<Op> = Planner::new(&ext, 8).collect();
        assert_eq!(
            ops,
            vec![
                Op::Zero { off: 0, len: 10 },
                Op::Piece { off: 6, len: 2, ext_off: 6, ext_len: 20, last: false },
                Op::Piece { off: 8, len: 8, ext_off: 6, ext_len: 20, last: false },
                Op::Piece { off: 16, len: 8, ext_off: 6, ext_len: 20, last: false },
                Op::Piece { off: 24, len: 2, ext_off: 6, ext_len: 20, last: true },
                Op::Piece { off: 30, len: 2, ext_off: 30, ext_len: 4, last: false },
                Op::Piece { off: 32, len: 2, ext_off: 30, ext_len: 4, last: true },
            ]
        );
        // Pieces cover each data extent exactly.
        let covered: u64 = ops
            .iter()
            .map(|o| match o {
                Op::Piece { len, .. } => *len as u64,
                Op::Zero { .. } => 0,
            })
            .sum();
        assert_eq!(covered, 24);
    }

    #[test]
    fn planner_handles_huge_offsets() {
        let ext = [e(u64::MAX - 10, 10, true)];
        let ops: Vec<Op> = Planner::new(&ext, 4 << 20).collect();
        assert_eq!(ops.len(), 1);
        assert!(matches!(ops[0], Op::Piece { len: 10, last: true, .. }));
    }

    #[test]
    fn sink_merges_adjacent_zeros_only_in_fine_mode() {
        let mut stats = ExportStats::default();
        let mut w = DiffWriter::new_v1(Vec::new()).unwrap();
        let mut sink = Sink { out: &mut w, merge_zeros: true, pending_zero: None };
        sink.zero(&mut stats, 0, 10).unwrap();
        sink.zero(&mut stats, 10, 5).unwrap();
        sink.zero(&mut stats, 20, 5).unwrap();
        sink.data(&mut stats, 25, b"abc").unwrap();
        sink.zero(&mut stats, 28, 4).unwrap();
        sink.flush_zero(&mut stats).unwrap();
        assert_eq!((stats.zero_records, stats.write_records, stats.zero_bytes, stats.data_bytes), (3, 1, 24, 3));
        let bytes = w.end().unwrap();
        let recs: Vec<_> = crate::stream::DiffReader::new(&bytes[..]).unwrap().collect::<Result<_>>().unwrap();
        use crate::stream::Record;
        assert_eq!(
            recs,
            vec![
                Record::Zero { offset: 0, len: 15 },
                Record::Zero { offset: 20, len: 5 },
                Record::Write { offset: 25, data: b"abc".to_vec() },
                Record::Zero { offset: 28, len: 4 },
                Record::End
            ]
        );

        let mut stats = ExportStats::default();
        let mut w = DiffWriter::new_v1(Vec::new()).unwrap();
        let mut sink = Sink { out: &mut w, merge_zeros: false, pending_zero: None };
        sink.zero(&mut stats, 0, 10).unwrap();
        sink.zero(&mut stats, 10, 5).unwrap();
        assert_eq!(stats.zero_records, 2);
    }

    #[test]
    fn tracker_never_exceeds_total() {
        let mut p = Progress::none();
        let mut t = Tracker::new(&mut p, 10);
        t.advance(7).unwrap();
        t.advance(7).unwrap();
        assert_eq!(t.done, 10);
    }
}
