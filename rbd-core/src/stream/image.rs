//! The image v2 container written by `rbd export --export-format 2`: a header, then N diff-v2
//! streams.

use super::reader::{inside, Saved, Src, State};
use super::{
    malformed, show_tag, truncated, writer_misuse, DiffReader, DiffVersion, DiffWriter, DEFAULT_MAX_CHUNK,
    IMAGE_BANNER_V2, IMAGE_DIFFS_BANNER_V2, IMAGE_TAG_END, IMAGE_TAG_FEATURES, IMAGE_TAG_META, IMAGE_TAG_ORDER,
    IMAGE_TAG_STRIPE_COUNT, IMAGE_TAG_STRIPE_UNIT, MAX_METADATA_ENTRY_LEN,
};
use crate::error::Result;
use std::fmt;
use std::io::{Read, Write};
use std::ops::{Deref, DerefMut};

/// The image properties at the start of an image v2 export.
///
/// Each property is `None` when its record is absent; `rbd import` then uses its own default
/// (or the `--order`/`--image-feature`/... option). Pacific's `rbd export` always writes all four.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageHeader {
    /// `'O'`: object size as a power of two (22 = 4 MiB).
    pub order: Option<u64>,
    /// `'T'`: feature bits (see [`Features`](crate::Features)).
    pub features: Option<u64>,
    /// `'U'`: stripe unit in bytes.
    pub stripe_unit: Option<u64>,
    /// `'C'`: stripe count.
    pub stripe_count: Option<u64>,
    /// `'M'`: image metadata (`rbd image-meta`) in stream order. `rbd import` applies them with
    /// `metadata_set`; for a repeated key the last value wins there.
    pub metadata: Vec<(String, String)>,
}

/// Streaming reader for an image v2 export (`rbd export --export-format 2`).
///
/// [`new`](Self::new) reads and checks everything up to the diff count: `"rbd image v2\n"`, the
/// header records up to `'E'` (unknown tags are skipped by their length, as `rbd import` does),
/// `"rbd image diffs v2\n"` and le64 N. [`next_diff`](Self::next_diff) then hands out the N
/// diff-v2 streams one at a time: the first has no `'f'`, the last (snapshot → HEAD) has no
/// `'t'`.
///
/// ```
/// use rbd_core::stream::{DiffWriter, ImageExportReader, ImageExportWriter, ImageHeader, Record};
///
/// let header = ImageHeader { order: Some(22), ..ImageHeader::default() };
/// let mut w = ImageExportWriter::new(Vec::new(), &header)?;
/// w.begin_diffs(1)?;
/// let mut d = w.next_diff()?;
/// d.size(1 << 20)?;
/// d.write(0, b"data")?;
/// d.end()?;
/// let bytes = w.finish()?;
///
/// let mut r = ImageExportReader::new(&bytes[..])?;
/// assert_eq!(r.header().order, Some(22));
/// assert_eq!(r.diff_count(), 1);
/// while let Some(mut diff) = r.next_diff()? {
///     while let Some(rec) = diff.next_record()? {
///         if let Record::Write { offset, data } = rec {
///             assert_eq!((offset, &data[..]), (0, &b"data"[..]));
///         }
///     }
/// }
/// # Ok::<(), rbd_core::Error>(())
/// ```
pub struct ImageExportReader<R> {
    src: Src<R>,
    header: ImageHeader,
    count: u64,
    next_index: u64,
    /// State of the diff handed out last (a failed state until its guard is dropped).
    current: Option<Saved>,
    max_chunk: usize,
    failed: bool,
}

impl<R> fmt::Debug for ImageExportReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageExportReader")
            .field("header", &self.header)
            .field("diff_count", &self.count)
            .field("next_index", &self.next_index)
            .field("position", &self.src.pos)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<R: Read> ImageExportReader<R> {
    /// Reads the container header and the diff count.
    ///
    /// Wrap unbuffered sources in a [`std::io::BufReader`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Malformed`](crate::ErrorKind::Malformed) (`at byte N` in the message) for a
    /// wrong banner, a stream that ends early ([`is_truncation`](super::is_truncation)), a length
    /// field that does not match an `'O'`/`'T'`/`'U'`/`'C'`/`'M'` payload, a metadata entry longer
    /// than [`MAX_METADATA_ENTRY_LEN`] or not UTF-8; the reader's own error kind (usually `Io`) if
    /// reading fails.
    pub fn new(reader: R) -> Result<Self> {
        let mut src = Src { inner: reader, pos: 0 };
        src.banner(&[IMAGE_BANNER_V2], "image export")?;
        let mut header = ImageHeader::default();
        loop {
            let start = src.pos;
            let Some(tag) = src.tag()? else {
                return Err(truncated(start, "before the 'E' (end of image header) record"));
            };
            if tag == IMAGE_TAG_END {
                break;
            }
            let ctx = move || inside(tag, start);
            let len = src.le64(&ctx)?;
            let mismatch = |payload: &str| {
                malformed(format!(
                    "{} image header record at byte {start}: length field {len} does not match its payload ({payload})",
                    show_tag(tag)
                ))
            };
            let slot = match tag {
                IMAGE_TAG_ORDER => Some(&mut header.order),
                IMAGE_TAG_FEATURES => Some(&mut header.features),
                IMAGE_TAG_STRIPE_UNIT => Some(&mut header.stripe_unit),
                IMAGE_TAG_STRIPE_COUNT => Some(&mut header.stripe_count),
                _ => None,
            };
            if let Some(slot) = slot {
                if len != 8 {
                    return Err(mismatch("8 bytes"));
                }
                let v = src.le64(&ctx)?;
                // Like `rbd import`, the first occurrence wins.
                slot.get_or_insert(v);
            } else if tag == IMAGE_TAG_META {
                if len < 8 {
                    return Err(mismatch("at least 8 bytes"));
                }
                if len - 8 > MAX_METADATA_ENTRY_LEN {
                    return Err(malformed(format!(
                        "'M' image header record at byte {start}: metadata entry of {} bytes is longer than the \
                         {MAX_METADATA_ENTRY_LEN}-byte limit",
                        len - 8
                    )));
                }
                let klen = u64::from(src.le32(&ctx)?);
                if klen > len - 8 {
                    return Err(mismatch(&format!("8 + {klen} key bytes + value")));
                }
                let key = src.string(klen, "metadata key", &ctx)?;
                let vlen = u64::from(src.le32(&ctx)?);
                if 8 + klen + vlen != len {
                    return Err(mismatch(&format!("8 + {klen} key bytes + {vlen} value bytes")));
                }
                let value = src.string(vlen, "metadata value", &ctx)?;
                header.metadata.push((key, value));
            } else {
                src.skip(len, &ctx)?;
            }
        }
        src.banner(&[IMAGE_DIFFS_BANNER_V2], "image diffs")?;
        let at = src.pos;
        let count = src.le64(&|| format!("inside the diff count at byte {at}"))?;
        Ok(ImageExportReader {
            src,
            header,
            count,
            next_index: 0,
            current: None,
            max_chunk: DEFAULT_MAX_CHUNK,
            failed: false,
        })
    }

    /// The image properties and metadata.
    pub fn header(&self) -> &ImageHeader {
        &self.header
    }

    /// N, the number of diff streams (snapshots + 1 for what the `rbd` tool writes).
    pub fn diff_count(&self) -> u64 {
        self.count
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.src.pos
    }

    /// Sets [`DiffReader::max_chunk`] for the diffs handed out from now on.
    pub fn set_max_chunk(&mut self, max_chunk: usize) {
        self.max_chunk = max_chunk.max(1);
    }

    /// Builder form of [`set_max_chunk`](Self::set_max_chunk).
    #[must_use]
    pub fn with_max_chunk(mut self, max_chunk: usize) -> Self {
        self.set_max_chunk(max_chunk);
        self
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.src.inner
    }

    /// Gives back the underlying reader, positioned after the last byte consumed (inside a diff
    /// if the last one handed out was not read to its end).
    pub fn into_inner(self) -> R {
        self.src.inner
    }

    /// The next diff stream, or `None` after the N-th.
    ///
    /// The returned [`ImageDiff`] dereferences to a v2 [`DiffReader`]. Whatever of the previous
    /// diff was left unread is read and discarded (and validated) first, so diffs may be skipped
    /// by simply dropping them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Malformed`](crate::ErrorKind::Malformed) if the rest of the previous diff is
    /// malformed or failed, or the next one does not start with `"rbd diff v2\n"`; the reader's
    /// own error kind if reading fails. After an error every later call fails too.
    pub fn next_diff(&mut self) -> Result<Option<ImageDiff<'_, R>>> {
        if self.failed {
            return Err(malformed(format!(
                "the image export stream already failed; nothing more can be read (at byte {})",
                self.src.pos
            )));
        }
        match self.finish_current() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        }
        let ImageExportReader { src, current, max_chunk, next_index, failed, .. } = self;
        let reader = match DiffReader::open_at(&mut src.inner, src.pos, Some(DiffVersion::V2)) {
            Ok(r) => r.with_max_chunk(*max_chunk),
            Err(e) => {
                *failed = true;
                return Err(e);
            }
        };
        let index = *next_index;
        *next_index += 1;
        // If the guard is leaked instead of dropped, the next call reports a failure instead of
        // parsing from the middle of a diff.
        *current = Some(Saved { state: State::Failed, ..reader.save() });
        Ok(Some(ImageDiff { reader, pos_out: &mut src.pos, saved_out: current, index }))
    }

    /// Reads the rest of the diff handed out last; true if another diff follows.
    fn finish_current(&mut self) -> Result<bool> {
        if let Some(saved) = self.current.take() {
            let mut prev = DiffReader::resume(&mut self.src.inner, self.src.pos, saved);
            let res = prev.skip_to_end();
            self.src.pos = prev.src.pos;
            res?;
        }
        Ok(self.next_index < self.count)
    }
}

/// One diff-v2 stream inside an [`ImageExportReader`]; dereferences to a [`DiffReader`].
///
/// Iterate with `diff.by_ref()` or `&mut *diff` (it is deliberately not an `Iterator` itself, so
/// that `Iterator` methods do not shadow [`DiffReader::position`] and friends). Dropping it early
/// is fine: the container skips what is left before the next diff.
pub struct ImageDiff<'a, R: Read> {
    reader: DiffReader<&'a mut R>,
    pos_out: &'a mut u64,
    saved_out: &'a mut Option<Saved>,
    index: u64,
}

impl<R: Read> ImageDiff<'_, R> {
    /// Which diff this is, from 0 (the first snapshot) to N − 1 (last snapshot → HEAD).
    pub fn index(&self) -> u64 {
        self.index
    }
}

impl<R: Read> fmt::Debug for ImageDiff<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageDiff").field("index", &self.index).field("reader", &self.reader).finish()
    }
}

impl<'a, R: Read> Deref for ImageDiff<'a, R> {
    type Target = DiffReader<&'a mut R>;

    fn deref(&self) -> &Self::Target {
        &self.reader
    }
}

impl<'a, R: Read> DerefMut for ImageDiff<'a, R> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.reader
    }
}

impl<R: Read> Drop for ImageDiff<'_, R> {
    fn drop(&mut self) {
        *self.pos_out = self.reader.src.pos;
        *self.saved_out = Some(self.reader.save());
    }
}

/// Streaming writer for an image v2 export, byte-identical to `rbd export --export-format 2`.
///
/// Call order: [`new`](Self::new) (banner and header), [`begin_diffs`](Self::begin_diffs) (the
/// diff count N), N × [`next_diff`](Self::next_diff) … [`ImageDiffWriter::end`], then
/// [`finish`](Self::finish). See [`ImageExportReader`] for an example.
pub struct ImageExportWriter<W: Write> {
    inner: W,
    written: u64,
    total: Option<u64>,
    done: u64,
    /// A diff was handed out and has not been ended.
    open: bool,
    broken: bool,
}

impl<W: Write> fmt::Debug for ImageExportWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageExportWriter")
            .field("bytes_written", &self.written)
            .field("diff_count", &self.total)
            .field("diffs_done", &self.done)
            .field("open", &self.open)
            .field("broken", &self.broken)
            .finish()
    }
}

impl<W: Write> ImageExportWriter<W> {
    /// Writes `"rbd image v2\n"`, the header records present in `header` (`'O'`, `'T'`, `'U'`,
    /// `'C'` in that order, then one `'M'` per metadata entry) and `'E'`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if a metadata key or value
    /// is longer than u32::MAX bytes; the writer's error kind (usually `Io`) if writing fails.
    pub fn new(writer: W, header: &ImageHeader) -> Result<Self> {
        let mut w = ImageExportWriter { inner: writer, written: 0, total: None, done: 0, open: false, broken: false };
        w.put(IMAGE_BANNER_V2)?;
        for (tag, value) in [
            (IMAGE_TAG_ORDER, header.order),
            (IMAGE_TAG_FEATURES, header.features),
            (IMAGE_TAG_STRIPE_UNIT, header.stripe_unit),
            (IMAGE_TAG_STRIPE_COUNT, header.stripe_count),
        ] {
            if let Some(v) = value {
                let mut rec = [0u8; 17];
                rec[0] = tag;
                rec[1..9].copy_from_slice(&8u64.to_le_bytes());
                rec[9..].copy_from_slice(&v.to_le_bytes());
                w.put(&rec)?;
            }
        }
        for (key, value) in &header.metadata {
            let (Ok(klen), Ok(vlen)) = (u32::try_from(key.len()), u32::try_from(value.len())) else {
                return Err(writer_misuse(format!("metadata entry {key:?} is too long to encode")));
            };
            let mut rec = [0u8; 13];
            rec[0] = IMAGE_TAG_META;
            rec[1..9].copy_from_slice(&(8 + u64::from(klen) + u64::from(vlen)).to_le_bytes());
            rec[9..].copy_from_slice(&klen.to_le_bytes());
            w.put(&rec)?;
            w.put(key.as_bytes())?;
            w.put(&vlen.to_le_bytes())?;
            w.put(value.as_bytes())?;
        }
        w.put(&[IMAGE_TAG_END])?;
        Ok(w)
    }

    /// Writes `"rbd image diffs v2\n"` and the number of diff streams that follow.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if called twice or after a
    /// failed write; the writer's error kind if writing fails.
    pub fn begin_diffs(&mut self, count: u64) -> Result<()> {
        self.check_usable()?;
        if self.total.is_some() {
            return Err(writer_misuse("begin_diffs was already called"));
        }
        self.put(IMAGE_DIFFS_BANNER_V2)?;
        self.put(&count.to_le_bytes())?;
        self.total = Some(count);
        Ok(())
    }

    /// Starts the next diff-v2 stream (writes its banner). Write its records through the returned
    /// guard, which dereferences to a [`DiffWriter`], then call [`ImageDiffWriter::end`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) before
    /// [`begin_diffs`](Self::begin_diffs), when all N diffs were written, when the previous diff
    /// was dropped without `end`, or after a failed write; the writer's error kind if writing fails.
    pub fn next_diff(&mut self) -> Result<ImageDiffWriter<'_, W>> {
        self.check_usable()?;
        let Some(total) = self.total else {
            return Err(writer_misuse("call begin_diffs before writing diffs"));
        };
        if self.done >= total {
            return Err(writer_misuse(format!("all {total} diffs announced by begin_diffs were written")));
        }
        self.open = true;
        let ImageExportWriter { inner, written, done, open, broken, .. } = self;
        let writer = match DiffWriter::new(inner, DiffVersion::V2) {
            Ok(w) => w,
            Err(e) => {
                *broken = true;
                return Err(e);
            }
        };
        Ok(ImageDiffWriter { writer, written_out: written, done_out: done, open_out: open, broken_out: broken })
    }

    /// Bytes written so far (including diffs in progress only once they are ended or dropped).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Checks that all N diffs were written and ended, flushes, and returns the writer.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if fewer diffs than
    /// announced were written (or `begin_diffs` was never called) or a write failed; the writer's
    /// error kind if flushing fails.
    pub fn finish(mut self) -> Result<W> {
        self.check_usable()?;
        match self.total {
            None => return Err(writer_misuse("begin_diffs was never called")),
            Some(total) if total != self.done => {
                return Err(writer_misuse(format!("only {} of {total} announced diffs were written", self.done)))
            }
            Some(_) => {}
        }
        if let Err(e) = self.inner.flush() {
            return Err(super::io_failure(self.written, "flush", e));
        }
        Ok(self.inner)
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(writer_misuse(format!(
                "an earlier write failed (at byte {}); the image export is incomplete",
                self.written
            )));
        }
        if self.open {
            return Err(writer_misuse(format!(
                "diff {} was dropped without end(); the image export is incomplete",
                self.done
            )));
        }
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.inner.write_all(bytes) {
            self.broken = true;
            return Err(super::io_failure(self.written, "write", e));
        }
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// One diff-v2 stream being written into an [`ImageExportWriter`]; dereferences to a
/// [`DiffWriter`]. Finish it with [`end`](Self::end).
pub struct ImageDiffWriter<'a, W: Write> {
    writer: DiffWriter<&'a mut W>,
    written_out: &'a mut u64,
    done_out: &'a mut u64,
    open_out: &'a mut bool,
    broken_out: &'a mut bool,
}

impl<W: Write> ImageDiffWriter<'_, W> {
    /// Writes `'e'` and ends this diff (nothing is flushed until
    /// [`ImageExportWriter::finish`]).
    ///
    /// # Errors
    ///
    /// The writer's error kind (usually [`ErrorKind::Io`](crate::ErrorKind::Io)) if writing
    /// fails; [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) after an earlier
    /// failed write.
    pub fn end(mut self) -> Result<()> {
        self.writer.finish()
    }
}

impl<W: Write> fmt::Debug for ImageDiffWriter<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageDiffWriter").field("writer", &self.writer).finish()
    }
}

impl<'a, W: Write> Deref for ImageDiffWriter<'a, W> {
    type Target = DiffWriter<&'a mut W>;

    fn deref(&self) -> &Self::Target {
        &self.writer
    }
}

impl<'a, W: Write> DerefMut for ImageDiffWriter<'a, W> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.writer
    }
}

impl<W: Write> Drop for ImageDiffWriter<'_, W> {
    fn drop(&mut self) {
        *self.written_out += self.writer.bytes_written();
        if self.writer.is_broken() {
            *self.broken_out = true;
        } else if self.writer.is_ended() {
            *self.done_out += 1;
            *self.open_out = false;
        }
    }
}
