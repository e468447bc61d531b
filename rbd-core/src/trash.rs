//! The image trash (deferred deletion): move, list, get, restore, remove, purge with
//! progress; and RBD pool namespaces (`rbd namespace create/remove/list`), which isolate a
//! trash from the rest of the pool.
//!
//! ```no_run
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! use std::time::Duration;
//! let pool = rbd_core::Pool::open(&cluster, "volumes")?;
//! pool.trash_move("volume-1", Duration::from_secs(3600))?; // keep for an hour
//! let entry = pool.trash_list()?.into_iter().find(|e| e.name == "volume-1").unwrap();
//! pool.trash_restore(&entry.id, "volume-1")?; // changed our mind
//! # Ok::<(), rbd_core::Error>(())
//! ```

use std::ffi::c_char;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use librbd_sys as rbd_raw;

use crate::call::{c_try, try_call};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use crate::progress::{run_with_progress, Progress};
use crate::util::{cstr, from_c, grow_buf_inout, split_nul};

/// Why an image is in the trash (`rbd_trash_image_source_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrashSource {
    /// Moved by a user (`rbd trash mv`).
    User,
    /// Moved by rbd-mirror.
    Mirroring,
    /// Source image of a live migration.
    Migration,
    /// Being removed (an interrupted `rbd rm`).
    Removing,
    /// Moved by a user while it still had clone-v2 children (`rbd rm` of a parent).
    UserParent,
    /// A source this crate does not know.
    Other(u32),
}

impl TrashSource {
    fn from_raw(v: rbd_raw::rbd_trash_image_source_t) -> TrashSource {
        match v {
            rbd_raw::rbd_trash_image_source_t_RBD_TRASH_IMAGE_SOURCE_USER => TrashSource::User,
            rbd_raw::rbd_trash_image_source_t_RBD_TRASH_IMAGE_SOURCE_MIRRORING => TrashSource::Mirroring,
            rbd_raw::rbd_trash_image_source_t_RBD_TRASH_IMAGE_SOURCE_MIGRATION => TrashSource::Migration,
            rbd_raw::rbd_trash_image_source_t_RBD_TRASH_IMAGE_SOURCE_REMOVING => TrashSource::Removing,
            rbd_raw::rbd_trash_image_source_t_RBD_TRASH_IMAGE_SOURCE_USER_PARENT => TrashSource::UserParent,
            other => TrashSource::Other(other),
        }
    }
}

/// One image in the trash (`rbd_trash_image_info_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// Image id: what restore/remove take.
    pub id: String,
    /// The name the image had.
    pub name: String,
    /// Why it is in the trash.
    pub source: TrashSource,
    /// When it was moved.
    pub deletion_time: SystemTime,
    /// Before this time, removal needs `force` and purge skips it.
    pub deferment_end_time: SystemTime,
}

fn system_time_from_unix(secs: libc::time_t) -> SystemTime {
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// `pool[/namespace]` for errors.
fn pool_target(pool: &Pool) -> String {
    if pool.namespace().is_empty() {
        pool.name().to_string()
    } else {
        format!("{}/{}", pool.name(), pool.namespace())
    }
}

/// Converts an entry librbd filled.
///
/// # Safety
/// The strings in `e` must be NULL or valid NUL-terminated strings.
unsafe fn trash_entry_from_raw(e: &rbd_raw::rbd_trash_image_info_t) -> TrashEntry {
    TrashEntry {
        // SAFETY: per the function contract.
        id: unsafe { from_c(e.id) },
        // SAFETY: per the function contract.
        name: unsafe { from_c(e.name) },
        source: TrashSource::from_raw(e.source),
        deletion_time: system_time_from_unix(e.deletion_time),
        deferment_end_time: system_time_from_unix(e.deferment_end_time),
    }
}

impl Pool {
    /// Moves image `name` to the trash; it cannot be removed without `force` (or purged) for
    /// `delay` (whole seconds; `Duration::ZERO` = at once). Wraps `rbd_trash_move`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Busy`] when the image has clone children (v1)
    /// or watchers.
    pub fn trash_move(&self, name: &str, delay: Duration) -> Result<()> {
        let _s = tracing::debug_span!("trash_move", pool = %self.name(), namespace = %self.namespace(), image = name, delay_s = delay.as_secs())
            .entered();
        let c = cstr("rbd_trash_move", "image", name)?;
        // SAFETY: valid ioctx and C string.
        try_call!(rbd_raw::rbd_trash_move(self.raw(), c.as_ptr(), delay.as_secs()); "rbd_trash_move", self.spec(name, None))?;
        Ok(())
    }

    /// Images in this pool's (namespace's) trash, except those librbd is in the middle of
    /// removing. Wraps `rbd_trash_list` / `rbd_trash_list_cleanup`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn trash_list(&self) -> Result<Vec<TrashEntry>> {
        let _s = tracing::debug_span!("trash_list", pool = %self.name(), namespace = %self.namespace()).entered();
        let mut n = 16usize;
        for _ in 0..32 {
            let mut v: Vec<rbd_raw::rbd_trash_image_info_t> =
                (0..n).map(|_| rbd_raw::rbd_trash_image_info_t::default()).collect();
            let mut got = n;
            // SAFETY: `v` has `n` entries (librbd memsets `*num_entries` of them); `got` is in/out.
            let r = unsafe { rbd_raw::rbd_trash_list(self.raw(), v.as_mut_ptr(), &mut got) };
            if r == -libc::ERANGE {
                n = got.max(n * 2);
                continue;
            }
            c_try(r, "rbd_trash_list", || Some(pool_target(self)))?;
            let got = got.min(n);
            // SAFETY: librbd filled the first `got` entries.
            let out = v[..got].iter().map(|e| unsafe { trash_entry_from_raw(e) }).collect();
            // SAFETY: frees the `got` entries librbd filled, once.
            unsafe { rbd_raw::rbd_trash_list_cleanup(v.as_mut_ptr(), got) };
            return Ok(out);
        }
        Err(Error::new(ErrorKind::OutOfRange, "rbd_trash_list", "list kept growing").with_target(pool_target(self)))
    }

    /// One trash entry by image id. Wraps `rbd_trash_get` / `rbd_trash_get_cleanup`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when no trashed image has this id.
    pub fn trash_get(&self, id: &str) -> Result<TrashEntry> {
        let c = cstr("rbd_trash_get", "image id", id)?;
        let mut e = rbd_raw::rbd_trash_image_info_t::default();
        // SAFETY: valid ioctx, C string and out struct.
        try_call!(rbd_raw::rbd_trash_get(self.raw(), c.as_ptr(), &mut e); "rbd_trash_get", self.spec(id, None))?;
        // SAFETY: librbd filled `e`.
        let out = unsafe { trash_entry_from_raw(&e) };
        // SAFETY: frees what librbd allocated in `e`, once.
        unsafe { rbd_raw::rbd_trash_get_cleanup(&mut e) };
        Ok(out)
    }

    /// Restores trashed image `id` as `new_name` (`""` = its original name).
    /// Wraps `rbd_trash_restore`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Exists`] when the name is taken.
    pub fn trash_restore(&self, id: &str, new_name: &str) -> Result<()> {
        let _s = tracing::debug_span!("trash_restore", pool = %self.name(), namespace = %self.namespace(), id, image = new_name)
            .entered();
        let c = cstr("rbd_trash_restore", "image id", id)?;
        let n = cstr("rbd_trash_restore", "image", new_name)?;
        // SAFETY: valid ioctx and C strings.
        try_call!(rbd_raw::rbd_trash_restore(self.raw(), c.as_ptr(), n.as_ptr()); "rbd_trash_restore", self.spec(id, None))?;
        Ok(())
    }

    /// Deletes trashed image `id`; `force` is needed before its deferment end.
    /// Wraps `rbd_trash_remove_with_progress`.
    ///
    /// # Errors
    /// As [`Pool::trash_remove_with_progress`].
    pub fn trash_remove(&self, id: &str, force: bool) -> Result<()> {
        self.trash_remove_with_progress(id, force, &mut Progress::none())
    }

    /// Deletes trashed image `id` reporting progress; the callback may cancel.
    /// Wraps `rbd_trash_remove_with_progress`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::PermissionDenied`] before the deferment end
    /// without `force` (librbd's EPERM), [`ErrorKind::HasSnapshots`], [`ErrorKind::Busy`],
    /// [`ErrorKind::Cancelled`].
    pub fn trash_remove_with_progress(&self, id: &str, force: bool, progress: &mut Progress<'_>) -> Result<()> {
        let _s = tracing::debug_span!("trash_remove", pool = %self.name(), namespace = %self.namespace(), id, force)
            .entered();
        let c = cstr("rbd_trash_remove_with_progress", "image id", id)?;
        run_with_progress(
            progress,
            "rbd_trash_remove_with_progress",
            || self.spec(id, None),
            |cb, arg| {
                // SAFETY: valid ioctx and C string; cb/arg come from run_with_progress.
                unsafe { rbd_raw::rbd_trash_remove_with_progress(self.raw(), c.as_ptr(), force, cb, arg) }
            },
        )?;
        Ok(())
    }

    /// Deletes every user-trashed image of this pool (namespace) whose deferment ended by
    /// `expire_before` (`None` = now). With `threshold` (0.0–1.0) librbd instead removes the
    /// oldest entries only while the pool is fuller than that ratio. This acts on the whole
    /// trash of the pool/namespace, not only images you moved: use a dedicated namespace
    /// ([`Pool::namespace_create`]) to scope it. Wraps `rbd_trash_purge_with_progress`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a threshold outside 0.0–1.0,
    /// [`ErrorKind::Cancelled`], errors removing an entry.
    pub fn trash_purge(
        &self,
        expire_before: Option<SystemTime>,
        threshold: Option<f32>,
        progress: &mut Progress<'_>,
    ) -> Result<()> {
        let _s = tracing::debug_span!("trash_purge", pool = %self.name(), namespace = %self.namespace(), ?threshold)
            .entered();
        let threshold = match threshold {
            None => -1.0f32,
            Some(t) if (0.0..=1.0).contains(&t) => t,
            Some(t) => {
                return Err(Error::invalid(
                    "rbd_trash_purge_with_progress",
                    format!("threshold {t} is not in 0.0..=1.0"),
                )
                .with_target(pool_target(self)))
            }
        };
        // librbd treats 0 as "now"; a time at or before the epoch becomes 1 (purges nothing
        // deferred, as asked) rather than "now".
        let expire_ts: libc::time_t = match expire_before {
            None => 0,
            Some(t) => t
                .duration_since(UNIX_EPOCH)
                .map(|d| libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX))
                .unwrap_or(1)
                .max(1),
        };
        run_with_progress(
            progress,
            "rbd_trash_purge_with_progress",
            || pool_target(self),
            |cb, arg| {
                // SAFETY: valid ioctx; cb/arg come from run_with_progress.
                unsafe { rbd_raw::rbd_trash_purge_with_progress(self.raw(), expire_ts, threshold, cb, arg) }
            },
        )?;
        Ok(())
    }

    /// Creates RBD namespace `name` in this pool. Call it on a handle in the default namespace.
    /// Open the new namespace with [`Pool::open_ns`] or [`Pool::with_namespace`].
    /// Wraps `rbd_namespace_create`.
    ///
    /// # Errors
    /// [`ErrorKind::Exists`], [`ErrorKind::InvalidArgument`] from a non-default namespace
    /// handle or for a bad name, [`ErrorKind::PermissionDenied`].
    pub fn namespace_create(&self, name: &str) -> Result<()> {
        let _s = tracing::debug_span!("namespace_create", pool = %self.name(), namespace = name).entered();
        let c = cstr("rbd_namespace_create", "namespace", name)?;
        // SAFETY: valid ioctx and C string.
        try_call!(rbd_raw::rbd_namespace_create(self.raw(), c.as_ptr()); "rbd_namespace_create", format!("{}/{name}", self.name()))?;
        Ok(())
    }

    /// Removes RBD namespace `name` (it must hold no images, including trashed ones).
    /// Wraps `rbd_namespace_remove`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Busy`] while it still holds images.
    pub fn namespace_remove(&self, name: &str) -> Result<()> {
        let _s = tracing::debug_span!("namespace_remove", pool = %self.name(), namespace = name).entered();
        let c = cstr("rbd_namespace_remove", "namespace", name)?;
        // SAFETY: valid ioctx and C string.
        try_call!(rbd_raw::rbd_namespace_remove(self.raw(), c.as_ptr()); "rbd_namespace_remove", format!("{}/{name}", self.name()))?;
        Ok(())
    }

    /// RBD namespaces of this pool. Wraps `rbd_namespace_list`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn namespace_list(&self) -> Result<Vec<String>> {
        let buf = grow_buf_inout::<c_char>(1024, |p, len| {
            // SAFETY: `p` points to `*len` bytes; librbd answers -ERANGE with the size it needs.
            i64::from(unsafe { rbd_raw::rbd_namespace_list(self.raw(), p, len) })
        })
        .map_err(|r| Error::from_errno(r, "rbd_namespace_list", Some(self.name().to_string())))?;
        let bytes: Vec<u8> = buf.iter().map(|c| *c as u8).collect();
        Ok(split_nul(&bytes))
    }

    /// True when RBD namespace `name` exists. Wraps `rbd_namespace_exists`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn namespace_exists(&self, name: &str) -> Result<bool> {
        let c = cstr("rbd_namespace_exists", "namespace", name)?;
        let mut e = false;
        // SAFETY: valid ioctx, C string and out pointer.
        try_call!(rbd_raw::rbd_namespace_exists(self.raw(), c.as_ptr(), &mut e); "rbd_namespace_exists", format!("{}/{name}", self.name()))?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_map() {
        assert_eq!(TrashSource::from_raw(0), TrashSource::User);
        assert_eq!(TrashSource::from_raw(4), TrashSource::UserParent);
        assert_eq!(TrashSource::from_raw(9), TrashSource::Other(9));
    }

    #[test]
    fn unix_times() {
        assert_eq!(system_time_from_unix(0), UNIX_EPOCH);
        assert_eq!(system_time_from_unix(5).duration_since(UNIX_EPOCH).unwrap(), Duration::from_secs(5));
    }
}
