//! Snapshots: list (typed `SnapInfo`), create, remove, protect, rollback with progress,
//! rename, limits.

use pyo3::prelude::*;

use crate::image::Image;
use crate::progress::CancelToken;
use crate::util::{datetime_utc, unix_seconds};

/// The namespace a snapshot lives in (``RBD_SNAP_NAMESPACE_TYPE_*``).
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SnapNamespace {
    /// Created by name by a user.
    User = 0,
    /// Member snapshot of a group snapshot.
    Group = 1,
    /// A removed clone-v2 parent snapshot still used by clones.
    Trash = 2,
    /// Snapshot-based mirroring.
    Mirror = 3,
    /// A namespace this library does not know (see ``SnapInfo.namespace_type``).
    Other = 255,
}

impl SnapNamespace {
    pub(crate) fn from_lib(ns: &rbd_core::SnapNamespace) -> SnapNamespace {
        match ns {
            rbd_core::SnapNamespace::User => SnapNamespace::User,
            rbd_core::SnapNamespace::Group => SnapNamespace::Group,
            rbd_core::SnapNamespace::Trash => SnapNamespace::Trash,
            rbd_core::SnapNamespace::Mirror => SnapNamespace::Mirror,
            _ => SnapNamespace::Other,
        }
    }
}

/// The group snapshot a ``SnapNamespace.Group`` snapshot belongs to.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GroupSnapRef {
    /// Id of the pool holding the group.
    pub pool: i64,
    /// Group name.
    pub group: String,
    /// Group snapshot name.
    pub snap: String,
}

#[pymethods]
impl GroupSnapRef {
    fn __repr__(&self) -> String {
        format!("GroupSnapRef(pool={}, group={:?}, snap={:?})", self.pool, self.group, self.snap)
    }
}

/// One snapshot of an image.
#[pyclass(module = "rbd_core._native", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct SnapInfo {
    /// Snapshot id (unique per image, never reused).
    #[pyo3(get)]
    pub id: u64,
    /// Name (generated for group and trash snapshots).
    #[pyo3(get)]
    pub name: String,
    /// Image size when the snapshot was taken.
    #[pyo3(get)]
    pub size: u64,
    /// Namespace.
    #[pyo3(get)]
    pub namespace: SnapNamespace,
    /// Raw ``RBD_SNAP_NAMESPACE_TYPE_*`` value.
    #[pyo3(get)]
    pub namespace_type: u32,
    /// Protected (user snapshots only; None otherwise).
    #[pyo3(get)]
    pub protected: Option<bool>,
    /// The owning group snapshot (group namespace only).
    #[pyo3(get)]
    pub group: Option<GroupSnapRef>,
    /// The name before removal (trash namespace only).
    #[pyo3(get)]
    pub trash_original_name: Option<String>,
    ts: Option<f64>,
}

impl SnapInfo {
    fn from_lib(s: rbd_core::SnapInfo) -> SnapInfo {
        SnapInfo {
            id: s.id,
            namespace: SnapNamespace::from_lib(&s.namespace),
            namespace_type: s.namespace.as_raw(),
            name: s.name,
            size: s.size,
            protected: s.protected,
            group: s.group.map(|g| GroupSnapRef { pool: g.pool, group: g.group, snap: g.snap }),
            trash_original_name: s.trash_original_name,
            ts: s.timestamp.map(unix_seconds),
        }
    }
}

#[pymethods]
impl SnapInfo {
    /// Creation time (UTC ``datetime``), None when the cluster recorded none.
    #[getter]
    fn timestamp<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.ts.map(|t| datetime_utc(py, t)).transpose()
    }

    fn __repr__(&self) -> String {
        format!(
            "SnapInfo(id={}, name={:?}, size={}, namespace=SnapNamespace.{:?}, protected={})",
            self.id,
            self.name,
            self.size,
            self.namespace,
            match self.protected {
                Some(true) => "True",
                Some(false) => "False",
                None => "None",
            }
        )
    }
}

#[pymethods]
impl Image {
    /// Every snapshot, all namespaces, with timestamps and protection.
    fn snapshots(&self, py: Python<'_>) -> PyResult<Vec<SnapInfo>> {
        let v = self.with(py, |i| i.snapshots())?;
        Ok(v.into_iter().map(SnapInfo::from_lib).collect())
    }

    /// Creates user snapshot ``name``. ``flags`` None: no quiesce notification (never waits on
    /// quiesce watchers; crash-consistent); else ``RBD_SNAP_CREATE_*`` bits (0 = notify).
    #[pyo3(signature = (name, flags=None))]
    fn snap_create(&self, py: Python<'_>, name: String, flags: Option<u32>) -> PyResult<()> {
        self.with(py, move |i| match flags {
            None => i.snap_create(&name),
            Some(f) => i.snap_create_with_flags(&name, rbd_core::SnapCreateFlags(f)),
        })
    }

    /// Removes user snapshot ``name``. ``flags``: ``RBD_SNAP_REMOVE_*`` (unprotect, flatten
    /// children, force); the progress callback reports flattening children.
    #[pyo3(signature = (name, flags=0, on_progress=None, cancel=None))]
    fn snap_remove(
        &self,
        py: Python<'_>,
        name: String,
        flags: u32,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        self.with_progress(py, on_progress, cancel, move |i, p| {
            i.snap_remove_with_flags(&name, rbd_core::SnapRemoveFlags(flags), p)
        })
    }

    /// Removes a snapshot of any namespace by id.
    fn snap_remove_by_id(&self, py: Python<'_>, snap_id: u64) -> PyResult<()> {
        self.with(py, move |i| i.snap_remove_by_id(snap_id))
    }

    /// Protects user snapshot ``name`` (needed for clone v1).
    fn snap_protect(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.with(py, move |i| i.snap_protect(&name))
    }

    /// Unprotects user snapshot ``name`` (ImageBusy while clones use it).
    fn snap_unprotect(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.with(py, move |i| i.snap_unprotect(&name))
    }

    /// True when user snapshot ``name`` is protected.
    fn snap_is_protected(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        self.with(py, move |i| i.snap_is_protected(&name))
    }

    /// True when user snapshot ``name`` exists.
    fn snap_exists(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        self.with(py, move |i| i.snap_exists(&name))
    }

    /// The id of user snapshot ``name``.
    fn snap_id(&self, py: Python<'_>, name: String) -> PyResult<u64> {
        self.with(py, move |i| i.snap_id(&name))
    }

    /// The name of snapshot ``snap_id``.
    fn snap_name(&self, py: Python<'_>, snap_id: u64) -> PyResult<String> {
        self.with(py, move |i| i.snap_name_by_id(snap_id))
    }

    /// Rolls the head back to user snapshot ``name``, reporting progress per object; return
    /// False from ``on_progress``, cancel the token or press Ctrl-C to stop (the head is then
    /// partially rolled back).
    #[pyo3(signature = (name, on_progress=None, cancel=None))]
    fn snap_rollback(
        &self,
        py: Python<'_>,
        name: String,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        self.with_progress(py, on_progress, cancel, move |i, p| i.snap_rollback_with_progress(&name, p))
    }

    /// Renames user snapshot ``src`` to ``dst``.
    fn snap_rename(&self, py: Python<'_>, src: String, dst: String) -> PyResult<()> {
        self.with(py, move |i| i.snap_rename(&src, &dst))
    }

    /// The snapshot limit (None: unlimited).
    fn snap_limit(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        self.with(py, |i| i.snap_limit())
    }

    /// Limits the number of snapshots (creating more raises DiskQuotaExceeded).
    fn snap_set_limit(&self, py: Python<'_>, limit: u64) -> PyResult<()> {
        self.with(py, move |i| i.snap_set_limit(limit))
    }

    /// Removes the snapshot limit.
    fn snap_remove_limit(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |i| i.snap_remove_limit())
    }
}
