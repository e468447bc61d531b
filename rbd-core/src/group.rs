//! Consistency groups: create/remove/rename/list groups, add and remove member images, and
//! group snapshots (one crash-consistent snapshot across every member) with rollback.
//!
//! ```no_run
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! use rbd_core::{Group, Pool, Progress};
//! let pool = Pool::open(&cluster, "volumes")?;
//! pool.group_create("vm-1")?;
//! let group = Group::new(&pool, "vm-1");
//! group.add_image(&pool, "vm-1-root")?;
//! group.add_image(&pool, "vm-1-data")?;
//! group.snap_create("nightly")?; // a GROUP-namespace snapshot on each member
//! group.snap_rollback("nightly", &mut Progress::none())?;
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! Errors follow the crate-wide table: a missing group or member is [`ErrorKind::NotFound`]
//! and a taken name is [`ErrorKind::Exists`] (python-rbd's `ObjectNotFound`/`ObjectExists`).

use std::ffi::c_char;

use librbd_sys as rbd_raw;

use crate::call::{c_try, try_call};
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::pool::Pool;
use crate::progress::{run_with_progress, Progress};
use crate::snapshot::SnapCreateFlags;
use crate::util::{cstr, from_c, grow_buf_inout, split_nul};

/// Membership state of an image in a group (`rbd_group_image_state_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupImageState {
    /// Fully added.
    Attached,
    /// An add or remove was interrupted; repeat it.
    Incomplete,
    /// A state this crate does not know.
    Other(u32),
}

/// A member image of a group (`rbd_group_image_info_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupImage {
    /// Id of the pool holding the image.
    pub pool: i64,
    /// Image name.
    pub name: String,
    /// Membership state.
    pub state: GroupImageState,
}

/// State of a group snapshot (`rbd_group_snap_state_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupSnapState {
    /// Creation was interrupted; remove it.
    Incomplete,
    /// Every member snapshot exists.
    Complete,
    /// A state this crate does not know.
    Other(u32),
}

/// A group snapshot (`rbd_group_snap_info_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnap {
    /// Group snapshot name.
    pub name: String,
    /// State.
    pub state: GroupSnapState,
}

/// Opens pool `id` in the namespace of `like` (group members share the group's namespace).
/// Wraps `rados_pool_reverse_lookup`.
fn pool_by_id(like: &Pool, id: i64) -> Result<Pool> {
    if id == like.id() {
        return Ok(like.clone());
    }
    let mut buf = vec![0 as c_char; 512];
    // SAFETY: connected cluster handle; `buf` has `buf.len()` bytes.
    try_call!(librados_sys::rados_pool_reverse_lookup(like.cluster().raw(), id, buf.as_mut_ptr(), buf.len()); "rados_pool_reverse_lookup", id)?;
    // SAFETY: librados wrote a NUL-terminated pool name into `buf`.
    let name = unsafe { from_c(buf.as_ptr()) };
    Pool::open_ns(like.cluster(), &name, like.namespace())
}

/// `pool[/namespace]/group` for errors.
fn group_target(pool: &Pool, group: &str) -> String {
    pool.spec(group, None)
}

impl Pool {
    /// Creates group `name`. Wraps `rbd_group_create`.
    ///
    /// # Errors
    /// [`ErrorKind::Exists`], [`ErrorKind::PermissionDenied`].
    pub fn group_create(&self, name: &str) -> Result<()> {
        let _s = tracing::debug_span!("group_create", pool = %self.name(), group = name).entered();
        let c = cstr("rbd_group_create", "group", name)?;
        // SAFETY: valid ioctx and C string.
        try_call!(rbd_raw::rbd_group_create(self.raw(), c.as_ptr()); "rbd_group_create", group_target(self, name))?;
        Ok(())
    }

    /// Removes group `name` together with its group snapshots, detaching every member (the
    /// images stay). Pacific returns success for a group that does not exist.
    /// Wraps `rbd_group_remove`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn group_remove(&self, name: &str) -> Result<()> {
        let _s = tracing::debug_span!("group_remove", pool = %self.name(), group = name).entered();
        let c = cstr("rbd_group_remove", "group", name)?;
        // SAFETY: valid ioctx and C string.
        try_call!(rbd_raw::rbd_group_remove(self.raw(), c.as_ptr()); "rbd_group_remove", group_target(self, name))?;
        Ok(())
    }

    /// Renames group `from` to `to`. Wraps `rbd_group_rename`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Exists`].
    pub fn group_rename(&self, from: &str, to: &str) -> Result<()> {
        let _s = tracing::debug_span!("group_rename", pool = %self.name(), group = from, to).entered();
        let a = cstr("rbd_group_rename", "group", from)?;
        let b = cstr("rbd_group_rename", "group", to)?;
        // SAFETY: valid ioctx and C strings.
        try_call!(rbd_raw::rbd_group_rename(self.raw(), a.as_ptr(), b.as_ptr()); "rbd_group_rename", format!("{} -> {to}", group_target(self, from)))?;
        Ok(())
    }

    /// Group names in this pool (namespace), sorted. Wraps `rbd_group_list`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn group_list(&self) -> Result<Vec<String>> {
        let buf = grow_buf_inout::<c_char>(1024, |p, len| {
            // SAFETY: `p` points to `*len` zeroed bytes; librbd answers -ERANGE with the size it
            // needs and otherwise writes NUL-separated names.
            i64::from(unsafe { rbd_raw::rbd_group_list(self.raw(), p, len) })
        })
        .map_err(|r| Error::from_errno(r, "rbd_group_list", Some(self.name().to_string())))?;
        let bytes: Vec<u8> = buf.iter().map(|c| *c as u8).collect();
        let mut v = split_nul(&bytes);
        v.sort();
        Ok(v)
    }
}

/// A group, by pool and name. Creating the handle does no I/O (there is no C open); each
/// method names the group in its C call. Cheap to clone; `Send + Sync` like [`Pool`].
#[derive(Debug, Clone)]
pub struct Group {
    pool: Pool,
    name: String,
}

impl Group {
    /// A handle for group `name` in `pool` (which must exist for most calls; see
    /// [`Pool::group_create`]).
    pub fn new(pool: &Pool, name: &str) -> Group {
        Group { pool: pool.clone(), name: name.to_string() }
    }

    /// The group name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool holding the group.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn target(&self) -> String {
        group_target(&self.pool, &self.name)
    }

    fn c_name(&self, op: &'static str) -> Result<std::ffi::CString> {
        cstr(op, "group", &self.name)
    }

    /// Adds image `image` of `image_pool` (may be another pool) to the group.
    /// Wraps `rbd_group_image_add`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a missing group or image, [`ErrorKind::Exists`] when the
    /// image is already in a group.
    pub fn add_image(&self, image_pool: &Pool, image: &str) -> Result<()> {
        let _s = tracing::debug_span!("group_add_image", pool = %self.pool.name(), group = %self.name, image_pool = %image_pool.name(), image)
            .entered();
        let g = self.c_name("rbd_group_image_add")?;
        let i = cstr("rbd_group_image_add", "image", image)?;
        // SAFETY: both ioctxs are open; C strings are valid.
        try_call!(rbd_raw::rbd_group_image_add(self.pool.raw(), g.as_ptr(), image_pool.raw(), i.as_ptr()); "rbd_group_image_add", format!("{} + {}", self.target(), image_pool.spec(image, None)))?;
        Ok(())
    }

    /// Removes image `image` of `image_pool` from the group. Wraps `rbd_group_image_remove`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the group or image is missing or the image is not a member.
    pub fn remove_image(&self, image_pool: &Pool, image: &str) -> Result<()> {
        let _s = tracing::debug_span!("group_remove_image", pool = %self.pool.name(), group = %self.name, image_pool = %image_pool.name(), image)
            .entered();
        let g = self.c_name("rbd_group_image_remove")?;
        let i = cstr("rbd_group_image_remove", "image", image)?;
        // SAFETY: both ioctxs are open; C strings are valid.
        try_call!(rbd_raw::rbd_group_image_remove(self.pool.raw(), g.as_ptr(), image_pool.raw(), i.as_ptr()); "rbd_group_image_remove", format!("{} - {}", self.target(), image_pool.spec(image, None)))?;
        Ok(())
    }

    /// Member images. Pacific reports an empty list for a group that does not exist.
    /// Wraps `rbd_group_image_list` / `rbd_group_image_list_cleanup`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn images(&self) -> Result<Vec<GroupImage>> {
        let g = self.c_name("rbd_group_image_list")?;
        let size = std::mem::size_of::<rbd_raw::rbd_group_image_info_t>();
        let mut n = 16usize;
        for _ in 0..32 {
            let mut v: Vec<rbd_raw::rbd_group_image_info_t> = vec![Default::default(); n];
            let mut got = n;
            // SAFETY: `v` has `n` entries of the size we pass; `got` is in/out.
            let r =
                unsafe { rbd_raw::rbd_group_image_list(self.pool.raw(), g.as_ptr(), v.as_mut_ptr(), size, &mut got) };
            if r == -libc::ERANGE && got > n {
                n = got;
                continue;
            }
            c_try(r, "rbd_group_image_list", || Some(self.target()))?;
            let got = got.min(n);
            let out = v[..got]
                .iter()
                .map(|e| GroupImage {
                    pool: e.pool,
                    // SAFETY: librbd strdup'ed the name.
                    name: unsafe { from_c(e.name) },
                    state: match e.state {
                        rbd_raw::rbd_group_image_state_t_RBD_GROUP_IMAGE_STATE_ATTACHED => GroupImageState::Attached,
                        rbd_raw::rbd_group_image_state_t_RBD_GROUP_IMAGE_STATE_INCOMPLETE => {
                            GroupImageState::Incomplete
                        }
                        other => GroupImageState::Other(other),
                    },
                })
                .collect();
            // SAFETY: frees the `got` entries librbd filled, once.
            unsafe { rbd_raw::rbd_group_image_list_cleanup(v.as_mut_ptr(), size, got) };
            return Ok(out);
        }
        Err(Error::new(ErrorKind::OutOfRange, "rbd_group_image_list", "list kept growing").with_target(self.target()))
    }

    /// Takes group snapshot `snap` **without quiesce notifications**
    /// (`RBD_SNAP_CREATE_SKIP_QUIESCE`, see [`Image::snap_create`]): every member gets a
    /// [`SnapNamespace::Group`](crate::SnapNamespace::Group) snapshot, crash-consistent
    /// across the group. Wraps `rbd_group_snap_create2`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a missing group, [`ErrorKind::Exists`] when the name is
    /// taken, a member's snapshot error (for example [`ErrorKind::QuotaExceeded`]).
    pub fn snap_create(&self, snap: &str) -> Result<()> {
        self.snap_create_with_flags(snap, SnapCreateFlags::SKIP_QUIESCE)
    }

    /// Takes group snapshot `snap` with explicit quiesce flags. Wraps `rbd_group_snap_create2`.
    ///
    /// # Errors
    /// As [`Group::snap_create`].
    pub fn snap_create_with_flags(&self, snap: &str, flags: SnapCreateFlags) -> Result<()> {
        let _s = tracing::debug_span!("group_snap_create", pool = %self.pool.name(), group = %self.name, snap, flags = flags.0)
            .entered();
        let g = self.c_name("rbd_group_snap_create2")?;
        let s = cstr("rbd_group_snap_create2", "snapshot", snap)?;
        // SAFETY: valid ioctx and C strings.
        try_call!(rbd_raw::rbd_group_snap_create2(self.pool.raw(), g.as_ptr(), s.as_ptr(), flags.0); "rbd_group_snap_create2", format!("{}@{snap}", self.target()))
            .map_err(|e| self.explain_snap_create_enoent(e))?;
        Ok(())
    }

    /// Pacific 16.2.15 reports ENOENT (not EDQUOT) when a member cannot take its snapshot
    /// because it reached its snapshot limit. When the group exists and a member is at its
    /// limit, say so as [`ErrorKind::QuotaExceeded`].
    fn explain_snap_create_enoent(&self, e: Error) -> Error {
        if e.kind() != ErrorKind::NotFound || !self.pool.group_list().is_ok_and(|l| l.contains(&self.name)) {
            return e;
        }
        for m in self.images().unwrap_or_default() {
            let Ok(pool) = pool_by_id(&self.pool, m.pool) else { continue };
            let Ok(img) = Image::open_read_only(&pool, &m.name) else { continue };
            let (Ok(Some(limit)), Ok(snaps)) = (img.snap_limit(), img.snapshots()) else { continue };
            if snaps.len() as u64 >= limit {
                return Error::new(
                    ErrorKind::QuotaExceeded,
                    e.op(),
                    format!("member {} reached its snapshot limit {limit} (librbd reported ENOENT)", img.spec()),
                )
                .with_target(e.target().unwrap_or_default().to_string())
                .with_source(e);
            }
        }
        e
    }

    /// Removes group snapshot `snap` and its member snapshots. Wraps `rbd_group_snap_remove`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`].
    pub fn snap_remove(&self, snap: &str) -> Result<()> {
        let _s =
            tracing::debug_span!("group_snap_remove", pool = %self.pool.name(), group = %self.name, snap).entered();
        let g = self.c_name("rbd_group_snap_remove")?;
        let s = cstr("rbd_group_snap_remove", "snapshot", snap)?;
        // SAFETY: valid ioctx and C strings.
        try_call!(rbd_raw::rbd_group_snap_remove(self.pool.raw(), g.as_ptr(), s.as_ptr()); "rbd_group_snap_remove", format!("{}@{snap}", self.target()))?;
        Ok(())
    }

    /// Renames group snapshot `from` to `to`. Wraps `rbd_group_snap_rename`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Exists`].
    pub fn snap_rename(&self, from: &str, to: &str) -> Result<()> {
        let _s =
            tracing::debug_span!("group_snap_rename", pool = %self.pool.name(), group = %self.name, snap = from, to)
                .entered();
        let g = self.c_name("rbd_group_snap_rename")?;
        let a = cstr("rbd_group_snap_rename", "snapshot", from)?;
        let b = cstr("rbd_group_snap_rename", "snapshot", to)?;
        // SAFETY: valid ioctx and C strings.
        try_call!(rbd_raw::rbd_group_snap_rename(self.pool.raw(), g.as_ptr(), a.as_ptr(), b.as_ptr()); "rbd_group_snap_rename", format!("{}@{from} -> {to}", self.target()))?;
        Ok(())
    }

    /// Group snapshots. Pacific reports an empty list for a group that does not exist.
    /// Wraps `rbd_group_snap_list` / `rbd_group_snap_list_cleanup`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn snaps(&self) -> Result<Vec<GroupSnap>> {
        let g = self.c_name("rbd_group_snap_list")?;
        let size = std::mem::size_of::<rbd_raw::rbd_group_snap_info_t>();
        let mut n = 16usize;
        for _ in 0..32 {
            let mut v: Vec<rbd_raw::rbd_group_snap_info_t> = vec![Default::default(); n];
            let mut got = n;
            // SAFETY: `v` has `n` entries of the size we pass; `got` is in/out.
            let r =
                unsafe { rbd_raw::rbd_group_snap_list(self.pool.raw(), g.as_ptr(), v.as_mut_ptr(), size, &mut got) };
            if r == -libc::ERANGE && got > n {
                n = got;
                continue;
            }
            c_try(r, "rbd_group_snap_list", || Some(self.target()))?;
            let got = got.min(n);
            let out = v[..got]
                .iter()
                .map(|e| GroupSnap {
                    // SAFETY: librbd strdup'ed the name.
                    name: unsafe { from_c(e.name) },
                    state: match e.state {
                        rbd_raw::rbd_group_snap_state_t_RBD_GROUP_SNAP_STATE_COMPLETE => GroupSnapState::Complete,
                        rbd_raw::rbd_group_snap_state_t_RBD_GROUP_SNAP_STATE_INCOMPLETE => GroupSnapState::Incomplete,
                        other => GroupSnapState::Other(other),
                    },
                })
                .collect();
            // SAFETY: frees the `got` entries librbd filled, once.
            unsafe { rbd_raw::rbd_group_snap_list_cleanup(v.as_mut_ptr(), size, got) };
            return Ok(out);
        }
        Err(Error::new(ErrorKind::OutOfRange, "rbd_group_snap_list", "list kept growing").with_target(self.target()))
    }

    /// Rolls every member back to group snapshot `snap`, reporting progress; the callback may
    /// cancel (members may then be partly rolled back). Wraps
    /// `rbd_group_snap_rollback_with_progress`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::ReadOnly`] / [`ErrorKind::Busy`] when a member is
    /// locked by another client, [`ErrorKind::Cancelled`].
    pub fn snap_rollback(&self, snap: &str, progress: &mut Progress<'_>) -> Result<()> {
        let _s =
            tracing::debug_span!("group_snap_rollback", pool = %self.pool.name(), group = %self.name, snap).entered();
        let g = self.c_name("rbd_group_snap_rollback_with_progress")?;
        let s = cstr("rbd_group_snap_rollback_with_progress", "snapshot", snap)?;
        run_with_progress(
            progress,
            "rbd_group_snap_rollback_with_progress",
            || format!("{}@{snap}", self.target()),
            |cb, arg| {
                // SAFETY: valid ioctx and C strings; cb/arg come from run_with_progress.
                unsafe {
                    rbd_raw::rbd_group_snap_rollback_with_progress(self.pool.raw(), g.as_ptr(), s.as_ptr(), cb, arg)
                }
            },
        )?;
        Ok(())
    }
}

impl Image {
    /// The group this image belongs to, as (pool id, group name), or `None`.
    /// Wraps `rbd_get_group` / `rbd_group_info_cleanup`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn group(&self) -> Result<Option<(i64, String)>> {
        let mut info = rbd_raw::rbd_group_info_t::default();
        let size = std::mem::size_of::<rbd_raw::rbd_group_info_t>();
        // SAFETY: valid handle; `info` is a struct of the size we pass.
        try_call!(rbd_raw::rbd_get_group(self.raw(), &mut info, size); "rbd_get_group", self.spec())?;
        // SAFETY: librbd filled `name` (strdup'ed, possibly empty).
        let name = unsafe { from_c(info.name) };
        let pool = info.pool;
        // SAFETY: frees the name librbd allocated, once.
        unsafe { rbd_raw::rbd_group_info_cleanup(&mut info, size) };
        Ok((pool >= 0 && !name.is_empty()).then_some((pool, name)))
    }
}
