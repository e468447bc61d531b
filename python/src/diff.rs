//! Changed extents between snapshots (`diff_extents`, `diff_iterate` with a callable),
//! allocated bytes, and sparse reads (`read_iterate`).
//!
//! Callbacks run with the GIL taken back (`Python::attach`) while the calling thread waits
//! with it released; they may run on a librbd thread. Returning ``False`` stops the
//! iteration (no error); an exception stops it and is re-raised afterwards. The image handle
//! is shared-locked recursively, so the callback may call methods of the same image (Pacific
//! runs diff callbacks on the calling thread); to act on extents at length, collect them with
//! `diff_extents` first.

use std::ops::ControlFlow;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyTuple};

use crate::errors::PyResultExt;
use crate::image::Image;

/// One changed extent: ``exists`` is False for a discarded/zeroed range.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DiffExtent {
    /// Offset in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// True when the range holds data, False when it reads as zeros.
    pub exists: bool,
}

#[pymethods]
impl DiffExtent {
    #[new]
    #[pyo3(signature = (offset, length, exists=true))]
    fn new(offset: u64, length: u64, exists: bool) -> Self {
        DiffExtent { offset, length, exists }
    }

    /// ``offset + length``.
    #[getter]
    fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }

    fn __repr__(&self) -> String {
        format!(
            "DiffExtent(offset={}, length={}, exists={})",
            self.offset,
            self.length,
            if self.exists { "True" } else { "False" }
        )
    }
}

impl From<rbd_core::DiffExtent> for DiffExtent {
    fn from(e: rbd_core::DiffExtent) -> Self {
        DiffExtent { offset: e.offset, length: e.len, exists: e.exists }
    }
}

/// A Python callable called from librbd callbacks: the first exception is kept for re-raising.
struct PyCallback {
    cb: Py<PyAny>,
    error: Mutex<Option<PyErr>>,
}

impl PyCallback {
    fn new(cb: &Bound<'_, PyAny>) -> Self {
        PyCallback { cb: cb.clone().unbind(), error: Mutex::new(None) }
    }

    /// Calls the callable with the GIL taken back; `False` or an exception (including one
    /// from a signal handler: Ctrl-C) stops.
    fn call(&self, args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>) -> ControlFlow<()> {
        if self.error.lock().is_some() {
            return ControlFlow::Break(());
        }
        Python::attach(|py| {
            let r = py.check_signals().and_then(|()| self.cb.call1(py, args(py)?));
            match r {
                Ok(v) if v.bind(py).is(PyBool::new(py, false)) => ControlFlow::Break(()),
                Ok(_) => ControlFlow::Continue(()),
                Err(e) => {
                    *self.error.lock() = Some(e);
                    ControlFlow::Break(())
                }
            }
        })
    }

    /// The result to return: the callback's exception first.
    fn finish<T>(self, r: PyResult<rbd_core::Result<T>>) -> PyResult<T> {
        if let Some(e) = self.error.into_inner() {
            return Err(e);
        }
        r?.py()
    }
}

/// The end of the range: ``length`` or up to the end of the image.
fn range_len(i: &rbd_core::Image, offset: u64, length: Option<u64>) -> rbd_core::Result<u64> {
    match length {
        Some(l) => Ok(l),
        None => Ok(i.size()?.saturating_sub(offset)),
    }
}

#[pymethods]
impl Image {
    /// Extents that changed between ``from_snap`` (None: the beginning) and this handle's
    /// snapshot (or head), within ``offset`` .. ``offset + length`` (None: to the end), sorted
    /// by offset. ``whole_object`` reports whole objects (fast with fast-diff).
    #[pyo3(signature = (from_snap=None, offset=0, length=None, include_parent=true, whole_object=false))]
    fn diff_extents(
        &self,
        py: Python<'_>,
        from_snap: Option<String>,
        offset: u64,
        length: Option<u64>,
        include_parent: bool,
        whole_object: bool,
    ) -> PyResult<Vec<DiffExtent>> {
        let opts = rbd_core::DiffOptions { include_parent, whole_object };
        let v = self.with(py, move |i| {
            let len = range_len(i, offset, length)?;
            i.diff_extents(from_snap.as_deref(), offset, len, opts)
        })?;
        Ok(v.into_iter().map(DiffExtent::from).collect())
    }

    /// Calls ``callback(extent: DiffExtent)`` for each changed extent (in librbd's order,
    /// possibly from a librbd thread). Returning False stops early; an exception stops and is
    /// re-raised.
    #[pyo3(signature = (callback, from_snap=None, offset=0, length=None, include_parent=true, whole_object=false))]
    #[allow(clippy::too_many_arguments)]
    fn diff_iterate(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        from_snap: Option<String>,
        offset: u64,
        length: Option<u64>,
        include_parent: bool,
        whole_object: bool,
    ) -> PyResult<()> {
        let opts = rbd_core::DiffOptions { include_parent, whole_object };
        let cb = PyCallback::new(callback);
        let r = py.detach(|| {
            self.with_lib(|i| {
                let len = range_len(i, offset, length)?;
                i.diff_iterate(from_snap.as_deref(), offset, len, opts, |e| {
                    cb.call(|py| (DiffExtent::from(e),).into_pyobject(py))
                })
            })
        });
        cb.finish(r)
    }

    /// Bytes in extents holding data from ``from_snap`` (None: the beginning) to this
    /// handle's snapshot or head, not counting a clone's parent.
    #[pyo3(signature = (from_snap=None))]
    fn allocated_bytes(&self, py: Python<'_>, from_snap: Option<String>) -> PyResult<u64> {
        self.with(py, move |i| i.allocated_bytes(from_snap.as_deref()))
    }

    /// Reads ``offset`` .. ``offset + length`` (None: to the end) in order, calling
    /// ``callback(offset, length, data)`` with ``data`` as bytes, or None for a hole (not
    /// read; reads as zeros). Returning False stops early; an exception stops and is re-raised.
    #[pyo3(signature = (callback, offset=0, length=None))]
    fn read_iterate(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        offset: u64,
        length: Option<u64>,
    ) -> PyResult<()> {
        let cb = PyCallback::new(callback);
        let r = py.detach(|| {
            self.with_lib(|i| {
                let len = range_len(i, offset, length)?;
                i.read_iterate(offset, len, |off, n, data| {
                    cb.call(|py| match data {
                        Some(d) => (off, n, PyBytes::new(py, d)).into_pyobject(py),
                        None => (off, n, py.None()).into_pyobject(py),
                    })
                })
            })
        });
        cb.finish(r)
    }
}
