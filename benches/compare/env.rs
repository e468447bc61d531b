//! The benchmark environment: cluster facts (recorded with every result), connections,
//! subprocesses with their peak RSS, the injected network delay, data sets and cleanup.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rbd_core::{AioWriter, Cluster, ClusterBuilder, Image, Pool, SnapNamespace};
use serde_json::{json, Value};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// The OSD-side delay injected in network mode (`ms_inject_delay_max`, seconds). Measured on
/// the dev clusters: 0.005 gives a median 4 KiB synchronous write of about 5 ms (0.2 ms without).
pub const DEFAULT_DELAY_MAX: f64 = 0.005;

/// Facts about the run, copied into every result.
#[derive(Debug, Clone)]
pub struct Facts {
    pub mode: &'static str,
    pub ceph_version: String,
    pub objectstore: String,
    pub osds: u64,
    pub cores: usize,
    /// `ms_inject_delay_max` set on the OSDs (0 in local mode).
    pub delay_max_s: f64,
    /// Median 4 KiB synchronous write (cache off) on the source cluster, in ms.
    pub write_rtt_ms: f64,
    /// The same on the destination cluster.
    pub write_rtt_ms_dst: f64,
    /// Daemon types the delay is injected on (`osd`, `mon`).
    pub delay_on: String,
    /// Mean connect + ioctx + shutdown, ms.
    pub connect_ms: f64,
    /// "two clusters" or "one cluster, pools volumes -> backups".
    pub topology: String,
    pub python_rbd: String,
    /// `memstore_page_set` of osd.0 (scripts/bench.sh turns it on: sparse memstore objects).
    pub memstore_page_set: String,
}

impl Facts {
    pub fn to_json(&self) -> Value {
        json!({
            "mode": self.mode, "ceph_version": self.ceph_version, "objectstore": self.objectstore,
            "osds": self.osds, "cores": self.cores, "injected_delay_max_s": self.delay_max_s,
            "write_rtt_ms": self.write_rtt_ms, "write_rtt_ms_dst": self.write_rtt_ms_dst,
            "delay_on": self.delay_on, "connect_ms": self.connect_ms,
            "topology": self.topology, "python_rbd": self.python_rbd, "memstore_page_set": self.memstore_page_set,
        })
    }
}

/// Everything a comparison needs.
pub struct Env {
    pub conf1: PathBuf,
    pub conf2: PathBuf,
    pub two_clusters: bool,
    pub id: String,
    pub quick: bool,
    pub repeat: usize,
    /// Prefix of every image, volume id and backup id this run creates (`b<pid>`, a-z0-9).
    pub tag: String,
    pub root: PathBuf,
    pub out_dir: PathBuf,
    pub data_dir: PathBuf,
    pub sys_python: String,
    pub venv_python: String,
    pub facts: Facts,
}

impl Env {
    /// A new connection (not the shared cache) with `rbd_cache` set as asked (`None`: default).
    pub fn connect(&self, conf: &Path, cache: Option<bool>) -> Cluster {
        let mut b = ClusterBuilder::new(self.id.clone());
        b.conf_file(conf);
        if let Some(on) = cache {
            b.set("rbd_cache", if on { "true" } else { "false" });
        }
        b.connect().unwrap_or_else(|e| panic!("connect to {}: {e}", conf.display()))
    }

    /// `rbd -c CONF --id ID [--rbd-cache=false]` as a command line prefix.
    pub fn rbd(&self, conf: &Path, cache: Option<bool>) -> String {
        let mut s = format!("rbd -c {} --id {}", conf.display(), self.id);
        if let Some(on) = cache {
            s.push_str(if on { " --rbd-cache=true" } else { " --rbd-cache=false" });
        }
        s
    }

    /// A unique name for this run: `<tag>-<what>`.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.tag)
    }

    /// False (and a note) when less than `RBD_BENCH_MIN_FREE_MIB` (default 2048) MiB of memory is
    /// available: the machine is shared, and memstore OSDs grow with every byte written.
    pub fn memory_ok(&self, out: &mut crate::report::PhaseOut, what: &str) -> bool {
        let min = std::env::var("RBD_BENCH_MIN_FREE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2048u64) * MIB;
        let avail = mem_available();
        if avail >= min {
            return true;
        }
        let msg = format!(
            "{what}: SKIPPED, only {} MiB of memory available (the harness keeps {} MiB free)",
            avail / MIB,
            min / MIB
        );
        eprintln!("{msg}");
        out.note(msg);
        false
    }

    pub fn py_script(&self, name: &str) -> PathBuf {
        self.root.join("benches/py").join(name)
    }
}

/// A finished subprocess: wall time, peak RSS (its own and its descendants', from `wait4`),
/// output.
#[derive(Debug, Clone)]
pub struct Proc {
    pub seconds: f64,
    pub maxrss_kib: u64,
    /// User + system CPU seconds of the process and its waited-for descendants.
    pub cpu_s: f64,
    pub stdout: String,
    pub stderr: String,
    pub ok: bool,
}

impl Proc {
    /// Panics with the command's stderr unless it succeeded.
    pub fn check(self, what: &str) -> Proc {
        assert!(self.ok, "{what} failed:\n{}\n{}", self.stderr.trim(), self.stdout.trim());
        self
    }

    /// The last stdout line parsed as JSON (the protocol of benches/py and the child modes).
    pub fn json(&self) -> Value {
        let line = self.stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("{}");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON from child ({e}): {line}"))
    }
}

/// Runs `cmd` through this binary's `--child exec` wrapper, which times it and reads its peak RSS
/// with `wait4` (`ru_maxrss`: the maximum over the process and the descendants it waited for, so
/// `bash -c 'a | b'` reports the larger of a and b).
///
/// Why a wrapper: Linux carries the high-water RSS of the address space a process had *before*
/// `execve` into its `ru_maxrss`, and a child spawned straight from this (large) process starts
/// from a copy of it, which inflated every figure to this process's size. The wrapper is small, so
/// what it spawns starts clean.
pub fn run(cmd: &mut Command) -> Proc {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let result = std::env::temp_dir().join(format!(
        "compare-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let exe = std::env::current_exe().expect("current_exe");
    let mut w = Command::new(exe);
    w.args(["--child", "exec", "--result"]).arg(&result).arg("--").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        w.current_dir(d);
    }
    w.stdin(Stdio::null());
    let t0 = Instant::now();
    let out = w.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let wall = t0.elapsed().as_secs_f64();
    let r: Value =
        std::fs::read_to_string(&result).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    let _ = std::fs::remove_file(&result);
    Proc {
        seconds: r["seconds"].as_f64().unwrap_or(wall),
        maxrss_kib: r["maxrss_kib"].as_u64().unwrap_or(0),
        cpu_s: r["cpu_s"].as_f64().unwrap_or(0.0),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ok: out.status.success() && r["ok"].as_bool() == Some(true),
    }
}

/// The `--child exec --result FILE -- CMD ARGS...` wrapper: runs CMD (stdio inherited), waits
/// with `wait4`, writes `{"seconds", "maxrss_kib", "ok"}` to FILE and exits with CMD's status.
pub fn exec_main(result: &Path, argv: &[String]) -> i32 {
    let Some((prog, args)) = argv.split_first() else {
        eprintln!("--child exec needs a command after --");
        return 2;
    };
    let t0 = Instant::now();
    let child = match Command::new(prog).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spawn {prog}: {e}");
            return 127;
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value (plain integers and timevals).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not reaped yet (std reaps only in wait/try_wait, which
        // are never called on `child`); `status` and `ru` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            eprintln!("wait4({pid}): {e}");
            return 125;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    let doc = json!({"seconds": seconds, "maxrss_kib": ru.ru_maxrss, "cpu_s": cpu, "ok": code == 0, "code": code});
    if let Err(e) = std::fs::write(result, doc.to_string()) {
        eprintln!("write {}: {e}", result.display());
        return 125;
    }
    code
}

/// One measured run: wall seconds, peak RSS of a subprocess, client CPU seconds, extra facts.
pub struct Meas {
    pub secs: f64,
    pub rss: Option<u64>,
    pub cpu: f64,
    pub extra: Value,
}

impl Meas {
    /// Times `f` in this process (wall and CPU).
    pub fn here<T>(f: impl FnOnce() -> T) -> (Meas, T) {
        let c0 = cpu_self();
        let t0 = Instant::now();
        let v = f();
        (Meas { secs: t0.elapsed().as_secs_f64(), rss: None, cpu: cpu_self() - c0, extra: Value::Null }, v)
    }

    /// From a finished subprocess.
    pub fn proc(p: &Proc) -> Meas {
        Meas { secs: p.seconds, rss: Some(p.maxrss_kib), cpu: p.cpu_s, extra: Value::Null }
    }
}

/// `bash -c "set -o pipefail; CMD"`, measured.
pub fn sh(cmd: &str) -> Proc {
    run(Command::new("bash").arg("-c").arg(format!("set -o pipefail; {cmd}")))
}

fn cmd_out(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `ceph -c CONF --id ID ARGS...` (stdout).
pub fn ceph(conf: &Path, id: &str, args: &[&str]) -> String {
    let c = conf.display().to_string();
    let mut all = vec!["-c", c.as_str(), "--id", id, "--connect-timeout", "20"];
    all.extend_from_slice(args);
    cmd_out("ceph", &all)
}

/// Ceph version, objectstore and OSD count of the cluster behind `conf`.
pub fn cluster_facts(conf: &Path, id: &str) -> (String, String, u64) {
    let version = ceph(conf, id, &["version"]);
    let meta: Value = serde_json::from_str(&ceph(conf, id, &["osd", "metadata", "-f", "json"])).unwrap_or(Value::Null);
    let osds = meta.as_array().map(|a| a.len() as u64).unwrap_or(0);
    let store =
        meta.get(0).and_then(|o| o.get("osd_objectstore")).and_then(Value::as_str).unwrap_or("unknown").to_string();
    (version, store, osds)
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// MemAvailable in bytes.
pub fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .map(|kib| kib * KIB)
        .unwrap_or(0)
}

// --- the injected delay (network mode) -------------------------------------------------------

/// Sets the message delay on the daemons `who` (`osd`, `mon`) of `conf`'s cluster. A daemon
/// delays the messages whose **sender** has the listed entity type, so the type is `client`
/// (`ms_inject_delay_type = osd` on an OSD delays only OSD-to-OSD messages: none on a single-OSD
/// cluster; measured 0.2 ms for a 4 KiB write either way). Applies to connections made
/// afterwards.
pub fn inject_delay(conf: &Path, id: &str, max_s: f64, who: &[String]) {
    let max = format!("{max_s}");
    for w in who {
        for (k, v) in
            [("ms_inject_delay_type", "client"), ("ms_inject_delay_max", &max), ("ms_inject_delay_probability", "1")]
        {
            let _ = ceph(conf, id, &["config", "set", w, k, v]);
        }
    }
}

/// Removes the delay settings again (from `osd` and `mon`).
pub fn reset_delay(conf: &Path, id: &str) {
    for w in ["osd", "mon"] {
        for k in ["ms_inject_delay_type", "ms_inject_delay_max", "ms_inject_delay_probability"] {
            let _ = ceph(conf, id, &["config", "rm", w, k]);
        }
    }
}

/// Mean time of connect + open an ioctx + shut down (a fresh `rados_t` each time), in ms.
pub fn connect_ms(id: &str, conf: &Path) -> f64 {
    let n = 5;
    let t0 = Instant::now();
    for _ in 0..n {
        let c = Cluster::connect(Some(conf), id).expect("connect");
        let _p = Pool::open(&c, "rbd").expect("pool rbd");
    }
    t0.elapsed().as_secs_f64() * 1000.0 / n as f64
}

/// Resets the delay on drop (also when a comparison panics).
pub struct DelayGuard(pub Vec<(PathBuf, String)>);

impl Drop for DelayGuard {
    fn drop(&mut self) {
        for (conf, id) in &self.0 {
            reset_delay(conf, id);
        }
    }
}

/// Median time of a 4 KiB synchronous write (rbd_cache off, fresh connection), in ms.
pub fn write_rtt_ms(env_id: &str, conf: &Path, tag: &str) -> f64 {
    let mut b = ClusterBuilder::new(env_id.to_string());
    b.conf_file(conf).set("rbd_cache", "false");
    let c = b.connect().expect("connect for the latency probe");
    let pool = Pool::open(&c, "rbd").expect("pool rbd");
    let name = format!("{tag}-rtt");
    pool.create_image(&name, MIB, &rbd_core::ImageOptions::new()).expect("create probe image");
    let mut ts = Vec::new();
    {
        let img = Image::open(&pool, &name).expect("open probe image");
        let buf = vec![7u8; 4096];
        img.write(0, &buf).expect("probe write");
        for i in 0..30u64 {
            let t0 = Instant::now();
            img.write((i % 16) * 4096, &buf).expect("probe write");
            ts.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let _ = pool.remove_image(&name);
    median(&ts)
}

/// CPU seconds (user + system) this process used so far.
pub fn cpu_self() -> f64 {
    // SAFETY: an all-zero `rusage` is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid for writes.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// CPU seconds the cluster's OSD daemons used so far (from `<conf dir>/run/osd.*.pid`).
pub fn osd_cpu(conf: &Path) -> f64 {
    let run = conf.parent().map(|d| d.join("run")).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0.0;
    for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if !(n.starts_with("osd.") && n.ends_with(".pid")) {
            continue;
        }
        let Ok(pid) = std::fs::read_to_string(e.path()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) else { continue };
        // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        total += ticks / hz;
    }
    total
}

/// OSD operation counters of the cluster behind `conf` (summed over its OSDs, read from their
/// admin sockets in `<conf dir>/run`): `[reads, writes, bytes read out, bytes written in]`.
pub fn osd_ops(conf: &Path) -> [u64; 4] {
    let run = conf.parent().map(|d| d.join("run")).unwrap_or_default();
    let mut t = [0u64; 4];
    for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if !(n.starts_with("osd.") && n.ends_with(".asok")) {
            continue;
        }
        let out = cmd_out("ceph", &["--admin-daemon", &e.path().display().to_string(), "perf", "dump"]);
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let o = &v["osd"];
        for (i, k) in ["op_r", "op_w", "op_r_out_bytes", "op_w_in_bytes"].iter().enumerate() {
            t[i] += o[k].as_u64().unwrap_or(0);
        }
        t[0] += o["op_rw"].as_u64().unwrap_or(0);
    }
    t
}

/// `after - before` of [`osd_ops`] as JSON.
pub fn ops_delta(before: [u64; 4], after: [u64; 4]) -> Value {
    let d: Vec<u64> = (0..4).map(|i| after[i].saturating_sub(before[i])).collect();
    json!({"reads": d[0], "writes": d[1], "read_bytes": d[2], "write_bytes": d[3]})
}

// --- statistics -------------------------------------------------------------------------------

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

// --- data -------------------------------------------------------------------------------------

/// The data sets of the upload comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSet {
    /// Pseudo-random bytes throughout.
    Random,
    /// Alternating 4 MiB of random bytes and 4 MiB of zeros (half the bytes are zero).
    HalfZero,
}

impl DataSet {
    pub fn key(self) -> &'static str {
        match self {
            DataSet::Random => "random",
            DataSet::HalfZero => "halfzero",
        }
    }

    pub fn parse(s: &str) -> DataSet {
        if s == "halfzero" {
            DataSet::HalfZero
        } else {
            DataSet::Random
        }
    }

    /// Whether the 4 MiB chunk at `off` is zero.
    fn zero_at(self, off: u64) -> bool {
        self == DataSet::HalfZero && (off / (4 * MIB)) % 2 == 1
    }
}

/// Fills `buf` with xorshift64 bytes from `seed` (fast: a few GB/s).
pub fn fill_random(seed: u64, buf: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    for b in chunks.into_remainder() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// The 4 MiB chunk of data set `ds` at offset `off` (a multiple of 4 MiB).
pub fn chunk(ds: DataSet, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    if !ds.zero_at(off) {
        fill_random(off / (4 * MIB) + 1, &mut v);
    }
    v
}

/// `target/bench-data/<set>-<MiB>.raw`, written once and reused by later runs.
pub fn data_file(env: &Env, ds: DataSet, size: u64) -> PathBuf {
    let p = env.data_dir.join(format!("{}-{}M.raw", ds.key(), size / MIB));
    if std::fs::metadata(&p).map(|m| m.len()).ok() == Some(size) {
        return p;
    }
    std::fs::create_dir_all(&env.data_dir).expect("create target/bench-data");
    let tmp = p.with_extension("tmp");
    let mut f = File::create(&tmp).expect("create data file");
    let mut off = 0;
    while off < size {
        let n = (size - off).min(4 * MIB);
        f.write_all(&chunk(ds, off, n as usize)).expect("write data file");
        off += n;
    }
    f.sync_all().expect("sync data file");
    std::fs::rename(&tmp, &p).expect("rename data file");
    p
}

/// A reader of `size` bytes of data set `ds` that cycles through a pre-made 8 MiB block (no
/// file, no page cache; memcpy is the only cost). Used for the multi-GiB uploads.
pub struct DataReader {
    block: Vec<u8>,
    left: u64,
    pos: usize,
}

impl DataReader {
    pub fn new(ds: DataSet, size: u64) -> DataReader {
        // One period of the data set (8 MiB: 4 MiB random + 4 MiB zero for half-zero), repeated.
        // It used to be 64 MiB, which the memory comparison then counted against the library.
        let len = (8 * MIB).min(size.max(4 * MIB)) as usize;
        let mut block = Vec::with_capacity(len);
        let mut off = 0u64;
        while (off as usize) < len {
            let n = (len - off as usize).min(4 * MIB as usize);
            block.extend_from_slice(&chunk(ds, off, n));
            off += n as u64;
        }
        DataReader { block, left: size, pos: 0 }
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left).min((self.block.len() - self.pos) as u64) as usize;
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes `len` bytes of data set `ds` at offset 0 of `img` (16 × 4 MiB in flight); zero
/// chunks are left as holes.
pub fn fill_image(img: &Image, ds: DataSet, len: u64) {
    let mut w = AioWriter::new(img, 16);
    let mut off = 0;
    while off < len {
        let n = (len - off).min(4 * MIB);
        if !ds.zero_at(off) {
            w.write(off, chunk(ds, off, n as usize)).expect("write data");
        }
        off += n;
    }
    w.finish().expect("flush data");
}

/// `count` distinct `wsize`-aligned slots of a `volume`-byte image, in random order (seeded).
pub fn random_slots(volume: u64, wsize: u64, count: u64, seed: u64) -> Vec<u64> {
    let slots = volume / wsize;
    let count = count.min(slots);
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    if count * 2 > slots {
        // Dense: shuffle all slots and keep `count`.
        let mut all: Vec<u64> = (0..slots).collect();
        for i in (1..all.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            all.swap(i, j);
        }
        all.truncate(count as usize);
        return all;
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count as usize);
    while (out.len() as u64) < count {
        let s = next() % slots;
        if seen.insert(s) {
            out.push(s);
        }
    }
    out
}

/// Writes `changed` bytes as `wsize` writes at random distinct slots (16 in flight).
pub fn write_changes(img: &Image, volume: u64, changed: u64, wsize: u64, seed: u64) {
    let mut w = AioWriter::new(img, 16);
    for (i, slot) in random_slots(volume, wsize, changed / wsize, seed).into_iter().enumerate() {
        let mut buf = vec![0u8; wsize as usize];
        fill_random(seed ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D), &mut buf);
        w.write(slot * wsize, buf).expect("write change");
    }
    w.finish().expect("flush changes");
}

// --- cleanup ----------------------------------------------------------------------------------

/// Removes image `name` (user snapshots first, unprotecting them); gone already is fine.
pub fn purge(pool: &Pool, name: &str) -> rbd_core::Result<()> {
    if !pool.image_exists(name)? {
        return Ok(());
    }
    {
        let img = Image::open(pool, name)?;
        for s in img.snapshots()? {
            if s.namespace == SnapNamespace::User {
                if img.snap_is_protected(&s.name).unwrap_or(false) {
                    img.snap_unprotect(&s.name)?;
                }
                img.snap_remove(&s.name)?;
            }
        }
    }
    let mut last = None;
    // A just-closed image can still be watched for a moment (EBUSY): retry briefly.
    for _ in 0..20 {
        match pool.remove_image(name) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == rbd_core::ErrorKind::Busy => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) if e.kind() == rbd_core::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| rbd_core::Error::new(rbd_core::ErrorKind::Busy, "remove", "busy")))
}

/// Waits (at most 120 s) until the OSDs have trimmed what was just removed: the bytes stored in
/// `pools` stop shrinking for 6 s or drop under 16 MiB. A memstore OSD holds removed snapshots'
/// objects in memory until trimmed, so the next step would start with less memory (smoke runs
/// skip this).
pub fn settle(env: &Env, cluster: &Cluster, pools: &[&str]) {
    if env.quick {
        return;
    }
    let bytes = || -> u64 {
        pools.iter().filter_map(|p| Pool::open(cluster, p).ok()).filter_map(|p| p.stats().ok()).map(|s| s.bytes).sum()
    };
    let t0 = Instant::now();
    let (mut last, mut since) = (bytes(), Instant::now());
    while t0.elapsed() < Duration::from_secs(120) && last > 16 * MIB && since.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(500));
        let b = bytes();
        if b < last {
            since = Instant::now();
        }
        last = b;
    }
    if t0.elapsed() > Duration::from_secs(2) {
        eprintln!(
            "  (waited {:.0} s for the OSDs to trim; {} MiB left in {pools:?})",
            t0.elapsed().as_secs_f64(),
            last / MIB
        );
    }
}

/// Removes every image whose name contains `tag` (clones before parents) and every RADOS object
/// whose name contains it, in the given pools. Run at the end of each phase.
pub fn sweep(cluster: &Cluster, pools: &[&str], tag: &str) {
    for pass in 0..3 {
        let mut left = 0;
        for p in pools {
            let Ok(pool) = Pool::open(cluster, p) else { continue };
            let names: Vec<String> =
                pool.image_names().unwrap_or_default().into_iter().filter(|n| n.contains(tag)).collect();
            for n in names {
                if let Err(e) = purge(&pool, &n) {
                    left += 1;
                    if pass == 2 {
                        eprintln!("sweep: could not remove {p}/{n}: {e}");
                    }
                }
            }
            for o in pool.object_list().unwrap_or_default() {
                if o.contains(tag) && !o.starts_with("rbd_") {
                    let _ = pool.object_remove(&o);
                }
            }
        }
        if left == 0 {
            break;
        }
    }
}
