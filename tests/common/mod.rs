//! Fixtures for tests against the live dev cluster (`scripts/vstart.sh`).
//!
//! The cluster is found through `CEPH_CONF` and `RBD_TEST_CLIENT_ID` (default `admin`), which
//! the README's test command sets. Without them, or when the cluster is unreachable, a test
//! **fails** with a message saying how to start one. Setting `RBD_TEST_NO_CLUSTER=1` is the
//! explicit opt-out (tests that need a cluster then return early); CI never sets it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use rbd_core::{Cluster, Image, ImageOptions, Pool};

const HOW: &str = "start one with `scripts/vstart.sh up && eval \"$(scripts/vstart.sh env)\"` \
(or run the README test command); see tests/README.md";

/// The admin connection for tests, or `None` when the opt-out is set.
pub fn cluster() -> Option<Cluster> {
    if std::env::var_os("RBD_TEST_NO_CLUSTER").is_some() {
        eprintln!("RBD_TEST_NO_CLUSTER is set: skipping a live-cluster test");
        return None;
    }
    let conf = std::env::var_os("CEPH_CONF")
        .unwrap_or_else(|| panic!("CEPH_CONF is not set: this test needs the dev cluster; {HOW}"));
    let id = client_id();
    Some(
        Cluster::shared(Some(std::path::Path::new(&conf)), &id)
            .unwrap_or_else(|e| panic!("cannot connect to the dev cluster ({e}); {HOW}")),
    )
}

/// A connection as another client (e.g. `cinder`), not shared.
pub fn cluster_as(id: &str) -> Cluster {
    let conf = std::env::var_os("CEPH_CONF").unwrap_or_else(|| panic!("CEPH_CONF is not set; {HOW}"));
    Cluster::connect(Some(std::path::Path::new(&conf)), id).unwrap_or_else(|e| panic!("connect as {id}: {e}; {HOW}"))
}

/// The client id tests run as.
pub fn client_id() -> String {
    std::env::var("RBD_TEST_CLIENT_ID").unwrap_or_else(|_| "admin".into())
}

/// Returns early (as a skipped test) only under the explicit opt-out.
#[macro_export]
macro_rules! live {
    () => {
        match common::cluster() {
            Some(c) => c,
            None => return,
        }
    };
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A unique image name for this process: `rbdcore-t-<pid>-<n>-<tag>`.
pub fn unique(tag: &str) -> String {
    format!("rbdcore-t-{}-{}-{tag}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// Removes an image with everything on it: flattens/removes children found through its
/// snapshots, unprotects and removes snapshots, then the image; also empties matching trash.
pub fn purge_image(pool: &Pool, name: &str) {
    let _ = rbd_core_test_purge(pool, name);
}

fn rbd_core_test_purge(pool: &Pool, name: &str) -> rbd_core::Result<()> {
    if !pool.image_exists(name)? {
        return Ok(());
    }
    let img = Image::open(pool, name)?;
    for s in img.snapshots().unwrap_or_default() {
        if s.namespace == rbd_core::SnapNamespace::User {
            if s.protected == Some(true) {
                // Flatten clones of a protected snapshot so it can be unprotected.
                for child in img.children_of_snap(&s.name).unwrap_or_default() {
                    if let Ok(p) = Pool::open_ns(pool.cluster(), &child.pool, &child.pool_namespace) {
                        if let Ok(c) = Image::open(&p, &child.image) {
                            let _ = c.flatten();
                        }
                    }
                }
                let _ = img.snap_unprotect(&s.name);
            }
            let _ = img.snap_remove(&s.name);
        } else {
            let _ = img.snap_remove_by_id(s.id);
        }
    }
    drop(img);
    pool.remove_image(name)
}

/// An image that is removed (with its snapshots) when dropped.
pub struct ScratchImage {
    pub pool: Pool,
    pub name: String,
}

impl ScratchImage {
    /// Creates `pool/<unique(tag)>` of `size` bytes with default options.
    pub fn new(cluster: &Cluster, pool: &str, tag: &str, size: u64) -> ScratchImage {
        ScratchImage::with_options(cluster, pool, tag, size, &ImageOptions::new())
    }

    /// Creates it with `opts`.
    pub fn with_options(cluster: &Cluster, pool: &str, tag: &str, size: u64, opts: &ImageOptions) -> ScratchImage {
        let pool = Pool::open(cluster, pool).expect("open pool");
        let name = unique(tag);
        pool.create_image(&name, size, opts).expect("create scratch image");
        ScratchImage { pool, name }
    }

    /// Opens it read-write.
    pub fn open(&self) -> Image {
        Image::open(&self.pool, &self.name).expect("open scratch image")
    }
}

impl Drop for ScratchImage {
    fn drop(&mut self) {
        purge_image(&self.pool, &self.name);
    }
}

/// Deterministic pseudo-random bytes (xorshift), for data checks.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Records one reliability figure for `target/reliability/summary.md` (issue #10): writes
/// `target/reliability/figures/<suite>.<name>.json` with `{"suite","name","figure","pass","detail"}`
/// and prints it, so the figure is in the test's output too. `scripts/reliability.sh` merges
/// the files into the summary.
pub fn record_figure(suite: &str, name: &str, figure: &str, pass: bool, detail: serde_json::Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reliability/figures");
    let v = serde_json::json!({ "suite": suite, "name": name, "figure": figure, "pass": pass, "detail": detail });
    eprintln!("FIGURE {suite}.{name}: {figure} ({})", if pass { "pass" } else { "FAIL" });
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(format!("{suite}.{name}.json")), format!("{v:#}\n"));
    }
}

/// Fences a SIGKILLed `recipe_runner` (which prints `ADDR <client address>` first), as an
/// orchestrator would: blocklisting its address ends its watches at once, so its images are not
/// "in use" for the OSD watch timeout (30 s) and its stale exclusive locks can be broken.
pub fn fence_killed_runner(stdout: &str) {
    if let Some(addr) = stdout.lines().find_map(|l| l.strip_prefix("ADDR ")) {
        let c = cluster().expect("cluster");
        c.blocklist_add(addr.trim(), Some(std::time::Duration::from_secs(600))).expect("blocklist the killed runner");
    }
}

/// The `recipe_runner` example binary (`cargo build --example recipe_runner`, once per test
/// process), for tests that crash recipes in a child process.
pub fn runner_bin() -> std::path::PathBuf {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let exe = std::env::current_exe().expect("current test executable");
    let bin = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps").join("examples/recipe_runner");
    if !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--example", "recipe_runner"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example recipe_runner");
        assert!(status.success(), "cargo build --example recipe_runner failed");
        *built = true;
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// The second dev cluster (`RBD_TEST_CEPH_CONF2`), for backups and cross-cluster transfers.
pub fn cluster2() -> Cluster {
    let conf = std::env::var("RBD_TEST_CEPH_CONF2").unwrap_or_else(|_| {
        panic!("RBD_TEST_CEPH_CONF2 is not set: this test needs the second dev cluster; see tests/README.md")
    });
    Cluster::shared(Some(std::path::Path::new(&conf)), &client_id())
        .unwrap_or_else(|e| panic!("cannot connect to the second dev cluster at {conf} ({e}); see tests/README.md"))
}

/// A random 12-hex-digit token: every name a test creates contains it, and its reconciles
/// consider only such names.
pub fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// How a `recipe_runner` child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RunnerOutcome {
    /// SIGKILLed (by a `kill` failpoint): no undo ran. The child has been fenced.
    Killed,
    Ok,
    /// Failed; its stdout (which ends with `ERROR <message>`).
    Err(String),
}

/// Runs `recipe_runner args...` to its end with the extra environment `env` (a failpoint, a
/// kill point), stdin closed. A SIGKILLed child is fenced ([`fence_killed_runner`]).
pub fn run_runner(args: &[&str], env: &[(&str, &str)]) -> RunnerOutcome {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = std::process::Command::new(runner_bin());
    cmd.args(args)
        .env("RBD_TEST_CLIENT_ID", client_id())
        .env_remove("RBD_CORE_FAILPOINTS")
        .env_remove("RBD_RUNNER_KILL_AT")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    let out = cmd.output().expect("run recipe_runner");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.signal() == Some(libc::SIGKILL) {
        fence_killed_runner(&stdout);
        RunnerOutcome::Killed
    } else if out.status.success() {
        RunnerOutcome::Ok
    } else {
        RunnerOutcome::Err(stdout)
    }
}
