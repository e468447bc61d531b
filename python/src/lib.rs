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
mod recipes_cinder;
mod recipes_glance;
mod recipes_nova;
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

/// The recipes and the diff engine (re-exported by `rbd_core.glance`, `.nova`, `.cinder` and
/// `.diff`).
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
