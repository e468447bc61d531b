//! Image locks: the managed exclusive lock (the `exclusive-lock` feature: fencing, with a guard
//! that releases on drop) and the legacy advisory cls_lock locks (`rbd lock add/ls/rm`).
//!
//! ```no_run
//! use rbd_core::{Image, LockMode, Pool};
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! # let pool = Pool::open(&cluster, "volumes")?;
//! let image = Image::open(&pool, "volume-1")?;
//! {
//!     let _lock = image.lock_acquire()?; // other clients now get ReadOnly on write
//!     image.write(0, b"mine")?;
//! } // released here
//!
//! // Fencing a dead owner (it is blocklisted: its next write fails with Shutdown).
//! for owner in image.lock_owners()? {
//!     image.lock_break(owner.mode, &owner.owner)?;
//! }
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! Pacific behaviour (verified on 16.2.15):
//! * `lock_acquire` needs the `exclusive-lock` feature, else [`ErrorKind::InvalidArgument`].
//! * After an explicit acquire, automatic lock hand-over is disabled: another client's
//!   `lock_acquire` and its writes fail with EROFS ([`ErrorKind::ReadOnly`]) until the owner
//!   releases. Without an explicit acquire the lock is cooperative (writers pass it around).
//! * `lock_break` blocklists the old owner; its next write fails with ESHUTDOWN
//!   ([`ErrorKind::Shutdown`]) and its connection stays fenced.
//! * Advisory locks do **not** block I/O. They share the header's `rbd_lock` cls_lock with the
//!   managed lock, so `list_lockers` also shows the managed lock's `auto <id>` cookie.

use std::ffi::{c_char, c_int};
use std::ptr;

use librbd_sys as rbd_raw;

use crate::call::try_call;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::util::{cstr, from_c};

/// A managed-lock mode (`rbd_lock_mode_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// `RBD_LOCK_MODE_EXCLUSIVE`.
    Exclusive,
    /// `RBD_LOCK_MODE_SHARED` (acquiring it returns EOPNOTSUPP on Pacific).
    Shared,
}

impl LockMode {
    fn raw(self) -> rbd_raw::rbd_lock_mode_t {
        match self {
            LockMode::Exclusive => rbd_raw::rbd_lock_mode_t_RBD_LOCK_MODE_EXCLUSIVE,
            LockMode::Shared => rbd_raw::rbd_lock_mode_t_RBD_LOCK_MODE_SHARED,
        }
    }

    fn from_raw(m: rbd_raw::rbd_lock_mode_t) -> LockMode {
        if m == rbd_raw::rbd_lock_mode_t_RBD_LOCK_MODE_SHARED {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        }
    }
}

/// A holder of the managed lock, as `rbd_lock_get_owners` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOwner {
    /// The lock mode.
    pub mode: LockMode,
    /// The owner, `"<addr>/<nonce>"`-style; pass it to [`Image::lock_break`].
    pub owner: String,
}

/// One holder of an advisory lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// The entity, e.g. `client.4123`.
    pub client: String,
    /// The cookie it locked with.
    pub cookie: String,
    /// Its address.
    pub addr: String,
}

/// The advisory lock state of an image (`rbd_list_lockers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lockers {
    /// True for an exclusive lock, false for shared.
    pub exclusive: bool,
    /// The shared-lock tag (empty for exclusive locks).
    pub tag: String,
    /// Who holds it.
    pub lockers: Vec<Locker>,
}

/// Holds the managed exclusive lock of an image; releases it on drop (`rbd_lock_release`;
/// errors are logged). Use [`ExclusiveLock::release`] to see the error.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ExclusiveLock<'a> {
    image: &'a Image,
    held: bool,
}

impl std::fmt::Debug for ExclusiveLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExclusiveLock").field("image", &self.image.spec()).field("held", &self.held).finish()
    }
}

impl<'a> ExclusiveLock<'a> {
    /// The locked image.
    pub fn image(&self) -> &'a Image {
        self.image
    }

    /// Releases the lock now. Wraps `rbd_lock_release`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when this client no longer owns the lock (for example it
    /// was broken), [`ErrorKind::Shutdown`] when blocklisted.
    pub fn release(mut self) -> Result<()> {
        self.held = false;
        self.image.lock_release()
    }
}

impl Drop for ExclusiveLock<'_> {
    fn drop(&mut self) {
        if self.held {
            if let Err(e) = self.image.lock_release() {
                tracing::warn!(image = %self.image.spec(), error = %e, "rbd_lock_release failed while dropping an ExclusiveLock");
            }
        }
    }
}

/// Splits `n` NUL-terminated strings out of `buf` (empty strings kept).
fn split_n(buf: &[c_char], n: usize) -> Vec<String> {
    // SAFETY: c_char and u8 have the same size and alignment.
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len()) };
    bytes.split(|b| *b == 0).take(n).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

impl Image {
    /// Acquires the managed exclusive lock and returns a guard that releases it on drop. Wraps
    /// `rbd_lock_acquire(RBD_LOCK_MODE_EXCLUSIVE)`.
    ///
    /// While held, other clients' writes and acquires fail with [`ErrorKind::ReadOnly`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] without the `exclusive-lock` feature,
    /// [`ErrorKind::ReadOnly`] when another client holds it (explicitly) or the handle is
    /// read-only, [`ErrorKind::Shutdown`] when this client was blocklisted.
    pub fn lock_acquire(&self) -> Result<ExclusiveLock<'_>> {
        self.lock_acquire_raw()?;
        Ok(ExclusiveLock { image: self, held: true })
    }

    /// Acquires the managed exclusive lock without a guard: it stays held until
    /// [`Image::lock_release`], the handle is closed, or it is broken. For locks whose lifetime
    /// is not a scope (e.g. held for the life of a process). Wraps `rbd_lock_acquire`.
    ///
    /// # Errors
    /// As [`Image::lock_acquire`].
    pub fn lock_acquire_raw(&self) -> Result<()> {
        let _s = tracing::debug_span!("lock_acquire", pool = %self.pool().name(), image = %self.name()).entered();
        // SAFETY: valid handle.
        try_call!(rbd_raw::rbd_lock_acquire(self.raw(), LockMode::Exclusive.raw()); "rbd_lock_acquire", self.spec())?;
        Ok(())
    }

    /// Releases the managed lock this client holds. Wraps `rbd_lock_release`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when this client does not own the lock.
    pub fn lock_release(&self) -> Result<()> {
        let _s = tracing::debug_span!("lock_release", pool = %self.pool().name(), image = %self.name()).entered();
        // SAFETY: valid handle.
        try_call!(rbd_raw::rbd_lock_release(self.raw()); "rbd_lock_release", self.spec())?;
        Ok(())
    }

    /// Who holds the managed lock; empty when nobody does (Pacific's `-ENOENT`). Wraps
    /// `rbd_lock_get_owners`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] without the `exclusive-lock` feature; errors from librbd.
    pub fn lock_owners(&self) -> Result<Vec<LockOwner>> {
        let _s = tracing::debug_span!("lock_owners", pool = %self.pool().name(), image = %self.name()).entered();
        let mut n = 4usize;
        for _ in 0..16 {
            let mut owners: Vec<*mut c_char> = vec![ptr::null_mut(); n];
            let mut got = n;
            let mut mode: rbd_raw::rbd_lock_mode_t = 0;
            // SAFETY: `owners` has `got` slots; librbd strdup()s into them on success.
            let r = unsafe { rbd_raw::rbd_lock_get_owners(self.raw(), &mut mode, owners.as_mut_ptr(), &mut got) };
            if r == -libc::ENOENT {
                return Ok(Vec::new());
            }
            if r == -libc::ERANGE {
                n = got.max(n * 2);
                continue;
            }
            crate::call::c_try(r, "rbd_lock_get_owners", || Some(self.spec()))?;
            let got = got.min(n);
            let mode = LockMode::from_raw(mode);
            // SAFETY: the first `got` slots hold strings librbd allocated.
            let out = owners[..got].iter().map(|&p| LockOwner { mode, owner: unsafe { from_c(p) } }).collect();
            // SAFETY: frees exactly what rbd_lock_get_owners allocated.
            unsafe { rbd_raw::rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), got) };
            return Ok(out);
        }
        Err(Error::from_errno(-i64::from(libc::ERANGE), "rbd_lock_get_owners", Some(self.spec())))
    }

    /// Breaks another client's managed lock. **Blocklists** the old owner
    /// (`rbd_blocklist_on_break_lock`): its next write fails with [`ErrorKind::Shutdown`] and
    /// that connection stays fenced. Wraps `rbd_lock_break`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] / [`ErrorKind::Busy`] when `owner` no longer holds the lock,
    /// [`ErrorKind::PermissionDenied`] without the caps to blocklist (`osd blocklist` on the
    /// mon, e.g. `profile rbd`).
    pub fn lock_break(&self, mode: LockMode, owner: &str) -> Result<()> {
        let _s = tracing::debug_span!("lock_break", pool = %self.pool().name(), image = %self.name(), owner).entered();
        let o = cstr("rbd_lock_break", "lock owner", owner)?;
        // SAFETY: valid handle and C string.
        try_call!(rbd_raw::rbd_lock_break(self.raw(), mode.raw(), o.as_ptr()); "rbd_lock_break", self.spec())?;
        Ok(())
    }

    /// True when this handle owns the managed exclusive lock. Wraps
    /// `rbd_is_exclusive_lock_owner`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn is_exclusive_lock_owner(&self) -> Result<bool> {
        let mut owner: c_int = 0;
        // SAFETY: valid handle and out pointer.
        try_call!(rbd_raw::rbd_is_exclusive_lock_owner(self.raw(), &mut owner); "rbd_is_exclusive_lock_owner", self.spec())?;
        Ok(owner != 0)
    }

    /// Takes an advisory exclusive lock with `cookie` (does not block I/O). Wraps
    /// `rbd_lock_exclusive`.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] when another (client, cookie) holds it, [`ErrorKind::Exists`] when
    /// this (client, cookie) already does.
    pub fn lock_exclusive(&self, cookie: &str) -> Result<()> {
        let _s =
            tracing::debug_span!("lock_exclusive", pool = %self.pool().name(), image = %self.name(), cookie).entered();
        let c = cstr("rbd_lock_exclusive", "cookie", cookie)?;
        // SAFETY: valid handle and C string.
        try_call!(rbd_raw::rbd_lock_exclusive(self.raw(), c.as_ptr()); "rbd_lock_exclusive", self.spec())?;
        Ok(())
    }

    /// Takes an advisory shared lock with `cookie` and `tag`; other clients may share it with
    /// the same tag. Wraps `rbd_lock_shared`.
    ///
    /// # Errors
    /// As [`Image::lock_exclusive`].
    pub fn lock_shared(&self, cookie: &str, tag: &str) -> Result<()> {
        let _s = tracing::debug_span!("lock_shared", pool = %self.pool().name(), image = %self.name(), cookie, tag)
            .entered();
        let c = cstr("rbd_lock_shared", "cookie", cookie)?;
        let t = cstr("rbd_lock_shared", "tag", tag)?;
        // SAFETY: valid handle and C strings.
        try_call!(rbd_raw::rbd_lock_shared(self.raw(), c.as_ptr(), t.as_ptr()); "rbd_lock_shared", self.spec())?;
        Ok(())
    }

    /// Releases this client's advisory lock with `cookie`. Wraps `rbd_unlock`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when this client holds no lock with that cookie.
    pub fn unlock(&self, cookie: &str) -> Result<()> {
        let _s = tracing::debug_span!("unlock", pool = %self.pool().name(), image = %self.name(), cookie).entered();
        let c = cstr("rbd_unlock", "cookie", cookie)?;
        // SAFETY: valid handle and C string.
        try_call!(rbd_raw::rbd_unlock(self.raw(), c.as_ptr()); "rbd_unlock", self.spec())?;
        Ok(())
    }

    /// Breaks another client's advisory lock (`client` and `cookie` as [`Image::list_lockers`]
    /// reports them). Like `rbd lock rm`, this **blocklists the locker's address** first when
    /// `rbd_blocklist_on_break_lock` is true (the default), so never break a lock held by a
    /// connection you still need. Wraps `rbd_break_lock`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when no such lock is held, [`ErrorKind::InvalidArgument`] for a
    /// malformed `client`, [`ErrorKind::PermissionDenied`] without blocklist caps.
    pub fn break_lock(&self, client: &str, cookie: &str) -> Result<()> {
        let _s = tracing::debug_span!("break_lock", pool = %self.pool().name(), image = %self.name(), client, cookie)
            .entered();
        let cl = cstr("rbd_break_lock", "client", client)?;
        let c = cstr("rbd_break_lock", "cookie", cookie)?;
        // SAFETY: valid handle and C strings.
        try_call!(rbd_raw::rbd_break_lock(self.raw(), cl.as_ptr(), c.as_ptr()); "rbd_break_lock", self.spec())?;
        Ok(())
    }

    /// The advisory lock state: mode, tag and holders. Wraps `rbd_list_lockers` (four in/out
    /// buffer sizes; retried on `-ERANGE`).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn list_lockers(&self) -> Result<Lockers> {
        let _s = tracing::debug_span!("list_lockers", pool = %self.pool().name(), image = %self.name()).entered();
        let mut sizes = [64usize, 256, 256, 256];
        for _ in 0..16 {
            let mut tag = vec![0 as c_char; sizes[0]];
            let mut clients = vec![0 as c_char; sizes[1]];
            let mut cookies = vec![0 as c_char; sizes[2]];
            let mut addrs = vec![0 as c_char; sizes[3]];
            let mut lens = sizes;
            let mut exclusive: c_int = 0;
            // SAFETY: each buffer has the length passed next to it; librbd writes at most that
            // many bytes, or only the lengths when returning -ERANGE.
            let r = unsafe {
                rbd_raw::rbd_list_lockers(
                    self.raw(),
                    &mut exclusive,
                    tag.as_mut_ptr(),
                    &mut lens[0],
                    clients.as_mut_ptr(),
                    &mut lens[1],
                    cookies.as_mut_ptr(),
                    &mut lens[2],
                    addrs.as_mut_ptr(),
                    &mut lens[3],
                )
            };
            if r == -(libc::ERANGE as isize) {
                for (s, l) in sizes.iter_mut().zip(lens) {
                    *s = (*s).max(l).max(1);
                }
                continue;
            }
            if r == -(libc::ENOENT as isize) {
                return Ok(Lockers::default());
            }
            let n = crate::call::c_try(r as i64, "rbd_list_lockers", || Some(self.spec()))? as usize;
            let (clients, cookies, addrs) = (split_n(&clients, n), split_n(&cookies, n), split_n(&addrs, n));
            let lockers = clients
                .into_iter()
                .zip(cookies)
                .zip(addrs)
                .map(|((client, cookie), addr)| Locker { client, cookie, addr })
                .collect();
            // SAFETY: tag is NUL-terminated by librbd (its buffer was large enough).
            let tag = unsafe { from_c(tag.as_ptr()) };
            return Ok(Lockers { exclusive: exclusive != 0, tag, lockers });
        }
        Err(Error::new(ErrorKind::OutOfRange, "rbd_list_lockers", "buffer sizes kept growing").with_target(self.spec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_n_keeps_empty_entries() {
        let buf: Vec<c_char> = b"a\0\0ccc\0junk".iter().map(|&b| b as c_char).collect();
        assert_eq!(split_n(&buf, 3), vec!["a", "", "ccc"]);
        assert_eq!(split_n(&buf, 0), Vec::<String>::new());
    }

    #[test]
    fn lock_mode_round_trip() {
        for m in [LockMode::Exclusive, LockMode::Shared] {
            assert_eq!(LockMode::from_raw(m.raw()), m);
        }
    }
}
