//! Layering: clone (v1/v2, cross-pool), parent, children and descendants, flatten with
//! progress, and clone depth.
//!
//! ```no_run
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! use rbd_core::{clone_image, CloneFormat, Image, ImageOptions, Pool};
//! let images = Pool::open(&cluster, "images")?;
//! let volumes = Pool::open(&cluster, "volumes")?;
//! let mut opts = ImageOptions::new();
//! opts.clone_format(CloneFormat::V2); // no protected snapshot needed
//! clone_image(&images, "glance-image", "snap", &volumes, "volume-1", &opts)?;
//! let vol = Image::open(&volumes, "volume-1")?;
//! assert_eq!(vol.parent()?.map(|p| p.image), Some("glance-image".to_string()));
//! vol.flatten()?; // now independent of its parent
//! # Ok::<(), rbd_core::Error>(())
//! ```

use std::borrow::Cow;

use librbd_sys as rbd_raw;

use crate::call::c_try;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::options::{CloneFormat, ImageOptions};
use crate::pool::Pool;
use crate::progress::{run_with_progress, Progress};
use crate::snapshot::SnapNamespace;
use crate::util::{cstr, from_c, spec};

/// The parent of a clone (`rbd_get_parent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentInfo {
    /// Parent pool name.
    pub pool: String,
    /// Parent pool namespace (`""` for the default one).
    pub pool_namespace: String,
    /// Parent image name (empty if librbd could not resolve it).
    pub image: String,
    /// Parent image id.
    pub image_id: String,
    /// Parent snapshot name (generated for trash/group snapshots).
    pub snap: String,
    /// Parent snapshot id.
    pub snap_id: u64,
    /// Parent snapshot namespace ([`SnapNamespace::Trash`] once the snapshot was removed
    /// while this clone still used it).
    pub snap_namespace: SnapNamespace,
    /// True when the parent image is in the trash.
    pub trash: bool,
}

/// A clone of an image snapshot (`rbd_list_children3` / `rbd_list_descendants`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Child pool name.
    pub pool: String,
    /// Child pool namespace (`""` for the default one).
    pub pool_namespace: String,
    /// Child image name.
    pub image: String,
    /// Child image id.
    pub image_id: String,
    /// True when the child is in the trash (it still holds the parent).
    pub trash: bool,
}

/// Raises a requested object size that cannot hold the stripe unit the clone inherits.
///
/// Pacific's clone inherits the parent's stripe unit unless one is given, and rejects an
/// object size smaller than it (`validate_striping: stripe unit is not a factor of the object
/// size`, EINVAL; Cinder bug 1931004: Glance images use 8 MiB objects, Cinder asked for 4 MiB).
/// So when `opts` sets an order but no stripe unit, and `1 << order` is smaller than the
/// parent's stripe unit, the order is raised to fit it (the parent's order for unstriped
/// parents). Nothing changes when `opts` sets no order, or sets a stripe unit explicitly
/// (Pacific accepts an explicit stripe unit smaller than the parent's).
fn fit_clone_geometry<'o>(
    parent_pool: &Pool,
    parent: &str,
    snap: &str,
    opts: &'o ImageOptions,
) -> Result<Cow<'o, ImageOptions>> {
    let Some(order) = opts.get_order() else { return Ok(Cow::Borrowed(opts)) };
    if opts.get_stripe_unit().is_some() {
        return Ok(Cow::Borrowed(opts));
    }
    let Some(obj_size) = 1u64.checked_shl(u32::from(order)) else {
        return Ok(Cow::Borrowed(opts)); // out of range: let librbd reject it
    };
    let parent_su = Image::open_at_snap(parent_pool, parent, snap)?.stripe_unit()?;
    if parent_su <= obj_size || parent_su == 0 {
        return Ok(Cow::Borrowed(opts));
    }
    let raised = u8::try_from(64 - (parent_su - 1).leading_zeros()).unwrap_or(order);
    tracing::debug!(
        requested = order,
        raised,
        parent_stripe_unit = parent_su,
        "raising clone order to fit the inherited stripe unit"
    );
    let mut o = opts.clone();
    o.order(raised);
    Ok(Cow::Owned(o))
}

/// Clones `parent@snap` (a user snapshot) in `parent_pool` to `child` in `child_pool`, which
/// may be another pool or namespace. Wraps `rbd_clone3`.
///
/// * Clone format: set it with [`ImageOptions::clone_format`]. [`CloneFormat::V1`] needs a
///   protected parent snapshot; [`CloneFormat::V2`] does not (needs mimic+ clients). Unset,
///   librbd picks from `rbd_default_clone_format` (v2 only when the cluster requires mimic+).
/// * Geometry: unset options (order, stripe, features) are inherited from the parent. An
///   explicit order whose object size is smaller than the inherited stripe unit is raised to
///   fit it, because Pacific rejects that combination (see Cinder bug 1931004); an explicit
///   stripe unit is passed through unchanged.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for a v1 clone of an unprotected snapshot (the message says
/// so), bad options or a bad child name ([`Pool::validate_image_name`]),
/// [`ErrorKind::NotFound`] when the parent or snapshot is missing, [`ErrorKind::Exists`] when
/// `child` exists, [`ErrorKind::PermissionDenied`] without write
/// caps on the child pool, [`ErrorKind::Unsupported`] when the parent lacks layering.
pub fn clone_image(
    parent_pool: &Pool,
    parent: &str,
    snap: &str,
    child_pool: &Pool,
    child: &str,
    opts: &ImageOptions,
) -> Result<()> {
    let _s = tracing::debug_span!(
        "clone_image",
        pool = %parent_pool.name(),
        image = parent,
        snap,
        child_pool = %child_pool.name(),
        child
    )
    .entered();
    Pool::validate_image_name(child).map_err(|e| e.with_target(child_pool.spec(child, None)))?;
    let p = cstr("rbd_clone3", "parent image", parent)?;
    let s = cstr("rbd_clone3", "parent snapshot", snap)?;
    let c = cstr("rbd_clone3", "child image", child)?;
    let target = || format!("{} -> {}", parent_pool.spec(parent, Some(snap)), child_pool.spec(child, None));
    let opts = fit_clone_geometry(parent_pool, parent, snap, opts)?;
    let raw = opts.to_raw()?;
    // SAFETY: both ioctxs are open, the strings are NUL-terminated and `raw` is a live options
    // handle; all outlive the synchronous call.
    let r = unsafe {
        rbd_raw::rbd_clone3(parent_pool.raw(), p.as_ptr(), s.as_ptr(), child_pool.raw(), c.as_ptr(), raw.raw())
    };
    if r == -libc::EINVAL && opts.get_clone_format() != Some(CloneFormat::V2) {
        // The most common cause; say so instead of a bare EINVAL.
        let protected = Image::open_at_snap(parent_pool, parent, snap).and_then(|i| i.snap_is_protected(snap));
        if let Ok(false) = protected {
            let msg = if opts.get_clone_format() == Some(CloneFormat::V1) {
                "the parent snapshot must be protected for clone v1 (protect it with Image::snap_protect, \
                 or clone with ImageOptions::clone_format(CloneFormat::V2))"
            } else {
                "the parent snapshot is not protected, and librbd chose clone v1 (rbd_default_clone_format, or \
                 require-min-compat-client below mimic), which needs a protected snapshot; protect it or set \
                 ImageOptions::clone_format(CloneFormat::V2)"
            };
            return Err(Error::from_errno(i64::from(r), "rbd_clone3", Some(target())).with_message(msg));
        }
    }
    if r == -libc::EXDEV {
        return Err(Error::from_errno(i64::from(r), "rbd_clone3", Some(target()))
            .with_message("clone v1 cannot cross pool namespaces; use CloneFormat::V2"));
    }
    c_try(r, "rbd_clone3", || Some(target()))?;
    Ok(())
}

/// Converts and frees a list of `rbd_linked_image_spec_t` returned by librbd.
///
/// # Safety
/// The first `n` entries of `v` must have been filled by librbd and not freed yet.
unsafe fn take_linked_specs(v: &mut [rbd_raw::rbd_linked_image_spec_t], n: usize) -> Vec<ChildInfo> {
    let out = v[..n]
        .iter()
        // SAFETY: per the function contract the strings are librbd-allocated C strings or NULL.
        .map(|s| unsafe {
            ChildInfo {
                pool: from_c(s.pool_name),
                pool_namespace: from_c(s.pool_namespace),
                image: from_c(s.image_name),
                image_id: from_c(s.image_id),
                trash: s.trash,
            }
        })
        .collect();
    // SAFETY: frees exactly the `n` entries librbd filled, once.
    unsafe { rbd_raw::rbd_linked_image_spec_list_cleanup(v.as_mut_ptr(), n) };
    out
}

type LinkedListFn =
    unsafe extern "C" fn(rbd_raw::rbd_image_t, *mut rbd_raw::rbd_linked_image_spec_t, *mut usize) -> std::ffi::c_int;

fn list_linked(img: &Image, f: LinkedListFn, op: &'static str) -> Result<Vec<ChildInfo>> {
    let mut n = 16usize;
    for _ in 0..32 {
        let mut v: Vec<rbd_raw::rbd_linked_image_spec_t> = vec![Default::default(); n];
        let mut got = n;
        // SAFETY: `v` has `n` entries; `got` is in/out (capacity in, count or needed size out).
        let r = unsafe { f(img.raw(), v.as_mut_ptr(), &mut got) };
        if r == -libc::ERANGE {
            n = got.max(n * 2);
            continue;
        }
        c_try(r, op, || Some(img.spec()))?;
        let got = got.min(n);
        // SAFETY: on success librbd filled the first `got` entries.
        return Ok(unsafe { take_linked_specs(&mut v, got) });
    }
    Err(Error::new(ErrorKind::OutOfRange, op, "list kept growing").with_target(img.spec()))
}

/// The deepest parent chain [`Image::clone_depth`] follows before assuming a cycle.
const MAX_CLONE_DEPTH: u32 = 1024;

impl Image {
    /// The parent of this clone at the selected snapshot (or head), or `None` when the image
    /// is not a clone (or was flattened). Wraps `rbd_get_parent`.
    ///
    /// # Errors
    /// Errors from librbd other than ENOENT.
    pub fn parent(&self) -> Result<Option<ParentInfo>> {
        let mut img = rbd_raw::rbd_linked_image_spec_t::default();
        let mut snap = rbd_raw::rbd_snap_spec_t::default();
        // SAFETY: valid handle; both out structs are valid and zeroed.
        let r = unsafe { rbd_raw::rbd_get_parent(self.raw(), &mut img, &mut snap) };
        if r == -libc::ENOENT {
            return Ok(None);
        }
        c_try(r, "rbd_get_parent", || Some(self.spec()))?;
        // SAFETY: on success librbd filled both structs with strdup'ed strings.
        let info = unsafe {
            ParentInfo {
                pool: from_c(img.pool_name),
                pool_namespace: from_c(img.pool_namespace),
                image: from_c(img.image_name),
                image_id: from_c(img.image_id),
                snap: from_c(snap.name),
                snap_id: snap.id,
                snap_namespace: SnapNamespace::from_raw(snap.namespace_type),
                trash: img.trash,
            }
        };
        // SAFETY: frees the strings librbd allocated, once each.
        unsafe {
            rbd_raw::rbd_linked_image_spec_cleanup(&mut img);
            rbd_raw::rbd_snap_spec_cleanup(&mut snap);
        }
        Ok(Some(info))
    }

    /// Direct clones of this image: of the snapshot the handle is opened at, or — on a handle
    /// at the head — of **every** snapshot. Includes children in the trash and in other pools
    /// the client can read. Wraps `rbd_list_children3`.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] when a pool holding children is not readable.
    pub fn children(&self) -> Result<Vec<ChildInfo>> {
        let _s = tracing::debug_span!("children", pool = %self.pool().name(), image = %self.name()).entered();
        list_linked(self, rbd_raw::rbd_list_children3, "rbd_list_children3")
    }

    /// Direct clones of user snapshot `snap`, using a fresh read-only handle at that snapshot
    /// (this handle is unchanged). Wraps `rbd_open_by_id_read_only`, `rbd_snap_set` and
    /// `rbd_list_children3`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the snapshot does not exist; as [`Image::children`].
    pub fn children_of_snap(&self, snap: &str) -> Result<Vec<ChildInfo>> {
        let mut at = Image::open_by_id(self.pool(), &self.id()?, true)?;
        at.set_snap(Some(snap))?;
        at.children()
    }

    /// True when user snapshot `snap` has clones (including trashed ones).
    ///
    /// # Errors
    /// As [`Image::children_of_snap`].
    pub fn snap_children_exist(&self, snap: &str) -> Result<bool> {
        Ok(!self.children_of_snap(snap)?.is_empty())
    }

    /// Every clone below this image (children, their children, ...), of the selected
    /// snapshot or of every snapshot at the head. Wraps `rbd_list_descendants`.
    ///
    /// # Errors
    /// As [`Image::children`].
    pub fn descendants(&self) -> Result<Vec<ChildInfo>> {
        let _s = tracing::debug_span!("descendants", pool = %self.pool().name(), image = %self.name()).entered();
        list_linked(self, rbd_raw::rbd_list_descendants, "rbd_list_descendants")
    }

    /// Copies all parent data into this clone and detaches it from its parent.
    /// Wraps `rbd_flatten_with_progress`.
    ///
    /// # Errors
    /// As [`Image::flatten_with_progress`].
    pub fn flatten(&self) -> Result<()> {
        self.flatten_with_progress(&mut Progress::none())
    }

    /// Flattens, reporting progress once per object; the callback (or cancel token) may stop
    /// it, which leaves the image a clone (objects already copied stay copied).
    /// Wraps `rbd_flatten_with_progress`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when the image is not a clone, [`ErrorKind::ReadOnly`]
    /// on a read-only handle, [`ErrorKind::Cancelled`].
    pub fn flatten_with_progress(&self, progress: &mut Progress<'_>) -> Result<()> {
        let _s = tracing::debug_span!("flatten", pool = %self.pool().name(), image = %self.name()).entered();
        run_with_progress(
            progress,
            "rbd_flatten_with_progress",
            || self.spec(),
            |cb, arg| {
                // SAFETY: valid handle; cb/arg come from run_with_progress.
                unsafe { rbd_raw::rbd_flatten_with_progress(self.raw(), cb, arg) }
            },
        )?;
        Ok(())
    }

    /// How many ancestors this image has: 0 for a non-clone, 1 for a clone of a non-clone, and
    /// so on. Walks the whole chain, opening each parent read-only at its snapshot id (by
    /// image id, so trashed parents work too) in its own pool and namespace through this
    /// image's cluster connection.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] / [`ErrorKind::NotFound`] when an ancestor's pool is
    /// not readable, [`ErrorKind::OutOfRange`] for a chain deeper than 1024 (a cycle).
    pub fn clone_depth(&self) -> Result<u32> {
        let _s = tracing::debug_span!("clone_depth", pool = %self.pool().name(), image = %self.name()).entered();
        let mut depth = 0u32;
        let mut next = self.parent()?;
        while let Some(p) = next {
            depth += 1;
            if depth > MAX_CLONE_DEPTH {
                return Err(Error::new(ErrorKind::OutOfRange, "clone_depth", "parent chain deeper than 1024 (cycle?)")
                    .with_target(self.spec()));
            }
            let pool = Pool::open_ns(self.pool().cluster(), &p.pool, &p.pool_namespace)?;
            let mut img = Image::open_by_id(&pool, &p.image_id, true).map_err(|e| {
                e.with_message(format!(
                    "opening ancestor {}",
                    spec(&p.pool, &p.pool_namespace, &p.image, Some(&p.snap))
                ))
            })?;
            img.set_snap_by_id(Some(p.snap_id))?;
            next = img.parent()?;
        }
        Ok(depth)
    }
}
