//! Apply an `rbd diff v1` stream to an image with the contract of `rbd import-diff`, and create
//! an image (with its snapshots) from an `rbd image v2` container, like
//! `rbd import --export-format 2`. Input is any [`std::io::Read`], a pipe included.
//!
//! ```no_run
//! use rbd_core::import::{rollback_to_from_snap, DiffImport};
//! use rbd_core::{stream::is_truncation, Image, Pool, Progress};
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! let pool = Pool::open(&cluster, "backups")?;
//! let image = Image::open(&pool, "volume-1")?; // already holds snapshot s1
//! let input = std::fs::File::open("/tmp/volume-1.s1-s2.diff")?;
//! match DiffImport::new(&image).run(input, &mut Progress::none()) {
//!     Ok(stats) => println!("created {:?}", stats.snapshots),
//!     Err(e) if is_truncation(&e) => {
//!         // Part of the diff landed on the head: bring it back to s1, then retry.
//!         rollback_to_from_snap(&image, "s1", &mut Progress::none())?;
//!     }
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Contract (Pacific `Import.cc`)
//!
//! * The banner must be `"rbd diff v1\n"`.
//! * `'f'`: the start snapshot must exist on the image, otherwise
//!   [`ErrorKind::InvalidArgument`] (the CLI's `EINVAL`) naming it. `'t'`: the end snapshot must
//!   not exist, otherwise [`ErrorKind::Exists`]. Producers write these records first, so these
//!   errors come before anything is written.
//! * `'s'`: the image is resized to that size, growing **or shrinking**, as the CLI does.
//! * `'w'`: the data is split into `sparse_size` blocks (default 4096, `--sparse-size`); runs of
//!   all-zero blocks become `rbd_aio_write_zeroes`, the rest `rbd_aio_write2` with
//!   `FADVISE_NOCACHE`. `'z'`: `rbd_aio_write_zeroes`. A record that reaches past the current
//!   image size is rejected as [`ErrorKind::Malformed`] (librbd would fail it anyway).
//! * `'e'`: all in-flight I/O is drained and flushed, then the end snapshot is created (and
//!   protected when a v2 `'p'` record said so).
//! * Malformed input is an [`ErrorKind::Malformed`] error whose message names the byte offset;
//!   input never panics the importer. A stream that ends early is reported as such
//!   ([`crate::stream::is_truncation`]).
//!
//! Up to [`in_flight`](DiffImport::in_flight) writes are outstanding at once (default 16), also
//! when the input is a pipe (the CLI drops to one write at a time on stdin).
//!
//! # Not atomic
//!
//! An import writes to the image head as it reads. If it fails part-way (truncated or corrupt
//! stream, cluster error, cancellation), the writes already applied stay on the head and no end
//! snapshot is created. The head is then neither the from-snapshot nor the to-snapshot: roll it
//! back with [`rollback_to_from_snap`] (or re-run a complete import of the same diff, which
//! rewrites the same ranges) before relying on it.

use std::io::{BufReader, Read};
use std::time::{Duration, Instant};

use crate::aio::AioWriter;
use crate::error::{Error, ErrorKind, Result};
use crate::image::{fadvise, Image};
use crate::options::{Features, ImageOptions};
use crate::pool::Pool;
use crate::progress::Progress;
use crate::snapshot::SnapNamespace;
use crate::stream::{
    sparse_extents, DiffReader, DiffVersion, ImageExportReader, Record, DEFAULT_MAX_CHUNK, RBD_DEFAULT_SPARSE_SIZE,
};

/// Default number of writes in flight.
pub const DEFAULT_IN_FLIGHT: usize = 16;

/// Input buffer size.
const IN_BUF: usize = 1 << 20;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportStats {
    /// Diff streams applied (1 for a v1 diff; snapshots + 1 for an image v2 container).
    pub diffs: u64,
    /// The `'f'` record of the (first) diff.
    pub from_snap: Option<String>,
    /// Snapshots created (the `'t'` record of each diff), in order.
    pub snapshots: Vec<String>,
    /// The subset of `snapshots` that was protected (v2 `'p'` records).
    pub protected: Vec<String>,
    /// The image size after the import (the last `'s'` record), if the stream had one.
    pub size: Option<u64>,
    /// Records decoded (a `'w'` record longer than 4 MiB counts once per 4 MiB chunk).
    pub records: u64,
    /// Bytes written with `rbd_aio_write2`.
    pub bytes_written: u64,
    /// Bytes zeroed with `rbd_aio_write_zeroes` (`'z'` records and zero blocks of `'w'` records).
    pub bytes_zeroed: u64,
    /// Bytes of input consumed.
    pub stream_bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// How a diff is applied.
#[derive(Debug, Clone, Copy)]
struct Settings {
    in_flight: usize,
    sparse_size: usize,
    expected_len: Option<u64>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { in_flight: DEFAULT_IN_FLIGHT, sparse_size: RBD_DEFAULT_SPARSE_SIZE, expected_len: None }
    }
}

/// Application of one `rbd diff v1` stream to an open image (`rbd import-diff`).
///
/// See the [module docs](self) for the contract; `image` must be opened read-write at its head.
///
/// ```no_run
/// # use rbd_core::{import::DiffImport, Image, Pool, Progress};
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// # let pool = Pool::open(&cluster, "backups")?;
/// let image = Image::open(&pool, "volume-1")?;
/// // From a pipe: `rbd export-diff ... - | this program`.
/// let stats = DiffImport::new(&image).in_flight(32).run(std::io::stdin().lock(), &mut Progress::none())?;
/// eprintln!("{} bytes written, snapshots {:?}", stats.bytes_written, stats.snapshots);
/// # Ok::<(), rbd_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DiffImport<'a> {
    image: &'a Image,
    settings: Settings,
}

impl<'a> DiffImport<'a> {
    /// An import into `image` with the CLI's defaults (sparse size 4096) and 16 writes in flight.
    pub fn new(image: &'a Image) -> DiffImport<'a> {
        DiffImport { image, settings: Settings::default() }
    }

    /// Writes in flight at once (at least 1; default [`DEFAULT_IN_FLIGHT`]).
    pub fn in_flight(&mut self, n: usize) -> &mut Self {
        self.settings.in_flight = n.max(1);
        self
    }

    /// Block size at which `'w'` payloads are checked for zeros (`--sparse-size`; default 4096;
    /// 0 writes every payload as data).
    pub fn sparse_size(&mut self, bytes: usize) -> &mut Self {
        self.settings.sparse_size = bytes;
        self
    }

    /// The input length, when known (a file's size), used as the progress total. Without it the
    /// total grows with the input.
    pub fn expected_len(&mut self, len: Option<u64>) -> &mut Self {
        self.settings.expected_len = len;
        self
    }

    /// Reads the stream from `input` (wrapped in a 1 MiB [`BufReader`]) and applies it.
    ///
    /// Progress reports `(input bytes consumed, expected length)`; a `Break` or a cancelled token
    /// stops the import with [`ErrorKind::Cancelled`] (the head is then partly written: see the
    /// [module docs](self#not-atomic)).
    ///
    /// Uses `rbd_snap_exists`, `rbd_resize2`, `rbd_aio_write2`, `rbd_aio_write_zeroes`,
    /// `rbd_aio_flush`, `rbd_snap_create2` and `rbd_snap_protect`.
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::InvalidArgument`]: the image is not open read-write at its head, or the
    ///   `'f'` snapshot does not exist on it;
    /// * [`ErrorKind::Exists`]: the `'t'` snapshot already exists;
    /// * [`ErrorKind::Malformed`]: not a v1 stream, a format error, a record past the end of the
    ///   image, or a truncated stream ([`crate::stream::is_truncation`]); the message names the
    ///   byte offset;
    /// * [`ErrorKind::Cancelled`]; librbd write, resize and snapshot errors; the input's own
    ///   error kind if reading fails.
    pub fn run<R: Read>(&self, input: R, progress: &mut Progress<'_>) -> Result<ImportStats> {
        let image = self.image;
        let _s = tracing::debug_span!("import_diff", pool = %image.pool().name(), image = %image.name()).entered();
        let t0 = Instant::now();
        check_writable_head(image)?;
        let mut reader =
            DiffReader::new(BufReader::with_capacity(IN_BUF, input)).map_err(|e| e.with_target(image.spec()))?;
        if reader.version() != DiffVersion::V1 {
            return Err(Error::new(
                ErrorKind::Malformed,
                crate::stream::STREAM_OP,
                "bad diff banner at byte 0: expected \"rbd diff v1\\n\" (rbd import-diff accepts only v1), found \
                 \"rbd diff v2\\n\"",
            )
            .with_target(image.spec()));
        }
        reader.set_max_chunk(chunk_for(self.settings.sparse_size));
        let mut stats = ImportStats::default();
        let mut track = StreamTracker { progress, expected: self.settings.expected_len };
        apply_diff(image, &mut reader, &self.settings, &mut track, &mut stats)?;
        stats.stream_bytes = reader.position();
        stats.elapsed = t0.elapsed();
        Ok(stats)
    }
}

/// Creation of a new image from an `rbd image v2` container (`rbd import --export-format 2`):
/// the image gets the container's order, features, striping and metadata, then every diff is
/// applied in turn, recreating each snapshot (and its protection) on the way.
///
/// Options set with [`options`](Self::options) win over the container's header, as the CLI's
/// `--order`/`--image-feature`/... do. On failure the half-built image is removed (snapshots
/// unprotected and removed first), as the CLI does.
///
/// ```no_run
/// # use rbd_core::{import::ImageImport, Pool, Progress};
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// # let pool = Pool::open(&cluster, "backups")?;
/// let input = std::fs::File::open("/tmp/volume-1.exp2")?;
/// let stats = ImageImport::new(&pool, "volume-1-restored").run(input, &mut Progress::none())?;
/// println!("snapshots {:?}", stats.snapshots);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ImageImport<'a> {
    pool: &'a Pool,
    name: String,
    options: ImageOptions,
    settings: Settings,
}

impl<'a> ImageImport<'a> {
    /// An import creating `pool/name`.
    pub fn new(pool: &'a Pool, name: &str) -> ImageImport<'a> {
        ImageImport { pool, name: name.to_string(), options: ImageOptions::new(), settings: Settings::default() }
    }

    /// Creation options; order, features and striping set here override the container's.
    pub fn options(&mut self, opts: &ImageOptions) -> &mut Self {
        self.options = opts.clone();
        self
    }

    /// Writes in flight at once (at least 1; default [`DEFAULT_IN_FLIGHT`]).
    pub fn in_flight(&mut self, n: usize) -> &mut Self {
        self.settings.in_flight = n.max(1);
        self
    }

    /// `--sparse-size` (default 4096; 0 disables zero detection).
    pub fn sparse_size(&mut self, bytes: usize) -> &mut Self {
        self.settings.sparse_size = bytes;
        self
    }

    /// The input length when known, for progress.
    pub fn expected_len(&mut self, len: Option<u64>) -> &mut Self {
        self.settings.expected_len = len;
        self
    }

    /// Reads the container from `input`, creates the image and fills it.
    ///
    /// Uses `rbd_create4`, `rbd_open`, `rbd_metadata_set`, then what [`DiffImport::run`] uses
    /// for each diff; on failure `rbd_snap_unprotect`, `rbd_snap_remove` and `rbd_remove`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Exists`] when the image already exists (nothing is read or created);
    /// [`ErrorKind::Malformed`] for a bad or truncated container; the errors of
    /// [`DiffImport::run`] for each diff; librbd create/open/metadata errors.
    pub fn run<R: Read>(&self, input: R, progress: &mut Progress<'_>) -> Result<ImportStats> {
        let pool = self.pool;
        let _s = tracing::debug_span!("import_image_v2", pool = %pool.name(), image = %self.name).entered();
        let t0 = Instant::now();
        Pool::validate_image_name(&self.name)?;
        if pool.image_exists(&self.name)? {
            return Err(Error::new(
                ErrorKind::Exists,
                "import_image",
                format!("image {} already exists", pool.spec(&self.name, None)),
            )
            .with_target(pool.spec(&self.name, None)));
        }
        let mut reader = ImageExportReader::new(BufReader::with_capacity(IN_BUF, input))?
            .with_max_chunk(chunk_for(self.settings.sparse_size));
        let header = reader.header().clone();
        let mut opts = self.options.clone();
        if opts.get_order().is_none() {
            if let Some(order) = header.order {
                let order = u8::try_from(order).map_err(|_| {
                    Error::new(ErrorKind::Malformed, "import_image", format!("object order {order} out of range"))
                })?;
                opts.order(order);
            }
        }
        if opts.get_features().is_none() {
            if let Some(f) = header.features {
                opts.features(Features(f));
            }
        }
        if opts.get_stripe_unit().is_none() && opts.get_stripe_count().is_none() {
            if let (Some(unit), Some(count)) = (header.stripe_unit, header.stripe_count) {
                opts.stripe(unit, count);
            }
        }
        pool.create_image(&self.name, 0, &opts)?;

        let mut stats = ImportStats::default();
        let mut track = StreamTracker { progress, expected: self.settings.expected_len };
        let res = self.fill(&mut reader, &header.metadata, &mut track, &mut stats);
        if let Err(e) = res {
            remove_partial_image(pool, &self.name);
            return Err(e);
        }
        stats.stream_bytes = reader.position();
        stats.elapsed = t0.elapsed();
        Ok(stats)
    }

    fn fill<R: Read>(
        &self,
        reader: &mut ImageExportReader<R>,
        metadata: &[(String, String)],
        track: &mut StreamTracker<'_, '_>,
        stats: &mut ImportStats,
    ) -> Result<()> {
        let image = Image::open(self.pool, &self.name)?;
        for (k, v) in metadata {
            image.metadata_set(k, v)?;
        }
        while let Some(mut diff) = reader.next_diff()? {
            apply_diff(&image, &mut diff, &self.settings, track, stats)?;
        }
        image.close()
    }
}

/// Rolls the head of `image` back to `from_snap`: the recovery for an import (or transfer) that
/// failed part-way, leaving the head between the from- and to-snapshot (see the
/// [module docs](self#not-atomic)). Every object is rewritten; progress is reported once per
/// object and may cancel (leaving the head partly rolled back; run it again).
///
/// Wraps `rbd_snap_rollback_with_progress` after checking with `rbd_snap_exists`.
///
/// # Errors
///
/// [`ErrorKind::InvalidArgument`] when the image is not open read-write at its head;
/// [`ErrorKind::NotFound`] when the snapshot does not exist; [`ErrorKind::ReadOnly`] when
/// another client holds the exclusive lock; [`ErrorKind::Cancelled`].
pub fn rollback_to_from_snap(image: &Image, from_snap: &str, progress: &mut Progress<'_>) -> Result<()> {
    let _s = tracing::debug_span!("rollback_to_from_snap", pool = %image.pool().name(), image = %image.name(),
        snap = from_snap)
    .entered();
    check_writable_head(image)?;
    if !image.snap_exists(from_snap)? {
        return Err(Error::new(
            ErrorKind::NotFound,
            "rollback_to_from_snap",
            format!("snapshot '{from_snap}' does not exist on {}; nothing to roll back to", image.spec()),
        )
        .with_target(image.spec()));
    }
    image.snap_rollback_with_progress(from_snap, progress)
}

fn check_writable_head(image: &Image) -> Result<()> {
    if image.is_read_only() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "import_diff",
            "the image must be opened read-write at its head (Image::open)",
        )
        .with_target(image.spec()));
    }
    Ok(())
}

/// The reader's chunk size: 4 MiB rounded to a multiple of the sparse size, so that sparse
/// blocks line up with the record start exactly as the CLI's do.
fn chunk_for(sparse_size: usize) -> usize {
    if sparse_size == 0 {
        DEFAULT_MAX_CHUNK
    } else {
        DEFAULT_MAX_CHUNK.div_ceil(sparse_size).saturating_mul(sparse_size)
    }
}

/// Progress over input bytes.
struct StreamTracker<'p, 'a> {
    progress: &'p mut Progress<'a>,
    expected: Option<u64>,
}

impl StreamTracker<'_, '_> {
    fn report(&mut self, pos: u64) -> Result<()> {
        let total = self.expected.unwrap_or(0).max(pos);
        self.progress.report(pos, total)
    }
}

/// Best-effort removal of an image a failed v2 import created.
fn remove_partial_image(pool: &Pool, name: &str) {
    let res = (|| -> Result<()> {
        let image = Image::open(pool, name)?;
        for s in image.snapshots()? {
            if s.namespace != SnapNamespace::User {
                continue;
            }
            if s.protected == Some(true) {
                image.snap_unprotect(&s.name)?;
            }
            image.snap_remove(&s.name)?;
        }
        image.close()?;
        pool.remove_image(name)
    })();
    if let Err(e) = res {
        tracing::warn!(pool = %pool.name(), image = name, error = %e, "could not remove the partially imported image");
    }
}

/// Applies one diff stream (v1, or v2 inside a container) to `image`.
fn apply_diff<R: Read>(
    image: &Image,
    reader: &mut DiffReader<R>,
    settings: &Settings,
    track: &mut StreamTracker<'_, '_>,
    stats: &mut ImportStats,
) -> Result<()> {
    let mut writer = AioWriter::new(image, settings.in_flight).with_flags(fadvise::NOCACHE);
    let mut state = ApplyState { cur_size: image.size()?, to_snap: None, protect: false, wrote: false };
    let res = apply_records(image, reader, settings, track, stats, &mut writer, &mut state);
    if let Err(e) = res {
        // Wait for what is in flight so the image is quiet when the caller sees the error; the
        // first error is the one reported.
        let _ = writer.drain();
        return Err(e.with_target(image.spec()));
    }
    let ws = writer.finish()?;
    stats.bytes_written += ws.bytes_written;
    stats.bytes_zeroed += ws.bytes_zeroed;
    stats.diffs += 1;
    if let Some(t) = state.to_snap {
        image.snap_create(&t)?;
        if state.protect {
            image.snap_protect(&t)?;
            stats.protected.push(t.clone());
        }
        stats.snapshots.push(t);
    }
    Ok(())
}

struct ApplyState {
    cur_size: u64,
    to_snap: Option<String>,
    protect: bool,
    /// Some data or zero record was submitted.
    wrote: bool,
}

fn apply_records<R: Read>(
    image: &Image,
    reader: &mut DiffReader<R>,
    settings: &Settings,
    track: &mut StreamTracker<'_, '_>,
    stats: &mut ImportStats,
    writer: &mut AioWriter<'_>,
    st: &mut ApplyState,
) -> Result<()> {
    loop {
        let at = DiffReader::position(reader);
        let Some(rec) = reader.next_record()? else { return Ok(()) };
        stats.records += 1;
        match rec {
            Record::FromSnap(name) => {
                if !image.snap_exists(&name)? {
                    let what =
                        if st.wrote { "; records before it were already applied" } else { "; nothing was written" };
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "import_diff",
                        format!(
                            "start snapshot '{name}' (the 'f' record at byte {at}) does not exist on {}{what}; \
                             apply the earlier diffs first",
                            image.spec()
                        ),
                    ));
                }
                if stats.from_snap.is_none() {
                    stats.from_snap = Some(name);
                }
            }
            Record::ToSnap(name) => {
                if image.snap_exists(&name)? {
                    return Err(Error::new(
                        ErrorKind::Exists,
                        "import_diff",
                        format!(
                            "end snapshot '{name}' (the 't' record at byte {at}) already exists on {}",
                            image.spec()
                        ),
                    ));
                }
                st.to_snap = Some(name);
            }
            Record::Size(size) => {
                writer.drain()?;
                if size != st.cur_size {
                    image.resize(size, true)?;
                    st.cur_size = size;
                }
                stats.size = Some(size);
            }
            Record::Protected(p) => st.protect = p,
            Record::Write { offset, data } => {
                check_extent(st.cur_size, 'w', at, offset, data.len() as u64)?;
                st.wrote = true;
                write_sparse(writer, offset, data, settings.sparse_size)?;
            }
            Record::Zero { offset, len } => {
                check_extent(st.cur_size, 'z', at, offset, len)?;
                st.wrote = true;
                writer.write_zeroes(offset, len)?;
            }
            Record::Unknown { tag, len } => {
                tracing::debug!(tag, len, at, "skipped an unknown diff v2 record");
            }
            Record::End => return track.report(DiffReader::position(reader)),
        }
        track.report(DiffReader::position(reader))?;
    }
}

/// A `'w'`/`'z'` record must lie inside the image.
fn check_extent(size: u64, tag: char, at: u64, offset: u64, len: u64) -> Result<()> {
    if offset.saturating_add(len) > size {
        return Err(Error::new(
            ErrorKind::Malformed,
            crate::stream::STREAM_OP,
            format!(
                "'{tag}' record at byte {at} covers {len} bytes at offset {offset}, past the end of the image \
                 ({size} bytes)"
            ),
        ));
    }
    Ok(())
}

/// Writes `data` at `offset`, all-zero `sparse_size` blocks as zero writes (`calc_sparse_extent`).
fn write_sparse(writer: &mut AioWriter<'_>, offset: u64, data: Vec<u8>, sparse_size: usize) -> Result<()> {
    let runs: Vec<_> = sparse_extents(&data, sparse_size).collect();
    if let [only] = runs.as_slice() {
        if !only.zero {
            // All data: hand the buffer over without copying.
            return writer.write(offset, data);
        }
    }
    for r in runs {
        let at = offset + r.offset as u64;
        if r.zero {
            writer.write_zeroes(at, r.len as u64)?;
        } else {
            let mut buf = writer.buffer();
            buf.extend_from_slice(&data[r.offset..r.offset + r.len]);
            writer.write(at, buf)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_is_a_multiple_of_the_sparse_size() {
        assert_eq!(chunk_for(4096), DEFAULT_MAX_CHUNK);
        assert_eq!(chunk_for(0), DEFAULT_MAX_CHUNK);
        assert_eq!(chunk_for(3000) % 3000, 0);
        assert!(chunk_for(3000) >= DEFAULT_MAX_CHUNK);
    }

    #[test]
    fn extents_past_the_end_are_malformed() {
        assert!(check_extent(100, 'w', 12, 90, 10).is_ok());
        let e = check_extent(100, 'z', 12, 95, 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed);
        assert!(e.to_string().contains("at byte 12"), "{e}");
        assert!(check_extent(100, 'w', 12, u64::MAX, 10).is_err());
    }
}
