//! Unreachable monitors (issue #10, quick part): connecting to a monitor address where nothing
//! listens, or where something accepts the TCP connection and never answers (a hung monitor),
//! fails with [`ErrorKind::Timeout`] within the configured timeout plus 1 s, never hangs.
//!
//! These tests need no cluster: each writes its own `ceph.conf` pointing `mon_host` at
//! `127.0.0.1:<port>` with a throw-away keyring. The in-flight part (a live cluster whose monitor
//! and OSDs go away under an open image) needs a cluster of its own and runs in the long suite
//! (`tests/fault_osd_loss.rs`, `scripts/reliability.sh --long`).
mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbd_core::{ClusterBuilder, ErrorKind};
use serde_json::json;

/// The configured timeouts measured (seconds); every one runs on its own thread, so the test
/// takes about the longest one.
const TIMEOUTS: [u64; 3] = [1, 2, 5];

/// Slack allowed on top of the configured timeout (the bound).
const SLACK: Duration = Duration::from_secs(1);

/// A syntactically valid cephx key that belongs to nobody (type 1, 16 bytes 00..0f).
const FAKE_KEY: &str = "AQAAAAAAAAAAABAAAAECAwQFBgcICQoLDA0ODw==";

/// A folder with `ceph.conf` (monitor at `127.0.0.1:port`) and a keyring with a fake key.
struct FakeConf {
    dir: PathBuf,
}

impl FakeConf {
    fn new(tag: &str, port: u16) -> FakeConf {
        let dir = std::env::temp_dir().join(format!("rbdcore-fault-mon-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let keyring = dir.join("keyring");
        std::fs::write(&keyring, format!("[client.admin]\n\tkey = {FAKE_KEY}\n")).expect("keyring");
        let mut f = std::fs::File::create(dir.join("ceph.conf")).expect("conf");
        write!(
            f,
            "[global]\nmon host = 127.0.0.1:{port}\nkeyring = {}\nauth client required = cephx\n\
             log file = {}\nadmin socket = \n",
            keyring.display(),
            dir.join("client.log").display()
        )
        .expect("write conf");
        FakeConf { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("ceph.conf")
    }
}

impl Drop for FakeConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port where nothing listens (bound once, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

/// A "hung monitor": accepts TCP connections and never sends a byte. Stops when dropped.
struct BlackHole {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn new() -> BlackHole {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        BlackHole { port, stop, thread: Some(thread) }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One measured connect: (configured s, measured s, error kind, errno, message).
#[derive(Debug)]
struct Measured {
    configured: u64,
    measured: f64,
    kind: Option<ErrorKind>,
    errno: i32,
    message: String,
}

impl Measured {
    fn ok(&self) -> bool {
        self.kind == Some(ErrorKind::Timeout)
            && self.measured <= (Duration::from_secs(self.configured) + SLACK).as_secs_f64()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "configured_s": self.configured,
            "measured_s": (self.measured * 1000.0).round() / 1000.0,
            "kind": format!("{:?}", self.kind),
            "errno": self.errno,
            "error": self.message,
        })
    }
}

/// Connects through `conf` with `set` applying the timeout, on a thread with a hard watchdog
/// (configured + 30 s) so a hang fails the test instead of blocking it.
fn measure(conf: &Path, configured: u64, set: fn(&mut ClusterBuilder, Duration)) -> Measured {
    let conf = conf.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = ClusterBuilder::new("admin");
        b.conf_file(&conf);
        set(&mut b, Duration::from_secs(configured));
        let t0 = Instant::now();
        let r = b.connect();
        let elapsed = t0.elapsed().as_secs_f64();
        let _ = tx.send(match r {
            Ok(_) => Measured { configured, measured: elapsed, kind: None, errno: 0, message: "connected?!".into() },
            Err(e) => Measured {
                configured,
                measured: elapsed,
                kind: Some(e.kind()),
                errno: e.errno(),
                message: e.to_string(),
            },
        });
    });
    match rx.recv_timeout(Duration::from_secs(configured + 30)) {
        Ok(m) => m,
        Err(_) => Measured {
            configured,
            measured: (configured + 30) as f64,
            kind: None,
            errno: 0,
            message: "HUNG: no answer within configured + 30 s".into(),
        },
    }
}

/// Measures every timeout in [`TIMEOUTS`] in parallel against the monitor address `port`.
fn measure_all(tag: &str, port: u16, set: fn(&mut ClusterBuilder, Duration)) -> Vec<Measured> {
    let handles: Vec<_> = TIMEOUTS
        .iter()
        .map(|&t| {
            let tag = format!("{tag}-{t}");
            std::thread::spawn(move || {
                let conf = FakeConf::new(&tag, port);
                measure(&conf.conf(), t, set)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("measuring thread")).collect()
}

fn report(name: &str, what: &str, results: &[Measured]) {
    let pass = results.iter().all(Measured::ok);
    let figure =
        results.iter().map(|m| format!("{} s → {:.2} s", m.configured, m.measured)).collect::<Vec<_>>().join(", ");
    common::record_figure(
        "fault_monitors",
        name,
        &format!("{what}: configured → measured time to ErrorKind::Timeout: {figure}"),
        pass,
        json!({ "bound": "configured + 1 s", "results": results.iter().map(Measured::json).collect::<Vec<_>>() }),
    );
    for m in results {
        assert_eq!(m.kind, Some(ErrorKind::Timeout), "{what}, {} s: expected a timeout error, got {m:?}", m.configured);
        assert!(m.ok(), "{what}, {} s: took {:.2} s (bound: configured + 1 s): {m:?}", m.configured, m.measured);
        assert_eq!(m.errno, libc::ETIMEDOUT, "{m:?}");
        assert!(m.message.contains("rados_connect"), "the error names the call: {m:?}");
    }
}

/// Nothing listens on the monitor port: connect fails with a timeout, not a hang and not an
/// immediate "connection refused" the caller cannot tell from a bad config.
#[test]
fn connect_to_closed_port_times_out_within_bound() {
    let port = closed_port();
    let r = measure_all("closed", port, |b, t| {
        b.timeout(t);
    });
    report("connect_closed_port", "closed monitor port, ClusterBuilder::timeout", &r);
}

/// Only the mount timeout set (mon op timeout left at its default): it alone bounds connect.
#[test]
fn connect_with_mount_timeout_only() {
    let port = closed_port();
    let r = measure_all("mount", port, |b, t| {
        b.mount_timeout(t);
    });
    report("connect_mount_timeout", "closed monitor port, ClusterBuilder::mount_timeout", &r);
}

/// A monitor that accepts TCP connections and never answers (hung process, half-open
/// firewall): still a timeout within the bound.
#[test]
fn connect_to_silent_monitor_times_out_within_bound() {
    let hole = BlackHole::new();
    let r = measure_all("silent", hole.port, |b, t| {
        b.timeout(t);
    });
    drop(hole);
    report("connect_silent_monitor", "monitor accepts TCP and never answers, ClusterBuilder::timeout", &r);
}
