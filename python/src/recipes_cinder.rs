//! Cinder recipes (`rbd_core.cinder`): volumes (blank, from a snapshot, from a Glance image,
//! from another volume), snapshots, delete, extend, revert, manage, capacity.
//!
//! Keyword arguments are named like the Rust builder setters (`flatten`, `clone_format`,
//! `max_clone_depth`, `depth_rule`, `on_children`, `keep_children_as_clones`, `trash_delay`,
//! `busy_retries`). Flattens go through the process-wide default flatten gate. Every call releases
//! the GIL; those that may flatten or copy run on the progress worker.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use rbd_core::recipes::cinder;

use crate::errors::{PyResultExt, Table};
use crate::image::Image;
use crate::pool::Pool;
use crate::progress::{self, CancelToken};
use crate::recipes_glance::{location_arg, opt_repr};

/// How ``create_from_volume`` counts clone depth.
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DepthRule {
    /// Every ancestor counts (the default).
    AllAncestors = 0,
    /// Cinder's rule: only volume-to-volume ``.clone_snap`` parents count.
    CinderCloneSnapOnly = 1,
}

impl From<DepthRule> for cinder::DepthRule {
    fn from(r: DepthRule) -> Self {
        match r {
            DepthRule::AllAncestors => cinder::DepthRule::AllAncestors,
            DepthRule::CinderCloneSnapOnly => cinder::DepthRule::CinderCloneSnapOnly,
        }
    }
}

/// What ``delete_snapshot`` does with clone children of the snapshot.
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ChildrenPolicy {
    /// Flatten them, then delete the snapshot (the default).
    Flatten = 0,
    /// Raise ImageBusy and change nothing.
    Refuse = 1,
}

impl From<ChildrenPolicy> for cinder::ChildrenPolicy {
    fn from(p: ChildrenPolicy) -> Self {
        match p {
            ChildrenPolicy::Flatten => cinder::ChildrenPolicy::Flatten,
            ChildrenPolicy::Refuse => cinder::ChildrenPolicy::Refuse,
        }
    }
}

/// What ``delete_volume`` did with the volume (``rbd_core.cinder.DeleteOutcome``).
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum VolumeDeleteOutcome {
    /// The image is gone.
    Removed = 0,
    /// Real snapshots remained: moved to the trash.
    Trashed = 1,
    /// Renamed to ``volume-<id>.deleted`` (``keep_children_as_clones``).
    RenamedDeleted = 2,
    /// There was no such volume (success).
    NotFound = 3,
}

impl From<cinder::DeleteOutcome> for VolumeDeleteOutcome {
    fn from(o: cinder::DeleteOutcome) -> Self {
        match o {
            cinder::DeleteOutcome::Removed => VolumeDeleteOutcome::Removed,
            cinder::DeleteOutcome::Trashed => VolumeDeleteOutcome::Trashed,
            cinder::DeleteOutcome::RenamedDeleted => VolumeDeleteOutcome::RenamedDeleted,
            cinder::DeleteOutcome::NotFound => VolumeDeleteOutcome::NotFound,
        }
    }
}

/// A volume as the recipes leave it.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Volume {
    /// Pool name.
    pub pool: String,
    /// Cinder volume id.
    pub volume_id: String,
    /// Image name (``volume-<id>``).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Parent ``pool/image@snap`` when the volume is a clone.
    pub parent: Option<String>,
    /// Number of ancestors.
    pub depth: u32,
    /// True when the recipe flattened the new volume.
    pub flattened: bool,
}

#[pymethods]
impl Volume {
    fn __repr__(&self) -> String {
        format!(
            "Volume(pool={:?}, name={:?}, size={}, parent={}, depth={}, flattened={})",
            self.pool,
            self.name,
            self.size,
            opt_repr(&self.parent),
            self.depth,
            if self.flattened { "True" } else { "False" }
        )
    }
}

impl From<cinder::Volume> for Volume {
    fn from(v: cinder::Volume) -> Self {
        Volume {
            pool: v.pool,
            volume_id: v.volume_id,
            name: v.name,
            size: v.size,
            parent: v.parent,
            depth: v.depth,
            flattened: v.flattened,
        }
    }
}

/// A volume snapshot as ``create_snapshot`` leaves it.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VolumeSnapshot {
    /// Pool name.
    pub pool: String,
    /// The volume's image name (``volume-<id>``).
    pub volume: String,
    /// The snapshot name (``snapshot-<id>``).
    pub name: String,
    /// The volume size when the snapshot was taken.
    pub size: u64,
    /// Whether the snapshot is protected (always, as Cinder does).
    pub protected: bool,
}

#[pymethods]
impl VolumeSnapshot {
    fn __repr__(&self) -> String {
        format!("VolumeSnapshot('{}/{}@{}', size={})", self.pool, self.volume, self.name, self.size)
    }
}

/// What ``delete_snapshot`` did.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SnapshotDeletion {
    /// ``pool/volume@snapshot``.
    pub snapshot: String,
    /// False when the volume or snapshot did not exist (success, as in Cinder).
    pub removed: bool,
    /// Children flattened first (``pool/image``).
    pub flattened_children: Vec<String>,
}

#[pymethods]
impl SnapshotDeletion {
    fn __repr__(&self) -> String {
        format!(
            "SnapshotDeletion(snapshot={:?}, removed={}, flattened_children={:?})",
            self.snapshot,
            if self.removed { "True" } else { "False" },
            self.flattened_children
        )
    }
}

/// The full account of a volume deletion.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VolumeDeletion {
    /// What happened to the volume.
    pub outcome: VolumeDeleteOutcome,
    /// The image name at the end (``volume-<id>`` or ``volume-<id>.deleted``).
    pub name: String,
    /// The trash id, for ``DeleteOutcome.Trashed``.
    pub trash_id: Option<String>,
    /// Snapshots removed from the volume (backup and childless ``.clone_snap`` ones).
    pub removed_snapshots: Vec<String>,
    /// Clone children flattened (``pool/image``).
    pub flattened_children: Vec<String>,
    /// Parent snapshots removed because their only child went (``pool/image@snap``).
    pub parent_snapshots_removed: Vec<String>,
    /// ``.deleted`` ancestors removed because their last child went (``pool/image``).
    pub collected_parents: Vec<String>,
}

#[pymethods]
impl VolumeDeletion {
    fn __repr__(&self) -> String {
        format!(
            "VolumeDeletion(outcome=DeleteOutcome.{:?}, name={:?}, trash_id={}, flattened_children={:?}, \
             parent_snapshots_removed={:?}, collected_parents={:?})",
            self.outcome,
            self.name,
            opt_repr(&self.trash_id),
            self.flattened_children,
            self.parent_snapshots_removed,
            self.collected_parents
        )
    }
}

impl From<cinder::VolumeDeletion> for VolumeDeletion {
    fn from(d: cinder::VolumeDeletion) -> Self {
        VolumeDeletion {
            outcome: d.outcome.into(),
            name: d.name,
            trash_id: d.trash_id,
            removed_snapshots: d.removed_snapshots,
            flattened_children: d.flattened_children,
            parent_snapshots_removed: d.parent_snapshots_removed,
            collected_parents: d.collected_parents,
        }
    }
}

/// Capacity of a volume pool with Cinder's formula.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PoolCapacity {
    /// Pool name.
    pub pool: String,
    /// ``free + used``.
    pub total_bytes: u64,
    /// The pool's ``max_avail``, or with a quota ``min(quota - used, max_avail)``.
    pub free_bytes: u64,
    /// Bytes stored in the pool.
    pub used_bytes: u64,
    /// Sum of the sizes of every image in the pool.
    pub provisioned_bytes: u64,
    /// The byte quota, when one is set.
    pub quota_bytes: Option<u64>,
}

impl PoolCapacity {
    fn lib(&self) -> cinder::PoolCapacity {
        cinder::PoolCapacity {
            pool: self.pool.clone(),
            total_bytes: self.total_bytes,
            free_bytes: self.free_bytes,
            used_bytes: self.used_bytes,
            provisioned_bytes: self.provisioned_bytes,
            quota_bytes: self.quota_bytes,
        }
    }
}

#[pymethods]
impl PoolCapacity {
    /// Total in GiB rounded to 2 decimals (Cinder's ``total_capacity_gb``).
    #[getter]
    fn total_gib(&self) -> f64 {
        self.lib().total_gib()
    }

    /// Free in GiB rounded to 2 decimals (``free_capacity_gb``).
    #[getter]
    fn free_gib(&self) -> f64 {
        self.lib().free_gib()
    }

    /// Provisioned in GiB rounded to 2 decimals (``provisioned_capacity_gb``).
    #[getter]
    fn provisioned_gib(&self) -> f64 {
        self.lib().provisioned_gib()
    }

    fn __repr__(&self) -> String {
        format!(
            "PoolCapacity(pool={:?}, total_bytes={}, free_bytes={}, used_bytes={}, provisioned_bytes={}, quota_bytes={})",
            self.pool, self.total_bytes, self.free_bytes, self.used_bytes, self.provisioned_bytes, opt_repr(&self.quota_bytes)
        )
    }
}

pub(crate) fn clone_format(v: u8) -> PyResult<rbd_core::CloneFormat> {
    match v {
        1 => Ok(rbd_core::CloneFormat::V1),
        2 => Ok(rbd_core::CloneFormat::V2),
        n => Err(PyValueError::new_err(format!("clone_format must be 1 or 2, not {n}"))),
    }
}

/// Creates blank volume ``volume-<volume_id>`` of ``size`` bytes (order 22, default features).
#[pyfunction]
pub(crate) fn cinder_create(py: Python<'_>, pool: &Pool, volume_id: &str, size: u64) -> PyResult<Volume> {
    let p = &pool.inner;
    Ok(py.detach(|| cinder::create(p, volume_id, size)).py()?.into())
}

/// Clones ``volume-<source_volume_id>@snapshot-<snapshot_id>`` into ``volume-<volume_id>`` of
/// ``size`` bytes, optionally flattened (progress reports the flatten).
#[pyfunction]
#[pyo3(signature = (pool, source_volume_id, snapshot_id, volume_id, size, flatten=false, clone_format=2, on_progress=None, cancel=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn cinder_create_from_snapshot(
    py: Python<'_>,
    pool: &Pool,
    source_volume_id: &str,
    snapshot_id: &str,
    volume_id: &str,
    size: u64,
    flatten: bool,
    clone_format: u8,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<Volume> {
    let mut b = cinder::VolumeFromSnapshot::new(source_volume_id, snapshot_id, volume_id, size);
    b.flatten(flatten).clone_format(self::clone_format(clone_format)?);
    let p = &pool.inner;
    Ok(progress::run(py, on_progress, cancel, Table::Image, |pr| Ok(b.run(p, pr)))?.into())
}

/// Clones the Glance image at ``location`` (a Location or URL on this cluster) into
/// ``volume-<volume_id>`` of ``volumes``, grown to ``size`` bytes.
#[pyfunction]
#[pyo3(signature = (volumes, location, volume_id, size, clone_format=2))]
pub(crate) fn cinder_create_from_image(
    py: Python<'_>,
    volumes: &Pool,
    location: &Bound<'_, PyAny>,
    volume_id: &str,
    size: u64,
    clone_format: u8,
) -> PyResult<Volume> {
    let loc = location_arg(location)?;
    let src = cinder::ImageSnapRef::from_location(&loc).py()?;
    let mut b = cinder::VolumeFromImage::new(src, volume_id, size);
    b.clone_format(self::clone_format(clone_format)?);
    let p = &volumes.inner;
    Ok(py.detach(|| b.run(p)).py()?.into())
}

/// Copies ``volume-<source_volume_id>`` to ``volume-<volume_id>`` of ``size`` bytes: a clone of a
/// temporary ``.clone_snap``, flattened when deeper than ``max_clone_depth`` (counted by
/// ``depth_rule``), or a full sparse copy with ``max_clone_depth=0``. Progress reports the copy
/// or flatten.
#[pyfunction]
#[pyo3(signature = (pool, source_volume_id, volume_id, size, max_clone_depth=5, depth_rule=DepthRule::AllAncestors, clone_format=2, on_progress=None, cancel=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn cinder_create_from_volume(
    py: Python<'_>,
    pool: &Pool,
    source_volume_id: &str,
    volume_id: &str,
    size: u64,
    max_clone_depth: u32,
    depth_rule: DepthRule,
    clone_format: u8,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<Volume> {
    let mut b = cinder::VolumeFromVolume::new(source_volume_id, volume_id, size);
    b.max_clone_depth(max_clone_depth).depth_rule(depth_rule.into()).clone_format(self::clone_format(clone_format)?);
    let p = &pool.inner;
    Ok(progress::run(py, on_progress, cancel, Table::Image, |pr| Ok(b.run(p, pr)))?.into())
}

/// Snapshots ``volume-<volume_id>`` as ``snapshot-<snapshot_id>`` and protects it.
#[pyfunction]
pub(crate) fn cinder_create_snapshot(
    py: Python<'_>,
    pool: &Pool,
    volume_id: &str,
    snapshot_id: &str,
) -> PyResult<VolumeSnapshot> {
    let p = &pool.inner;
    let s = py.detach(|| cinder::create_snapshot(p, volume_id, snapshot_id)).py()?;
    Ok(VolumeSnapshot { pool: s.pool, volume: s.volume, name: s.name, size: s.size, protected: s.protected })
}

/// Deletes ``volume-<volume_id>@snapshot-<snapshot_id>``: clone children are flattened first
/// (``ChildrenPolicy.Flatten``) or make it raise ImageBusy (``Refuse``, nothing changed). A missing
/// volume or snapshot is success with ``removed=False``.
#[pyfunction]
#[pyo3(signature = (pool, volume_id, snapshot_id, on_children=ChildrenPolicy::Flatten, on_progress=None, cancel=None))]
pub(crate) fn cinder_delete_snapshot(
    py: Python<'_>,
    pool: &Pool,
    volume_id: &str,
    snapshot_id: &str,
    on_children: ChildrenPolicy,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<SnapshotDeletion> {
    let mut b = cinder::DeleteSnapshot::new(volume_id, snapshot_id);
    b.on_children(on_children.into());
    let p = &pool.inner;
    let d = progress::run(py, on_progress, cancel, Table::Image, |pr| Ok(b.run(p, pr)))?;
    Ok(SnapshotDeletion { snapshot: d.snapshot, removed: d.removed, flattened_children: d.flattened_children })
}

fn secs(what: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| PyValueError::new_err(format!("{what} must be a non-negative number of seconds")))
}

/// Deletes ``volume-<volume_id>`` in Cinder's order (backup snapshots, remove; with clone
/// children: flatten them, or rename to ``.deleted`` with ``keep_children_as_clones``; trash when
/// real snapshots remain), cleaning its parent's ``.clone_snap`` on every path. Busy volumes are
/// retried ``busy_retries`` times, waiting ``first_wait`` seconds and doubling. A missing volume
/// is success (``DeleteOutcome.NotFound``). Progress reports child flattens.
#[pyfunction]
#[pyo3(signature = (pool, volume_id, keep_children_as_clones=false, trash_delay=0.0, busy_retries=3, first_wait=5.0, on_progress=None, cancel=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn cinder_delete_volume(
    py: Python<'_>,
    pool: &Pool,
    volume_id: &str,
    keep_children_as_clones: bool,
    trash_delay: f64,
    busy_retries: u32,
    first_wait: f64,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<VolumeDeletion> {
    let mut b = cinder::DeleteVolume::new(volume_id);
    b.keep_children_as_clones(keep_children_as_clones)
        .trash_delay(secs("trash_delay", trash_delay)?)
        .busy_retries(busy_retries, secs("first_wait", first_wait)?);
    let p = &pool.inner;
    Ok(progress::run(py, on_progress, cancel, Table::Image, |pr| Ok(b.run(p, pr)))?.into())
}

/// Grows ``volume-<volume_id>`` to ``new_size`` bytes (never shrinks: InvalidArgument).
#[pyfunction]
pub(crate) fn cinder_extend(py: Python<'_>, pool: &Pool, volume_id: &str, new_size: u64) -> PyResult<Volume> {
    let p = &pool.inner;
    Ok(py.detach(|| cinder::extend(p, volume_id, new_size)).py()?.into())
}

/// Rolls ``volume-<volume_id>`` back to ``snapshot-<snapshot_id>`` keeping its current size
/// (progress once per object; a failure part-way leaves it partly rolled back).
#[pyfunction]
#[pyo3(signature = (pool, volume_id, snapshot_id, on_progress=None, cancel=None))]
pub(crate) fn cinder_revert_to_snapshot(
    py: Python<'_>,
    pool: &Pool,
    volume_id: &str,
    snapshot_id: &str,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<Volume> {
    let p = &pool.inner;
    let v = progress::run(py, on_progress, cancel, Table::Image, |pr| {
        Ok(cinder::revert_to_snapshot(p, volume_id, snapshot_id, pr))
    })?;
    Ok(v.into())
}

/// Renames existing image ``existing_name`` to ``volume-<volume_id>``.
#[pyfunction]
pub(crate) fn cinder_manage_existing(
    py: Python<'_>,
    pool: &Pool,
    existing_name: &str,
    volume_id: &str,
) -> PyResult<Volume> {
    let p = &pool.inner;
    Ok(py.detach(|| cinder::manage_existing(p, existing_name, volume_id)).py()?.into())
}

/// Capacity of ``pool`` as Cinder reports it (monitor ``df`` and quota, plus provisioned sizes).
#[pyfunction]
pub(crate) fn cinder_pool_capacity(py: Python<'_>, pool: &Pool) -> PyResult<PoolCapacity> {
    let p = &pool.inner;
    let c = py.detach(|| cinder::pool_capacity(p)).py()?;
    Ok(PoolCapacity {
        pool: c.pool,
        total_bytes: c.total_bytes,
        free_bytes: c.free_bytes,
        used_bytes: c.used_bytes,
        provisioned_bytes: c.provisioned_bytes,
        quota_bytes: c.quota_bytes,
    })
}

/// Reads volume ``volume-<volume_id>`` (size, parent, depth).
#[pyfunction]
pub(crate) fn cinder_volume_info(py: Python<'_>, pool: &Pool, volume_id: &str) -> PyResult<Volume> {
    let p = &pool.inner;
    Ok(py.detach(|| cinder::volume_info(p, volume_id)).py()?.into())
}

/// The clone depth of an open image under ``rule`` (0 for a non-clone).
#[pyfunction]
#[pyo3(signature = (image, rule=DepthRule::AllAncestors))]
pub(crate) fn cinder_clone_depth(py: Python<'_>, image: &Image, rule: DepthRule) -> PyResult<u32> {
    image.with(py, |i| cinder::clone_depth(i, rule.into()))
}

/// ``volume-<id>``.
#[pyfunction]
pub(crate) fn cinder_volume_name(volume_id: &str) -> String {
    cinder::volume_name(volume_id)
}

/// ``snapshot-<id>``.
#[pyfunction]
pub(crate) fn cinder_snapshot_name(snapshot_id: &str) -> String {
    cinder::snapshot_name(snapshot_id)
}

/// The temporary snapshot a clone named ``dest_volume_name`` uses on its source.
#[pyfunction]
pub(crate) fn cinder_clone_snap_name(dest_volume_name: &str) -> String {
    cinder::clone_snap_name(dest_volume_name)
}

/// True for the backup driver's source snapshots (``backup.<id>.snap.<timestamp>``).
#[pyfunction]
pub(crate) fn cinder_is_backup_snap(name: &str) -> bool {
    cinder::is_backup_snap(name)
}
