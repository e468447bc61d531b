//! The flatten gate and the cluster-wide flatten throttle (`rbd_core.flatten`).
//!
//! Every recipe flattens through the process-wide default gate (rbd-core's
//! `recipes::flatten::default_gate`): flatten at once, or — with a [`FlattenThrottle`] installed
//! — only after taking one of N slot images' exclusive lock, so at most N flattens run at once
//! across every process and host sharing the throttle. A throttle is also a context manager
//! that installs itself as the default gate for the block (and restores the previous gate).
//! Waiting and flattening release the GIL; `flatten` runs on the progress worker (Ctrl-C and
//! `cancel` stop the wait as well as the flatten).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use rbd_core::recipes::flatten::{self as gate, FlattenGate};
use rbd_core::recipes::throttle;

use crate::errors::PyResultExt;
use crate::image::Image;
use crate::pool::Pool;
use crate::progress::CancelToken;
use crate::util::{unix_seconds, ReleaseOnDrop};

/// Seconds from Python as a `Duration` (finite, non-negative).
pub(crate) fn seconds(what: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| PyValueError::new_err(format!("{what} must be a non-negative number of seconds")))
}

/// A default gate as installed: rbd-core's gate and the Python object it came from (None for
/// the direct flatten).
type Installed = (Arc<dyn FlattenGate>, Option<Py<FlattenThrottle>>);

/// The Python object installed as the default gate (None: flatten directly), next to the gate
/// itself in rbd-core.
static INSTALLED: Mutex<Option<Py<FlattenThrottle>>> = Mutex::new(None);

/// Installs `t` (None: direct flatten) as the process-wide default gate; returns what was
/// installed before.
fn install(py: Python<'_>, t: Option<Py<FlattenThrottle>>) -> Installed {
    let new_gate: Arc<dyn FlattenGate> = match &t {
        Some(obj) => Arc::new((*obj.bind(py).get().inner).clone()),
        None => Arc::new(gate::DirectFlatten),
    };
    let mut slot = INSTALLED.lock();
    let prev = (gate::default_gate(), slot.take());
    gate::set_default_gate(new_gate);
    *slot = t;
    prev
}

/// The cluster-wide flatten throttle: at most ``slots`` flattens at once across every process
/// using the same pool, prefix and slot count. Slots are tiny images ``<prefix>.<i>`` whose
/// exclusive lock a holder owns while it flattens, with a heartbeat; a holder whose heartbeat
/// stays unchanged for ``lease`` seconds is fenced (blocklisted) and its slot taken over.
///
/// ``with throttle:`` installs it as the default gate of every recipe for the block;
/// ``throttle.install()`` does so for good. ``acquire()`` holds a slot explicitly (a context
/// manager too).
#[pyclass(module = "rbd_core._native", frozen)]
pub struct FlattenThrottle {
    inner: ReleaseOnDrop<throttle::Throttle>,
    /// Gates replaced by `__enter__`, restored by `__exit__` (innermost last).
    saved: Mutex<Vec<Installed>>,
}

#[pymethods]
impl FlattenThrottle {
    /// A throttle with ``slots`` slots (1..=256) whose slot images live in ``pool``. ``lease``
    /// must be at least 3 × ``heartbeat`` (seconds; checked when acquiring). ``wait`` bounds how
    /// long a flatten waits for a slot (None: forever); ``label`` is added to the holder id shown
    /// by ``slots()``. Nothing is created until a slot is acquired.
    #[new]
    #[pyo3(signature = (pool, slots, prefix=None, lease=10.0, heartbeat=2.0, backoff_min=0.05, backoff_max=1.0, wait=None, label=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        pool: &Pool,
        slots: usize,
        prefix: Option<&str>,
        lease: f64,
        heartbeat: f64,
        backoff_min: f64,
        backoff_max: f64,
        wait: Option<f64>,
        label: Option<&str>,
    ) -> PyResult<Self> {
        let mut t = throttle::Throttle::new(&pool.inner, slots).py()?;
        if let Some(p) = prefix {
            t.prefix(p);
        }
        t.lease(seconds("lease", lease)?, seconds("heartbeat", heartbeat)?);
        t.backoff(seconds("backoff_min", backoff_min)?, seconds("backoff_max", backoff_max)?);
        t.wait(wait.map(|w| seconds("wait", w)).transpose()?);
        if let Some(l) = label {
            t.label(l);
        }
        Ok(FlattenThrottle { inner: ReleaseOnDrop::new(t), saved: Mutex::new(Vec::new()) })
    }

    /// Number of slots.
    #[getter]
    fn slot_count(&self) -> usize {
        self.inner.slot_count()
    }

    /// The slot image prefix.
    #[getter]
    fn prefix(&self) -> String {
        self.inner.slot_prefix().to_string()
    }

    /// The pool holding the slot images.
    #[getter]
    fn pool_name(&self) -> String {
        self.inner.pool().name().to_string()
    }

    /// The slot image name of slot ``i``.
    fn slot_image(&self, i: usize) -> String {
        self.inner.slot_image(i)
    }

    /// Waits up to ``timeout`` seconds (None: forever) for a free slot, taking over slots whose
    /// holder's heartbeat went stale, and returns the held slot (released by ``release()`` or
    /// at the end of a ``with`` block). Raises Timeout when none became free in time. The GIL is
    /// released while waiting (Ctrl-C is noticed once it returns: prefer a timeout).
    #[pyo3(signature = (timeout=None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<SlotGuard> {
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        let t = &*self.inner;
        let g = py.detach(|| t.acquire(timeout)).py()?;
        Ok(SlotGuard::wrap(g))
    }

    /// Takes a free slot without waiting; None when every slot is held by a live holder.
    fn try_acquire(&self, py: Python<'_>) -> PyResult<Option<SlotGuard>> {
        let t = &*self.inner;
        Ok(py.detach(|| t.try_acquire()).py()?.map(SlotGuard::wrap))
    }

    /// Who holds each slot (read-only; nothing is created).
    fn slots(&self, py: Python<'_>) -> PyResult<Vec<SlotState>> {
        let t = &*self.inner;
        let v = py.detach(|| t.slots()).py()?;
        Ok(v.into_iter().map(SlotState::from).collect())
    }

    /// Removes the slot images (ImageBusy, nothing removed, while a slot is held).
    fn remove_slots(&self, py: Python<'_>) -> PyResult<()> {
        let t = &*self.inner;
        py.detach(|| t.remove_slots()).py()
    }

    /// Flattens clone ``image`` through this throttle: waits for a slot (on the image's own
    /// connection), then flattens with progress. InvalidArgument for a non-clone (before
    /// waiting), Timeout when no slot became free within ``wait``, ConnectionShutdown when the
    /// slot was lost (this client was fenced) mid-flatten.
    #[pyo3(signature = (image, on_progress=None, cancel=None))]
    fn flatten(
        &self,
        py: Python<'_>,
        image: &Image,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        let t = &*self.inner;
        image.with_progress(py, on_progress, cancel, |img, p| t.flatten(img, p))
    }

    /// Installs this throttle as the process-wide default flatten gate (every recipe's flatten
    /// then waits for a slot). ``rbd_core.flatten.set_default_gate(None)`` undoes it.
    fn install(slf: &Bound<'_, Self>) {
        install(slf.py(), Some(slf.clone().unbind()));
    }

    /// Installs this throttle as the default gate for the ``with`` block.
    fn __enter__(slf: &Bound<'_, Self>) -> Py<Self> {
        let prev = install(slf.py(), Some(slf.clone().unbind()));
        slf.get().saved.lock().push(prev);
        slf.clone().unbind()
    }

    /// Restores the gate that was the default before ``__enter__``.
    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        if let Some((g, obj)) = self.saved.lock().pop() {
            let mut slot = INSTALLED.lock();
            gate::set_default_gate(g);
            *slot = obj;
        }
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<rbd_core.flatten.FlattenThrottle {}/{}.* slots={}>",
            self.inner.pool().name(),
            self.inner.slot_prefix(),
            self.inner.slot_count()
        )
    }
}

/// A held flatten slot (context manager); released by ``release()``, at the end of the
/// ``with`` block, or when garbage-collected.
#[pyclass(module = "rbd_core._native", frozen)]
pub struct SlotGuard {
    inner: Mutex<Option<throttle::SlotGuard>>,
    lost: rbd_core::CancelToken,
    slot: usize,
    image_spec: String,
    owner: String,
    since: f64,
}

impl SlotGuard {
    fn wrap(g: throttle::SlotGuard) -> SlotGuard {
        SlotGuard {
            lost: g.lost_token(),
            slot: g.slot(),
            image_spec: g.image_spec(),
            owner: g.owner().to_string(),
            since: unix_seconds(g.since()),
            inner: Mutex::new(Some(g)),
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // Releasing joins the heartbeat thread and talks to the cluster: never with the GIL.
        if let Some(g) = self.inner.get_mut().take() {
            Python::attach(|py| py.detach(move || drop(g)));
        }
    }
}

#[pymethods]
impl SlotGuard {
    /// The slot number.
    #[getter]
    fn slot(&self) -> usize {
        self.slot
    }

    /// The slot image, ``pool/<prefix>.<slot>``.
    #[getter]
    fn image_spec(&self) -> String {
        self.image_spec.clone()
    }

    /// This holder's lock owner (its client address), as other clients see it.
    #[getter]
    fn owner(&self) -> String {
        self.owner.clone()
    }

    /// When the slot was acquired (seconds since the epoch).
    #[getter]
    fn since(&self) -> f64 {
        self.since
    }

    /// True once the heartbeat found the lock gone (taken over and fenced).
    #[getter]
    fn lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// True once released.
    #[getter]
    fn released(&self, py: Python<'_>) -> bool {
        py.detach(|| self.inner.lock().is_none())
    }

    /// A CancelToken cancelled when the slot is lost: pass it as ``cancel=`` to work that must
    /// stop then.
    #[getter]
    fn lost_token(&self) -> CancelToken {
        CancelToken { inner: self.lost.clone() }
    }

    /// Releases the slot now (idempotent). Raises when the lock was lost meanwhile
    /// (InvalidArgument) or this client was fenced (ConnectionShutdown).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        match py.detach(|| self.inner.lock().take().map(throttle::SlotGuard::release)) {
            Some(r) => r.py(),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Releases the slot; a release error is raised only when the block itself succeeded.
    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let r = self.release(py);
        if exc_type.is_none_or(|t| t.is_none()) {
            r?;
        }
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.released(py) { " released" } else { "" };
        format!("<rbd_core.flatten.SlotGuard {} slot={}{state}>", self.image_spec, self.slot)
    }
}

/// Who holds a slot (``FlattenThrottle.slots()``).
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct SlotState {
    /// Slot number.
    pub slot: usize,
    /// The slot image name.
    pub image: String,
    /// False when the slot image was not created yet (the slot is free).
    pub exists: bool,
    /// The lock owner's client address, when held.
    pub owner: Option<String>,
    /// The lock owner's entity (``client.<global id>``), when held.
    pub client: Option<String>,
    /// The holder label (``<host>:<pid>[:label]``) from the owner's heartbeat.
    pub holder: Option<String>,
    /// When the current owner acquired the slot (seconds since the epoch, its clock).
    pub since: Option<f64>,
    /// Age of the owner's last heartbeat in seconds, by this host's clock.
    pub heartbeat_age: Option<f64>,
}

#[pymethods]
impl SlotState {
    /// True when somebody holds the slot.
    #[getter]
    fn held(&self) -> bool {
        self.owner.is_some()
    }

    fn __repr__(&self) -> String {
        format!(
            "SlotState(slot={}, image={:?}, exists={}, owner={}, holder={})",
            self.slot,
            self.image,
            if self.exists { "True" } else { "False" },
            crate::recipes_glance::opt_repr(&self.owner),
            crate::recipes_glance::opt_repr(&self.holder)
        )
    }
}

impl From<throttle::SlotState> for SlotState {
    fn from(s: throttle::SlotState) -> Self {
        SlotState {
            slot: s.slot,
            image: s.image,
            exists: s.exists,
            owner: s.owner,
            client: s.client,
            holder: s.holder,
            since: s.since.map(unix_seconds),
            heartbeat_age: s.heartbeat_age.map(|d| d.as_secs_f64()),
        }
    }
}

/// Flattens clone ``image`` through ``gate`` (a FlattenThrottle), or through the process-wide
/// default gate when None (what the recipes use).
#[pyfunction]
#[pyo3(signature = (image, gate=None, on_progress=None, cancel=None))]
pub(crate) fn flatten_image(
    py: Python<'_>,
    image: &Image,
    gate: Option<&FlattenThrottle>,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<()> {
    match gate {
        Some(t) => t.flatten(py, image, on_progress, cancel),
        None => {
            let g = self::gate::default_gate();
            image.with_progress(py, on_progress, cancel, move |img, p| g.flatten(img, p))
        }
    }
}

/// Installs ``gate`` (a FlattenThrottle) as the process-wide default flatten gate, or the
/// direct flatten (no bound) for None.
#[pyfunction]
#[pyo3(signature = (gate))]
pub(crate) fn flatten_set_default_gate(py: Python<'_>, gate: Option<Py<FlattenThrottle>>) {
    install(py, gate);
}

/// The FlattenThrottle installed as the default gate (None: flattens run directly).
#[pyfunction]
pub(crate) fn flatten_default_gate(py: Python<'_>) -> Option<Py<FlattenThrottle>> {
    INSTALLED.lock().as_ref().map(|o| o.clone_ref(py))
}
