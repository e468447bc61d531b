//! Pools (librados I/O contexts): open by name and namespace, list/create/remove/rename images,
//! small RADOS object I/O (for metadata objects such as Cinder's `backup.<id>.meta`), and stats.
//!
//! ```no_run
//! use rbd_core::{Cluster, ImageOptions, Pool};
//! let pool = Pool::open(&Cluster::shared(None, "cinder")?, "volumes")?;
//! pool.create_image("volume-1", 1 << 30, ImageOptions::new().order(22))?;
//! pool.object_write_full("backup.1.meta", br#"{"version": 1}"#)?;
//! # Ok::<(), rbd_core::Error>(())
//! ```

use std::ffi::{c_char, CString};
use std::ptr;
use std::sync::Arc;

use librados_sys as rados_raw;
use librbd_sys as rbd_raw;

use crate::call::try_call;
use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::options::ImageOptions;
use crate::progress::{run_with_progress, Progress};
use crate::util::{cstr, from_c, spec};

pub(crate) struct PoolInner {
    raw: rados_raw::rados_ioctx_t,
    name: String,
    namespace: String,
    cluster: Cluster,
}

// SAFETY: an ioctx may be used from several threads for I/O as long as its settings (namespace,
// read snap, locator) are not changed concurrently (librados.h @warning on those setters). The
// namespace is set once in `open_ns` before the handle is shared and never changed after.
unsafe impl Send for PoolInner {}
// SAFETY: see Send; no setter is exposed after construction.
unsafe impl Sync for PoolInner {}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: raw came from rados_ioctx_create and is destroyed once; the cluster (held
        // in self.cluster) is still alive.
        unsafe { rados_raw::rados_ioctx_destroy(self.raw) };
    }
}

/// An open pool (optionally in a namespace). `Send + Sync`, cheap to clone. Keeps its
/// [`Cluster`] alive.
///
/// ```no_run
/// let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// let pool = rbd_core::Pool::open(&cluster, "volumes")?;
/// pool.create_image("volume-1", 1 << 30, &rbd_core::ImageOptions::new())?;
/// assert!(pool.list_images()?.iter().any(|i| i.name == "volume-1"));
/// pool.remove_image("volume-1")?;
/// # Ok::<(), rbd_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.inner.name).field("namespace", &self.inner.namespace).finish()
    }
}

/// An image name and id as `rbd_list2` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The image id.
    pub id: String,
    /// The image name.
    pub name: String,
}

/// Usage of one pool (`rados_ioctx_pool_stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes stored (logical, before replication).
    pub bytes: u64,
    /// Number of objects.
    pub objects: u64,
}

impl Pool {
    /// Opens pool `name` in the default namespace. Wraps `rados_ioctx_create`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the pool does not exist.
    pub fn open(cluster: &Cluster, name: &str) -> Result<Pool> {
        Pool::open_ns(cluster, name, "")
    }

    /// Opens pool `name` in namespace `namespace` (`""` is the default namespace).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the pool does not exist.
    pub fn open_ns(cluster: &Cluster, name: &str, namespace: &str) -> Result<Pool> {
        let c = cstr("rados_ioctx_create", "pool", name)?;
        let mut raw: rados_raw::rados_ioctx_t = ptr::null_mut();
        try_call!(rados_raw::rados_ioctx_create(cluster.raw(), c.as_ptr(), &mut raw); "rados_ioctx_create", name)?;
        let inner =
            PoolInner { raw, name: name.to_string(), namespace: namespace.to_string(), cluster: cluster.clone() };
        if !namespace.is_empty() {
            let ns = cstr("rados_ioctx_set_namespace", "namespace", namespace)?;
            // SAFETY: the ioctx is not shared yet.
            unsafe { rados_raw::rados_ioctx_set_namespace(raw, ns.as_ptr()) };
        }
        Ok(Pool { inner: Arc::new(inner) })
    }

    /// The same pool in another namespace (a new ioctx; this one is unchanged).
    ///
    /// # Errors
    /// As [`Pool::open_ns`].
    pub fn with_namespace(&self, namespace: &str) -> Result<Pool> {
        Pool::open_ns(&self.inner.cluster, &self.inner.name, namespace)
    }

    pub(crate) fn raw(&self) -> rados_raw::rados_ioctx_t {
        self.inner.raw
    }

    /// The pool name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The namespace (`""` for the default one).
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The cluster this pool belongs to.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The pool id.
    pub fn id(&self) -> i64 {
        // SAFETY: valid ioctx.
        unsafe { rados_raw::rados_ioctx_get_id(self.raw()) }
    }

    /// `pool/[ns/]image[@snap]` for messages.
    pub(crate) fn spec(&self, image: &str, snap: Option<&str>) -> String {
        spec(&self.inner.name, &self.inner.namespace, image, snap)
    }

    /// Lists images (`rbd_list2`).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn list_images(&self) -> Result<Vec<ImageSpec>> {
        let mut n = 64usize;
        loop {
            let mut v: Vec<rbd_raw::rbd_image_spec_t> = vec![Default::default(); n];
            let mut got = n;
            // SAFETY: v has n entries; got is in/out.
            let r = unsafe { rbd_raw::rbd_list2(self.raw(), v.as_mut_ptr(), &mut got) };
            if r == -libc::ERANGE {
                n = got.max(n * 2);
                continue;
            }
            crate::call::c_try(r, "rbd_list2", || Some(self.name().to_string()))?;
            let out = v[..got]
                .iter()
                // SAFETY: librbd filled these strings.
                .map(|s| unsafe { ImageSpec { id: from_c(s.id), name: from_c(s.name) } })
                .collect();
            // SAFETY: frees what rbd_list2 allocated for `got` entries.
            unsafe { rbd_raw::rbd_image_spec_list_cleanup(v.as_mut_ptr(), got) };
            return Ok(out);
        }
    }

    /// Image names only, sorted.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn image_names(&self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self.list_images()?.into_iter().map(|s| s.name).collect();
        v.sort();
        Ok(v)
    }

    /// True when image `name` exists (opens nothing; uses the directory listing).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn image_exists(&self, name: &str) -> Result<bool> {
        Ok(self.list_images()?.iter().any(|s| s.name == name))
    }

    /// Creates an image (`rbd_create4`) with every option `opts` sets.
    ///
    /// # Errors
    /// [`ErrorKind::Exists`] when the name is taken, [`ErrorKind::PermissionDenied`] without
    /// write caps on the pool, [`ErrorKind::InvalidArgument`] for a bad option combination, a
    /// bad name ([`Pool::validate_image_name`]: librbd itself accepts `/` and `@`, which makes
    /// an image no `pool/image@snap` spec can name) or a size above `i64::MAX` bytes.
    pub fn create_image(&self, name: &str, size: u64, opts: &ImageOptions) -> Result<()> {
        let _s = tracing::debug_span!("create_image", pool = %self.name(), image = name, size).entered();
        Pool::validate_image_name(name).map_err(|e| e.with_target(self.spec(name, None)))?;
        validate_image_size("rbd_create4", size).map_err(|e| e.with_target(self.spec(name, None)))?;
        let c = cstr("rbd_create4", "image", name)?;
        let o = opts.to_raw()?;
        try_call!(rbd_raw::rbd_create4(self.raw(), c.as_ptr(), size, o.raw()); "rbd_create4", self.spec(name, None))?;
        Ok(())
    }

    /// Removes an image (`rbd_remove_with_progress`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::HasSnapshots`], [`ErrorKind::Busy`] (watchers).
    pub fn remove_image(&self, name: &str) -> Result<()> {
        self.remove_image_with_progress(name, &mut Progress::none())
    }

    /// Removes an image reporting progress; the callback may cancel.
    ///
    /// # Errors
    /// As [`Pool::remove_image`], plus [`ErrorKind::Cancelled`].
    pub fn remove_image_with_progress(&self, name: &str, progress: &mut Progress<'_>) -> Result<()> {
        let _s = tracing::debug_span!("remove_image", pool = %self.name(), image = name).entered();
        let c = cstr("rbd_remove", "image", name)?;
        run_with_progress(
            progress,
            "rbd_remove_with_progress",
            || self.spec(name, None),
            |cb, arg| {
                // SAFETY: valid ioctx and name; cb/arg come from run_with_progress.
                unsafe { rbd_raw::rbd_remove_with_progress(self.raw(), c.as_ptr(), cb, arg) }
            },
        )?;
        Ok(())
    }

    /// Renames an image (`rbd_rename`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Exists`].
    pub fn rename_image(&self, from: &str, to: &str) -> Result<()> {
        let a = cstr("rbd_rename", "image", from)?;
        let b = cstr("rbd_rename", "image", to)?;
        try_call!(rbd_raw::rbd_rename(self.raw(), a.as_ptr(), b.as_ptr()); "rbd_rename", format!("{} -> {to}", self.spec(from, None)))?;
        Ok(())
    }

    /// Pool usage (`rados_ioctx_pool_stat`).
    ///
    /// # Errors
    /// Errors from librados.
    pub fn stats(&self) -> Result<PoolStats> {
        let mut st = rados_raw::rados_pool_stat_t::default();
        try_call!(rados_raw::rados_ioctx_pool_stat(self.raw(), &mut st); "rados_ioctx_pool_stat", self.name())?;
        Ok(PoolStats { bytes: st.num_bytes, objects: st.num_objects })
    }

    /// Writes a whole RADOS object (`rados_write_full`).
    ///
    /// # Errors
    /// Errors from librados.
    pub fn object_write_full(&self, oid: &str, data: &[u8]) -> Result<()> {
        let o = cstr("rados_write_full", "object", oid)?;
        try_call!(rados_raw::rados_write_full(self.raw(), o.as_ptr(), data.as_ptr().cast(), data.len()); "rados_write_full", self.spec(oid, None))?;
        Ok(())
    }

    /// Writes `data` at `offset` into a RADOS object (`rados_write`).
    ///
    /// # Errors
    /// Errors from librados.
    pub fn object_write(&self, oid: &str, data: &[u8], offset: u64) -> Result<()> {
        let o = cstr("rados_write", "object", oid)?;
        try_call!(rados_raw::rados_write(self.raw(), o.as_ptr(), data.as_ptr().cast(), data.len(), offset); "rados_write", self.spec(oid, None))?;
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` of a RADOS object (`rados_read`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the object does not exist.
    pub fn object_read(&self, oid: &str, len: usize, offset: u64) -> Result<Vec<u8>> {
        let o = cstr("rados_read", "object", oid)?;
        let mut buf = vec![0u8; len];
        let n = try_call!(rados_raw::rados_read(self.raw(), o.as_ptr(), buf.as_mut_ptr().cast::<c_char>(), len, offset); "rados_read", self.spec(oid, None))?;
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// Reads a whole RADOS object.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the object does not exist.
    pub fn object_read_full(&self, oid: &str) -> Result<Vec<u8>> {
        let (size, _) = self.object_stat(oid)?;
        self.object_read(oid, size as usize, 0)
    }

    /// Size and mtime (unix seconds) of a RADOS object (`rados_stat`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the object does not exist.
    pub fn object_stat(&self, oid: &str) -> Result<(u64, i64)> {
        let o = cstr("rados_stat", "object", oid)?;
        let mut size = 0u64;
        let mut mtime: libc::time_t = 0;
        try_call!(rados_raw::rados_stat(self.raw(), o.as_ptr(), &mut size, &mut mtime); "rados_stat", self.spec(oid, None))?;
        Ok((size, mtime))
    }

    /// Removes a RADOS object (`rados_remove`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the object does not exist.
    pub fn object_remove(&self, oid: &str) -> Result<()> {
        let o = cstr("rados_remove", "object", oid)?;
        try_call!(rados_raw::rados_remove(self.raw(), o.as_ptr()); "rados_remove", self.spec(oid, None))?;
        Ok(())
    }

    /// Lists object names in this pool/namespace (`rados_nobjects_list_*`).
    ///
    /// # Errors
    /// Errors from librados.
    pub fn object_list(&self) -> Result<Vec<String>> {
        let mut ctx: rados_raw::rados_list_ctx_t = ptr::null_mut();
        try_call!(rados_raw::rados_nobjects_list_open(self.raw(), &mut ctx); "rados_nobjects_list_open", self.name())?;
        let mut out = Vec::new();
        loop {
            let mut entry: *const c_char = ptr::null();
            // SAFETY: ctx is open; entry points into ctx-owned memory valid until the next call.
            let r = unsafe { rados_raw::rados_nobjects_list_next(ctx, &mut entry, ptr::null_mut(), ptr::null_mut()) };
            if r == -libc::ENOENT {
                break;
            }
            if r < 0 {
                // SAFETY: ctx is open.
                unsafe { rados_raw::rados_nobjects_list_close(ctx) };
                return Err(Error::from_errno(i64::from(r), "rados_nobjects_list_next", Some(self.name().to_string())));
            }
            // SAFETY: entry is a valid C string.
            out.push(unsafe { from_c(entry) });
        }
        // SAFETY: ctx is open and closed once.
        unsafe { rados_raw::rados_nobjects_list_close(ctx) };
        Ok(out)
    }

    /// Fails with [`ErrorKind::InvalidArgument`] unless `name` is a usable image name (non-empty,
    /// no `/` or `@`, no NUL, at most 4096 bytes).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`].
    pub fn validate_image_name(name: &str) -> Result<()> {
        if name.is_empty() || name.len() > 4096 || name.contains(['/', '@', '\0']) {
            return Err(Error::new(ErrorKind::InvalidArgument, "validate", format!("invalid image name {name:?}")));
        }
        Ok(())
    }
}

/// The largest image size this crate creates or resizes to: `i64::MAX` bytes (8 EiB).
///
/// librbd accepts any `u64`, but its object count (`(size + object_size - 1) / object_size`)
/// wraps for sizes near `u64::MAX` (an image of "16 EiB in 0 objects" that passes the object
/// map's size check), and qemu and the kernel client address images with signed 64-bit offsets.
pub(crate) const MAX_IMAGE_SIZE: u64 = i64::MAX as u64;

/// Fails with [`ErrorKind::InvalidArgument`] when `size` is above `MAX_IMAGE_SIZE`.
pub(crate) fn validate_image_size(op: &'static str, size: u64) -> Result<()> {
    if size > MAX_IMAGE_SIZE {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            op,
            format!("image size {size} is above the maximum of {MAX_IMAGE_SIZE} bytes"),
        ));
    }
    Ok(())
}

/// A NUL-terminated copy of a string for calls that take `const char*`, or NULL.
pub(crate) fn ptr_or_null(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |c| c.as_ptr())
}
