//! Trash (move, list, get, restore, remove, purge) and RBD namespaces of a pool.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::{PyResultExt, Table};
use crate::pool::Pool;
use crate::progress::{self, CancelToken};
use crate::util::{datetime_utc, to_system_time, unix_seconds};

/// Why an image is in the trash (``RBD_TRASH_IMAGE_SOURCE_*``).
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TrashSource {
    /// Moved by a user.
    User = 0,
    /// Moved by rbd-mirror.
    Mirroring = 1,
    /// Source of a live migration.
    Migration = 2,
    /// An interrupted removal.
    Removing = 3,
    /// Moved by a user while it still had clone-v2 children.
    UserParent = 4,
    /// A source this library does not know.
    Other = 255,
}

/// One image in the trash.
#[pyclass(module = "rbd_core._native", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct TrashEntry {
    /// Image id (what restore and remove take).
    #[pyo3(get)]
    pub id: String,
    /// The name the image had.
    #[pyo3(get)]
    pub name: String,
    /// Why it is in the trash.
    #[pyo3(get)]
    pub source: TrashSource,
    deletion: f64,
    deferment_end: f64,
}

#[pymethods]
impl TrashEntry {
    /// When it was moved (UTC ``datetime``).
    #[getter]
    fn deletion_time<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime_utc(py, self.deletion)
    }

    /// Before this time removal needs ``force`` and purge skips it (UTC ``datetime``).
    #[getter]
    fn deferment_end_time<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime_utc(py, self.deferment_end)
    }

    fn __repr__(&self) -> String {
        format!("TrashEntry(id={:?}, name={:?}, source=TrashSource.{:?})", self.id, self.name, self.source)
    }
}

fn entry(e: rbd_core::TrashEntry) -> TrashEntry {
    let source = match e.source {
        rbd_core::TrashSource::User => TrashSource::User,
        rbd_core::TrashSource::Mirroring => TrashSource::Mirroring,
        rbd_core::TrashSource::Migration => TrashSource::Migration,
        rbd_core::TrashSource::Removing => TrashSource::Removing,
        rbd_core::TrashSource::UserParent => TrashSource::UserParent,
        _ => TrashSource::Other,
    };
    TrashEntry {
        id: e.id,
        name: e.name,
        source,
        deletion: unix_seconds(e.deletion_time),
        deferment_end: unix_seconds(e.deferment_end_time),
    }
}

#[pymethods]
impl Pool {
    /// Moves image ``name`` to the trash; for ``delay`` seconds it can only be removed with
    /// ``force``.
    #[pyo3(signature = (name, delay=0.0))]
    fn trash_move(&self, py: Python<'_>, name: String, delay: f64) -> PyResult<()> {
        if !(delay.is_finite() && delay >= 0.0) {
            return Err(PyValueError::new_err("delay must be a non-negative number of seconds"));
        }
        py.detach(|| self.inner.trash_move(&name, Duration::from_secs_f64(delay))).py()
    }

    /// Images in the trash of this pool (namespace).
    fn trash_list(&self, py: Python<'_>) -> PyResult<Vec<TrashEntry>> {
        Ok(py.detach(|| self.inner.trash_list()).py()?.into_iter().map(entry).collect())
    }

    /// One trash entry by image id.
    fn trash_get(&self, py: Python<'_>, image_id: String) -> PyResult<TrashEntry> {
        py.detach(|| self.inner.trash_get(&image_id)).py().map(entry)
    }

    /// Restores trashed image ``image_id`` as ``name`` ("" = its original name).
    #[pyo3(signature = (image_id, name=String::new()))]
    fn trash_restore(&self, py: Python<'_>, image_id: String, name: String) -> PyResult<()> {
        py.detach(|| self.inner.trash_restore(&image_id, &name)).py()
    }

    /// Deletes trashed image ``image_id`` (``force`` before its deferment end), with progress.
    #[pyo3(signature = (image_id, force=false, on_progress=None, cancel=None))]
    fn trash_remove(
        &self,
        py: Python<'_>,
        image_id: String,
        force: bool,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        progress::run(py, on_progress, cancel, Table::Image, |p| {
            Ok(self.inner.trash_remove_with_progress(&image_id, force, p))
        })
    }

    /// Deletes every user-trashed image whose deferment ended by ``expire_before`` (a
    /// ``datetime`` or epoch seconds; None = now). With ``threshold`` (0.0-1.0) only the
    /// oldest entries, while the pool is fuller than that. Acts on the whole trash of this
    /// pool (namespace).
    #[pyo3(signature = (expire_before=None, threshold=None, on_progress=None, cancel=None))]
    fn trash_purge(
        &self,
        py: Python<'_>,
        expire_before: Option<&Bound<'_, PyAny>>,
        threshold: Option<f32>,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        let expire = expire_before.map(to_system_time).transpose()?;
        progress::run(py, on_progress, cancel, Table::Image, |p| Ok(self.inner.trash_purge(expire, threshold, p)))
    }

    /// Creates RBD namespace ``name`` (call on a default-namespace handle).
    fn namespace_create(&self, py: Python<'_>, name: String) -> PyResult<()> {
        py.detach(|| self.inner.namespace_create(&name)).py()
    }

    /// Removes RBD namespace ``name`` (it must be empty).
    fn namespace_remove(&self, py: Python<'_>, name: String) -> PyResult<()> {
        py.detach(|| self.inner.namespace_remove(&name)).py()
    }

    /// RBD namespaces of this pool.
    fn namespace_list(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.namespace_list()).py()
    }

    /// True when RBD namespace ``name`` exists.
    fn namespace_exists(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        py.detach(|| self.inner.namespace_exists(&name)).py()
    }
}
