//! `Image`: an open image (context manager): I/O, size, features, geometry, snapshot
//! selection, watchers. Snapshots, layering, locks, metadata, diff and copy add their methods
//! from their own files.
//!
//! Thread safety: the handle sits behind a `RwLock` taken with the GIL released. Every
//! operation takes it shared (librbd handles are used concurrently by QEMU's I/O threads), so
//! threads sharing one `Image` run their I/O in parallel; `close` and `set_snap` take it
//! exclusively.

use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{closed, PyResultExt, Table};
use crate::progress::{self, CancelToken};
use crate::util::with_bytes;

/// An open image (context manager). Safe to share between threads.
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Image {
    inner: RwLock<Option<rbd_core::Image>>,
    spec: String,
    name: String,
}

impl Drop for Image {
    fn drop(&mut self) {
        // Closing flushes and may wait for the cluster: never with the GIL held.
        if let Some(img) = self.inner.get_mut().take() {
            Python::attach(|py| py.detach(move || drop(img)));
        }
    }
}

impl Image {
    pub(crate) fn wrap(img: rbd_core::Image) -> Image {
        Image { spec: img.spec(), name: img.name().to_string(), inner: RwLock::new(Some(img)) }
    }

    /// Runs `f` on the open image with the GIL released (shared lock).
    pub(crate) fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&rbd_core::Image) -> rbd_core::Result<T> + Send,
    ) -> PyResult<T> {
        match py.detach(|| self.inner.read_recursive().as_ref().map(f)) {
            Some(r) => r.py(),
            None => Err(closed("image")),
        }
    }

    /// Runs `f` on the open image, leaving its error unmapped (call it inside `detach`).
    pub(crate) fn with_lib<T>(
        &self,
        f: impl FnOnce(&rbd_core::Image) -> rbd_core::Result<T>,
    ) -> PyResult<rbd_core::Result<T>> {
        self.inner.read_recursive().as_ref().map(f).ok_or_else(|| closed("image"))
    }

    /// ``pool/[namespace/]image[@snap]`` as opened.
    pub(crate) fn spec_str(&self) -> &str {
        &self.spec
    }

    /// The image name.
    pub(crate) fn name_str(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the open image with the GIL released (exclusive lock: changes the handle).
    pub(crate) fn with_mut<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut rbd_core::Image) -> rbd_core::Result<T> + Send,
    ) -> PyResult<T> {
        match py.detach(|| self.inner.write().as_mut().map(f)) {
            Some(r) => r.py(),
            None => Err(closed("image")),
        }
    }

    /// Runs a long operation with progress, cancellation and Ctrl-C (see `progress`).
    pub(crate) fn with_progress<T: Send>(
        &self,
        py: Python<'_>,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
        f: impl FnOnce(&rbd_core::Image, &mut rbd_core::Progress<'_>) -> rbd_core::Result<T> + Send,
    ) -> PyResult<T> {
        progress::run(py, on_progress, cancel, Table::Image, |p| match self.inner.read().as_ref() {
            Some(img) => Ok(f(img, p)),
            None => Err(closed("image")),
        })
    }
}

/// ``rbd info``-style facts (`rbd_stat`).
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes.
    pub obj_size: u64,
    /// Number of objects.
    pub num_objs: u64,
    /// Object order (log2 of the object size).
    pub order: u8,
    /// RADOS object name prefix.
    pub block_name_prefix: String,
}

#[pymethods]
impl ImageInfo {
    fn __repr__(&self) -> String {
        format!(
            "ImageInfo(size={}, obj_size={}, num_objs={}, order={}, block_name_prefix={:?})",
            self.size, self.obj_size, self.num_objs, self.order, self.block_name_prefix
        )
    }
}

/// A client watching an image (`rbd_watchers_list`).
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Watcher {
    /// Client address.
    pub addr: String,
    /// Client global id (``client.<id>``).
    pub id: i64,
    /// Watch cookie.
    pub cookie: u64,
}

#[pymethods]
impl Watcher {
    fn __repr__(&self) -> String {
        format!("Watcher(addr={:?}, id={}, cookie={})", self.addr, self.id, self.cookie)
    }
}

#[pymethods]
impl Image {
    /// The image name.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// ``pool/[namespace/]image[@snap]`` as opened.
    #[getter]
    fn spec(&self) -> String {
        self.spec.clone()
    }

    /// True once closed.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        py.detach(|| self.inner.read().is_none())
    }

    /// True for a read-only handle (opened read-only or at a snapshot).
    #[getter]
    fn read_only(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |i| Ok(i.is_read_only()))
    }

    /// The snapshot this handle reads (None for the head).
    #[getter]
    fn snapshot(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.with(py, |i| Ok(i.snap_name().map(str::to_string)))
    }

    /// The image id.
    fn id(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |i| i.id())
    }

    /// Size in bytes.
    fn size(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |i| i.size())
    }

    /// Size, object size and count, order, block name prefix.
    fn stat(&self, py: Python<'_>) -> PyResult<ImageInfo> {
        let s = self.with(py, |i| i.stat())?;
        Ok(ImageInfo {
            size: s.size,
            obj_size: s.obj_size,
            num_objs: s.num_objs,
            order: s.order,
            block_name_prefix: s.block_name_prefix,
        })
    }

    /// Reads ``length`` bytes at ``offset`` (fewer at the end of the image; past the end
    /// raises InvalidArgument). ``fadvise_flags``: ``LIBRADOS_OP_FLAG_FADVISE_*``.
    #[pyo3(signature = (offset, length, fadvise_flags=0))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        length: usize,
        fadvise_flags: i32,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let v = self.with(py, move |i| {
            let mut v = vec![0u8; length];
            let n = i.read_with_flags(offset, &mut v, fadvise_flags)?;
            v.truncate(n);
            Ok(v)
        })?;
        Ok(PyBytes::new(py, &v))
    }

    /// Writes ``data`` (bytes, bytearray, memoryview, array, numpy: any buffer) at ``offset``;
    /// returns the byte count.
    #[pyo3(signature = (data, offset, fadvise_flags=0))]
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>, offset: u64, fadvise_flags: i32) -> PyResult<usize> {
        let d = with_bytes(data)?;
        let d: &[u8] = &d;
        self.with(py, move |i| i.write_with_flags(offset, d, fadvise_flags))?;
        Ok(d.len())
    }

    /// Discards (deallocates) a range.
    fn discard(&self, py: Python<'_>, offset: u64, length: u64) -> PyResult<()> {
        self.with(py, move |i| i.discard(offset, length))
    }

    /// Writes zeros over a range (``thick`` allocates instead of punching holes).
    #[pyo3(signature = (offset, length, thick=false))]
    fn write_zeroes(&self, py: Python<'_>, offset: u64, length: u64, thick: bool) -> PyResult<()> {
        self.with(py, move |i| i.write_zeroes(offset, length, thick))
    }

    /// Flushes cached writes.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |i| i.flush())
    }

    /// Drops the client cache.
    fn invalidate_cache(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |i| i.invalidate_cache())
    }

    /// Resizes; shrinking needs ``allow_shrink``. Progress and cancellation as for flatten.
    #[pyo3(signature = (size, allow_shrink=true, on_progress=None, cancel=None))]
    fn resize(
        &self,
        py: Python<'_>,
        size: u64,
        allow_shrink: bool,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        self.with_progress(py, on_progress, cancel, move |i, p| i.resize_with_progress(size, allow_shrink, p))
    }

    /// Feature bits (``RBD_FEATURE_*``).
    fn features(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |i| i.features().map(|f| f.bits()))
    }

    /// Enables or disables features (the mutable ones: exclusive-lock, object-map, fast-diff,
    /// deep-flatten (disable only), journaling).
    fn update_features(&self, py: Python<'_>, features: u64, enabled: bool) -> PyResult<()> {
        self.with(py, move |i| i.update_features(rbd_core::Features(features), enabled))
    }

    /// Operation feature bits (``RBD_OPERATION_FEATURE_*``).
    fn op_features(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |i| i.op_features())
    }

    /// Image flags (``RBD_FLAG_*``).
    fn flags(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |i| i.flags())
    }

    /// Bytes of a clone still backed by its parent.
    fn overlap(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |i| i.overlap())
    }

    /// Stripe unit in bytes.
    fn stripe_unit(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |i| i.stripe_unit())
    }

    /// Stripe count.
    fn stripe_count(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |i| i.stripe_count())
    }

    /// The data pool id (the image's own pool unless it has a separate data pool).
    fn data_pool_id(&self, py: Python<'_>) -> PyResult<i64> {
        self.with(py, |i| i.data_pool_id())
    }

    /// Reads snapshot ``name`` from now on (None: the head; writable again unless opened
    /// read-only).
    #[pyo3(signature = (name))]
    fn set_snap(&self, py: Python<'_>, name: Option<String>) -> PyResult<()> {
        self.with_mut(py, move |i| i.set_snap(name.as_deref()))
    }

    /// Reads snapshot ``snap_id`` (any namespace) from now on (None: the head).
    #[pyo3(signature = (snap_id))]
    fn set_snap_by_id(&self, py: Python<'_>, snap_id: Option<u64>) -> PyResult<()> {
        self.with_mut(py, move |i| i.set_snap_by_id(snap_id))
    }

    /// Clients watching the image (open handles).
    fn watchers(&self, py: Python<'_>) -> PyResult<Vec<Watcher>> {
        let v = self.with(py, |i| i.watchers())?;
        Ok(v.into_iter().map(|w| Watcher { addr: w.addr, id: w.id, cookie: w.cookie }).collect())
    }

    /// Closes the handle (idempotent). Later calls raise ValueError.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        match py.detach(|| self.inner.write().take().map(rbd_core::Image::close)) {
            Some(r) => r.py(),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.closed(py) { " (closed)" } else { "" };
        format!("<rbd_core.Image {}{state}>", self.spec)
    }
}
