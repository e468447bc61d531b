//! Nova (compute) recipes: boot an instance disk from a Glance image, snapshot an instance
//! into Glance, delete an instance's disks, and the resize snapshot.
//!
//! ```no_run
//! use rbd_core::recipes::location::Location;
//! use rbd_core::recipes::nova::{self, BootDisk, InstanceSnapshot};
//! # let cluster = rbd_core::Cluster::shared(None, "cinder")?;
//! let vms = rbd_core::Pool::open(&cluster, "vms")?;
//! let image: Location = "rbd://29e2ab17-de19-431f-b24f-3a31ece959a1/images/0f5e2a8b/snap".parse()?;
//! assert!(nova::is_cloneable(&cluster, &image.to_string(), "raw")?.is_cloneable());
//! let uuid = "cbf44290-f142-41f8-86e1-d63c902b38ed";
//! let disk = BootDisk::new(&image, uuid).size(20 << 30).run(&vms)?;
//! assert_eq!(disk.name, format!("{uuid}_disk"));
//!
//! let snap = InstanceSnapshot::new("images", "6a1b6bd4-5e1c-4c8b-8f5a-2f8f7e0c1d2e")
//!     .run(&vms, &disk.name, &mut rbd_core::Progress::none())?;
//! println!("new image at {}", snap.location);
//!
//! let report = nova::delete_instance_disks(&vms, uuid, &nova::RetryPolicy::default())?;
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! # The recipes (the `rbd` commands of the seed, §3.2-3.4)
//!
//! **Boot** (`nova.boot`, steps [`BOOT_STEPS`]): `rbd clone images/<image>@snap
//! vms/<uuid>_disk` (across pools; features from `rbd_default_features`; order and striping
//! inherited from the parent; clone v2 when the parent snapshot is not protected) → `rbd
//! resize` to the flavor size (grow only; a size smaller than the image is rejected before
//! anything is created). A failed resize removes the clone.
//!
//! **Snapshot** (`nova.snapshot`, steps [`SNAPSHOT_STEPS`], Nova's `direct_snapshot`):
//! `rbd snap create vms/<disk>@<tmp>` and `rbd snap protect`, where `<tmp>` is a uuid4 in hex
//! (32 lower-case hex digits, no dashes: the name Nova uses, so leftovers are recognisable by
//! that shape on an instance disk) → an intent marker naming `images/<new id>` on the disk
//! (librbd copies image metadata into clones, so the clone is born carrying it) →
//! `rbd clone vms/<disk>@<tmp> images/<new id>`, marked half-made with the provenance key
//! [`crate::recipes::provenance::KEY`] (recipe `nova.snapshot`; the disk's intent marker is
//! cleared) → `rbd flatten images/<new id>` through the
//! [`crate::recipes::flatten::FlattenGate`] → `rbd snap unprotect` and `rbd snap rm` of
//! `<tmp>` → `rbd snap create images/<new id>@snap` and `rbd snap protect` → clear the mark.
//! Unlike Nova, a failure at **any** step (also after the clone) removes the half-made image and
//! the temporary snapshot.
//!
//! **Delete** ([`delete_instance_disks`]): removes every `<uuid>_*` image of the pool (first its
//! `nova-resize` snapshot, if any), retrying images that are busy (a crashed client's watch
//! lasts about 30 s) with a bounded backoff, and reports per image.
//!
//! **Resize**: [`resize_snapshot`] takes the `nova-resize` snapshot before a resize,
//! [`revert_resize`] rolls back to it and removes it, [`confirm_resize`] removes it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::layering::clone_image;
use crate::options::{CloneFormat, Features, ImageOptions};
use crate::pool::Pool;
use crate::progress::Progress;
use crate::recipes::flatten::{default_gate, FlattenGate};
use crate::recipes::glance::{
    configured_features, remove_image_if_exists, remove_snap_if_exists, unprotect_if_protected, unprotect_tolerant,
    SNAP_NAME,
};
use crate::recipes::location::Location;
use crate::recipes::provenance::Marker;
use crate::recipes::saga::Saga;

/// The snapshot Nova takes before a resize (`RESIZE_SNAPSHOT_NAME`).
pub const RESIZE_SNAP: &str = "nova-resize";

/// The default disk name of an instance's root disk.
pub const DEFAULT_DISK: &str = "disk";

/// Step names of the boot recipe, in order; failpoints are `nova.boot.<step>`.
pub const BOOT_STEPS: [&str; 2] = ["clone", "resize"];

/// Step names of the snapshot recipe, in order; failpoints are `nova.snapshot.<step>`.
pub const SNAPSHOT_STEPS: [&str; 10] = [
    "create_temp_snap",
    "protect_temp_snap",
    "mark_disk",
    "clone",
    "mark",
    "flatten",
    "remove_temp_snap",
    "create_snap",
    "protect_snap",
    "unmark",
];

/// Removes the provenance marker from `pool/image` when both exist.
fn clear_marker_if_exists(pool: &Pool, image: &str) -> Result<()> {
    match Image::open(pool, image) {
        Ok(img) => Marker::clear(&img),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why an image location cannot be cloned (see [`is_cloneable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotCloneable {
    /// The URL is not a well-formed `rbd://` location (the parse error).
    BadLocation(String),
    /// The legacy `rbd://<image>` form has no fsid, pool or snapshot to clone from.
    Legacy,
    /// The image lives on another Ceph cluster.
    OtherCluster {
        /// The fsid in the location.
        location: String,
        /// This cluster's fsid.
        cluster: String,
    },
    /// The image is not `raw` (only raw images can back a disk directly).
    NotRaw(String),
    /// `image@snap` could not be opened for reading.
    Unreadable {
        /// The error kind (for example [`ErrorKind::NotFound`], [`ErrorKind::PermissionDenied`]).
        kind: ErrorKind,
        /// The error text.
        message: String,
    },
}

impl std::fmt::Display for NotCloneable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotCloneable::BadLocation(m) => write!(f, "bad location: {m}"),
            NotCloneable::Legacy => write!(f, "legacy location without fsid, pool and snapshot"),
            NotCloneable::OtherCluster { location, cluster } => {
                write!(f, "image is on cluster {location}, not {cluster}")
            }
            NotCloneable::NotRaw(fmt) => write!(f, "disk format {fmt:?} is not raw"),
            NotCloneable::Unreadable { message, .. } => write!(f, "image snapshot not readable: {message}"),
        }
    }
}

/// The answer of [`is_cloneable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cloneability {
    /// The location can be cloned; here it is parsed.
    Cloneable(Location),
    /// It cannot, and why.
    NotCloneable(NotCloneable),
}

impl Cloneability {
    /// True for [`Cloneability::Cloneable`].
    pub fn is_cloneable(&self) -> bool {
        matches!(self, Cloneability::Cloneable(_))
    }
}

/// Nova's `is_cloneable`: can a disk be cloned from this Glance location? True when the URL is
/// a well-formed four-part `rbd://` location, its fsid is this cluster's, `disk_format` is
/// `raw`, and `image@snap` can be opened read-only. Opens nothing else and changes nothing.
///
/// Wraps `rados_cluster_fsid` and `rbd_open_read_only`.
///
/// # Errors
/// Only when the cluster fsid cannot be read; every reason the image is unusable is a
/// [`Cloneability::NotCloneable`].
pub fn is_cloneable(cluster: &Cluster, location: &str, disk_format: &str) -> Result<Cloneability> {
    let _span = tracing::debug_span!("nova.is_cloneable", location, disk_format).entered();
    let no = |why| Ok(Cloneability::NotCloneable(why));
    let loc = match Location::parse(location) {
        Ok(l) => l,
        Err(e) => return no(NotCloneable::BadLocation(e.to_string())),
    };
    let (Some(fsid), Some(pool), Some(snap)) = (&loc.fsid, &loc.pool, &loc.snap) else {
        return no(NotCloneable::Legacy);
    };
    let ours = cluster.fsid()?;
    if !fsid.eq_ignore_ascii_case(&ours) {
        return no(NotCloneable::OtherCluster { location: fsid.clone(), cluster: ours });
    }
    if disk_format != "raw" {
        return no(NotCloneable::NotRaw(disk_format.to_string()));
    }
    match Pool::open(cluster, pool).and_then(|p| Image::open_at_snap(&p, &loc.image, snap)) {
        Ok(_) => Ok(Cloneability::Cloneable(loc)),
        Err(e) => no(NotCloneable::Unreadable { kind: e.kind(), message: e.to_string() }),
    }
}

/// The result of [`BootDisk::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootedDisk {
    /// The pool of the disk.
    pub pool: String,
    /// `<instance uuid>_<disk name>`.
    pub name: String,
    /// The parent, `pool/image@snap`.
    pub parent: String,
    /// The disk size in bytes.
    pub size: u64,
}

/// Nova's boot from image: clone the Glance image into an instance disk and grow it.
/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct BootDisk {
    location: Location,
    instance: String,
    disk: String,
    size: Option<u64>,
    features: Option<Features>,
}

impl BootDisk {
    /// Boots instance `instance_uuid`'s root disk (`<uuid>_disk`) from `location`.
    pub fn new(location: &Location, instance_uuid: &str) -> BootDisk {
        BootDisk {
            location: location.clone(),
            instance: instance_uuid.to_string(),
            disk: DEFAULT_DISK.to_string(),
            size: None,
            features: None,
        }
    }

    /// The disk name after `<uuid>_` (default `disk`; also `disk.local`, `disk.eph0`, ...).
    pub fn disk_name(&mut self, name: &str) -> &mut Self {
        self.disk = name.to_string();
        self
    }

    /// The flavor disk size; the disk grows to it (never shrinks). Default: the image size.
    pub fn size(&mut self, bytes: u64) -> &mut Self {
        self.size = Some(bytes);
        self
    }

    /// Features of the disk (default: `rbd_default_features`, or layering).
    pub fn features(&mut self, features: Features) -> &mut Self {
        self.features = Some(features);
        self
    }

    /// Clones the image into `pool` and grows it.
    ///
    /// Wraps `rbd_open_read_only` (once per image snapshot and process: a snapshot's size never changes),
    /// `rbd_clone3` and `rbd_resize2`.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`] before anything is created: a malformed instance uuid
    ///   or disk name, a legacy location, a location on another cluster, or a size smaller
    ///   than the image.
    /// - [`ErrorKind::NotFound`] when the image or its snapshot is missing;
    ///   [`ErrorKind::Exists`] when the disk exists (it is left alone);
    ///   [`ErrorKind::PermissionDenied`].
    pub fn run(&self, pool: &Pool) -> Result<BootedDisk> {
        let name = format!("{}_{}", self.instance, self.disk);
        let _span =
            tracing::info_span!("nova.boot", location = %self.location, pool = %pool.name(), image = %name).entered();
        validate_uuid(&self.instance)?;
        validate_disk_name(&self.disk)?;
        let (src_pool, snap) = source(pool.cluster(), &self.location, "nova.boot")?;
        let image = self.location.image.as_str();
        let SnapFacts { size: parent_size, protected } = snap_facts(&src_pool, image, snap)?;
        let size = self.size.unwrap_or(parent_size);
        if size < parent_size {
            return Err(Error::invalid(
                "nova.boot",
                format!("disk size {size} is smaller than the image ({parent_size} bytes)"),
            )
            .with_target(self.location.spec()));
        }
        let mut opts = ImageOptions::new();
        opts.features(self.features.unwrap_or_else(|| configured_features(pool.cluster())));
        if !protected {
            opts.clone_format(CloneFormat::V2);
        }

        let mut s = Saga::new("nova.boot");
        s.step(
            "clone",
            || match clone_image(&src_pool, image, snap, pool, &name, &opts) {
                // Unprotected since its facts were read: format 1 needs protection, 2 does not.
                Err(e) if protected && e.kind() == ErrorKind::InvalidArgument => {
                    clone_image(&src_pool, image, snap, pool, &name, opts.clone().clone_format(CloneFormat::V2))
                }
                r => r,
            },
            || remove_image_if_exists(pool, &name),
        )?;
        s.check("resize", || if size > parent_size { Image::open(pool, &name)?.resize(size, false) } else { Ok(()) })?;
        s.commit()?;
        Ok(BootedDisk {
            pool: pool.name().to_string(),
            name,
            parent: format!("{}/{image}@{snap}", src_pool.name()),
            size,
        })
    }
}

/// What a boot needs to know about the image snapshot it clones: its size and whether it is
/// protected (which decides the clone format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SnapFacts {
    size: u64,
    protected: bool,
}

/// The [`SnapFacts`] of `pool/image@snap`, read once per process.
///
/// Opening the parent costs more round trips than anything else in a boot apart from the clone
/// itself (4 ms locally, ~70 ms at 5 ms RTT), and a snapshot's size never changes, so every
/// later boot from the same Glance image skips it. Glance image ids are UUIDs that are never
/// reused; an image deleted and re-uploaded under the same name would be seen with its old
/// size (the cache holds at most 4096 snapshots). If the snapshot was unprotected since, the
/// clone is retried in format 2.
fn snap_facts(pool: &Pool, image: &str, snap: &str) -> Result<SnapFacts> {
    type Key = (u64, i64, String, String, String);
    static CACHE: OnceLock<Mutex<HashMap<Key, SnapFacts>>> = OnceLock::new();
    let key = (pool.cluster().instance_id(), pool.id(), pool.namespace().to_string(), image.into(), snap.into());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(f) = cache.lock().get(&key) {
        return Ok(*f);
    }
    let parent = Image::open_at_snap(pool, image, snap)?;
    let facts = SnapFacts { size: parent.size()?, protected: parent.snap_is_protected(snap)? };
    let mut c = cache.lock();
    if c.len() >= 4096 {
        c.clear();
    }
    c.insert(key, facts);
    Ok(facts)
}

/// [`BootDisk`] in one call: clones `location` to `pool/<instance_uuid>_<disk_name>` and grows
/// it to `size` (default: the image size).
///
/// # Errors
/// As [`BootDisk::run`].
pub fn boot_disk(
    location: &Location,
    pool: &Pool,
    instance_uuid: &str,
    disk_name: &str,
    size: Option<u64>,
) -> Result<BootedDisk> {
    let mut b = BootDisk::new(location, instance_uuid);
    b.disk_name(disk_name);
    if let Some(size) = size {
        b.size(size);
    }
    b.run(pool)
}

/// [`InstanceSnapshot`] in one call: snapshots disk `pool/disk` into
/// `glance_pool/new_image_id` through the default flatten gate.
///
/// # Errors
/// As [`InstanceSnapshot::run`].
pub fn snapshot_instance(
    pool: &Pool,
    disk: &str,
    glance_pool: &str,
    new_image_id: &str,
    progress: &mut Progress<'_>,
) -> Result<SnapshotImage> {
    InstanceSnapshot::new(glance_pool, new_image_id).run(pool, disk, progress)
}

/// The result of [`InstanceSnapshot::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotImage {
    /// `rbd://<fsid>/<glance pool>/<new image id>/snap`.
    pub location: Location,
    /// The image size in bytes.
    pub size: u64,
    /// The temporary snapshot that was taken on the disk (and removed again).
    pub temp_snap: String,
}

/// Nova's direct snapshot of an instance disk into a new Glance image. See the
/// [module docs](self).
#[derive(Clone)]
pub struct InstanceSnapshot {
    glance_pool: String,
    image_id: String,
    gate: Option<Arc<dyn FlattenGate>>,
    features: Option<Features>,
}

impl std::fmt::Debug for InstanceSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSnapshot")
            .field("glance_pool", &self.glance_pool)
            .field("image_id", &self.image_id)
            .finish()
    }
}

impl InstanceSnapshot {
    /// Snapshots into `glance_pool/new_image_id`.
    pub fn new(glance_pool: &str, new_image_id: &str) -> InstanceSnapshot {
        InstanceSnapshot {
            glance_pool: glance_pool.to_string(),
            image_id: new_image_id.to_string(),
            gate: None,
            features: None,
        }
    }

    /// The flatten gate (default: [`default_gate`]).
    pub fn gate(&mut self, gate: Arc<dyn FlattenGate>) -> &mut Self {
        self.gate = Some(gate);
        self
    }

    /// Features of the new image (default: `rbd_default_features`, or layering).
    pub fn features(&mut self, features: Features) -> &mut Self {
        self.features = Some(features);
        self
    }

    /// Snapshots disk `pool/disk` into the new image; `progress` reports the flatten and may
    /// cancel (which undoes everything).
    ///
    /// Wraps `rbd_snap_create2`, `rbd_snap_protect`, `rbd_clone3`, `rbd_metadata_set`,
    /// `rbd_flatten_with_progress` (through the gate), `rbd_snap_unprotect`,
    /// `rbd_snap_remove2` and `rbd_metadata_remove`.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`] for a bad disk or image name (nothing changed).
    /// - [`ErrorKind::NotFound`] when the disk or the Glance pool does not exist;
    ///   [`ErrorKind::Exists`] when the new image exists (left alone);
    ///   [`ErrorKind::Cancelled`]; errors of any step.
    ///
    /// On every error the temporary snapshot and the half-made image are gone again.
    pub fn run(&self, pool: &Pool, disk: &str, progress: &mut Progress<'_>) -> Result<SnapshotImage> {
        let image_id = self.image_id.as_str();
        let _span = tracing::info_span!("nova.snapshot", pool = %pool.name(), image = disk,
            glance_pool = %self.glance_pool, new_image = image_id)
        .entered();
        Pool::validate_image_name(disk)?;
        Pool::validate_image_name(image_id)?;
        let glance = &Pool::open(pool.cluster(), &self.glance_pool)?;
        let fsid = pool.cluster().fsid()?;
        let tmp = uuid::Uuid::new_v4().simple().to_string();
        let tmp = tmp.as_str();
        let gate = self.gate.clone().unwrap_or_else(default_gate);
        let mut opts = ImageOptions::new();
        opts.features(self.features.unwrap_or_else(|| configured_features(pool.cluster())));

        let mut s = Saga::new("nova.snapshot");
        s.step(
            "create_temp_snap",
            || Image::open(pool, disk)?.snap_create(tmp),
            || remove_snap_if_exists(pool, disk, tmp),
        )?;
        s.step(
            "protect_temp_snap",
            || Image::open(pool, disk)?.snap_protect(tmp),
            || unprotect_if_protected(pool, disk, tmp),
        )?;
        // The clone must never exist unmarked: librbd copies image metadata into a new clone, so
        // an intent marker naming the clone, written on the disk first, is born on the clone.
        let intent = Marker::new("nova.snapshot", &format!("{}/{image_id}", glance.name()), "clone");
        s.step("mark_disk", || intent.apply(&Image::open(pool, disk)?), || clear_marker_if_exists(pool, disk))?;
        s.step(
            "clone",
            || clone_image(pool, disk, tmp, glance, image_id, &opts),
            || remove_image_if_exists(glance, image_id),
        )?;
        s.check("mark", || {
            Marker::new("nova.snapshot", image_id, "clone").apply(&Image::open(glance, image_id)?)?;
            clear_marker_if_exists(pool, disk)
        })?;
        s.check("flatten", || gate.flatten(&Image::open(glance, image_id)?, progress))?;
        s.check("remove_temp_snap", || {
            let img = Image::open(pool, disk)?;
            unprotect_tolerant(&img, tmp)?;
            img.snap_remove(tmp)
        })?;
        s.step(
            "create_snap",
            || Image::open(glance, image_id)?.snap_create(SNAP_NAME),
            || remove_snap_if_exists(glance, image_id, SNAP_NAME),
        )?;
        s.step(
            "protect_snap",
            || Image::open(glance, image_id)?.snap_protect(SNAP_NAME),
            || unprotect_if_protected(glance, image_id, SNAP_NAME),
        )?;
        let size = s.check("unmark", || {
            let img = Image::open(glance, image_id)?;
            Marker::clear(&img)?;
            img.size()
        })?;
        s.commit()?;
        Ok(SnapshotImage {
            location: Location::new(&fsid, glance.name(), image_id, SNAP_NAME),
            size,
            temp_snap: tmp.to_string(),
        })
    }
}

/// How [`delete_instance_disks`] retries a busy image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Remove attempts per image (at least 1).
    pub attempts: u32,
    /// The wait after the first busy attempt; doubles after each one.
    pub initial: Duration,
    /// The longest wait between attempts.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 12 attempts, waits 1 s, 2 s, 4 s, then 5 s: about 48 s in all, longer than the 30 s a
    /// crashed client's watch lasts.
    fn default() -> RetryPolicy {
        RetryPolicy { attempts: 12, initial: Duration::from_secs(1), max: Duration::from_secs(5) }
    }
}

/// What happened to one disk in [`delete_instance_disks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOutcome {
    /// Removed.
    Removed,
    /// It was already gone when its turn came.
    NotFound,
    /// Still busy (watchers) after every attempt.
    Busy,
    /// Another error (for example other snapshots than `nova-resize`, or permissions).
    Error {
        /// The error kind.
        kind: ErrorKind,
        /// The error text.
        message: String,
    },
}

/// One disk of [`delete_instance_disks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDeletion {
    /// The image name.
    pub name: String,
    /// What happened.
    pub outcome: DiskOutcome,
    /// Remove attempts made.
    pub attempts: u32,
    /// True when a `nova-resize` snapshot was removed first.
    pub removed_resize_snap: bool,
}

/// Removes every `<instance_uuid>_*` image in `pool`, each after removing its `nova-resize`
/// snapshot (if any), retrying busy images per `retry`. Nothing else is touched: no flatten,
/// no trash, no other snapshots.
///
/// Wraps `rbd_list2`, `rbd_snap_remove2` and `rbd_remove_with_progress`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] when `instance_uuid` is not a UUID (a short prefix could
/// match other instances' disks); errors listing the pool. Per-image failures are reported in
/// the result, not as an error.
pub fn delete_instance_disks(pool: &Pool, instance_uuid: &str, retry: &RetryPolicy) -> Result<Vec<DiskDeletion>> {
    let _span = tracing::info_span!("nova.delete_disks", pool = %pool.name(), instance = instance_uuid).entered();
    validate_uuid(instance_uuid)?;
    let prefix = format!("{instance_uuid}_");
    let names: Vec<String> = pool.image_names()?.into_iter().filter(|n| n.starts_with(&prefix)).collect();
    Ok(names.into_iter().map(|name| delete_disk(pool, name, retry)).collect())
}

fn delete_disk(pool: &Pool, name: String, retry: &RetryPolicy) -> DiskDeletion {
    let _span = tracing::debug_span!("nova.delete_disk", pool = %pool.name(), image = %name).entered();
    let mut d = DiskDeletion { name, outcome: DiskOutcome::Removed, attempts: 0, removed_resize_snap: false };
    let error = |e: Error| DiskOutcome::Error { kind: e.kind(), message: e.to_string() };
    match remove_resize_snap(pool, &d.name) {
        Ok(removed) => d.removed_resize_snap = removed,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            d.outcome = DiskOutcome::NotFound;
            return d;
        }
        Err(e) => {
            d.outcome = error(e);
            return d;
        }
    }
    let mut wait = retry.initial;
    loop {
        d.attempts += 1;
        match pool.remove_image(&d.name) {
            Ok(()) => d.outcome = DiskOutcome::Removed,
            Err(e) if e.kind() == ErrorKind::NotFound => d.outcome = DiskOutcome::NotFound,
            Err(e) if e.kind() == ErrorKind::Busy && d.attempts < retry.attempts.max(1) => {
                tracing::info!(image = %d.name, attempt = d.attempts, wait_ms = wait.as_millis() as u64,
                    "disk is busy (watchers); retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(retry.max);
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Busy => d.outcome = DiskOutcome::Busy,
            Err(e) => d.outcome = error(e),
        }
        return d;
    }
}

/// Removes `nova-resize` from `pool/name` if present (unprotecting it first); true when removed.
fn remove_resize_snap(pool: &Pool, name: &str) -> Result<bool> {
    let img = Image::open(pool, name)?;
    if !img.snap_exists(RESIZE_SNAP)? {
        return Ok(false);
    }
    unprotect_tolerant(&img, RESIZE_SNAP)?;
    img.snap_remove(RESIZE_SNAP)?;
    Ok(true)
}

/// Takes the `nova-resize` snapshot of disk `pool/disk` before a resize. Wraps
/// `rbd_snap_create2`.
///
/// # Errors
/// [`ErrorKind::Exists`] when a `nova-resize` snapshot is already there (an unfinished
/// resize); [`ErrorKind::NotFound`] when the disk does not exist.
pub fn resize_snapshot(pool: &Pool, disk: &str) -> Result<()> {
    let _span = tracing::info_span!("nova.resize_snapshot", pool = %pool.name(), image = disk).entered();
    let mut s = Saga::new("nova.resize_snapshot");
    s.step(
        "create_snap",
        || Image::open(pool, disk)?.snap_create(RESIZE_SNAP),
        || remove_snap_if_exists(pool, disk, RESIZE_SNAP),
    )?;
    s.commit()
}

/// Reverts a resize: rolls disk `pool/disk` back to `nova-resize` (data and size) and removes
/// the snapshot. Wraps `rbd_snap_rollback_with_progress` and `rbd_snap_remove2`.
///
/// # Errors
/// [`ErrorKind::NotFound`] when the disk or the snapshot does not exist (nothing changed);
/// [`ErrorKind::ReadOnly`] when another client holds the disk's exclusive lock.
pub fn revert_resize(pool: &Pool, disk: &str, progress: &mut Progress<'_>) -> Result<()> {
    let _span = tracing::info_span!("nova.revert_resize", pool = %pool.name(), image = disk).entered();
    let img = Image::open(pool, disk)?;
    let mut s = Saga::new("nova.revert_resize");
    s.check("rollback", || img.snap_rollback_with_progress(RESIZE_SNAP, progress))?;
    s.check("remove_snap", || img.snap_remove(RESIZE_SNAP))?;
    s.commit()
}

/// Confirms a resize: removes the `nova-resize` snapshot of disk `pool/disk`. Returns false
/// when there was none (Nova only warns then). Wraps `rbd_snap_remove2`.
///
/// # Errors
/// [`ErrorKind::NotFound`] when the disk does not exist.
pub fn confirm_resize(pool: &Pool, disk: &str) -> Result<bool> {
    let _span = tracing::info_span!("nova.confirm_resize", pool = %pool.name(), image = disk).entered();
    let img = Image::open(pool, disk)?;
    match img.snap_remove(RESIZE_SNAP) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The source pool and snapshot of a four-part location on this cluster.
fn source<'l>(cluster: &Cluster, location: &'l Location, op: &'static str) -> Result<(Pool, &'l str)> {
    let (Some(fsid), Some(pool), Some(snap)) = (&location.fsid, &location.pool, &location.snap) else {
        return Err(Error::invalid(op, format!("location {location} has no fsid, pool and snapshot")));
    };
    let ours = cluster.fsid()?;
    if !fsid.eq_ignore_ascii_case(&ours) {
        return Err(Error::invalid(op, format!("location {location} is on cluster {fsid}, not {ours}")));
    }
    Ok((Pool::open(cluster, pool)?, snap.as_str()))
}

/// Instance uuids must be real UUIDs: they are used as a name prefix to find disks.
fn validate_uuid(uuid: &str) -> Result<()> {
    let ok = matches!(uuid.len(), 32 | 36) && uuid::Uuid::try_parse(uuid).is_ok();
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("nova", format!("instance uuid {uuid:?} is not a UUID")))
    }
}

fn validate_disk_name(disk: &str) -> Result<()> {
    Pool::validate_image_name(disk).map_err(|_| Error::invalid("nova", format!("invalid disk name {disk:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_validation() {
        assert!(validate_uuid("cbf44290-f142-41f8-86e1-d63c902b38ed").is_ok());
        assert!(validate_uuid("cbf44290f14241f886e1d63c902b38ed").is_ok());
        for bad in [
            "",
            "cbf",
            "cbf44290-f142-41f8-86e1",
            "{cbf44290-f142-41f8-86e1-d63c902b38ed}",
            "x/y",
            "zzz44290-f142-41f8-86e1-d63c902b38ed",
        ] {
            assert_eq!(validate_uuid(bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad}");
        }
        assert!(validate_disk_name("disk.local").is_ok());
        assert!(validate_disk_name("a/b").is_err());
        assert!(validate_disk_name("").is_err());
    }

    #[test]
    fn default_retry_policy_outlasts_a_stale_watch() {
        let p = RetryPolicy::default();
        let mut wait = p.initial;
        let mut total = Duration::ZERO;
        for _ in 1..p.attempts {
            total += wait;
            wait = (wait * 2).min(p.max);
        }
        assert!(total > Duration::from_secs(30), "{total:?}");
        assert!(total < Duration::from_secs(60), "{total:?}");
    }

    #[test]
    fn not_cloneable_display() {
        assert_eq!(NotCloneable::NotRaw("qcow2".into()).to_string(), "disk format \"qcow2\" is not raw");
        assert!(!Cloneability::NotCloneable(NotCloneable::Legacy).is_cloneable());
        assert!(Cloneability::Cloneable(Location::legacy("x")).is_cloneable());
    }
}
