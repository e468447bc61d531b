//! Placement (`rbd_core.placement`): Cinder's scheduler over RBD pools — gather each backend's
//! stats, filter by capacity and capabilities, weigh by free space, create on the best backend
//! and move on to the next when creation fails.
//!
//! Stats and creation run with the GIL released; a Python ``create`` callable takes it back
//! for its call only.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use rbd_core::recipes::placement;
use rbd_core::ErrorKind;

use crate::cluster::Cluster;
use crate::errors::PyResultExt;
use crate::pool::Pool;
use crate::recipes_glance::opt_repr;
use crate::util::image_options;

/// A backend a volume can go to: ``pool`` on ``cluster``, with Cinder's per-backend settings
/// (``capabilities`` as strings, ``reserved_percentage``, ``max_over_subscription_ratio``,
/// ``thin_provisioning``, and ``provisioned_bytes`` — None sums the pool's image sizes).
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Backend {
    name: String,
    cluster: Py<Cluster>,
    pool: String,
    capabilities: BTreeMap<String, String>,
    reserved_percentage: f64,
    max_over_subscription_ratio: f64,
    thin_provisioning: bool,
    provisioned_bytes: Option<u64>,
}

impl Backend {
    fn lib(&self, py: Python<'_>) -> placement::Backend {
        let mut b = placement::Backend::new(&self.name, &self.cluster.bind(py).get().inner, &self.pool);
        for (k, v) in &self.capabilities {
            b.capability(k, v);
        }
        b.reserved_percentage(self.reserved_percentage)
            .max_over_subscription_ratio(self.max_over_subscription_ratio)
            .thin_provisioning(self.thin_provisioning)
            .provisioned_bytes(self.provisioned_bytes);
        b
    }
}

#[pymethods]
impl Backend {
    #[new]
    #[pyo3(signature = (name, cluster, pool, capabilities=None, reserved_percentage=0.0, max_over_subscription_ratio=20.0, thin_provisioning=true, provisioned_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        cluster: Py<Cluster>,
        pool: String,
        capabilities: Option<BTreeMap<String, String>>,
        reserved_percentage: f64,
        max_over_subscription_ratio: f64,
        thin_provisioning: bool,
        provisioned_bytes: Option<u64>,
    ) -> Self {
        Backend {
            name,
            cluster,
            pool,
            capabilities: capabilities.unwrap_or_default(),
            reserved_percentage,
            max_over_subscription_ratio,
            thin_provisioning,
            provisioned_bytes,
        }
    }

    /// Name used in results and messages (Cinder's ``host@backend#pool``).
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The connection.
    #[getter]
    fn cluster(&self, py: Python<'_>) -> Py<Cluster> {
        self.cluster.clone_ref(py)
    }

    /// The pool name.
    #[getter]
    fn pool(&self) -> String {
        self.pool.clone()
    }

    /// Reported capabilities.
    #[getter]
    fn capabilities(&self) -> BTreeMap<String, String> {
        self.capabilities.clone()
    }

    /// ``reserved_percentage``.
    #[getter]
    fn reserved_percentage(&self) -> f64 {
        self.reserved_percentage
    }

    /// ``max_over_subscription_ratio``.
    #[getter]
    fn max_over_subscription_ratio(&self) -> f64 {
        self.max_over_subscription_ratio
    }

    /// ``thin_provisioning_support``.
    #[getter]
    fn thin_provisioning(&self) -> bool {
        self.thin_provisioning
    }

    /// Stated provisioned capacity (None: summed from the pool's images).
    #[getter]
    fn provisioned_bytes(&self) -> Option<u64> {
        self.provisioned_bytes
    }

    fn __repr__(&self) -> String {
        format!("Backend(name={:?}, pool={:?}, capabilities={:?})", self.name, self.pool, self.capabilities)
    }
}

/// A backend's figures as Cinder's RBD driver reports them.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct BackendStats {
    /// Backend name.
    pub name: String,
    /// ``free + used``.
    pub total_bytes: u64,
    /// Free bytes (quota-aware).
    pub free_bytes: u64,
    /// Bytes stored in the pool.
    pub used_bytes: u64,
    /// Provisioned bytes.
    pub provisioned_bytes: u64,
    /// The pool's byte quota, when set.
    pub quota_bytes: Option<u64>,
    /// The pool's ``max_avail``.
    pub max_avail_bytes: u64,
    /// ``reserved_percentage``.
    pub reserved_percentage: f64,
    /// ``max_over_subscription_ratio``.
    pub max_over_subscription_ratio: f64,
    /// Thin provisioning support.
    pub thin_provisioning: bool,
    /// Capabilities.
    pub capabilities: BTreeMap<String, String>,
}

#[pymethods]
impl BackendStats {
    fn __repr__(&self) -> String {
        format!(
            "BackendStats(name={:?}, total_bytes={}, free_bytes={}, used_bytes={}, provisioned_bytes={}, quota_bytes={})",
            self.name,
            self.total_bytes,
            self.free_bytes,
            self.used_bytes,
            self.provisioned_bytes,
            opt_repr(&self.quota_bytes)
        )
    }
}

impl From<placement::BackendStats> for BackendStats {
    fn from(s: placement::BackendStats) -> Self {
        BackendStats {
            name: s.name,
            total_bytes: s.total_bytes,
            free_bytes: s.free_bytes,
            used_bytes: s.used_bytes,
            provisioned_bytes: s.provisioned_bytes,
            quota_bytes: s.quota_bytes,
            max_avail_bytes: s.max_avail_bytes,
            reserved_percentage: s.reserved_percentage,
            max_over_subscription_ratio: s.max_over_subscription_ratio,
            thin_provisioning: s.thin_provisioning,
            capabilities: s.capabilities,
        }
    }
}

/// A candidate backend and its weight (higher goes first).
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct Weighed {
    /// Backend name.
    pub name: String,
    /// Normalised weight × multiplier.
    pub weight: f64,
}

#[pymethods]
impl Weighed {
    fn __repr__(&self) -> String {
        format!("Weighed(name={:?}, weight={})", self.name, self.weight)
    }
}

/// A backend that was filtered out, and why.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Rejected {
    /// Backend name.
    pub backend: String,
    /// Why (stats error, capacity, capability).
    pub reason: String,
}

#[pymethods]
impl Rejected {
    fn __repr__(&self) -> String {
        format!("Rejected(backend={:?}, reason={:?})", self.backend, self.reason)
    }
}

/// The outcome of filtering and weighing.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct Schedule {
    /// Backends that passed, best first.
    pub order: Vec<Weighed>,
    /// Backends filtered out.
    pub rejected: Vec<Rejected>,
}

#[pymethods]
impl Schedule {
    fn __repr__(&self) -> String {
        format!(
            "Schedule(order={:?}, rejected={:?})",
            self.order.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
            self.rejected.iter().map(|r| r.backend.as_str()).collect::<Vec<_>>()
        )
    }
}

/// A creation attempt that failed on a backend: ``kind`` is the error kind's name
/// (``"Exists"``, ``"PermissionDenied"``, ...).
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FailedAttempt {
    /// Backend name.
    pub backend: String,
    /// The error kind's name.
    pub kind: String,
    /// The error, as text.
    pub error: String,
}

#[pymethods]
impl FailedAttempt {
    fn __repr__(&self) -> String {
        format!("FailedAttempt(backend={:?}, kind={:?}, error={:?})", self.backend, self.kind, self.error)
    }
}

/// Where a volume was created, with what ``create`` returned (``value``).
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Placed {
    backend: String,
    pool: String,
    image: String,
    value: Py<PyAny>,
    failed: Vec<FailedAttempt>,
    rejected: Vec<Rejected>,
}

#[pymethods]
impl Placed {
    /// The backend that took it.
    #[getter]
    fn backend(&self) -> String {
        self.backend.clone()
    }

    /// Its pool.
    #[getter]
    fn pool(&self) -> String {
        self.pool.clone()
    }

    /// The image name (``volume-<id>``).
    #[getter]
    fn image(&self) -> String {
        self.image.clone()
    }

    /// What the create callable returned (None for the default create).
    #[getter]
    fn value(&self, py: Python<'_>) -> Py<PyAny> {
        self.value.clone_ref(py)
    }

    /// Earlier attempts that failed, in order.
    #[getter]
    fn failed(&self) -> Vec<FailedAttempt> {
        self.failed.clone()
    }

    /// Backends filtered out.
    #[getter]
    fn rejected(&self) -> Vec<Rejected> {
        self.rejected.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Placed(backend={:?}, pool={:?}, image={:?}, failed={}, rejected={})",
            self.backend,
            self.pool,
            self.image,
            self.failed.len(),
            self.rejected.len()
        )
    }
}

/// A library error for an exception raised by a ``create`` callable: the kind follows its
/// ``errno`` when it has one.
fn py_to_lib(py: Python<'_>, e: &PyErr) -> rbd_core::Error {
    let v = e.value(py);
    let errno: Option<i32> = v.getattr("errno").ok().and_then(|x| x.extract().ok());
    let kind = errno.map_or(ErrorKind::Other, ErrorKind::from_errno);
    let text = v.str().map(|s| s.to_string()).unwrap_or_default();
    let tname = v.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    rbd_core::Error::new(kind, "placement.create", format!("{tname}: {text}"))
}

/// Cinder's scheduler: ``weight_multiplier`` (1: most free first, spreading; negative:
/// stacking), ``max_attempts`` (backends tried), ``require`` (capability → value, with
/// Cinder's operators such as ``"<or> a <or> b"``, ``">= 10"``), ``thick`` (judge by free space
/// only).
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Scheduler {
    inner: placement::Scheduler,
}

#[pymethods]
impl Scheduler {
    #[new]
    #[pyo3(signature = (weight_multiplier=1.0, max_attempts=3, require=None, thick=false))]
    fn new(
        weight_multiplier: f64,
        max_attempts: usize,
        require: Option<BTreeMap<String, String>>,
        thick: bool,
    ) -> Self {
        let mut s = placement::Scheduler::new();
        s.weight_multiplier(weight_multiplier).max_attempts(max_attempts).thick(thick);
        for (k, v) in require.unwrap_or_default() {
            s.require(&k, &v);
        }
        Scheduler { inner: s }
    }

    /// Gathers every backend's stats, filters and weighs them (nothing is created).
    fn plan(&self, py: Python<'_>, backends: Vec<PyRef<'_, Backend>>, size: u64) -> Schedule {
        let libs: Vec<placement::Backend> = backends.iter().map(|b| b.lib(py)).collect();
        let s = &self.inner;
        let sch = py.detach(|| s.plan(&libs, size));
        Schedule {
            order: sch.order.into_iter().map(|w| Weighed { name: w.name, weight: w.weight }).collect(),
            rejected: sch.rejected.into_iter().map(|r| Rejected { backend: r.backend, reason: r.reason }).collect(),
        }
    }

    /// Places volume ``volume-<volume_id>`` of ``size`` bytes: creates it on the best backend,
    /// then the next ones when creation fails, up to ``max_attempts``. ``create(backend, pool,
    /// image, size)`` does the creating (its return value becomes ``Placed.value``; it must leave
    /// nothing behind when it raises); by default an image with ``order``/``features`` is
    /// created. NoSpace ("No valid backend was found ...", naming every backend and why) when
    /// nothing worked.
    #[pyo3(signature = (backends, volume_id, size, create=None, order=None, features=None))]
    #[allow(clippy::too_many_arguments)]
    fn place_and_create(
        &self,
        py: Python<'_>,
        backends: Vec<Py<Backend>>,
        volume_id: &str,
        size: u64,
        create: Option<Py<PyAny>>,
        order: Option<u8>,
        features: Option<u64>,
    ) -> PyResult<Placed> {
        let libs: Vec<placement::Backend> = backends.iter().map(|b| b.bind(py).get().lib(py)).collect();
        let s = &self.inner;
        let placed = match create {
            None => {
                let opts = image_options(order, features, None, None, None);
                py.detach(|| s.place_and_create(&libs, volume_id, size, placement::create_volume_image(&opts)))
                    .py()?
                    .map_value(|()| py.None())
            }
            Some(f) => {
                // A BaseException that is not an Exception (KeyboardInterrupt, SystemExit) stops
                // the placement: later attempts are not made and it is raised.
                let fatal: Mutex<Option<PyErr>> = Mutex::new(None);
                let (backends, fatal_ref) = (&backends, &fatal);
                let call = move |b: &placement::Backend, pool: &rbd_core::Pool, image: &str, size: u64| {
                    if fatal_ref.lock().is_some() {
                        return Err(rbd_core::Error::new(ErrorKind::Cancelled, "placement.create", "interrupted"));
                    }
                    Python::attach(|py| {
                        let obj = backends.iter().find(|o| o.bind(py).get().name == b.name).map(|o| o.clone_ref(py));
                        let pool = Pool::wrap(pool.clone());
                        match f.call1(py, (obj, pool, image, size)) {
                            Ok(v) => Ok(v),
                            Err(e) => {
                                let lib = py_to_lib(py, &e);
                                if !e.is_instance_of::<PyException>(py) {
                                    fatal_ref.lock().get_or_insert(e);
                                }
                                Err(lib)
                            }
                        }
                    })
                };
                let r = py.detach(|| s.place_and_create(&libs, volume_id, size, call));
                if let Some(e) = fatal.lock().take() {
                    return Err(e);
                }
                r.py()?.map_value(|v| v)
            }
        };
        Ok(placed)
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// Maps a library `Placed<T>` into the Python class.
trait IntoPlaced<T> {
    fn map_value(self, f: impl FnOnce(T) -> Py<PyAny>) -> Placed;
}

impl<T> IntoPlaced<T> for placement::Placed<T> {
    fn map_value(self, f: impl FnOnce(T) -> Py<PyAny>) -> Placed {
        Placed {
            backend: self.backend,
            pool: self.pool,
            image: self.image,
            value: f(self.value),
            failed: self
                .failed
                .into_iter()
                .map(|a| FailedAttempt { backend: a.backend, kind: format!("{:?}", a.kind), error: a.error })
                .collect(),
            rejected: self.rejected.into_iter().map(|r| Rejected { backend: r.backend, reason: r.reason }).collect(),
        }
    }
}

/// ``backend``'s stats (monitor ``df`` and quota, plus provisioned sizes).
#[pyfunction]
pub(crate) fn placement_gather_stats(py: Python<'_>, backend: &Backend) -> PyResult<BackendStats> {
    let b = backend.lib(py);
    Ok(py.detach(|| placement::gather_stats(&b)).py()?.into())
}
