//! `Pool`: images in a pool (list, create, remove, rename, open), pool stats, and RADOS object
//! I/O for small metadata objects (backup manifests and the like).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{PyResultExt, Table};
use crate::image::Image;
use crate::progress::{self, CancelToken};
use crate::util::{datetime_utc, image_options, with_bytes, ReleaseOnDrop};

/// An open pool (optionally one RBD namespace of it). Cheap to share between threads.
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Pool {
    pub(crate) inner: ReleaseOnDrop<rbd_core::Pool>,
}

impl Pool {
    pub(crate) fn wrap(p: rbd_core::Pool) -> Pool {
        Pool { inner: ReleaseOnDrop::new(p) }
    }
}

/// An image in a pool listing (`rbd_list2`).
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    /// Image id.
    pub id: String,
    /// Image name.
    pub name: String,
}

#[pymethods]
impl ImageSpec {
    fn __repr__(&self) -> String {
        format!("ImageSpec(id={:?}, name={:?})", self.id, self.name)
    }
}

/// Pool usage (`rados_ioctx_pool_stat`).
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes stored.
    pub bytes: u64,
    /// Number of objects.
    pub objects: u64,
}

#[pymethods]
impl PoolStats {
    fn __repr__(&self) -> String {
        format!("PoolStats(bytes={}, objects={})", self.bytes, self.objects)
    }
}

/// Size and modification time of a RADOS object (`rados_stat`).
#[pyclass(module = "rbd_core._native", frozen, eq)]
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectStat {
    /// Size in bytes.
    #[pyo3(get)]
    pub size: u64,
    mtime_secs: i64,
}

#[pymethods]
impl ObjectStat {
    /// Last modification (UTC ``datetime``).
    #[getter]
    fn mtime<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime_utc(py, self.mtime_secs as f64)
    }

    /// Last modification, seconds since the epoch.
    #[getter]
    fn mtime_epoch(&self) -> i64 {
        self.mtime_secs
    }

    fn __repr__(&self) -> String {
        format!("ObjectStat(size={}, mtime_epoch={})", self.size, self.mtime_secs)
    }
}

#[pymethods]
impl Pool {
    /// The pool name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// The RBD namespace ("" for the default one).
    #[getter]
    fn namespace(&self) -> String {
        self.inner.namespace().to_string()
    }

    /// The pool id.
    #[getter]
    fn id(&self) -> i64 {
        self.inner.id()
    }

    /// A handle on another namespace of the same pool.
    fn with_namespace(&self, py: Python<'_>, namespace: String) -> PyResult<Pool> {
        let p = py.detach(|| self.inner.with_namespace(&namespace)).py()?;
        Ok(Pool::wrap(p))
    }

    /// Image names, sorted.
    fn list_images(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.image_names()).py()
    }

    /// Images with their ids (directory order).
    fn image_specs(&self, py: Python<'_>) -> PyResult<Vec<ImageSpec>> {
        let v = py.detach(|| self.inner.list_images()).py()?;
        Ok(v.into_iter().map(|s| ImageSpec { id: s.id, name: s.name }).collect())
    }

    /// True when the image exists.
    fn image_exists(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        py.detach(|| self.inner.image_exists(&name)).py()
    }

    /// Creates an image. Unset options take librbd's defaults (``rbd_default_*``).
    #[pyo3(signature = (name, size, order=None, features=None, stripe_unit=None, stripe_count=None, data_pool=None))]
    #[allow(clippy::too_many_arguments)]
    fn create_image(
        &self,
        py: Python<'_>,
        name: String,
        size: u64,
        order: Option<u8>,
        features: Option<u64>,
        stripe_unit: Option<u64>,
        stripe_count: Option<u64>,
        data_pool: Option<String>,
    ) -> PyResult<()> {
        let o = image_options(order, features, stripe_unit, stripe_count, data_pool.as_deref());
        py.detach(|| self.inner.create_image(&name, size, &o)).py()
    }

    /// Removes an image, reporting progress to ``on_progress(done, total)`` (return False to
    /// cancel). Ctrl-C and ``cancel`` stop it too.
    #[pyo3(signature = (name, on_progress=None, cancel=None))]
    fn remove_image(
        &self,
        py: Python<'_>,
        name: String,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        progress::run(py, on_progress, cancel, Table::Image, |p| Ok(self.inner.remove_image_with_progress(&name, p)))
    }

    /// Renames an image.
    fn rename_image(&self, py: Python<'_>, src: String, dst: String) -> PyResult<()> {
        py.detach(|| self.inner.rename_image(&src, &dst)).py()
    }

    /// Opens an image: at ``snapshot`` (read-only) or its head, read-only when ``read_only``.
    #[pyo3(signature = (name, snapshot=None, read_only=false))]
    fn open(&self, py: Python<'_>, name: String, snapshot: Option<String>, read_only: bool) -> PyResult<Image> {
        let img = py
            .detach(|| match &snapshot {
                Some(s) => rbd_core::Image::open_at_snap(&self.inner, &name, s),
                None if read_only => rbd_core::Image::open_read_only(&self.inner, &name),
                None => rbd_core::Image::open(&self.inner, &name),
            })
            .py()?;
        Ok(Image::wrap(img))
    }

    /// Opens an image by id (works for images in the trash too).
    #[pyo3(signature = (image_id, read_only=false))]
    fn open_by_id(&self, py: Python<'_>, image_id: String, read_only: bool) -> PyResult<Image> {
        let img = py.detach(|| rbd_core::Image::open_by_id(&self.inner, &image_id, read_only)).py()?;
        Ok(Image::wrap(img))
    }

    /// Pool usage.
    fn stats(&self, py: Python<'_>) -> PyResult<PoolStats> {
        let s = py.detach(|| self.inner.stats()).py()?;
        Ok(PoolStats { bytes: s.bytes, objects: s.objects })
    }

    /// Replaces the whole content of RADOS object ``oid`` with ``data`` (any buffer).
    fn object_write_full(&self, py: Python<'_>, oid: String, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = with_bytes(data)?;
        let d: &[u8] = &d;
        py.detach(|| self.inner.object_write_full(&oid, d)).py()
    }

    /// Writes ``data`` (any buffer) at ``offset`` of RADOS object ``oid`` (created if missing).
    #[pyo3(signature = (oid, data, offset=0))]
    fn object_write(&self, py: Python<'_>, oid: String, data: &Bound<'_, PyAny>, offset: u64) -> PyResult<()> {
        let d = with_bytes(data)?;
        let d: &[u8] = &d;
        py.detach(|| self.inner.object_write(&oid, d, offset)).py()
    }

    /// Reads ``length`` bytes (the whole object when None) at ``offset`` of RADOS object
    /// ``oid``. Raises ImageNotFound (ENOENT) when it does not exist.
    #[pyo3(signature = (oid, length=None, offset=0))]
    fn object_read<'py>(
        &self,
        py: Python<'py>,
        oid: String,
        length: Option<usize>,
        offset: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let v = py
            .detach(|| match length {
                Some(n) => self.inner.object_read(&oid, n, offset),
                None => {
                    let (size, _) = self.inner.object_stat(&oid)?;
                    let n = usize::try_from(size.saturating_sub(offset)).unwrap_or(usize::MAX);
                    self.inner.object_read(&oid, n, offset)
                }
            })
            .py()?;
        Ok(PyBytes::new(py, &v))
    }

    /// Size and mtime of RADOS object ``oid``.
    fn object_stat(&self, py: Python<'_>, oid: String) -> PyResult<ObjectStat> {
        let (size, mtime) = py.detach(|| self.inner.object_stat(&oid)).py()?;
        Ok(ObjectStat { size, mtime_secs: mtime })
    }

    /// Removes RADOS object ``oid``.
    fn object_remove(&self, py: Python<'_>, oid: String) -> PyResult<()> {
        py.detach(|| self.inner.object_remove(&oid)).py()
    }

    /// Names of the RADOS objects in this pool (and namespace).
    fn object_list(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.object_list()).py()
    }

    fn __repr__(&self) -> String {
        if self.inner.namespace().is_empty() {
            format!("<rbd_core.Pool {}>", self.inner.name())
        } else {
            format!("<rbd_core.Pool {}/{}>", self.inner.name(), self.inner.namespace())
        }
    }
}
