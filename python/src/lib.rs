//! PyO3 bindings of rbd-core: the `rbd_core._native` module.
//!
//! No logic lives here beyond argument conversion and GIL handling:
//! * every blocking librbd/librados call runs inside `py.detach` (the GIL is released; see
//!   [`image::Image::with`]), and callbacks that librbd runs (progress, diff extents) take it
//!   back with `Python::attach` only for the duration of the Python call;
//! * every `rbd_core::Error` becomes the matching exception class from `rbd_core.errors`
//!   (defined once, in Python; see [`errors`]);
//! * results are typed classes (`SnapInfo`, `ParentInfo`, `DiffExtent`, ...), not tuples or dicts.
//!
//! One file per concept, mirroring rbd-core: each adds its own `#[pymethods]` block to
//! [`image::Image`] / [`pool::Pool`] (pyo3's `multiple-pymethods` feature).

use pyo3::prelude::*;

mod cluster;
mod copy;
mod diff;
mod diffio;
mod errors;
mod group;
mod image;
mod layering;
mod locks;
mod logging;
mod metadata;
mod pool;
mod progress;
mod pyio;
mod recipes_backup;
mod recipes_cinder;
mod recipes_flatten;
mod recipes_glance;
mod recipes_groups;
mod recipes_nova;
mod recipes_placement;
mod recipes_reconcile;
mod snapshot;
mod trash;
mod util;

/// The running librbd version as (major, minor, extra).
#[pyfunction]
fn librbd_version() -> (i32, i32, i32) {
    rbd_core::librbd_version()
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::init(m.py());
    m.add_class::<cluster::Cluster>()?;
    m.add_class::<cluster::ClusterStats>()?;
    m.add_class::<pool::Pool>()?;
    m.add_class::<pool::ImageSpec>()?;
    m.add_class::<pool::PoolStats>()?;
    m.add_class::<pool::ObjectStat>()?;
    m.add_class::<image::Image>()?;
    m.add_class::<image::ImageInfo>()?;
    m.add_class::<image::Watcher>()?;
    m.add_class::<progress::CancelToken>()?;
    m.add_class::<snapshot::SnapInfo>()?;
    m.add_class::<snapshot::SnapNamespace>()?;
    m.add_class::<snapshot::GroupSnapRef>()?;
    m.add_class::<layering::ParentInfo>()?;
    m.add_class::<layering::ChildInfo>()?;
    m.add_class::<trash::TrashEntry>()?;
    m.add_class::<trash::TrashSource>()?;
    m.add_class::<group::Group>()?;
    m.add_class::<group::GroupImage>()?;
    m.add_class::<group::GroupImageState>()?;
    m.add_class::<group::GroupSnap>()?;
    m.add_class::<group::GroupSnapState>()?;
    m.add_class::<group::GroupRef>()?;
    m.add_class::<locks::LockMode>()?;
    m.add_class::<locks::LockOwner>()?;
    m.add_class::<locks::Locker>()?;
    m.add_class::<locks::Lockers>()?;
    m.add_class::<locks::ExclusiveLock>()?;
    m.add_class::<locks::AdvisoryLock>()?;
    m.add_class::<metadata::ConfigOption>()?;
    m.add_class::<metadata::ConfigSource>()?;
    m.add_class::<metadata::QosLimits>()?;
    m.add_class::<diff::DiffExtent>()?;
    m.add_function(wrap_pyfunction!(librbd_version, m)?)?;
    m.add_function(wrap_pyfunction!(layering::clone, m)?)?;
    m.add_function(wrap_pyfunction!(logging::reset_logging, m)?)?;
    m.add_function(wrap_pyfunction!(errors::_raise_test_error, m)?)?;
    register_recipes(m)?;
    Ok(())
}

/// The recipes and the diff engine (re-exported by `rbd_core.glance`, `.nova`, `.cinder`,
/// `.backup`, `.groups`, `.flatten`, `.reconcile`, `.placement` and `.diff`).
fn register_recipes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    use rbd_core::recipes::{glance, nova};
    let py = m.py();
    // glance
    m.add_class::<recipes_glance::Location>()?;
    m.add_class::<recipes_glance::UploadedImage>()?;
    m.add_class::<recipes_glance::GlanceDeleteOutcome>()?;
    m.add_class::<recipes_glance::ImageDownload>()?;
    m.add_function(wrap_pyfunction!(recipes_glance::glance_upload, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_glance::glance_download, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_glance::glance_open_download, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_glance::glance_delete, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_glance::_failpoint_set, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_glance::_failpoint_clear, m)?)?;
    m.add("GLANCE_SNAP_NAME", glance::SNAP_NAME)?;
    m.add("GLANCE_UPLOAD_STEPS", pyo3::types::PyTuple::new(py, glance::UPLOAD_STEPS)?)?;
    m.add("GLANCE_DELETE_STEPS", pyo3::types::PyTuple::new(py, glance::DELETE_STEPS)?)?;
    // nova
    m.add_class::<recipes_nova::NotCloneable>()?;
    m.add_class::<recipes_nova::Cloneability>()?;
    m.add_class::<recipes_nova::BootedDisk>()?;
    m.add_class::<recipes_nova::SnapshotImage>()?;
    m.add_class::<recipes_nova::DiskOutcome>()?;
    m.add_class::<recipes_nova::DiskDeletion>()?;
    m.add_function(wrap_pyfunction!(recipes_nova::nova_is_cloneable, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_nova::nova_boot_disk, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_nova::nova_snapshot_instance, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_nova::nova_delete_instance_disks, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_nova::nova_resize_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_nova::nova_revert_resize, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_nova::nova_confirm_resize, m)?)?;
    m.add("NOVA_RESIZE_SNAP", nova::RESIZE_SNAP)?;
    m.add("NOVA_BOOT_STEPS", pyo3::types::PyTuple::new(py, nova::BOOT_STEPS)?)?;
    m.add("NOVA_SNAPSHOT_STEPS", pyo3::types::PyTuple::new(py, nova::SNAPSHOT_STEPS)?)?;
    // cinder
    m.add_class::<recipes_cinder::DepthRule>()?;
    m.add_class::<recipes_cinder::ChildrenPolicy>()?;
    m.add_class::<recipes_cinder::VolumeDeleteOutcome>()?;
    m.add_class::<recipes_cinder::Volume>()?;
    m.add_class::<recipes_cinder::VolumeSnapshot>()?;
    m.add_class::<recipes_cinder::SnapshotDeletion>()?;
    m.add_class::<recipes_cinder::VolumeDeletion>()?;
    m.add_class::<recipes_cinder::PoolCapacity>()?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_create, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_create_from_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_create_from_image, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_create_from_volume, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_create_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_delete_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_delete_volume, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_extend, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_revert_to_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_manage_existing, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_pool_capacity, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_volume_info, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_clone_depth, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_volume_name, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_snapshot_name, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_clone_snap_name, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_cinder::cinder_is_backup_snap, m)?)?;
    register_more_recipes(m)?;
    // diff engine
    m.add_class::<diffio::ExportStats>()?;
    m.add_class::<diffio::ImportStats>()?;
    m.add_class::<diffio::TransferStats>()?;
    m.add_function(wrap_pyfunction!(diffio::export_diff, m)?)?;
    m.add_function(wrap_pyfunction!(diffio::import_diff, m)?)?;
    m.add_function(wrap_pyfunction!(diffio::export_image, m)?)?;
    m.add_function(wrap_pyfunction!(diffio::import_image, m)?)?;
    m.add_function(wrap_pyfunction!(diffio::transfer, m)?)?;
    m.add_function(wrap_pyfunction!(diffio::rollback_to_from_snap, m)?)?;
    m.add("DIFF_STREAM_OP", rbd_core::stream::STREAM_OP)?;
    Ok(())
}

/// The backup, groups, flatten, reconcile and placement recipes.
fn register_more_recipes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    use pyo3::types::PyTuple;
    use rbd_core::recipes::{backup, groups, throttle};
    let py = m.py();
    // backup
    m.add_class::<recipes_backup::BackupKind>()?;
    m.add_class::<recipes_backup::BackupResult>()?;
    m.add_class::<recipes_backup::BackupRestoreKind>()?;
    m.add_class::<recipes_backup::BackupRestore>()?;
    m.add_class::<recipes_backup::BackupInfo>()?;
    m.add_class::<recipes_backup::BackupDeletion>()?;
    m.add_class::<recipes_backup::BackupVerification>()?;
    m.add_class::<recipes_backup::BackupTrimReport>()?;
    m.add_class::<recipes_backup::BackupSnapName>()?;
    m.add_function(wrap_pyfunction!(recipes_backup::backup_create, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_backup::backup_restore, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_backup::backup_list, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_backup::backup_delete, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_backup::backup_verify, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_backup::backup_trim_source_snapshots, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_backup::backup_parse_snap_name, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_backup::backup_image_name, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_backup::backup_meta_object_name, m)?)?;
    m.add("BACKUP_CREATE_STEPS", PyTuple::new(py, backup::CREATE_STEPS)?)?;
    m.add("BACKUP_RESTORE_STEPS", PyTuple::new(py, backup::RESTORE_STEPS)?)?;
    m.add("BACKUP_DELETE_STEPS", PyTuple::new(py, backup::DELETE_STEPS)?)?;
    m.add("BACKUP_IMAGE_FEATURES", backup::BACKUP_IMAGE_FEATURES.0)?;
    // groups
    m.add_class::<recipes_groups::GroupSpec>()?;
    m.add_class::<recipes_groups::ConsistencyGroup>()?;
    m.add_class::<recipes_groups::MemberSnapshot>()?;
    m.add_class::<recipes_groups::GroupSnapshot>()?;
    m.add_class::<recipes_groups::RestoredVolume>()?;
    m.add_class::<recipes_groups::RestoredGroup>()?;
    m.add_class::<recipes_groups::ConsistencyGroups>()?;
    m.add_function(wrap_pyfunction!(recipes_groups::groups_rbd_group_name, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_groups::groups_rbd_snap_name, m)?)?;
    m.add("GROUPS_CREATE_STEPS", PyTuple::new(py, groups::CREATE_STEPS)?)?;
    m.add("GROUPS_ADD_STEPS", PyTuple::new(py, groups::ADD_STEPS)?)?;
    m.add("GROUPS_REMOVE_STEPS", PyTuple::new(py, groups::REMOVE_STEPS)?)?;
    m.add("GROUPS_SNAPSHOT_STEPS", PyTuple::new(py, groups::SNAPSHOT_STEPS)?)?;
    m.add("GROUPS_DELETE_SNAPSHOT_STEPS", PyTuple::new(py, groups::DELETE_SNAPSHOT_STEPS)?)?;
    m.add("GROUPS_RESTORE_STEPS", PyTuple::new(py, groups::RESTORE_STEPS)?)?;
    m.add("GROUPS_DELETE_STEPS", PyTuple::new(py, groups::DELETE_STEPS)?)?;
    // flatten gate and throttle
    m.add_class::<recipes_flatten::FlattenThrottle>()?;
    m.add_class::<recipes_flatten::SlotGuard>()?;
    m.add_class::<recipes_flatten::SlotState>()?;
    m.add_function(wrap_pyfunction!(recipes_flatten::flatten_image, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_flatten::flatten_set_default_gate, m)?)?;
    m.add_function(wrap_pyfunction!(recipes_flatten::flatten_default_gate, m)?)?;
    m.add("FLATTEN_SLOT_PREFIX", throttle::DEFAULT_PREFIX)?;
    m.add("FLATTEN_HEARTBEAT_KEY", throttle::HEARTBEAT_KEY)?;
    m.add("FLATTEN_MAX_SLOTS", throttle::MAX_SLOTS)?;
    // reconcile
    m.add_class::<recipes_reconcile::FindingKind>()?;
    m.add_class::<recipes_reconcile::Finding>()?;
    m.add_class::<recipes_reconcile::Skipped>()?;
    m.add_class::<recipes_reconcile::ReconcileReport>()?;
    m.add_function(wrap_pyfunction!(recipes_reconcile::reconcile_run, m)?)?;
    m.add("RECONCILE_DEFAULT_MIN_AGE", recipes_reconcile::default_min_age())?;
    // placement
    m.add_class::<recipes_placement::Backend>()?;
    m.add_class::<recipes_placement::BackendStats>()?;
    m.add_class::<recipes_placement::Weighed>()?;
    m.add_class::<recipes_placement::Rejected>()?;
    m.add_class::<recipes_placement::Schedule>()?;
    m.add_class::<recipes_placement::FailedAttempt>()?;
    m.add_class::<recipes_placement::Placed>()?;
    m.add_class::<recipes_placement::Scheduler>()?;
    m.add_function(wrap_pyfunction!(recipes_placement::placement_gather_stats, m)?)?;
    Ok(())
}
