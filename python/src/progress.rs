//! Progress callbacks, cancellation and Ctrl-C for long operations (flatten, remove, rollback,
//! copy, trash remove/purge, group rollback, resize, sparsify).
//!
//! Python callbacks go through rbd-core's panic-safe `Progress` trampoline (STYLE §6/§8):
//! * the operation runs on a scoped worker thread while the calling thread waits with the GIL
//!   released, waking every [`POLL`] to run `py.check_signals()`: Ctrl-C (or any signal
//!   handler that raises) cancels the operation even when librbd reports progress from its own
//!   threads, where `check_signals` does nothing;
//! * the callback `on_progress(done, total)` runs under `Python::attach` (on whichever thread
//!   librbd calls it from); returning `False` cancels (`OperationCanceled`), any other value
//!   continues;
//! * an exception raised by the callback (or by a signal handler) cancels the operation and
//!   is re-raised once the operation has returned.

use std::ops::ControlFlow;
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBool;

use crate::errors::{PyResultExt, Table};

/// How often the waiting thread checks for signals.
const POLL: Duration = Duration::from_millis(50);

/// A flag another thread can set to cancel a running operation (checked at every progress
/// step; the operation then raises `OperationCanceled`).
#[pyclass(module = "rbd_core._native", frozen)]
pub struct CancelToken {
    pub(crate) inner: rbd_core::CancelToken,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        CancelToken { inner: rbd_core::CancelToken::new() }
    }

    /// Requests cancellation of every operation this token was passed to.
    fn cancel(&self) {
        self.inner.cancel();
    }

    /// True once `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }

    fn __repr__(&self) -> String {
        format!("<rbd_core.CancelToken cancelled={}>", self.inner.is_cancelled())
    }
}

/// The Python side of one operation's progress: the callable, the token, and the first
/// Python exception (callback or signal handler) to re-raise afterwards.
pub(crate) struct Reporter {
    cb: Option<Py<PyAny>>,
    token: rbd_core::CancelToken,
    error: Mutex<Option<PyErr>>,
}

impl Reporter {
    pub(crate) fn new(on_progress: Option<&Bound<'_, PyAny>>, cancel: Option<&Bound<'_, CancelToken>>) -> Self {
        // The caller's token when given, else a private one. Ctrl-C and callback errors cancel
        // it, so operations sharing a caller's token all stop.
        let token = cancel.map(|c| c.get().inner.clone()).unwrap_or_default();
        Reporter { cb: on_progress.map(|b| b.clone().unbind()), token, error: Mutex::new(None) }
    }

    fn fail(&self, e: PyErr) {
        let mut g = self.error.lock();
        if g.is_none() {
            *g = Some(e);
        }
        self.token.cancel();
    }

    /// The progress function: runs on a librbd or worker thread, with the GIL released by the
    /// caller, and takes the GIL only when there is a Python callable to call.
    fn report(&self, done: u64, total: u64) -> ControlFlow<()> {
        if self.error.lock().is_some() {
            return ControlFlow::Break(());
        }
        let Some(cb) = &self.cb else { return ControlFlow::Continue(()) };
        Python::attach(|py| {
            if let Err(e) = py.check_signals() {
                self.fail(e);
                return ControlFlow::Break(());
            }
            match cb.call1(py, (done, total)) {
                Ok(v) if v.bind(py).is(PyBool::new(py, false)) => ControlFlow::Break(()),
                Ok(_) => ControlFlow::Continue(()),
                Err(e) => {
                    self.fail(e);
                    ControlFlow::Break(())
                }
            }
        })
    }

    /// The exception to raise instead of the operation's result, if any.
    fn take_error(&self) -> Option<PyErr> {
        self.error.lock().take()
    }
}

/// Runs `op` with a progress reporter built from `on_progress` and `cancel`, with the GIL
/// released, handling Ctrl-C and callback exceptions as described in the module docs.
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
    table: Table,
    op: impl FnOnce(&mut rbd_core::Progress<'_>) -> PyResult<rbd_core::Result<T>> + Send,
) -> PyResult<T> {
    let rep = Reporter::new(on_progress, cancel);
    let rep_ref = &rep;
    let res = py.detach(move || {
        std::thread::scope(|s| {
            let (tx, rx) = channel::<()>();
            let worker = s.spawn(move || {
                let _done = tx; // dropped when the operation ends (or panics): wakes the waiter
                let mut f = |done: u64, total: u64| rep_ref.report(done, total);
                let mut p = rbd_core::Progress::new(&mut f).with_cancel(rep_ref.token.clone());
                op(&mut p)
            });
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(POLL) {
                if let Err(e) = Python::attach(|py| py.check_signals()) {
                    rep_ref.fail(e);
                }
            }
            match worker.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    });
    if let Some(e) = rep.take_error() {
        return Err(e);
    }
    match table {
        Table::Image => res?.py(),
        Table::Group => res?.py_group(),
    }
}
