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
mod errors;
mod group;
mod image;
mod layering;
mod locks;
mod logging;
mod metadata;
mod pool;
mod progress;
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
    Ok(())
}
