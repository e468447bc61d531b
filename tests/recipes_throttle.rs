//! The cluster-wide flatten throttle against the live cluster: slots are exclusive across
//! connections and visible; flatten through the gate; N+3 worker processes never run more than
//! N flattens at once; a SIGKILLed holder is fenced (blocklisted) and its slot taken over
//! within the stated bound; a holder that is taken over while alive has its flatten stopped.
mod common;

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pattern, unique, ScratchImage};
use rbd_core::recipes::flatten::FlattenGate;
use rbd_core::recipes::throttle::{Throttle, ThrottleObserver, DEFAULT_BACKOFF_MAX, DEFAULT_LEASE};
use rbd_core::{clone_image, Cluster, ErrorKind, Image, ImageOptions, Pool, Progress};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const POOL: &str = "rbd";

/// Removes the slot images of a test's throttle at the end.
struct Slots(Throttle);

impl Drop for Slots {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove_slots() {
            eprintln!("cleanup of slot images failed: {e}");
        }
    }
}

fn throttle(pool: &Pool, slots: usize) -> Throttle {
    let mut t = Throttle::new(pool, slots).unwrap();
    t.prefix(&unique("slot"));
    t
}

fn sha(img: &Image, len: u64) -> Vec<u8> {
    Sha256::digest(img.read_vec(0, len as usize).unwrap()).to_vec()
}

/// A 32 MiB parent full of data (8 objects of 4 MiB) with snapshot `base`.
fn parent(c: &Cluster) -> ScratchImage {
    let p = ScratchImage::new(c, POOL, "thr-parent", 32 * MIB);
    let img = p.open();
    img.write(0, &pattern(7, (32 * MIB) as usize)).unwrap();
    img.snap_create("base").unwrap();
    p
}

fn clone_of(p: &ScratchImage, tag: &str) -> ScratchImage {
    let name = unique(tag);
    clone_image(&p.pool, &p.name, "base", &p.pool, &name, &ImageOptions::new()).unwrap();
    ScratchImage { pool: p.pool.clone(), name }
}

#[test]
fn slots_are_exclusive_across_connections_and_visible() {
    let c = live!();
    let other = common::cluster_as(&common::client_id());
    let t = throttle(&Pool::open(&c, POOL).unwrap(), 2);
    let _cleanup = Slots(t.clone());
    let mut t2 = Throttle::new(&Pool::open(&other, POOL).unwrap(), 2).unwrap();
    t2.prefix(t.slot_prefix());

    let a = t.acquire(Some(Duration::from_secs(10))).unwrap();
    let b = t2.acquire(Some(Duration::from_secs(10))).unwrap();
    assert_ne!(a.slot(), b.slot());
    assert!(t2.try_acquire().unwrap().is_none(), "both slots are held");
    let e = t2.acquire(Some(Duration::from_millis(300))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");

    let states = t.slots().unwrap();
    assert_eq!(states.len(), 2);
    for g in [&a, &b] {
        let s = &states[g.slot()];
        assert_eq!(s.owner.as_deref(), Some(g.owner()), "{s:?}");
        assert!(s.holder.as_deref().is_some_and(|h| h.contains(&std::process::id().to_string())), "{s:?}");
        assert!(s.since.is_some() && s.heartbeat_age.is_some(), "{s:?}");
    }
    assert_ne!(a.owner(), b.owner(), "two connections, two owners");

    let freed = a.slot();
    drop(a);
    assert_eq!(t.slots().unwrap()[freed].owner, None);
    let again = t2.try_acquire().unwrap().expect("a slot is free again");
    assert_eq!(again.slot(), freed);
    drop((again, b));
    assert!(t.slots().unwrap().iter().all(|s| s.owner.is_none()));
}

#[test]
fn bad_configuration_and_non_clones_are_refused_before_waiting() {
    let c = live!();
    let pool = Pool::open(&c, POOL).unwrap();
    assert_eq!(Throttle::new(&pool, 0).unwrap_err().kind(), ErrorKind::InvalidArgument);
    let mut t = throttle(&pool, 1);
    let _cleanup = Slots(t.clone());
    t.lease(Duration::from_secs(2), Duration::from_secs(1));
    assert_eq!(t.acquire(None).unwrap_err().kind(), ErrorKind::InvalidArgument, "lease < 3 x heartbeat");
    let plain = ScratchImage::new(&c, POOL, "thr-plain", MIB);
    let e = throttle(&pool, 1).flatten(&plain.open(), &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[test]
fn flatten_gate_flattens_through_a_slot() {
    let c = live!();
    let pool = Pool::open(&c, POOL).unwrap();
    let t = throttle(&pool, 1);
    let _cleanup = Slots(t.clone());
    let p = parent(&c);
    let want = sha(&Image::open_at_snap(&p.pool, &p.name, "base").unwrap(), 32 * MIB);
    let child = clone_of(&p, "thr-child");

    // While another holder has the only slot, the gate waits (and times out).
    let held = t.acquire(Some(Duration::from_secs(10))).unwrap();
    let mut waiting = t.clone();
    waiting.wait(Some(Duration::from_millis(300)));
    let e = waiting.flatten(&child.open(), &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(child.open().parent().unwrap().is_some(), "not flattened while waiting");
    drop(held);

    let mut calls = 0u32;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        ControlFlow::Continue(())
    };
    let gate: Arc<dyn FlattenGate> = Arc::new(t.clone());
    gate.flatten(&child.open(), &mut Progress::new(&mut cb)).unwrap();
    assert!(calls > 0, "progress was reported");
    let img = child.open();
    assert_eq!(img.parent().unwrap(), None);
    assert_eq!(sha(&img, 32 * MIB), want);
    assert!(t.slots().unwrap().iter().all(|s| s.owner.is_none()), "released after the flatten");
}

/// The worker binary, built on demand (`cargo build --example flatten_worker`).
fn worker_bin() -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    // target/debug/deps/recipes_throttle-<hash> -> target/debug/examples/flatten_worker
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join("flatten_worker");
    if !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "flatten_worker"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example flatten_worker");
        assert!(status.success(), "cargo build --example flatten_worker failed");
        *built = true;
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

fn spawn_worker(t: &Throttle, image: &str, env: &[(&str, &str)]) -> Child {
    let prefix = t.slot_prefix();
    let mut cmd = Command::new(worker_bin());
    cmd.args([POOL, prefix, &t.slot_count().to_string(), image])
        .env("RBD_TEST_CLIENT_ID", common::client_id())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn flatten_worker")
}

/// How long any worker may take before the test fails (and kills them all).
const WORKER_DEADLINE: Duration = Duration::from_secs(120);

/// The child's stdout lines, sent from a reader thread; `None` at EOF.
fn line_channel(child: &mut Child) -> std::sync::mpsc::Receiver<Option<String>> {
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            if tx.send(Some(line.unwrap_or_default())).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    rx
}

/// Every stdout line of `child` until EOF; panics (so the guard kills the workers) when the
/// output does not end before `deadline`.
fn lines(child: &mut Child, deadline: Duration) -> Vec<String> {
    let rx = line_channel(child);
    let until = Instant::now() + deadline;
    let mut v = Vec::new();
    loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Some(l)) => v.push(l),
            Ok(None) => return v,
            Err(_) => panic!("worker still running after {deadline:?}; output so far: {v:?}"),
        }
    }
}

/// Kills and reaps children on every path.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn worker_processes_never_run_more_than_n_flattens_at_once() {
    const N: usize = 2;
    let c = live!();
    let pool = Pool::open(&c, POOL).unwrap();
    let t = throttle(&pool, N);
    let _cleanup = Slots(t.clone());
    let p = parent(&c);
    let want = sha(&Image::open_at_snap(&p.pool, &p.name, "base").unwrap(), 32 * MIB);
    let clones: Vec<ScratchImage> = (0..N + 3).map(|i| clone_of(&p, &format!("thr-w{i}"))).collect();
    worker_bin();

    // Sample the slot images' lock owners while the workers run.
    let stop = Arc::new(AtomicBool::new(false));
    let max_held = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (t, stop, max_held) = (t.clone(), stop.clone(), max_held.clone());
        std::thread::spawn(move || {
            let mut samples = 0usize;
            while !stop.load(Ordering::SeqCst) {
                if let Ok(states) = t.slots() {
                    let held = states.iter().filter(|s| s.owner.is_some()).count();
                    max_held.fetch_max(held, Ordering::SeqCst);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        })
    };

    let mut children = Children(Vec::new());
    for cl in &clones {
        children.0.push(spawn_worker(&t, &cl.name, &[("FLATTEN_WORKER_SLOW_MS", "150")]));
    }
    let mut intervals: Vec<(u128, u128)> = Vec::new();
    for (i, child) in children.0.iter_mut().enumerate() {
        let (mut start, mut end, mut done) = (None, None, false);
        for line in lines(child, WORKER_DEADLINE) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["START", _slot, ns] => start = Some(ns.parse::<u128>().unwrap()),
                ["END", _slot, ns] => end = Some(ns.parse::<u128>().unwrap()),
                ["DONE"] => done = true,
                ["ERROR", ..] => panic!("worker {i}: {line}"),
                _ => {}
            }
        }
        assert!(child.wait().unwrap().success(), "worker {i} failed");
        assert!(done, "worker {i} finished");
        intervals.push((start.expect("START"), end.expect("END")));
    }
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();

    // From the workers' own reports: the most flattens running at any instant.
    let mut events: Vec<(u128, i32)> = intervals.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    events.sort_by_key(|&(t, d)| (t, d)); // an END sorts before a START at the same instant
    let (mut running, mut most) = (0i32, 0i32);
    for (_, d) in events {
        running += d;
        most = most.max(running);
    }
    eprintln!(
        "intervals (ns): {intervals:?}; most at once: {most}; max owners sampled: {} in {samples} samples",
        max_held.load(Ordering::SeqCst)
    );
    assert!(most as usize <= N, "{most} flattens ran at once with {N} slots");
    assert!(most >= 1);
    assert!(max_held.load(Ordering::SeqCst) <= N);
    assert!(samples > 0);
    for cl in &clones {
        let img = cl.open();
        assert_eq!(img.parent().unwrap(), None, "{} flattened", cl.name);
        assert_eq!(sha(&img, 32 * MIB), want, "{} data", cl.name);
    }
    assert!(t.slots().unwrap().iter().all(|s| s.owner.is_none()), "all slots released");
}

#[derive(Default)]
struct TakeOvers(Mutex<Vec<(usize, String)>>);

impl ThrottleObserver for TakeOvers {
    fn took_over(&self, slot: usize, owner: &str) {
        self.0.lock().unwrap().push((slot, owner.to_string()));
    }
}

fn blocklisted(c: &Cluster) -> Vec<String> {
    let (out, _) = c.mon_command(r#"{"prefix":"osd blocklist ls","format":"json"}"#, b"").unwrap();
    // The mon's buffer may carry bytes after the JSON document: read the first value only.
    let v: serde_json::Value = serde_json::Deserializer::from_slice(&out).into_iter().next().unwrap().unwrap();
    v.as_array().unwrap().iter().filter_map(|e| e["addr"].as_str().map(str::to_string)).collect()
}

fn unblocklist(c: &Cluster, addr: &str) {
    let cmd = serde_json::json!({"prefix": "osd blocklist", "blocklistop": "rm", "addr": addr}).to_string();
    let _ = c.mon_command(&cmd, b"");
}

#[test]
fn killed_holder_is_fenced_and_its_slot_taken_over() {
    let c = live!();
    let pool = Pool::open(&c, POOL).unwrap();
    let mut t = throttle(&pool, 1);
    let _cleanup = Slots(t.clone());
    let seen = Arc::new(TakeOvers::default());
    t.observer(seen.clone());

    let mut children = Children(vec![spawn_worker(&t, "-", &[("FLATTEN_WORKER_HOLD", "1")])]);
    let rx = line_channel(&mut children.0[0]);
    let owner = loop {
        let line = rx.recv_timeout(WORKER_DEADLINE).expect("the holder reports HOLDING (or exits) in time");
        let line = line.expect("worker exited before holding");
        if let Some(rest) = line.trim().strip_prefix("HOLDING ") {
            break rest.split_whitespace().nth(1).unwrap().to_string();
        }
        assert!(!line.starts_with("ERROR"), "{line}");
    };
    let st = t.slots().unwrap();
    assert_eq!(st[0].owner.as_deref(), Some(owner.as_str()));
    assert!(st[0].holder.as_deref().is_some_and(|h| h.ends_with(":flatten_worker")), "{st:?}");
    assert!(t.try_acquire().unwrap().is_none(), "held by a live worker");

    children.0[0].kill().unwrap(); // SIGKILL
    children.0[0].wait().unwrap();
    let killed = Instant::now();
    // Stated bound: lease + 2 x backoff cap (from the kill), plus a margin for the break.
    let bound = DEFAULT_LEASE + DEFAULT_BACKOFF_MAX * 2;
    let g = t.acquire(Some(bound + Duration::from_secs(5))).expect("slot taken over within the bound");
    let took = killed.elapsed();
    eprintln!("takeover after SIGKILL: {took:?} (stated bound {bound:?} + break)");
    assert_eq!(*seen.0.lock().unwrap(), vec![(0, owner.clone())], "our lease broke the dead owner's lock");
    assert_ne!(g.owner(), owner);
    let bl = blocklisted(&c);
    assert!(bl.iter().any(|a| a == &owner), "{owner} fenced; blocklist: {bl:?}");
    drop(g);
    unblocklist(&c, &owner);
}

#[test]
fn a_live_holder_taken_over_is_fenced_and_its_flatten_stops() {
    let c = live!();
    let pool = Pool::open(&c, POOL).unwrap();
    let p = parent(&c);
    let child = clone_of(&p, "thr-fenced");
    // The victim flattens on its own connection with a 2 s heartbeat; a rival judges with a
    // much shorter lease, so it takes the slot over while the victim is alive.
    let victim_conn = common::cluster_as(&common::client_id());
    let victim_pool = Pool::open(&victim_conn, POOL).unwrap();
    let mut victim = Throttle::new(&victim_pool, 1).unwrap();
    victim.prefix(&unique("slot"));
    let prefix = victim.slot_prefix().to_string();
    let mut rival = Throttle::new(&pool, 1).unwrap();
    rival.prefix(&prefix).lease(Duration::from_millis(900), Duration::from_millis(300));
    let _cleanup = Slots(rival.clone());

    let victim_addr = victim_conn.addrs().unwrap();
    let img = Image::open(&victim_pool, &child.name).unwrap();
    let handle = std::thread::spawn(move || {
        let mut cb = |_d: u64, _t: u64| {
            std::thread::sleep(Duration::from_millis(400));
            ControlFlow::Continue(())
        };
        let r = victim.flatten(&img, &mut Progress::new(&mut cb));
        drop(img);
        r
    });
    // Wait until the victim holds the slot, then take it over.
    let t0 = Instant::now();
    while rival.slots().unwrap()[0].owner.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(20), "victim never got the slot");
        std::thread::sleep(Duration::from_millis(20));
    }
    let g = rival.acquire(Some(Duration::from_secs(20))).unwrap();
    let r = handle.join().unwrap();
    let e = r.expect_err("the fenced victim's flatten must stop");
    assert_eq!(e.kind(), ErrorKind::Shutdown, "{e}");
    assert!(blocklisted(&c).contains(&victim_addr));
    assert!(child.open().parent().unwrap().is_some(), "the flatten did not complete");
    drop(g);
    drop(victim_conn);
    unblocklist(&c, &victim_addr);
}
