//! Locks: the managed exclusive lock (`with image.exclusive_lock():`, owners, break) and the
//! legacy advisory locks (`with image.advisory_lock(cookie):`, lockers, break).

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;

use crate::image::Image;

/// A managed-lock mode (``RBD_LOCK_MODE_*``).
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LockMode {
    /// ``RBD_LOCK_MODE_EXCLUSIVE``.
    Exclusive = 0,
    /// ``RBD_LOCK_MODE_SHARED`` (acquiring it is not supported on Pacific).
    Shared = 1,
}

impl LockMode {
    fn to_lib(self) -> rbd_core::LockMode {
        match self {
            LockMode::Exclusive => rbd_core::LockMode::Exclusive,
            LockMode::Shared => rbd_core::LockMode::Shared,
        }
    }
}

/// A holder of the managed lock.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LockOwner {
    /// Lock mode.
    pub mode: LockMode,
    /// The owner (pass it to ``Image.lock_break``).
    pub owner: String,
}

#[pymethods]
impl LockOwner {
    fn __repr__(&self) -> String {
        format!("LockOwner(mode=LockMode.{:?}, owner={:?})", self.mode, self.owner)
    }
}

/// One holder of an advisory lock.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Locker {
    /// The entity, e.g. ``client.4123``.
    pub client: String,
    /// The cookie it locked with.
    pub cookie: String,
    /// Its address.
    pub addr: String,
}

#[pymethods]
impl Locker {
    fn __repr__(&self) -> String {
        format!("Locker(client={:?}, cookie={:?}, addr={:?})", self.client, self.cookie, self.addr)
    }
}

/// The advisory lock state of an image (no holders: ``lockers`` is empty).
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq, Eq)]
pub struct Lockers {
    /// True for an exclusive lock, False for shared.
    pub exclusive: bool,
    /// The shared-lock tag ("" for exclusive locks).
    pub tag: String,
    /// Who holds it.
    pub lockers: Vec<Locker>,
}

#[pymethods]
impl Lockers {
    fn __len__(&self) -> usize {
        self.lockers.len()
    }

    fn __repr__(&self) -> String {
        let l: Vec<String> = self.lockers.iter().map(Locker::__repr__).collect();
        format!(
            "Lockers(exclusive={}, tag={:?}, lockers=[{}])",
            if self.exclusive { "True" } else { "False" },
            self.tag,
            l.join(", ")
        )
    }
}

/// The managed exclusive lock of an image as a context manager: ``with image.exclusive_lock():``
/// acquires on entry (other clients' writes then fail with ReadOnlyImage) and releases on exit.
#[pyclass(module = "rbd_core._native", frozen)]
pub struct ExclusiveLock {
    image: Py<Image>,
    held: AtomicBool,
}

#[pymethods]
impl ExclusiveLock {
    /// Acquires the lock.
    fn acquire(&self, py: Python<'_>) -> PyResult<()> {
        self.image.get().with(py, |i| i.lock_acquire_raw())?;
        self.held.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Releases the lock (InvalidArgument when this client no longer owns it).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.held.store(false, Ordering::SeqCst);
        self.image.get().with(py, |i| i.lock_release())
    }

    /// True between acquire and release.
    #[getter]
    fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().acquire(slf.py())?;
        Ok(slf)
    }

    /// Releases; a release error is raised only when the block itself succeeded (otherwise it
    /// is logged at WARNING on the ``rbd_core.python`` logger).
    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.held() {
            let r = self.release(py);
            if _exc_type.is_none_or(|t| t.is_none()) {
                r?;
            } else if let Err(e) = r {
                tracing::warn!(target: "rbd_core::python", image = %self.image.get().spec_str(), error = %e,
                    "releasing the exclusive lock failed while leaving the block; raising the block's exception");
            }
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("<rbd_core.ExclusiveLock held={}>", if self.held() { "True" } else { "False" })
    }
}

/// An advisory (cls_lock) lock as a context manager: exclusive, or shared when a ``tag`` is
/// given. Advisory locks do not block I/O; they tell cooperating clients who uses the image.
#[pyclass(module = "rbd_core._native", frozen)]
pub struct AdvisoryLock {
    image: Py<Image>,
    cookie: String,
    tag: Option<String>,
    held: AtomicBool,
}

#[pymethods]
impl AdvisoryLock {
    /// Takes the lock (ImageBusy when another client holds it, ImageExists when this one
    /// already does with this cookie).
    fn acquire(&self, py: Python<'_>) -> PyResult<()> {
        let (cookie, tag) = (&self.cookie, &self.tag);
        self.image.get().with(py, move |i| match tag {
            Some(t) => i.lock_shared(cookie, t),
            None => i.lock_exclusive(cookie),
        })?;
        self.held.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Releases the lock.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.held.store(false, Ordering::SeqCst);
        let cookie = &self.cookie;
        self.image.get().with(py, move |i| i.unlock(cookie))
    }

    /// The cookie.
    #[getter]
    fn cookie(&self) -> String {
        self.cookie.clone()
    }

    /// The shared-lock tag (None for an exclusive lock).
    #[getter]
    fn tag(&self) -> Option<String> {
        self.tag.clone()
    }

    /// True between acquire and release.
    #[getter]
    fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().acquire(slf.py())?;
        Ok(slf)
    }

    /// Releases; a release error is raised only when the block itself succeeded (otherwise it
    /// is logged at WARNING on the ``rbd_core.python`` logger).
    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.held() {
            let r = self.release(py);
            if _exc_type.is_none_or(|t| t.is_none()) {
                r?;
            } else if let Err(e) = r {
                tracing::warn!(target: "rbd_core::python", image = %self.image.get().spec_str(), cookie = %self.cookie,
                    error = %e, "releasing the advisory lock failed while leaving the block; raising the block's exception");
            }
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("<rbd_core.AdvisoryLock cookie={:?} held={}>", self.cookie, if self.held() { "True" } else { "False" })
    }
}

#[pymethods]
impl Image {
    /// The managed exclusive lock as a context manager (acquired on ``with`` entry).
    fn exclusive_lock(slf: Py<Self>) -> ExclusiveLock {
        ExclusiveLock { image: slf, held: AtomicBool::new(false) }
    }

    /// An advisory lock with ``cookie`` as a context manager: shared with ``tag``, else
    /// exclusive.
    #[pyo3(signature = (cookie, tag=None))]
    fn advisory_lock(slf: Py<Self>, cookie: String, tag: Option<String>) -> AdvisoryLock {
        AdvisoryLock { image: slf, cookie, tag, held: AtomicBool::new(false) }
    }

    /// Acquires the managed exclusive lock until ``lock_release`` or close (InvalidArgument
    /// without the exclusive-lock feature, ReadOnlyImage when another client holds it).
    fn lock_acquire(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |i| i.lock_acquire_raw())
    }

    /// Releases the managed lock this client holds.
    fn lock_release(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |i| i.lock_release())
    }

    /// Who holds the managed lock (empty when nobody does).
    fn lock_owners(&self, py: Python<'_>) -> PyResult<Vec<LockOwner>> {
        let v = self.with(py, |i| i.lock_owners())?;
        Ok(v.into_iter()
            .map(|o| LockOwner {
                mode: match o.mode {
                    rbd_core::LockMode::Shared => LockMode::Shared,
                    _ => LockMode::Exclusive,
                },
                owner: o.owner,
            })
            .collect())
    }

    /// Breaks another client's managed lock; the old owner is blocklisted (its next write
    /// raises ConnectionShutdown).
    fn lock_break(&self, py: Python<'_>, mode: LockMode, owner: String) -> PyResult<()> {
        self.with(py, move |i| i.lock_break(mode.to_lib(), &owner))
    }

    /// True when this handle owns the managed lock.
    fn is_exclusive_lock_owner(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |i| i.is_exclusive_lock_owner())
    }

    /// Takes an advisory exclusive lock with ``cookie``.
    fn lock_exclusive(&self, py: Python<'_>, cookie: String) -> PyResult<()> {
        self.with(py, move |i| i.lock_exclusive(&cookie))
    }

    /// Takes an advisory shared lock with ``cookie`` and ``tag``.
    fn lock_shared(&self, py: Python<'_>, cookie: String, tag: String) -> PyResult<()> {
        self.with(py, move |i| i.lock_shared(&cookie, &tag))
    }

    /// Releases this client's advisory lock with ``cookie``.
    fn unlock(&self, py: Python<'_>, cookie: String) -> PyResult<()> {
        self.with(py, move |i| i.unlock(&cookie))
    }

    /// Breaks another client's advisory lock (blocklists its address first, by default).
    fn break_lock(&self, py: Python<'_>, client: String, cookie: String) -> PyResult<()> {
        self.with(py, move |i| i.break_lock(&client, &cookie))
    }

    /// The advisory lock state.
    fn list_lockers(&self, py: Python<'_>) -> PyResult<Lockers> {
        let l = self.with(py, |i| i.list_lockers())?;
        Ok(Lockers {
            exclusive: l.exclusive,
            tag: l.tag,
            lockers: l
                .lockers
                .into_iter()
                .map(|k| Locker { client: k.client, cookie: k.cookie, addr: k.addr })
                .collect(),
        })
    }
}
