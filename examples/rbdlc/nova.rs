//! `rbdlc nova boot|snapshot|delete`: the Nova instance-disk recipes.

use std::ops::ControlFlow;

use rbd_core::recipes::location::Location;
use rbd_core::recipes::nova::{self, BootDisk, DiskOutcome, InstanceSnapshot, RetryPolicy};
use rbd_core::{Cluster, Error, Pool, Progress, Result};
use serde_json::json;

use crate::glance::parse_size;
use crate::output::{bytes, Out};
use crate::spec::Spec;

/// `rbdlc nova` subcommands.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Boot an instance disk: clone the Glance image at LOCATION to POOL/<UUID>_<DISK> and grow it.
    Boot {
        /// The Glance image location (rbd://fsid/pool/image/snap).
        location: Location,
        /// The instance uuid.
        #[arg(long)]
        instance: String,
        /// Pool of the instance disks.
        #[arg(long, default_value = "vms")]
        pool: String,
        /// Disk name after `<uuid>_`.
        #[arg(long, default_value = "disk")]
        disk: String,
        /// Flavor disk size (suffixes K, M, G, T); default: the image size.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
    },
    /// Snapshot an instance disk POOL/DISK into a new Glance image (flattened, `snap` protected).
    Snapshot {
        /// POOL/DISK of the instance disk.
        disk: Spec,
        /// The new Glance image id.
        #[arg(long)]
        image_id: String,
        /// Pool of the Glance store.
        #[arg(long, default_value = "images")]
        glance_pool: String,
    },
    /// Delete every <UUID>_* disk of an instance (its nova-resize snapshot first), retrying busy disks.
    Delete {
        /// The instance uuid.
        #[arg(long)]
        instance: String,
        /// Pool of the instance disks.
        #[arg(long, default_value = "vms")]
        pool: String,
    },
}

pub fn run(cluster: &Cluster, cmd: &Cmd, out: &Out) -> Result<()> {
    match cmd {
        Cmd::Boot { location, instance, pool, disk, size } => {
            let mut b = BootDisk::new(location, instance);
            b.disk_name(disk);
            if let Some(size) = size {
                b.size(*size);
            }
            let d = b.run(&Pool::open(cluster, pool)?)?;
            out.result(json!({"pool": d.pool, "name": d.name, "parent": d.parent, "size": d.size}), |_| {
                format!("{}/{} <- {} ({})", d.pool, d.name, d.parent, bytes(d.size))
            });
            Ok(())
        }
        Cmd::Snapshot { disk, image_id, glance_pool } => {
            if disk.snap.is_some() {
                return Err(Error::invalid("rbdlc", "give the disk as POOL/DISK, without @SNAP"));
            }
            let pool = Pool::open_ns(cluster, &disk.pool, &disk.namespace)?;
            let bar = out.bar("flatten", 0);
            let mut cb = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
                ControlFlow::Continue(())
            };
            let s =
                InstanceSnapshot::new(glance_pool, image_id).run(&pool, &disk.image, &mut Progress::new(&mut cb))?;
            bar.finish_and_clear();
            out.result(json!({"location": s.location.to_string(), "size": s.size, "temp_snap": s.temp_snap}), |_| {
                format!("{} ({}; temporary snapshot {} removed)", s.location, bytes(s.size), s.temp_snap)
            });
            Ok(())
        }
        Cmd::Delete { instance, pool } => {
            let report = nova::delete_instance_disks(&Pool::open(cluster, pool)?, instance, &RetryPolicy::default())?;
            let disks: Vec<_> = report
                .iter()
                .map(|d| {
                    let (outcome, error) = match &d.outcome {
                        DiskOutcome::Removed => ("removed", None),
                        DiskOutcome::NotFound => ("not_found", None),
                        DiskOutcome::Busy => ("busy", None),
                        DiskOutcome::Error { message, .. } => ("error", Some(message.clone())),
                    };
                    json!({"name": d.name, "outcome": outcome, "attempts": d.attempts,
                        "removed_resize_snap": d.removed_resize_snap, "error": error})
                })
                .collect();
            out.result(json!({"pool": pool, "instance": instance, "disks": disks}), |v| {
                let lines: Vec<String> = v["disks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        format!(
                            "{pool}/{}: {} ({} attempts)",
                            d["name"].as_str().unwrap_or(""),
                            d["outcome"].as_str().unwrap_or(""),
                            d["attempts"]
                        )
                    })
                    .collect();
                if lines.is_empty() {
                    format!("no disks of instance {instance} in {pool}")
                } else {
                    lines.join("\n")
                }
            });
            let failed = report.iter().find_map(|d| match &d.outcome {
                DiskOutcome::Busy => Some(rbd_core::ErrorKind::Busy),
                DiskOutcome::Error { kind, .. } => Some(*kind),
                _ => None,
            });
            match failed {
                Some(kind) => Err(Error::new(kind, "rbdlc", "some disks were not removed")),
                None => Ok(()),
            }
        }
    }
}
