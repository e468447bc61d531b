//! `rbdlc group create|add|remove|snapshot|snapshots|delete|restore`: Cinder consistency groups
//! on native RBD groups (one crash-consistent snapshot of every member).

use std::ops::ControlFlow;

use rbd_core::recipes::groups::{ConsistencyGroup, ConsistencyGroups, GroupSpec, RestoreSpec};
use rbd_core::{Cluster, Pool, Progress, Result};
use serde_json::{json, Value};

use crate::output::{bytes, Out};

/// `rbdlc group` subcommands.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Create consistency group GROUP_ID (RBD group `group-<id>`).
    Create {
        /// The group id.
        group_id: String,
        /// Pool of the volumes.
        #[arg(long, default_value = "volumes")]
        pool: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Volume types (comma-separated; Cinder requires at least one).
        #[arg(long, value_delimiter = ',', default_value = "__DEFAULT__")]
        volume_types: Vec<String>,
    },
    /// Add volumes (images `volume-<id>`) to the group.
    Add {
        /// The group id.
        group_id: String,
        /// Volume ids.
        #[arg(required = true)]
        volume_ids: Vec<String>,
        /// Pool of the volumes.
        #[arg(long, default_value = "volumes")]
        pool: String,
    },
    /// Remove volumes from the group (the volumes stay).
    Remove {
        /// The group id.
        group_id: String,
        /// Volume ids.
        #[arg(required = true)]
        volume_ids: Vec<String>,
        /// Pool of the volumes.
        #[arg(long, default_value = "volumes")]
        pool: String,
    },
    /// Take group snapshot SNAP_ID of every member at once.
    Snapshot {
        /// The group id.
        group_id: String,
        /// The group snapshot id.
        snap_id: String,
        /// Pool of the volumes.
        #[arg(long, default_value = "volumes")]
        pool: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the group's snapshots with their member snapshots.
    Snapshots {
        /// The group id.
        group_id: String,
        /// Pool of the volumes.
        #[arg(long, default_value = "volumes")]
        pool: String,
    },
    /// Delete a group snapshot (with `--snapshot`) or the group (`--force` also removes its snapshots).
    Delete {
        /// The group id.
        group_id: String,
        /// Delete this group snapshot instead of the group.
        #[arg(long)]
        snapshot: Option<String>,
        /// Remove the group's snapshots too.
        #[arg(long)]
        force: bool,
        /// Pool of the volumes.
        #[arg(long, default_value = "volumes")]
        pool: String,
    },
    /// Create volumes `volume-<prefix>-<member id>` from group snapshot SNAP_ID.
    Restore {
        /// The group id.
        group_id: String,
        /// The group snapshot id.
        snap_id: String,
        /// Prefix of the new volume ids.
        #[arg(long)]
        prefix: String,
        /// Also put the new volumes into this new group.
        #[arg(long)]
        new_group: Option<String>,
        /// Pool of the volumes.
        #[arg(long, default_value = "volumes")]
        pool: String,
    },
}

fn group_json(g: &ConsistencyGroup) -> Value {
    json!({"id": g.id, "rbd_group": g.rbd_group, "pool": g.pool, "name": g.name, "description": g.description,
        "volume_types": g.volume_types, "created_at": g.created_at, "volumes": g.volumes})
}

fn group_human(g: &ConsistencyGroup) -> String {
    format!(
        "{}/{} ({:?}, types {}): {} volume(s) {}",
        g.pool,
        g.rbd_group,
        g.name,
        g.volume_types.join(","),
        g.volumes.len(),
        g.volumes.join(" ")
    )
}

fn ids(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub fn run(cluster: &Cluster, cmd: &Cmd, out: &Out) -> Result<()> {
    let cgs = |pool: &str| -> Result<ConsistencyGroups> { Ok(ConsistencyGroups::new(&Pool::open(cluster, pool)?)) };
    match cmd {
        Cmd::Create { group_id, pool, name, description, volume_types } => {
            let spec =
                GroupSpec { name: name.clone(), description: description.clone(), volume_types: volume_types.clone() };
            let g = cgs(pool)?.create(group_id, &spec)?;
            out.result(group_json(&g), |_| format!("created {}", group_human(&g)));
        }
        Cmd::Add { group_id, volume_ids, pool } => {
            let g = cgs(pool)?.add_volumes(group_id, &ids(volume_ids))?;
            out.result(group_json(&g), |_| group_human(&g));
        }
        Cmd::Remove { group_id, volume_ids, pool } => {
            let g = cgs(pool)?.remove_volumes(group_id, &ids(volume_ids))?;
            out.result(group_json(&g), |_| group_human(&g));
        }
        Cmd::Snapshot { group_id, snap_id, pool, name, description } => {
            let s = cgs(pool)?.create_snapshot(group_id, snap_id, name, description)?;
            out.result(
                json!({"id": s.id, "group_id": s.group_id, "rbd_snap": s.rbd_snap, "members": s.members.len()}),
                |_| format!("group snapshot {} of {}: {} member snapshot(s)", s.id, s.group_id, s.members.len()),
            );
        }
        Cmd::Snapshots { group_id, pool } => {
            let snaps = cgs(pool)?.snapshots(group_id)?;
            let v: Vec<Value> = snaps
                .iter()
                .map(|s| {
                    json!({"id": s.id, "rbd_snap": s.rbd_snap, "name": s.name, "description": s.description,
                        "created_at": s.created_at, "complete": s.complete,
                        "members": s.members.iter().map(|m| json!({"volume_id": m.volume_id, "image": m.image,
                            "snap_id": m.snap_id, "snap_name": m.snap_name, "size": m.size})).collect::<Vec<_>>()})
                })
                .collect();
            out.result(json!({"group_id": group_id, "snapshots": v}), |_| {
                let mut lines = Vec::new();
                for s in &snaps {
                    let state = if s.complete { "complete" } else { "INCOMPLETE" };
                    lines.push(format!("{} {:?} ({state})", s.id, s.name));
                    for m in &s.members {
                        lines.push(format!("  {} @{} {} ({})", m.image, m.snap_id, m.snap_name, bytes(m.size)));
                    }
                }
                if lines.is_empty() {
                    lines.push(format!("{group_id}: no group snapshots"));
                }
                lines.join("\n")
            });
        }
        Cmd::Delete { group_id, snapshot, force, pool } => {
            let cgs = cgs(pool)?;
            match snapshot {
                Some(s) => {
                    cgs.delete_snapshot(group_id, s)?;
                    out.result(json!({"group_id": group_id, "deleted_snapshot": s}), |_| {
                        format!("deleted group snapshot {s} of {group_id}")
                    });
                }
                None => {
                    cgs.delete(group_id, *force)?;
                    out.result(json!({"deleted_group": group_id}), |_| format!("deleted group {group_id}"));
                }
            }
        }
        Cmd::Restore { group_id, snap_id, prefix, new_group, pool } => {
            let cgs = cgs(pool)?;
            let mut spec = RestoreSpec::prefix(prefix);
            if let Some(g) = new_group {
                let types = cgs.get(group_id)?.volume_types;
                let types: Vec<&str> = types.iter().map(String::as_str).collect();
                spec = spec.into_group(g, GroupSpec::new(g, &types));
            }
            let bar = out.bar("restore", 0);
            let mut cb = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
                ControlFlow::Continue(())
            };
            let r = cgs.restore(group_id, snap_id, &spec, &mut Progress::new(&mut cb))?;
            bar.finish_and_clear();
            let vols: Vec<Value> = r
                .volumes
                .iter()
                .map(|v| {
                    json!({"source_volume_id": v.source_volume_id, "volume_id": v.volume_id, "image": v.image,
                    "size": v.size, "bytes_written": v.bytes_written})
                })
                .collect();
            out.result(json!({"group_id": r.group_id, "volumes": vols}), |_| {
                let mut lines: Vec<String> = r
                    .volumes
                    .iter()
                    .map(|v| format!("{} <- {}@{snap_id} ({})", v.image, v.source_volume_id, bytes(v.size)))
                    .collect();
                if let Some(g) = &r.group_id {
                    lines.push(format!("new group {g}"));
                }
                lines.join("\n")
            });
        }
    }
    Ok(())
}
