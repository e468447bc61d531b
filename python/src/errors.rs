//! `rbd_core::Error` → the exception classes of `rbd_core.errors` (defined once, in Python).
//!
//! The kind name, errno, message, operation and target are handed to `rbd_core.errors._make`,
//! which picks the class (python-rbd's names and errno table). Errors that ended a recipe step
//! (`Error::recipe_step`) also carry `.recipe`, `.step` and `.undo_errors` (a list of
//! exceptions built the same way), and are instances of `rbd_core.StepFailed` as well as of
//! their kind's class.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// Which errno table applies. python-rbd maps ENOENT/EEXIST of group calls to
/// `ObjectNotFound`/`ObjectExists` instead of `ImageNotFound`/`ImageExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// `errno_to_exception` (image and pool calls).
    Image,
    /// `group_errno_to_exception` (group calls).
    Group,
}

/// Converts a library error into the `rbd_core.errors` exception for its kind.
pub(crate) fn to_py(e: rbd_core::Error) -> PyErr {
    to_py_with(e, Table::Image)
}

/// [`to_py`] with an explicit errno table.
pub(crate) fn to_py_with(e: rbd_core::Error, table: Table) -> PyErr {
    Python::attach(|py| match make(py, &e, table) {
        Ok(exc) => PyErr::from_value(exc),
        Err(import_err) => import_err,
    })
}

fn make<'py>(py: Python<'py>, e: &rbd_core::Error, table: Table) -> PyResult<Bound<'py, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("message", e.message())?;
    kw.set_item("group", table == Table::Group)?;
    if let Some((recipe, step)) = e.recipe_step() {
        let undo = PyList::empty(py);
        for u in e.undo_errors() {
            undo.append(make(py, u, table)?)?;
        }
        kw.set_item("recipe", recipe)?;
        kw.set_item("step", step)?;
        kw.set_item("undo_errors", undo)?;
    }
    py.import("rbd_core.errors")?
        .getattr("_make")?
        .call((format!("{:?}", e.kind()), e.errno(), e.to_string(), e.op(), e.target()), Some(&kw))
}

/// The error for a method called on a closed handle (like file objects: `ValueError`).
pub(crate) fn closed(what: &str) -> PyErr {
    PyValueError::new_err(format!("operation on a closed {what}"))
}

/// Extension trait: `.py()?` on library results.
pub(crate) trait PyResultExt<T> {
    /// Maps the error with the image/pool errno table.
    fn py(self) -> PyResult<T>;
    /// Maps the error with the group errno table.
    fn py_group(self) -> PyResult<T>;
}

impl<T> PyResultExt<T> for rbd_core::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
    fn py_group(self) -> PyResult<T> {
        self.map_err(|e| to_py_with(e, Table::Group))
    }
}

/// Raises the exception a recipe failure with `errno` (and undo failures with `undo_errnos`)
/// maps to. For tests of the error mapping only.
#[pyfunction]
#[pyo3(signature = (errno, undo_errnos=Vec::new()))]
pub(crate) fn _raise_test_error(errno: i32, undo_errnos: Vec<i32>) -> PyResult<()> {
    let undo = undo_errnos
        .into_iter()
        .map(|n| rbd_core::Error::from_errno(-i64::from(n), "undo_op", Some("rbd/undo-target".to_string())))
        .collect();
    let e = rbd_core::Error::from_errno(-i64::from(errno), "test_op", Some("rbd/test-target".to_string())).in_recipe(
        "test_recipe",
        "test_step",
        undo,
    );
    Err(to_py(e))
}
