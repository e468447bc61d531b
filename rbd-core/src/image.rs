//! Open images: open (read-write, read-only, at a snapshot by name or id, by id), stat and
//! properties, resize, synchronous I/O with fadvise flags, flush, watchers.
//!
//! ```no_run
//! use rbd_core::{Cluster, Image, Pool};
//! let pool = Pool::open(&Cluster::shared(None, "admin")?, "volumes")?;
//! let img = Image::open(&pool, "volume-1")?;
//! img.resize(2 << 30, false)?;
//! let at_snap = Image::open_at_snap(&pool, "volume-1", "snapshot-1")?;
//! println!("{} bytes at the snapshot", at_snap.size()?);
//! # Ok::<(), rbd_core::Error>(())
//! ```

use std::ffi::{c_char, c_int};
use std::ptr;

use librbd_sys as rbd_raw;

use crate::call::try_call;
use crate::error::{Error, ErrorKind, Result};
use crate::options::Features;
use crate::pool::{ptr_or_null, Pool};
use crate::progress::{run_with_progress, Progress};
use crate::util::{cstr, from_c};

/// `LIBRADOS_OP_FLAG_FADVISE_*` hints for reads and writes.
pub mod fadvise {
    /// No hint.
    pub const NONE: i32 = 0;
    /// Random access.
    pub const RANDOM: i32 = librados_sys::LIBRADOS_OP_FLAG_FADVISE_RANDOM as i32;
    /// Sequential access.
    pub const SEQUENTIAL: i32 = librados_sys::LIBRADOS_OP_FLAG_FADVISE_SEQUENTIAL as i32;
    /// Will be needed soon.
    pub const WILLNEED: i32 = librados_sys::LIBRADOS_OP_FLAG_FADVISE_WILLNEED as i32;
    /// Will not be needed again soon.
    pub const DONTNEED: i32 = librados_sys::LIBRADOS_OP_FLAG_FADVISE_DONTNEED as i32;
    /// Do not cache (what `rbd export`/`import` use).
    pub const NOCACHE: i32 = librados_sys::LIBRADOS_OP_FLAG_FADVISE_NOCACHE as i32;
}

/// `rbd_image_info_t`: what `rbd info` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes.
    pub obj_size: u64,
    /// Number of objects.
    pub num_objs: u64,
    /// Object order (log2 of the object size).
    pub order: u8,
    /// RADOS object name prefix.
    pub block_name_prefix: String,
}

/// An open image.
///
/// Thread-safety: `Send + Sync`. librbd's `ImageCtx` guards its state with its own locks
/// (`owner_lock`, `image_lock`) and its I/O path is entered concurrently from many threads by
/// QEMU's iothreads and by the `rbd` CLI's own worker threads; every `&self` method here is
/// such a call. Methods that change which snapshot the handle reads (`set_snap`) take
/// `&mut self`, and closing consumes the handle.
///
/// ```no_run
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// # let pool = rbd_core::Pool::open(&cluster, "rbd")?;
/// let image = rbd_core::Image::open(&pool, "disk")?;
/// image.write(0, b"hello")?;
/// let mut buf = [0u8; 5];
/// image.read(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok::<(), rbd_core::Error>(())
/// ```
pub struct Image {
    raw: Option<rbd_raw::rbd_image_t>,
    pool: Pool,
    name: String,
    snap: Option<String>,
    read_only: bool,
}

// SAFETY: see the type docs: librbd's image handle is used concurrently from many threads by
// its real consumers (QEMU), with internal locking; handle-state changes take &mut self.
unsafe impl Send for Image {}
// SAFETY: as for Send.
unsafe impl Sync for Image {}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("spec", &self.spec()).field("read_only", &self.read_only).finish()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            // SAFETY: raw is open and closed exactly once (taken out of the Option).
            let r = unsafe { rbd_raw::rbd_close(raw) };
            if r < 0 {
                tracing::warn!(image = %self.spec(), errno = -r, "rbd_close failed in Drop");
            }
        }
    }
}

/// Which snapshot an image is opened at.
#[derive(Debug, Clone, Copy)]
enum At<'a> {
    Head,
    Name(&'a str),
}

impl Image {
    fn open_impl(pool: &Pool, name: &str, at: At<'_>, read_only: bool) -> Result<Image> {
        let _s = tracing::debug_span!("open", pool = %pool.name(), image = name, read_only).entered();
        let n = cstr("rbd_open", "image", name)?;
        let snap = match at {
            At::Head => None,
            At::Name(s) => Some(cstr("rbd_open", "snapshot", s)?),
        };
        let snap_str = match at {
            At::Head => None,
            At::Name(s) => Some(s.to_string()),
        };
        let mut raw: rbd_raw::rbd_image_t = ptr::null_mut();
        let target = || pool.spec(name, snap_str.as_deref());
        if read_only {
            try_call!(rbd_raw::rbd_open_read_only(pool.raw(), n.as_ptr(), &mut raw, ptr_or_null(&snap)); "rbd_open_read_only", target())?;
        } else {
            try_call!(rbd_raw::rbd_open(pool.raw(), n.as_ptr(), &mut raw, ptr_or_null(&snap)); "rbd_open", target())?;
        }
        Ok(Image { raw: Some(raw), pool: pool.clone(), name: name.to_string(), snap: snap_str, read_only })
    }

    /// Opens `name` read-write at its head. Wraps `rbd_open`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the image does not exist.
    pub fn open(pool: &Pool, name: &str) -> Result<Image> {
        Image::open_impl(pool, name, At::Head, false)
    }

    /// Opens `name` read-only (no watch, no lock). Wraps `rbd_open_read_only`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the image does not exist.
    pub fn open_read_only(pool: &Pool, name: &str) -> Result<Image> {
        Image::open_impl(pool, name, At::Head, true)
    }

    /// Opens `name@snap` read-only (user-namespace snapshot by name).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the image or snapshot does not exist.
    pub fn open_at_snap(pool: &Pool, name: &str, snap: &str) -> Result<Image> {
        Image::open_impl(pool, name, At::Name(snap), true)
    }

    /// Opens `name` read-only and selects snapshot `snap_id` (any namespace: group, trash,
    /// mirror too).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the image or snapshot does not exist.
    pub fn open_at_snap_id(pool: &Pool, name: &str, snap_id: u64) -> Result<Image> {
        let mut img = Image::open_read_only(pool, name)?;
        img.set_snap_by_id(Some(snap_id))?;
        Ok(img)
    }

    /// Opens an image by id (`rbd_open_by_id[_read_only]`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when no image has this id.
    pub fn open_by_id(pool: &Pool, id: &str, read_only: bool) -> Result<Image> {
        let c = cstr("rbd_open_by_id", "image id", id)?;
        let mut raw: rbd_raw::rbd_image_t = ptr::null_mut();
        if read_only {
            try_call!(rbd_raw::rbd_open_by_id_read_only(pool.raw(), c.as_ptr(), &mut raw, ptr::null()); "rbd_open_by_id_read_only", pool.spec(id, None))?;
        } else {
            try_call!(rbd_raw::rbd_open_by_id(pool.raw(), c.as_ptr(), &mut raw, ptr::null()); "rbd_open_by_id", pool.spec(id, None))?;
        }
        let mut img = Image { raw: Some(raw), pool: pool.clone(), name: String::new(), snap: None, read_only };
        img.name = img.name_from_librbd().unwrap_or_else(|_| id.to_string());
        Ok(img)
    }

    /// Closes the handle, reporting `rbd_close` errors (Drop ignores them). librbd releases
    /// the handle even when it reports an error, so there is nothing to retry.
    ///
    /// # Errors
    /// Errors from `rbd_close` (e.g. a failed flush of cached writes).
    pub fn close(mut self) -> Result<()> {
        if let Some(raw) = self.raw.take() {
            // SAFETY: raw is open and closed once.
            let r = unsafe { rbd_raw::rbd_close(raw) };
            crate::call::c_try(r, "rbd_close", || Some(self.spec()))?;
        }
        Ok(())
    }

    pub(crate) fn raw(&self) -> rbd_raw::rbd_image_t {
        // The Option is only None after close(self)/drop, which consume the handle.
        self.raw.unwrap_or(ptr::null_mut())
    }

    /// `pool/[ns/]image[@snap]` for messages.
    pub fn spec(&self) -> String {
        self.pool.spec(&self.name, self.snap.as_deref())
    }

    /// The image name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool it was opened from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The snapshot selected by name at open or with [`Image::set_snap`], if any.
    pub fn snap_name(&self) -> Option<&str> {
        self.snap.as_deref()
    }

    /// True when opened read-only (or at a snapshot).
    pub fn is_read_only(&self) -> bool {
        self.read_only || self.snap.is_some()
    }

    fn name_from_librbd(&self) -> Result<String> {
        let mut len = 256usize;
        loop {
            let mut buf = vec![0 as c_char; len];
            let mut want = len;
            // SAFETY: buf has len bytes; want is in/out.
            let r = unsafe { rbd_raw::rbd_get_name(self.raw(), buf.as_mut_ptr(), &mut want) };
            if r == -libc::ERANGE {
                len = want.max(len * 2);
                continue;
            }
            crate::call::c_try(r, "rbd_get_name", || Some(self.spec()))?;
            // SAFETY: NUL-terminated by librbd.
            return Ok(unsafe { from_c(buf.as_ptr()) });
        }
    }

    /// Image id (`rbd_get_id`).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn id(&self) -> Result<String> {
        let mut buf = vec![0 as c_char; 64];
        try_call!(rbd_raw::rbd_get_id(self.raw(), buf.as_mut_ptr(), buf.len()); "rbd_get_id", self.spec())?;
        // SAFETY: NUL-terminated by librbd.
        Ok(unsafe { from_c(buf.as_ptr()) })
    }

    /// Size, object size, order (`rbd_stat`).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn stat(&self) -> Result<ImageInfo> {
        let mut info = rbd_raw::rbd_image_info_t::default();
        try_call!(rbd_raw::rbd_stat(self.raw(), &mut info, std::mem::size_of::<rbd_raw::rbd_image_info_t>()); "rbd_stat", self.spec())?;
        // SAFETY: block_name_prefix is a NUL-terminated char array inside info.
        let prefix = unsafe { from_c(info.block_name_prefix.as_ptr()) };
        Ok(ImageInfo {
            size: info.size,
            obj_size: info.obj_size,
            num_objs: info.num_objs,
            order: info.order as u8,
            block_name_prefix: prefix,
        })
    }

    /// Size in bytes (at the selected snapshot, or head).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn size(&self) -> Result<u64> {
        let mut s = 0u64;
        try_call!(rbd_raw::rbd_get_size(self.raw(), &mut s); "rbd_get_size", self.spec())?;
        Ok(s)
    }

    /// Feature bits (`rbd_get_features`).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn features(&self) -> Result<Features> {
        let mut f = 0u64;
        try_call!(rbd_raw::rbd_get_features(self.raw(), &mut f); "rbd_get_features", self.spec())?;
        Ok(Features(f))
    }

    /// Enables or disables mutable features (exclusive-lock, object-map, fast-diff, journaling).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for immutable features or bad dependencies.
    pub fn update_features(&self, features: Features, enabled: bool) -> Result<()> {
        try_call!(rbd_raw::rbd_update_features(self.raw(), features.0, u8::from(enabled)); "rbd_update_features", self.spec())?;
        Ok(())
    }

    /// Operation features (`rbd_get_op_features`), e.g. clone-parent/clone-child bits.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn op_features(&self) -> Result<u64> {
        let mut f = 0u64;
        try_call!(rbd_raw::rbd_get_op_features(self.raw(), &mut f); "rbd_get_op_features", self.spec())?;
        Ok(f)
    }

    /// Image flags (`rbd_get_flags`), e.g. object map invalid.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn flags(&self) -> Result<u64> {
        let mut f = 0u64;
        try_call!(rbd_raw::rbd_get_flags(self.raw(), &mut f); "rbd_get_flags", self.spec())?;
        Ok(f)
    }

    /// Bytes shared with the parent (`rbd_get_overlap`); 0 for a non-clone.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn overlap(&self) -> Result<u64> {
        let mut o = 0u64;
        try_call!(rbd_raw::rbd_get_overlap(self.raw(), &mut o); "rbd_get_overlap", self.spec())?;
        Ok(o)
    }

    /// Stripe unit in bytes.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn stripe_unit(&self) -> Result<u64> {
        let mut v = 0u64;
        try_call!(rbd_raw::rbd_get_stripe_unit(self.raw(), &mut v); "rbd_get_stripe_unit", self.spec())?;
        Ok(v)
    }

    /// Stripe count.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn stripe_count(&self) -> Result<u64> {
        let mut v = 0u64;
        try_call!(rbd_raw::rbd_get_stripe_count(self.raw(), &mut v); "rbd_get_stripe_count", self.spec())?;
        Ok(v)
    }

    /// Data pool id (`rbd_get_data_pool_id`).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn data_pool_id(&self) -> Result<i64> {
        // SAFETY: valid handle; returns the id or -errno.
        let r = unsafe { rbd_raw::rbd_get_data_pool_id(self.raw()) };
        crate::call::c_try(r, "rbd_get_data_pool_id", || Some(self.spec()))?;
        Ok(r)
    }

    /// Resizes (`rbd_resize2`); shrinking needs `allow_shrink`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when shrinking without `allow_shrink`, or for a size above
    /// `i64::MAX` bytes (librbd's object count wraps near `u64::MAX`).
    pub fn resize(&self, size: u64, allow_shrink: bool) -> Result<()> {
        self.resize_with_progress(size, allow_shrink, &mut Progress::none())
    }

    /// Resizes reporting progress (shrinking discards objects; the callback may cancel).
    ///
    /// # Errors
    /// As [`Image::resize`], plus [`ErrorKind::Cancelled`].
    pub fn resize_with_progress(&self, size: u64, allow_shrink: bool, progress: &mut Progress<'_>) -> Result<()> {
        let _s = tracing::debug_span!("resize", image = %self.spec(), size).entered();
        crate::pool::validate_image_size("rbd_resize2", size).map_err(|e| e.with_target(self.spec()))?;
        run_with_progress(
            progress,
            "rbd_resize2",
            || self.spec(),
            |cb, arg| {
                // SAFETY: valid handle; cb/arg from run_with_progress.
                unsafe { rbd_raw::rbd_resize2(self.raw(), size, allow_shrink, cb, arg) }
            },
        )?;
        Ok(())
    }

    fn check_range(&self, op: &'static str, off: u64, len: usize) -> Result<()> {
        off.checked_add(len as u64).map(|_| ()).ok_or_else(|| {
            Error::new(ErrorKind::OutOfRange, op, format!("offset {off} + length {len} overflows"))
                .with_target(self.spec())
        })
    }

    /// Reads `buf.len()` bytes at `off` (`rbd_read2`); returns bytes read (short at the end).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `off` is past the end.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_with_flags(off, buf, fadvise::NONE)
    }

    /// [`Image::read`] with `LIBRADOS_OP_FLAG_FADVISE_*` flags.
    ///
    /// # Errors
    /// As [`Image::read`].
    pub fn read_with_flags(&self, off: u64, buf: &mut [u8], flags: i32) -> Result<usize> {
        self.check_range("rbd_read2", off, buf.len())?;
        // SAFETY: buf is valid for buf.len() bytes.
        let r = unsafe { rbd_raw::rbd_read2(self.raw(), off, buf.len(), buf.as_mut_ptr().cast(), flags) };
        Ok(crate::call::c_try(r as i64, "rbd_read2", || Some(self.spec()))? as usize)
    }

    /// Reads `len` bytes at `off` into a new vector.
    ///
    /// # Errors
    /// As [`Image::read`].
    pub fn read_vec(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        let n = self.read(off, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// Writes `data` at `off` (`rbd_write2`).
    ///
    /// # Errors
    /// [`ErrorKind::ReadOnly`] on a read-only handle or when another client holds the lock,
    /// [`ErrorKind::Shutdown`] when this client was blocklisted.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.write_with_flags(off, data, fadvise::NONE)
    }

    /// [`Image::write`] with fadvise flags.
    ///
    /// # Errors
    /// As [`Image::write`].
    pub fn write_with_flags(&self, off: u64, data: &[u8], flags: i32) -> Result<()> {
        self.check_range("rbd_write2", off, data.len())?;
        // SAFETY: data is valid for data.len() bytes.
        let r = unsafe { rbd_raw::rbd_write2(self.raw(), off, data.len(), data.as_ptr().cast(), flags) };
        let n = crate::call::c_try(r as i64, "rbd_write2", || Some(self.spec()))?;
        if n as usize != data.len() {
            return Err(Error::new(ErrorKind::Io, "rbd_write2", format!("short write: {n} of {} bytes", data.len()))
                .with_target(self.spec()));
        }
        Ok(())
    }

    /// Discards a range (`rbd_discard`). Partial discards below `rbd_discard_granularity_bytes`
    /// may be ignored by librbd; use [`Image::write_zeroes`] when zeros must read back.
    ///
    /// # Errors
    /// As [`Image::write`].
    pub fn discard(&self, off: u64, len: u64) -> Result<()> {
        // SAFETY: valid handle.
        let r = unsafe { rbd_raw::rbd_discard(self.raw(), off, len) };
        crate::call::c_try(r as i64, "rbd_discard", || Some(self.spec()))?;
        Ok(())
    }

    /// Zeroes a range (`rbd_write_zeroes`); `thick` allocates instead of punching holes.
    ///
    /// # Errors
    /// As [`Image::write`].
    pub fn write_zeroes(&self, off: u64, len: u64, thick: bool) -> Result<()> {
        let zflags = if thick { rbd_raw::RBD_WRITE_ZEROES_FLAG_THICK_PROVISION as c_int } else { 0 };
        // SAFETY: valid handle.
        let r = unsafe { rbd_raw::rbd_write_zeroes(self.raw(), off, len as usize, zflags, 0) };
        crate::call::c_try(r as i64, "rbd_write_zeroes", || Some(self.spec()))?;
        Ok(())
    }

    /// Flushes cached writes (`rbd_flush`).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn flush(&self) -> Result<()> {
        try_call!(rbd_raw::rbd_flush(self.raw()); "rbd_flush", self.spec())?;
        Ok(())
    }

    /// Invalidates the client cache (`rbd_invalidate_cache`).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn invalidate_cache(&self) -> Result<()> {
        try_call!(rbd_raw::rbd_invalidate_cache(self.raw()); "rbd_invalidate_cache", self.spec())?;
        Ok(())
    }

    /// Selects which snapshot this handle reads (`None` = head). Wraps `rbd_snap_set`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the snapshot does not exist.
    pub fn set_snap(&mut self, snap: Option<&str>) -> Result<()> {
        let c = crate::cluster::opt_cstr("rbd_snap_set", "snapshot", snap)?;
        try_call!(rbd_raw::rbd_snap_set(self.raw(), ptr_or_null(&c)); "rbd_snap_set", self.pool.spec(&self.name, snap))?;
        self.snap = snap.map(str::to_string);
        Ok(())
    }

    /// Selects a snapshot by id, any namespace (`rbd_snap_set_by_id`); `None` = head.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the snapshot does not exist.
    pub fn set_snap_by_id(&mut self, snap_id: Option<u64>) -> Result<()> {
        let id = snap_id.unwrap_or(u64::MAX - 1 /* LIBRADOS_SNAP_HEAD = (uint64_t)-2 */);
        try_call!(rbd_raw::rbd_snap_set_by_id(self.raw(), id); "rbd_snap_set_by_id", format!("{}@{id}", self.spec()))?;
        self.snap = snap_id.map(|i| format!("#{i}"));
        Ok(())
    }

    /// Clients watching this image (`rbd_watchers_list`): (address, id, cookie).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn watchers(&self) -> Result<Vec<Watcher>> {
        let mut n = 8usize;
        loop {
            let mut v: Vec<rbd_raw::rbd_image_watcher_t> = vec![Default::default(); n];
            let mut got = n;
            // SAFETY: v has n entries; got is in/out.
            let r = unsafe { rbd_raw::rbd_watchers_list(self.raw(), v.as_mut_ptr(), &mut got) };
            if r == -libc::ERANGE {
                n = got.max(n * 2);
                continue;
            }
            crate::call::c_try(r, "rbd_watchers_list", || Some(self.spec()))?;
            let out = v[..got]
                .iter()
                // SAFETY: strings filled by librbd.
                .map(|w| Watcher { addr: unsafe { from_c(w.addr) }, id: w.id, cookie: w.cookie })
                .collect();
            // SAFETY: frees what rbd_watchers_list allocated.
            unsafe { rbd_raw::rbd_watchers_list_cleanup(v.as_mut_ptr(), got) };
            return Ok(out);
        }
    }
}

/// A client watching an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Client address.
    pub addr: String,
    /// Client global id.
    pub id: i64,
    /// Watch cookie.
    pub cookie: u64,
}
