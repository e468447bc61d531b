//! Incremental backups of RBD volumes into a backup pool, possibly on another cluster, in
//! the on-disk layout of Cinder's Ceph backup driver (`cinder/backup/drivers/ceph.py`): either
//! side can restore or delete the other's backups. Data moves in process with
//! [`crate::transfer::Transfer`] (no `rbd export-diff | rbd import-diff` pipe, no subprocess).
//!
//! ```no_run
//! use std::path::Path;
//! use rbd_core::recipes::backup::{self, Backup, BackupKind, VolumeRef};
//! use rbd_core::{Cluster, Pool, Progress};
//! let primary = Cluster::shared(None, "cinder")?;
//! let backup_cluster = Cluster::shared(Some(Path::new("/etc/ceph/backup.conf")), "cinder-backup")?;
//! let volumes = Pool::open(&primary, "volumes")?;
//! let backups = Pool::open(&backup_cluster, "backups")?;
//! let vol = VolumeRef::cinder(&volumes, "0f5e2a8b-6a1b-4c8b-8f5a-2f8f7e0c1d2e");
//!
//! let full = Backup::new(&vol, &backups, "b1").run(&mut Progress::none())?;
//! assert_eq!(full.kind, BackupKind::Full);
//! let incr = Backup::new(&vol, &backups, "b2").parent(Some("b1")).keep_source_snapshots(Some(2))
//!     .run(&mut Progress::none())?;
//! println!("{:?}: {} bytes moved in {:?}", incr.kind, incr.bytes_moved, incr.elapsed);
//!
//! for b in backup::list_backups(&backups, vol.volume_id())? {
//!     println!("{} {} parent={:?}", b.backup_id, b.snap, b.parent);
//! }
//! let target = VolumeRef::cinder(&volumes, "new-volume-id");
//! backup::Restore::new(&backups, vol.volume_id(), "b2", &target).run(&mut Progress::none())?;
//! assert!(backup::verify(&backups, vol.volume_id(), "b2", &vol, &mut Progress::none())?.matches);
//! backup::delete_backup(&backups, vol.volume_id(), "b2", Some(&vol))?;
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! # Layout (Cinder's names, `ceph.py` `_get_backup_base_name`, `_get_new_snap_name`)
//!
//! * Source volume: `volume-<volume id>` ([`VolumeRef::cinder`]), or any image name.
//! * Backup image, in the backup pool: `volume-<volume id>.backup.<backup id>` for a full
//!   backup. An incremental backup goes to **the image that holds its parent's snapshot** (what
//!   Cinder reads from the parent's `service_metadata` `{"base": ...}`): the image of the first
//!   full backup of the chain, or the legacy `volume-<volume id>.backup.base`, which is read
//!   like any other backup image.
//! * Backup snapshot, the same name on the source volume and on the backup image:
//!   `backup.<backup id>.snap.<unix time>`, the time written as Python's `str(time.time())`
//!   (shortest round-trip decimal, e.g. `backup.b1.snap.1795329282.522451`); matched with
//!   Cinder's pattern `^backup\.([a-z0-9\-]+?)\.snap\.(.+)$` ([`parse_snap_name`]). A backup
//!   owns exactly one snapshot.
//! * Metadata: RADOS object `backup.<backup id>.meta` in the backup pool, JSON
//!   `{"version": 2, ...}` as Cinder's `BackupMetadataAPI` writes it (the caller may pass
//!   Cinder's volume metadata with [`Backup::volume_metadata`]); this module adds the key
//!   `"rbd-core"` with the chain facts (parent, image, snapshot, kind, size, source), which
//!   Cinder's restore ignores. Backups without the object (or without the key) are fine: the
//!   chain is then read from the snapshot order.
//! * Backup images get Cinder's features: layering, exclusive-lock, object-map, fast-diff
//!   (Cinder also asks for striping v2, which librbd drops with the default striping).
//!
//! # Recipes and their steps (failpoints `backup.<recipe>.<step>`)
//!
//! * [`Backup`] (`backup.create`, [`CREATE_STEPS`]): `cleanup` (leftovers of a crashed run
//!   with the same backup id: source snapshots without a backup-side counterpart, an empty
//!   `volume-<vid>.backup.<bid>`) → `create_image` (full only) or `rewind` (incremental: when the
//!   backup image's head differs from the parent snapshot, e.g. after an interrupted transfer or
//!   with a parent that is not the newest backup, it is rolled back to the parent snapshot) →
//!   `snapshot` (source) → `transfer` (the diff from the parent snapshot, or everything; the
//!   snapshot is created on the backup image **after** all data, so no half-copied backup ever
//!   looks complete) → `metadata` → commit → trimming of old source snapshots
//!   ([`Backup::keep_source_snapshots`]). Any failure undoes the steps before it: the new
//!   source snapshot is removed, a new backup image is removed.
//!   When the parent's snapshot is missing on either side the backup becomes a full one
//!   ([`BackupKind::FullForced`], never silently).
//! * [`Restore`] (`backup.restore`, [`RESTORE_STEPS`]): onto a new or empty volume, a diff
//!   transfer up to the backup snapshot; onto a volume that still has a snapshot of the chain
//!   (the source volume), a rollback to it plus the diff from it; otherwise a comparing restore
//!   that reads both sides and writes only what differs. Then the volume gets its size back.
//! * [`delete_backup`] (`backup.delete`, [`DELETE_STEPS`]): refuses (busy) while a newer
//!   incremental depends on the backup; removes the backup snapshot, the backup image once no
//!   backup snapshot remains, the metadata object, and the backup's snapshot on the source
//!   volume (which Cinder leaks).
//! * [`list_backups`] and [`verify`] only read.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::pool::Pool;
use crate::snapshot::{SnapInfo, SnapNamespace};

mod create;
mod manage;
mod restore;

pub use create::*;
pub use manage::*;
pub use restore::*;

/// The legacy backup image suffix (`volume-<vid>.backup.base`).
pub const LEGACY_BASE_SUFFIX: &str = "base";

/// The key this module adds to the metadata object's JSON.
pub const META_KEY: &str = "rbd-core";

/// A volume to back up or restore into: a pool (on any cluster), the image name and the
/// volume id the backup names are built from.
#[derive(Debug, Clone)]
pub struct VolumeRef<'a> {
    pool: &'a Pool,
    image: String,
    volume_id: String,
}

impl<'a> VolumeRef<'a> {
    /// Cinder volume `volume_id`: image `volume-<volume_id>` in `pool`.
    pub fn cinder(pool: &'a Pool, volume_id: &str) -> VolumeRef<'a> {
        VolumeRef { pool, image: volume_image_name(volume_id), volume_id: volume_id.to_string() }
    }

    /// Image `image` in `pool`; the volume id is the name without a leading `volume-` (or the
    /// whole name).
    pub fn image(pool: &'a Pool, image: &str) -> VolumeRef<'a> {
        let volume_id = image.strip_prefix("volume-").filter(|s| !s.is_empty()).unwrap_or(image);
        VolumeRef { pool, image: image.to_string(), volume_id: volume_id.to_string() }
    }

    /// Image `image` in `pool`, whose backups are named after `volume_id`.
    pub fn with_volume_id(pool: &'a Pool, image: &str, volume_id: &str) -> VolumeRef<'a> {
        VolumeRef { pool, image: image.to_string(), volume_id: volume_id.to_string() }
    }

    /// The pool.
    pub fn pool(&self) -> &'a Pool {
        self.pool
    }

    /// The image name.
    pub fn image_name(&self) -> &str {
        &self.image
    }

    /// The volume id.
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// `pool/image`.
    pub fn spec(&self) -> String {
        self.pool.spec(&self.image, None)
    }

    fn validate(&self, op: &'static str) -> Result<()> {
        Pool::validate_image_name(&self.image).map_err(|e| Error::invalid(op, e.to_string()))?;
        validate_volume_id(op, &self.volume_id)
    }
}

/// `volume-<volume_id>`: Cinder's volume image name.
pub fn volume_image_name(volume_id: &str) -> String {
    format!("volume-{volume_id}")
}

/// `volume-<volume_id>.backup.<backup_id>`: the image a full backup creates.
pub fn backup_image_name(volume_id: &str, backup_id: &str) -> String {
    format!("volume-{volume_id}.backup.{backup_id}")
}

/// `volume-<volume_id>.backup.base`: the legacy backup image (old Cinder, and Cinder's backups
/// of Cinder snapshots).
pub fn legacy_backup_image_name(volume_id: &str) -> String {
    backup_image_name(volume_id, LEGACY_BASE_SUFFIX)
}

/// `backup.<backup_id>.meta`: the metadata object.
pub fn meta_object_name(backup_id: &str) -> String {
    format!("backup.{backup_id}.meta")
}

/// `backup.<backup_id>.snap.<time>`, the time as Python's `str(time.time())` writes it (the
/// shortest decimal that reads back as the same double, always with a fraction).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use rbd_core::recipes::backup::snap_name;
/// let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_120_000);
/// assert_eq!(snap_name("b1", t), "backup.b1.snap.1700000000.12");
/// assert_eq!(snap_name("b1", UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "backup.b1.snap.1700000000.0");
/// ```
pub fn snap_name(backup_id: &str, at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let mut t = format!("{secs}");
    if !t.contains('.') {
        t.push_str(".0");
    }
    format!("backup.{backup_id}.snap.{t}")
}

/// A parsed backup snapshot name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSnapName {
    /// The backup id.
    pub backup_id: String,
    /// The time part, as written.
    pub timestamp: String,
}

impl BackupSnapName {
    /// The time part as seconds since the epoch, when it is a number.
    pub fn unix_time(&self) -> Option<f64> {
        self.timestamp.parse().ok()
    }
}

/// Parses a backup snapshot name with Cinder's pattern `^backup\.([a-z0-9\-]+?)\.snap\.(.+)$`.
///
/// ```
/// use rbd_core::recipes::backup::parse_snap_name;
/// let p = parse_snap_name("backup.03fc-c599d0.snap.1625049437.645906").unwrap();
/// assert_eq!((p.backup_id.as_str(), p.timestamp.as_str()), ("03fc-c599d0", "1625049437.645906"));
/// assert!(parse_snap_name("snapshot-1").is_none());
/// assert!(parse_snap_name("backup.Upper.snap.1").is_none());
/// ```
pub fn parse_snap_name(name: &str) -> Option<BackupSnapName> {
    let rest = name.strip_prefix("backup.")?;
    // The id cannot contain '.', so it ends at the first one.
    let (id, tail) = rest.split_once('.')?;
    let ts = tail.strip_prefix("snap.")?;
    if id.is_empty() || !id.bytes().all(is_backup_id_byte) || ts.is_empty() || ts.contains('\n') {
        return None;
    }
    Some(BackupSnapName { backup_id: id.to_string(), timestamp: ts.to_string() })
}

fn is_backup_id_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// Fails with [`ErrorKind::InvalidArgument`] unless `id` is a usable backup id: 1 to 128 of
/// `a-z 0-9 -` (Cinder's snapshot pattern only matches those; Cinder uses lower-case UUIDs).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`].
pub fn validate_backup_id(op: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(is_backup_id_byte) || id == LEGACY_BASE_SUFFIX {
        return Err(Error::invalid(
            op,
            format!("invalid backup id {id:?}: use 1 to 128 of a-z, 0-9 and '-' (a lower-case UUID)"),
        ));
    }
    Ok(())
}

/// Fails with [`ErrorKind::InvalidArgument`] unless `id` is a usable volume id: 1 to 128 of
/// `A-Z a-z 0-9 _ -` (no dots, so that `volume-<vid>.backup.` is an unambiguous prefix).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`].
pub fn validate_volume_id(op: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Error::invalid(
            op,
            format!("invalid volume id {id:?}: use 1 to 128 of A-Z, a-z, 0-9, '_' and '-' (a UUID)"),
        ));
    }
    Ok(())
}

/// One backup snapshot on an image.
#[derive(Debug, Clone)]
pub(crate) struct TaggedSnap {
    pub(crate) info: SnapInfo,
    pub(crate) parsed: BackupSnapName,
}

/// The backup snapshots of `image`, in snapshot-id (creation) order.
pub(crate) fn backup_snaps(image: &Image) -> Result<Vec<TaggedSnap>> {
    let mut v: Vec<TaggedSnap> = image
        .snapshots()?
        .into_iter()
        .filter(|s| s.namespace == SnapNamespace::User)
        .filter_map(|s| parse_snap_name(&s.name).map(|parsed| TaggedSnap { info: s, parsed }))
        .collect();
    v.sort_by_key(|s| s.info.id);
    Ok(v)
}

/// The backup images of volume `volume_id` in `backups` (`volume-<vid>.backup.*`), sorted.
pub(crate) fn backup_images(backups: &Pool, volume_id: &str) -> Result<Vec<String>> {
    let prefix = format!("volume-{volume_id}.backup.");
    Ok(backups.image_names()?.into_iter().filter(|n| n.starts_with(&prefix) && n.len() > prefix.len()).collect())
}

/// Where a backup lives.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) image: String,
    pub(crate) snap: SnapInfo,
}

/// Finds backup `backup_id` of volume `volume_id`: the backup image holding its snapshot.
pub(crate) fn locate(backups: &Pool, volume_id: &str, backup_id: &str) -> Result<Option<Located>> {
    let mut found: Vec<Located> = Vec::new();
    for name in backup_images(backups, volume_id)? {
        let img = match Image::open_read_only(backups, &name) {
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            r => r?,
        };
        for s in backup_snaps(&img)? {
            if s.parsed.backup_id == backup_id {
                found.push(Located { image: name.clone(), snap: s.info });
            }
        }
    }
    if found.len() > 1 {
        let names: Vec<String> = found.iter().map(|l| format!("{}@{}", l.image, l.snap.name)).collect();
        return Err(Error::new(
            ErrorKind::Other,
            "backup",
            format!("backup {backup_id} should own one snapshot but has {}: {}", found.len(), names.join(", ")),
        )
        .with_target(backups.name().to_string()));
    }
    Ok(found.pop())
}

/// [`locate`], or [`ErrorKind::NotFound`].
pub(crate) fn locate_or_not_found(
    op: &'static str,
    backups: &Pool,
    volume_id: &str,
    backup_id: &str,
) -> Result<Located> {
    locate(backups, volume_id, backup_id)?.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            op,
            format!(
                "backup {backup_id} of volume {volume_id} has no snapshot on any volume-{volume_id}.backup.* image"
            ),
        )
        .with_target(backups.name().to_string())
    })
}

/// The metadata object's JSON, or `None` when there is none (or it is not JSON).
pub(crate) fn read_meta(backups: &Pool, backup_id: &str) -> Result<Option<Value>> {
    match backups.object_read_full(&meta_object_name(backup_id)) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `oid`; already gone is fine.
pub(crate) fn remove_object_if_exists(pool: &Pool, oid: &str) -> Result<bool> {
    match pool.object_remove(oid) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Seconds since the epoch of `t` (0 before it).
pub(crate) fn unix_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn snap_names_round_trip() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_795_329_282_522_451_000);
        let n = snap_name("03fc-c5", t);
        assert_eq!(n, "backup.03fc-c5.snap.1795329282.522451");
        let p = parse_snap_name(&n).unwrap();
        assert_eq!(p.backup_id, "03fc-c5");
        assert_eq!(p.unix_time(), Some(1_795_329_282.522_451));
        // The seed's Python 2 names (12 significant digits) parse too.
        assert_eq!(parse_snap_name("backup.db56.snap.1511344566.67").unwrap().timestamp, "1511344566.67");
    }

    #[test]
    fn parse_follows_cinders_pattern() {
        for bad in ["backup..snap.1", "backup.a.snap.", "backup.a.snapx.1", "backup.A.snap.1", "xbackup.a.snap.1"] {
            assert!(parse_snap_name(bad).is_none(), "{bad}");
        }
        // `.+` takes everything after the first `.snap.`.
        assert_eq!(parse_snap_name("backup.a.snap.x.snap.y").unwrap().timestamp, "x.snap.y");
    }

    #[test]
    fn ids_are_validated() {
        assert!(validate_backup_id("t", "0f5e2a8b-6a1b-4c8b-8f5a-2f8f7e0c1d2e").is_ok());
        for bad in ["", "B1", "a.b", "a/b", "base"] {
            assert_eq!(validate_backup_id("t", bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad}");
        }
        assert!(validate_volume_id("t", "Vol_1-x").is_ok());
        for bad in ["", "a.b", "a@b", "a b"] {
            assert_eq!(validate_volume_id("t", bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(backup_image_name("v", "b"), "volume-v.backup.b");
        assert_eq!(legacy_backup_image_name("v"), "volume-v.backup.base");
        assert_eq!(meta_object_name("b"), "backup.b.meta");
    }
}
