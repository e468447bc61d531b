//! Snapshots: list (every namespace: user, group, trash, mirror), create with quiesce flags,
//! remove, protect/unprotect, rollback with progress, rename, and the per-image snapshot limit.
//!
//! ```no_run
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! # let pool = rbd_core::Pool::open(&cluster, "rbd")?;
//! use rbd_core::{Image, SnapNamespace};
//! let image = Image::open(&pool, "disk")?;
//! image.snap_create("before-upgrade")?; // skips quiesce notifications
//! image.snap_protect("before-upgrade")?;
//! for s in image.snapshots()? {
//!     if s.namespace == SnapNamespace::User {
//!         println!("{} {} {} bytes, protected: {:?}", s.id, s.name, s.size, s.protected);
//!     }
//! }
//! image.snap_unprotect("before-upgrade")?;
//! image.snap_remove("before-upgrade")?;
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! Calls that take a snapshot *name* (`snap_remove`, `snap_protect`, `snap_rollback`,
//! `snap_id`, ...) resolve **user-namespace** snapshots only; group, trash and mirror
//! snapshots are reached by id ([`Image::snap_remove_by_id`], [`Image::open_at_snap_id`]).

use std::ffi::{c_char, c_int};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use librbd_sys as rbd_raw;

use crate::call::{c_try, try_call};
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::progress::{run_with_progress, Progress};
use crate::util::{cstr, from_c};

/// The namespace a snapshot lives in (`rbd_snap_namespace_type_t`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SnapNamespace {
    /// A snapshot a user created by name (`rbd snap create`).
    User,
    /// A member snapshot of a group snapshot.
    Group,
    /// A clone-v2 parent snapshot that was removed while children still use it; librbd
    /// deletes it once the last child is gone or flattened.
    Trash,
    /// A mirror (snapshot-based mirroring) snapshot.
    Mirror,
    /// A namespace this crate does not know (newer librbd).
    Other(u32),
}

impl SnapNamespace {
    /// Maps the C enum value.
    pub(crate) fn from_raw(v: rbd_raw::rbd_snap_namespace_type_t) -> SnapNamespace {
        match v {
            rbd_raw::rbd_snap_namespace_type_t_RBD_SNAP_NAMESPACE_TYPE_USER => SnapNamespace::User,
            rbd_raw::rbd_snap_namespace_type_t_RBD_SNAP_NAMESPACE_TYPE_GROUP => SnapNamespace::Group,
            rbd_raw::rbd_snap_namespace_type_t_RBD_SNAP_NAMESPACE_TYPE_TRASH => SnapNamespace::Trash,
            rbd_raw::rbd_snap_namespace_type_t_RBD_SNAP_NAMESPACE_TYPE_MIRROR => SnapNamespace::Mirror,
            other => SnapNamespace::Other(other),
        }
    }

    /// The raw `RBD_SNAP_NAMESPACE_TYPE_*` value.
    ///
    /// ```
    /// assert_eq!(rbd_core::SnapNamespace::Trash.as_raw(), 2);
    /// ```
    pub fn as_raw(&self) -> u32 {
        match self {
            SnapNamespace::User => rbd_raw::rbd_snap_namespace_type_t_RBD_SNAP_NAMESPACE_TYPE_USER,
            SnapNamespace::Group => rbd_raw::rbd_snap_namespace_type_t_RBD_SNAP_NAMESPACE_TYPE_GROUP,
            SnapNamespace::Trash => rbd_raw::rbd_snap_namespace_type_t_RBD_SNAP_NAMESPACE_TYPE_TRASH,
            SnapNamespace::Mirror => rbd_raw::rbd_snap_namespace_type_t_RBD_SNAP_NAMESPACE_TYPE_MIRROR,
            SnapNamespace::Other(v) => *v,
        }
    }
}

/// The group snapshot a [`SnapNamespace::Group`] snapshot belongs to
/// (`rbd_snap_group_namespace_t`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupSnapRef {
    /// Id of the pool holding the group.
    pub pool: i64,
    /// Group name.
    pub group: String,
    /// Group snapshot name.
    pub snap: String,
}

/// One snapshot of an image, as [`Image::snapshots`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// Snapshot id (unique per image, never reused).
    pub id: u64,
    /// Name. Group and trash snapshots have generated names; use `id` for those.
    pub name: String,
    /// Image size at the time of the snapshot, in bytes.
    pub size: u64,
    /// Which namespace the snapshot lives in.
    pub namespace: SnapNamespace,
    /// Creation time (`rbd_snap_get_timestamp`); `None` when the cluster recorded none.
    pub timestamp: Option<SystemTime>,
    /// Whether it is protected (`rbd_snap_is_protected`); only filled for user snapshots.
    pub protected: Option<bool>,
    /// The owning group snapshot, for [`SnapNamespace::Group`] snapshots.
    pub group: Option<GroupSnapRef>,
    /// The user-visible name the snapshot had before it was removed, for
    /// [`SnapNamespace::Trash`] snapshots.
    pub trash_original_name: Option<String>,
}

/// Flags for [`Image::snap_create_with_flags`] and group snapshots (`RBD_SNAP_CREATE_*`).
///
/// ```
/// use rbd_core::SnapCreateFlags;
/// let f = SnapCreateFlags::SKIP_QUIESCE | SnapCreateFlags::IGNORE_QUIESCE_ERROR;
/// assert!(f.contains(SnapCreateFlags::SKIP_QUIESCE));
/// assert_eq!(f.bits(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SnapCreateFlags(pub u32);

impl SnapCreateFlags {
    /// Notify quiesce watchers and fail when one of them fails (librbd's default).
    pub const NONE: SnapCreateFlags = SnapCreateFlags(0);
    /// Do not send quiesce/unquiesce notifications at all.
    pub const SKIP_QUIESCE: SnapCreateFlags = SnapCreateFlags(rbd_raw::RBD_SNAP_CREATE_SKIP_QUIESCE);
    /// Notify quiesce watchers, but take the snapshot even when one of them reports an error.
    pub const IGNORE_QUIESCE_ERROR: SnapCreateFlags = SnapCreateFlags(rbd_raw::RBD_SNAP_CREATE_IGNORE_QUIESCE_ERROR);

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// True when every bit of `other` is set.
    pub fn contains(self, other: SnapCreateFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for SnapCreateFlags {
    type Output = SnapCreateFlags;
    fn bitor(self, rhs: SnapCreateFlags) -> SnapCreateFlags {
        SnapCreateFlags(self.0 | rhs.0)
    }
}

/// Flags for [`Image::snap_remove_with_flags`] (`RBD_SNAP_REMOVE_*`).
///
/// ```
/// use rbd_core::SnapRemoveFlags;
/// assert_eq!(SnapRemoveFlags::UNPROTECT | SnapRemoveFlags::FLATTEN, SnapRemoveFlags::FORCE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SnapRemoveFlags(pub u32);

impl SnapRemoveFlags {
    /// Plain remove: fails on a protected snapshot.
    pub const NONE: SnapRemoveFlags = SnapRemoveFlags(0);
    /// Unprotect the snapshot first.
    pub const UNPROTECT: SnapRemoveFlags = SnapRemoveFlags(rbd_raw::RBD_SNAP_REMOVE_UNPROTECT);
    /// Flatten every child of the snapshot first (reported through the progress callback).
    pub const FLATTEN: SnapRemoveFlags = SnapRemoveFlags(rbd_raw::RBD_SNAP_REMOVE_FLATTEN);
    /// `UNPROTECT | FLATTEN`.
    pub const FORCE: SnapRemoveFlags = SnapRemoveFlags(rbd_raw::RBD_SNAP_REMOVE_FORCE);

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// True when every bit of `other` is set.
    pub fn contains(self, other: SnapRemoveFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for SnapRemoveFlags {
    type Output = SnapRemoveFlags;
    fn bitor(self, rhs: SnapRemoveFlags) -> SnapRemoveFlags {
        SnapRemoveFlags(self.0 | rhs.0)
    }
}

/// `pool/[ns/]image@snap` for errors. A free function (not a private method) so it cannot
/// collide with methods other modules add to `Image`.
fn snap_target(img: &Image, snap: &str) -> String {
    img.pool().spec(img.name(), Some(snap))
}

fn snap_id_target(img: &Image, id: u64) -> String {
    img.pool().spec(img.name(), Some(&format!("#{id}")))
}

/// A `timespec` as a `SystemTime`; `None` for the all-zero "not recorded" value.
pub(crate) fn system_time_from_timespec(ts: &libc::timespec) -> Option<SystemTime> {
    if ts.tv_sec == 0 && ts.tv_nsec == 0 {
        return None;
    }
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0).min(999_999_999);
    if ts.tv_sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(ts.tv_sec as u64, nanos))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(ts.tv_sec.unsigned_abs()))
    }
}

/// Raw `rbd_snap_list` output: (id, size, name).
fn snap_list_raw(img: &Image) -> Result<Vec<(u64, u64, String)>> {
    let mut max: c_int = 16;
    for _ in 0..32 {
        let cap = usize::try_from(max).unwrap_or(16).max(1);
        let mut v: Vec<rbd_raw::rbd_snap_info_t> = vec![Default::default(); cap];
        let mut want = max;
        // SAFETY: `v` holds `max` zeroed entries (librbd memsets `*max_snaps` entries and needs
        // one more than the count for its NULL terminator, which it asks for via -ERANGE).
        let r = unsafe { rbd_raw::rbd_snap_list(img.raw(), v.as_mut_ptr(), &mut want) };
        if r == -libc::ERANGE {
            max = want.max(max.saturating_mul(2));
            continue;
        }
        c_try(r, "rbd_snap_list", || Some(img.spec()))?;
        let n = usize::try_from(r).unwrap_or(0).min(cap);
        let out = v[..n]
            .iter()
            // SAFETY: librbd strdup'ed each name (NUL-terminated) for the first `n` entries.
            .map(|s| (s.id, s.size, unsafe { from_c(s.name) }))
            .collect();
        // SAFETY: frees the names librbd allocated; the list ends at the entry with a NULL name
        // (librbd wrote it at index n, and zeroed the rest).
        unsafe { rbd_raw::rbd_snap_list_end(v.as_mut_ptr()) };
        return Ok(out);
    }
    Err(Error::new(ErrorKind::OutOfRange, "rbd_snap_list", "snapshot list kept growing").with_target(img.spec()))
}

fn snap_namespace_of(img: &Image, id: u64) -> Result<SnapNamespace> {
    let mut ns: rbd_raw::rbd_snap_namespace_type_t = 0;
    // SAFETY: valid handle; `ns` is a valid out pointer.
    try_call!(rbd_raw::rbd_snap_get_namespace_type(img.raw(), id, &mut ns); "rbd_snap_get_namespace_type", snap_id_target(img, id))?;
    Ok(SnapNamespace::from_raw(ns))
}

fn snap_timestamp_of(img: &Image, id: u64) -> Result<Option<SystemTime>> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid handle; `ts` is a valid out pointer.
    try_call!(rbd_raw::rbd_snap_get_timestamp(img.raw(), id, &mut ts); "rbd_snap_get_timestamp", snap_id_target(img, id))?;
    Ok(system_time_from_timespec(&ts))
}

fn snap_group_of(img: &Image, id: u64) -> Result<GroupSnapRef> {
    let mut g = rbd_raw::rbd_snap_group_namespace_t::default();
    let size = std::mem::size_of::<rbd_raw::rbd_snap_group_namespace_t>();
    // SAFETY: valid handle; `g` is a struct of the size we pass.
    try_call!(rbd_raw::rbd_snap_get_group_namespace(img.raw(), id, &mut g, size); "rbd_snap_get_group_namespace", snap_id_target(img, id))?;
    // SAFETY: librbd filled the strings (NUL-terminated, or NULL).
    let out =
        unsafe { GroupSnapRef { pool: g.group_pool, group: from_c(g.group_name), snap: from_c(g.group_snap_name) } };
    // SAFETY: frees the strings librbd allocated in `g`, once.
    unsafe { rbd_raw::rbd_snap_group_namespace_cleanup(&mut g, size) };
    Ok(out)
}

fn snap_trash_name_of(img: &Image, id: u64) -> Result<String> {
    // librbd answers -ERANGE without saying how much it needs: grow until it fits.
    let mut len = 256usize;
    loop {
        let mut buf = vec![0 as c_char; len];
        // SAFETY: `buf` has `len` bytes.
        let r = unsafe { rbd_raw::rbd_snap_get_trash_namespace(img.raw(), id, buf.as_mut_ptr(), len) };
        if r == -libc::ERANGE && len < (1 << 20) {
            len *= 4;
            continue;
        }
        c_try(r, "rbd_snap_get_trash_namespace", || Some(snap_id_target(img, id)))?;
        // SAFETY: librbd strcpy'd a NUL-terminated name into `buf`.
        return Ok(unsafe { from_c(buf.as_ptr()) });
    }
}

fn snap_details(img: &Image, id: u64, size: u64, name: String) -> Result<SnapInfo> {
    let namespace = snap_namespace_of(img, id)?;
    let timestamp = snap_timestamp_of(img, id)?;
    let mut info =
        SnapInfo { id, name, size, namespace, timestamp, protected: None, group: None, trash_original_name: None };
    match info.namespace {
        SnapNamespace::User => info.protected = Some(img.snap_is_protected(&info.name)?),
        SnapNamespace::Group => info.group = Some(snap_group_of(img, id)?),
        SnapNamespace::Trash => info.trash_original_name = Some(snap_trash_name_of(img, id)?),
        SnapNamespace::Mirror | SnapNamespace::Other(_) => {}
    }
    Ok(info)
}

/// Pacific 16.2.15 loses the error of a snapshot create with `SKIP_QUIESCE`: when the
/// snapshot cannot be added (for example over the snapshot limit, EDQUOT) `rbd_snap_create2`
/// still returns 0 (`rbd snap create --skip-quiesce` prints "done" too). Check that the
/// snapshot exists, and report the most likely cause when it does not.
fn verify_created(img: &Image, name: &str) -> Result<()> {
    if img.snap_exists(name)? {
        return Ok(());
    }
    let limit = img.snap_limit()?;
    let count = snap_list_raw(img)?.len() as u64;
    let e = match limit {
        Some(l) if count >= l => Error::new(
            ErrorKind::QuotaExceeded,
            "rbd_snap_create2",
            format!("snapshot limit {l} reached (librbd reported success with SKIP_QUIESCE but created nothing)"),
        ),
        _ => Error::new(
            ErrorKind::Io,
            "rbd_snap_create2",
            "librbd reported success with SKIP_QUIESCE but the snapshot does not exist",
        ),
    };
    Err(e.with_target(snap_target(img, name)))
}

impl Image {
    /// Every snapshot of the image, in all namespaces, with namespace details, timestamps and
    /// (for user snapshots) protection status.
    ///
    /// Wraps `rbd_snap_list` / `rbd_snap_list_end` (Pacific has no `rbd_snap_list2`; its
    /// `rbd_snap_list` already returns every namespace), then per snapshot
    /// `rbd_snap_get_namespace_type`, `rbd_snap_get_timestamp`, `rbd_snap_is_protected` (user),
    /// `rbd_snap_get_group_namespace` (group) and `rbd_snap_get_trash_namespace` (trash).
    /// A snapshot removed by another client while the list is being built is left out.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] without read caps; other librbd errors.
    pub fn snapshots(&self) -> Result<Vec<SnapInfo>> {
        let _s = tracing::debug_span!("snapshots", pool = %self.pool().name(), image = %self.name()).entered();
        let raw = snap_list_raw(self)?;
        let mut out = Vec::with_capacity(raw.len());
        for (id, size, name) in raw {
            match snap_details(self, id, size, name) {
                Ok(info) => out.push(info),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    tracing::debug!(snap_id = id, "snapshot vanished while listing");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Creates user snapshot `name` **without quiesce notifications**
    /// (`RBD_SNAP_CREATE_SKIP_QUIESCE`), so it never waits on quiesce watchers (for example an
    /// rbd-nbd quiesce hook) that may be absent or stuck. The snapshot is crash-consistent. Use
    /// [`Image::snap_create_with_flags`] with [`SnapCreateFlags::NONE`] for librbd's default
    /// (notify and fail on watcher errors).
    ///
    /// Pacific returns success from a `SKIP_QUIESCE` create that failed (for example over the
    /// snapshot limit); this method checks that the snapshot exists afterwards and reports
    /// [`ErrorKind::QuotaExceeded`] (limit reached) or [`ErrorKind::Io`] otherwise.
    ///
    /// Wraps `rbd_snap_create2`.
    ///
    /// # Errors
    /// [`ErrorKind::Exists`] when the name is taken, [`ErrorKind::QuotaExceeded`] over the
    /// snapshot limit, [`ErrorKind::ReadOnly`] on a read-only handle,
    /// [`ErrorKind::InvalidArgument`] for an empty name or one with a NUL byte.
    pub fn snap_create(&self, name: &str) -> Result<()> {
        self.snap_create_with_flags(name, SnapCreateFlags::SKIP_QUIESCE)
    }

    /// Creates user snapshot `name` with explicit quiesce flags. Wraps `rbd_snap_create2`.
    ///
    /// # Errors
    /// As [`Image::snap_create`]; with [`SnapCreateFlags::NONE`] also the error a quiesce
    /// watcher returned.
    pub fn snap_create_with_flags(&self, name: &str, flags: SnapCreateFlags) -> Result<()> {
        let _s = tracing::debug_span!("snap_create", pool = %self.pool().name(), image = %self.name(), snap = name, flags = flags.0)
            .entered();
        // librbd accepts an empty name and creates a snapshot nothing can address by name.
        if name.is_empty() {
            return Err(Error::invalid("rbd_snap_create2", "empty snapshot name").with_target(self.spec()));
        }
        let c = cstr("rbd_snap_create2", "snapshot", name)?;
        // librbd calls the progress function without a NULL check, so always pass one.
        run_with_progress(
            &mut Progress::none(),
            "rbd_snap_create2",
            || snap_target(self, name),
            |cb, arg| {
                // SAFETY: valid handle and C string; cb/arg come from run_with_progress.
                unsafe { rbd_raw::rbd_snap_create2(self.raw(), c.as_ptr(), flags.0, cb, arg) }
            },
        )?;
        if flags.contains(SnapCreateFlags::SKIP_QUIESCE) {
            verify_created(self, name)?;
        }
        Ok(())
    }

    /// Removes user snapshot `name`. Wraps `rbd_snap_remove2` (no flags).
    ///
    /// With clone-v2 children the snapshot is not deleted but moved to the
    /// [`SnapNamespace::Trash`] namespace until the last child is gone.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Busy`] when it is protected.
    pub fn snap_remove(&self, name: &str) -> Result<()> {
        self.snap_remove_with_flags(name, SnapRemoveFlags::NONE, &mut Progress::none())
    }

    /// Removes user snapshot `name`, optionally unprotecting it and flattening its children
    /// first; the progress callback reports the flatten and may cancel it.
    /// Wraps `rbd_snap_remove2`.
    ///
    /// # Errors
    /// As [`Image::snap_remove`], plus [`ErrorKind::Cancelled`].
    pub fn snap_remove_with_flags(
        &self,
        name: &str,
        flags: SnapRemoveFlags,
        progress: &mut Progress<'_>,
    ) -> Result<()> {
        let _s = tracing::debug_span!("snap_remove", pool = %self.pool().name(), image = %self.name(), snap = name, flags = flags.0)
            .entered();
        let c = cstr("rbd_snap_remove2", "snapshot", name)?;
        run_with_progress(
            progress,
            "rbd_snap_remove2",
            || snap_target(self, name),
            |cb, arg| {
                // SAFETY: valid handle and C string; cb/arg come from run_with_progress.
                unsafe { rbd_raw::rbd_snap_remove2(self.raw(), c.as_ptr(), flags.0, cb, arg) }
            },
        )?;
        Ok(())
    }

    /// Removes a snapshot by id, in any namespace (how trash, group and mirror snapshots are
    /// removed). Wraps `rbd_snap_remove_by_id`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Busy`] when it is protected or (trash
    /// snapshots) still has children.
    pub fn snap_remove_by_id(&self, id: u64) -> Result<()> {
        let _s =
            tracing::debug_span!("snap_remove_by_id", pool = %self.pool().name(), image = %self.name(), snap_id = id)
                .entered();
        // SAFETY: valid handle.
        try_call!(rbd_raw::rbd_snap_remove_by_id(self.raw(), id); "rbd_snap_remove_by_id", snap_id_target(self, id))?;
        Ok(())
    }

    /// Protects user snapshot `name` from removal (required for clone v1 parents).
    /// Wraps `rbd_snap_protect`.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] when it is already protected, [`ErrorKind::NotFound`].
    pub fn snap_protect(&self, name: &str) -> Result<()> {
        let _s = tracing::debug_span!("snap_protect", pool = %self.pool().name(), image = %self.name(), snap = name)
            .entered();
        let c = cstr("rbd_snap_protect", "snapshot", name)?;
        // SAFETY: valid handle and C string.
        try_call!(rbd_raw::rbd_snap_protect(self.raw(), c.as_ptr()); "rbd_snap_protect", snap_target(self, name))?;
        Ok(())
    }

    /// Unprotects user snapshot `name`. Wraps `rbd_snap_unprotect`.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] while clones of it exist, [`ErrorKind::InvalidArgument`] when it
    /// is not protected, [`ErrorKind::NotFound`].
    pub fn snap_unprotect(&self, name: &str) -> Result<()> {
        let _s = tracing::debug_span!("snap_unprotect", pool = %self.pool().name(), image = %self.name(), snap = name)
            .entered();
        let c = cstr("rbd_snap_unprotect", "snapshot", name)?;
        // SAFETY: valid handle and C string.
        try_call!(rbd_raw::rbd_snap_unprotect(self.raw(), c.as_ptr()); "rbd_snap_unprotect", snap_target(self, name))?;
        Ok(())
    }

    /// True when user snapshot `name` is protected. Wraps `rbd_snap_is_protected`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`].
    pub fn snap_is_protected(&self, name: &str) -> Result<bool> {
        let c = cstr("rbd_snap_is_protected", "snapshot", name)?;
        let mut p: c_int = 0;
        // SAFETY: valid handle, C string and out pointer.
        try_call!(rbd_raw::rbd_snap_is_protected(self.raw(), c.as_ptr(), &mut p); "rbd_snap_is_protected", snap_target(self, name))?;
        Ok(p != 0)
    }

    /// True when user snapshot `name` exists. Wraps `rbd_snap_exists`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn snap_exists(&self, name: &str) -> Result<bool> {
        let c = cstr("rbd_snap_exists", "snapshot", name)?;
        let mut e = false;
        // SAFETY: valid handle, C string and out pointer.
        try_call!(rbd_raw::rbd_snap_exists(self.raw(), c.as_ptr(), &mut e); "rbd_snap_exists", snap_target(self, name))?;
        Ok(e)
    }

    /// The id of user snapshot `name`. Wraps `rbd_snap_get_id`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`].
    pub fn snap_id(&self, name: &str) -> Result<u64> {
        let c = cstr("rbd_snap_get_id", "snapshot", name)?;
        let mut id = 0u64;
        // SAFETY: valid handle, C string and out pointer.
        try_call!(rbd_raw::rbd_snap_get_id(self.raw(), c.as_ptr(), &mut id); "rbd_snap_get_id", snap_target(self, name))?;
        Ok(id)
    }

    /// The name of snapshot `id` (any namespace). Wraps `rbd_snap_get_name`.
    ///
    /// (Named `_by_id` because [`Image::snap_name`] already reports which snapshot the handle
    /// has selected.)
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`].
    pub fn snap_name_by_id(&self, id: u64) -> Result<String> {
        let mut len = 128usize;
        for _ in 0..16 {
            let mut buf = vec![0 as c_char; len];
            let mut want = len;
            // SAFETY: `buf` has `len` bytes; `want` is in/out.
            let r = unsafe { rbd_raw::rbd_snap_get_name(self.raw(), id, buf.as_mut_ptr(), &mut want) };
            if r == -libc::ERANGE {
                len = want.max(len * 2);
                continue;
            }
            c_try(r, "rbd_snap_get_name", || Some(snap_id_target(self, id)))?;
            // SAFETY: librbd wrote a NUL-terminated name into `buf`.
            return Ok(unsafe { from_c(buf.as_ptr()) });
        }
        Err(Error::new(ErrorKind::OutOfRange, "rbd_snap_get_name", "name kept growing")
            .with_target(snap_id_target(self, id)))
    }

    /// Rolls the image head back to user snapshot `name` (every object is rewritten).
    /// Wraps `rbd_snap_rollback_with_progress`.
    ///
    /// # Errors
    /// As [`Image::snap_rollback_with_progress`].
    pub fn snap_rollback(&self, name: &str) -> Result<()> {
        self.snap_rollback_with_progress(name, &mut Progress::none())
    }

    /// Rolls back reporting progress (once per object); the callback may cancel, leaving the
    /// head partially rolled back. Wraps `rbd_snap_rollback_with_progress`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::ReadOnly`] on a read-only handle or when another
    /// client holds the exclusive lock, [`ErrorKind::Cancelled`].
    pub fn snap_rollback_with_progress(&self, name: &str, progress: &mut Progress<'_>) -> Result<()> {
        let _s = tracing::debug_span!("snap_rollback", pool = %self.pool().name(), image = %self.name(), snap = name)
            .entered();
        let c = cstr("rbd_snap_rollback_with_progress", "snapshot", name)?;
        run_with_progress(
            progress,
            "rbd_snap_rollback_with_progress",
            || snap_target(self, name),
            |cb, arg| {
                // SAFETY: valid handle and C string; cb/arg come from run_with_progress.
                unsafe { rbd_raw::rbd_snap_rollback_with_progress(self.raw(), c.as_ptr(), cb, arg) }
            },
        )?;
        Ok(())
    }

    /// Renames user snapshot `from` to `to`. Wraps `rbd_snap_rename`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Exists`] when `to` is taken.
    pub fn snap_rename(&self, from: &str, to: &str) -> Result<()> {
        let _s = tracing::debug_span!("snap_rename", pool = %self.pool().name(), image = %self.name(), snap = from, to)
            .entered();
        let a = cstr("rbd_snap_rename", "snapshot", from)?;
        let b = cstr("rbd_snap_rename", "snapshot", to)?;
        // SAFETY: valid handle and C strings.
        try_call!(rbd_raw::rbd_snap_rename(self.raw(), a.as_ptr(), b.as_ptr()); "rbd_snap_rename", format!("{} -> {to}", snap_target(self, from)))?;
        Ok(())
    }

    /// The snapshot limit, or `None` when there is none (librbd reports `UINT64_MAX`).
    /// Wraps `rbd_snap_get_limit`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn snap_limit(&self) -> Result<Option<u64>> {
        let mut l = 0u64;
        // SAFETY: valid handle and out pointer.
        try_call!(rbd_raw::rbd_snap_get_limit(self.raw(), &mut l); "rbd_snap_get_limit", self.spec())?;
        Ok((l != u64::MAX).then_some(l))
    }

    /// Limits how many snapshots the image may have; creating more fails with
    /// [`ErrorKind::QuotaExceeded`]. Wraps `rbd_snap_set_limit`.
    ///
    /// # Errors
    /// [`ErrorKind::OutOfRange`] when the image already has more snapshots than `limit`.
    pub fn snap_set_limit(&self, limit: u64) -> Result<()> {
        let _s =
            tracing::debug_span!("snap_set_limit", pool = %self.pool().name(), image = %self.name(), limit).entered();
        // SAFETY: valid handle.
        try_call!(rbd_raw::rbd_snap_set_limit(self.raw(), limit); "rbd_snap_set_limit", self.spec())?;
        Ok(())
    }

    /// Removes the snapshot limit (`rbd_snap_set_limit(UINT64_MAX)`).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn snap_remove_limit(&self) -> Result<()> {
        self.snap_set_limit(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_round_trips() {
        for ns in [SnapNamespace::User, SnapNamespace::Group, SnapNamespace::Trash, SnapNamespace::Mirror] {
            assert_eq!(SnapNamespace::from_raw(ns.as_raw()), ns);
        }
        assert_eq!(SnapNamespace::from_raw(77), SnapNamespace::Other(77));
    }

    #[test]
    fn timespec_conversion() {
        assert_eq!(system_time_from_timespec(&libc::timespec { tv_sec: 0, tv_nsec: 0 }), None);
        let t = system_time_from_timespec(&libc::timespec { tv_sec: 10, tv_nsec: 5 }).unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap(), Duration::new(10, 5));
    }

    #[test]
    fn flags_match_header() {
        assert_eq!(SnapCreateFlags::SKIP_QUIESCE.bits(), 1);
        assert_eq!(SnapCreateFlags::IGNORE_QUIESCE_ERROR.bits(), 2);
        assert_eq!(SnapRemoveFlags::FORCE.bits(), 3);
        assert!(SnapRemoveFlags::FORCE.contains(SnapRemoveFlags::FLATTEN));
    }
}
