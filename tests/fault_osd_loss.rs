//! OSD loss and in-flight operations when the monitor or the OSDs go away (issue #10, long
//! part). Not part of plain `cargo test`: it needs a cluster of its own that it may break, and
//! runs with `--features long-faults` from `scripts/reliability.sh --long`, which starts
//! `OSDS=3 RBD_DEV_OBJECTSTORE=bluestore` (pools of size 2, BlueStore keeps data across
//! SIGKILL) and sets:
//!
//! * `RBD_FAULT_CONF`: that cluster's `ceph.conf`;
//! * `RBD_FAULT_DEV_DIR`: its folder (for `scripts/vstart.sh kill-osd/start-osd/stop-mon/...`).
//!
//! Tests:
//! * an OSD is SIGKILLed during a Glance upload and during a backup, then restarted: each
//!   operation completes or fails with a typed error within a watchdog (never hangs); what
//!   completed verifies by checksum (sha512 of the download, `backup::verify`);
//! * with every OSD stopped (SIGSTOP), reads, writes, opens and listings of clients with
//!   `osd_op_timeout` = 2 s and 5 s fail with `ErrorKind::Timeout` within the timeout + 1 s;
//! * with the monitor stopped, connects and monitor commands fail the same way.
//!
//! The tests run one at a time (a process-wide lock): each leaves the cluster healthy again.
mod common;

use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rbd_core::recipes::backup::{self, Backup, VolumeRef};
use rbd_core::recipes::glance::{GlanceStore, HashAlgo};
use rbd_core::{AioWriter, Cluster, ClusterBuilder, ErrorKind, Image, ImageOptions, Pool, Progress};
use serde_json::json;
use sha2::{Digest, Sha512};

const MIB: u64 = 1 << 20;

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

const HOW: &str = "run `scripts/reliability.sh --long`, or start a 3-OSD BlueStore cluster \
(`RBD_DEV_DIR=.ceph-dev/fault-osd RBD_DEV_MON_PORT=41100 OSDS=3 RBD_DEV_OBJECTSTORE=bluestore scripts/vstart.sh up`) \
and export RBD_FAULT_CONF=<its ceph.conf> RBD_FAULT_DEV_DIR=<its folder>";

fn conf() -> PathBuf {
    PathBuf::from(std::env::var("RBD_FAULT_CONF").unwrap_or_else(|_| panic!("RBD_FAULT_CONF is not set; {HOW}")))
}

fn dev_dir() -> PathBuf {
    PathBuf::from(std::env::var("RBD_FAULT_DEV_DIR").unwrap_or_else(|_| panic!("RBD_FAULT_DEV_DIR is not set; {HOW}")))
}

/// Runs `scripts/vstart.sh <args>` on the fault cluster.
fn vstart(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vstart.sh");
    let out = Command::new(script)
        .args(args)
        .env("RBD_DEV_DIR", dev_dir())
        .env("RBD_DEV_WAIT_TIMEOUT", "180")
        .output()
        .expect("run vstart.sh");
    assert!(out.status.success(), "vstart.sh {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The pid of daemon `name` (`osd.1`, `mon.a`) of the fault cluster, from its pid file.
fn daemon_pid(name: &str) -> i32 {
    let f = dev_dir().join("run").join(format!("{name}.pid"));
    std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).trim().parse().expect("pid")
}

/// Sends `sig` to a daemon of the fault cluster (started by vstart.sh for this test run).
fn signal(name: &str, sig: i32) {
    let pid = daemon_pid(name);
    // SAFETY: kill(2) with a pid read from this cluster's own pid file.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) for {name}");
}

fn connect(osd_op_timeout: Option<u64>) -> Cluster {
    let mut b = ClusterBuilder::new("admin");
    b.conf_file(conf()).timeout(Duration::from_secs(30));
    if let Some(t) = osd_op_timeout {
        b.osd_op_timeout(Duration::from_secs(t));
    }
    if let Ok(v) = std::env::var("RBD_FAULT_SET") {
        for kv in v.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                b.set(k, v);
            }
        }
    }
    b.connect().unwrap_or_else(|e| panic!("connect to the fault cluster: {e}; {HOW}"))
}

/// Deterministic data of `len` bytes read piece by piece (no big buffer), hashed as it goes.
struct Gen {
    left: u64,
    seed: u64,
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left).min(MIB) as usize;
        if n == 0 {
            return Ok(0);
        }
        let chunk = common::pattern(self.seed, n);
        self.seed = self.seed.wrapping_add(1);
        buf[..n].copy_from_slice(&chunk);
        self.left -= n as u64;
        Ok(n)
    }
}

fn gen_sha512(len: u64) -> String {
    let mut g = Gen { left: len, seed: 1 };
    let mut h = Sha512::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = g.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// Kills `osd` once `done` reaches `at` (from a progress callback), on a helper thread so the
/// callback does not block; returns when it was triggered.
struct Killer {
    fired: Arc<AtomicBool>,
    at: u64,
    osd: &'static str,
    start: Instant,
    thread: Option<std::thread::JoinHandle<f64>>,
}

impl Killer {
    fn new(osd: &'static str, at: u64) -> Killer {
        Killer { fired: Arc::new(AtomicBool::new(false)), at, osd, start: Instant::now(), thread: None }
    }
    /// SIGKILLs the OSD (at once, from the callback's thread) and marks it down in the OSD map
    /// on a helper thread, as `vstart.sh kill-osd` does.
    fn poll(&mut self, done: u64) {
        if done >= self.at && !self.fired.swap(true, Ordering::SeqCst) {
            let osd = self.osd;
            signal(&format!("osd.{osd}"), libc::SIGKILL);
            let at = self.start.elapsed().as_secs_f64();
            self.thread = Some(std::thread::spawn(move || {
                let _ = Command::new("ceph")
                    .args([
                        "-c",
                        &conf().to_string_lossy(),
                        "--connect-timeout",
                        "20",
                        "osd",
                        "down",
                        &format!("osd.{osd}"),
                    ])
                    .output();
                at
            }));
        }
    }
    /// The time of the kill (s after the start), if it happened.
    fn join(&mut self) -> Option<f64> {
        self.thread.take().and_then(|t| t.join().ok())
    }
}

/// Runs `f` on a thread; `None` when it does not finish within `limit` (a hang).
fn with_watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

fn outcome_str<T>(r: &rbd_core::Result<T>) -> String {
    match r {
        Ok(_) => "completed".into(),
        Err(e) => format!("failed: {:?} ({e})", e.kind()),
    }
}

/// An OSD is SIGKILLed a quarter into a 192 MiB Glance upload and restarted afterwards.
#[test]
fn osd_killed_during_glance_upload() {
    let _l = lock();
    vstart(&["wait"]);
    const LEN: u64 = 512 * MIB;
    let c = connect(Some(60));
    let id = common::unique("fosd-up");
    let id2 = id.clone();
    let t0 = Instant::now();
    let run = with_watchdog(Duration::from_secs(300), move || {
        let pool = Pool::open(&c, "images").unwrap();
        let mut store = GlanceStore::new(&pool);
        store.hash(HashAlgo::Sha512);
        let mut killer = Killer::new("1", LEN / 4);
        let r = {
            let mut cb = |done: u64, _total: u64| {
                killer.poll(done);
                ControlFlow::Continue(())
            };
            let mut p = Progress::new(&mut cb);
            store.upload(&id2, Gen { left: LEN, seed: 1 }, Some(LEN), &mut p)
        };
        let killed = killer.join();
        (r, killed, pool)
    });
    let elapsed = t0.elapsed().as_secs_f64();
    vstart(&["start-osd", "1"]);
    let Some((r, killed, pool)) = run else {
        common::record_figure(
            "fault_osd_loss",
            "glance_upload",
            "upload HUNG (no result within 300 s)",
            false,
            json!({}),
        );
        panic!("the upload hung");
    };
    vstart(&["wait"]);
    let want = gen_sha512(LEN);
    let mut verified = None;
    let mut leftovers = false;
    match &r {
        Ok(u) => {
            let store = GlanceStore::new(&pool);
            let mut d = store.download(&u.location).unwrap();
            let mut h = Sha512::new();
            let mut buf = vec![0u8; 4 * MIB as usize];
            loop {
                let n = d.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let got = format!("{:x}", h.finalize());
            verified = Some(got == want && u.multihash.as_deref() == Some(want.as_str()));
            drop(d);
            store.delete(&u.location).unwrap();
        }
        Err(_) => leftovers = pool.image_exists(&id).unwrap(),
    }
    let typed = !matches!(&r, Err(e) if e.kind() == ErrorKind::Other);
    let pass = killed.is_some() && typed && verified != Some(false) && !leftovers;
    common::record_figure(
        "fault_osd_loss",
        "glance_upload",
        &format!(
            "osd.1 SIGKILLed at 25% of a {} MiB upload (3 BlueStore OSDs, size 2; kill at {:.1} s): {} in {elapsed:.1} s; checksum of the download: {}; leftovers: {leftovers}",
            LEN >> 20,
            killed.unwrap_or(-1.0),
            outcome_str(&r),
            match verified {
                Some(true) => "verified",
                Some(false) => "MISMATCH",
                None => "n/a (failed)",
            }
        ),
        pass,
        json!({ "bytes": LEN, "osd_killed_at_s": killed, "outcome": outcome_str(&r), "elapsed_s": elapsed, "verified": verified, "leftovers": leftovers }),
    );
    assert!(pass, "upload under OSD loss: {} verified={verified:?} leftovers={leftovers}", outcome_str(&r));
}

/// An OSD is SIGKILLed during a full backup (volumes → backups on the same cluster), restarted,
/// and an incremental backup follows.
#[test]
fn osd_killed_during_backup() {
    let _l = lock();
    vstart(&["wait"]);
    const LEN: u64 = 384 * MIB;
    let c = connect(Some(60));
    let volumes = Pool::open(&c, "volumes").unwrap();
    let vid = common::unique("fosd-bk").replace('.', "-");
    let name = format!("volume-{vid}");
    volumes.create_image(&name, LEN, ImageOptions::new().order(22)).unwrap();
    {
        let img = Image::open(&volumes, &name).unwrap();
        let mut w = AioWriter::new(&img, 8);
        let mut g = Gen { left: LEN, seed: 9 };
        let mut off = 0;
        let mut buf = vec![0u8; 4 * MIB as usize];
        loop {
            let n = g.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            w.write(off, buf[..n].to_vec()).unwrap();
            off += n as u64;
        }
        w.finish().unwrap();
    }
    let t0 = Instant::now();
    let (c2, vid2) = (c.clone(), vid.clone());
    let run = with_watchdog(Duration::from_secs(300), move || {
        let volumes = Pool::open(&c2, "volumes").unwrap();
        let backups = Pool::open(&c2, "backups").unwrap();
        let vol = VolumeRef::cinder(&volumes, &vid2);
        let mut killer = Killer::new("2", LEN / 3);
        let r = {
            let mut cb = |done: u64, _total: u64| {
                killer.poll(done);
                ControlFlow::Continue(())
            };
            let mut p = Progress::new(&mut cb);
            Backup::new(&vol, &backups, "b1").run(&mut p).map(|b| b.kind)
        };
        (r, killer.join())
    });
    let elapsed = t0.elapsed().as_secs_f64();
    vstart(&["start-osd", "2"]);
    let Some((r, killed)) = run else {
        common::record_figure("fault_osd_loss", "backup", "backup HUNG (no result within 300 s)", false, json!({}));
        panic!("the backup hung");
    };
    vstart(&["wait"]);
    let backups = Pool::open(&c, "backups").unwrap();
    let vol = VolumeRef::cinder(&volumes, &vid);
    let mut verified = None;
    let mut incremental = None;
    if r.is_ok() {
        verified = Some(backup::verify(&backups, &vid, "b1", &vol, &mut Progress::none()).unwrap().matches);
        Image::open(&volumes, &name).unwrap().write(5 * MIB, &common::pattern(77, 65536)).unwrap();
        let b2 = Backup::new(&vol, &backups, "b2").parent(Some("b1")).run(&mut Progress::none()).unwrap();
        incremental = Some(backup::verify(&backups, &vid, "b2", &vol, &mut Progress::none()).unwrap().matches);
        let _ = b2;
        backup::delete_backup(&backups, &vid, "b2", Some(&vol)).unwrap();
        backup::delete_backup(&backups, &vid, "b1", Some(&vol)).unwrap();
    }
    let leftovers: Vec<String> = backups.image_names().unwrap().into_iter().filter(|n| n.contains(&vid)).collect();
    let typed = !matches!(&r, Err(e) if e.kind() == ErrorKind::Other);
    common::purge_image(&volumes, &name);
    let pass =
        killed.is_some() && typed && verified != Some(false) && incremental != Some(false) && leftovers.is_empty();
    common::record_figure(
        "fault_osd_loss",
        "backup",
        &format!(
            "osd.2 SIGKILLed at 33% of a {} MiB full backup (kill at {:.1} s): {} in {elapsed:.1} s; backup::verify: {:?}; incremental after restart verifies: {:?}; leftovers: {}",
            LEN >> 20,
            killed.unwrap_or(-1.0),
            outcome_str(&r),
            verified,
            incremental,
            leftovers.len()
        ),
        pass,
        json!({ "bytes": LEN, "osd_killed_at_s": killed, "outcome": outcome_str(&r), "elapsed_s": elapsed, "verified": verified, "incremental_verified": incremental, "leftovers": leftovers }),
    );
    assert!(
        pass,
        "backup under OSD loss: {} verified={verified:?} incr={incremental:?} leftovers={leftovers:?}",
        outcome_str(&r)
    );
}

/// One in-flight operation measured while the daemons are stopped.
///
/// `rounds` is the number of sequential OSD round trips librbd makes for it, each bounded by
/// `osd_op_timeout`: 1 for an operation on a healthy handle, more on a handle whose previous
/// operation timed out (librbd then re-registers the header watch and refreshes the image, and a
/// writer re-acquires the exclusive lock, before retrying). The bound is `rounds × t + 1 s`.
fn timed(
    configured: u64,
    rounds: u64,
    what: &str,
    f: impl FnOnce() -> rbd_core::Result<()> + Send + 'static,
) -> serde_json::Value {
    let t0 = Instant::now();
    let r = with_watchdog(Duration::from_secs(rounds * configured + 60), f);
    let s = t0.elapsed().as_secs_f64();
    let bound = (rounds * configured) as f64 + 1.0;
    let (kind, ok) = match &r {
        None => ("HUNG".to_string(), false),
        Some(Ok(())) => ("succeeded".to_string(), false),
        Some(Err(e)) => (format!("{:?}", e.kind()), e.kind() == ErrorKind::Timeout && s <= bound),
    };
    json!({ "op": what, "configured_s": configured, "bound_s": bound, "measured_s": (s * 1000.0).round() / 1000.0,
            "kind": kind, "ok": ok })
}

/// With every OSD stopped (SIGSTOP), image I/O of clients with `osd_op_timeout` 2 s and 5 s
/// fails with a timeout within the bound; SIGCONT brings them back and I/O works again.
#[test]
fn inflight_io_times_out_when_osds_stop() {
    let _l = lock();
    vstart(&["wait"]);
    let setup = connect(None);
    let pool = Pool::open(&setup, "rbd").unwrap();
    let name = common::unique("fosd-io");
    let img_name = |t: u64, role: &str| format!("{name}-{role}{t}");
    for t in [2u64, 5] {
        for role in ["w", "r"] {
            pool.create_image(&img_name(t, role), 16 * MIB, &ImageOptions::new()).unwrap();
            Image::open(&pool, &img_name(t, role)).unwrap().write(0, &common::pattern(3, 65536)).unwrap();
        }
    }
    let osds = ["osd.0", "osd.1", "osd.2"];
    let mut handles = Vec::new();
    let (tx, rx) = mpsc::channel();
    for t in [2u64, 5] {
        let c = connect(Some(t));
        let p = Pool::open(&c, "rbd").unwrap();
        // In-flight handles: each has done I/O before the stop (the writer holds the lock).
        let w = Image::open(&p, &img_name(t, "w")).unwrap();
        w.write(65536, &[4u8; 4096]).unwrap();
        let r = Image::open(&p, &img_name(t, "r")).unwrap();
        r.read_vec(0, 4096).unwrap();
        handles.push((t, c, p, w, r));
    }
    for o in osds {
        signal(o, libc::SIGSTOP);
    }
    let mut threads = Vec::new();
    for (t, _c, p, w, r) in handles {
        let (p1, p2) = (p.clone(), p.clone());
        let n = img_name(t, "r");
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let w = Arc::new(Mutex::new(w));
            let r = Arc::new(Mutex::new(r));
            let (w2, r2) = (w.clone(), r.clone());
            let parts = [
                std::thread::spawn(move || {
                    let first = timed(t, 1, "write 64 KiB", move || w.lock().unwrap().write(4096, &[5u8; 65536]));
                    let again = timed(t, 4, "write again (after a timeout)", move || {
                        w2.lock().unwrap().write(8192, &[6u8; 4096])
                    });
                    json!([first, again])
                }),
                std::thread::spawn(move || {
                    let first =
                        timed(t, 1, "read 64 KiB", move || r.lock().unwrap().read_vec(1 << 20, 65536).map(drop));
                    let again = timed(t, 2, "read again (after a timeout)", move || {
                        r2.lock().unwrap().read_vec(2 << 20, 4096).map(drop)
                    });
                    json!([first, again])
                }),
                std::thread::spawn(move || json!([timed(t, 1, "open image", move || Image::open(&p1, &n).map(drop))])),
                std::thread::spawn(move || json!([timed(t, 1, "list images", move || p2.image_names().map(drop))])),
            ];
            for h in parts {
                for v in h.join().unwrap().as_array().into_iter().flatten() {
                    let _ = tx.send(v.clone());
                }
            }
        }));
    }
    drop(tx);
    for t in threads {
        t.join().unwrap();
    }
    for o in osds {
        signal(o, libc::SIGCONT);
    }
    let results: Vec<serde_json::Value> = rx.iter().collect();
    vstart(&["wait"]);
    // Everything works again after SIGCONT.
    let img = Image::open(&pool, &img_name(2, "r")).unwrap();
    let back = img.read_vec(0, 4096).unwrap() == common::pattern(3, 4096);
    drop(img);
    for t in [2u64, 5] {
        for role in ["w", "r"] {
            common::purge_image(&pool, &img_name(t, role));
        }
    }
    let pass = back && results.iter().all(|r| r["ok"] == true);
    let fig = results
        .iter()
        .map(|r| {
            format!(
                "{} {} s → {} s {}",
                r["op"].as_str().unwrap_or(""),
                r["configured_s"],
                r["measured_s"],
                r["kind"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    common::record_figure(
        "fault_osd_loss",
        "inflight_osds_stopped",
        &format!("all OSDs SIGSTOPped, osd_op_timeout configured → measured: {fig}; I/O after SIGCONT: {back}"),
        pass,
        json!({ "bound": "rounds x configured + 1 s", "results": results, "recovered": back }),
    );
    assert!(pass, "in-flight I/O with OSDs stopped: {results:#?}, recovered {back}");
}

/// With the monitor stopped, a new connect and monitor commands of an existing connection fail
/// with a timeout within the configured timeout + 1 s; image I/O (OSDs only) keeps working.
#[test]
fn monitor_stopped_connect_and_commands_time_out() {
    let _l = lock();
    vstart(&["wait"]);
    let setup = connect(None);
    let pool = Pool::open(&setup, "rbd").unwrap();
    let name = common::unique("fosd-mon");
    pool.create_image(&name, 4 * MIB, &ImageOptions::new()).unwrap();
    let mut conns = Vec::new();
    for t in [2u64, 5] {
        let mut b = ClusterBuilder::new("admin");
        b.conf_file(conf()).timeout(Duration::from_secs(t)).osd_op_timeout(Duration::from_secs(30));
        conns.push((t, b.connect().unwrap()));
    }
    let io_img = Image::open(&pool, &name).unwrap();
    vstart(&["stop-mon"]);
    let mut results = Vec::new();
    let mut threads = Vec::new();
    let (tx, rx) = mpsc::channel();
    for (t, c) in conns {
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let c2 = c.clone();
            let a = std::thread::spawn(move || {
                timed(t, 1, "mon_command status", move || {
                    c.mon_command(r#"{"prefix": "status", "format": "json"}"#, b"").map(drop)
                })
            });
            let b = std::thread::spawn(move || timed(t, 1, "cluster stats", move || c2.stats().map(drop)));
            let d = std::thread::spawn(move || {
                timed(t, 1, "connect", move || {
                    let mut b = ClusterBuilder::new("admin");
                    b.conf_file(conf()).timeout(Duration::from_secs(t));
                    b.connect().map(drop)
                })
            });
            for h in [a, b, d] {
                let _ = tx.send(h.join().unwrap());
            }
        }));
    }
    drop(tx);
    // Image I/O needs no monitor.
    let io_ok =
        io_img.write(0, &[1u8; 4096]).is_ok() && io_img.read_vec(0, 4096).map(|d| d == [1u8; 4096]).unwrap_or(false);
    for t in threads {
        t.join().unwrap();
    }
    results.extend(rx.iter());
    vstart(&["start-mon"]);
    vstart(&["wait"]);
    drop(io_img);
    common::purge_image(&pool, &name);
    let pass = results.iter().all(|r| r["ok"] == true);
    let fig = results
        .iter()
        .map(|r| {
            format!(
                "{} {} s → {} s {}",
                r["op"].as_str().unwrap_or(""),
                r["configured_s"],
                r["measured_s"],
                r["kind"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    common::record_figure(
        "fault_osd_loss",
        "inflight_mon_stopped",
        &format!("monitor stopped, configured → measured: {fig}; image I/O during the outage: {io_ok}"),
        pass,
        json!({ "bound": "configured + 1 s", "results": results, "image_io_during_outage": io_ok }),
    );
    assert!(pass, "monitor outage: {results:#?}");
}
