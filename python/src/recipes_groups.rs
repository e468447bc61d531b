//! Consistency-group recipes (`rbd_core.groups`): Cinder consistency groups on native RBD
//! groups — create, add/remove volumes, crash-consistent group snapshots, restore into new
//! volumes (optionally a new group), delete.
//!
//! Errors use python-rbd's group table (a missing group is `ObjectNotFound`, itself an
//! `ImageNotFound`). Every call releases the GIL; `restore` runs on the progress worker.

use std::collections::BTreeMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use rbd_core::recipes::groups;

use crate::errors::{PyResultExt, Table};
use crate::pool::Pool;
use crate::progress::{self, CancelToken};
use crate::util::ReleaseOnDrop;

/// What a new consistency group is: Cinder's ``name``, ``volume_types`` (at least one) and
/// ``description``.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GroupSpec {
    /// Display name.
    pub name: String,
    /// Volume types the group accepts.
    pub volume_types: Vec<String>,
    /// Description.
    pub description: String,
}

#[pymethods]
impl GroupSpec {
    #[new]
    #[pyo3(signature = (name, volume_types, description=String::new()))]
    fn new(name: String, volume_types: Vec<String>, description: String) -> Self {
        GroupSpec { name, volume_types, description }
    }

    fn __repr__(&self) -> String {
        format!(
            "GroupSpec(name={:?}, volume_types={:?}, description={:?})",
            self.name, self.volume_types, self.description
        )
    }
}

impl GroupSpec {
    fn lib(&self) -> groups::GroupSpec {
        groups::GroupSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            volume_types: self.volume_types.clone(),
        }
    }
}

/// A consistency group: RBD membership plus the recorded Cinder fields.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConsistencyGroup {
    /// The group id.
    pub id: String,
    /// The RBD group name (``group-<id>``).
    pub rbd_group: String,
    /// The pool holding the group and its volumes.
    pub pool: String,
    /// Display name (empty when the metadata object is missing).
    pub name: String,
    /// Description.
    pub description: String,
    /// Volume types.
    pub volume_types: Vec<String>,
    /// Creation time (unix seconds), when recorded.
    pub created_at: Option<u64>,
    /// Member volume ids, sorted.
    pub volumes: Vec<String>,
}

#[pymethods]
impl ConsistencyGroup {
    fn __repr__(&self) -> String {
        format!(
            "ConsistencyGroup(id={:?}, pool={:?}, name={:?}, volumes={:?})",
            self.id, self.pool, self.name, self.volumes
        )
    }
}

impl From<groups::ConsistencyGroup> for ConsistencyGroup {
    fn from(g: groups::ConsistencyGroup) -> Self {
        ConsistencyGroup {
            id: g.id,
            rbd_group: g.rbd_group,
            pool: g.pool,
            name: g.name,
            description: g.description,
            volume_types: g.volume_types,
            created_at: g.created_at,
            volumes: g.volumes,
        }
    }
}

/// One member's share of a group snapshot.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MemberSnapshot {
    /// The member's volume id.
    pub volume_id: String,
    /// The member image.
    pub image: String,
    /// Id of the GROUP-namespace snapshot on the member.
    pub snap_id: u64,
    /// Its generated name (``.group.<pool>_<group id>_<snap id>``).
    pub snap_name: String,
    /// Member size at the snapshot.
    pub size: u64,
}

#[pymethods]
impl MemberSnapshot {
    fn __repr__(&self) -> String {
        format!("MemberSnapshot(volume_id={:?}, snap_id={}, size={})", self.volume_id, self.snap_id, self.size)
    }
}

/// A group snapshot (Cinder's cgsnapshot).
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GroupSnapshot {
    /// The snapshot id.
    pub id: String,
    /// The group id.
    pub group_id: String,
    /// The RBD group snapshot name (``group-snapshot-<id>``).
    pub rbd_snap: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Creation time (unix seconds), when recorded.
    pub created_at: Option<u64>,
    /// True when every member snapshot exists.
    pub complete: bool,
    /// The member snapshots, sorted by volume id.
    pub members: Vec<MemberSnapshot>,
}

#[pymethods]
impl GroupSnapshot {
    fn __repr__(&self) -> String {
        format!(
            "GroupSnapshot(id={:?}, group_id={:?}, name={:?}, complete={}, members={})",
            self.id,
            self.group_id,
            self.name,
            if self.complete { "True" } else { "False" },
            self.members.len()
        )
    }
}

impl From<groups::GroupSnapshot> for GroupSnapshot {
    fn from(s: groups::GroupSnapshot) -> Self {
        GroupSnapshot {
            id: s.id,
            group_id: s.group_id,
            rbd_snap: s.rbd_snap,
            name: s.name,
            description: s.description,
            created_at: s.created_at,
            complete: s.complete,
            members: s
                .members
                .into_iter()
                .map(|m| MemberSnapshot {
                    volume_id: m.volume_id,
                    image: m.image,
                    snap_id: m.snap_id,
                    snap_name: m.snap_name,
                    size: m.size,
                })
                .collect(),
        }
    }
}

/// One volume made by ``restore``.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RestoredVolume {
    /// The member volume it was made from.
    pub source_volume_id: String,
    /// The new volume id.
    pub volume_id: String,
    /// The new image (``volume-<volume id>``).
    pub image: String,
    /// Size in bytes.
    pub size: u64,
    /// Bytes written as data (the rest stayed holes).
    pub bytes_written: u64,
}

#[pymethods]
impl RestoredVolume {
    fn __repr__(&self) -> String {
        format!(
            "RestoredVolume(source_volume_id={:?}, volume_id={:?}, size={})",
            self.source_volume_id, self.volume_id, self.size
        )
    }
}

/// The result of ``restore``.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RestoredGroup {
    /// The new volumes, sorted by source volume id.
    pub volumes: Vec<RestoredVolume>,
    /// The new group id, when one was created.
    pub group_id: Option<String>,
}

#[pymethods]
impl RestoredGroup {
    fn __repr__(&self) -> String {
        format!(
            "RestoredGroup(volumes={:?}, group_id={})",
            self.volumes.iter().map(|v| v.volume_id.as_str()).collect::<Vec<_>>(),
            crate::recipes_glance::opt_repr(&self.group_id)
        )
    }
}

/// Consistency-group recipes on one pool (the pool of the member volumes ``volume-<id>``).
/// A group ``<id>`` is the RBD group ``group-<id>``; its snapshot ``<snap id>`` the RBD group
/// snapshot ``group-snapshot-<snap id>``; Cinder's fields live in the RADOS object
/// ``rbd_core.cg.<id>``.
#[pyclass(module = "rbd_core._native", frozen)]
pub struct ConsistencyGroups {
    inner: ReleaseOnDrop<groups::ConsistencyGroups>,
}

#[pymethods]
impl ConsistencyGroups {
    #[new]
    fn new(pool: &Pool) -> Self {
        ConsistencyGroups { inner: ReleaseOnDrop::new(groups::ConsistencyGroups::new(&pool.inner)) }
    }

    /// The pool name.
    #[getter]
    fn pool_name(&self) -> String {
        self.inner.pool().name().to_string()
    }

    /// Group ``id`` (ObjectNotFound when missing).
    fn get(&self, py: Python<'_>, id: &str) -> PyResult<ConsistencyGroup> {
        let g = &*self.inner;
        Ok(py.detach(|| g.get(id)).py_group()?.into())
    }

    /// Ids of the consistency groups in the pool, sorted.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let g = &*self.inner;
        py.detach(|| g.list()).py_group()
    }

    /// Creates group ``id`` (recipe ``groups.create``). InvalidArgument without a volume type,
    /// ObjectExists when it exists.
    #[pyo3(signature = (id, name, volume_types, description=""))]
    fn create(
        &self,
        py: Python<'_>,
        id: &str,
        name: &str,
        volume_types: Vec<String>,
        description: &str,
    ) -> PyResult<ConsistencyGroup> {
        let spec = GroupSpec { name: name.to_string(), volume_types, description: description.to_string() }.lib();
        let g = &*self.inner;
        Ok(py.detach(|| g.create(id, &spec)).py_group()?.into())
    }

    /// Adds volumes ``volume-<id>`` to group ``id`` (all checked first; ImageBusy while the
    /// group has group snapshots).
    fn add_volumes(&self, py: Python<'_>, id: &str, volume_ids: Vec<String>) -> PyResult<ConsistencyGroup> {
        let ids: Vec<&str> = volume_ids.iter().map(String::as_str).collect();
        let g = &*self.inner;
        Ok(py.detach(|| g.add_volumes(id, &ids)).py_group()?.into())
    }

    /// Removes volumes from group ``id`` (they stay; ImageBusy while the group has group
    /// snapshots).
    fn remove_volumes(&self, py: Python<'_>, id: &str, volume_ids: Vec<String>) -> PyResult<ConsistencyGroup> {
        let ids: Vec<&str> = volume_ids.iter().map(String::as_str).collect();
        let g = &*self.inner;
        Ok(py.detach(|| g.remove_volumes(id, &ids)).py_group()?.into())
    }

    /// Snapshots every member of group ``id`` at once as group snapshot ``snap_id``.
    #[pyo3(signature = (id, snap_id, name="", description=""))]
    fn create_snapshot(
        &self,
        py: Python<'_>,
        id: &str,
        snap_id: &str,
        name: &str,
        description: &str,
    ) -> PyResult<GroupSnapshot> {
        let g = &*self.inner;
        Ok(py.detach(|| g.create_snapshot(id, snap_id, name, description)).py_group()?.into())
    }

    /// Group snapshot ``snap_id`` of group ``id``.
    fn snapshot(&self, py: Python<'_>, id: &str, snap_id: &str) -> PyResult<GroupSnapshot> {
        let g = &*self.inner;
        Ok(py.detach(|| g.snapshot(id, snap_id)).py_group()?.into())
    }

    /// The group snapshots of group ``id``, sorted by id.
    fn snapshots(&self, py: Python<'_>, id: &str) -> PyResult<Vec<GroupSnapshot>> {
        let g = &*self.inner;
        Ok(py.detach(|| g.snapshots(id)).py_group()?.into_iter().map(GroupSnapshot::from).collect())
    }

    /// Deletes group snapshot ``snap_id`` (volumes restored from it stay).
    fn delete_snapshot(&self, py: Python<'_>, id: &str, snap_id: &str) -> PyResult<()> {
        let g = &*self.inner;
        py.detach(|| g.delete_snapshot(id, snap_id)).py_group()
    }

    /// Deletes group ``id``; its volumes stay (detached). With group snapshots it raises
    /// ImageBusy unless ``force`` (which removes them).
    #[pyo3(signature = (id, force=false))]
    fn delete(&self, py: Python<'_>, id: &str, force: bool) -> PyResult<()> {
        let g = &*self.inner;
        py.detach(|| g.delete(id, force)).py_group()
    }

    /// New volumes from group snapshot ``snap_id``, one per member, each a copy of the member
    /// at the snapshot: named ``<prefix>-<member volume id>`` or by ``names`` (a dict from every
    /// member volume id to its new volume id). ``into_group=(group_id, GroupSpec)`` also puts
    /// them into a new group. Everything created is removed on failure or cancel.
    #[pyo3(signature = (id, snap_id, prefix=None, names=None, into_group=None, on_progress=None, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn restore(
        &self,
        py: Python<'_>,
        id: &str,
        snap_id: &str,
        prefix: Option<String>,
        names: Option<BTreeMap<String, String>>,
        into_group: Option<(String, GroupSpec)>,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<RestoredGroup> {
        let names = match (prefix, names) {
            (Some(p), None) => groups::RestoreNames::Prefix(p),
            (None, Some(m)) => groups::RestoreNames::Map(m),
            _ => return Err(PyValueError::new_err("give exactly one of prefix= and names=")),
        };
        let spec = groups::RestoreSpec { names, new_group: into_group.map(|(gid, s)| (gid, s.lib())) };
        let g = &*self.inner;
        let r = progress::run(py, on_progress, cancel, Table::Group, |p| Ok(g.restore(id, snap_id, &spec, p)))?;
        Ok(RestoredGroup {
            volumes: r
                .volumes
                .into_iter()
                .map(|v| RestoredVolume {
                    source_volume_id: v.source_volume_id,
                    volume_id: v.volume_id,
                    image: v.image,
                    size: v.size,
                    bytes_written: v.bytes_written,
                })
                .collect(),
            group_id: r.group_id,
        })
    }

    fn __repr__(&self) -> String {
        format!("<rbd_core.groups.ConsistencyGroups pool={}>", self.inner.pool().name())
    }
}

/// ``group-<id>``.
#[pyfunction]
pub(crate) fn groups_rbd_group_name(id: &str) -> String {
    groups::rbd_group_name(id)
}

/// ``group-snapshot-<id>``.
#[pyfunction]
pub(crate) fn groups_rbd_snap_name(id: &str) -> String {
    groups::rbd_snap_name(id)
}
