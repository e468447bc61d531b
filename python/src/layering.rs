//! Layering: `clone()`, parent, children, descendants, flatten with progress, clone depth.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::PyResultExt;
use crate::image::Image;
use crate::pool::Pool;
use crate::progress::CancelToken;
use crate::snapshot::SnapNamespace;
use crate::util::image_options;

/// The parent of a clone.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ParentInfo {
    /// Parent pool name.
    pub pool: String,
    /// Parent pool namespace ("" for the default one).
    pub pool_namespace: String,
    /// Parent image name.
    pub image: String,
    /// Parent image id.
    pub image_id: String,
    /// Parent snapshot name (generated for trash/group snapshots).
    pub snap: String,
    /// Parent snapshot id.
    pub snap_id: u64,
    /// Parent snapshot namespace (``Trash`` once the snapshot was removed while in use).
    pub snap_namespace: SnapNamespace,
    /// True when the parent image is in the trash.
    pub trash: bool,
}

#[pymethods]
impl ParentInfo {
    fn __repr__(&self) -> String {
        let ns = if self.pool_namespace.is_empty() { String::new() } else { format!("{}/", self.pool_namespace) };
        format!("ParentInfo('{}/{ns}{}@{}', snap_id={})", self.pool, self.image, self.snap, self.snap_id)
    }
}

/// A clone of an image snapshot.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChildInfo {
    /// Child pool name.
    pub pool: String,
    /// Child pool namespace ("" for the default one).
    pub pool_namespace: String,
    /// Child image name.
    pub image: String,
    /// Child image id.
    pub image_id: String,
    /// True when the child is in the trash.
    pub trash: bool,
}

#[pymethods]
impl ChildInfo {
    fn __repr__(&self) -> String {
        let ns = if self.pool_namespace.is_empty() { String::new() } else { format!("{}/", self.pool_namespace) };
        format!("ChildInfo('{}/{ns}{}', trash={})", self.pool, self.image, if self.trash { "True" } else { "False" })
    }
}

fn child(c: rbd_core::ChildInfo) -> ChildInfo {
    ChildInfo { pool: c.pool, pool_namespace: c.pool_namespace, image: c.image, image_id: c.image_id, trash: c.trash }
}

/// Clones ``parent@snap`` of ``parent_pool`` into ``child`` of ``child_pool`` (another pool or
/// namespace is fine). ``clone_format`` 2 needs no protected snapshot; 1 does; None lets
/// librbd choose (``rbd_default_clone_format``). Unset geometry and features are inherited.
#[pyfunction]
#[pyo3(signature = (parent_pool, parent, snap, child_pool, child, clone_format=Some(2), order=None, features=None, stripe_unit=None, stripe_count=None, data_pool=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn clone(
    py: Python<'_>,
    parent_pool: &Pool,
    parent: String,
    snap: String,
    child_pool: &Pool,
    child: String,
    clone_format: Option<u8>,
    order: Option<u8>,
    features: Option<u64>,
    stripe_unit: Option<u64>,
    stripe_count: Option<u64>,
    data_pool: Option<String>,
) -> PyResult<()> {
    let mut o = image_options(order, features, stripe_unit, stripe_count, data_pool.as_deref());
    match clone_format {
        None => {}
        Some(1) => {
            o.clone_format(rbd_core::CloneFormat::V1);
        }
        Some(2) => {
            o.clone_format(rbd_core::CloneFormat::V2);
        }
        Some(n) => return Err(PyValueError::new_err(format!("clone_format must be 1, 2 or None, not {n}"))),
    }
    py.detach(|| rbd_core::clone_image(&parent_pool.inner, &parent, &snap, &child_pool.inner, &child, &o)).py()
}

#[pymethods]
impl Image {
    /// The parent of this clone, or None when it is not a clone (or was flattened).
    fn parent(&self, py: Python<'_>) -> PyResult<Option<ParentInfo>> {
        let p = self.with(py, |i| i.parent())?;
        Ok(p.map(|p| ParentInfo {
            snap_namespace: SnapNamespace::from_lib(&p.snap_namespace),
            pool: p.pool,
            pool_namespace: p.pool_namespace,
            image: p.image,
            image_id: p.image_id,
            snap: p.snap,
            snap_id: p.snap_id,
            trash: p.trash,
        }))
    }

    /// Direct clones of the snapshot this handle is opened at (or of every snapshot, for the
    /// head).
    fn children(&self, py: Python<'_>) -> PyResult<Vec<ChildInfo>> {
        Ok(self.with(py, |i| i.children())?.into_iter().map(child).collect())
    }

    /// Direct clones of user snapshot ``snap``.
    fn children_of_snap(&self, py: Python<'_>, snap: String) -> PyResult<Vec<ChildInfo>> {
        Ok(self.with(py, move |i| i.children_of_snap(&snap))?.into_iter().map(child).collect())
    }

    /// True when user snapshot ``snap`` has clones.
    fn snap_has_children(&self, py: Python<'_>, snap: String) -> PyResult<bool> {
        self.with(py, move |i| i.snap_children_exist(&snap))
    }

    /// Every clone below this image, recursively.
    fn descendants(&self, py: Python<'_>) -> PyResult<Vec<ChildInfo>> {
        Ok(self.with(py, |i| i.descendants())?.into_iter().map(child).collect())
    }

    /// Copies the parent's data into this clone and detaches it. ``on_progress(done, total)``
    /// is called per object (from a librbd thread); return False to cancel
    /// (OperationCanceled). Exceptions it raises, and Ctrl-C, cancel the flatten and are
    /// re-raised when it has stopped. ``cancel`` (a CancelToken) stops it from another thread.
    #[pyo3(signature = (on_progress=None, cancel=None))]
    fn flatten(
        &self,
        py: Python<'_>,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        self.with_progress(py, on_progress, cancel, |i, p| i.flatten_with_progress(p))
    }

    /// Number of ancestors (0 for an image that is not a clone).
    fn clone_depth(&self, py: Python<'_>) -> PyResult<u32> {
        self.with(py, |i| i.clone_depth())
    }
}
