//! [`DiffWriter`]: encodes diff v1/v2 streams exactly as the Pacific `rbd` tool does.

use super::{
    io_failure, writer_misuse, DiffVersion, Record, MAX_NAME_LEN, TAG_END, TAG_FROM_SNAP, TAG_PROTECTED, TAG_SIZE,
    TAG_TO_SNAP, TAG_WRITE, TAG_ZERO,
};
use crate::error::Result;
use std::fmt;
use std::io::Write;

/// A record header: tag plus up to three le64 fields (the longest is a v2 `'w'`, 25 bytes).
struct Hdr {
    buf: [u8; 25],
    len: usize,
}

impl Hdr {
    fn new(tag: u8) -> Hdr {
        let mut buf = [0u8; 25];
        buf[0] = tag;
        Hdr { buf, len: 1 }
    }

    fn put(&mut self, bytes: &[u8]) -> &mut Hdr {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }

    fn u64(&mut self, v: u64) -> &mut Hdr {
        self.put(&v.to_le_bytes())
    }

    fn u32(&mut self, v: u32) -> &mut Hdr {
        self.put(&v.to_le_bytes())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Streaming encoder for a diff v1 or v2 stream.
///
/// The constructor writes the banner; each method writes one record; [`end`](Self::end) writes
/// `'e'`, flushes and returns the writer. The output is byte-identical to the Pacific `rbd`
/// tool's for the same records (`rbd export-diff` for v1, the streams inside
/// `rbd export --export-format 2` for v2). Records go straight to the underlying writer, one
/// `write_all` for each header and one for each payload, so wrap files and sockets in a
/// [`std::io::BufWriter`].
///
/// The writer does not enforce record order; `rbd import-diff` expects `'f'`/`'t'`/`'s'`
/// (and `'p'`) before the data records, which is the order the `rbd` tool writes.
pub struct DiffWriter<W: Write> {
    inner: W,
    version: DiffVersion,
    written: u64,
    ended: bool,
    /// A write failed part-way; the stream is unusable.
    broken: bool,
}

impl<W: Write> fmt::Debug for DiffWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiffWriter")
            .field("version", &self.version)
            .field("bytes_written", &self.written)
            .field("ended", &self.ended)
            .field("broken", &self.broken)
            .finish()
    }
}

impl<W: Write> DiffWriter<W> {
    /// Starts a diff v1 stream (`"rbd diff v1\n"`), the format of `rbd export-diff`.
    ///
    /// # Errors
    ///
    /// The writer's error kind (usually [`ErrorKind::Io`](crate::ErrorKind::Io)) if writing fails.
    pub fn new_v1(writer: W) -> Result<Self> {
        Self::new(writer, DiffVersion::V1)
    }

    /// Starts a diff v2 stream (`"rbd diff v2\n"`), the format inside an image v2 export.
    ///
    /// # Errors
    ///
    /// The writer's error kind (usually [`ErrorKind::Io`](crate::ErrorKind::Io)) if writing fails.
    pub fn new_v2(writer: W) -> Result<Self> {
        Self::new(writer, DiffVersion::V2)
    }

    /// Starts a stream of `version`.
    ///
    /// # Errors
    ///
    /// The writer's error kind (usually [`ErrorKind::Io`](crate::ErrorKind::Io)) if writing fails.
    pub fn new(writer: W, version: DiffVersion) -> Result<Self> {
        let mut w = DiffWriter { inner: writer, version, written: 0, ended: false, broken: false };
        w.put(version.banner())?;
        Ok(w)
    }

    /// The stream's format.
    pub fn version(&self) -> DiffVersion {
        self.version
    }

    /// Bytes written so far, banner included.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writes `'f'`: the snapshot the diff starts from.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) (nothing written) if the
    /// name is longer than [`MAX_NAME_LEN`](super::MAX_NAME_LEN) bytes or the stream has ended;
    /// the writer's error kind if writing fails.
    pub fn from_snap(&mut self, name: &str) -> Result<()> {
        self.name(TAG_FROM_SNAP, name)
    }

    /// Writes `'t'`: the snapshot the diff ends at.
    ///
    /// # Errors
    ///
    /// As [`from_snap`](Self::from_snap).
    pub fn to_snap(&mut self, name: &str) -> Result<()> {
        self.name(TAG_TO_SNAP, name)
    }

    /// Writes `'s'`: the image size at the end point.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if the stream has ended;
    /// the writer's error kind if writing fails.
    pub fn size(&mut self, size: u64) -> Result<()> {
        self.check_open()?;
        let mut h = Hdr::new(TAG_SIZE);
        if self.version == DiffVersion::V2 {
            h.u64(8);
        }
        h.u64(size);
        self.put(h.bytes())
    }

    /// Writes `'p'` (diff v2 only): whether the end snapshot is protected.
    ///
    /// Encoded as Pacific does, with a length field of 8 followed by a single byte (0 or 1), so
    /// the output is byte-identical to `rbd export --export-format 2`. Newer releases write
    /// length 1; every importer reads exactly one byte, so both are accepted everywhere.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) on a v1 stream (which has
    /// no `'p'` record) or after the end; the writer's error kind if writing fails.
    pub fn protected(&mut self, protected: bool) -> Result<()> {
        self.check_open()?;
        if self.version == DiffVersion::V1 {
            return Err(writer_misuse("the 'p' (protected) record exists only in diff v2 streams"));
        }
        let mut h = Hdr::new(TAG_PROTECTED);
        h.u64(8).put(&[u8::from(protected)]);
        self.put(h.bytes())
    }

    /// Writes `'w'`: `data` at `offset`, as one record.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) (nothing written) if
    /// `offset + data.len()` overflows u64 or the stream has ended; the writer's error kind if
    /// writing fails.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_open()?;
        let len = data.len() as u64;
        if offset.checked_add(len).is_none() {
            return Err(writer_misuse(format!("write at offset {offset} of {len} bytes overflows u64")));
        }
        let mut h = Hdr::new(TAG_WRITE);
        if self.version == DiffVersion::V2 {
            let Some(record_len) = len.checked_add(16) else {
                return Err(writer_misuse(format!("write of {len} bytes is too long for a v2 record")));
            };
            h.u64(record_len);
        }
        h.u64(offset).u64(len);
        self.put(h.bytes())?;
        self.put(data)
    }

    /// Writes `'z'`: `len` bytes at `offset` read back as zeros.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) (nothing written) if
    /// `offset + len` overflows u64 or the stream has ended; the writer's error kind if writing
    /// fails.
    pub fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        self.check_open()?;
        if offset.checked_add(len).is_none() {
            return Err(writer_misuse(format!("zero range at offset {offset} of {len} bytes overflows u64")));
        }
        let mut h = Hdr::new(TAG_ZERO);
        if self.version == DiffVersion::V2 {
            h.u64(16);
        }
        h.u64(offset).u64(len);
        self.put(h.bytes())
    }

    /// Writes one decoded record (for example one returned by a
    /// [`DiffReader`](super::DiffReader)).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for [`Record::End`] (use
    /// [`end`](Self::end)), [`Record::Unknown`] (its payload is not kept) and whatever the
    /// record's own method rejects; the writer's error kind if writing fails.
    pub fn record(&mut self, record: &Record) -> Result<()> {
        match record {
            Record::FromSnap(name) => self.from_snap(name),
            Record::ToSnap(name) => self.to_snap(name),
            Record::Size(size) => self.size(*size),
            Record::Protected(p) => self.protected(*p),
            Record::Write { offset, data } => self.write(*offset, data),
            Record::Zero { offset, len } => self.zero(*offset, *len),
            Record::End => Err(writer_misuse("write the end of the stream with DiffWriter::end")),
            Record::Unknown { tag, .. } => Err(writer_misuse(format!(
                "cannot re-encode unknown record {}: its payload was skipped",
                super::show_tag(*tag)
            ))),
        }
    }

    /// Writes `'e'`, flushes, and returns the underlying writer.
    ///
    /// # Errors
    ///
    /// The writer's error kind (usually [`ErrorKind::Io`](crate::ErrorKind::Io)) if writing or
    /// flushing fails.
    pub fn end(mut self) -> Result<W> {
        self.finish()?;
        if let Err(e) = self.inner.flush() {
            return Err(io_failure(self.written, "flush", e));
        }
        Ok(self.inner)
    }

    /// Writes `'e'` and marks the stream ended, without flushing or giving up the writer.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.check_open()?;
        self.put(&[TAG_END])?;
        self.ended = true;
        Ok(())
    }

    pub(super) fn is_ended(&self) -> bool {
        self.ended
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken
    }

    fn name(&mut self, tag: u8, name: &str) -> Result<()> {
        self.check_open()?;
        if name.len() > MAX_NAME_LEN {
            return Err(writer_misuse(format!(
                "snapshot name of {} bytes is longer than {MAX_NAME_LEN}, which rbd import-diff rejects",
                name.len()
            )));
        }
        // Fits: at most MAX_NAME_LEN.
        let n = name.len() as u32;
        let mut h = Hdr::new(tag);
        if self.version == DiffVersion::V2 {
            h.u64(4 + u64::from(n));
        }
        h.u32(n);
        self.put(h.bytes())?;
        self.put(name.as_bytes())
    }

    fn check_open(&self) -> Result<()> {
        if self.broken {
            return Err(writer_misuse(format!(
                "an earlier write failed at byte {}; the diff stream is incomplete",
                self.written
            )));
        }
        if self.ended {
            return Err(writer_misuse("the diff stream has already ended"));
        }
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.inner.write_all(bytes) {
            self.broken = true;
            return Err(io_failure(self.written, "write", e));
        }
        self.written += bytes.len() as u64;
        Ok(())
    }
}
