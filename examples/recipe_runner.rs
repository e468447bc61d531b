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
//! recipe_runner glance.upload_pattern POOL IMAGE_ID SIZE SEED ORDER
//! recipe_runner glance.delete LOCATION
//! recipe_runner nova.boot LOCATION POOL INSTANCE_UUID SIZE
//! recipe_runner nova.snapshot_throttled POOL DISK GLANCE_POOL NEW_IMAGE_ID SLOT_POOL PREFIX SLOTS
//! recipe_runner nova.delete_disks POOL INSTANCE_UUID
//! recipe_runner cinder.create POOL VOLUME_ID SIZE
//! recipe_runner backup.delete BACKUP_POOL VOLUME_ID BACKUP_ID SOURCE_POOL
//! recipe_runner lock.write POOL IMAGE INDEX ROUNDS REGION
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
//!
//! For the concurrency suite (`tests/fault_concurrency.rs`): `glance.upload_pattern` uploads
//! `pattern(SEED, SIZE)` (the tests' `common::pattern`) with object order ORDER;
//! `nova.snapshot_throttled` flattens through a SLOTS-slot [`Throttle`] `SLOT_POOL/PREFIX.*`
//! shared with other processes; `nova.delete_disks` fails unless every disk was removed;
//! `backup.delete` deletes a backup on the `RBD_TEST_CEPH_CONF2` cluster with its source
//! snapshot. `lock.write` is writer INDEX of an image with the `exclusive-lock` feature laid out
//! as a 4 KiB header then one REGION-byte region per writer: ROUNDS times it takes the managed
//! lock (retrying while another client holds it), writes its token to the header and
//! `pattern(lock_seed(INDEX, round), REGION)` to its region, reads the header back (another
//! token there means two owners at once: a conflict) and releases; it prints
//! `OK attempts=<acquire attempts> conflicts=<n>`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use rbd_core::recipes::backup::delete_backup;
use rbd_core::recipes::backup::{Backup, Restore, VolumeRef};
use rbd_core::recipes::cinder;
use rbd_core::recipes::cinder::{DeleteSnapshot, DeleteVolume, VolumeFromVolume};
use rbd_core::recipes::flatten::FlattenGate;
use rbd_core::recipes::glance::DeleteOutcome as GlanceDeleted;
use rbd_core::recipes::glance::GlanceStore;
use rbd_core::recipes::groups::ConsistencyGroups;
use rbd_core::recipes::location::Location;
use rbd_core::recipes::nova::{self, BootDisk, DiskOutcome, InstanceSnapshot, RetryPolicy};
use rbd_core::recipes::throttle::{Throttle, ThrottleObserver};
use rbd_core::{CloneFormat, Cluster, Error, ErrorKind, Image, Pool, Progress, Result};

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

/// The tests' `common::pattern`: deterministic pseudo-random bytes (xorshift).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The region seed of `lock.write` writer `index` in `round` (the test computes the same).
fn lock_seed(index: u64, round: u64) -> u64 {
    1_000_000 + index * 1000 + round
}

/// The header token of `lock.write` writer `index` in `round`.
fn lock_token(index: u64, round: u64) -> Vec<u8> {
    pattern(9_000_000 + index * 1000 + round, 4096)
}

/// `lock.write`: ROUNDS x (acquire, token, region, check, release); returns (attempts, conflicts).
fn lock_rounds(img: &Image, index: u64, rounds: u64, region: u64) -> Result<(u64, u64)> {
    let (mut attempts, mut conflicts) = (0u64, 0u64);
    let mut x = (u64::from(std::process::id()) << 8 | index) | 1;
    for round in 0..rounds {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            attempts += 1;
            match img.lock_acquire_raw() {
                Ok(()) => break,
                Err(e) if matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::Busy) => {
                    if std::time::Instant::now() > deadline {
                        return Err(e.with_message("lock.write: no turn within 60 s"));
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    std::thread::sleep(Duration::from_millis(2 + x % 15));
                }
                Err(e) => return Err(e),
            }
        }
        let token = lock_token(index, round);
        img.write(0, &token)?;
        img.write(4096 + index * region, &pattern(lock_seed(index, round), region as usize))?;
        if img.read_vec(0, 4096)? != token {
            conflicts += 1;
        }
        img.lock_release()?;
    }
    Ok((attempts, conflicts))
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
        ["glance.upload_pattern", pool, image, size, seed, order] => {
            let size = num("glance.upload_pattern", size)?;
            let data = pattern(num("glance.upload_pattern", seed)?, size as usize);
            let order = u8::try_from(num("glance.upload_pattern", order)?).unwrap_or(0);
            GlanceStore::new(&Pool::open(&cluster, pool)?).order(order).upload(image, &data[..], Some(size), none)?;
        }
        ["glance.delete", location] => {
            let loc: Location = location.parse()?;
            let pool = loc.pool.clone().unwrap_or_default();
            let outcome = GlanceStore::new(&Pool::open(&cluster, &pool)?).delete(&loc)?;
            if outcome != GlanceDeleted::Removed {
                return Err(Error::new(ErrorKind::Other, "glance.delete", format!("{outcome:?}")));
            }
        }
        ["nova.boot", location, pool, uuid, size] => {
            let loc: Location = location.parse()?;
            BootDisk::new(&loc, uuid).size(num("nova.boot", size)?).run(&Pool::open(&cluster, pool)?)?;
        }
        ["nova.snapshot_throttled", pool, disk, glance_pool, new_image, slot_pool, prefix, slots] => {
            let slots = usize::try_from(num("nova.snapshot_throttled", slots)?).unwrap_or(1);
            let mut t = Throttle::new(&Pool::open(&cluster, slot_pool)?, slots)?;
            t.prefix(prefix).label("recipe_runner").wait(Some(Duration::from_secs(60)));
            InstanceSnapshot::new(glance_pool, new_image).gate(Arc::new(t)).run(
                &Pool::open(&cluster, pool)?,
                disk,
                none,
            )?;
        }
        ["nova.delete_disks", pool, uuid] => {
            let quick = RetryPolicy { attempts: 3, initial: Duration::from_millis(200), max: Duration::from_secs(1) };
            for d in nova::delete_instance_disks(&Pool::open(&cluster, pool)?, uuid, &quick)? {
                if d.outcome != DiskOutcome::Removed {
                    return Err(Error::new(
                        ErrorKind::Other,
                        "nova.delete_disks",
                        format!("{}: {:?}", d.name, d.outcome),
                    ));
                }
            }
        }
        ["cinder.create", pool, volume, size] => {
            cinder::create(&Pool::open(&cluster, pool)?, volume, num("cinder.create", size)?)?;
        }
        ["backup.delete", backup_pool, volume, backup_id, source_pool] => {
            let conf2 = std::env::var_os("RBD_TEST_CEPH_CONF2").map(PathBuf::from);
            let c2 = if conf2.is_some() { Cluster::connect(conf2.as_deref(), &id)? } else { cluster.clone() };
            let source = Pool::open(&cluster, source_pool)?;
            delete_backup(
                &Pool::open(&c2, backup_pool)?,
                volume,
                backup_id,
                Some(&VolumeRef::cinder(&source, volume)),
            )?;
        }
        ["lock.write", pool, image, index, rounds, region] => {
            let img = Image::open(&Pool::open(&cluster, pool)?, image)?;
            let (index, rounds, region) =
                (num("lock.write", index)?, num("lock.write", rounds)?, num("lock.write", region)?);
            let (attempts, conflicts) = lock_rounds(&img, index, rounds, region)?;
            say(&format!("OK attempts={attempts} conflicts={conflicts}"));
            return Ok(());
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
