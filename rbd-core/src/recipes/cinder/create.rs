//! Volume creation: blank, from a volume snapshot, from a Glance image, from another volume.

use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::layering::clone_image;
use crate::options::{CloneFormat, ImageOptions};
use crate::pool::Pool;
use crate::progress::Progress;
use crate::recipes::flatten::FlattenGate;
use crate::recipes::location::Location;
use crate::recipes::saga::Saga;

use super::{
    clone_snap_name, drop_snapshot, gate_or_default, remove_if_exists, snapshot_name, validate_id, validate_size,
    volume_info, volume_name, Volume, CINDER_ORDER,
};

/// Sparse size for full copies: zero runs of 64 KiB or more are not written.
const COPY_SPARSE_SIZE: usize = 64 << 10;

/// How [`VolumeFromVolume`] counts a volume's clone depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DepthRule {
    /// Every ancestor counts (clones of snapshots and of Glance images too), so
    /// `max_clone_depth` bounds every chain ([`Image::clone_depth`]).
    #[default]
    AllAncestors,
    /// Cinder's `_get_clone_depth`: a parent counts only when the clone's parent snapshot is
    /// `<clone name>.clone_snap`, i.e. only volume-to-volume clones; the walk stops at the
    /// first other parent.
    CinderCloneSnapOnly,
}

/// The clone depth of `image` under `rule`: 0 for a non-clone.
///
/// # Errors
/// [`ErrorKind::PermissionDenied`] / [`ErrorKind::NotFound`] when an ancestor is not
/// readable, [`ErrorKind::OutOfRange`] for a chain deeper than 1024.
pub fn clone_depth(image: &Image, rule: DepthRule) -> Result<u32> {
    if rule == DepthRule::AllAncestors {
        return image.clone_depth();
    }
    let mut depth = 0u32;
    let mut child = image.name().to_string();
    let mut next = image.parent()?;
    while let Some(p) = next {
        if p.snap != clone_snap_name(&child) {
            break;
        }
        depth += 1;
        if depth > 1024 {
            return Err(Error::new(ErrorKind::OutOfRange, "clone_depth", "parent chain deeper than 1024 (cycle?)")
                .with_target(image.spec()));
        }
        let pool = Pool::open_ns(image.pool().cluster(), &p.pool, &p.pool_namespace)?;
        let mut parent = Image::open_by_id(&pool, &p.image_id, true)?;
        parent.set_snap_by_id(Some(p.snap_id))?;
        next = parent.parent()?;
        child = p.image;
    }
    Ok(depth)
}

/// Creates a blank volume `volume-<id>` of `size` bytes (Cinder's `create_volume`: order 22,
/// the cluster's default features). Wraps `rbd_create4`.
///
/// Failpoints: `cinder.create.{create,describe,commit}`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for a bad id or a zero size, [`ErrorKind::Exists`] when the
/// volume exists, [`ErrorKind::PermissionDenied`] without write caps.
pub fn create(pool: &Pool, volume_id: &str, size: u64) -> Result<Volume> {
    const OP: &str = "cinder.create";
    validate_id(OP, "volume id", volume_id)?;
    validate_size(OP, size)?;
    let name = volume_name(volume_id);
    let _span = tracing::info_span!("cinder.create", pool = %pool.name(), volume = %name, size).entered();
    let mut s = Saga::new(OP);
    s.step(
        "create",
        || pool.create_image(&name, size, ImageOptions::new().order(CINDER_ORDER)),
        || remove_if_exists(pool, &name),
    )?;
    let v = s.check("describe", || volume_info(pool, volume_id))?;
    s.commit()?;
    Ok(v)
}

/// Checks that `size` can hold `source_size` (volumes never shrink) and that `name` is free.
fn check_target(op: &'static str, pool: &Pool, name: &str, size: u64, source_size: u64) -> Result<()> {
    if size < source_size {
        return Err(Error::invalid(op, format!("size {size} is smaller than the source ({source_size} bytes)")));
    }
    if pool.image_exists(name)? {
        return Err(Error::new(ErrorKind::Exists, op, "the volume already exists").with_target(pool.spec(name, None)));
    }
    Ok(())
}

/// Grows `pool/name` to `size` when it is smaller.
fn grow(pool: &Pool, name: &str, size: u64) -> Result<()> {
    let img = Image::open(pool, name)?;
    if img.size()? < size {
        img.resize(size, false)?;
    }
    Ok(())
}

/// A new volume cloned from a volume snapshot, `volume-<src>@snapshot-<sid>` (Cinder's
/// `create_volume_from_snapshot`): clone, optionally flatten (`rbd_flatten_volume_from_snapshot`),
/// grow to the requested size.
///
/// Failpoints: `cinder.create_from_snapshot.{inspect,clone,flatten,resize,describe,commit}`.
///
/// ```no_run
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// # let pool = rbd_core::Pool::open(&cluster, "volumes")?;
/// use rbd_core::recipes::cinder::VolumeFromSnapshot;
/// let v = VolumeFromSnapshot::new("src", "snap1", "new", 2 << 30).flatten(true).run(&pool, &mut rbd_core::Progress::none())?;
/// assert!(v.parent.is_none());
/// # Ok::<(), rbd_core::Error>(())
/// ```
#[derive(Clone)]
pub struct VolumeFromSnapshot {
    source_volume_id: String,
    snapshot_id: String,
    volume_id: String,
    size: u64,
    flatten: bool,
    clone_format: CloneFormat,
    gate: Option<Arc<dyn FlattenGate>>,
}

impl std::fmt::Debug for VolumeFromSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeFromSnapshot")
            .field("source_volume_id", &self.source_volume_id)
            .field("snapshot_id", &self.snapshot_id)
            .field("volume_id", &self.volume_id)
            .field("size", &self.size)
            .field("flatten", &self.flatten)
            .field("clone_format", &self.clone_format)
            .field("gate", &self.gate.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl VolumeFromSnapshot {
    /// Clone `volume-<source_volume_id>@snapshot-<snapshot_id>` into `volume-<volume_id>` of
    /// `size` bytes (at least the snapshot's size).
    pub fn new(source_volume_id: &str, snapshot_id: &str, volume_id: &str, size: u64) -> VolumeFromSnapshot {
        VolumeFromSnapshot {
            source_volume_id: source_volume_id.into(),
            snapshot_id: snapshot_id.into(),
            volume_id: volume_id.into(),
            size,
            flatten: false,
            clone_format: CloneFormat::V2,
            gate: None,
        }
    }

    /// Flatten the new volume (default false).
    pub fn flatten(&mut self, yes: bool) -> &mut Self {
        self.flatten = yes;
        self
    }

    /// Clone format (default [`CloneFormat::V2`]; v1 needs the snapshot protected, which
    /// [`create_snapshot`](super::create_snapshot) does).
    pub fn clone_format(&mut self, f: CloneFormat) -> &mut Self {
        self.clone_format = f;
        self
    }

    /// Flatten through `gate` instead of the process-wide default.
    pub fn gate(&mut self, gate: Arc<dyn FlattenGate>) -> &mut Self {
        self.gate = Some(gate);
        self
    }

    /// Runs the recipe; `progress` reports the flatten and may cancel it (which undoes).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad ids or a size below the snapshot's (nothing
    /// changed), [`ErrorKind::NotFound`] when the snapshot is missing, [`ErrorKind::Exists`]
    /// when the volume exists, [`ErrorKind::Cancelled`], and clone/flatten/resize errors (the
    /// new volume is removed).
    pub fn run(&self, pool: &Pool, progress: &mut Progress<'_>) -> Result<Volume> {
        const OP: &str = "cinder.create_from_snapshot";
        validate_id(OP, "source volume id", &self.source_volume_id)?;
        validate_id(OP, "snapshot id", &self.snapshot_id)?;
        validate_id(OP, "volume id", &self.volume_id)?;
        validate_size(OP, self.size)?;
        let src = volume_name(&self.source_volume_id);
        let snap = snapshot_name(&self.snapshot_id);
        let name = volume_name(&self.volume_id);
        let _span = tracing::info_span!("cinder.create_from_snapshot", pool = %pool.name(), image = %src, snap = %snap,
            volume = %name, size = self.size, flatten = self.flatten)
        .entered();
        let mut opts = ImageOptions::new();
        opts.order(CINDER_ORDER).clone_format(self.clone_format);

        let mut s = Saga::new(OP);
        s.check("inspect", || {
            let size = Image::open_at_snap(pool, &src, &snap)?.size()?;
            check_target(OP, pool, &name, self.size, size)
        })?;
        s.step("clone", || clone_image(pool, &src, &snap, pool, &name, &opts), || remove_if_exists(pool, &name))?;
        if self.flatten {
            s.check("flatten", || gate_or_default(&self.gate).flatten(&Image::open(pool, &name)?, progress))?;
        }
        s.check("resize", || grow(pool, &name, self.size))?;
        let mut v = s.check("describe", || volume_info(pool, &self.volume_id))?;
        s.commit()?;
        v.flattened = self.flatten;
        Ok(v)
    }
}

/// [`VolumeFromSnapshot`] with defaults (clone v2, the default flatten gate, no progress).
///
/// # Errors
/// As [`VolumeFromSnapshot::run`].
pub fn create_from_snapshot(
    pool: &Pool,
    source_volume_id: &str,
    snapshot_id: &str,
    volume_id: &str,
    size: u64,
    flatten: bool,
) -> Result<Volume> {
    VolumeFromSnapshot::new(source_volume_id, snapshot_id, volume_id, size)
        .flatten(flatten)
        .run(pool, &mut Progress::none())
}

/// A Glance image snapshot to clone from: `pool/image@snap` (the last three parts of a
/// `rbd://<fsid>/<pool>/<image>/<snap>` location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSnapRef {
    /// The cluster fsid the location names, when known; checked against the cluster.
    pub fsid: Option<String>,
    /// Pool (Glance's `images`).
    pub pool: String,
    /// Image name (the Glance image id).
    pub image: String,
    /// Snapshot name (Glance's `snap`).
    pub snap: String,
}

impl ImageSnapRef {
    /// `pool/image@snap` without an fsid check.
    pub fn new(pool: &str, image: &str, snap: &str) -> ImageSnapRef {
        ImageSnapRef { fsid: None, pool: pool.into(), image: image.into(), snap: snap.into() }
    }

    /// From a four-part Glance location (Cinder's `_parse_location`: the legacy one-part form
    /// is not cloneable).
    ///
    /// ```
    /// use rbd_core::recipes::{cinder::ImageSnapRef, location::Location};
    /// let loc = Location::parse("rbd://fsid/images/c0ffee/snap")?;
    /// assert_eq!(ImageSnapRef::from_location(&loc)?.image, "c0ffee");
    /// assert!(ImageSnapRef::from_location(&Location::parse("rbd://c0ffee")?).is_err());
    /// # Ok::<(), rbd_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for the legacy form.
    pub fn from_location(loc: &Location) -> Result<ImageSnapRef> {
        match (&loc.fsid, &loc.pool, &loc.snap) {
            (Some(fsid), Some(pool), Some(snap)) => Ok(ImageSnapRef {
                fsid: Some(fsid.clone()),
                pool: pool.clone(),
                image: loc.image.clone(),
                snap: snap.clone(),
            }),
            _ => Err(Error::invalid(
                "cinder.create_from_image",
                format!("location {loc} is not cloneable (no pool/snapshot)"),
            )),
        }
    }

    fn validate(&self, op: &'static str) -> Result<()> {
        for (what, v) in [("pool", &self.pool), ("image", &self.image), ("snapshot", &self.snap)] {
            if v.is_empty() || v.contains(['/', '@', '\0']) {
                return Err(Error::invalid(op, format!("invalid Glance {what} {v:?}")));
            }
        }
        Ok(())
    }
}

/// A new volume cloned across pools from a Glance image snapshot (Cinder's `clone_image` for
/// a cloneable `rbd://` location): clone, grow to the requested size. The object size is
/// Cinder's 4 MiB, raised to fit the image's stripe unit (Cinder bug 1931004).
///
/// Failpoints: `cinder.create_from_image.{inspect,clone,resize,describe,commit}`.
#[derive(Debug, Clone)]
pub struct VolumeFromImage {
    source: ImageSnapRef,
    volume_id: String,
    size: u64,
    clone_format: CloneFormat,
}

impl VolumeFromImage {
    /// Clone `source` into `volume-<volume_id>` of `size` bytes (at least the image's size).
    pub fn new(source: ImageSnapRef, volume_id: &str, size: u64) -> VolumeFromImage {
        VolumeFromImage { source, volume_id: volume_id.into(), size, clone_format: CloneFormat::V2 }
    }

    /// Clone format (default [`CloneFormat::V2`]; v1 needs Glance's protected `snap`).
    pub fn clone_format(&mut self, f: CloneFormat) -> &mut Self {
        self.clone_format = f;
        self
    }

    /// Runs the recipe into `volumes` (the image pool is opened on the same connection).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad names, a size below the image's, or a location
    /// of another cluster (nothing changed), [`ErrorKind::NotFound`] when the image or
    /// snapshot is missing, [`ErrorKind::Exists`], [`ErrorKind::PermissionDenied`] without
    /// read caps on the image pool, clone/resize errors (the new volume is removed).
    pub fn run(&self, volumes: &Pool) -> Result<Volume> {
        const OP: &str = "cinder.create_from_image";
        self.source.validate(OP)?;
        validate_id(OP, "volume id", &self.volume_id)?;
        validate_size(OP, self.size)?;
        let name = volume_name(&self.volume_id);
        let src = &self.source;
        let _span = tracing::info_span!("cinder.create_from_image", pool = %src.pool, image = %src.image,
            snap = %src.snap, volume_pool = %volumes.name(), volume = %name, size = self.size)
        .entered();
        if let Some(fsid) = &src.fsid {
            let ours = volumes.cluster().fsid()?;
            if !fsid.eq_ignore_ascii_case(&ours) {
                return Err(Error::invalid(OP, format!("location fsid {fsid} is not this cluster's ({ours})")));
            }
        }
        let mut opts = ImageOptions::new();
        opts.order(CINDER_ORDER).clone_format(self.clone_format);

        let mut s = Saga::new(OP);
        let images = s.check("inspect", || {
            let images = Pool::open(volumes.cluster(), &src.pool)?;
            let size = Image::open_at_snap(&images, &src.image, &src.snap)?.size()?;
            check_target(OP, volumes, &name, self.size, size)?;
            Ok(images)
        })?;
        s.step(
            "clone",
            || clone_image(&images, &src.image, &src.snap, volumes, &name, &opts),
            || remove_if_exists(volumes, &name),
        )?;
        s.check("resize", || grow(volumes, &name, self.size))?;
        let v = s.check("describe", || volume_info(volumes, &self.volume_id))?;
        s.commit()?;
        Ok(v)
    }
}

/// [`VolumeFromImage`] from a Glance location `rbd://<fsid>/<pool>/<image>/<snap>`, with
/// defaults (clone v2).
///
/// # Errors
/// As [`ImageSnapRef::from_location`] and [`VolumeFromImage::run`].
pub fn create_from_image(volumes: &Pool, location: &Location, volume_id: &str, size: u64) -> Result<Volume> {
    VolumeFromImage::new(ImageSnapRef::from_location(location)?, volume_id, size).run(volumes)
}

/// A new volume from another volume (Cinder's `create_cloned_volume`).
///
/// With `max_clone_depth > 0`: snapshot `volume-<dst>.clone_snap` on the source (protected
/// for clone v1), clone it; when the new volume is more than `max_clone_depth` levels deep
/// (counted by [`DepthRule`]), flatten it and remove the temporary snapshot; grow to the
/// requested size. So no volume made here is ever deeper than `max_clone_depth`. With
/// `max_clone_depth = 0`: a full sparse copy of the source (no snapshot, no parent).
///
/// Failpoints: `cinder.create_from_volume.{inspect,snapshot,protect,clone,depth,flatten,
/// drop_clone_snap,copy,resize,describe,commit}` (those on the path taken).
///
/// ```no_run
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// # let pool = rbd_core::Pool::open(&cluster, "volumes")?;
/// use rbd_core::recipes::cinder::{DepthRule, VolumeFromVolume};
/// let v = VolumeFromVolume::new("src", "dst", 1 << 30)
///     .max_clone_depth(5)
///     .depth_rule(DepthRule::CinderCloneSnapOnly)
///     .run(&pool, &mut rbd_core::Progress::none())?;
/// assert!(v.depth <= 5);
/// # Ok::<(), rbd_core::Error>(())
/// ```
#[derive(Clone)]
pub struct VolumeFromVolume {
    source_volume_id: String,
    volume_id: String,
    size: u64,
    max_clone_depth: u32,
    depth_rule: DepthRule,
    clone_format: CloneFormat,
    gate: Option<Arc<dyn FlattenGate>>,
}

impl std::fmt::Debug for VolumeFromVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeFromVolume")
            .field("source_volume_id", &self.source_volume_id)
            .field("volume_id", &self.volume_id)
            .field("size", &self.size)
            .field("max_clone_depth", &self.max_clone_depth)
            .field("depth_rule", &self.depth_rule)
            .field("clone_format", &self.clone_format)
            .field("gate", &self.gate.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl VolumeFromVolume {
    /// Copy `volume-<source_volume_id>` to `volume-<volume_id>` of `size` bytes (at least the
    /// source's size). Defaults: `max_clone_depth` 5 (Cinder's `rbd_max_clone_depth`),
    /// [`DepthRule::AllAncestors`], [`CloneFormat::V2`].
    pub fn new(source_volume_id: &str, volume_id: &str, size: u64) -> VolumeFromVolume {
        VolumeFromVolume {
            source_volume_id: source_volume_id.into(),
            volume_id: volume_id.into(),
            size,
            max_clone_depth: 5,
            depth_rule: DepthRule::AllAncestors,
            clone_format: CloneFormat::V2,
            gate: None,
        }
    }

    /// The deepest a new volume may be; 0 means always a full copy.
    pub fn max_clone_depth(&mut self, depth: u32) -> &mut Self {
        self.max_clone_depth = depth;
        self
    }

    /// How depth is counted.
    pub fn depth_rule(&mut self, rule: DepthRule) -> &mut Self {
        self.depth_rule = rule;
        self
    }

    /// Clone format (default [`CloneFormat::V2`]; with v1 the temporary snapshot is protected).
    pub fn clone_format(&mut self, f: CloneFormat) -> &mut Self {
        self.clone_format = f;
        self
    }

    /// Flatten through `gate` instead of the process-wide default.
    pub fn gate(&mut self, gate: Arc<dyn FlattenGate>) -> &mut Self {
        self.gate = Some(gate);
        self
    }

    /// Runs the recipe; `progress` reports the copy or flatten and may cancel (which undoes).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad ids or a size below the source's (nothing
    /// changed), [`ErrorKind::NotFound`] when the source is missing, [`ErrorKind::Exists`]
    /// when the volume (or its `.clone_snap` on the source) exists, [`ErrorKind::Cancelled`],
    /// and snapshot/clone/flatten/copy errors (everything made is removed).
    pub fn run(&self, pool: &Pool, progress: &mut Progress<'_>) -> Result<Volume> {
        const OP: &str = "cinder.create_from_volume";
        validate_id(OP, "source volume id", &self.source_volume_id)?;
        validate_id(OP, "volume id", &self.volume_id)?;
        validate_size(OP, self.size)?;
        if self.source_volume_id == self.volume_id {
            return Err(Error::invalid(OP, "source and new volume ids are the same"));
        }
        let src = volume_name(&self.source_volume_id);
        let name = volume_name(&self.volume_id);
        let csnap = clone_snap_name(&name);
        let _span = tracing::info_span!("cinder.create_from_volume", pool = %pool.name(), image = %src, volume = %name,
            size = self.size, max_clone_depth = self.max_clone_depth)
        .entered();

        let mut s = Saga::new(OP);
        s.check("inspect", || {
            let img = Image::open_read_only(pool, &src)?;
            check_target(OP, pool, &name, self.size, img.size()?)?;
            if self.max_clone_depth > 0 && img.snap_exists(&csnap)? {
                return Err(Error::new(ErrorKind::Exists, OP, "a leftover clone snapshot exists on the source")
                    .with_target(pool.spec(&src, Some(&csnap))));
            }
            Ok(())
        })?;
        let mut flattened = false;
        if self.max_clone_depth == 0 {
            s.step(
                "copy",
                || {
                    let r = Image::open_read_only(pool, &src)?.copy_to(
                        pool,
                        &name,
                        &ImageOptions::new(),
                        COPY_SPARSE_SIZE,
                        progress,
                    );
                    if let Err(e) = &r {
                        // A failed or cancelled copy leaves a partial destination: ours.
                        if e.kind() != ErrorKind::Exists {
                            remove_if_exists(pool, &name)?;
                        }
                    }
                    r
                },
                || remove_if_exists(pool, &name),
            )?;
        } else {
            s.step("snapshot", || Image::open(pool, &src)?.snap_create(&csnap), || drop_snapshot(pool, &src, &csnap))?;
            if self.clone_format == CloneFormat::V1 {
                s.step(
                    "protect",
                    || Image::open(pool, &src)?.snap_protect(&csnap),
                    || drop_snapshot(pool, &src, &csnap),
                )?;
            }
            let mut opts = ImageOptions::new();
            opts.clone_format(self.clone_format);
            s.step("clone", || clone_image(pool, &src, &csnap, pool, &name, &opts), || remove_if_exists(pool, &name))?;
            let depth = s.check("depth", || clone_depth(&Image::open_read_only(pool, &name)?, self.depth_rule))?;
            if depth > self.max_clone_depth {
                tracing::info!(depth, max = self.max_clone_depth, "clone too deep; flattening");
                s.check("flatten", || gate_or_default(&self.gate).flatten(&Image::open(pool, &name)?, progress))?;
                s.check("drop_clone_snap", || drop_snapshot(pool, &src, &csnap))?;
                flattened = true;
            }
        }
        s.check("resize", || grow(pool, &name, self.size))?;
        let mut v = s.check("describe", || volume_info(pool, &self.volume_id))?;
        s.commit()?;
        v.flattened = flattened;
        Ok(v)
    }
}

/// [`VolumeFromVolume`] with `max_clone_depth` and otherwise defaults (all ancestors count,
/// clone v2, the default flatten gate, no progress).
///
/// # Errors
/// As [`VolumeFromVolume::run`].
pub fn create_from_volume(
    pool: &Pool,
    source_volume_id: &str,
    volume_id: &str,
    size: u64,
    max_clone_depth: u32,
) -> Result<Volume> {
    VolumeFromVolume::new(source_volume_id, volume_id, size)
        .max_clone_depth(max_clone_depth)
        .run(pool, &mut Progress::none())
}
