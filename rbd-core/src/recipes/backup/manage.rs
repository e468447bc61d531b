//! Listing, deleting and verifying backups, from the cluster state alone.

use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::restore::{for_each_pair, union_of_data};
use super::{
    backup_images, backup_snaps, locate_or_not_found, meta_object_name, read_meta, remove_object_if_exists,
    validate_backup_id, validate_volume_id, VolumeRef, META_KEY,
};
use crate::aio::is_all_zero;
use crate::error::{Error, ErrorKind, Result};
use crate::export::DEFAULT_IN_FLIGHT;
use crate::image::Image;
use crate::pool::Pool;
use crate::progress::Progress;
use crate::recipes::saga::Saga;
use crate::snapshot::SnapNamespace;

/// Step names of `backup.delete`, in order; failpoints are `backup.delete.<step>`.
pub const DELETE_STEPS: [&str; 4] = ["remove_snapshot", "remove_image", "remove_metadata", "remove_source_snapshot"];

/// One backup, as [`list_backups`] reads it from the backup pool.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupInfo {
    /// The backup id.
    pub backup_id: String,
    /// The volume id.
    pub volume_id: String,
    /// The backup image holding it.
    pub image: String,
    /// Its snapshot on the backup image (and on the source volume, unless trimmed).
    pub snap: String,
    /// The snapshot id on the backup image (creation order within the image).
    pub snap_id: u64,
    /// Unix time from the snapshot name (when the backup started).
    pub time: Option<f64>,
    /// The snapshot's creation time on the backup image (when the backup completed).
    pub created: Option<SystemTime>,
    /// The volume size at the backup, in bytes.
    pub size: u64,
    /// The backup it is an increment of: from the metadata object when this module wrote it,
    /// else the previous backup snapshot on the same image. `None` for a full backup.
    pub parent: Option<String>,
    /// Bytes of the extents `rbd_diff_iterate2` reports as changed since the previous snapshot
    /// on the image (for the first one: all data): an upper bound of the increment, since
    /// Pacific reports an object first written after that snapshot from the object's start.
    pub delta_bytes: u64,
    /// The metadata object's JSON, when there is one.
    pub metadata: Option<Value>,
}

impl BackupInfo {
    /// True for a full backup (the first of a chain).
    pub fn is_full(&self) -> bool {
        self.parent.is_none()
    }
}

/// Every backup of volume `volume_id` in `backups`, oldest first, with its chain link, sizes
/// and times, read from the backup images' snapshots (`volume-<vid>.backup.*`, legacy
/// `.backup.base` included) and the metadata objects. No database.
///
/// Wraps `rbd_list2`, `rbd_snap_list`, `rbd_diff_iterate2` and `rados_read`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for a bad volume id; librbd/librados errors.
pub fn list_backups(backups: &Pool, volume_id: &str) -> Result<Vec<BackupInfo>> {
    let _span = tracing::debug_span!("backup.list", backup_pool = %backups.name(), volume = volume_id).entered();
    validate_volume_id("backup.list", volume_id)?;
    list_inner(backups, volume_id, true)
}

/// [`list_backups`]; `delta_bytes` stays 0 unless `with_delta`.
fn list_inner(backups: &Pool, volume_id: &str, with_delta: bool) -> Result<Vec<BackupInfo>> {
    let mut out = Vec::new();
    for name in backup_images(backups, volume_id)? {
        let img = match Image::open_read_only(backups, &name) {
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            r => r?,
        };
        let mut prev: Option<(String, String)> = None;
        for s in backup_snaps(&img)? {
            let metadata = read_meta(backups, &s.parsed.backup_id)?;
            let recorded = metadata.as_ref().and_then(|m| m.get(META_KEY)).map(|k| k.get("parent").cloned());
            let parent = match recorded {
                Some(Some(Value::String(p))) => Some(p),
                Some(_) => None,
                None => prev.as_ref().map(|(id, _)| id.clone()),
            };
            let delta_bytes = if with_delta {
                let at = Image::open_at_snap(backups, &name, &s.info.name)?;
                at.allocated_bytes(prev.as_ref().map(|(_, snap)| snap.as_str()))?
            } else {
                0
            };
            out.push(BackupInfo {
                backup_id: s.parsed.backup_id.clone(),
                volume_id: volume_id.to_string(),
                image: name.clone(),
                snap: s.info.name.clone(),
                snap_id: s.info.id,
                time: s.parsed.unix_time(),
                created: s.info.timestamp,
                size: s.info.size,
                parent,
                delta_bytes,
                metadata,
            });
            prev = Some((s.parsed.backup_id, s.info.name));
        }
    }
    out.sort_by(|a, b| a.time.unwrap_or(0.0).total_cmp(&b.time.unwrap_or(0.0)).then(a.snap_id.cmp(&b.snap_id)));
    Ok(out)
}

/// What [`delete_backup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteResult {
    /// The backup id.
    pub backup_id: String,
    /// The backup image that held it (when found).
    pub image: Option<String>,
    /// Its snapshot on the backup image, removed.
    pub snapshot: Option<String>,
    /// The backup image was removed (no backup snapshot was left on it).
    pub image_removed: bool,
    /// The metadata object was removed.
    pub metadata_removed: bool,
    /// Its snapshots on the source volume, removed.
    pub source_snapshots_removed: Vec<String>,
    /// Things left in place, and why.
    pub warnings: Vec<String>,
}

/// Deletes backup `backup_id` of volume `volume_id`: its snapshot on the backup image, the
/// backup image when no backup snapshot remains on it, the metadata object, and (when `source`
/// is given) its snapshot on the source volume, which Cinder leaves behind. Running it again
/// after an interruption finishes the job.
///
/// Wraps `rbd_snap_remove2`, `rbd_remove` (retried while busy), `rados_remove`.
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`] for bad ids (nothing changed).
/// - [`ErrorKind::Busy`] when a newer incremental backup depends on it (the message names it;
///   nothing changed): delete newest first.
/// - [`ErrorKind::NotFound`] when nothing of the backup exists (no snapshot on either side, no
///   metadata object).
/// - librbd/librados errors.
pub fn delete_backup(
    backups: &Pool,
    volume_id: &str,
    backup_id: &str,
    source: Option<&VolumeRef<'_>>,
) -> Result<DeleteResult> {
    const OP: &str = "backup.delete";
    let _span = tracing::info_span!("backup.delete", backup_pool = %backups.name(), volume = volume_id,
        backup = backup_id)
    .entered();
    validate_volume_id(OP, volume_id)?;
    validate_backup_id(OP, backup_id)?;
    if let Some(v) = source {
        v.validate(OP)?;
    }
    let all = list_inner(backups, volume_id, false)?;
    let this = all.iter().find(|b| b.backup_id == backup_id);
    if let Some(this) = this {
        let deps: Vec<&str> = all
            .iter()
            .filter(|b| b.image == this.image && b.parent.as_deref() == Some(backup_id))
            .map(|b| b.backup_id.as_str())
            .collect();
        if !deps.is_empty() {
            return Err(Error::new(
                ErrorKind::Busy,
                OP,
                format!(
                    "backup {backup_id} has dependent incremental backup(s) {}; delete those first",
                    deps.join(", ")
                ),
            )
            .with_target(backups.spec(&this.image, Some(&this.snap))));
        }
    }
    let source_snaps: Vec<String> = match source {
        Some(v) => match Image::open_read_only(v.pool(), v.image_name()) {
            Ok(img) => backup_snaps(&img)?
                .into_iter()
                .filter(|s| s.parsed.backup_id == backup_id)
                .map(|s| s.info.name)
                .collect(),
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        },
        None => Vec::new(),
    };
    let meta_oid = meta_object_name(backup_id);
    let has_meta = match backups.object_stat(&meta_oid) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if this.is_none() && source_snaps.is_empty() && !has_meta {
        return Err(Error::new(
            ErrorKind::NotFound,
            OP,
            format!("backup {backup_id} of volume {volume_id} does not exist (no snapshot, no metadata object)"),
        )
        .with_target(backups.name().to_string()));
    }

    let mut res = DeleteResult { backup_id: backup_id.to_string(), ..DeleteResult::default() };
    let mut s = Saga::new(OP);
    if let Some(this) = this {
        res.image = Some(this.image.clone());
        s.check("remove_snapshot", || {
            let img = Image::open(backups, &this.image)?;
            match img.snap_remove(&this.snap) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })?;
        res.snapshot = Some(this.snap.clone());
        s.check("remove_image", || remove_image_when_unused(backups, &this.image, &mut res))?;
    }
    res.metadata_removed = s.check("remove_metadata", || remove_object_if_exists(backups, &meta_oid))?;
    if let Some(v) = source {
        s.check("remove_source_snapshot", || {
            if source_snaps.is_empty() {
                return Ok(());
            }
            let img = Image::open(v.pool(), v.image_name())?;
            for n in &source_snaps {
                match img.snap_remove(n) {
                    Ok(()) => res.source_snapshots_removed.push(v.pool().spec(v.image_name(), Some(n))),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
    }
    s.commit()?;
    Ok(res)
}

/// Removes the backup image once it holds no snapshot; keeps it (with a warning) while other
/// backups or foreign snapshots remain. Retries a busy image (a crashed client's watch) 3 times.
fn remove_image_when_unused(backups: &Pool, image: &str, res: &mut DeleteResult) -> Result<()> {
    let img = match Image::open_read_only(backups, image) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    let snaps = img.snapshots()?;
    drop(img);
    let backups_left = snaps.iter().filter(|s| super::parse_snap_name(&s.name).is_some()).count();
    if backups_left > 0 {
        return Ok(());
    }
    let user: Vec<&str> =
        snaps.iter().filter(|s| s.namespace == SnapNamespace::User).map(|s| s.name.as_str()).collect();
    if !snaps.is_empty() {
        res.warnings.push(format!(
            "backup image {image} kept: it has snapshots that are not backups ({})",
            if user.is_empty() { "non-user namespaces".to_string() } else { user.join(", ") }
        ));
        return Ok(());
    }
    let mut delay = Duration::from_millis(500);
    for attempt in 0..4 {
        match backups.remove_image(image) {
            Ok(()) => {
                res.image_removed = true;
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Busy && attempt < 3 => {
                tracing::info!(image, attempt, "backup image busy; retrying");
                sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyResult {
    /// The backup id.
    pub backup_id: String,
    /// The snapshot compared on both sides.
    pub snap: String,
    /// Same size and same content.
    pub matches: bool,
    /// Size of the backup image at the snapshot.
    pub backup_size: u64,
    /// Size of the source volume at the snapshot.
    pub source_size: u64,
    /// sha256 (hex) of the backup's content: the size, then offset and bytes of every non-zero
    /// 4 KiB block (independent of how the data is allocated).
    pub backup_digest: String,
    /// The same digest of the source at the snapshot.
    pub source_digest: String,
    /// Bytes read and compared on each side (the union of both sides' data extents).
    pub bytes_compared: u64,
    /// Bytes in 4 KiB blocks that differ.
    pub mismatched_bytes: u64,
    /// Offset of the first differing block.
    pub first_mismatch: Option<u64>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Compares the backup image at backup `backup_id`'s snapshot with the source volume at the
/// same snapshot: reads the data extents of both (4 MiB pieces, 16 in flight per side) and
/// checksums them, for users who want proof. Reads only; `progress` may cancel.
///
/// Wraps `rbd_diff_iterate2` and `rbd_aio_read2`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for bad ids; [`ErrorKind::NotFound`] when the backup does not
/// exist or the source no longer has its snapshot (trimmed: nothing to compare with);
/// [`ErrorKind::Cancelled`]; read errors.
pub fn verify(
    backups: &Pool,
    volume_id: &str,
    backup_id: &str,
    source: &VolumeRef<'_>,
    progress: &mut Progress<'_>,
) -> Result<VerifyResult> {
    const OP: &str = "backup.verify";
    let _span = tracing::info_span!("backup.verify", backup_pool = %backups.name(), volume = volume_id,
        backup = backup_id, pool = %source.pool().name(), image = %source.image_name())
    .entered();
    let t0 = Instant::now();
    validate_volume_id(OP, volume_id)?;
    validate_backup_id(OP, backup_id)?;
    source.validate(OP)?;
    let loc = locate_or_not_found(OP, backups, volume_id, backup_id)?;
    let b = Image::open_at_snap(backups, &loc.image, &loc.snap.name)?;
    let s = match Image::open_at_snap(source.pool(), source.image_name(), &loc.snap.name) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorKind::NotFound,
                OP,
                format!(
                    "the source {} has no snapshot {} (trimmed or removed): nothing to compare with",
                    source.spec(),
                    loc.snap.name
                ),
            )
            .with_target(source.spec()))
        }
        r => r?,
    };
    let (bsize, ssize) = (b.size()?, s.size()?);
    let ranges = union_of_data(&b, &s, bsize.max(ssize))?;
    let (mut hb, mut hs) = (Sha256::new(), Sha256::new());
    hb.update(bsize.to_le_bytes());
    hs.update(ssize.to_le_bytes());
    let mut compared = 0u64;
    let mut mismatched = 0u64;
    let mut first = None;
    // Pieces past the end of the smaller side are compared against zeros.
    let common = bsize.min(ssize);
    let inside: Vec<_> = ranges.iter().filter(|e| e.offset < common).map(|e| clip(e, common)).collect();
    for_each_pair(&b, &s, &inside, DEFAULT_IN_FLIGHT, progress, |off, x, y| {
        compared += x.len() as u64;
        for (i, (bx, by)) in x.chunks(4096).zip(y.chunks(4096)).enumerate() {
            let at = off + (i as u64) * 4096;
            hash_block(&mut hb, at, bx);
            hash_block(&mut hs, at, by);
            if bx != by {
                mismatched += bx.len() as u64;
                first.get_or_insert(at);
            }
        }
        Ok(())
    })?;
    // Data beyond the common size exists on one side only.
    for e in ranges.iter().filter(|e| e.end() > common) {
        let (img, h) = if bsize > ssize { (&b, &mut hb) } else { (&s, &mut hs) };
        let mut pos = e.offset.max(common);
        while pos < e.end() {
            let n = (e.end() - pos).min(4 << 20);
            let data = img.read_vec(pos, n as usize)?;
            for (i, block) in data.chunks(4096).enumerate() {
                let at = pos + (i as u64) * 4096;
                hash_block(h, at, block);
                if !is_all_zero(block) {
                    mismatched += block.len() as u64;
                    first.get_or_insert(at);
                }
            }
            pos += n;
        }
    }
    let backup_digest = format!("{:x}", hb.finalize());
    let source_digest = format!("{:x}", hs.finalize());
    Ok(VerifyResult {
        backup_id: backup_id.to_string(),
        snap: loc.snap.name,
        matches: bsize == ssize && mismatched == 0 && backup_digest == source_digest,
        backup_size: bsize,
        source_size: ssize,
        backup_digest,
        source_digest,
        bytes_compared: compared,
        mismatched_bytes: mismatched,
        first_mismatch: first,
        elapsed: t0.elapsed(),
    })
}

fn clip(e: &crate::diff::DiffExtent, end: u64) -> crate::diff::DiffExtent {
    crate::diff::DiffExtent { offset: e.offset, len: e.end().min(end) - e.offset, exists: e.exists }
}

fn hash_block(h: &mut Sha256, at: u64, block: &[u8]) {
    if !is_all_zero(block) {
        h.update(at.to_le_bytes());
        h.update(block);
    }
}
