//! [`DiffReader`]: a streaming, bounded-memory decoder for diff v1/v2 streams.

use super::{
    io_failure, malformed, show_tag, truncated, DiffVersion, Record, DEFAULT_MAX_CHUNK, DIFF_BANNER_V1, DIFF_BANNER_V2,
    MAX_NAME_LEN, TAG_END, TAG_FROM_SNAP, TAG_PROTECTED, TAG_SIZE, TAG_TO_SNAP, TAG_WRITE, TAG_ZERO,
};
use crate::error::Result;
use std::fmt;
use std::io::{self, Read};
use std::iter::FusedIterator;

/// Initial buffer reservation cap: buffers grow past this only as data actually arrives.
const RESERVE_CAP: u64 = 1 << 20;

/// A byte source that counts what it has consumed, so errors can say `at byte N`.
pub(super) struct Src<R> {
    pub(super) inner: R,
    pub(super) pos: u64,
}

impl<R: Read> Src<R> {
    /// Fills as much of `buf` as the stream has; fewer bytes than `buf.len()` means end of stream.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    // A misbehaving reader could claim more than it was given; never trust it.
                    let n = n.min(buf.len() - filled);
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(io_failure(self.pos, "read", e)),
            }
        }
        Ok(filled)
    }

    /// Fills all of `buf`; end of stream is a truncation error located by `what`.
    pub(super) fn exact(&mut self, buf: &mut [u8], what: &dyn Fn() -> String) -> Result<()> {
        if self.read_full(buf)? < buf.len() {
            return Err(truncated(self.pos, &what()));
        }
        Ok(())
    }

    /// The next byte, or `None` at a clean end of stream.
    pub(super) fn tag(&mut self) -> Result<Option<u8>> {
        let mut b = [0u8; 1];
        Ok((self.read_full(&mut b)? == 1).then_some(b[0]))
    }

    pub(super) fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        let mut b = [0u8; 1];
        self.exact(&mut b, what)?;
        Ok(b[0])
    }

    pub(super) fn le32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(super) fn le64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads exactly `len` bytes into a buffer that grows only as data arrives, so a huge
    /// claimed length in a short stream fails as truncated without allocating it.
    /// Callers bound `len` (by `max_chunk` or a format limit) beforehand.
    pub(super) fn bytes(&mut self, len: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        // `len` is bounded by a usize-sized limit; the cast of the min is lossless.
        let mut buf = Vec::with_capacity(len.min(RESERVE_CAP) as usize);
        let res = (&mut self.inner).take(len).read_to_end(&mut buf);
        self.pos += buf.len() as u64;
        match res {
            Ok(_) if buf.len() as u64 == len => Ok(buf),
            Ok(_) => Err(truncated(self.pos, &what())),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(truncated(self.pos, &what())),
            Err(e) => Err(io_failure(self.pos, "read", e)),
        }
    }

    /// A length-prefixed-elsewhere UTF-8 string of `len` bytes.
    pub(super) fn string(&mut self, len: u64, field: &str, what: &dyn Fn() -> String) -> Result<String> {
        let start = self.pos;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes)
            .map_err(|e| malformed(format!("{field} at byte {start} is not valid UTF-8 ({})", e.utf8_error())))
    }

    /// Reads and discards `len` bytes without buffering them.
    pub(super) fn skip(&mut self, mut len: u64, what: &dyn Fn() -> String) -> Result<()> {
        let mut scratch = [0u8; 8192];
        while len > 0 {
            let n = len.min(scratch.len() as u64) as usize;
            let got = self.read_full(&mut scratch[..n])?;
            if got < n {
                return Err(truncated(self.pos, &what()));
            }
            len -= n as u64;
        }
        Ok(())
    }

    /// Reads a banner and returns the index of the candidate it matches. All candidates have the
    /// same length. A short stream whose bytes so far match a candidate is a truncation.
    pub(super) fn banner(&mut self, candidates: &[&[u8]], what: &str) -> Result<usize> {
        let start = self.pos;
        let want = candidates.first().map_or(0, |c| c.len());
        let mut buf = vec![0u8; want];
        let got = self.read_full(&mut buf)?;
        let seen = &buf[..got];
        if let Some(i) = candidates.iter().position(|c| *c == seen) {
            return Ok(i);
        }
        if got < want && candidates.iter().any(|c| c.starts_with(seen)) {
            return Err(truncated(self.pos, &format!("inside the {what} banner")));
        }
        let expected: Vec<String> = candidates.iter().map(|c| format!("\"{}\"", c.escape_ascii())).collect();
        Err(malformed(format!(
            "bad {what} banner at byte {start}: expected {}, found \"{}\"",
            expected.join(" or "),
            seen.escape_ascii()
        )))
    }
}

/// Where a [`DiffReader`] is in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Expecting a tag.
    Records,
    /// In the data of a `'w'` record that is being returned in chunks.
    Write { offset: u64, remaining: u64, start: u64 },
    /// `'e'` was returned; nothing more is read.
    Done,
    /// An error was returned; the stream position is no longer trustworthy.
    Failed,
}

/// The resumable part of a reader, so a container can hand out a reader over `&mut R` and pick
/// up where it stopped.
#[derive(Debug, Clone, Copy)]
pub(super) struct Saved {
    pub(super) version: DiffVersion,
    pub(super) max_chunk: usize,
    pub(super) state: State,
}

/// Streaming decoder for a diff v1 or v2 stream.
///
/// [`new`](Self::new) checks the banner; [`next_record`](Self::next_record) then returns one
/// [`Record`] at a time, [`Record::End`] once, and `None` afterwards (bytes after `'e'` are never
/// read, so a stream embedded in a larger one is left positioned just after its end). It is
/// also an [`Iterator`] of `Result<Record>` that stops after the first error.
///
/// Only what one record needs is held in memory: `'w'` payloads longer than
/// [`max_chunk`](Self::max_chunk) come back as several [`Record::Write`]s.
///
/// The checks follow `rbd import-diff` (`Import.cc`), and are stricter where the tool trusts its
/// input: in v2, the length field of `'f'`, `'t'`, `'s'`, `'w'` and `'z'` must match the payload
/// (the tool ignores it), except for `'p'`, whose payload is always read as one byte because
/// Pacific writes length 8 there; `offset + length` of `'w'`/`'z'` must not overflow u64; names
/// must be UTF-8 and at most [`MAX_NAME_LEN`](super::MAX_NAME_LEN) bytes.
pub struct DiffReader<R> {
    pub(super) src: Src<R>,
    version: DiffVersion,
    max_chunk: usize,
    state: State,
}

impl<R> fmt::Debug for DiffReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiffReader")
            .field("version", &self.version)
            .field("position", &self.src.pos)
            .field("max_chunk", &self.max_chunk)
            .field("state", &self.state)
            .finish()
    }
}

impl<R: Read> DiffReader<R> {
    /// Reads the banner (`"rbd diff v1\n"` or `"rbd diff v2\n"`) and returns a reader positioned
    /// at the first record.
    ///
    /// Wrap unbuffered sources (files, pipes) in a [`std::io::BufReader`]: records are read in
    /// small pieces.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Malformed`](crate::ErrorKind::Malformed) for another banner or a stream shorter
    /// than the banner ([`is_truncation`](super::is_truncation) tells the two apart); the
    /// reader's own error kind (usually `Io`) if reading fails.
    pub fn new(reader: R) -> Result<Self> {
        Self::open_at(reader, 0, None)
    }

    /// Like [`new`](Self::new) but the stream starts at byte `pos` of something larger (only
    /// error messages use it), and optionally only one version is accepted.
    pub(super) fn open_at(reader: R, pos: u64, only: Option<DiffVersion>) -> Result<Self> {
        let mut src = Src { inner: reader, pos };
        let version = match only {
            Some(v) => {
                src.banner(&[v.banner()], "diff")?;
                v
            }
            None => match src.banner(&[DIFF_BANNER_V1, DIFF_BANNER_V2], "diff")? {
                0 => DiffVersion::V1,
                _ => DiffVersion::V2,
            },
        };
        Ok(DiffReader { src, version, max_chunk: DEFAULT_MAX_CHUNK, state: State::Records })
    }

    /// Rebuilds a reader from [`save`](Self::save)d state.
    pub(super) fn resume(reader: R, pos: u64, saved: Saved) -> Self {
        DiffReader {
            src: Src { inner: reader, pos },
            version: saved.version,
            max_chunk: saved.max_chunk,
            state: saved.state,
        }
    }

    pub(super) fn save(&self) -> Saved {
        Saved { version: self.version, max_chunk: self.max_chunk, state: self.state }
    }

    /// The stream's format, from its banner.
    pub fn version(&self) -> DiffVersion {
        self.version
    }

    /// Bytes consumed so far, counted from the start of the stream (or of the enclosing image
    /// export for a reader from [`ImageExportReader`](super::ImageExportReader)).
    pub fn position(&self) -> u64 {
        self.src.pos
    }

    /// The largest `data` of one returned [`Record::Write`].
    pub fn max_chunk(&self) -> usize {
        self.max_chunk
    }

    /// Sets the largest `data` of one returned [`Record::Write`] (at least 1; default
    /// [`DEFAULT_MAX_CHUNK`](super::DEFAULT_MAX_CHUNK)). Takes effect from the next record or
    /// chunk.
    pub fn set_max_chunk(&mut self, max_chunk: usize) {
        self.max_chunk = max_chunk.max(1);
    }

    /// Builder form of [`set_max_chunk`](Self::set_max_chunk).
    #[must_use]
    pub fn with_max_chunk(mut self, max_chunk: usize) -> Self {
        self.set_max_chunk(max_chunk);
        self
    }

    /// True once [`Record::End`] has been returned.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.src.inner
    }

    /// Gives back the underlying reader, positioned just after the last byte consumed.
    pub fn into_inner(self) -> R {
        self.src.inner
    }

    /// The next record: `Some(Record::End)` once at `'e'`, then `None`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Malformed`](crate::ErrorKind::Malformed) with `at byte N` in the message for:
    /// a stream that ends before `'e'` or inside a record (message starts with `truncated`, see
    /// [`is_truncation`](super::is_truncation)); an unknown tag in v1; `offset + length`
    /// overflowing u64; a name longer than 4096 bytes or not UTF-8; a v2 length field that does
    /// not match the payload. The reader's own error kind (usually `Io`) if reading fails. After
    /// an error every later call fails too.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let res = match self.state {
            State::Done => return Ok(None),
            State::Failed => {
                return Err(malformed(format!(
                    "the stream already failed; nothing more can be read (at byte {})",
                    self.src.pos
                )))
            }
            State::Write { offset, remaining, start } => self.write_chunk(offset, remaining, start).map(Some),
            State::Records => self.read_record(true),
        };
        if res.is_err() {
            self.state = State::Failed;
        }
        res
    }

    /// Reads and discards the rest of the stream, up to and including `'e'`, without buffering
    /// write payloads. Validates as [`next_record`](Self::next_record) does.
    ///
    /// # Errors
    ///
    /// As [`next_record`](Self::next_record).
    pub fn skip_to_end(&mut self) -> Result<()> {
        loop {
            let res = match self.state {
                State::Done => return Ok(()),
                State::Failed => return self.next_record().map(drop),
                State::Write { remaining, start, .. } => {
                    self.src.skip(remaining, &|| inside(TAG_WRITE, start)).map(|()| self.state = State::Records)
                }
                State::Records => self.read_record(false).map(drop),
            };
            if let Err(e) = res {
                self.state = State::Failed;
                return Err(e);
            }
        }
    }

    /// Decodes one record from its tag. With `want_data == false` a `'w'` record's payload is
    /// left unread (state `Write`) and a placeholder is returned.
    fn read_record(&mut self, want_data: bool) -> Result<Option<Record>> {
        let start = self.src.pos;
        let Some(tag) = self.src.tag()? else {
            return Err(truncated(start, "before the 'e' (end) record"));
        };
        let ctx = move || inside(tag, start);
        if tag == TAG_END {
            self.state = State::Done;
            return Ok(Some(Record::End));
        }
        let rec = match self.version {
            DiffVersion::V1 => match tag {
                TAG_FROM_SNAP => Record::FromSnap(self.name(tag, start, None)?),
                TAG_TO_SNAP => Record::ToSnap(self.name(tag, start, None)?),
                TAG_SIZE => Record::Size(self.src.le64(&ctx)?),
                TAG_WRITE => {
                    let (offset, len) = self.extent(tag, start)?;
                    return self.begin_write(offset, len, start, want_data).map(Some);
                }
                TAG_ZERO => {
                    let (offset, len) = self.extent(tag, start)?;
                    Record::Zero { offset, len }
                }
                _ => {
                    return Err(malformed(format!(
                        "unknown tag {} at byte {start} (a v1 stream has no length field to skip it)",
                        show_tag(tag)
                    )))
                }
            },
            DiffVersion::V2 => {
                let len = self.src.le64(&ctx)?;
                let mismatch = |payload: &str| {
                    malformed(format!(
                        "{} record at byte {start}: length field {len} does not match its payload ({payload})",
                        show_tag(tag)
                    ))
                };
                match tag {
                    TAG_FROM_SNAP | TAG_TO_SNAP => {
                        if len < 4 {
                            return Err(mismatch("at least 4 bytes"));
                        }
                        let name = self.name(tag, start, Some(len))?;
                        if tag == TAG_FROM_SNAP {
                            Record::FromSnap(name)
                        } else {
                            Record::ToSnap(name)
                        }
                    }
                    // Pacific writes length 8 with a 1-byte payload; the importer reads one byte
                    // whatever the length says, and so do we.
                    TAG_PROTECTED => Record::Protected(self.src.u8(&ctx)? != 0),
                    TAG_SIZE => {
                        if len != 8 {
                            return Err(mismatch("8 bytes"));
                        }
                        Record::Size(self.src.le64(&ctx)?)
                    }
                    TAG_WRITE => {
                        if len < 16 {
                            return Err(mismatch("at least 16 bytes"));
                        }
                        let (offset, dlen) = self.extent(tag, start)?;
                        if dlen.checked_add(16) != Some(len) {
                            return Err(mismatch(&format!("16 + {dlen} data bytes")));
                        }
                        return self.begin_write(offset, dlen, start, want_data).map(Some);
                    }
                    TAG_ZERO => {
                        if len != 16 {
                            return Err(mismatch("16 bytes"));
                        }
                        let (offset, len) = self.extent(tag, start)?;
                        Record::Zero { offset, len }
                    }
                    _ => {
                        self.src.skip(len, &ctx)?;
                        Record::Unknown { tag, len }
                    }
                }
            }
        };
        Ok(Some(rec))
    }

    /// A `le32 n` + `n` bytes name. `record_len` is the v2 length field, which must be `4 + n`.
    fn name(&mut self, tag: u8, start: u64, record_len: Option<u64>) -> Result<String> {
        let ctx = || inside(tag, start);
        let n = self.src.le32(&ctx)?;
        if n as usize > MAX_NAME_LEN {
            return Err(malformed(format!(
                "{} record at byte {start}: snapshot name of {n} bytes is longer than {MAX_NAME_LEN}",
                show_tag(tag)
            )));
        }
        if let Some(len) = record_len {
            if len != 4 + u64::from(n) {
                return Err(malformed(format!(
                    "{} record at byte {start}: length field {len} does not match its payload (4 + {n} name bytes)",
                    show_tag(tag)
                )));
            }
        }
        self.src.string(u64::from(n), "snapshot name", &ctx)
    }

    /// `le64 offset` + `le64 length`, rejecting ranges that overflow u64.
    fn extent(&mut self, tag: u8, start: u64) -> Result<(u64, u64)> {
        let ctx = || inside(tag, start);
        let offset = self.src.le64(&ctx)?;
        let len = self.src.le64(&ctx)?;
        if offset.checked_add(len).is_none() {
            return Err(malformed(format!(
                "{} record at byte {start}: offset {offset} + length {len} overflows u64",
                show_tag(tag)
            )));
        }
        Ok((offset, len))
    }

    fn begin_write(&mut self, offset: u64, len: u64, start: u64, want_data: bool) -> Result<Record> {
        self.state = State::Write { offset, remaining: len, start };
        if want_data {
            self.write_chunk(offset, len, start)
        } else {
            Ok(Record::Write { offset, data: Vec::new() })
        }
    }

    /// Returns up to `max_chunk` bytes of the current `'w'` record (all of an empty one).
    fn write_chunk(&mut self, offset: u64, remaining: u64, start: u64) -> Result<Record> {
        let n = remaining.min(self.max_chunk as u64);
        let data = self.src.bytes(n, &|| inside(TAG_WRITE, start))?;
        let rest = remaining - n;
        self.state =
            if rest == 0 { State::Records } else { State::Write { offset: offset + n, remaining: rest, start } };
        Ok(Record::Write { offset, data })
    }
}

impl<R: Read> Iterator for DiffReader<R> {
    type Item = Result<Record>;

    /// [`next_record`](DiffReader::next_record), except that after an error the iterator ends.
    fn next(&mut self) -> Option<Result<Record>> {
        if self.state == State::Failed {
            return None;
        }
        self.next_record().transpose()
    }
}

impl<R: Read> FusedIterator for DiffReader<R> {}

/// "inside the 'w' record at byte 28", for truncation messages.
pub(super) fn inside(tag: u8, start: u64) -> String {
    format!("inside the {} record at byte {start}", show_tag(tag))
}
