//! The diff engine (`rbd_core.diff`): `rbd diff v1` export/import, the `rbd image v2` container,
//! the in-process image-to-image transfer, and the rollback after a failed import.
//!
//! Streams go to and come from paths, binary file objects (through their descriptor, without the
//! GIL, when `fileno()` works) or, for inputs, bytes-like objects; see `pyio`. Every call runs on
//! the progress worker with the GIL released.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use rbd_core::export::{DiffExport, ImageExport};
use rbd_core::import::{DiffImport, ImageImport};
use rbd_core::transfer::Transfer;

use crate::image::Image;
use crate::pool::Pool;
use crate::progress::CancelToken;
use crate::pyio::{self, Input, Output};
use crate::recipes_glance::opt_repr;
use crate::util::image_options;

/// What an export wrote.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct ExportStats {
    /// Diff streams written (1 for a v1 diff; snapshots + 1 for an image v2 container).
    pub diffs: u64,
    /// Extents reported by librbd (before merging).
    pub extents: u64,
    /// ``'w'`` records written.
    pub write_records: u64,
    /// ``'z'`` records written.
    pub zero_records: u64,
    /// Payload bytes in ``'w'`` records.
    pub data_bytes: u64,
    /// Bytes covered by ``'z'`` records.
    pub zero_bytes: u64,
    /// Bytes read from the image.
    pub bytes_read: u64,
    /// Bytes written to the output.
    pub stream_bytes: u64,
    /// CLI-identical mode only: extents written as several records (larger than the buffer).
    pub cli_fallbacks: u64,
    /// Wall time in seconds.
    pub elapsed: f64,
}

#[pymethods]
impl ExportStats {
    /// ``'w'`` plus ``'z'`` records.
    #[getter]
    fn records(&self) -> u64 {
        self.write_records + self.zero_records
    }

    fn __repr__(&self) -> String {
        format!(
            "ExportStats(diffs={}, write_records={}, zero_records={}, data_bytes={}, zero_bytes={}, stream_bytes={}, \
             elapsed={:.3})",
            self.diffs,
            self.write_records,
            self.zero_records,
            self.data_bytes,
            self.zero_bytes,
            self.stream_bytes,
            self.elapsed
        )
    }
}

impl From<rbd_core::export::ExportStats> for ExportStats {
    fn from(s: rbd_core::export::ExportStats) -> Self {
        ExportStats {
            diffs: s.diffs,
            extents: s.extents,
            write_records: s.write_records,
            zero_records: s.zero_records,
            data_bytes: s.data_bytes,
            zero_bytes: s.zero_bytes,
            bytes_read: s.bytes_read,
            stream_bytes: s.stream_bytes,
            cli_fallbacks: s.cli_fallbacks,
            elapsed: s.elapsed.as_secs_f64(),
        }
    }
}

/// What an import did.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct ImportStats {
    /// Diff streams applied.
    pub diffs: u64,
    /// The ``'f'`` record of the (first) diff.
    pub from_snap: Option<String>,
    /// Snapshots created, in order.
    pub snapshots: Vec<String>,
    /// The subset of ``snapshots`` that was protected.
    pub protected: Vec<String>,
    /// The image size after the import, if the stream had an ``'s'`` record.
    pub size: Option<u64>,
    /// Records decoded.
    pub records: u64,
    /// Bytes written as data.
    pub bytes_written: u64,
    /// Bytes zeroed.
    pub bytes_zeroed: u64,
    /// Bytes of input consumed.
    pub stream_bytes: u64,
    /// Wall time in seconds.
    pub elapsed: f64,
}

#[pymethods]
impl ImportStats {
    fn __repr__(&self) -> String {
        format!(
            "ImportStats(diffs={}, from_snap={}, snapshots={:?}, size={}, bytes_written={}, bytes_zeroed={}, \
             stream_bytes={}, elapsed={:.3})",
            self.diffs,
            opt_repr(&self.from_snap),
            self.snapshots,
            opt_repr(&self.size),
            self.bytes_written,
            self.bytes_zeroed,
            self.stream_bytes,
            self.elapsed
        )
    }
}

impl From<rbd_core::import::ImportStats> for ImportStats {
    fn from(s: rbd_core::import::ImportStats) -> Self {
        ImportStats {
            diffs: s.diffs,
            from_snap: s.from_snap,
            snapshots: s.snapshots,
            protected: s.protected,
            size: s.size,
            records: s.records,
            bytes_written: s.bytes_written,
            bytes_zeroed: s.bytes_zeroed,
            stream_bytes: s.stream_bytes,
            elapsed: s.elapsed.as_secs_f64(),
        }
    }
}

/// What a transfer moved.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct TransferStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written to the destination as data.
    pub bytes_written: u64,
    /// Bytes zeroed on the destination.
    pub bytes_zeroed: u64,
    /// Zero bytes not written because the destination was known to be zero there.
    pub bytes_skipped: u64,
    /// Changed extents (after merging).
    pub extents: u64,
    /// Wall time in seconds.
    pub elapsed: f64,
}

#[pymethods]
impl TransferStats {
    fn __repr__(&self) -> String {
        format!(
            "TransferStats(bytes_read={}, bytes_written={}, bytes_zeroed={}, bytes_skipped={}, extents={}, \
             elapsed={:.3})",
            self.bytes_read, self.bytes_written, self.bytes_zeroed, self.bytes_skipped, self.extents, self.elapsed
        )
    }
}

impl From<rbd_core::transfer::TransferStats> for TransferStats {
    fn from(s: rbd_core::transfer::TransferStats) -> Self {
        TransferStats {
            bytes_read: s.bytes_read,
            bytes_written: s.bytes_written,
            bytes_zeroed: s.bytes_zeroed,
            bytes_skipped: s.bytes_skipped,
            extents: s.extents,
            elapsed: s.elapsed.as_secs_f64(),
        }
    }
}

/// Writes what changed in ``image`` as an ``rbd diff v1`` stream (``rbd export-diff``) to
/// ``dest`` (a path, created or truncated and removed again on failure, or a binary file object).
/// The end point is the snapshot the handle is at (or the head); the start is ``from_snap`` (or
/// the beginning). ``cli_identical`` writes exactly the CLI's records; the default fine-grained
/// mode turns all-zero ``granularity`` blocks into ``'z'`` records.
#[pyfunction]
#[pyo3(signature = (image, dest, from_snap=None, cli_identical=false, whole_object=false, on_progress=None, cancel=None, in_flight=16, granularity=4096, max_io=4194304))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn export_diff(
    py: Python<'_>,
    image: &Image,
    dest: &Bound<'_, PyAny>,
    from_snap: Option<String>,
    cli_identical: bool,
    whole_object: bool,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
    in_flight: usize,
    granularity: usize,
    max_io: usize,
) -> PyResult<ExportStats> {
    let mut output = Output::from_py(dest, "dest")?;
    let out = &mut output;
    let res = pyio::run_op(py, on_progress, cancel, move |p| {
        image.with_lib(|i| {
            DiffExport::new(i)
                .from_snap(from_snap.as_deref())
                .cli_identical(cli_identical)
                .whole_object(whole_object)
                .in_flight(in_flight)
                .granularity(granularity)
                .max_io(max_io)
                .run(out, p)
        })
    });
    Ok(pyio::settle(py, res, None, Some(&mut output))?.into())
}

/// Applies the ``rbd diff v1`` stream in ``src`` (a path, a binary file object, or a bytes-like
/// object) to ``image`` (open read-write at its head) with the contract of ``rbd import-diff``:
/// the ``'f'`` snapshot must exist, the ``'t'`` one must not and is created at the end. A failure
/// part-way leaves the head partly written (see ``rollback_to_from_snap``).
#[pyfunction]
#[pyo3(signature = (image, src, on_progress=None, cancel=None, in_flight=16, sparse_size=4096, expected_len=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn import_diff(
    py: Python<'_>,
    image: &Image,
    src: &Bound<'_, PyAny>,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
    in_flight: usize,
    sparse_size: usize,
    expected_len: Option<u64>,
) -> PyResult<ImportStats> {
    let mut input = Input::from_py(src, "src", true)?;
    let expected = expected_len.or(input.known_len());
    let inp = &mut input;
    let res = pyio::run_op(py, on_progress, cancel, move |p| {
        image.with_lib(|i| {
            DiffImport::new(i).in_flight(in_flight).sparse_size(sparse_size).expected_len(expected).run(inp, p)
        })
    });
    Ok(pyio::settle(py, res, Some(&mut input), None)?.into())
}

/// Writes ``image`` with every user snapshot as an ``rbd image v2`` container (``rbd export
/// --export-format 2``) to ``dest`` (a path or a binary file object).
#[pyfunction]
#[pyo3(signature = (image, dest, cli_identical=false, on_progress=None, cancel=None, in_flight=16, granularity=4096))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn export_image(
    py: Python<'_>,
    image: &Image,
    dest: &Bound<'_, PyAny>,
    cli_identical: bool,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
    in_flight: usize,
    granularity: usize,
) -> PyResult<ExportStats> {
    let mut output = Output::from_py(dest, "dest")?;
    let out = &mut output;
    let res = pyio::run_op(py, on_progress, cancel, move |p| {
        image.with_lib(|i| {
            ImageExport::new(i).cli_identical(cli_identical).in_flight(in_flight).granularity(granularity).run(out, p)
        })
    });
    Ok(pyio::settle(py, res, None, Some(&mut output))?.into())
}

/// Creates image ``name`` in ``pool`` from the ``rbd image v2`` container in ``src`` (``rbd import
/// --export-format 2``), with its snapshots, protection and metadata. Options given here win over
/// the container's header. On failure the half-built image is removed.
#[pyfunction]
#[pyo3(signature = (pool, name, src, order=None, features=None, stripe_unit=None, stripe_count=None, data_pool=None, on_progress=None, cancel=None, in_flight=16, sparse_size=4096, expected_len=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn import_image(
    py: Python<'_>,
    pool: &Pool,
    name: String,
    src: &Bound<'_, PyAny>,
    order: Option<u8>,
    features: Option<u64>,
    stripe_unit: Option<u64>,
    stripe_count: Option<u64>,
    data_pool: Option<String>,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
    in_flight: usize,
    sparse_size: usize,
    expected_len: Option<u64>,
) -> PyResult<ImportStats> {
    let opts = image_options(order, features, stripe_unit, stripe_count, data_pool.as_deref());
    let mut input = Input::from_py(src, "src", true)?;
    let expected = expected_len.or(input.known_len());
    let inp = &mut input;
    let p = &pool.inner;
    let res = pyio::run_op(py, on_progress, cancel, move |pr| {
        Ok(ImageImport::new(p, &name)
            .options(&opts)
            .in_flight(in_flight)
            .sparse_size(sparse_size)
            .expected_len(expected)
            .run(inp, pr))
    });
    Ok(pyio::settle(py, res, Some(&mut input), None)?.into())
}

/// Transfers what changed in ``src_image`` (at its snapshot or head) since ``from_snap`` into
/// ``dst_image`` (open read-write at its head), in process: ``rbd export-diff | rbd import-diff``
/// without a stream, between pools or clusters. The snapshot created on the destination is
/// ``to_snap``, by default the one the source is at (none at the head); ``create_snap=False``
/// creates none.
#[pyfunction]
#[pyo3(signature = (src_image, dst_image, from_snap=None, to_snap=None, in_flight=16, on_progress=None, cancel=None, create_snap=true, granularity=4096, dst_is_zero=false, skip_known_zeros=true, whole_object=false, max_io=4194304))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn transfer(
    py: Python<'_>,
    src_image: &Image,
    dst_image: &Image,
    from_snap: Option<String>,
    to_snap: Option<String>,
    in_flight: usize,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
    create_snap: bool,
    granularity: usize,
    dst_is_zero: bool,
    skip_known_zeros: bool,
    whole_object: bool,
    max_io: usize,
) -> PyResult<TransferStats> {
    if !create_snap && to_snap.is_some() {
        return Err(PyValueError::new_err("to_snap given with create_snap=False"));
    }
    let res = pyio::run_op(py, on_progress, cancel, move |p| {
        let r = src_image.with_lib(|s| {
            Ok(dst_image.with_lib(|d| {
                let mut t = Transfer::new(s, d);
                t.from_snap(from_snap.as_deref())
                    .in_flight(in_flight)
                    .granularity(granularity)
                    .dst_is_zero(dst_is_zero)
                    .skip_known_zeros(skip_known_zeros)
                    .whole_object(whole_object)
                    .max_io(max_io);
                if !create_snap {
                    t.to_snap(None);
                } else if let Some(name) = &to_snap {
                    t.to_snap(Some(name));
                }
                t.run(p)
            }))
        })?;
        // The outer result is always Ok: it only carries the destination's.
        match r {
            Ok(inner) => inner,
            Err(e) => Ok(Err(e)),
        }
    });
    Ok(pyio::settle(py, res, None, None)?.into())
}

/// Rolls the head of ``image`` back to ``snap``: the recovery after an import or transfer that
/// failed part-way. Progress is reported once per object.
#[pyfunction]
#[pyo3(signature = (image, snap, on_progress=None, cancel=None))]
pub(crate) fn rollback_to_from_snap(
    py: Python<'_>,
    image: &Image,
    snap: String,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<()> {
    image.with_progress(py, on_progress, cancel, move |i, p| rbd_core::import::rollback_to_from_snap(i, &snap, p))
}
