//! Fault suite (issue #10), part 4: dead lock holders. A child process
//! (`examples/recipe_runner.rs`) holds (a) a flatten slot of the cluster-wide throttle or (b)
//! the managed exclusive lock of an image. Killed with SIGKILL, another connection proceeds
//! within a stated bound (measured). Frozen with SIGSTOP instead, it is taken over and
//! blocklisted; woken with SIGCONT it is a zombie whose next write must fail.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::record_figure;
use rbd_core::recipes::throttle::{Throttle, DEFAULT_BACKOFF_MAX};
use rbd_core::{Cluster, Features, Image, ImageOptions, Pool};
use serde_json::json;

const SUITE: &str = "fault_lock_holder";
/// The slot lease the waiters judge by (heartbeat a third of it).
const LEASE: Duration = Duration::from_millis(1500);
/// `osd_client_watch_timeout` (Pacific default): how long the OSD keeps a dead client's watch.
const WATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A holder process; killed on drop.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    addr: String,
}

impl Holder {
    fn spawn(args: &[&str]) -> Holder {
        let mut child = Command::new(common::runner_bin())
            .args(args)
            .env("RBD_TEST_CLIENT_ID", common::client_id())
            .env_remove("RBD_CORE_FAILPOINTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn recipe_runner");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut h = Holder { child, stdin, lines, addr: String::new() };
        let addr = loop {
            let l = h.lines.recv_timeout(Duration::from_secs(60)).expect("the holder reports HOLDING in time");
            assert!(!l.starts_with("ERROR"), "{l}");
            if let Some(a) = l.strip_prefix("HOLDING ") {
                break a.trim().to_string();
            }
        };
        h.addr = addr;
        h
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill({sig})");
    }

    /// Asks the (woken) holder to write; its answer line.
    fn zombie_write(&mut self, within: Duration) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "write").unwrap();
        stdin.flush().unwrap();
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with("WRITE ") => return l,
                Ok(_) => {}
                Err(_) => return "NO ANSWER (the zombie write hung)".into(),
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn blocklisted(c: &Cluster) -> Vec<String> {
    let (out, _) = c.mon_command(r#"{"prefix":"osd blocklist ls","format":"json"}"#, b"").unwrap();
    let v: serde_json::Value = serde_json::Deserializer::from_slice(&out).into_iter().next().unwrap().unwrap();
    v.as_array().unwrap().iter().filter_map(|e| e["addr"].as_str().map(str::to_string)).collect()
}

fn unblocklist(c: &Cluster, addr: &str) {
    let cmd = json!({"prefix": "osd blocklist", "blocklistop": "rm", "addr": addr}).to_string();
    let _ = c.mon_command(&cmd, b"");
}

fn lock_image(pool: &Pool, tag: &str) -> common::ScratchImage {
    let mut o = ImageOptions::new();
    o.features(Features::LAYERING | Features::EXCLUSIVE_LOCK);
    common::ScratchImage::with_options(pool.cluster(), pool.name(), tag, 4 << 20, &o)
}

/// Removes the slot images on drop.
struct Slots(Throttle);

impl Drop for Slots {
    fn drop(&mut self) {
        let _ = self.0.remove_slots();
    }
}

#[test]
fn killed_flatten_slot_holder_is_taken_over_within_the_bound() {
    let c = live!();
    let pool = Pool::open(&c, "rbd").unwrap();
    let data = common::ScratchImage::new(&c, "rbd", "flh-data", 1 << 20);
    let prefix = common::unique("flh-slot");
    let mut t = Throttle::new(&pool, 1).unwrap();
    t.prefix(&prefix).lease(LEASE, LEASE / 3);
    let _slots = Slots(t.clone());
    let holder = Holder::spawn(&["throttle.zombie", "rbd", &prefix, &LEASE.as_millis().to_string(), &data.name]);
    assert!(t.try_acquire().unwrap().is_none(), "held by a live holder");
    holder.signal(libc::SIGKILL);
    let killed = Instant::now();
    // Stated bound (throttle module docs): lease + 2 x backoff cap, plus 2 s for the break.
    let bound = LEASE + DEFAULT_BACKOFF_MAX * 2 + Duration::from_secs(2);
    let g = t.acquire(Some(bound + Duration::from_secs(10))).expect("the slot is taken over");
    let took = killed.elapsed();
    let fenced = blocklisted(&c).contains(&holder.addr);
    let pass = took <= bound && fenced;
    record_figure(
        SUITE,
        "flatten_slot_sigkill",
        &format!(
            "slot taken over {:.2} s after SIGKILL (bound {:.1} s); dead holder blocklisted: {fenced}",
            took.as_secs_f64(),
            bound.as_secs_f64()
        ),
        pass,
        json!({"seconds": took.as_secs_f64(), "bound_seconds": bound.as_secs_f64(), "lease_ms": LEASE.as_millis() as u64, "blocklisted": fenced}),
    );
    drop(g);
    unblocklist(&c, &holder.addr);
    drop(holder);
    assert!(fenced, "the dead holder {} is not blocklisted", t.slot_prefix());
    assert!(took <= bound, "takeover took {took:?} > {bound:?}");
}

#[test]
fn frozen_flatten_slot_holder_is_fenced_and_its_zombie_write_fails() {
    let c = live!();
    let pool = Pool::open(&c, "rbd").unwrap();
    let data = common::ScratchImage::new(&c, "rbd", "flh-zdata", 1 << 20);
    let prefix = common::unique("flh-zslot");
    let mut t = Throttle::new(&pool, 1).unwrap();
    t.prefix(&prefix).lease(LEASE, LEASE / 3);
    let _slots = Slots(t.clone());
    let mut holder = Holder::spawn(&["throttle.zombie", "rbd", &prefix, &LEASE.as_millis().to_string(), &data.name]);
    assert_eq!(holder.zombie_write(Duration::from_secs(30)), "WRITE OK", "a live holder writes");
    holder.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let bound = LEASE + DEFAULT_BACKOFF_MAX * 2 + Duration::from_secs(2);
    let g = t.acquire(Some(bound + Duration::from_secs(10))).expect("the frozen holder's slot is taken over");
    let took = stopped.elapsed();
    let fenced = blocklisted(&c).contains(&holder.addr);
    holder.signal(libc::SIGCONT);
    let answer = holder.zombie_write(Duration::from_secs(60));
    let refused = answer.starts_with("WRITE ERR Shutdown");
    let pass = took <= bound && fenced && refused;
    record_figure(
        SUITE,
        "flatten_slot_zombie",
        &format!(
            "frozen slot holder taken over after {:.2} s (bound {:.1} s), blocklisted: {fenced}; zombie write: {answer}",
            took.as_secs_f64(),
            bound.as_secs_f64()
        ),
        pass,
        json!({"seconds": took.as_secs_f64(), "bound_seconds": bound.as_secs_f64(), "blocklisted": fenced, "zombie_write": answer}),
    );
    drop(g);
    unblocklist(&c, &holder.addr);
    drop(holder);
    assert!(pass, "took {took:?} (bound {bound:?}), fenced {fenced}, zombie write: {answer}");
}

#[test]
fn killed_image_lock_holder_is_broken_and_fenced_and_a_zombie_cannot_write() {
    let c = live!();
    let pool = Pool::open(&c, "rbd").unwrap();
    let killed_img = lock_image(&pool, "flh-lock-k");
    let frozen_img = lock_image(&pool, "flh-lock-z");
    let dead = Holder::spawn(&["lock.hold", "rbd", &killed_img.name]);
    let mut zombie = Holder::spawn(&["lock.hold", "rbd", &frozen_img.name]);
    // Two other clients (own connections) want the locks.
    let other = common::cluster_as(&common::client_id());
    let other_pool = Pool::open(&other, "rbd").unwrap();
    let a = Image::open(&other_pool, &killed_img.name).unwrap();
    let b = Image::open(&other_pool, &frozen_img.name).unwrap();
    let e = a.lock_acquire_raw();
    assert!(e.is_err(), "a live owner's lock cannot be taken");

    dead.signal(libc::SIGKILL);
    zombie.signal(libc::SIGSTOP);
    let t0 = Instant::now();
    // librbd breaks a dead owner's lock itself once the OSD drops its watch (and blocklists it).
    let bound = WATCH_TIMEOUT + Duration::from_secs(10);
    let (ha, hb) = std::thread::scope(|s| {
        let ha = s.spawn(|| {
            let r = a.lock_acquire_raw();
            (r, t0.elapsed())
        });
        let hb = s.spawn(|| {
            let r = b.lock_acquire_raw();
            (r, t0.elapsed())
        });
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let (ra, ta) = ha;
    let (rb, tb) = hb;
    let bl = blocklisted(&c);
    let (dead_fenced, zombie_fenced) = (bl.contains(&dead.addr), bl.contains(&zombie.addr));
    zombie.signal(libc::SIGCONT);
    let answer = zombie.zombie_write(Duration::from_secs(60));
    let refused = answer.starts_with("WRITE ERR Shutdown");
    // The new owners write.
    let wa = ra.is_ok() && a.write(0, &[1u8; 4096]).is_ok();
    let wb = rb.is_ok() && b.write(0, &[2u8; 4096]).is_ok();
    let pass =
        ra.is_ok() && rb.is_ok() && ta <= bound && tb <= bound && dead_fenced && zombie_fenced && refused && wa && wb;
    record_figure(
        SUITE,
        "image_lock",
        &format!(
            "managed lock of a SIGKILLed holder taken after {:.2} s, of a SIGSTOPped one after {:.2} s (bound {:.0} s = watch timeout + 10 s); both blocklisted: {}; zombie write: {answer}",
            ta.as_secs_f64(),
            tb.as_secs_f64(),
            bound.as_secs_f64(),
            dead_fenced && zombie_fenced
        ),
        pass,
        json!({"killed_seconds": ta.as_secs_f64(), "frozen_seconds": tb.as_secs_f64(), "bound_seconds": bound.as_secs_f64(),
            "killed_blocklisted": dead_fenced, "frozen_blocklisted": zombie_fenced, "zombie_write": answer,
            "acquire_errors": [ra.as_ref().err().map(|e| e.to_string()), rb.as_ref().err().map(|e| e.to_string())]}),
    );
    let _ = a.lock_release();
    let _ = b.lock_release();
    drop((a, b));
    for addr in [&dead.addr, &zombie.addr] {
        unblocklist(&c, addr);
    }
    drop(dead);
    drop(zombie);
    assert!(pass, "see the figure above");
}
