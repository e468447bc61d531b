//! Cinder's RBD volume driver as typed, undoable recipes: create (blank, from a snapshot, from a
//! Glance image, from another volume), snapshots, delete, extend, revert, manage, and pool
//! capacity.
//!
//! ```no_run
//! use rbd_core::recipes::cinder::{self, DeleteOutcome, VolumeFromVolume};
//! use rbd_core::{Cluster, Pool, Progress};
//! let cluster = Cluster::shared(None, "admin")?;
//! let pool = Pool::open(&cluster, "volumes")?;
//! cinder::create(&pool, "1111", 1 << 30)?;
//! let copy = VolumeFromVolume::new("1111", "2222", 2 << 30).max_clone_depth(5).run(&pool, &mut Progress::none())?;
//! assert_eq!(copy.parent.as_deref(), Some("volumes/volume-1111@volume-2222.clone_snap"));
//! assert_eq!(cinder::delete_volume(&pool, "1111")?, DeleteOutcome::Removed); // flattens volume-2222 first
//! cinder::delete_volume(&pool, "2222")?;
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! # Names
//! Cinder's own, so existing deployments see what they expect:
//!
//! | what | name |
//! |---|---|
//! | volume | `volume-<volume id>` ([`volume_name`]) |
//! | volume snapshot | `volume-<id>@snapshot-<snapshot id>` ([`snapshot_name`]) |
//! | temporary snapshot of a volume-to-volume clone | `volume-<src>@volume-<dst>.clone_snap` on the **source** ([`clone_snap_name`]) |
//! | a deleted volume kept because clones still use it | `volume-<id>.deleted` ([`DELETED_SUFFIX`]) |
//! | backup snapshots (removed on delete) | `backup.<backup id>.snap.<timestamp>` ([`is_backup_snap`]) |
//!
//! A `.clone_snap` snapshot without clone children, and a `.deleted` volume without clone
//! children, are leftovers: these recipes never leave them behind, and a later `reconcile` may
//! remove any it finds (the names prove who made them).
//!
//! # What differs from Cinder (each a failure mode in the reference §5)
//! * Every multi-step create undoes itself on failure (Cinder leaks the `.clone_snap` and the
//!   half-made volume when the depth flatten fails).
//! * Clone depth counts **all** ancestors by default ([`DepthRule::AllAncestors`]), so chains
//!   through snapshots and Glance images are bounded too; Cinder's rule is
//!   [`DepthRule::CinderCloneSnapOnly`].
//! * Deleting a volume cleans its parent's `<volume>.clone_snap` and garbage-collects a
//!   `.deleted` parent on every path (Cinder's fast path skips both).
//! * Every flatten goes through the [`FlattenGate`]
//!   (Cinder's depth flatten bypasses its semaphore).
//! * Clone format is an explicit option ([`CloneFormat::V2`](crate::CloneFormat::V2) by default); snapshots are
//!   protected only for v1 clones (except volume snapshots, which Cinder always protects).

mod create;
mod delete;
mod ops;
mod snapshot;
mod stats;

pub use create::{clone_depth, create, create_from_image, create_from_snapshot, create_from_volume};
pub use create::{DepthRule, ImageSnapRef, VolumeFromImage, VolumeFromSnapshot, VolumeFromVolume};
pub use delete::{delete_volume, DeleteOutcome, DeleteVolume, VolumeDeletion, JOURNAL_KEY_PREFIX};
pub use ops::{extend, manage_existing};
pub use snapshot::{create_snapshot, delete_snapshot, revert_to_snapshot};
pub use snapshot::{ChildrenPolicy, DeleteSnapshot, SnapshotDeletion, VolumeSnapshot};
pub use stats::{pool_capacity, PoolCapacity};

use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::layering::ParentInfo;
use crate::pool::Pool;
use crate::recipes::flatten::{default_gate, FlattenGate};
use crate::util::spec;

/// Prefix of volume image names.
pub const VOLUME_PREFIX: &str = "volume-";
/// Prefix of volume snapshot names.
pub const SNAPSHOT_PREFIX: &str = "snapshot-";
/// Suffix of the temporary snapshot a volume-to-volume clone takes on its source.
pub const CLONE_SNAP_SUFFIX: &str = ".clone_snap";
/// Suffix of a deleted volume kept because clones still depend on it.
pub const DELETED_SUFFIX: &str = ".deleted";
/// Object order of volumes Cinder creates (`rbd_store_chunk_size` = 4 MiB).
pub const CINDER_ORDER: u8 = 22;

/// `volume-<id>`.
///
/// ```
/// assert_eq!(rbd_core::recipes::cinder::volume_name("42"), "volume-42");
/// ```
pub fn volume_name(volume_id: &str) -> String {
    format!("{VOLUME_PREFIX}{volume_id}")
}

/// `snapshot-<id>`.
///
/// ```
/// assert_eq!(rbd_core::recipes::cinder::snapshot_name("7"), "snapshot-7");
/// ```
pub fn snapshot_name(snapshot_id: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{snapshot_id}")
}

/// The temporary snapshot a clone named `dest_volume_name` uses on its source:
/// `<dest>.clone_snap`, where a `.deleted` suffix of `dest` is ignored (a renamed-deleted
/// volume keeps the snapshot it was cloned from).
///
/// ```
/// use rbd_core::recipes::cinder::clone_snap_name;
/// assert_eq!(clone_snap_name("volume-2"), "volume-2.clone_snap");
/// assert_eq!(clone_snap_name("volume-2.deleted"), "volume-2.clone_snap");
/// ```
pub fn clone_snap_name(dest_volume_name: &str) -> String {
    let base = dest_volume_name.strip_suffix(DELETED_SUFFIX).unwrap_or(dest_volume_name);
    format!("{base}{CLONE_SNAP_SUFFIX}")
}

/// True for the backup driver's source snapshots, `backup.<id>.snap.<timestamp>` (Cinder's
/// `^backup\.([a-z0-9\-]+?)\.snap\.(.+)$`), which a volume delete removes.
///
/// ```
/// use rbd_core::recipes::cinder::is_backup_snap;
/// assert!(is_backup_snap("backup.4f2a-9c.snap.1511348180.27"));
/// assert!(!is_backup_snap("backup.X.snap.1"));
/// assert!(!is_backup_snap("snapshot-1"));
/// ```
pub fn is_backup_snap(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("backup.") else { return false };
    // The id is the shortest [a-z0-9-]+ followed by ".snap." and a non-empty rest.
    for (i, _) in rest.match_indices(".snap.") {
        let id = &rest[..i];
        let tail = &rest[i + ".snap.".len()..];
        if !id.is_empty()
            && !tail.is_empty()
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return true;
        }
    }
    false
}

/// Checks a volume or snapshot id: 1 to 255 characters of `[A-Za-z0-9._-]` (Cinder uses
/// UUIDs), not ending with `.deleted` or `.clone_snap`.
pub(crate) fn validate_id(op: &'static str, what: &str, id: &str) -> Result<()> {
    let ok_chars = id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if id.is_empty() || id.len() > 255 || !ok_chars {
        return Err(Error::invalid(op, format!("invalid {what} {id:?}: expected 1-255 characters of [A-Za-z0-9._-]")));
    }
    if id.ends_with(DELETED_SUFFIX) || id.ends_with(CLONE_SNAP_SUFFIX) {
        return Err(Error::invalid(op, format!("invalid {what} {id:?}: reserved suffix")));
    }
    Ok(())
}

/// Checks that a requested volume size is not zero.
pub(crate) fn validate_size(op: &'static str, size: u64) -> Result<()> {
    if size == 0 {
        return Err(Error::invalid(op, "volume size must be greater than 0"));
    }
    Ok(())
}

/// A volume as the recipes leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Pool name.
    pub pool: String,
    /// Cinder volume id.
    pub volume_id: String,
    /// Image name (`volume-<id>`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Parent `pool/image@snap` when the volume is a clone.
    pub parent: Option<String>,
    /// Number of ancestors ([`Image::clone_depth`]).
    pub depth: u32,
    /// True when the recipe flattened the new volume.
    pub flattened: bool,
}

/// `pool/[ns/]image@snap` of a parent.
pub(crate) fn parent_spec(p: &ParentInfo) -> String {
    spec(&p.pool, &p.pool_namespace, &p.image, Some(&p.snap))
}

/// Reads volume `volume_id` in `pool` (size, parent, depth).
///
/// # Errors
/// [`ErrorKind::NotFound`] when `volume-<id>` does not exist; errors reading its ancestors.
pub fn volume_info(pool: &Pool, volume_id: &str) -> Result<Volume> {
    let name = volume_name(volume_id);
    let img = Image::open_read_only(pool, &name)?;
    Ok(Volume {
        pool: pool.name().to_string(),
        volume_id: volume_id.to_string(),
        size: img.size()?,
        parent: img.parent()?.as_ref().map(parent_spec),
        depth: img.clone_depth()?,
        flattened: false,
        name,
    })
}

/// `Ok(())` for errors of the listed kinds (an undo or cleanup that finds the work already done).
pub(crate) fn tolerate(r: Result<()>, kinds: &[ErrorKind]) -> Result<()> {
    match r {
        Err(e) if kinds.contains(&e.kind()) => Ok(()),
        other => other,
    }
}

/// Removes image `name` if it exists (undo of a create or clone).
pub(crate) fn remove_if_exists(pool: &Pool, name: &str) -> Result<()> {
    tolerate(pool.remove_image(name), &[ErrorKind::NotFound])
}

/// Unprotects (when protected) and removes snapshot `snap` of `image`; absent is fine.
pub(crate) fn drop_snapshot(pool: &Pool, image: &str, snap: &str) -> Result<()> {
    let img = match Image::open(pool, image) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    if !img.snap_exists(snap)? {
        return Ok(());
    }
    unprotect_if_protected(&img, snap)?;
    tolerate(img.snap_remove(snap), &[ErrorKind::NotFound])
}

/// Unprotects `snap` when it is protected; absent or unprotected is fine.
pub(crate) fn unprotect_if_protected(img: &Image, snap: &str) -> Result<()> {
    match img.snap_is_protected(snap) {
        Ok(true) => tolerate(img.snap_unprotect(snap), &[ErrorKind::InvalidArgument, ErrorKind::NotFound]),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The gate to flatten through: the given one or the process-wide default.
pub(crate) fn gate_or_default(gate: &Option<Arc<dyn FlattenGate>>) -> Arc<dyn FlattenGate> {
    gate.clone().unwrap_or_else(default_gate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("t", "volume id", "0b1c7a4e-2f0e-4a3a-9a43-8f7f3f1c9b11").is_ok());
        for bad in ["", "a/b", "a@b", "a b", "x.deleted", "x.clone_snap", &"a".repeat(256)] {
            let e = validate_id("t", "volume id", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        assert_eq!(validate_size("t", 0).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn backup_snap_names() {
        assert!(is_backup_snap("backup.abc-123.snap.1"));
        assert!(is_backup_snap("backup.a.snap.b.snap.c"));
        assert!(!is_backup_snap("backup..snap.1"));
        assert!(!is_backup_snap("backup.a.snap."));
        assert!(!is_backup_snap("volume-1.clone_snap"));
    }
}
