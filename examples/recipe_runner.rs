//! Runs one recipe in its own process, so a test can crash it at a step boundary with
//! `RBD_CORE_FAILPOINTS="<recipe>.<step>=kill"` (SIGKILL: no undo runs) and then check what
//! `reconcile` makes of the leftovers (`tests/recipes_reconcile.rs`).
//!
//! ```text
//! recipe_runner glance.upload POOL IMAGE_ID SIZE
//! recipe_runner nova.snapshot POOL DISK GLANCE_POOL NEW_IMAGE_ID
//! recipe_runner cinder.create_from_volume POOL SRC_ID DST_ID SIZE MAX_CLONE_DEPTH 1|2
//! recipe_runner cinder.delete_volume POOL VOLUME_ID [keep]
//! recipe_runner backup.create POOL VOLUME_ID BACKUP_POOL BACKUP_ID [PARENT_ID]
//! recipe_runner throttle.hold POOL PREFIX SLOTS
//! ```
//!
//! Environment: `CEPH_CONF`, `RBD_TEST_CLIENT_ID` (default `admin`), `RBD_TEST_CEPH_CONF2`
//! (the backup cluster of `backup.create`; default: the same cluster). Prints `OK` (or
//! `HOLDING <slot>`) on success, `ERROR <message>` on failure (exit code 1).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use rbd_core::recipes::backup::{Backup, VolumeRef};
use rbd_core::recipes::cinder::{DeleteVolume, VolumeFromVolume};
use rbd_core::recipes::glance::GlanceStore;
use rbd_core::recipes::nova::InstanceSnapshot;
use rbd_core::recipes::throttle::Throttle;
use rbd_core::{CloneFormat, Cluster, Error, Pool, Progress, Result};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn num(op: &'static str, s: &str) -> Result<u64> {
    s.parse().map_err(|_| Error::invalid(op, format!("not a number: {s}")))
}

fn run(args: &[String]) -> Result<()> {
    let id = std::env::var("RBD_TEST_CLIENT_ID").unwrap_or_else(|_| "admin".into());
    let conf = std::env::var_os("CEPH_CONF").map(PathBuf::from);
    let cluster = Cluster::connect(conf.as_deref(), &id)?;
    let none = &mut Progress::none();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["glance.upload", pool, image, size] => {
            let size = num("glance.upload", size)?;
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            GlanceStore::new(&Pool::open(&cluster, pool)?).upload(image, &data[..], Some(size), none)?;
        }
        ["nova.snapshot", pool, disk, glance_pool, new_image] => {
            InstanceSnapshot::new(glance_pool, new_image).run(&Pool::open(&cluster, pool)?, disk, none)?;
        }
        ["cinder.create_from_volume", pool, src, dst, size, depth, format] => {
            let format = if *format == "1" { CloneFormat::V1 } else { CloneFormat::V2 };
            VolumeFromVolume::new(src, dst, num("cinder", size)?)
                .max_clone_depth(u32::try_from(num("cinder", depth)?).unwrap_or(u32::MAX))
                .clone_format(format)
                .run(&Pool::open(&cluster, pool)?, none)?;
        }
        ["cinder.delete_volume", pool, volume, rest @ ..] => {
            DeleteVolume::new(volume)
                .keep_children_as_clones(rest == ["keep"])
                .run(&Pool::open(&cluster, pool)?, none)?;
        }
        ["backup.create", pool, volume, backup_pool, backup_id, parent @ ..] => {
            let conf2 = std::env::var_os("RBD_TEST_CEPH_CONF2").map(PathBuf::from);
            let c2 = if conf2.is_some() { Cluster::connect(conf2.as_deref(), &id)? } else { cluster.clone() };
            let volumes = Pool::open(&cluster, pool)?;
            let backups = Pool::open(&c2, backup_pool)?;
            let vol = VolumeRef::cinder(&volumes, volume);
            Backup::new(&vol, &backups, backup_id).parent(parent.first().copied()).run(none)?;
        }
        ["throttle.hold", pool, prefix, slots] => {
            let pool = Pool::open(&cluster, pool)?;
            let slots = usize::try_from(num("throttle", slots)?).unwrap_or(1);
            let mut t = Throttle::new(&pool, slots)?;
            t.prefix(prefix).label("recipe_runner");
            let guard = t.acquire(Some(std::time::Duration::from_secs(60)))?;
            say(&format!("HOLDING {}", guard.slot()));
            loop {
                std::thread::park();
            }
        }
        _ => return Err(Error::invalid("recipe_runner", format!("unknown recipe or arguments: {args:?}"))),
    }
    say("OK");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("ERROR {e}"));
            ExitCode::FAILURE
        }
    }
}
