//! A worker process for the cluster-wide flatten throttle test (`tests/recipes_throttle.rs`).
//!
//! ```text
//! flatten_worker POOL PREFIX SLOTS IMAGE      # flatten POOL/IMAGE through the throttle
//! FLATTEN_WORKER_HOLD=1 flatten_worker POOL PREFIX SLOTS -   # take a slot and hold it forever
//! ```
//!
//! Environment: `CEPH_CONF`, `RBD_TEST_CLIENT_ID` (default `admin`), `FLATTEN_WORKER_SLOW_MS`
//! (sleep this long in every progress callback, so flattens overlap), `FLATTEN_WORKER_LEASE_MS`
//! and `FLATTEN_WORKER_HEARTBEAT_MS` (lease settings).
//!
//! Output lines on stdout (flushed at once): `READY <addr>`, `START <slot> <unix ns>` (slot
//! acquired), `END <slot> <unix ns>` (about to release), `HOLDING <slot> <owner>`, `DONE`, or
//! `ERROR <message>`.

use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rbd_core::recipes::flatten::FlattenGate;
use rbd_core::recipes::throttle::{Throttle, ThrottleObserver};
use rbd_core::{Cluster, Image, Pool, Progress};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

struct Report;

impl ThrottleObserver for Report {
    fn acquired(&self, slot: usize, _waited: Duration) {
        say(&format!("START {slot} {}", now_ns()));
    }
    fn releasing(&self, slot: usize, _held: Duration) {
        say(&format!("END {slot} {}", now_ns()));
    }
    fn took_over(&self, slot: usize, owner: &str) {
        say(&format!("TOOK_OVER {slot} {owner}"));
    }
}

fn env_ms(name: &str) -> Option<Duration> {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).map(Duration::from_millis)
}

fn run(args: &[String]) -> rbd_core::Result<()> {
    let [pool, prefix, slots, image] = args else {
        return Err(rbd_core::Error::invalid("flatten_worker", "usage: flatten_worker POOL PREFIX SLOTS IMAGE"));
    };
    let slots: usize = slots.parse().map_err(|_| rbd_core::Error::invalid("flatten_worker", "SLOTS: a number"))?;
    let id = std::env::var("RBD_TEST_CLIENT_ID").unwrap_or_else(|_| "admin".into());
    let conf = std::env::var_os("CEPH_CONF").map(std::path::PathBuf::from);
    let cluster = Cluster::connect(conf.as_deref(), &id)?;
    say(&format!("READY {}", cluster.addrs().unwrap_or_default()));
    let pool = Pool::open(&cluster, pool)?;
    let mut throttle = Throttle::new(&pool, slots)?;
    throttle.prefix(prefix).label("flatten_worker").observer(Arc::new(Report));
    if let (Some(lease), Some(hb)) = (env_ms("FLATTEN_WORKER_LEASE_MS"), env_ms("FLATTEN_WORKER_HEARTBEAT_MS")) {
        throttle.lease(lease, hb);
    }
    if std::env::var_os("FLATTEN_WORKER_HOLD").is_some() {
        let guard = throttle.acquire(None)?;
        say(&format!("HOLDING {} {}", guard.slot(), guard.owner()));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let img = Image::open(&pool, image)?;
    let slow = env_ms("FLATTEN_WORKER_SLOW_MS");
    let mut cb = |_done: u64, _total: u64| {
        if let Some(d) = slow {
            std::thread::sleep(d);
        }
        ControlFlow::Continue(())
    };
    throttle.flatten(&img, &mut Progress::new(&mut cb))?;
    say("DONE");
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
