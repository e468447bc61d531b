//! Library log events reach Python's `logging`.
//!
//! rbd-core emits `tracing` events and spans; with no tracing subscriber installed, the
//! `tracing` crate's `log` feature turns them into `log` records, and `pyo3-log` hands those to
//! `logging.getLogger(target)` with `::` replaced by `.`: events of `rbd_core::layering` go to
//! the logger `rbd_core.layering` (a span's creation is logged at its level with its fields,
//! e.g. `++ clone_image; pool=images image=...` at DEBUG). This module's own events use the
//! target `rbd_core::python`. Span enter/exit records (`tracing.span*`) are dropped.
//!
//! Caching: pyo3-log caches each logger and its effective level on first use (so a disabled
//! level costs no GIL round-trip later). After changing logging levels or handlers at run
//! time, call `rbd_core.reset_logging()`.
//!
//! Deadlocks: forwarding a record takes the GIL (`Python::attach`). A Rust thread that logs
//! while the GIL holder waits for that thread would deadlock; this cannot happen here because
//! every blocking call releases the GIL first (`py.detach`), including the ones whose
//! callbacks or worker threads log.

use std::sync::OnceLock;

use log::LevelFilter;
use pyo3::prelude::*;

static RESET: OnceLock<pyo3_log::ResetHandle> = OnceLock::new();

/// Installs the Python logger (once per process; a no-op if another `log` logger is set).
pub(crate) fn init(py: Python<'_>) {
    let logger = match pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels) {
        Ok(l) => l.filter(LevelFilter::Trace).filter_target("tracing".to_owned(), LevelFilter::Off),
        Err(_) => return,
    };
    if let Ok(handle) = logger.install() {
        let _ = RESET.set(handle);
    }
}

/// Forgets the cached Python loggers and levels: call after reconfiguring ``logging`` at run
/// time so that rbd_core's records follow the new levels.
#[pyfunction]
pub(crate) fn reset_logging() {
    if let Some(h) = RESET.get() {
        h.reset();
    }
}
