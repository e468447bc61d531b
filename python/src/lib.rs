//! PyO3 bindings of rbd-core: the `rbd_core._native` module.
//!
//! No logic lives here beyond argument conversion and GIL handling: every blocking call runs
//! inside `py.detach` (the GIL is released), and every `rbd_core::Error` becomes the matching
//! exception class from `rbd_core.errors` (defined once, in Python).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// Converts a library error into the `rbd_core.errors` exception for its kind.
pub(crate) fn to_py(e: rbd_core::Error) -> PyErr {
    Python::attach(|py| {
        let made = py.import("rbd_core.errors").and_then(|m| {
            m.getattr("_make")?.call1((format!("{:?}", e.kind()), e.errno(), e.to_string(), e.op(), e.target()))
        });
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(import_err) => import_err,
        }
    })
}

/// Extension trait: `.py()?` on library results.
pub(crate) trait PyResultExt<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> PyResultExt<T> for rbd_core::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Copies any object exporting the buffer protocol (bytes, bytearray, memoryview, numpy)
/// into an owned vector, so the GIL can be released while librbd uses it.
pub(crate) fn buffer_to_vec(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let buf: PyBuffer<u8> = PyBuffer::get(obj)?;
    buf.to_vec(obj.py())
}

/// A connection to a Ceph cluster (context manager).
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Cluster {
    pub(crate) inner: rbd_core::Cluster,
}

#[pymethods]
impl Cluster {
    /// Connects as ``client.<client_id>`` using ``conffile`` (or CEPH_CONF / the default
    /// search). ``conf`` holds extra option overrides, ``timeout`` (seconds) bounds connect and
    /// monitor operations. With ``shared=True`` (the default, and only when no overrides are
    /// given) the process-wide connection for (conffile, client_id) is reused.
    #[new]
    #[pyo3(signature = (conffile=None, client_id="admin", conf=None, keyring=None, timeout=None, shared=true))]
    fn new(
        py: Python<'_>,
        conffile: Option<PathBuf>,
        client_id: &str,
        conf: Option<Vec<(String, String)>>,
        keyring: Option<PathBuf>,
        timeout: Option<f64>,
        shared: bool,
    ) -> PyResult<Self> {
        let client_id = client_id.to_string();
        let plain = conf.as_ref().is_none_or(Vec::is_empty) && keyring.is_none() && timeout.is_none();
        let inner = py.detach(move || {
            if shared && plain {
                return rbd_core::Cluster::shared(conffile.as_deref(), &client_id);
            }
            let mut b = rbd_core::ClusterBuilder::new(client_id);
            if let Some(c) = &conffile {
                b.conf_file(c);
            }
            if let Some(k) = &keyring {
                b.keyring(k);
            }
            if let Some(t) = timeout {
                b.timeout(Duration::from_secs_f64(t.max(1.0)));
            }
            for (k, v) in conf.unwrap_or_default() {
                b.set(k, v);
            }
            b.connect()
        });
        Ok(Cluster { inner: inner.py()? })
    }

    /// The cluster fsid.
    fn fsid(&self, py: Python<'_>) -> PyResult<String> {
        let c = self.inner.clone();
        py.detach(move || c.fsid()).py()
    }

    /// The client id this connection authenticated as.
    #[getter]
    fn client_id(&self) -> String {
        self.inner.client_id().to_string()
    }

    /// Pool names.
    fn pool_list(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let c = self.inner.clone();
        py.detach(move || c.pool_list()).py()
    }

    /// Cluster usage: dict with ``total_bytes``, ``used_bytes``, ``avail_bytes``, ``num_objects``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.clone();
        let s = py.detach(move || c.stats()).py()?;
        let d = PyDict::new(py);
        d.set_item("total_bytes", s.total_bytes)?;
        d.set_item("used_bytes", s.used_bytes)?;
        d.set_item("avail_bytes", s.avail_bytes)?;
        d.set_item("num_objects", s.num_objects)?;
        Ok(d)
    }

    /// Sends a JSON command to the monitors; returns ``(output bytes, status string)``.
    #[pyo3(signature = (cmd, inbuf=b"".to_vec()))]
    fn mon_command<'py>(&self, py: Python<'py>, cmd: String, inbuf: Vec<u8>) -> PyResult<(Bound<'py, PyBytes>, String)> {
        let c = self.inner.clone();
        let (out, status) = py.detach(move || c.mon_command(&cmd, &inbuf)).py()?;
        Ok((PyBytes::new(py, &out), status))
    }

    /// A configuration value.
    fn conf_get(&self, py: Python<'_>, key: String) -> PyResult<String> {
        let c = self.inner.clone();
        py.detach(move || c.conf_get(&key)).py()
    }

    /// Opens a pool (optionally a namespace in it).
    #[pyo3(signature = (name, namespace=""))]
    fn open_pool(&self, py: Python<'_>, name: String, namespace: &str) -> PyResult<Pool> {
        let c = self.inner.clone();
        let ns = namespace.to_string();
        let p = py.detach(move || rbd_core::Pool::open_ns(&c, &name, &ns)).py()?;
        Ok(Pool { inner: p })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaving the block drops this handle's reference (shared connections stay cached).
    fn __exit__(&self, _t: Option<Bound<'_, PyAny>>, _v: Option<Bound<'_, PyAny>>, _tb: Option<Bound<'_, PyAny>>) -> bool {
        false
    }

    fn __repr__(&self) -> String {
        format!("<rbd_core.Cluster client.{}>", self.inner.client_id())
    }
}

/// An open pool.
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Pool {
    pub(crate) inner: rbd_core::Pool,
}

#[pymethods]
impl Pool {
    /// The pool name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// The namespace ("" for the default one).
    #[getter]
    fn namespace(&self) -> String {
        self.inner.namespace().to_string()
    }

    /// Image names, sorted.
    fn list_images(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let p = self.inner.clone();
        py.detach(move || p.image_names()).py()
    }

    /// True when the image exists.
    fn image_exists(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        let p = self.inner.clone();
        py.detach(move || p.image_exists(&name)).py()
    }

    /// Creates an image.
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
        let mut o = rbd_core::ImageOptions::new();
        if let Some(v) = order {
            o.order(v);
        }
        if let Some(f) = features {
            o.features(rbd_core::Features(f));
        }
        if stripe_unit.is_some() || stripe_count.is_some() {
            o.stripe(stripe_unit.unwrap_or(0), stripe_count.unwrap_or(1));
        }
        if let Some(d) = &data_pool {
            o.data_pool(d);
        }
        let p = self.inner.clone();
        py.detach(move || p.create_image(&name, size, &o)).py()
    }

    /// Removes an image.
    fn remove_image(&self, py: Python<'_>, name: String) -> PyResult<()> {
        let p = self.inner.clone();
        py.detach(move || p.remove_image(&name)).py()
    }

    /// Renames an image.
    fn rename_image(&self, py: Python<'_>, src: String, dst: String) -> PyResult<()> {
        let p = self.inner.clone();
        py.detach(move || p.rename_image(&src, &dst)).py()
    }

    /// Opens an image (read-only when ``read_only`` or at a ``snapshot``).
    #[pyo3(signature = (name, snapshot=None, read_only=false))]
    fn open(&self, py: Python<'_>, name: String, snapshot: Option<String>, read_only: bool) -> PyResult<Image> {
        let p = self.inner.clone();
        let img = py
            .detach(move || match snapshot {
                Some(s) => rbd_core::Image::open_at_snap(&p, &name, &s),
                None if read_only => rbd_core::Image::open_read_only(&p, &name),
                None => rbd_core::Image::open(&p, &name),
            })
            .py()?;
        Ok(Image { inner: Arc::new(Mutex::new(Some(img))) })
    }

    fn __repr__(&self) -> String {
        format!("<rbd_core.Pool {}>", self.inner.name())
    }
}

/// An open image (context manager). Thread-safe: the handle sits behind a mutex taken with
/// the GIL released.
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Image {
    pub(crate) inner: Arc<Mutex<Option<rbd_core::Image>>>,
}

impl Image {
    /// Runs `f` on the open image with the GIL released.
    pub(crate) fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&rbd_core::Image) -> rbd_core::Result<T> + Send,
    ) -> PyResult<T> {
        let inner = self.inner.clone();
        let r = py.detach(move || {
            let g = inner.lock();
            g.as_ref().map(f)
        });
        match r {
            Some(r) => r.py(),
            None => Err(PyValueError::new_err("image is closed")),
        }
    }
}

#[pymethods]
impl Image {
    /// The image name.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |i| Ok(i.name().to_string()))
    }

    /// Size in bytes.
    fn size(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |i| i.size())
    }

    /// ``rbd info``-style facts: size, obj_size, num_objs, order, block_name_prefix.
    fn stat<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(py, |i| i.stat())?;
        let d = PyDict::new(py);
        d.set_item("size", s.size)?;
        d.set_item("obj_size", s.obj_size)?;
        d.set_item("num_objs", s.num_objs)?;
        d.set_item("order", s.order)?;
        d.set_item("block_name_prefix", s.block_name_prefix)?;
        Ok(d)
    }

    /// Reads ``length`` bytes at ``offset``.
    fn read<'py>(&self, py: Python<'py>, offset: u64, length: usize) -> PyResult<Bound<'py, PyBytes>> {
        let v = self.with(py, move |i| i.read_vec(offset, length))?;
        Ok(PyBytes::new(py, &v))
    }

    /// Writes any buffer at ``offset``; returns the byte count.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>, offset: u64) -> PyResult<usize> {
        let v = buffer_to_vec(data)?;
        let n = v.len();
        self.with(py, move |i| i.write(offset, &v))?;
        Ok(n)
    }

    /// Discards a range.
    fn discard(&self, py: Python<'_>, offset: u64, length: u64) -> PyResult<()> {
        self.with(py, move |i| i.discard(offset, length))
    }

    /// Writes zeros over a range.
    fn write_zeroes(&self, py: Python<'_>, offset: u64, length: u64) -> PyResult<()> {
        self.with(py, move |i| i.write_zeroes(offset, length, false))
    }

    /// Flushes cached writes.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |i| i.flush())
    }

    /// Resizes (shrinking needs ``allow_shrink``).
    #[pyo3(signature = (size, allow_shrink=true))]
    fn resize(&self, py: Python<'_>, size: u64, allow_shrink: bool) -> PyResult<()> {
        self.with(py, move |i| i.resize(size, allow_shrink))
    }

    /// Closes the handle (idempotent).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        let r = py.detach(move || inner.lock().take().map(rbd_core::Image::close));
        match r {
            Some(r) => r.py(),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

/// The running librbd version as (major, minor, extra).
#[pyfunction]
fn librbd_version() -> (i32, i32, i32) {
    rbd_core::librbd_version()
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Forward library log records (tracing → log) to Python's logging, under "rbd_core.*".
    let _ = pyo3_log::try_init();
    m.add_class::<Cluster>()?;
    m.add_class::<Pool>()?;
    m.add_class::<Image>()?;
    m.add_function(wrap_pyfunction!(librbd_version, m)?)?;
    Ok(())
}
