//! `rbdlc backup create|restore|delete|list|verify`: incremental backups into a backup pool,
//! possibly on another cluster, in Cinder's Ceph backup layout (`volume-<vid>.backup.<bid>`,
//! `backup.<bid>.snap.<time>`, `backup.<bid>.meta`). The volume id comes from the image name
//! (`volume-<vid>`) unless `--volume-id` is given; `--dst-conf/--dst-id/--dst-pool` name the
//! backup cluster and pool (default: this connection, pool `backups`).
//!
//! ```text
//! rbdlc backup create volumes/volume-1 --backup b1 --dst-conf /etc/ceph/backup.conf --dst-id cinder-backup
//! rbdlc backup create volumes/volume-1 --backup b2 --parent b1 --keep-source-snaps 2 --dst-conf ...
//! rbdlc backup list volumes/volume-1 --dst-conf ...
//! rbdlc backup restore volumes/volume-2 --volume-id 1 --backup b2 --dst-conf ...
//! rbdlc backup verify volumes/volume-1 --backup b2 --dst-conf ...
//! rbdlc backup delete volumes/volume-1 --backup b2 --dst-conf ...
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use rbd_core::recipes::backup::{self, Backup, BackupKind, Restore, VolumeRef};
use rbd_core::{Cluster, Error, Pool, Progress, Result};
use serde_json::json;

use crate::output::{bytes, Out};
use crate::spec::Spec;

/// The backup cluster and pool.
#[derive(clap::Args)]
pub struct Dst {
    /// ceph.conf of the backup cluster (default: this connection).
    #[arg(long)]
    dst_conf: Option<PathBuf>,
    /// Client id on the backup cluster (default: --id).
    #[arg(long)]
    dst_id: Option<String>,
    /// The backup pool.
    #[arg(long, default_value = "backups")]
    dst_pool: String,
}

/// `rbdlc backup` subcommands.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Back POOL/IMAGE up: full, or incremental from --parent (full, and said so, when the
    /// parent's snapshot is gone from either side).
    Create {
        /// The volume, POOL/IMAGE.
        spec: Spec,
        /// The new backup's id (a lower-case UUID in Cinder).
        #[arg(long)]
        backup: String,
        /// The parent backup id (incremental).
        #[arg(long)]
        parent: Option<String>,
        /// Keep at most N backup snapshots on the volume (the newest always stays).
        #[arg(long)]
        keep_source_snaps: Option<usize>,
        /// The volume id the backup names use (default: IMAGE without `volume-`).
        #[arg(long)]
        volume_id: Option<String>,
        /// Operations in flight on each side.
        #[arg(long, default_value_t = rbd_core::export::DEFAULT_IN_FLIGHT)]
        in_flight: usize,
        #[command(flatten)]
        dst: Dst,
    },
    /// Restore a backup into POOL/IMAGE (created when missing; the source volume itself is
    /// fine): diff, rollback, or a comparing restore that writes only what differs.
    Restore {
        /// The target volume, POOL/IMAGE.
        spec: Spec,
        /// The backup id.
        #[arg(long)]
        backup: String,
        /// The id of the volume that was backed up (default: from IMAGE).
        #[arg(long)]
        volume_id: Option<String>,
        /// Final size in bytes (default: the target's size, or the backup's for a new target).
        #[arg(long)]
        size: Option<u64>,
        /// Fail instead of creating a missing target.
        #[arg(long)]
        no_create: bool,
        #[command(flatten)]
        dst: Dst,
    },
    /// Delete a backup of POOL/IMAGE (refused while a newer incremental depends on it),
    /// including its snapshot on the volume.
    Delete {
        /// The volume, POOL/IMAGE.
        spec: Spec,
        /// The backup id.
        #[arg(long)]
        backup: String,
        /// The volume id (default: from IMAGE).
        #[arg(long)]
        volume_id: Option<String>,
        /// Leave the backup's snapshot on the volume.
        #[arg(long)]
        keep_source_snap: bool,
        #[command(flatten)]
        dst: Dst,
    },
    /// List the backups of POOL/IMAGE from the backup pool: chain, sizes, times.
    List {
        /// The volume, POOL/IMAGE.
        spec: Spec,
        /// The volume id (default: from IMAGE).
        #[arg(long)]
        volume_id: Option<String>,
        #[command(flatten)]
        dst: Dst,
    },
    /// Compare a backup with the volume at the same snapshot (checksums over the data).
    Verify {
        /// The volume, POOL/IMAGE.
        spec: Spec,
        /// The backup id.
        #[arg(long)]
        backup: String,
        /// The volume id (default: from IMAGE).
        #[arg(long)]
        volume_id: Option<String>,
        #[command(flatten)]
        dst: Dst,
    },
}

fn backup_pool(cluster: &Cluster, d: &Dst) -> Result<Pool> {
    let c = match (&d.dst_conf, &d.dst_id) {
        (None, None) => cluster.clone(),
        (conf, id) => Cluster::shared(conf.as_deref(), id.as_deref().unwrap_or(cluster.client_id()))?,
    };
    Pool::open(&c, &d.dst_pool)
}

fn volume<'p>(pool: &'p Pool, spec: &Spec, volume_id: &Option<String>) -> Result<VolumeRef<'p>> {
    if spec.snap.is_some() {
        return Err(Error::invalid("rbdlc", "give POOL/IMAGE without @SNAP: backups name their own snapshots"));
    }
    Ok(match volume_id {
        Some(v) => VolumeRef::with_volume_id(pool, &spec.image, v),
        None => VolumeRef::image(pool, &spec.image),
    })
}

/// A progress callback driving an indicatif bar.
fn bar_cb(bar: &indicatif::ProgressBar) -> impl FnMut(u64, u64) -> ControlFlow<()> + '_ {
    |done, total| {
        bar.set_length(total);
        bar.set_position(done);
        ControlFlow::Continue(())
    }
}

pub fn run(cluster: &Cluster, cmd: &Cmd, out: &Out) -> Result<()> {
    match cmd {
        Cmd::Create { spec, backup: bid, parent, keep_source_snaps, volume_id, in_flight, dst } => {
            let backups = backup_pool(cluster, dst)?;
            let pool = Pool::open_ns(cluster, &spec.pool, &spec.namespace)?;
            let vol = volume(&pool, spec, volume_id)?;
            let bar = out.bar("backup", 0);
            let mut cb = bar_cb(&bar);
            let r = Backup::new(&vol, &backups, bid)
                .parent(parent.as_deref())
                .keep_source_snapshots(*keep_source_snaps)
                .in_flight(*in_flight)
                .run(&mut Progress::new(&mut cb))?;
            bar.finish_and_clear();
            let (from_snap, reason) = match &r.kind {
                BackupKind::Incremental { from_snap, .. } => (Some(from_snap.as_str()), None),
                BackupKind::FullForced { reason } => (None, Some(reason.as_str())),
                BackupKind::Full => (None, None),
            };
            let v = json!({
                "backup_id": r.backup_id, "volume_id": r.volume_id, "kind": r.kind.name(), "from_snap": from_snap,
                "forced_reason": reason, "image": format!("{}/{}", backups.name(), r.image), "snap": r.snap,
                "size": r.size, "bytes_moved": r.bytes_moved, "bytes_read": r.transfer.bytes_read,
                "bytes_skipped": r.transfer.bytes_skipped, "elapsed_ms": r.elapsed.as_millis() as u64,
                "cleaned": r.cleaned, "rewound": r.rewound, "trimmed": r.trimmed, "warnings": r.warnings,
            });
            out.result(v, |_| {
                let mut s = format!(
                    "{} backup {} of {} -> {}/{}@{}: {} moved ({} read) in {:.2}s",
                    r.kind.name(),
                    r.backup_id,
                    vol.spec(),
                    backups.name(),
                    r.image,
                    r.snap,
                    bytes(r.bytes_moved),
                    bytes(r.transfer.bytes_read),
                    r.elapsed.as_secs_f64()
                );
                for n in &r.trimmed {
                    s.push_str(&format!("\ntrimmed source snapshot {n}"));
                }
                for w in &r.warnings {
                    s.push_str(&format!("\nwarning: {w}"));
                }
                s
            });
            Ok(())
        }
        Cmd::Restore { spec, backup: bid, volume_id, size, no_create, dst } => {
            let backups = backup_pool(cluster, dst)?;
            let pool = Pool::open_ns(cluster, &spec.pool, &spec.namespace)?;
            let target = volume(&pool, spec, &None)?;
            let vid = volume_id.clone().unwrap_or_else(|| target.volume_id().to_string());
            let bar = out.bar("restore", 0);
            let mut cb = bar_cb(&bar);
            let r = Restore::new(&backups, &vid, bid, &target)
                .size(*size)
                .create_missing(!no_create)
                .run(&mut Progress::new(&mut cb))?;
            bar.finish_and_clear();
            let v = json!({
                "backup_id": r.backup_id, "kind": r.kind.name(), "from": format!("{}/{}@{}", backups.name(), r.image, r.snap),
                "target": r.target, "created": r.created, "size": r.size, "bytes_read": r.bytes_read,
                "bytes_written": r.bytes_written, "bytes_zeroed": r.bytes_zeroed, "bytes_unchanged": r.bytes_unchanged,
                "elapsed_ms": r.elapsed.as_millis() as u64,
            });
            out.result(v, |_| {
                format!(
                    "{} restore of backup {} into {}{}: wrote {}, zeroed {}, unchanged {}, size {} in {:.2}s",
                    r.kind.name(),
                    r.backup_id,
                    r.target,
                    if r.created { " (created)" } else { "" },
                    bytes(r.bytes_written),
                    bytes(r.bytes_zeroed),
                    bytes(r.bytes_unchanged),
                    bytes(r.size),
                    r.elapsed.as_secs_f64()
                )
            });
            Ok(())
        }
        Cmd::Delete { spec, backup: bid, volume_id, keep_source_snap, dst } => {
            let backups = backup_pool(cluster, dst)?;
            let pool = Pool::open_ns(cluster, &spec.pool, &spec.namespace)?;
            let vol = volume(&pool, spec, volume_id)?;
            let source = (!keep_source_snap).then_some(&vol);
            let r = backup::delete_backup(&backups, vol.volume_id(), bid, source)?;
            let v = json!({
                "backup_id": r.backup_id, "image": r.image, "snapshot": r.snapshot, "image_removed": r.image_removed,
                "metadata_removed": r.metadata_removed, "source_snapshots_removed": r.source_snapshots_removed,
                "warnings": r.warnings,
            });
            out.result(v, |_| {
                let mut s = format!("deleted backup {}", r.backup_id);
                if let (Some(i), Some(sn)) = (&r.image, &r.snapshot) {
                    s.push_str(&format!(": removed {}/{i}@{sn}", backups.name()));
                }
                if r.image_removed {
                    s.push_str(", the backup image");
                }
                if r.metadata_removed {
                    s.push_str(", the metadata object");
                }
                for n in &r.source_snapshots_removed {
                    s.push_str(&format!(", {n}"));
                }
                for w in &r.warnings {
                    s.push_str(&format!("\nwarning: {w}"));
                }
                s
            });
            Ok(())
        }
        Cmd::List { spec, volume_id, dst } => {
            let backups = backup_pool(cluster, dst)?;
            let pool = Pool::open_ns(cluster, &spec.pool, &spec.namespace)?;
            let vol = volume(&pool, spec, volume_id)?;
            let list = backup::list_backups(&backups, vol.volume_id())?;
            let on_source: Vec<String> = rbd_core::Image::open_read_only(&pool, vol.image_name())
                .and_then(|i| i.snapshots())
                .map(|v| v.into_iter().map(|s| s.name).collect())
                .unwrap_or_default();
            let rows: Vec<_> = list
                .iter()
                .map(|b| {
                    json!({
                        "backup_id": b.backup_id, "parent": b.parent, "image": b.image, "snap": b.snap,
                        "time": b.time, "created": b.created.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
                        "size": b.size, "delta_bytes": b.delta_bytes, "on_source": on_source.contains(&b.snap),
                        "metadata": b.metadata.is_some(),
                    })
                })
                .collect();
            out.result(json!({"volume_id": vol.volume_id(), "backups": rows}), |_| {
                let mut s =
                    format!("{:<38} {:<38} {:>10} {:>10} {:<6} SNAPSHOT", "BACKUP", "PARENT", "SIZE", "DELTA", "SRC");
                for b in &list {
                    s.push_str(&format!(
                        "\n{:<38} {:<38} {:>10} {:>10} {:<6} {}/{}@{}",
                        b.backup_id,
                        b.parent.as_deref().unwrap_or("-"),
                        bytes(b.size),
                        bytes(b.delta_bytes),
                        if on_source.contains(&b.snap) { "yes" } else { "no" },
                        backups.name(),
                        b.image,
                        b.snap
                    ));
                }
                s
            });
            Ok(())
        }
        Cmd::Verify { spec, backup: bid, volume_id, dst } => {
            let backups = backup_pool(cluster, dst)?;
            let pool = Pool::open_ns(cluster, &spec.pool, &spec.namespace)?;
            let vol = volume(&pool, spec, volume_id)?;
            let bar = out.bar("verify", 0);
            let mut cb = bar_cb(&bar);
            let r = backup::verify(&backups, vol.volume_id(), bid, &vol, &mut Progress::new(&mut cb))?;
            bar.finish_and_clear();
            if !r.matches {
                return Err(Error::new(
                    rbd_core::ErrorKind::Io,
                    "rbdlc",
                    format!(
                        "backup {} at {} DIFFERS from the volume: {} bytes differ (first at offset {:?}); sizes {} / {}",
                        r.backup_id, r.snap, r.mismatched_bytes, r.first_mismatch, r.backup_size, r.source_size
                    ),
                ));
            }
            let v = json!({
                "backup_id": r.backup_id, "snap": r.snap, "matches": r.matches, "backup_size": r.backup_size,
                "source_size": r.source_size, "backup_sha256": r.backup_digest, "source_sha256": r.source_digest,
                "bytes_compared": r.bytes_compared, "mismatched_bytes": r.mismatched_bytes,
                "elapsed_ms": r.elapsed.as_millis() as u64,
            });
            out.result(v, |_| {
                format!(
                    "backup {} at {} matches the volume ({} compared; sha256 {})",
                    r.backup_id,
                    r.snap,
                    bytes(r.bytes_compared),
                    r.backup_digest
                )
            });
            Ok(())
        }
    }
}
