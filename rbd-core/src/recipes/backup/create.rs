//! `backup.create`: full and incremental backups, and trimming of source snapshots.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::{
    backup_image_name, backup_snaps, locate, meta_object_name, remove_object_if_exists, snap_name, unix_f64,
    validate_backup_id, VolumeRef, META_KEY,
};
use crate::diff::DiffOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::export::DEFAULT_IN_FLIGHT;
use crate::image::Image;
use crate::options::{Features, ImageOptions};
use crate::pool::Pool;
use crate::progress::Progress;
use crate::recipes::glance::{remove_image_if_exists, remove_snap_if_exists};
use crate::recipes::saga::Saga;
use crate::transfer::{Transfer, TransferStats};

/// Step names of `backup.create`, in order; failpoints are `backup.create.<step>` (plus
/// `backup.create.commit`). `create_image` runs only for full backups, `rewind` only for
/// incremental ones.
pub const CREATE_STEPS: [&str; 6] = ["cleanup", "create_image", "rewind", "snapshot", "transfer", "metadata"];

/// Cinder's backup image features (`_get_rbd_support` with fast-diff): layering,
/// exclusive-lock, object-map, fast-diff.
pub const BACKUP_IMAGE_FEATURES: Features =
    Features(Features::LAYERING.0 | Features::EXCLUSIVE_LOCK.0 | Features::OBJECT_MAP.0 | Features::FAST_DIFF.0);

/// What kind of backup was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupKind {
    /// A full backup (no parent asked for): a new backup image.
    Full,
    /// Only what changed since the parent backup's snapshot, onto the parent's backup image.
    Incremental {
        /// The parent backup id.
        parent: String,
        /// The parent's snapshot (on both sides) the diff starts from.
        from_snap: String,
    },
    /// An incremental backup was asked for but was impossible, so a full backup (into a new
    /// backup image) was taken instead.
    FullForced {
        /// Why (names the parent and the missing snapshot).
        reason: String,
    },
}

impl BackupKind {
    /// `full`, `incremental` or `full-forced`.
    pub fn name(&self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental { .. } => "incremental",
            BackupKind::FullForced { .. } => "full-forced",
        }
    }

    /// True for [`BackupKind::Incremental`].
    pub fn is_incremental(&self) -> bool {
        matches!(self, BackupKind::Incremental { .. })
    }
}

/// The result of [`Backup::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct BackupResult {
    /// The backup id.
    pub backup_id: String,
    /// The volume id.
    pub volume_id: String,
    /// Full, incremental, or full because the incremental was impossible.
    pub kind: BackupKind,
    /// The backup image (in the backup pool).
    pub image: String,
    /// The backup snapshot (on the source volume and on the backup image).
    pub snap: String,
    /// The volume size at the snapshot, in bytes.
    pub size: u64,
    /// Bytes written to the backup image as data or zeros (`transfer.bytes_written +
    /// transfer.bytes_zeroed`).
    pub bytes_moved: u64,
    /// The transfer's counters.
    pub transfer: TransferStats,
    /// Wall time of the whole recipe.
    pub elapsed: Duration,
    /// Leftovers of an earlier, interrupted run with the same backup id that were removed
    /// (`pool/image@snap` of source snapshots, `pool/image` of an empty backup image).
    pub cleaned: Vec<String>,
    /// The backup image's head had changed since the parent snapshot and was rolled back to it
    /// first.
    pub rewound: bool,
    /// Source snapshots removed by [`Backup::keep_source_snapshots`].
    pub trimmed: Vec<String>,
    /// Things the caller should know (a forced full backup, a trim that failed).
    pub warnings: Vec<String>,
}

/// A backup of a volume into a backup pool. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Backup<'a> {
    volume: VolumeRef<'a>,
    backups: &'a Pool,
    backup_id: String,
    parent: Option<String>,
    keep: Option<usize>,
    in_flight: usize,
    features: Features,
    volume_metadata: Option<Value>,
}

impl<'a> Backup<'a> {
    /// Backs `volume` up into `backups` (a pool on any cluster) as backup `backup_id`; a full
    /// backup unless [`Backup::parent`] is set.
    pub fn new(volume: &VolumeRef<'a>, backups: &'a Pool, backup_id: &str) -> Backup<'a> {
        Backup {
            volume: volume.clone(),
            backups,
            backup_id: backup_id.to_string(),
            parent: None,
            keep: None,
            in_flight: DEFAULT_IN_FLIGHT,
            features: BACKUP_IMAGE_FEATURES,
            volume_metadata: None,
        }
    }

    /// The parent backup (Cinder: the newest available backup of the volume) for an
    /// incremental backup; `None` (the default) for a full one.
    pub fn parent(&mut self, parent: Option<&str>) -> &mut Self {
        self.parent = parent.map(str::to_string);
        self
    }

    /// After a successful backup, keep at most `k` backup snapshots on the source volume
    /// (Cinder's `backup_ceph_max_snapshots`), removing the oldest; the newest (the one the
    /// next incremental starts from) always stays. `None` (the default): keep all. `Some(0)`
    /// is rejected.
    pub fn keep_source_snapshots(&mut self, k: Option<usize>) -> &mut Self {
        self.keep = k;
        self
    }

    /// Operations in flight on each side of the transfer (default 16).
    pub fn in_flight(&mut self, n: usize) -> &mut Self {
        self.in_flight = n.max(1);
        self
    }

    /// Features of a new backup image (default [`BACKUP_IMAGE_FEATURES`]).
    pub fn features(&mut self, f: Features) -> &mut Self {
        self.features = f;
        self
    }

    /// Cinder's volume metadata container (`{"version": 2, "volume-base-metadata": ...}`) to
    /// store in `backup.<id>.meta`; default `{"version": 2}`. The `"rbd-core"` key is added.
    pub fn volume_metadata(&mut self, meta: Value) -> &mut Self {
        self.volume_metadata = Some(meta);
        self
    }

    /// Takes the backup (see the [module docs](super) for the steps); `progress` reports the
    /// transfer and may cancel it (which undoes everything).
    ///
    /// Wraps `rbd_snap_create2`, `rbd_create4`, the calls of [`Transfer::run`]
    /// (`rbd_diff_iterate2`, `rbd_aio_read2`, `rbd_aio_write2`, `rbd_aio_write_zeroes`),
    /// `rbd_snap_rollback` (rewind), `rados_write_full`, `rbd_snap_remove2`.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`] before anything changes: a bad volume or backup id, a
    ///   parent equal to the backup id, `keep_source_snapshots(Some(0))`, volume metadata that
    ///   is not a JSON object.
    /// - [`ErrorKind::NotFound`]: the volume does not exist.
    /// - [`ErrorKind::Exists`]: backup `backup_id` already exists (its snapshot is on a backup
    ///   image), or its image name is taken by an image with snapshots.
    /// - [`ErrorKind::Cancelled`], [`ErrorKind::PermissionDenied`], and errors of any step;
    ///   after an error the new source snapshot, a new backup image and the metadata object
    ///   are gone again, and no backup snapshot exists for `backup_id`.
    pub fn run(&self, progress: &mut Progress<'_>) -> Result<BackupResult> {
        const OP: &str = "backup.create";
        let vol = &self.volume;
        let backups = self.backups;
        let bid = self.backup_id.as_str();
        let vid = vol.volume_id();
        let _span = tracing::info_span!("backup.create", pool = %vol.pool().name(), image = %vol.image_name(),
            backup = bid, parent = ?self.parent, backup_pool = %backups.name())
        .entered();
        let t0 = Instant::now();
        vol.validate(OP)?;
        validate_backup_id(OP, bid)?;
        if let Some(p) = &self.parent {
            validate_backup_id(OP, p)?;
            if p == bid {
                return Err(Error::invalid(OP, format!("backup {bid} cannot be its own parent")));
            }
        }
        if self.keep == Some(0) {
            return Err(Error::invalid(
                OP,
                "keep_source_snapshots(Some(0)) would remove the snapshot the next incremental needs; use None to keep all",
            ));
        }
        if self.volume_metadata.as_ref().is_some_and(|m| !m.is_object()) {
            return Err(Error::invalid(OP, "the volume metadata must be a JSON object"));
        }

        // Inspect (reads only).
        let src = Image::open_read_only(vol.pool(), vol.image_name())?;
        let src_snaps = backup_snaps(&src)?;
        drop(src);
        if let Some(l) = locate(backups, vid, bid)? {
            return Err(Error::new(
                ErrorKind::Exists,
                OP,
                format!("backup {bid} already exists as {}@{}", l.image, l.snap.name),
            )
            .with_target(backups.spec(&l.image, Some(&l.snap.name))));
        }
        // No backup-side snapshot exists for this id, so any source snapshot of it is a
        // leftover of an interrupted run.
        let leftover_snaps: Vec<String> =
            src_snaps.iter().filter(|s| s.parsed.backup_id == bid).map(|s| s.info.name.clone()).collect();
        let (kind, image) = self.decide(&src_snaps)?;
        let full = !kind.is_incremental();
        let leftover_image = full && self.leftover_image(&image)?;
        let from_snap = match &kind {
            BackupKind::Incremental { from_snap, .. } => Some(from_snap.as_str()),
            _ => None,
        };
        if let BackupKind::FullForced { reason } = &kind {
            tracing::warn!(reason = %reason, "incremental backup impossible; taking a full backup");
        }
        let snap = snap_name(bid, SystemTime::now());
        let meta_oid = meta_object_name(bid);
        let mut opts = ImageOptions::new();
        opts.features(self.features);
        let mut cleaned = Vec::new();
        let mut rewound = false;

        let mut s = Saga::new(OP);
        s.check("cleanup", || {
            for n in &leftover_snaps {
                remove_snap_if_exists(vol.pool(), vol.image_name(), n)?;
                cleaned.push(vol.pool().spec(vol.image_name(), Some(n)));
            }
            if leftover_image {
                remove_image_if_exists(backups, &image)?;
                cleaned.push(backups.spec(&image, None));
            }
            Ok(())
        })?;
        match from_snap {
            None => s.step(
                "create_image",
                || backups.create_image(&image, Image::open_read_only(vol.pool(), vol.image_name())?.size()?, &opts),
                || remove_image_if_exists(backups, &image),
            )?,
            Some(from) => rewound = s.check("rewind", || rewind_if_changed(backups, &image, from))?,
        }
        s.step(
            "snapshot",
            || Image::open(vol.pool(), vol.image_name())?.snap_create(&snap),
            || remove_snap_if_exists(vol.pool(), vol.image_name(), &snap),
        )?;
        let (stats, size) = s.step(
            "transfer",
            || {
                let src = Image::open_at_snap(vol.pool(), vol.image_name(), &snap)?;
                let dst = Image::open(backups, &image)?;
                let mut t = Transfer::new(&src, &dst);
                t.from_snap(from_snap).to_snap(Some(&snap)).dst_is_zero(full).in_flight(self.in_flight);
                Ok((t.run(progress)?, src.size()?))
            },
            || remove_snap_if_exists(backups, &image, &snap),
        )?;
        let bytes_moved = stats.bytes_written + stats.bytes_zeroed;
        let meta = self.meta_json(&kind, &image, &snap, size, bytes_moved);
        s.step(
            "metadata",
            || backups.object_write_full(&meta_oid, meta.as_bytes()),
            || remove_object_if_exists(backups, &meta_oid).map(|_| ()),
        )?;
        s.commit()?;

        let mut warnings = Vec::new();
        if let BackupKind::FullForced { reason } = &kind {
            warnings.push(format!("incremental backup impossible, full backup taken: {reason}"));
        }
        let mut trimmed = Vec::new();
        if let Some(k) = self.keep {
            match trim_source_snapshots(vol, k) {
                Ok(r) => {
                    trimmed = r.removed;
                    warnings.extend(r.failed.into_iter().map(|(n, e)| format!("could not trim {n}: {e}")));
                }
                Err(e) => warnings.push(format!("could not trim source snapshots: {e}")),
            }
        }
        Ok(BackupResult {
            backup_id: bid.to_string(),
            volume_id: vid.to_string(),
            kind,
            image,
            snap,
            size,
            bytes_moved,
            transfer: stats,
            elapsed: t0.elapsed(),
            cleaned,
            rewound,
            trimmed,
            warnings,
        })
    }

    /// Full, incremental, or full because the parent's snapshot is missing on a side; and the
    /// backup image to write.
    fn decide(&self, src_snaps: &[super::TaggedSnap]) -> Result<(BackupKind, String)> {
        let (vol, backups, bid) = (&self.volume, self.backups, self.backup_id.as_str());
        let vid = vol.volume_id();
        let new_image = backup_image_name(vid, bid);
        let Some(p) = &self.parent else {
            return Ok((BackupKind::Full, new_image));
        };
        Ok(match locate(backups, vid, p)? {
            None => (
                BackupKind::FullForced {
                    reason: format!(
                        "parent backup {p} has no snapshot on any {}/volume-{vid}.backup.* image",
                        backups.name()
                    ),
                },
                new_image,
            ),
            Some(l) if src_snaps.iter().any(|s| s.info.name == l.snap.name) => {
                (BackupKind::Incremental { parent: p.clone(), from_snap: l.snap.name }, l.image)
            }
            Some(l) => (
                BackupKind::FullForced {
                    reason: format!(
                        "the source volume {} no longer has snapshot {} of parent backup {p}",
                        vol.spec(),
                        l.snap.name
                    ),
                },
                new_image,
            ),
        })
    }

    /// True when `image` exists without any snapshot (left by an interrupted full backup with
    /// this id); [`ErrorKind::Exists`] when it exists with snapshots.
    fn leftover_image(&self, image: &str) -> Result<bool> {
        let img = match Image::open_read_only(self.backups, image) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            r => r?,
        };
        if img.snapshots()?.is_empty() {
            return Ok(true);
        }
        Err(Error::new(
            ErrorKind::Exists,
            "backup.create",
            format!("backup image {image} already exists and has snapshots of other backups"),
        )
        .with_target(self.backups.spec(image, None)))
    }

    fn meta_json(&self, kind: &BackupKind, image: &str, snap: &str, size: u64, bytes_moved: u64) -> String {
        let mut root = match &self.volume_metadata {
            Some(Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        root.entry("version").or_insert(json!(2));
        let parent = match kind {
            BackupKind::Incremental { parent, .. } => Some(parent.as_str()),
            _ => None,
        };
        root.insert(
            META_KEY.to_string(),
            json!({
                "backup_id": self.backup_id, "volume_id": self.volume.volume_id(), "parent": parent,
                "requested_parent": self.parent, "kind": kind.name(), "image": image, "snap": snap,
                "size": size, "source": self.volume.spec(), "created": unix_f64(SystemTime::now()),
                "bytes_moved": bytes_moved,
            }),
        );
        Value::Object(root).to_string()
    }
}

/// [`Backup`] in one call: a full backup when `parent` is `None`, else an incremental one
/// (or a forced full one, see [`BackupKind::FullForced`]).
///
/// # Errors
/// As [`Backup::run`].
pub fn backup(
    volume: &VolumeRef<'_>,
    backups: &Pool,
    backup_id: &str,
    parent: Option<&str>,
    progress: &mut Progress<'_>,
) -> Result<BackupResult> {
    Backup::new(volume, backups, backup_id).parent(parent).run(progress)
}

/// What [`trim_source_snapshots`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Snapshots removed, oldest first.
    pub removed: Vec<String>,
    /// Snapshots that could not be removed, with the error text.
    pub failed: Vec<(String, String)>,
}

/// Keeps the newest `keep` backup snapshots (`backup.*.snap.*`, by creation order) on the
/// source volume and removes the older ones (Cinder's `_remove_last_snapshots`). The newest
/// is never removed: it is the one the next incremental backup starts from. A snapshot that
/// cannot be removed (e.g. protected with clones) is reported and skipped.
///
/// Wraps `rbd_snap_list` and `rbd_snap_remove2`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for `keep == 0`; [`ErrorKind::NotFound`] when the volume
/// does not exist; listing errors.
pub fn trim_source_snapshots(volume: &VolumeRef<'_>, keep: usize) -> Result<TrimReport> {
    let _span =
        tracing::debug_span!("backup.trim", pool = %volume.pool().name(), image = %volume.image_name(), keep).entered();
    if keep == 0 {
        return Err(Error::invalid("backup.trim", "keep at least the newest backup snapshot (keep >= 1)"));
    }
    let img = Image::open(volume.pool(), volume.image_name())?;
    let snaps = backup_snaps(&img)?;
    let mut report = TrimReport::default();
    let excess = snaps.len().saturating_sub(keep);
    for s in snaps.iter().take(excess) {
        match img.snap_remove(&s.info.name) {
            Ok(()) => report.removed.push(s.info.name.clone()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(snap = %s.info.name, error = %e, "could not trim a backup snapshot");
                report.failed.push((s.info.name.clone(), e.to_string()));
            }
        }
    }
    Ok(report)
}

/// Rolls the backup image's head back to `from` when it differs from it (an interrupted
/// transfer left data behind, or the parent is not the newest backup), so that the diff from
/// `from` lands on exactly the parent's content. Returns whether it rolled back.
fn rewind_if_changed(backups: &Pool, image: &str, from: &str) -> Result<bool> {
    let img = Image::open(backups, image)?;
    let head = img.size()?;
    let at_snap = Image::open_at_snap(backups, image, from)?.size()?;
    let opts = DiffOptions { include_parent: false, whole_object: true };
    let changed = head != at_snap || !img.diff_extents(Some(from), 0, head, opts)?.is_empty();
    if changed {
        tracing::info!(image, snap = from, "backup image head differs from the parent snapshot; rolling back");
        img.snap_rollback(from)?;
    }
    Ok(changed)
}
