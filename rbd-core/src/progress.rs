//! Progress callbacks and cancellation, shared by every long-running operation (flatten,
//! remove, resize, rollback, copy, deep copy, trash purge, group rollback, transfers).
//!
//! librbd calls progress from its own threads, so the closure is `Send` and the trampoline
//! catches panics: a panic never unwinds into C; it is stored and resumed after the C call
//! returns.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use rbd_core::{CancelToken, Cluster, Image, Pool, Progress};
//! let pool = Pool::open(&Cluster::shared(None, "admin")?, "volumes")?;
//! let img = Image::open(&pool, "volume-2")?;
//! let token = CancelToken::new(); // another thread may call token.cancel()
//! let mut report = |done: u64, total: u64| { eprintln!("{done}/{total}"); ControlFlow::Continue(()) };
//! img.flatten_with_progress(&mut Progress::new(&mut report).with_cancel(token))?;
//! # Ok::<(), rbd_core::Error>(())
//! ```

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};

/// A progress callback: `(done, total) -> Continue | Break` (Break cancels the operation).
pub type ProgressFn<'a> = dyn FnMut(u64, u64) -> ControlFlow<()> + Send + 'a;

/// A flag another thread can set to cancel a running operation (checked at every progress
/// step). Cheap to clone; `Send + Sync`.
///
/// ```
/// let token = rbd_core::CancelToken::new();
/// let t2 = token.clone();
/// t2.cancel();
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }
    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// True once [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Progress reporting and cancellation for one operation. `Progress::none()` reports nothing.
///
/// ```
/// use std::ops::ControlFlow;
/// let mut seen = 0;
/// let mut cb = |done: u64, _total: u64| { seen = done; ControlFlow::Continue(()) };
/// let mut p = rbd_core::Progress::new(&mut cb);
/// assert!(p.report(5, 10).is_ok());
/// drop(p);
/// assert_eq!(seen, 5);
/// ```
#[derive(Default)]
pub struct Progress<'a> {
    f: Option<&'a mut ProgressFn<'a>>,
    cancel: Option<CancelToken>,
}

impl<'a> Progress<'a> {
    /// No callback, no cancellation.
    pub fn none() -> Progress<'a> {
        Progress { f: None, cancel: None }
    }
    /// Reports to `f`.
    pub fn new(f: &'a mut ProgressFn<'a>) -> Progress<'a> {
        Progress { f: Some(f), cancel: None }
    }
    /// Also stops when `token` is cancelled.
    #[must_use]
    pub fn with_cancel(mut self, token: CancelToken) -> Progress<'a> {
        self.cancel = Some(token);
        self
    }
    /// True when a cancel token is set and cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(CancelToken::is_cancelled)
    }
    /// Calls the callback from Rust code (not through C). `Err(Cancelled)` when it asks to stop.
    ///
    /// # Errors
    /// [`ErrorKind::Cancelled`] when the callback returns `Break` or the token is cancelled.
    pub fn report(&mut self, done: u64, total: u64) -> Result<()> {
        if self.is_cancelled() {
            return Err(Error::new(ErrorKind::Cancelled, "progress", "cancelled by token"));
        }
        if let Some(f) = self.f.as_mut() {
            if let ControlFlow::Break(()) = f(done, total) {
                return Err(Error::new(ErrorKind::Cancelled, "progress", "cancelled by progress callback"));
            }
        }
        Ok(())
    }
}

/// The context handed to C as the `void*` of a `*_with_progress` call.
pub(crate) struct ProgressCtx<'p, 'a> {
    progress: Mutex<&'p mut Progress<'a>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    stopped: AtomicBool,
}

/// The `librbd_progress_fn_t` trampoline: never unwinds; returns `-ECANCELED` to stop.
pub(crate) extern "C" fn progress_trampoline(done: u64, total: u64, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ProgressCtx` that `run_with_progress` keeps alive on its stack for
    // the whole synchronous C call that may invoke this callback.
    let ctx = unsafe { &*(arg as *const ProgressCtx<'_, '_>) };
    if ctx.stopped.load(Ordering::SeqCst) {
        return -libc::ECANCELED;
    }
    let r = catch_unwind(AssertUnwindSafe(|| ctx.progress.lock().report(done, total)));
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(_)) => {
            ctx.stopped.store(true, Ordering::SeqCst);
            -libc::ECANCELED
        }
        Err(payload) => {
            *ctx.panic.lock() = Some(payload);
            ctx.stopped.store(true, Ordering::SeqCst);
            -libc::ECANCELED
        }
    }
}

/// Runs a synchronous `*_with_progress` C call. `call(cb, arg)` must pass both to C.
/// A panic in the callback is resumed here; a stop request becomes `ErrorKind::Cancelled`.
pub(crate) fn run_with_progress(
    progress: &mut Progress<'_>,
    op: &'static str,
    target: impl FnOnce() -> String,
    call: impl FnOnce(librbd_sys::librbd_progress_fn_t, *mut c_void) -> c_int,
) -> Result<u64> {
    if progress.is_cancelled() {
        return Err(Error::new(ErrorKind::Cancelled, op, "cancelled before start").with_target(target()));
    }
    let ctx = ProgressCtx { progress: Mutex::new(progress), panic: Mutex::new(None), stopped: AtomicBool::new(false) };
    let ret = call(Some(progress_trampoline), &ctx as *const ProgressCtx<'_, '_> as *mut c_void);
    if let Some(payload) = ctx.panic.lock().take() {
        std::panic::resume_unwind(payload);
    }
    if ret < 0 {
        let mut e = Error::from_errno(i64::from(ret), op, Some(target()));
        if ctx.stopped.load(Ordering::SeqCst) && e.kind() == ErrorKind::Cancelled {
            e = e.with_message("stopped by progress callback or cancel token");
        }
        return Err(e);
    }
    Ok(ret as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_cancels_on_break_and_catches_panics() {
        let mut calls = 0;
        let mut cb = |d: u64, _t: u64| {
            calls += 1;
            if d >= 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let mut p = Progress::new(&mut cb);
        let r = run_with_progress(&mut p, "test", String::new, |f, arg| {
            let f = f.unwrap();
            for i in 0..5 {
                // SAFETY: arg is the live ctx.
                let r = unsafe { f(i, 5, arg) };
                if r < 0 {
                    return r;
                }
            }
            0
        });
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
        drop(p);
        assert_eq!(calls, 3);

        let mut bad = |_d: u64, _t: u64| -> ControlFlow<()> { panic!("boom") };
        let mut p = Progress::new(&mut bad);
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_with_progress(&mut p, "test", String::new, |f, arg| {
                // SAFETY: arg is the live ctx.
                let r = unsafe { f.unwrap()(0, 1, arg) };
                assert_eq!(r, -libc::ECANCELED);
                r
            })
        }));
        assert!(caught.is_err(), "panic is resumed after the C call returns");
    }

    #[test]
    fn cancel_token_stops() {
        let t = CancelToken::new();
        let mut p = Progress::none().with_cancel(t.clone());
        assert!(p.report(0, 1).is_ok());
        t.cancel();
        assert_eq!(p.report(1, 1).unwrap_err().kind(), ErrorKind::Cancelled);
    }
}
