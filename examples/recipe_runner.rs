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
//! recipe_runner cinder.delete_snapshot POOL VOLUME_ID SNAPSHOT_ID
//! recipe_runner backup.restore BACKUP_POOL VOLUME_ID BACKUP_ID TARGET_POOL TARGET_IMAGE
//! recipe_runner groups.snapshot POOL GROUP_ID SNAP_ID
//! recipe_runner throttle.flatten POOL IMAGE SLOT_POOL PREFIX LEASE_MS
//! recipe_runner lock.hold POOL IMAGE
//! recipe_runner throttle.zombie POOL PREFIX LEASE_MS DATA_IMAGE
//! ```
//!
//! Environment: `CEPH_CONF`, `RBD_TEST_CLIENT_ID` (default `admin`), `RBD_TEST_CEPH_CONF2`
//! (the backup cluster of `backup.create` and `backup.restore`; default: the same cluster).
//! Prints `ADDR <client address>` first, then `OK` (or `HOLDING <slot>`) on success, `ERROR <message>` on failure (exit code 1).
//!
//! `throttle.flatten` flattens a clone through a one-slot [`Throttle`] (heartbeat LEASE_MS/3);
//! `RBD_RUNNER_KILL_AT=acquired|flatten|releasing` SIGKILLs the process right after the slot
//! is taken, at the first flatten progress report, or just before the slot is released (the
//! throttle's observer hooks), so a test can crash it while it holds the slot.
//!
//! `lock.hold` takes the managed exclusive lock of an image, `throttle.zombie` a flatten slot;
//! both print `HOLDING <client address>` and then, for each `write` line on stdin, write 4 KiB
//! on their connection (to IMAGE, or DATA_IMAGE in POOL) and print `WRITE OK` or
//! `WRITE ERR <kind> <message>`: a test SIGSTOPs the holder, has another client break the lock
//! (which blocklists the holder), SIGCONTs it and asks it to write (the zombie write must fail).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use rbd_core::recipes::backup::{Backup, Restore, VolumeRef};
use rbd_core::recipes::cinder::{DeleteSnapshot, DeleteVolume, VolumeFromVolume};
use rbd_core::recipes::flatten::FlattenGate;
use rbd_core::recipes::glance::GlanceStore;
use rbd_core::recipes::groups::ConsistencyGroups;
use rbd_core::recipes::nova::InstanceSnapshot;
use rbd_core::recipes::throttle::{Throttle, ThrottleObserver};
use rbd_core::{CloneFormat, Cluster, Error, Image, Pool, Progress, Result};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn num(op: &'static str, s: &str) -> Result<u64> {
    s.parse().map_err(|_| Error::invalid(op, format!("not a number: {s}")))
}

/// SIGKILLs this process (a crash: no destructor, no undo).
fn die() -> ! {
    // SAFETY: plain libc calls on our own pid.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    std::process::abort()
}

/// `RBD_RUNNER_KILL_AT` as the throttle sees it: kill on acquire or before release.
struct KillAt(String);

impl ThrottleObserver for KillAt {
    fn acquired(&self, _slot: usize, _waited: Duration) {
        if self.0 == "acquired" {
            die();
        }
    }
    fn releasing(&self, _slot: usize, _held: Duration) {
        if self.0 == "releasing" {
            die();
        }
    }
}

/// Announces `HOLDING <addr>`, then answers each `write` line on stdin with a 4 KiB write
/// through `img` (on the holder's connection) until stdin closes.
fn serve_zombie(cluster: &Cluster, img: &Image) -> Result<()> {
    say(&format!("HOLDING {}", cluster.addrs()?));
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if line.trim() == "write" {
            match img.write(4096, &[0x5a; 4096]) {
                Ok(()) => say("WRITE OK"),
                Err(e) => say(&format!("WRITE ERR {:?} {e}", e.kind())),
            }
        }
        line.clear();
    }
    Ok(())
}

fn lease_of(op: &'static str, ms: &str) -> Result<(Duration, Duration)> {
    let lease = Duration::from_millis(num(op, ms)?);
    Ok((lease, lease / 3))
}

fn run(args: &[String]) -> Result<()> {
    let id = std::env::var("RBD_TEST_CLIENT_ID").unwrap_or_else(|_| "admin".into());
    let conf = std::env::var_os("CEPH_CONF").map(PathBuf::from);
    let cluster = Cluster::connect(conf.as_deref(), &id)?;
    // So a test can fence this process after killing it (its watches then go at once).
    say(&format!("ADDR {}", cluster.addrs()?));
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
        ["cinder.delete_snapshot", pool, volume, snap] => {
            DeleteSnapshot::new(volume, snap).run(&Pool::open(&cluster, pool)?, none)?;
        }
        ["backup.restore", backup_pool, volume, backup_id, target_pool, target_image] => {
            let conf2 = std::env::var_os("RBD_TEST_CEPH_CONF2").map(PathBuf::from);
            let c2 = if conf2.is_some() { Cluster::connect(conf2.as_deref(), &id)? } else { cluster.clone() };
            let backups = Pool::open(&c2, backup_pool)?;
            let tpool = Pool::open(&cluster, target_pool)?;
            let target = VolumeRef::image(&tpool, target_image);
            Restore::new(&backups, volume, backup_id, &target).run(none)?;
        }
        ["groups.snapshot", pool, group, snap] => {
            ConsistencyGroups::new(&Pool::open(&cluster, pool)?).create_snapshot(group, snap, "fault", "")?;
        }
        ["throttle.flatten", pool, image, slot_pool, prefix, lease_ms] => {
            let (lease, hb) = lease_of("throttle.flatten", lease_ms)?;
            let kill_at = std::env::var("RBD_RUNNER_KILL_AT").unwrap_or_default();
            let mut t = Throttle::new(&Pool::open(&cluster, slot_pool)?, 1)?;
            t.prefix(prefix).lease(lease, hb).label("recipe_runner").observer(Arc::new(KillAt(kill_at.clone())));
            let img = Image::open(&Pool::open(&cluster, pool)?, image)?;
            let mut cb = |_done: u64, _total: u64| {
                if kill_at == "flatten" {
                    die();
                }
                ControlFlow::Continue(())
            };
            t.flatten(&img, &mut Progress::new(&mut cb))?;
        }
        ["lock.hold", pool, image] => {
            let img = Image::open(&Pool::open(&cluster, pool)?, image)?;
            img.lock_acquire_raw()?;
            img.write(0, &[0xa5; 4096])?;
            return serve_zombie(&cluster, &img);
        }
        ["throttle.zombie", pool, prefix, lease_ms, data_image] => {
            let p = Pool::open(&cluster, pool)?;
            let (lease, hb) = lease_of("throttle.zombie", lease_ms)?;
            let mut t = Throttle::new(&p, 1)?;
            t.prefix(prefix).lease(lease, hb).label("recipe_runner");
            let img = Image::open(&p, data_image)?;
            let _slot = t.acquire(Some(Duration::from_secs(60)))?;
            return serve_zombie(&cluster, &img);
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
