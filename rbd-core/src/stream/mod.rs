//! Readers and writers for the `rbd export-diff` and `rbd export --export-format 2` byte streams.
//!
//! This module is plain parsing and encoding. It never talks to a cluster, so every example here
//! runs as a doctest:
//!
//! ```
//! use rbd_core::stream::{DiffReader, DiffVersion, DiffWriter, Record};
//!
//! // What `rbd export-diff` would write for one 5-byte write and one discarded block.
//! let mut w = DiffWriter::new_v1(Vec::new())?;
//! w.to_snap("h1")?;
//! w.size(4 << 20)?;
//! w.write(8192, b"HELLO")?;
//! w.zero(0, 4096)?;
//! let bytes = w.end()?;
//! assert_eq!(&bytes[..12], b"rbd diff v1\n");
//!
//! let mut r = DiffReader::new(&bytes[..])?;
//! assert_eq!(r.version(), DiffVersion::V1);
//! let records = r.by_ref().collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(
//!     records,
//!     [
//!         Record::ToSnap("h1".into()),
//!         Record::Size(4 << 20),
//!         Record::Write { offset: 8192, data: b"HELLO".to_vec() },
//!         Record::Zero { offset: 0, len: 4096 },
//!         Record::End,
//!     ]
//! );
//! assert_eq!(r.position(), bytes.len() as u64);
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! # Formats
//!
//! * **Diff v1** (`"rbd diff v1\n"`) is what `rbd export-diff` writes and the only format
//!   `rbd import-diff` accepts. Records have no length field, so an unknown tag is fatal.
//! * **Diff v2** (`"rbd diff v2\n"`) appears only inside the image v2 container. Every record but
//!   `'e'` carries a le64 length, so unknown tags are skipped ([`Record::Unknown`]). It adds the
//!   `'p'` (snapshot protected) record.
//! * **Image v2 container** (`"rbd image v2\n"`, from `rbd export --export-format 2`): a header of
//!   image properties and metadata ([`ImageHeader`]), then `"rbd image diffs v2\n"`, a le64 count
//!   N, then N diff-v2 streams. See [`ImageExportReader`] and [`ImageExportWriter`].
//!
//! The byte layouts follow the Pacific 16.2.15 `rbd` tool (`src/tools/rbd/action/Export.cc`,
//! `Import.cc`, `Utils.h`); the writers reproduce its output byte for byte, including the Pacific
//! `'p'` quirk (length field 8, one payload byte).
//!
//! # Errors and limits
//!
//! Every format problem is an [`ErrorKind::Malformed`] error (errno
//! `EBADMSG`, as `rbd import-diff` reports) with op `"diff_stream"` and a message that says what
//! was wrong and `at byte N`. A stream that ends early gives a message starting with `truncated`;
//! test for it with [`is_truncation`]. Failures of the underlying reader or writer keep their own
//! kind (usually [`ErrorKind::Io`]).
//!
//! Memory stays bounded whatever the input claims: a `'w'` record longer than
//! [`DiffReader::max_chunk`] (default [`DEFAULT_MAX_CHUNK`], 4 MiB) is returned as several
//! consecutive [`Record::Write`]s, and buffers grow only as data actually arrives, so a huge
//! length field in a short stream fails as truncated without allocating it. Snapshot names are
//! limited to [`MAX_NAME_LEN`] bytes like `rbd import-diff` does, and one image metadata entry to
//! [`MAX_METADATA_ENTRY_LEN`].

mod image;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use image::{ImageDiff, ImageDiffWriter, ImageExportReader, ImageExportWriter, ImageHeader};
pub use reader::DiffReader;
pub use writer::DiffWriter;

use crate::error::{Error, ErrorKind};
use std::fmt;

/// Banner of a diff v1 stream (`RBD_DIFF_BANNER` in `Utils.h`).
pub const DIFF_BANNER_V1: &[u8; 12] = b"rbd diff v1\n";
/// Banner of a diff v2 stream (`RBD_DIFF_BANNER_V2`).
pub const DIFF_BANNER_V2: &[u8; 12] = b"rbd diff v2\n";
/// Banner of an image v2 container (`RBD_IMAGE_BANNER_V2`).
pub const IMAGE_BANNER_V2: &[u8; 13] = b"rbd image v2\n";
/// Banner between the image v2 header and its diff streams (`RBD_IMAGE_DIFFS_BANNER_V2`).
pub const IMAGE_DIFFS_BANNER_V2: &[u8; 19] = b"rbd image diffs v2\n";

/// Default `--sparse-size` of `rbd import`/`import-diff`: the granularity at which all-zero
/// parts of a `'w'` record become zero writes (see [`sparse_extents`]).
pub const RBD_DEFAULT_SPARSE_SIZE: usize = 4096;

/// Longest snapshot name a `'f'`/`'t'` record may carry (the limit `rbd import-diff` applies).
pub const MAX_NAME_LEN: usize = 4096;

/// Longest key plus value of one `'M'` (image metadata) record this reader accepts, 16 MiB.
///
/// The Pacific tool has no explicit limit; this one keeps memory bounded on hostile input.
pub const MAX_METADATA_ENTRY_LEN: u64 = 16 << 20;

/// Default largest data payload of one [`Record::Write`] returned by [`DiffReader`] (4 MiB,
/// one default-sized RBD object).
pub const DEFAULT_MAX_CHUNK: usize = 4 << 20;

/// Diff record tag `'f'`: start snapshot name (`RBD_DIFF_FROM_SNAP`).
pub const TAG_FROM_SNAP: u8 = b'f';
/// Diff record tag `'t'`: end snapshot name (`RBD_DIFF_TO_SNAP`).
pub const TAG_TO_SNAP: u8 = b't';
/// Diff record tag `'s'`: image size at the end point (`RBD_DIFF_IMAGE_SIZE`).
pub const TAG_SIZE: u8 = b's';
/// Diff v2 record tag `'p'`: end snapshot is protected (`RBD_SNAP_PROTECTION_STATUS`).
pub const TAG_PROTECTED: u8 = b'p';
/// Diff record tag `'w'`: data (`RBD_DIFF_WRITE`).
pub const TAG_WRITE: u8 = b'w';
/// Diff record tag `'z'`: a range that reads back as zeros (`RBD_DIFF_ZERO`).
pub const TAG_ZERO: u8 = b'z';
/// Diff record tag `'e'`: end of the diff (`RBD_DIFF_END`).
pub const TAG_END: u8 = b'e';

/// Image header tag `'O'`: object order (`RBD_EXPORT_IMAGE_ORDER`).
pub const IMAGE_TAG_ORDER: u8 = b'O';
/// Image header tag `'T'`: feature bits (`RBD_EXPORT_IMAGE_FEATURES`).
pub const IMAGE_TAG_FEATURES: u8 = b'T';
/// Image header tag `'U'`: stripe unit (`RBD_EXPORT_IMAGE_STRIPE_UNIT`).
pub const IMAGE_TAG_STRIPE_UNIT: u8 = b'U';
/// Image header tag `'C'`: stripe count (`RBD_EXPORT_IMAGE_STRIPE_COUNT`).
pub const IMAGE_TAG_STRIPE_COUNT: u8 = b'C';
/// Image header tag `'M'`: one image metadata key/value (`RBD_EXPORT_IMAGE_META`).
pub const IMAGE_TAG_META: u8 = b'M';
/// Image header tag `'E'`: end of the header (`RBD_EXPORT_IMAGE_END`).
pub const IMAGE_TAG_END: u8 = b'E';

/// The `op` of every error raised by this module.
pub const STREAM_OP: &str = "diff_stream";

/// Which diff stream format a [`DiffReader`] or [`DiffWriter`] handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiffVersion {
    /// `"rbd diff v1\n"`: `rbd export-diff` / `rbd import-diff`.
    V1,
    /// `"rbd diff v2\n"`: the per-snapshot streams inside an image v2 container.
    V2,
}

impl DiffVersion {
    /// The 12-byte banner that starts a stream of this version.
    pub fn banner(self) -> &'static [u8; 12] {
        match self {
            DiffVersion::V1 => DIFF_BANNER_V1,
            DiffVersion::V2 => DIFF_BANNER_V2,
        }
    }
}

/// One decoded diff record.
///
/// A reader returns them in stream order. The metadata records (`FromSnap`, `ToSnap`, `Size`,
/// `Protected`) come first in what the `rbd` tool writes, but any order is accepted, as
/// `rbd import-diff` does.
#[derive(Clone, PartialEq, Eq)]
pub enum Record {
    /// `'f'`: the snapshot the diff starts from; it must exist on the target before importing.
    FromSnap(String),
    /// `'t'`: the snapshot the diff ends at; an importer creates it after the data.
    ToSnap(String),
    /// `'s'`: the image size at the end point; an importer resizes (grow or shrink) to it.
    Size(u64),
    /// `'p'` (diff v2 only): whether the end snapshot is protected. Any non-zero byte is `true`.
    Protected(bool),
    /// `'w'`: `data` goes at `offset`. One stream record longer than the reader's `max_chunk`
    /// arrives as several consecutive `Write`s with advancing offsets.
    Write {
        /// Byte offset in the image.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `'z'`: `len` bytes at `offset` read back as zeros.
    Zero {
        /// Byte offset in the image.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `'e'`: end of the diff. The reader returns it once, then `None`.
    End,
    /// A diff v2 record with a tag this reader does not know; its `len` payload bytes were
    /// skipped (as `rbd import-diff` does).
    Unknown {
        /// The tag byte.
        tag: u8,
        /// The record's length field.
        len: u64,
    },
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::FromSnap(s) => f.debug_tuple("FromSnap").field(s).finish(),
            Record::ToSnap(s) => f.debug_tuple("ToSnap").field(s).finish(),
            Record::Size(s) => f.debug_tuple("Size").field(s).finish(),
            Record::Protected(p) => f.debug_tuple("Protected").field(p).finish(),
            Record::Write { offset, data } => {
                // Payloads can be megabytes: show the length and a short prefix only.
                let head = &data[..data.len().min(8)];
                f.debug_struct("Write")
                    .field("offset", offset)
                    .field("len", &data.len())
                    .field("head", &head.escape_ascii().to_string())
                    .finish()
            }
            Record::Zero { offset, len } => f.debug_struct("Zero").field("offset", offset).field("len", len).finish(),
            Record::End => f.write_str("End"),
            Record::Unknown { tag, len } => {
                f.debug_struct("Unknown").field("tag", &show_tag(*tag)).field("len", len).finish()
            }
        }
    }
}

/// True when `err` is a stream that ended early (a `truncated ...` [`ErrorKind::Malformed`] error
/// from this module), as opposed to bytes that are present but wrong.
///
/// ```
/// use rbd_core::stream::{is_truncation, DiffReader};
/// let mut r = DiffReader::new(&b"rbd diff v1\ns\x00\x10"[..])?;
/// let err = r.next_record().unwrap_err();
/// assert!(is_truncation(&err));
/// assert!(err.to_string().contains("truncated at byte 15"), "{err}");
/// # Ok::<(), rbd_core::Error>(())
/// ```
pub fn is_truncation(err: &Error) -> bool {
    err.kind() == ErrorKind::Malformed
        && err.op() == STREAM_OP
        && err.message().is_some_and(|m| m.starts_with("truncated"))
}

/// One run of a [`sparse_extents`] split: `len` bytes at `offset` (relative to the buffer) that
/// are all zeros (`zero == true`) or contain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseExtent {
    /// Offset from the start of the buffer.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
    /// True when every byte is zero (an importer writes zeros instead of data).
    pub zero: bool,
}

/// Splits a `'w'` payload the way `rbd import-diff` does (`calc_sparse_extent` in `Utils.cc`).
///
/// The buffer is cut into `sparse_size` blocks counted from its start; consecutive blocks that are
/// all zeros, or that all contain data, are merged into one extent. `sparse_size == 0` turns
/// sparsification off (one data extent). An empty buffer gives no extents.
///
/// ```
/// use rbd_core::stream::{sparse_extents, SparseExtent};
/// let mut buf = vec![0u8; 10_000];
/// buf[5000] = 1;
/// let ext: Vec<_> = sparse_extents(&buf, 4096).collect();
/// assert_eq!(
///     ext,
///     [
///         SparseExtent { offset: 0, len: 4096, zero: true },
///         SparseExtent { offset: 4096, len: 4096, zero: false },
///         SparseExtent { offset: 8192, len: 1808, zero: true },
///     ]
/// );
/// ```
pub fn sparse_extents(data: &[u8], sparse_size: usize) -> impl Iterator<Item = SparseExtent> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let start = pos;
        if sparse_size == 0 {
            pos = data.len();
            return Some(SparseExtent { offset: start, len: data.len() - start, zero: false });
        }
        let block_is_zero = |at: usize| {
            let end = data.len().min(at.saturating_add(sparse_size));
            data[at..end].iter().all(|&b| b == 0)
        };
        let zero = block_is_zero(start);
        while pos < data.len() && block_is_zero(pos) == zero {
            pos = data.len().min(pos.saturating_add(sparse_size));
        }
        Some(SparseExtent { offset: start, len: pos - start, zero })
    })
}

/// `'w'` or `0x01` for messages.
pub(crate) fn show_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// A format error at `pos`.
pub(crate) fn malformed(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Malformed, STREAM_OP, msg)
}

/// The stream ended at `pos`; `what` says where (for example "inside the 'w' record at byte 28").
pub(crate) fn truncated(pos: u64, what: &str) -> Error {
    malformed(format!("truncated at byte {pos}: stream ends {what}"))
}

/// A failure of the underlying reader or writer at `pos`.
pub(crate) fn io_failure(pos: u64, doing: &str, e: std::io::Error) -> Error {
    let kind = match e.kind() {
        std::io::ErrorKind::InvalidData => ErrorKind::Malformed,
        _ => e.raw_os_error().map_or(ErrorKind::Io, ErrorKind::from_errno),
    };
    Error::new(kind, STREAM_OP, format!("{doing} failed at byte {pos}: {e}")).with_source(e)
}

/// Misuse of a writer (bad argument or call order); nothing was written.
pub(crate) fn writer_misuse(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, STREAM_OP, msg)
}
