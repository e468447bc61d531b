//! Failpoints at recipe step boundaries, for tests that prove the undo.
//!
//! A failpoint is named `<recipe>.<step>` (checked just before that step runs) or
//! `<recipe>.commit` (after the last step). Configure them in-process with [`set`] or, for a
//! child process, with the environment variable `RBD_CORE_FAILPOINTS`:
//! `glance.upload.snapshot=error;nova.snapshot.flatten=kill`.
//!
//! Actions: `error` (the step fails with an injected error, so the recipe undoes), `kill`
//! (SIGKILL this process: a real crash, no undo), `panic`. With nothing configured the check is
//! one atomic load.
//!
//! ```
//! use rbd_core::recipes::failpoint::{self, Action};
//! failpoint::set("demo.step", Action::Error);
//! assert!(failpoint::check("demo.step").is_err());
//! failpoint::clear("demo.step");
//! assert!(failpoint::check("demo.step").is_ok());
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use parking_lot::RwLock;

use crate::error::{Error, ErrorKind, Result};

/// What a triggered failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Fail the step with an injected `ErrorKind::Io` error.
    Error,
    /// SIGKILL the current process (simulates a crash at the boundary).
    Kill,
    /// Panic (tests the undo-on-drop path).
    Panic,
}

static ANY: AtomicBool = AtomicBool::new(false);

fn table() -> &'static RwLock<HashMap<String, Action>> {
    static T: OnceLock<RwLock<HashMap<String, Action>>> = OnceLock::new();
    T.get_or_init(|| {
        let mut m = HashMap::new();
        if let Ok(spec) = std::env::var("RBD_CORE_FAILPOINTS") {
            for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                if let Some((name, act)) = item.split_once('=') {
                    let a = match act.trim() {
                        "kill" => Action::Kill,
                        "panic" => Action::Panic,
                        _ => Action::Error,
                    };
                    m.insert(name.trim().to_string(), a);
                }
            }
        }
        if !m.is_empty() {
            ANY.store(true, Ordering::SeqCst);
        }
        RwLock::new(m)
    })
}

/// Arms failpoint `name`.
pub fn set(name: &str, action: Action) {
    table().write().insert(name.to_string(), action);
    ANY.store(true, Ordering::SeqCst);
}

/// Disarms failpoint `name`.
pub fn clear(name: &str) {
    let mut t = table().write();
    t.remove(name);
    ANY.store(!t.is_empty(), Ordering::SeqCst);
}

/// Disarms every failpoint.
pub fn clear_all() {
    table().write().clear();
    ANY.store(false, Ordering::SeqCst);
}

/// Checks failpoint `name`: `Ok` unless armed.
///
/// # Errors
/// [`ErrorKind::Io`] with the message `injected failure at <name>` when armed with `Error`.
pub fn check(name: &str) -> Result<()> {
    // The env table is read on first use even when nothing was set in-process.
    if !ANY.load(Ordering::Relaxed) && table().read().is_empty() {
        return Ok(());
    }
    let action = table().read().get(name).copied();
    match action {
        None => Ok(()),
        Some(Action::Error) => Err(Error::new(ErrorKind::Io, "failpoint", format!("injected failure at {name}"))),
        Some(Action::Panic) => panic!("injected panic at failpoint {name}"),
        Some(Action::Kill) => {
            tracing::warn!(failpoint = name, "killing this process (failpoint)");
            // SAFETY: plain libc calls on our own pid.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            std::process::abort()
        }
    }
}
