//! What changed between two versions of an image (`rbd_diff_iterate2`), hole-aware reads
//! (`rbd_read_iterate2` plus the diff), and allocated-bytes accounting.
//!
//! ```no_run
//! use rbd_core::{DiffOptions, Image, Pool};
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! # let pool = Pool::open(&cluster, "rbd")?;
//! // Changes from snapshot s1 to s2: open the handle at the END point.
//! let at_s2 = Image::open_at_snap(&pool, "disk", "s2")?;
//! let size = at_s2.size()?;
//! for e in at_s2.diff_extents(Some("s1"), 0, size, DiffOptions::default())? {
//!     println!("{}+{} {}", e.offset, e.len, if e.exists { "data" } else { "zero" });
//! }
//! // Everything allocated at the head, skipping holes without reading them.
//! let head = Image::open_read_only(&pool, "disk")?;
//! head.read_iterate(0, size, |off, len, data| {
//!     match data {
//!         Some(bytes) => println!("{off}+{len}: {} bytes", bytes.len()),
//!         None => println!("{off}+{len}: hole"),
//!     }
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! Semantics (Pacific): the **end point** of a diff is the snapshot the handle is opened at (or
//! selected with `set_snap`), or the head. Extents are coarse ("may have changed"): intra-object
//! diffs are the complement of the OSD clone overlap, and discards smaller than
//! `rbd_discard_granularity_bytes` (64 KiB) are ignored by librbd and never show up.
//! `exists == false` means the range is known to read as zeros (discarded, or a whole object
//! that is gone).

use std::any::Any;
use std::ffi::{c_char, c_int, c_void};
use std::ops::ControlFlow;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use librbd_sys as rbd_raw;
use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::pool::ptr_or_null;

/// One extent reported by `rbd_diff_iterate2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffExtent {
    /// Image offset in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// `true`: holds data (may have changed); `false`: known to read as zeros.
    pub exists: bool,
}

impl DiffExtent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    /// Sorts extents by offset and merges overlapping or touching extents with the same
    /// `exists`. Where a data extent and a zero extent overlap, data wins (it is the safe
    /// answer: the bytes are read, and read back as zeros if they are).
    ///
    /// ```
    /// use rbd_core::DiffExtent;
    /// let e = |offset, len, exists| DiffExtent { offset, len, exists };
    /// let merged = DiffExtent::coalesce(vec![e(8, 4, true), e(0, 4, true), e(4, 4, true), e(20, 5, false)]);
    /// assert_eq!(merged, vec![e(0, 12, true), e(20, 5, false)]);
    /// ```
    pub fn coalesce(extents: Vec<DiffExtent>) -> Vec<DiffExtent> {
        let (data, zeros): (Vec<DiffExtent>, Vec<DiffExtent>) =
            extents.into_iter().filter(|e| e.len > 0).partition(|e| e.exists);
        let data = merge_ranges(data);
        let zeros = merge_ranges(zeros);
        // Zeros minus data (both sorted and disjoint).
        let mut out: Vec<DiffExtent> = Vec::with_capacity(data.len() + zeros.len());
        let mut d = 0;
        for z in zeros {
            let mut start = z.offset;
            let end = z.end();
            while d < data.len() && data[d].end() <= start {
                d += 1;
            }
            let mut k = d;
            while start < end && k < data.len() && data[k].offset < end {
                if data[k].offset > start {
                    out.push(DiffExtent { offset: start, len: data[k].offset - start, exists: false });
                }
                start = start.max(data[k].end());
                k += 1;
            }
            if start < end {
                out.push(DiffExtent { offset: start, len: end - start, exists: false });
            }
        }
        out.extend(data);
        out.sort_by_key(|e| e.offset);
        out
    }
}

/// Sorts and merges overlapping or touching ranges (all of one kind).
fn merge_ranges(mut v: Vec<DiffExtent>) -> Vec<DiffExtent> {
    v.sort_by_key(|e| e.offset);
    let mut out: Vec<DiffExtent> = Vec::with_capacity(v.len());
    for e in v {
        match out.last_mut() {
            Some(last) if e.offset <= last.end() => {
                let end = last.end().max(e.end());
                last.len = end - last.offset;
            }
            _ => out.push(e),
        }
    }
    out
}

/// Options of [`Image::diff_iterate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffOptions {
    /// For a clone and `from_snap == None`: also report the parent's allocated extents
    /// (within the overlap). Default `true`.
    pub include_parent: bool,
    /// Report whole objects, using the object map / fast-diff when valid (much faster,
    /// coarser). Default `false`.
    pub whole_object: bool,
}

impl Default for DiffOptions {
    fn default() -> DiffOptions {
        DiffOptions { include_parent: true, whole_object: false }
    }
}

/// The context handed to C as the `void*` of a synchronous iterate call.
struct CallbackCtx<F> {
    f: Mutex<F>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    stopped: AtomicBool,
}

impl<F> CallbackCtx<F> {
    fn new(f: F) -> CallbackCtx<F> {
        CallbackCtx { f: Mutex::new(f), panic: Mutex::new(None), stopped: AtomicBool::new(false) }
    }

    /// Runs the user callback; never unwinds. Returns the C return code (0 or -ECANCELED).
    fn run(&self, call: impl FnOnce(&mut F) -> ControlFlow<()>) -> c_int {
        if self.stopped.load(Ordering::SeqCst) {
            return -libc::ECANCELED;
        }
        match catch_unwind(AssertUnwindSafe(|| call(&mut self.f.lock()))) {
            Ok(ControlFlow::Continue(())) => 0,
            Ok(ControlFlow::Break(())) => {
                self.stopped.store(true, Ordering::SeqCst);
                -libc::ECANCELED
            }
            Err(payload) => {
                self.panic.lock().get_or_insert(payload);
                self.stopped.store(true, Ordering::SeqCst);
                -libc::ECANCELED
            }
        }
    }

    /// After the C call: resumes a stored panic; maps the return code. A stop the callback
    /// asked for is `Ok(true)`.
    fn finish(self, ret: c_int, op: &'static str, target: impl FnOnce() -> String) -> Result<bool> {
        if let Some(p) = self.panic.into_inner() {
            resume_unwind(p);
        }
        let stopped = self.stopped.load(Ordering::SeqCst);
        if ret < 0 && !(stopped && ret == -libc::ECANCELED) {
            return Err(Error::from_errno(i64::from(ret), op, Some(target())));
        }
        Ok(stopped)
    }
}

/// The `rbd_diff_iterate2` callback. Pacific calls it from librbd/librados completion threads,
/// possibly from several at once, hence the Mutex around the closure.
extern "C" fn diff_trampoline<F>(off: u64, len: usize, exists: c_int, arg: *mut c_void) -> c_int
where
    F: FnMut(DiffExtent) -> ControlFlow<()> + Send,
{
    // SAFETY: `arg` is the CallbackCtx<F> that `diff_iterate` keeps alive on its stack for the
    // whole synchronous rbd_diff_iterate2 call (which waits for all of its object requests).
    let ctx = unsafe { &*(arg as *const CallbackCtx<F>) };
    ctx.run(|f| f(DiffExtent { offset: off, len: len as u64, exists: exists != 0 }))
}

/// State of one `rbd_read_iterate2` call: the user closure and the absolute start offset.
struct ReadCtx<'f, F> {
    f: &'f mut F,
    base: u64,
}

/// The `rbd_read_iterate2` callback. librbd passes the offset relative to the start of the
/// call (`total_read`), so `base` is added here.
extern "C" fn read_trampoline<F>(rel: u64, len: usize, buf: *const c_char, arg: *mut c_void) -> c_int
where
    F: FnMut(u64, u64, Option<&[u8]>) -> ControlFlow<()> + Send,
{
    // SAFETY: `arg` is the CallbackCtx<ReadCtx<F>> that `read_iterate_raw` keeps alive on its
    // stack for the whole synchronous call.
    let ctx = unsafe { &*(arg as *const CallbackCtx<ReadCtx<'_, F>>) };
    let data = if buf.is_null() {
        None
    } else {
        // SAFETY: librbd passes `len` readable bytes at `buf`, valid during this callback.
        Some(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
    };
    ctx.run(|rc| (rc.f)(rc.base + rel, len as u64, data))
}

impl Image {
    /// Calls `f` for each extent that differs between `from_snap` (or the beginning of time when
    /// `None`) and this handle's snapshot (or head), within `offset..offset + len`. Wraps
    /// `rbd_diff_iterate2`.
    ///
    /// **The end point is the snapshot this handle is opened at** (`Image::open_at_snap`,
    /// `set_snap`), or the head. Extents are not necessarily in offset order, and `f` may run
    /// on a librbd thread (Pacific calls it from object-request completions, serialised here by
    /// a mutex): do not call back into librbd synchronously from `f`, collect with
    /// [`Image::diff_extents`] instead. Returning `ControlFlow::Break` stops the iteration and
    /// returns `Ok(())`. A panic in `f` stops it and is resumed here after the C call returns.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when `from_snap` does not exist, [`ErrorKind::InvalidArgument`]
    /// for a bad range or a `from_snap` newer than the end point.
    pub fn diff_iterate<F>(&self, from_snap: Option<&str>, offset: u64, len: u64, opts: DiffOptions, f: F) -> Result<()>
    where
        F: FnMut(DiffExtent) -> ControlFlow<()> + Send,
    {
        let _s = tracing::debug_span!("diff_iterate", pool = %self.pool().name(), image = %self.name(),
            snap = ?self.snap_name(), from = ?from_snap, offset, len)
        .entered();
        let from = crate::cluster::opt_cstr("rbd_diff_iterate2", "snapshot", from_snap)?;
        let ctx = CallbackCtx::new(f);
        // SAFETY: valid handle; `from` outlives the call; the callback matches the C prototype
        // and `ctx` lives on this stack frame until the synchronous call has returned.
        let ret = unsafe {
            rbd_raw::rbd_diff_iterate2(
                self.raw(),
                ptr_or_null(&from),
                offset,
                len,
                u8::from(opts.include_parent),
                u8::from(opts.whole_object),
                Some(diff_trampoline::<F>),
                &ctx as *const CallbackCtx<F> as *mut c_void,
            )
        };
        ctx.finish(ret, "rbd_diff_iterate2", || match from_snap {
            Some(s) => format!("{} (from {s})", self.spec()),
            None => self.spec(),
        })?;
        Ok(())
    }

    /// All extents of [`Image::diff_iterate`], sorted by offset (not merged; see
    /// [`DiffExtent::coalesce`]).
    ///
    /// # Errors
    /// As [`Image::diff_iterate`].
    pub fn diff_extents(
        &self,
        from_snap: Option<&str>,
        offset: u64,
        len: u64,
        opts: DiffOptions,
    ) -> Result<Vec<DiffExtent>> {
        let mut v = Vec::new();
        self.diff_iterate(from_snap, offset, len, opts, |e| {
            v.push(e);
            ControlFlow::Continue(())
        })?;
        v.sort_by_key(|e| (e.offset, e.len));
        Ok(v)
    }

    /// Bytes in extents that hold data, from `from_snap` (or the beginning of time) to this
    /// handle's snapshot or head, not counting a clone's parent (`include_parent = false`).
    /// Roughly what `rbd du` reports as used, at extent rather than object granularity.
    ///
    /// # Errors
    /// As [`Image::diff_iterate`].
    pub fn allocated_bytes(&self, from_snap: Option<&str>) -> Result<u64> {
        let size = self.size()?;
        let opts = DiffOptions { include_parent: false, whole_object: false };
        let extents = DiffExtent::coalesce(self.diff_extents(from_snap, 0, size, opts)?);
        Ok(extents.iter().filter(|e| e.exists).map(|e| e.len).sum())
    }

    /// Reads `off..off + len` (clipped to the image size) in order, calling
    /// `f(offset, len, Some(bytes))` for data and `f(offset, len, None)` for holes, which read as
    /// zeros and are **not read** at all. `ControlFlow::Break` stops early with `Ok(())`; a panic
    /// in `f` is resumed after the C call returns.
    ///
    /// Pacific's `rbd_read_iterate2` never reports holes itself (it reads every stripe period and
    /// passes the buffer, zeros included) and passes offsets relative to the start of the call.
    /// So this method first asks `rbd_diff_iterate2` (from the beginning of time, parent
    /// included) which extents hold data, reports the gaps as holes, and runs
    /// `rbd_read_iterate2` over the data extents only, with absolute offsets. A `NULL` buffer
    /// from librbd (later releases) is passed on as a hole too. Data callbacks are at most one
    /// stripe period (usually one object) long and run on the calling thread.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `off` is past the end of the image; read errors.
    pub fn read_iterate<F>(&self, off: u64, len: u64, mut f: F) -> Result<()>
    where
        F: FnMut(u64, u64, Option<&[u8]>) -> ControlFlow<()> + Send,
    {
        let _s = tracing::debug_span!("read_iterate", pool = %self.pool().name(), image = %self.name(),
            snap = ?self.snap_name(), off, len)
        .entered();
        let size = self.size()?;
        if off > size {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "rbd_read_iterate2",
                format!("offset {off} is past the end of the image ({size} bytes)"),
            )
            .with_target(self.spec()));
        }
        let end = off.saturating_add(len).min(size);
        if end == off {
            return Ok(());
        }
        let opts = DiffOptions { include_parent: true, whole_object: false };
        let data: Vec<DiffExtent> = DiffExtent::coalesce(self.diff_extents(None, off, end - off, opts)?)
            .into_iter()
            .filter(|e| e.exists)
            .collect();
        let mut pos = off;
        for e in data {
            let (s, t) = (e.offset.max(pos), e.end().min(end));
            if s >= t {
                continue;
            }
            if s > pos && f(pos, s - pos, None).is_break() {
                return Ok(());
            }
            if self.read_iterate_raw(s, t - s, &mut f)? {
                return Ok(());
            }
            pos = t;
        }
        if pos < end {
            let _ = f(pos, end - pos, None);
        }
        Ok(())
    }

    /// One `rbd_read_iterate2` call over `off..off+len` with absolute offsets. Ok(true) when the
    /// callback asked to stop.
    fn read_iterate_raw<F>(&self, off: u64, len: u64, f: &mut F) -> Result<bool>
    where
        F: FnMut(u64, u64, Option<&[u8]>) -> ControlFlow<()> + Send,
    {
        let ctx = CallbackCtx::new(ReadCtx { f, base: off });
        // SAFETY: valid handle; the callback matches the C prototype and `ctx` lives on this
        // stack frame until the synchronous call has returned.
        let ret = unsafe {
            rbd_raw::rbd_read_iterate2(
                self.raw(),
                off,
                len,
                Some(read_trampoline::<F>),
                &ctx as *const CallbackCtx<ReadCtx<'_, F>> as *mut c_void,
            )
        };
        ctx.finish(ret, "rbd_read_iterate2", || self.spec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(offset: u64, len: u64, exists: bool) -> DiffExtent {
        DiffExtent { offset, len, exists }
    }

    #[test]
    fn coalesce_merges_and_sorts() {
        assert_eq!(DiffExtent::coalesce(vec![]), vec![]);
        assert_eq!(DiffExtent::coalesce(vec![e(0, 0, true)]), vec![]);
        assert_eq!(
            DiffExtent::coalesce(vec![e(10, 5, true), e(0, 10, true), e(30, 5, false), e(35, 5, false)]),
            vec![e(0, 15, true), e(30, 10, false)]
        );
        // Overlapping data.
        assert_eq!(DiffExtent::coalesce(vec![e(0, 10, true), e(5, 10, true)]), vec![e(0, 15, true)]);
        // Data inside zeros splits the zero extent.
        assert_eq!(
            DiffExtent::coalesce(vec![e(0, 100, false), e(10, 10, true)]),
            vec![e(0, 10, false), e(10, 10, true), e(20, 80, false)]
        );
        // Zeros partly over data keep only their tail.
        assert_eq!(DiffExtent::coalesce(vec![e(0, 10, true), e(5, 10, false)]), vec![e(0, 10, true), e(10, 5, false)]);
        assert_eq!(
            DiffExtent::coalesce(vec![
                e(0, 100, false),
                e(10, 10, true),
                e(15, 10, true),
                e(50, 5, true),
                e(90, 20, true)
            ]),
            vec![e(0, 10, false), e(10, 15, true), e(25, 25, false), e(50, 5, true), e(55, 35, false), e(90, 20, true)]
        );
        // Same offset: data wins.
        assert_eq!(DiffExtent::coalesce(vec![e(0, 10, false), e(0, 10, true)]), vec![e(0, 10, true)]);
        // Touching extents of different kinds stay separate.
        assert_eq!(
            DiffExtent::coalesce(vec![e(0, 10, true), e(10, 10, false)]),
            vec![e(0, 10, true), e(10, 10, false)]
        );
    }

    #[test]
    fn callback_ctx_stops_and_catches_panics() {
        let mut n = 0;
        let ctx = CallbackCtx::new(|x: u32| {
            n += x;
            if n >= 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(ctx.run(|f| f(1)), 0);
        assert_eq!(ctx.run(|f| f(2)), -libc::ECANCELED);
        assert_eq!(ctx.run(|f| f(100)), -libc::ECANCELED, "not called after a stop");
        assert!(ctx.finish(-libc::ECANCELED, "t", String::new).unwrap());
        assert_eq!(n, 3);

        let ctx = CallbackCtx::new(|_x: u32| -> ControlFlow<()> { panic!("boom") });
        assert_eq!(ctx.run(|f| f(1)), -libc::ECANCELED);
        let r = catch_unwind(AssertUnwindSafe(|| ctx.finish(-libc::ECANCELED, "t", String::new)));
        assert!(r.is_err(), "panic resumed");

        let ctx = CallbackCtx::new(|_x: u32| ControlFlow::<()>::Continue(()));
        assert_eq!(ctx.finish(-libc::ENOENT, "t", String::new).unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn default_options() {
        assert_eq!(DiffOptions::default(), DiffOptions { include_parent: true, whole_object: false });
    }
}
