//! `rbdlc cinder create|snapshot|delete|delete-snapshot|extend|revert|stats`: the Cinder volume
//! recipes.

use std::ops::ControlFlow;

use indicatif::ProgressBar;
use rbd_core::recipes::cinder::{
    self, ChildrenPolicy, DeleteSnapshot, DeleteVolume, ImageSnapRef, Volume, VolumeFromImage, VolumeFromSnapshot,
    VolumeFromVolume,
};
use rbd_core::recipes::location::Location;
use rbd_core::{CloneFormat, Cluster, Error, Pool, Progress, Result};
use serde_json::{json, Value};

use crate::glance::parse_size;
use crate::output::{bytes, Out};
use crate::spec::Spec;

/// `rbdlc cinder` subcommands.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Create volume-<VOLUME_ID>: blank, or from a snapshot, a volume or a Glance image.
    Create {
        volume_id: String,
        /// Size (suffixes K, M, G, T); at least the source's size.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        #[arg(long, default_value = "volumes")]
        pool: String,
        /// Clone volume-<VOL>@snapshot-<SNAP>.
        #[arg(long, value_name = "VOL:SNAP", group = "source")]
        from_snapshot: Option<String>,
        /// Clone (or copy) volume-<VOL>.
        #[arg(long, value_name = "VOL", group = "source")]
        from_volume: Option<String>,
        /// Clone a Glance image: rbd://fsid/pool/image/snap or POOL/IMAGE@SNAP.
        #[arg(long, value_name = "LOCATION", group = "source")]
        from_image: Option<String>,
        /// With --from-volume: flatten clones deeper than this; 0 = full copy.
        #[arg(long, default_value_t = 5)]
        max_clone_depth: u32,
        /// With --from-snapshot: flatten the new volume.
        #[arg(long)]
        flatten: bool,
        /// Clone format (1 protects the snapshot; 2 needs mimic+ clients).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
        clone_format: u8,
    },
    /// Snapshot volume-<VOLUME_ID> as snapshot-<SNAPSHOT_ID> (protected).
    Snapshot {
        volume_id: String,
        snapshot_id: String,
        #[arg(long, default_value = "volumes")]
        pool: String,
    },
    /// Delete volume-<VOLUME_ID> (flattening clone children, or keeping them with --keep-children-as-clones).
    Delete {
        volume_id: String,
        #[arg(long, default_value = "volumes")]
        pool: String,
        /// Rename to volume-<id>.deleted while clones use it, instead of flattening them.
        #[arg(long)]
        keep_children_as_clones: bool,
    },
    /// Delete snapshot-<SNAPSHOT_ID> of volume-<VOLUME_ID>, flattening its clones first.
    DeleteSnapshot {
        volume_id: String,
        snapshot_id: String,
        #[arg(long, default_value = "volumes")]
        pool: String,
        /// Fail (busy) instead of flattening clones of the snapshot.
        #[arg(long)]
        refuse_if_children: bool,
    },
    /// Grow volume-<VOLUME_ID> to SIZE (suffixes K, M, G, T).
    Extend {
        volume_id: String,
        #[arg(value_parser = parse_size)]
        size: u64,
        #[arg(long, default_value = "volumes")]
        pool: String,
    },
    /// Roll volume-<VOLUME_ID> back to snapshot-<SNAPSHOT_ID> (progress bar).
    Revert {
        volume_id: String,
        snapshot_id: String,
        #[arg(long, default_value = "volumes")]
        pool: String,
    },
    /// Pool capacity as Cinder reports it (quota-aware).
    Stats {
        #[arg(long, default_value = "volumes")]
        pool: String,
    },
}

fn volume_json(v: &Volume) -> Value {
    json!({"pool": v.pool, "volume_id": v.volume_id, "name": v.name, "size": v.size, "parent": v.parent,
        "depth": v.depth, "flattened": v.flattened})
}

fn volume_line(v: &Volume) -> String {
    let parent = v.parent.as_deref().map(|p| format!(" <- {p} (depth {})", v.depth)).unwrap_or_default();
    let flat = if v.flattened { " (flattened)" } else { "" };
    format!("{}/{} {}{parent}{flat}", v.pool, v.name, bytes(v.size))
}

/// A progress callback drawing `bar`.
fn draw(bar: &ProgressBar) -> impl FnMut(u64, u64) -> ControlFlow<()> + Send + '_ {
    |done, total| {
        bar.set_length(total);
        bar.set_position(done);
        ControlFlow::Continue(())
    }
}

/// `rbd://fsid/pool/image/snap` or `POOL/IMAGE@SNAP`.
fn image_source(s: &str) -> Result<ImageSnapRef> {
    if s.starts_with("rbd://") {
        return ImageSnapRef::from_location(&Location::parse(s)?);
    }
    let spec: Spec = s.parse()?;
    let snap = spec.snap.ok_or_else(|| Error::invalid("rbdlc", "give the image as POOL/IMAGE@SNAP"))?;
    Ok(ImageSnapRef::new(&spec.pool, &spec.image, &snap))
}

pub fn run(cluster: &Cluster, cmd: &Cmd, out: &Out) -> Result<()> {
    match cmd {
        Cmd::Create {
            volume_id,
            size,
            pool,
            from_snapshot,
            from_volume,
            from_image,
            max_clone_depth,
            flatten,
            clone_format,
        } => {
            let pool = Pool::open(cluster, pool)?;
            let format = if *clone_format == 1 { CloneFormat::V1 } else { CloneFormat::V2 };
            let bar = out.bar("copy", 0);
            let mut cb = draw(&bar);
            let mut progress = Progress::new(&mut cb);
            let v = if let Some(s) = from_snapshot {
                let (vol, snap) =
                    s.split_once(':').ok_or_else(|| Error::invalid("rbdlc", "--from-snapshot takes VOL:SNAP"))?;
                VolumeFromSnapshot::new(vol, snap, volume_id, *size)
                    .flatten(*flatten)
                    .clone_format(format)
                    .run(&pool, &mut progress)?
            } else if let Some(src) = from_volume {
                VolumeFromVolume::new(src, volume_id, *size)
                    .max_clone_depth(*max_clone_depth)
                    .clone_format(format)
                    .run(&pool, &mut progress)?
            } else if let Some(loc) = from_image {
                VolumeFromImage::new(image_source(loc)?, volume_id, *size).clone_format(format).run(&pool)?
            } else {
                cinder::create(&pool, volume_id, *size)?
            };
            bar.finish_and_clear();
            out.result(volume_json(&v), |_| format!("created {}", volume_line(&v)));
        }
        Cmd::Snapshot { volume_id, snapshot_id, pool } => {
            let s = cinder::create_snapshot(&Pool::open(cluster, pool)?, volume_id, snapshot_id)?;
            out.result(
                json!({"pool": s.pool, "volume": s.volume, "snapshot": s.name, "size": s.size, "protected": s.protected}),
                |_| format!("created {}/{}@{} (protected)", s.pool, s.volume, s.name),
            );
        }
        Cmd::Delete { volume_id, pool, keep_children_as_clones } => {
            let bar = out.bar("flatten", 0);
            let mut cb = draw(&bar);
            let d = DeleteVolume::new(volume_id)
                .keep_children_as_clones(*keep_children_as_clones)
                .run(&Pool::open(cluster, pool)?, &mut Progress::new(&mut cb))?;
            bar.finish_and_clear();
            let outcome = format!("{:?}", d.outcome);
            out.result(
                json!({"outcome": outcome, "name": d.name, "trash_id": d.trash_id,
                    "removed_snapshots": d.removed_snapshots, "flattened_children": d.flattened_children,
                    "parent_snapshots_removed": d.parent_snapshots_removed, "collected_parents": d.collected_parents}),
                |_| {
                    let mut lines = vec![format!("{outcome}: {}", d.name)];
                    lines.extend(d.flattened_children.iter().map(|c| format!("  flattened {c}")));
                    lines.extend(d.removed_snapshots.iter().map(|s| format!("  removed snapshot {s}")));
                    lines.extend(d.parent_snapshots_removed.iter().map(|s| format!("  removed parent snapshot {s}")));
                    lines.extend(d.collected_parents.iter().map(|p| format!("  removed {p}")));
                    lines.join("\n")
                },
            );
        }
        Cmd::DeleteSnapshot { volume_id, snapshot_id, pool, refuse_if_children } => {
            let policy = if *refuse_if_children { ChildrenPolicy::Refuse } else { ChildrenPolicy::Flatten };
            let bar = out.bar("flatten", 0);
            let mut cb = draw(&bar);
            let d = DeleteSnapshot::new(volume_id, snapshot_id)
                .on_children(policy)
                .run(&Pool::open(cluster, pool)?, &mut Progress::new(&mut cb))?;
            bar.finish_and_clear();
            out.result(
                json!({"snapshot": d.snapshot, "removed": d.removed, "flattened_children": d.flattened_children}),
                |_| {
                    let what = if d.removed { "removed" } else { "no such snapshot:" };
                    let mut lines = vec![format!("{what} {}", d.snapshot)];
                    lines.extend(d.flattened_children.iter().map(|c| format!("  flattened {c}")));
                    lines.join("\n")
                },
            );
        }
        Cmd::Extend { volume_id, size, pool } => {
            let v = cinder::extend(&Pool::open(cluster, pool)?, volume_id, *size)?;
            out.result(volume_json(&v), |_| format!("extended {}", volume_line(&v)));
        }
        Cmd::Revert { volume_id, snapshot_id, pool } => {
            let bar = out.bar("rollback", 0);
            let mut cb = draw(&bar);
            let v = cinder::revert_to_snapshot(
                &Pool::open(cluster, pool)?,
                volume_id,
                snapshot_id,
                &mut Progress::new(&mut cb),
            )?;
            bar.finish_and_clear();
            out.result(volume_json(&v), |_| format!("reverted {} to snapshot-{snapshot_id}", volume_line(&v)));
        }
        Cmd::Stats { pool } => {
            let c = cinder::pool_capacity(&Pool::open(cluster, pool)?)?;
            out.result(
                json!({"pool": c.pool, "total_bytes": c.total_bytes, "free_bytes": c.free_bytes,
                    "used_bytes": c.used_bytes, "provisioned_bytes": c.provisioned_bytes, "quota_bytes": c.quota_bytes,
                    "total_capacity_gb": c.total_gib(), "free_capacity_gb": c.free_gib(),
                    "provisioned_capacity_gb": c.provisioned_gib()}),
                |_| {
                    let quota = c.quota_bytes.map(|q| format!(", quota {}", bytes(q))).unwrap_or_default();
                    format!(
                        "{}: {} free of {} ({} used, {} provisioned{quota})",
                        c.pool,
                        bytes(c.free_bytes),
                        bytes(c.total_bytes),
                        bytes(c.used_bytes),
                        bytes(c.provisioned_bytes)
                    )
                },
            );
        }
    }
    Ok(())
}
