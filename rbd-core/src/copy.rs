//! Copies: a plain (optionally sparse) copy of one image state, a deep copy with all
//! snapshots, and sparsify (punching holes where data is zero).
//!
//! ```no_run
//! use rbd_core::{Image, ImageOptions, Pool, Progress};
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! let images = Pool::open(&cluster, "images")?;
//! let volumes = Pool::open(&cluster, "volumes")?;
//! let src = Image::open_at_snap(&images, "img", "snap")?;
//! // Zero runs of 64 KiB or more are not written, so the copy stays thin.
//! src.copy_to(&volumes, "volume-1", &ImageOptions::new(), 64 << 10, &mut Progress::none())?;
//! // Same image with its snapshots, into another pool.
//! Image::open(&volumes, "volume-1")?.deep_copy_to(&images, "volume-1-copy", &ImageOptions::new(), &mut Progress::none())?;
//! # Ok::<(), rbd_core::Error>(())
//! ```

use std::ffi::{c_int, c_void};
use std::ops::ControlFlow;

use librbd_sys as rbd_raw;

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::options::ImageOptions;
use crate::pool::Pool;
use crate::progress::{run_with_progress, Progress};
use crate::util::cstr;

/// The smallest sparse size librbd accepts for sparsify.
pub const MIN_SPARSE_SIZE: usize = 4096;

fn check_sparse_size(op: &'static str, sparse_size: usize) -> Result<()> {
    if sparse_size < MIN_SPARSE_SIZE || !sparse_size.is_power_of_two() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            op,
            format!("sparse size {sparse_size} must be a power of two of at least {MIN_SPARSE_SIZE}"),
        ));
    }
    Ok(())
}

/// Runs a `*_with_progress` call whose librbd implementation ignores the callback's return
/// value (Pacific's copy and deep copy): the user's progress is consulted through a wrapper that
/// remembers a stop request, and a stop requested during a call that then succeeded becomes
/// [`ErrorKind::Cancelled`].
fn run_stop_ignored(
    progress: &mut Progress<'_>,
    op: &'static str,
    target: impl Fn() -> String,
    call: impl FnOnce(rbd_raw::librbd_progress_fn_t, *mut c_void) -> c_int,
) -> Result<()> {
    if progress.is_cancelled() {
        return Err(Error::new(ErrorKind::Cancelled, op, "cancelled before start").with_target(target()));
    }
    let mut stop = false;
    let res = {
        let stop = &mut stop;
        let mut cb = |done: u64, total: u64| match progress.report(done, total) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => {
                *stop = true;
                ControlFlow::Break(())
            }
        };
        let mut inner = Progress::new(&mut cb);
        run_with_progress(&mut inner, op, &target, call)
    };
    res?;
    if stop {
        return Err(Error::new(
            ErrorKind::Cancelled,
            op,
            "stop requested, but this librbd does not stop a copy early: the destination was \
             completed and is left in place, like any partial destination",
        )
        .with_target(target()));
    }
    Ok(())
}

impl Image {
    /// Copies this handle's state (its snapshot, or the head) into a new image `dest/name`
    /// created with `opts`; no snapshots are copied. Chunks of `sparse_size` bytes that are all
    /// zero are not written, so the copy stays thin (any size is accepted; `rbd` uses 4096 by
    /// default). With 0, only entirely-zero stripe periods (objects) are skipped and every
    /// other period is written whole. Wraps `rbd_copy_with_progress4`.
    ///
    /// # Errors
    /// [`ErrorKind::Exists`] when the destination exists, [`ErrorKind::InvalidArgument`] for bad
    /// options, [`ErrorKind::PermissionDenied`] without write caps on `dest`,
    /// [`ErrorKind::Cancelled`] when the progress callback or its token asks to stop. The
    /// destination is left in place (remove it to undo). Pacific's librbd ignores the stop
    /// request for copies, so the copy runs to completion first; the callback is not called
    /// again after it asked to stop.
    pub fn copy_to(
        &self,
        dest: &Pool,
        name: &str,
        opts: &ImageOptions,
        sparse_size: usize,
        progress: &mut Progress<'_>,
    ) -> Result<()> {
        let _s = tracing::debug_span!("copy_to", pool = %self.pool().name(), image = %self.name(),
            snap = ?self.snap_name(), dest_pool = %dest.name(), dest = name, sparse_size)
        .entered();
        let n = cstr("rbd_copy_with_progress4", "image", name)?;
        let o = opts.to_raw()?;
        run_stop_ignored(
            progress,
            "rbd_copy_with_progress4",
            || format!("{} -> {}", self.spec(), dest.spec(name, None)),
            |cb, arg| {
                // SAFETY: valid handle, ioctx, name and options; cb/arg come from
                // run_with_progress and live for this synchronous call.
                unsafe {
                    rbd_raw::rbd_copy_with_progress4(self.raw(), dest.raw(), n.as_ptr(), o.raw(), cb, arg, sparse_size)
                }
            },
        )?;
        Ok(())
    }

    /// Copies the image with all of its snapshots into `dest/name` (`rbd deep cp`). Set
    /// [`ImageOptions::flatten`] to make a clone's copy independent of the parent. The
    /// callback may cancel. Wraps `rbd_deep_copy_with_progress`.
    ///
    /// # Errors
    /// As [`Image::copy_to`].
    pub fn deep_copy_to(
        &self,
        dest: &Pool,
        name: &str,
        opts: &ImageOptions,
        progress: &mut Progress<'_>,
    ) -> Result<()> {
        let _s = tracing::debug_span!("deep_copy_to", pool = %self.pool().name(), image = %self.name(),
            snap = ?self.snap_name(), dest_pool = %dest.name(), dest = name)
        .entered();
        let n = cstr("rbd_deep_copy_with_progress", "image", name)?;
        let o = opts.to_raw()?;
        run_stop_ignored(
            progress,
            "rbd_deep_copy_with_progress",
            || format!("{} -> {}", self.spec(), dest.spec(name, None)),
            |cb, arg| {
                // SAFETY: valid handle, ioctx, name and options; cb/arg come from
                // run_with_progress and live for this synchronous call.
                unsafe { rbd_raw::rbd_deep_copy_with_progress(self.raw(), dest.raw(), n.as_ptr(), o.raw(), cb, arg) }
            },
        )?;
        Ok(())
    }

    /// Deallocates every `sparse_size`-aligned chunk that reads as zeros (`rbd sparsify`).
    /// `sparse_size` must be a power of two of at least 4096 (checked before calling librbd).
    /// Wraps `rbd_sparsify_with_progress`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad `sparse_size` (nothing is called), a read-only
    /// handle gives [`ErrorKind::ReadOnly`], [`ErrorKind::Cancelled`] when stopped.
    pub fn sparsify(&self, sparse_size: usize, progress: &mut Progress<'_>) -> Result<()> {
        let _s =
            tracing::debug_span!("sparsify", pool = %self.pool().name(), image = %self.name(), sparse_size).entered();
        check_sparse_size("rbd_sparsify_with_progress", sparse_size).map_err(|e| e.with_target(self.spec()))?;
        run_with_progress(
            progress,
            "rbd_sparsify_with_progress",
            || self.spec(),
            |cb, arg| {
                // SAFETY: valid handle; cb/arg come from run_with_progress.
                unsafe { rbd_raw::rbd_sparsify_with_progress(self.raw(), sparse_size, cb, arg) }
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_size_validation() {
        for ok in [4096usize, 8192, 65536, 1 << 22] {
            assert!(check_sparse_size("t", ok).is_ok(), "{ok}");
        }
        for bad in [0usize, 1, 512, 2048, 4095, 4097, 6144, 12288] {
            assert_eq!(check_sparse_size("t", bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
