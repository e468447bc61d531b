//! Fault suite (issue #10), part 7: concurrency. Many threads of this process and several
//! `examples/recipe_runner.rs` child processes run the recipes at once, on shared and on
//! distinct images, bounded in count and in time:
//!
//! * [`recipes_at_once_across_threads_and_processes`]: 8 thread lanes and 3 process lanes
//!   (a process lane runs each recipe in a child process, so 3 children are busy at any time),
//!   all at once; each lane runs 2 rounds of its recipes, one after the other. A round uploads its
//!   own Glance image, boots an instance disk from **one shared** Glance image, writes to the
//!   disk, snapshots the instance into Glance (the flatten goes through a 2-slot cluster-wide
//!   flatten throttle that threads and processes share), creates a Cinder volume, writes it,
//!   backs it up to the second cluster, clones a volume from it, then deletes everything again
//!   with the recipes (backup, clone, volume, disks, Glance images). Every image written is
//!   checksummed (sha256) against what its writer wrote: the uploads, the snapshot images, the
//!   backups and the cloned volumes.
//! * [`lock_writers_take_turns_on_one_image`]: 6 threads and 3 processes write the **same**
//!   image through its managed exclusive lock (`rbd_lock_acquire` / `rbd_lock_release`), each
//!   round writing its token into a shared header and its own region; the final content is
//!   checksummed region by region, and a header that changed under a holder is a conflict.
//!
//! A watchdog thread bounds each test ([`BUDGET`]): past it, the test is deadlocked; the
//! watchdog prints which lanes are stuck in which operation (and for how long), records the
//! figure as failed, kills the child processes, removes what the test created and exits the
//! test process with status 101 (a deadlocked thread cannot be failed any other way).
//!
//! Figures: operations done, deadlocks (must be 0), lost writes (checksum mismatches, must be
//! 0), leftovers (names the test owns still present after the recipes' own deletes, must be 0).
//! All names carry a random token; a guard removes everything with it, also on failure.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{pattern, purge_image, record_figure};
use rbd_core::recipes::backup::{self, Backup, VolumeRef};
use rbd_core::recipes::cinder::{self, DeleteVolume, VolumeFromVolume};
use rbd_core::recipes::glance::{DeleteOutcome as GlanceDeleted, GlanceStore};
use rbd_core::recipes::location::Location;
use rbd_core::recipes::nova::{self, BootDisk, DiskOutcome, InstanceSnapshot, RetryPolicy};
use rbd_core::recipes::throttle::Throttle;
use rbd_core::{Cluster, ErrorKind, Features, Image, ImageOptions, Pool, Progress};
use serde_json::json;
use sha2::{Digest, Sha256};

const SUITE: &str = "fault_concurrency";
/// The whole test, lanes and clean-up, must finish within this; past it, it is a deadlock.
const BUDGET: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// Thread lanes and process lanes of the recipe test, and the rounds each lane runs.
const THREADS: usize = 8;
const PROCS: usize = 3;
const ROUNDS: usize = 2;
/// Object order of the Glance images (4 MiB objects: several objects per image).
const ORDER: u8 = 22;
/// The shared Glance image every lane boots from.
const BASE_SIZE: u64 = 8 * MIB;
/// The instance disks (grown from the image at boot).
const DISK_SIZE: u64 = 12 * MIB;
/// What a lane writes into its disk before the snapshot.
const DISK_WRITE: u64 = 512 * KIB;
/// Each lane's volume; its last MiB stays a hole.
const VOL_SIZE: u64 = 6 * MIB;
const VOL_DATA: u64 = 5 * MIB;
/// Flatten slots shared by every lane (threads and processes).
const SLOTS: usize = 2;

/// Writers of the lock test, their rounds and region size.
const LOCK_THREADS: u64 = 6;
const LOCK_PROCS: u64 = 3;
const LOCK_ROUNDS: u64 = 6;
const LOCK_REGION: u64 = 256 * KIB;

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// `pool/image[@snap]`, for messages.
fn spec(pool: &Pool, image: &str, snap: Option<&str>) -> String {
    match snap {
        Some(s) => format!("{}/{image}@{s}", pool.name()),
        None => format!("{}/{image}", pool.name()),
    }
}

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// sha256 of the first `len` bytes of `pool/image[@snap]`.
fn sha_of(pool: &Pool, image: &str, snap: Option<&str>, len: u64) -> Result<String, String> {
    let img = match snap {
        Some(s) => Image::open_at_snap(pool, image, s),
        None => Image::open_read_only(pool, image),
    }
    .map_err(|e| format!("open {}: {e}", spec(pool, image, snap)))?;
    let size = img.size().map_err(|e| e.to_string())?;
    if size != len {
        return Err(format!("{} is {size} bytes, expected {len}", spec(pool, image, snap)));
    }
    Ok(sha(&img.read_vec(0, len as usize).map_err(|e| e.to_string())?))
}

// ---------------------------------------------------------------------------------------------
// The board (who does what since when), the watchdog and the clean-up guard.

struct LaneState {
    name: String,
    op: String,
    since: Instant,
    done: bool,
}

/// What every lane is doing, and the child processes alive (pid, client address once it
/// said it); read by the watchdog, which sets `aborted` so that lanes start nothing new.
#[derive(Default)]
struct Board {
    lanes: Mutex<Vec<LaneState>>,
    children: Mutex<Vec<(u32, Option<String>)>>,
    aborted: AtomicBool,
}

impl Board {
    fn add(&self, name: String) -> usize {
        let mut l = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        l.push(LaneState { name, op: "starting".into(), since: Instant::now(), done: false });
        l.len() - 1
    }

    fn set(&self, lane: usize, op: &str) {
        let mut l = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        l[lane].op = op.to_string();
        l[lane].since = Instant::now();
    }

    fn done(&self, lane: usize) {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())[lane].done = true;
    }

    /// Every lane still running: `name: op (for N s)`.
    fn stuck(&self) -> Vec<String> {
        let l = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        l.iter()
            .filter(|s| !s.done)
            .map(|s| format!("{}: in {} for {:.1} s", s.name, s.op, s.since.elapsed().as_secs_f64()))
            .collect()
    }
}

/// Everything the test owns (names containing one of `marks`), removable at any time.
struct Owned {
    marks: Vec<String>,
    pools: Vec<Pool>,
    backups: Option<Pool>,
    slots: Option<Throttle>,
}

impl Owned {
    fn owns(&self, name: &str) -> bool {
        self.marks.iter().any(|m| name.contains(m.as_str()))
    }

    /// What is left: `pool/image`, `pool/trash:<name>`, `pool/object` (backup metadata).
    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.pools.iter().chain(self.backups.iter()) {
            for n in p.image_names().unwrap_or_default() {
                if self.owns(&n) {
                    out.push(format!("{}/{n}", p.name()));
                }
            }
            for t in p.trash_list().unwrap_or_default() {
                if self.owns(&t.name) {
                    out.push(format!("{}/trash:{}", p.name(), t.name));
                }
            }
        }
        if let Some(b) = &self.backups {
            for o in b.object_list().unwrap_or_default() {
                if o.starts_with("backup.") && self.owns(&o) {
                    out.push(format!("{}/{o}", b.name()));
                }
            }
        }
        out.sort();
        out
    }

    /// Removes everything owned (children before parents: a few passes).
    fn purge(&self) {
        if let Some(t) = &self.slots {
            let _ = t.remove_slots();
        }
        for _ in 0..4 {
            let mut any = false;
            for p in self.pools.iter().chain(self.backups.iter()) {
                for n in p.image_names().unwrap_or_default() {
                    if self.owns(&n) {
                        any = true;
                        purge_image(p, &n);
                        // A remove interrupted by a kill can leave a directory entry without a
                        // header (listed, but opening it gives ENOENT): a plain remove clears it.
                        let _ = p.remove_image(&n);
                    }
                }
                for t in p.trash_list().unwrap_or_default() {
                    if self.owns(&t.name) {
                        any = true;
                        let _ = p.trash_remove(&t.id, true);
                    }
                }
            }
            if !any {
                break;
            }
        }
        if let Some(b) = &self.backups {
            for o in b.object_list().unwrap_or_default() {
                if o.starts_with("backup.") && self.owns(&o) {
                    let _ = b.object_remove(&o);
                }
            }
        }
    }
}

/// Purges on drop (success, failure or panic).
struct Cleanup(Arc<Owned>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.purge();
    }
}

/// Fails the test process if it is not dropped within `budget`.
struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn start(name: &'static str, budget: Duration, board: Arc<Board>, owned: Arc<Owned>) -> Watchdog {
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("watchdog-{name}"))
            .spawn(move || {
                if rx.recv_timeout(budget) != Err(mpsc::RecvTimeoutError::Timeout) {
                    return;
                }
                board.aborted.store(true, Ordering::SeqCst);
                let stuck = board.stuck();
                let msg = format!(
                    "DEADLOCK: {SUITE}::{name} did not finish within {budget:?}; stuck: {}",
                    if stuck.is_empty() {
                        "the test's own thread (verification or clean-up)".into()
                    } else {
                        stuck.join("; ")
                    }
                );
                // Straight to fd 2: libtest's capture would be lost with the exit below.
                let _ = writeln!(std::io::stderr().lock(), "\n{msg}\n");
                record_figure(SUITE, name, &msg, false, json!({"deadlocks": stuck.len().max(1), "stuck": stuck}));
                // Kill the children and fence them, so their watches and locks go at once.
                let children = board.children.lock().unwrap_or_else(|p| p.into_inner()).clone();
                for (pid, addr) in children {
                    // SAFETY: kill(2) on a child process this test spawned (still registered).
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    if let (Some(addr), Some(p)) = (addr, owned.pools.first()) {
                        let _ = p.cluster().blocklist_add(&addr, Some(Duration::from_secs(600)));
                    }
                }
                // Clean up, bounded: a stuck lane may hold images open, and a killed child's
                // connection to the backup cluster (not fenced) keeps its watches for ~30 s.
                let (tx, done) = mpsc::channel();
                std::thread::spawn(move || {
                    let t = Instant::now();
                    owned.purge();
                    while !owned.leftovers().is_empty() && t.elapsed() < Duration::from_secs(40) {
                        std::thread::sleep(Duration::from_secs(2));
                        owned.purge();
                    }
                    let _ = tx.send(owned.leftovers());
                });
                let left =
                    done.recv_timeout(Duration::from_secs(50)).unwrap_or_else(|_| vec!["(clean-up hung)".into()]);
                if !left.is_empty() {
                    let _ = writeln!(std::io::stderr().lock(), "left behind after the deadlock: {left:?}");
                }
                let _ = writeln!(std::io::stderr().lock(), "{msg}");
                std::process::exit(101);
            })
            .expect("spawn the watchdog");
        Watchdog { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the recipe runner with `args` to completion; its stdout on success. The child's pid
/// and client address are on the board while it runs (the watchdog kills and fences it on a
/// deadlock).
fn run_child(board: &Board, args: &[String]) -> Result<String, String> {
    if board.aborted.load(Ordering::SeqCst) {
        return Err("aborted by the watchdog".into());
    }
    let mut child = Command::new(common::runner_bin())
        .args(args)
        .env("RBD_TEST_CLIENT_ID", common::client_id())
        .env_remove("RBD_CORE_FAILPOINTS")
        .env_remove("RBD_RUNNER_KILL_AT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn recipe_runner: {e}"))?;
    let pid = child.id();
    board.children.lock().unwrap_or_else(|p| p.into_inner()).push((pid, None));
    let mut stdout = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("ADDR ") {
                let mut ch = board.children.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = ch.iter_mut().find(|c| c.0 == pid) {
                    c.1 = Some(addr.trim().to_string());
                }
            }
            stdout.push_str(&line);
            stdout.push('\n');
        }
    }
    let status = child.wait();
    board.children.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| c.0 != pid);
    let status = status.map_err(|e| format!("wait for recipe_runner: {e}"))?;
    if status.success() {
        Ok(stdout)
    } else {
        let how = status.signal().map_or(format!("{status}"), |s| format!("signal {s}"));
        Err(format!("recipe_runner {args:?} failed ({how}): {}", stdout.trim()))
    }
}

// ---------------------------------------------------------------------------------------------
// The recipe lanes.

/// What every lane shares.
struct Ctx {
    tok: String,
    uuid_prefix: String,
    images: Pool,
    vms: Pool,
    volumes: Pool,
    backups: Pool,
    throttle: Throttle,
    base: Location,
    base_data: Vec<u8>,
}

impl Ctx {
    fn up_id(&self, w: usize) -> String {
        format!("fcc-{}-w{w}-up", self.tok)
    }
    fn snap_id(&self, w: usize) -> String {
        format!("fcc-{}-w{w}-snap", self.tok)
    }
    fn uuid(&self, w: usize) -> String {
        format!("{}4000-8000-{w:012x}", self.uuid_prefix)
    }
    fn vol_id(&self, w: usize) -> String {
        format!("fcc-{}-w{w}", self.tok)
    }
    fn clone_id(&self, w: usize) -> String {
        format!("fcc-{}-w{w}c", self.tok)
    }
    fn backup_id(&self, w: usize) -> String {
        format!("fcc-{}-w{w}b", self.tok)
    }
}

/// An upload's size: not a multiple of the object size, different per lane.
fn up_size(w: usize) -> u64 {
    3 * MIB + 4608 * w as u64 + 512
}

/// Where a lane writes into its disk (unaligned; some cross an object boundary).
fn disk_off(w: usize) -> u64 {
    640 * KIB * (w % 16) as u64 + 4096
}

#[derive(Default)]
struct LaneResult {
    name: String,
    ops: u64,
    checks: u64,
    mismatches: Vec<String>,
    errors: Vec<String>,
}

struct Lane<'a> {
    ctx: &'a Ctx,
    board: &'a Board,
    id: usize,
    w: usize,
    process: bool,
    res: LaneResult,
}

impl Lane<'_> {
    /// One recipe: in this thread (`f`) or in a child process (`args`).
    fn recipe(&mut self, what: &str, f: impl FnOnce() -> rbd_core::Result<()>, args: &[&str]) -> bool {
        self.board.set(self.id, what);
        let r = if self.board.aborted.load(Ordering::SeqCst) {
            Err("aborted by the watchdog".to_string())
        } else if self.process {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            run_child(self.board, &args).map(drop)
        } else {
            f().map_err(|e| format!("{what}: {e}"))
        };
        match r {
            Ok(()) => {
                self.res.ops += 1;
                true
            }
            Err(e) => {
                self.res.errors.push(format!("{what}: {e}"));
                false
            }
        }
    }

    /// A checksum comparison of `pool/image[@snap]` with `want`.
    fn check(&mut self, pool: &Pool, image: &str, snap: Option<&str>, want: &[u8]) {
        let what = spec(pool, image, snap);
        self.board.set(self.id, &format!("checksum {what}"));
        self.res.checks += 1;
        match sha_of(pool, image, snap, want.len() as u64) {
            Ok(h) if h == sha(want) => {}
            Ok(h) => self.res.mismatches.push(format!("{what}: sha256 {h}, its writer wrote {}", sha(want))),
            Err(e) => self.res.errors.push(format!("checksum {what}: {e}")),
        }
    }

    /// I/O of this process (both kinds of lanes write their disks and volumes from here).
    fn write(&mut self, pool: &Pool, image: &str, off: u64, data: &[u8]) -> bool {
        self.board.set(self.id, &format!("write {}", spec(pool, image, None)));
        match Image::open(pool, image).and_then(|i| i.write(off, data)) {
            Ok(()) => true,
            Err(e) => {
                self.res.errors.push(format!("write {}: {e}", spec(pool, image, None)));
                false
            }
        }
    }

    fn run(mut self) -> LaneResult {
        let r = self.steps();
        if r.is_none() && self.res.errors.is_empty() {
            self.res.errors.push("stopped".into());
        }
        self.board.done(self.id);
        self.res
    }

    /// The lane's rounds; `None` once a recipe failed (the guard removes the rest).
    fn steps(&mut self) -> Option<()> {
        for r in 0..ROUNDS {
            self.round(self.w + r * (THREADS + PROCS))?;
        }
        Some(())
    }

    /// One round: the recipes on the names and data of `w` (unique per lane and round).
    fn round(&mut self, w: usize) -> Option<()> {
        let ctx = self.ctx;
        let (up_id, snap_id, uuid) = (ctx.up_id(w), ctx.snap_id(w), ctx.uuid(w));
        let (vol_id, clone_id, bid) = (ctx.vol_id(w), ctx.clone_id(w), ctx.backup_id(w));
        let disk = format!("{uuid}_disk");
        let fsid = ctx.images.cluster().fsid().ok()?;
        let loc = |image: &str| Location::new(&fsid, "images", image, "snap");
        let n = |v: u64| v.to_string();

        // Glance: upload a distinct image.
        let size = up_size(w);
        let data = pattern(100 + w as u64, size as usize);
        let ok = self.recipe(
            &format!("glance.upload images/{up_id}"),
            || {
                let mut store = GlanceStore::new(&ctx.images);
                store.order(ORDER).upload(&up_id, &data[..], Some(size), &mut Progress::none()).map(drop)
            },
            &["glance.upload_pattern", "images", &up_id, &n(size), &n(100 + w as u64), &n(u64::from(ORDER))],
        );
        ok.then_some(())?;
        self.check(&ctx.images, &up_id, Some("snap"), &data);

        // Nova: boot from the shared image, write, snapshot into Glance through the throttle.
        let ok = self.recipe(
            &format!("nova.boot vms/{disk}"),
            || BootDisk::new(&ctx.base, &uuid).size(DISK_SIZE).run(&ctx.vms).map(drop),
            &["nova.boot", &ctx.base.to_string(), "vms", &uuid, &n(DISK_SIZE)],
        );
        ok.then_some(())?;
        let parent = Image::open_read_only(&ctx.vms, &disk).and_then(|i| i.parent()).ok().flatten();
        let want_parent = Some(format!("images/{}@snap", ctx.base.image));
        if parent.map(|p| format!("{}/{}@{}", p.pool, p.image, p.snap)) != want_parent {
            self.res.mismatches.push(format!("vms/{disk}: parent is not {want_parent:?}"));
        }
        let region = pattern(200 + w as u64, DISK_WRITE as usize);
        self.write(&ctx.vms, &disk, disk_off(w), &region).then_some(())?;
        let mut want_disk = ctx.base_data.clone();
        want_disk.resize(DISK_SIZE as usize, 0);
        want_disk[disk_off(w) as usize..(disk_off(w) + DISK_WRITE) as usize].copy_from_slice(&region);
        let ok = self.recipe(
            &format!("nova.snapshot vms/{disk} -> images/{snap_id}"),
            || {
                let mut s = InstanceSnapshot::new("images", &snap_id);
                s.gate(Arc::new(ctx.throttle.clone())).run(&ctx.vms, &disk, &mut Progress::none()).map(drop)
            },
            &[
                "nova.snapshot_throttled",
                "vms",
                &disk,
                "images",
                &snap_id,
                "rbd",
                ctx.throttle.slot_prefix(),
                &n(SLOTS as u64),
            ],
        );
        ok.then_some(())?;
        self.check(&ctx.vms, &disk, None, &want_disk);
        self.check(&ctx.images, &snap_id, Some("snap"), &want_disk);

        // Cinder: a volume with data, backed up to the second cluster, cloned.
        let ok = self.recipe(
            &format!("cinder.create volumes/volume-{vol_id}"),
            || cinder::create(&ctx.volumes, &vol_id, VOL_SIZE).map(drop),
            &["cinder.create", "volumes", &vol_id, &n(VOL_SIZE)],
        );
        ok.then_some(())?;
        let mut want_vol = pattern(300 + w as u64, VOL_DATA as usize);
        self.write(&ctx.volumes, &format!("volume-{vol_id}"), 0, &want_vol).then_some(())?;
        want_vol.resize(VOL_SIZE as usize, 0);
        let ok = self.recipe(
            &format!("backup.create volume-{vol_id} -> backups {bid}"),
            || {
                Backup::new(&VolumeRef::cinder(&ctx.volumes, &vol_id), &ctx.backups, &bid)
                    .run(&mut Progress::none())
                    .map(drop)
            },
            &["backup.create", "volumes", &vol_id, "backups", &bid],
        );
        ok.then_some(())?;
        self.board.set(self.id, &format!("backup.list {vol_id}"));
        match backup::list_backups(&ctx.backups, &vol_id) {
            Ok(list) => match list.iter().find(|b| b.backup_id == bid) {
                Some(b) => {
                    let (image, snap) = (b.image.clone(), b.snap.clone());
                    self.check(&ctx.backups, &image, Some(&snap), &want_vol);
                }
                None => self.res.mismatches.push(format!("backup {bid} is not listed: {list:?}")),
            },
            Err(e) => self.res.errors.push(format!("list_backups {vol_id}: {e}")),
        }
        let ok = self.recipe(
            &format!("cinder.create_from_volume volume-{vol_id} -> volume-{clone_id}"),
            || VolumeFromVolume::new(&vol_id, &clone_id, VOL_SIZE).run(&ctx.volumes, &mut Progress::none()).map(drop),
            &["cinder.create_from_volume", "volumes", &vol_id, &clone_id, &n(VOL_SIZE), "5", "2"],
        );
        ok.then_some(())?;
        self.check(&ctx.volumes, &format!("volume-{clone_id}"), None, &want_vol);

        // Everything goes again, with the recipes.
        let ok = self.recipe(
            &format!("backup.delete {bid}"),
            || {
                let src = VolumeRef::cinder(&ctx.volumes, &vol_id);
                backup::delete_backup(&ctx.backups, &vol_id, &bid, Some(&src)).map(drop)
            },
            &["backup.delete", "backups", &vol_id, &bid, "volumes"],
        );
        ok.then_some(())?;
        for id in [&clone_id, &vol_id] {
            let ok = self.recipe(
                &format!("cinder.delete_volume volume-{id}"),
                || {
                    let mut d = DeleteVolume::new(id);
                    d.busy_retries(3, Duration::from_millis(500));
                    d.run(&ctx.volumes, &mut Progress::none()).map(drop)
                },
                &["cinder.delete_volume", "volumes", id],
            );
            ok.then_some(())?;
        }
        let ok = self.recipe(
            &format!("nova.delete_disks {uuid}"),
            || {
                let quick =
                    RetryPolicy { attempts: 3, initial: Duration::from_millis(200), max: Duration::from_secs(1) };
                for d in nova::delete_instance_disks(&ctx.vms, &uuid, &quick)? {
                    if d.outcome != DiskOutcome::Removed {
                        return Err(rbd_core::Error::new(ErrorKind::Other, "nova.delete_disks", format!("{d:?}")));
                    }
                }
                Ok(())
            },
            &["nova.delete_disks", "vms", &uuid],
        );
        ok.then_some(())?;
        for id in [&snap_id, &up_id] {
            let l = loc(id);
            let ok = self.recipe(
                &format!("glance.delete images/{id}"),
                || match GlanceStore::new(&ctx.images).delete(&l)? {
                    GlanceDeleted::Removed => Ok(()),
                    other => Err(rbd_core::Error::new(ErrorKind::Other, "glance.delete", format!("{other:?}"))),
                },
                &["glance.delete", &l.to_string()],
            );
            ok.then_some(())?;
        }
        Some(())
    }
}

#[test]
fn recipes_at_once_across_threads_and_processes() {
    let c = live!();
    let c2 = common::cluster2();
    let t0 = Instant::now();
    let tok = common::token();
    let uuid_prefix = format!("{}-{}-", &tok[..8], &tok[8..12]);
    let open = |c: &Cluster, p: &str| Pool::open(c, p).unwrap();
    let (images, vms, volumes, rbd) = (open(&c, "images"), open(&c, "vms"), open(&c, "volumes"), open(&c, "rbd"));
    let backups = open(&c2, "backups");
    let mut throttle = Throttle::new(&rbd, SLOTS).unwrap();
    throttle.prefix(&format!("fcc-{tok}-slot")).label("fault_concurrency").wait(Some(Duration::from_secs(60)));
    let owned = Arc::new(Owned {
        marks: vec![tok.clone(), uuid_prefix.clone()],
        pools: vec![images.clone(), vms.clone(), volumes.clone(), rbd.clone()],
        backups: Some(backups.clone()),
        slots: Some(throttle.clone()),
    });
    let board = Arc::new(Board::default());
    let _watchdog = Watchdog::start("recipes", BUDGET, Arc::clone(&board), Arc::clone(&owned));
    let _cleanup = Cleanup(Arc::clone(&owned));
    common::runner_bin();

    // The shared Glance image: 8 MiB with a 1 MiB hole.
    let mut base_data = pattern(7, BASE_SIZE as usize);
    base_data[3 * MIB as usize..4 * MIB as usize].fill(0);
    let base_id = format!("fcc-{tok}-base");
    let base = GlanceStore::new(&images)
        .order(ORDER)
        .upload(&base_id, &base_data[..], Some(BASE_SIZE), &mut Progress::none())
        .unwrap()
        .location;
    let ctx = Ctx { tok: tok.clone(), uuid_prefix, images, vms, volumes, backups, throttle, base, base_data };

    // The lanes, all at once.
    let lanes: Vec<(usize, usize, bool)> = (0..THREADS + PROCS)
        .map(|w| {
            let process = w >= THREADS;
            let name = if process { format!("process lane {}", w - THREADS) } else { format!("thread lane {w}") };
            (board.add(name), w, process)
        })
        .collect();
    let results: Vec<LaneResult> = std::thread::scope(|s| {
        let handles: Vec<_> = lanes
            .iter()
            .map(|&(id, w, process)| {
                let (ctx, board) = (&ctx, &*board);
                let name = board.lanes.lock().unwrap()[id].name.clone();
                let res = LaneResult { name, ..LaneResult::default() };
                s.spawn(move || Lane { ctx, board, id, w, process, res }.run())
            })
            .collect();
        handles
            .into_iter()
            .zip(&lanes)
            .map(|(h, &(id, _, _))| {
                h.join().unwrap_or_else(|p| {
                    board.done(id);
                    let msg =
                        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                    LaneResult {
                        name: format!("lane {id}"),
                        errors: vec![format!("panicked: {msg:?}")],
                        ..Default::default()
                    }
                })
            })
            .collect()
    });
    let lanes_elapsed = t0.elapsed();

    // The shared image goes last (every clone of it is gone by now).
    let main = board.add("test thread".into());
    board.set(main, &format!("glance.delete images/{base_id}"));
    let base_deleted = GlanceStore::new(&ctx.images).delete(&ctx.base);
    board.set(main, "listing leftovers");
    throttle_remove(&ctx.throttle);
    let leftovers = owned.leftovers();
    board.done(main);

    let ops: u64 = 1 + results.iter().map(|r| r.ops).sum::<u64>() + u64::from(base_deleted.is_ok());
    let checks: u64 = results.iter().map(|r| r.checks).sum();
    let lost: Vec<&String> = results.iter().flat_map(|r| &r.mismatches).collect();
    let mut errors: Vec<String> =
        results.iter().flat_map(|r| r.errors.iter().map(move |e| format!("{}: {e}", r.name))).collect();
    if let Err(e) = &base_deleted {
        errors.push(format!("glance.delete of the shared image: {e}"));
    }
    let pass = lost.is_empty() && errors.is_empty() && leftovers.is_empty();
    record_figure(
        SUITE,
        "recipes",
        &format!(
            "{ops} recipe operations by {THREADS} thread lanes and {PROCS} process lanes ({ROUNDS} rounds each) at once in {:.1} s (budget {} s): \
             deadlocks 0, lost writes {} ({checks} images checksummed), errors {}, leftovers {}",
            lanes_elapsed.as_secs_f64(),
            BUDGET.as_secs(),
            lost.len(),
            errors.len(),
            leftovers.len()
        ),
        pass,
        json!({"operations": ops, "threads": THREADS, "processes": PROCS, "rounds": ROUNDS, "seconds": lanes_elapsed.as_secs_f64(),
            "deadlocks": 0, "lost_writes": lost.len(), "checksummed": checks, "errors": errors,
            "mismatches": lost, "leftovers": leftovers,
            "per_lane_ops": results.iter().map(|r| json!({"lane": r.name, "ops": r.ops, "checks": r.checks})).collect::<Vec<_>>()}),
    );
    assert!(errors.is_empty(), "recipes failed under concurrency: {errors:#?}");
    assert!(lost.is_empty(), "lost writes: {lost:#?}");
    assert!(leftovers.is_empty(), "left behind by the recipes: {leftovers:?}");
}

/// Removes the flatten slot images (every slot must be free by now).
fn throttle_remove(t: &Throttle) {
    if let Err(e) = t.remove_slots() {
        eprintln!("removing the flatten slots: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The lock writers.

/// The region seed of lock writer `index` in `round` (as `recipe_runner lock.write`).
fn lock_seed(index: u64, round: u64) -> u64 {
    1_000_000 + index * 1000 + round
}

/// The header token of lock writer `index` in `round` (as `recipe_runner lock.write`).
fn lock_token(index: u64, round: u64) -> Vec<u8> {
    pattern(9_000_000 + index * 1000 + round, 4096)
}

/// `recipe_runner lock.write` in a thread: (acquire attempts, conflicts).
fn lock_rounds(img: &Image, index: u64) -> rbd_core::Result<(u64, u64)> {
    let (mut attempts, mut conflicts) = (0u64, 0u64);
    let mut x = (u64::from(std::process::id()) << 8 | index) | 1;
    for round in 0..LOCK_ROUNDS {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            attempts += 1;
            match img.lock_acquire_raw() {
                Ok(()) => break,
                Err(e) if matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::Busy) && Instant::now() < deadline => {
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
        img.write(4096 + index * LOCK_REGION, &pattern(lock_seed(index, round), LOCK_REGION as usize))?;
        if img.read_vec(0, 4096)? != token {
            conflicts += 1;
        }
        img.lock_release()?;
    }
    Ok((attempts, conflicts))
}

/// (acquire attempts, conflicts) of a lock writer, or its error.
type WriterResult = Result<(u64, u64), String>;

#[test]
fn lock_writers_take_turns_on_one_image() {
    let c = live!();
    let t0 = Instant::now();
    let tok = common::token();
    let rbd = Pool::open(&c, "rbd").unwrap();
    let owned = Arc::new(Owned { marks: vec![tok.clone()], pools: vec![rbd.clone()], backups: None, slots: None });
    let board = Arc::new(Board::default());
    let _watchdog = Watchdog::start("lock_writers", BUDGET, Arc::clone(&board), Arc::clone(&owned));
    let _cleanup = Cleanup(Arc::clone(&owned));
    common::runner_bin();
    let writers = LOCK_THREADS + LOCK_PROCS;
    let name = format!("fcc-{tok}-lock");
    let size = 4096 + writers * LOCK_REGION;
    let mut o = ImageOptions::new();
    o.features(Features::LAYERING | Features::EXCLUSIVE_LOCK);
    rbd.create_image(&name, size, &o).unwrap();

    // Per writer: its name, and (attempts, conflicts) or the error.
    let results: Vec<(String, WriterResult)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|k| {
                let process = k >= LOCK_THREADS;
                let lane = board.add(if process { format!("lock process {k}") } else { format!("lock thread {k}") });
                let (board, rbd, name) = (&*board, &rbd, &name);
                s.spawn(move || {
                    board.set(lane, &format!("{LOCK_ROUNDS} lock turns on rbd/{name}"));
                    let r = if process {
                        let args: Vec<String> = ["lock.write", "rbd", name.as_str()]
                            .iter()
                            .map(|a| a.to_string())
                            .chain([k, LOCK_ROUNDS, LOCK_REGION].map(|v| v.to_string()))
                            .collect();
                        run_child(board, &args).and_then(|out| {
                            let line =
                                out.lines().find_map(|l| l.strip_prefix("OK ")).ok_or(format!("no OK: {out}"))?;
                            let field = |k: &str| {
                                line.split_whitespace()
                                    .find_map(|f| f.strip_prefix(k))
                                    .and_then(|v| v.parse::<u64>().ok())
                                    .ok_or(format!("bad answer {line:?}"))
                            };
                            Ok((field("attempts=")?, field("conflicts=")?))
                        })
                    } else {
                        Image::open(rbd, name).and_then(|img| lock_rounds(&img, k)).map_err(|e| e.to_string())
                    };
                    board.done(lane);
                    (board.lanes.lock().unwrap()[lane].name.clone(), r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| ("?".into(), Err("panicked".into())))).collect()
    });
    let elapsed = t0.elapsed();

    // Region by region: each holds its writer's last round.
    let img = Image::open(&rbd, &name).unwrap();
    let mut lost = Vec::new();
    for k in 0..writers {
        let got = img.read_vec(4096 + k * LOCK_REGION, LOCK_REGION as usize).unwrap();
        if sha(&got) != sha(&pattern(lock_seed(k, LOCK_ROUNDS - 1), LOCK_REGION as usize)) {
            let round = (0..LOCK_ROUNDS).find(|&r| got == pattern(lock_seed(k, r), LOCK_REGION as usize));
            lost.push(format!("region {k}: not its last write (holds round {round:?})"));
        }
    }
    let header = img.read_vec(0, 4096).unwrap();
    let header_ok = (0..writers).any(|k| header == lock_token(k, LOCK_ROUNDS - 1));
    let owners = img.lock_owners().unwrap();
    drop(img);

    let errors: Vec<String> =
        results.iter().filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}"))).collect();
    let attempts: u64 = results.iter().filter_map(|(_, r)| r.as_ref().ok()).map(|r| r.0).sum();
    let conflicts: u64 = results.iter().filter_map(|(_, r)| r.as_ref().ok()).map(|r| r.1).sum();
    let turns = writers * LOCK_ROUNDS;
    let pass = errors.is_empty() && lost.is_empty() && conflicts == 0 && header_ok && owners.is_empty();
    record_figure(
        SUITE,
        "lock_writers",
        &format!(
            "{turns} managed-lock turns on one image by {LOCK_THREADS} threads and {LOCK_PROCS} processes in {:.1} s \
             ({attempts} acquire attempts): deadlocks 0, lost writes {} ({writers} regions checksummed), \
             two owners at once {conflicts}, errors {}",
            elapsed.as_secs_f64(),
            lost.len(),
            errors.len()
        ),
        pass,
        json!({"turns": turns, "threads": LOCK_THREADS, "processes": LOCK_PROCS, "seconds": elapsed.as_secs_f64(),
            "acquire_attempts": attempts, "deadlocks": 0, "lost_writes": lost.len(), "regions": writers,
            "conflicts": conflicts, "errors": errors, "mismatches": lost, "header_is_a_last_token": header_ok,
            "owners_left": owners.iter().map(|o| o.owner.clone()).collect::<Vec<_>>()}),
    );
    assert!(errors.is_empty(), "lock writers failed: {errors:#?}");
    assert!(lost.is_empty(), "lost writes: {lost:#?}");
    assert_eq!(conflicts, 0, "a header changed while its writer held the lock");
    assert!(header_ok, "the header is no writer's last token");
    assert!(owners.is_empty(), "the lock is still held: {owners:?}");
}
