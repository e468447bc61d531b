//! Consistency groups: create/remove/rename/list on a pool, `Group` members and group
//! snapshots (create, list, rename, remove, rollback with progress).
//!
//! Errors use python-rbd's group table: ENOENT is `ObjectNotFound`, EEXIST `ObjectExists`.

use pyo3::prelude::*;

use crate::errors::{PyResultExt, Table};
use crate::image::Image;
use crate::pool::Pool;
use crate::progress::{self, CancelToken};
use crate::util::ReleaseOnDrop;

/// State of a group member (``RBD_GROUP_IMAGE_STATE_*``).
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GroupImageState {
    /// A member.
    Attached = 0,
    /// Being added or removed.
    Incomplete = 1,
    /// A state this library does not know.
    Other = 255,
}

/// State of a group snapshot (``RBD_GROUP_SNAP_STATE_*``).
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GroupSnapState {
    /// Being created (or creation failed).
    Incomplete = 0,
    /// Every member has its snapshot.
    Complete = 1,
    /// A state this library does not know.
    Other = 255,
}

/// A member image of a group.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GroupImage {
    /// Id of the image's pool.
    pub pool: i64,
    /// Image name.
    pub name: String,
    /// Membership state.
    pub state: GroupImageState,
}

#[pymethods]
impl GroupImage {
    fn __repr__(&self) -> String {
        format!("GroupImage(pool={}, name={:?}, state=GroupImageState.{:?})", self.pool, self.name, self.state)
    }
}

/// A group snapshot.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GroupSnap {
    /// Snapshot name.
    pub name: String,
    /// Creation state.
    pub state: GroupSnapState,
}

#[pymethods]
impl GroupSnap {
    fn __repr__(&self) -> String {
        format!("GroupSnap(name={:?}, state=GroupSnapState.{:?})", self.name, self.state)
    }
}

/// The group an image belongs to.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GroupRef {
    /// Id of the pool holding the group.
    pub pool: i64,
    /// Group name.
    pub name: String,
}

#[pymethods]
impl GroupRef {
    fn __repr__(&self) -> String {
        format!("GroupRef(pool={}, name={:?})", self.pool, self.name)
    }
}

/// A consistency group, by pool and name (creating the handle does no I/O).
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Group {
    inner: ReleaseOnDrop<rbd_core::Group>,
}

#[pymethods]
impl Group {
    /// A handle on group ``name`` of ``pool`` (see ``Pool.group_create``).
    #[new]
    fn new(pool: &Pool, name: &str) -> Self {
        Group { inner: ReleaseOnDrop::new(rbd_core::Group::new(&pool.inner, name)) }
    }

    /// The group name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// The pool holding the group.
    #[getter]
    fn pool(&self) -> Pool {
        Pool::wrap(self.inner.pool().clone())
    }

    /// Adds image ``image`` of ``image_pool`` (any pool).
    fn add_image(&self, py: Python<'_>, image_pool: &Pool, image: String) -> PyResult<()> {
        py.detach(|| self.inner.add_image(&image_pool.inner, &image)).py_group()
    }

    /// Removes image ``image`` of ``image_pool`` from the group.
    fn remove_image(&self, py: Python<'_>, image_pool: &Pool, image: String) -> PyResult<()> {
        py.detach(|| self.inner.remove_image(&image_pool.inner, &image)).py_group()
    }

    /// Member images (empty for a group that does not exist: Pacific does not tell).
    fn images(&self, py: Python<'_>) -> PyResult<Vec<GroupImage>> {
        let v = py.detach(|| self.inner.images()).py_group()?;
        Ok(v.into_iter()
            .map(|g| GroupImage {
                pool: g.pool,
                name: g.name,
                state: match g.state {
                    rbd_core::GroupImageState::Attached => GroupImageState::Attached,
                    rbd_core::GroupImageState::Incomplete => GroupImageState::Incomplete,
                    _ => GroupImageState::Other,
                },
            })
            .collect())
    }

    /// Takes group snapshot ``name`` (a crash-consistent snapshot of every member).
    /// ``flags`` None: no quiesce notification; else ``RBD_SNAP_CREATE_*`` bits.
    #[pyo3(signature = (name, flags=None))]
    fn snap_create(&self, py: Python<'_>, name: String, flags: Option<u32>) -> PyResult<()> {
        py.detach(|| match flags {
            None => self.inner.snap_create(&name),
            Some(f) => self.inner.snap_create_with_flags(&name, rbd_core::SnapCreateFlags(f)),
        })
        .py_group()
    }

    /// Removes group snapshot ``name`` (and the members' snapshots).
    fn snap_remove(&self, py: Python<'_>, name: String) -> PyResult<()> {
        py.detach(|| self.inner.snap_remove(&name)).py_group()
    }

    /// Renames group snapshot ``src`` to ``dst``.
    fn snap_rename(&self, py: Python<'_>, src: String, dst: String) -> PyResult<()> {
        py.detach(|| self.inner.snap_rename(&src, &dst)).py_group()
    }

    /// Group snapshots.
    fn snaps(&self, py: Python<'_>) -> PyResult<Vec<GroupSnap>> {
        let v = py.detach(|| self.inner.snaps()).py_group()?;
        Ok(v.into_iter()
            .map(|s| GroupSnap {
                name: s.name,
                state: match s.state {
                    rbd_core::GroupSnapState::Incomplete => GroupSnapState::Incomplete,
                    rbd_core::GroupSnapState::Complete => GroupSnapState::Complete,
                    _ => GroupSnapState::Other,
                },
            })
            .collect())
    }

    /// Rolls every member back to group snapshot ``name``, with progress and cancellation.
    #[pyo3(signature = (name, on_progress=None, cancel=None))]
    fn snap_rollback(
        &self,
        py: Python<'_>,
        name: String,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        progress::run(py, on_progress, cancel, Table::Group, |p| Ok(self.inner.snap_rollback(&name, p)))
    }

    fn __repr__(&self) -> String {
        format!("<rbd_core.Group {}/{}>", self.inner.pool().name(), self.inner.name())
    }
}

#[pymethods]
impl Pool {
    /// Creates group ``name``.
    fn group_create(&self, py: Python<'_>, name: String) -> PyResult<Group> {
        py.detach(|| self.inner.group_create(&name)).py_group()?;
        Ok(Group { inner: ReleaseOnDrop::new(rbd_core::Group::new(&self.inner, &name)) })
    }

    /// Removes group ``name`` (a missing group is not an error, as in Pacific).
    fn group_remove(&self, py: Python<'_>, name: String) -> PyResult<()> {
        py.detach(|| self.inner.group_remove(&name)).py_group()
    }

    /// Renames group ``src`` to ``dst``.
    fn group_rename(&self, py: Python<'_>, src: String, dst: String) -> PyResult<()> {
        py.detach(|| self.inner.group_rename(&src, &dst)).py_group()
    }

    /// Group names.
    fn group_list(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.group_list()).py_group()
    }

    /// A handle on group ``name``.
    fn group(&self, name: &str) -> Group {
        Group { inner: ReleaseOnDrop::new(rbd_core::Group::new(&self.inner, name)) }
    }
}

#[pymethods]
impl Image {
    /// The group this image belongs to, or None.
    fn group(&self, py: Python<'_>) -> PyResult<Option<GroupRef>> {
        Ok(self.with(py, |i| i.group())?.map(|(pool, name)| GroupRef { pool, name }))
    }
}
