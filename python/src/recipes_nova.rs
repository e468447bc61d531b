//! Nova recipes (`rbd_core.nova`): is_cloneable, boot from image, the direct instance
//! snapshot, instance disk deletion with busy retries, and the resize snapshot.
//!
//! Every call releases the GIL; those with progress (snapshot flatten, resize revert) run on the
//! progress worker (Ctrl-C and ``cancel`` stop them, and the recipe undoes).

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use rbd_core::recipes::nova;

use crate::cluster::Cluster;
use crate::errors::{PyResultExt, Table};
use crate::pool::Pool;
use crate::progress::{self, CancelToken};
use crate::recipes_glance::{location_arg, Location};

/// Why a location cannot be cloned (``Cloneability.reason``).
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum NotCloneable {
    /// Not a well-formed ``rbd://`` location.
    BadLocation = 0,
    /// The legacy ``rbd://<image>`` form (no fsid, pool or snapshot).
    Legacy = 1,
    /// The image is on another Ceph cluster.
    OtherCluster = 2,
    /// The disk format is not ``raw``.
    NotRaw = 3,
    /// ``image@snap`` could not be opened for reading (see ``error_kind``).
    Unreadable = 4,
}

/// The answer of ``is_cloneable``: true (``bool(c)``) with the parsed ``location``, or false with
/// a ``reason`` and its ``detail``.
#[pyclass(module = "rbd_core._native", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct Cloneability {
    /// The parsed location when cloneable.
    #[pyo3(get)]
    location: Option<Location>,
    /// Why not, when not cloneable.
    #[pyo3(get)]
    reason: Option<NotCloneable>,
    /// The explanation, when not cloneable.
    #[pyo3(get)]
    detail: Option<String>,
    /// The error kind name (``"NotFound"``, ``"PermissionDenied"``, ...) for ``Unreadable``.
    #[pyo3(get)]
    error_kind: Option<String>,
}

#[pymethods]
impl Cloneability {
    /// True when the location can be cloned.
    #[getter]
    fn cloneable(&self) -> bool {
        self.reason.is_none()
    }

    fn __bool__(&self) -> bool {
        self.cloneable()
    }

    fn __repr__(&self) -> String {
        match (&self.location, &self.reason) {
            (Some(l), _) => format!("Cloneability(cloneable=True, location={:?})", l.inner.to_string()),
            (_, Some(r)) => format!(
                "Cloneability(cloneable=False, reason=NotCloneable.{r:?}, detail={:?})",
                self.detail.as_deref().unwrap_or("")
            ),
            _ => "Cloneability(cloneable=False)".to_string(),
        }
    }
}

impl From<nova::Cloneability> for Cloneability {
    fn from(c: nova::Cloneability) -> Self {
        match c {
            nova::Cloneability::Cloneable(l) => {
                Cloneability { location: Some(Location { inner: l }), reason: None, detail: None, error_kind: None }
            }
            nova::Cloneability::NotCloneable(why) => {
                let detail = Some(why.to_string());
                let (reason, error_kind) = match &why {
                    nova::NotCloneable::BadLocation(_) => (NotCloneable::BadLocation, None),
                    nova::NotCloneable::Legacy => (NotCloneable::Legacy, None),
                    nova::NotCloneable::OtherCluster { .. } => (NotCloneable::OtherCluster, None),
                    nova::NotCloneable::NotRaw(_) => (NotCloneable::NotRaw, None),
                    nova::NotCloneable::Unreadable { kind, .. } => {
                        (NotCloneable::Unreadable, Some(format!("{kind:?}")))
                    }
                };
                Cloneability { location: None, reason: Some(reason), detail, error_kind }
            }
        }
    }
}

/// A disk made by ``boot_disk``.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BootedDisk {
    /// The pool of the disk.
    pub pool: String,
    /// ``<instance uuid>_<disk name>``.
    pub name: String,
    /// The parent, ``pool/image@snap``.
    pub parent: String,
    /// The disk size in bytes.
    pub size: u64,
}

#[pymethods]
impl BootedDisk {
    fn __repr__(&self) -> String {
        format!("BootedDisk(pool={:?}, name={:?}, parent={:?}, size={})", self.pool, self.name, self.parent, self.size)
    }
}

/// The Glance image made by ``snapshot_instance``.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct SnapshotImage {
    /// ``rbd://<fsid>/<glance pool>/<new image id>/snap``.
    pub location: Location,
    /// The image size in bytes.
    pub size: u64,
    /// The temporary snapshot taken on the disk (and removed again).
    pub temp_snap: String,
}

#[pymethods]
impl SnapshotImage {
    fn __repr__(&self) -> String {
        format!(
            "SnapshotImage(location={:?}, size={}, temp_snap={:?})",
            self.location.inner.to_string(),
            self.size,
            self.temp_snap
        )
    }
}

/// What happened to one disk in ``delete_instance_disks``.
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DiskOutcome {
    /// Removed.
    Removed = 0,
    /// Already gone when its turn came.
    NotFound = 1,
    /// Still busy (watchers) after every attempt.
    Busy = 2,
    /// Another error (see ``DiskDeletion.error``).
    Error = 3,
}

/// One disk of ``delete_instance_disks``.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DiskDeletion {
    /// The image name.
    pub name: String,
    /// What happened.
    pub outcome: DiskOutcome,
    /// Remove attempts made.
    pub attempts: u32,
    /// True when a ``nova-resize`` snapshot was removed first.
    pub removed_resize_snap: bool,
    /// The error kind name for ``DiskOutcome.Error``.
    pub error_kind: Option<String>,
    /// The error text for ``DiskOutcome.Error``.
    pub error: Option<String>,
}

#[pymethods]
impl DiskDeletion {
    fn __repr__(&self) -> String {
        format!(
            "DiskDeletion(name={:?}, outcome=DiskOutcome.{:?}, attempts={}, removed_resize_snap={}{})",
            self.name,
            self.outcome,
            self.attempts,
            if self.removed_resize_snap { "True" } else { "False" },
            self.error.as_ref().map(|e| format!(", error={e:?}")).unwrap_or_default()
        )
    }
}

impl From<nova::DiskDeletion> for DiskDeletion {
    fn from(d: nova::DiskDeletion) -> Self {
        let (outcome, error_kind, error) = match d.outcome {
            nova::DiskOutcome::Removed => (DiskOutcome::Removed, None, None),
            nova::DiskOutcome::NotFound => (DiskOutcome::NotFound, None, None),
            nova::DiskOutcome::Busy => (DiskOutcome::Busy, None, None),
            nova::DiskOutcome::Error { kind, message } => {
                (DiskOutcome::Error, Some(format!("{kind:?}")), Some(message))
            }
        };
        DiskDeletion {
            name: d.name,
            outcome,
            attempts: d.attempts,
            removed_resize_snap: d.removed_resize_snap,
            error_kind,
            error,
        }
    }
}

/// Nova's ``is_cloneable``: can a disk be cloned from Glance ``location`` (a Location or URL
/// string; a malformed string is an answer, not an exception)? Changes nothing.
#[pyfunction]
#[pyo3(signature = (cluster, location, disk_format="raw"))]
pub(crate) fn nova_is_cloneable(
    py: Python<'_>,
    cluster: &Cluster,
    location: &Bound<'_, PyAny>,
    disk_format: &str,
) -> PyResult<Cloneability> {
    let url = match location.cast::<Location>() {
        Ok(l) => l.get().inner.to_string(),
        Err(_) => location.extract::<String>()?,
    };
    let c = &cluster.inner;
    let r = py.detach(|| nova::is_cloneable(c, &url, disk_format)).py()?;
    Ok(r.into())
}

/// Boots instance ``instance_uuid``'s disk ``<uuid>_<disk_name>`` in ``pool`` from Glance
/// ``location``: a clone across pools, grown to ``size`` (default: the image size; smaller is
/// refused before anything is created). A failed resize removes the clone.
#[pyfunction]
#[pyo3(signature = (location, pool, instance_uuid, disk_name="disk", size=None, features=None))]
pub(crate) fn nova_boot_disk(
    py: Python<'_>,
    location: &Bound<'_, PyAny>,
    pool: &Pool,
    instance_uuid: &str,
    disk_name: &str,
    size: Option<u64>,
    features: Option<u64>,
) -> PyResult<BootedDisk> {
    let loc = location_arg(location)?;
    let mut b = nova::BootDisk::new(&loc, instance_uuid);
    b.disk_name(disk_name);
    if let Some(s) = size {
        b.size(s);
    }
    if let Some(f) = features {
        b.features(rbd_core::Features(f));
    }
    let p = &pool.inner;
    let d = py.detach(|| b.run(p)).py()?;
    Ok(BootedDisk { pool: d.pool, name: d.name, parent: d.parent, size: d.size })
}

/// Nova's direct snapshot: disk ``pool/disk`` becomes the new Glance image
/// ``glance_pool/new_image_id`` (temporary snapshot, clone, flatten, ``snap`` protected). Progress
/// reports the flatten; a failure or cancel at any step removes everything it made.
#[pyfunction]
#[pyo3(signature = (pool, disk, glance_pool, new_image_id, features=None, on_progress=None, cancel=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn nova_snapshot_instance(
    py: Python<'_>,
    pool: &Pool,
    disk: String,
    glance_pool: &str,
    new_image_id: &str,
    features: Option<u64>,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<SnapshotImage> {
    let mut s = nova::InstanceSnapshot::new(glance_pool, new_image_id);
    if let Some(f) = features {
        s.features(rbd_core::Features(f));
    }
    let p = &pool.inner;
    let r = progress::run(py, on_progress, cancel, Table::Image, |pr| Ok(s.run(p, &disk, pr)))?;
    Ok(SnapshotImage { location: Location { inner: r.location }, size: r.size, temp_snap: r.temp_snap })
}

fn secs(what: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| PyValueError::new_err(format!("{what} must be a non-negative number of seconds")))
}

/// Removes every ``<instance_uuid>_*`` image of ``pool`` (each after its ``nova-resize``
/// snapshot), retrying busy ones: ``attempts`` per image, waiting ``initial`` seconds after the
/// first busy attempt, doubling up to ``max``. Per-disk results, in name order; failures are
/// reported there, not raised.
#[pyfunction]
#[pyo3(signature = (pool, instance_uuid, attempts=12, initial=1.0, max=5.0))]
pub(crate) fn nova_delete_instance_disks(
    py: Python<'_>,
    pool: &Pool,
    instance_uuid: &str,
    attempts: u32,
    initial: f64,
    max: f64,
) -> PyResult<Vec<DiskDeletion>> {
    let retry = nova::RetryPolicy { attempts, initial: secs("initial", initial)?, max: secs("max", max)? };
    let p = &pool.inner;
    let v = py.detach(|| nova::delete_instance_disks(p, instance_uuid, &retry)).py()?;
    Ok(v.into_iter().map(DiskDeletion::from).collect())
}

/// Takes the ``nova-resize`` snapshot of disk ``pool/disk`` before a resize.
#[pyfunction]
pub(crate) fn nova_resize_snapshot(py: Python<'_>, pool: &Pool, disk: &str) -> PyResult<()> {
    let p = &pool.inner;
    py.detach(|| nova::resize_snapshot(p, disk)).py()
}

/// Reverts a resize: rolls disk ``pool/disk`` back to ``nova-resize`` and removes the snapshot.
#[pyfunction]
#[pyo3(signature = (pool, disk, on_progress=None, cancel=None))]
pub(crate) fn nova_revert_resize(
    py: Python<'_>,
    pool: &Pool,
    disk: String,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<()> {
    let p = &pool.inner;
    progress::run(py, on_progress, cancel, Table::Image, |pr| Ok(nova::revert_resize(p, &disk, pr)))
}

/// Confirms a resize: removes the ``nova-resize`` snapshot; False when there was none.
#[pyfunction]
pub(crate) fn nova_confirm_resize(py: Python<'_>, pool: &Pool, disk: &str) -> PyResult<bool> {
    let p = &pool.inner;
    py.detach(|| nova::confirm_resize(p, disk)).py()
}
