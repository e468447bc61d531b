//! Benchmark: moving the same diff from `volumes` on one cluster to `backups` on another by
//! (a) `rbd_core::transfer::Transfer` (in process), (b) the Cinder pipe
//! `rbd export-diff ... - | rbd import-diff - ...` (through `bash -c`), and (c) the CLI through a
//! file (`rbd export-diff ... FILE; rbd import-diff FILE ...`), for a full diff and an
//! incremental one.
//!
//! ```text
//! eval "$(scripts/vstart.sh env)"                      # CEPH_CONF: the source cluster
//! export RBD_TEST_CEPH_CONF2=.ceph-dev/shared2/ceph.conf  # the destination cluster
//! cargo bench --bench diff_transfer
//! ```
//!
//! Workload (environment variables, defaults in brackets): a `BENCH_VOLUME_MIB` [1024] volume
//! whose first `BENCH_BASE_MIB` [256] are written before snapshot `s1` (the **full** diff is
//! everything up to `s1`), then `BENCH_CHANGED_MIB` [64] of `BENCH_WRITE_KIB` [64] KiB writes
//! at random aligned offsets over the whole volume before `s2` (the **incremental** diff
//! `s1 → s2`). `BENCH_IN_FLIGHT` [16] operations in flight for (a). `BENCH_REPEAT` [3] runs of
//! each (median reported, method order rotated). `BENCH_VERIFY` [1] compares each method's
//! destination with the source at `s2` (first run). Results: `target/bench-results/diff_transfer.json`
//! and `.md`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rbd_core::export::DiffExport;
use rbd_core::transfer::{Transfer, TransferStats};
use rbd_core::{AioWriter, Cluster, Image, ImageOptions, Pool, Progress, Result, SnapNamespace};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn need(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!(
            "{name} is not set. This benchmark needs two dev clusters: CEPH_CONF (source, \
             `eval \"$(scripts/vstart.sh env)\"`) and RBD_TEST_CEPH_CONF2 (destination, e.g. \
             .ceph-dev/shared2/ceph.conf from `RBD_DEV_DIR=.ceph-dev/shared2 RBD_DEV_MON_PORT=40920 scripts/vstart.sh up`)."
        );
        std::process::exit(2)
    })
}

struct Ctx {
    conf1: String,
    conf2: String,
    id: String,
    src_pool: Pool,
    dst_pool: Pool,
    src: String,
    tmp: PathBuf,
}

/// Images created by the benchmark, removed (snapshots first) at the end, also on panic.
struct Created(Vec<(Pool, String)>);

impl Drop for Created {
    fn drop(&mut self) {
        for (pool, name) in self.0.drain(..) {
            if let Err(e) = purge(&pool, &name) {
                eprintln!("cleanup of {}/{name} failed: {e}", pool.name());
            }
        }
    }
}

fn purge(pool: &Pool, name: &str) -> Result<()> {
    if !pool.image_exists(name)? {
        return Ok(());
    }
    let img = Image::open(pool, name)?;
    for s in img.snapshots()? {
        if s.namespace == SnapNamespace::User {
            if s.protected == Some(true) {
                img.snap_unprotect(&s.name)?;
            }
            img.snap_remove(&s.name)?;
        }
    }
    drop(img);
    pool.remove_image(name)
}

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

fn sh(cmd: &str) -> Duration {
    let t0 = Instant::now();
    let out = Command::new("bash").arg("-c").arg(format!("set -o pipefail; {cmd}")).output().expect("run bash");
    let dt = t0.elapsed();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    dt
}

fn cmd_out(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// sha256 over (offset, block) of every non-zero 4 KiB block, reading only allocated extents:
/// equal for equal content whatever the allocation.
fn content_hash(pool: &Pool, name: &str, snap: &str) -> String {
    let img = Image::open_at_snap(pool, name, snap).expect("open at snap");
    let size = img.size().expect("size");
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    img.read_iterate(0, size, |off, _len, data| {
        if let Some(d) = data {
            for (i, block) in d.chunks(4096).enumerate() {
                if !rbd_core::is_all_zero(block) {
                    h.update((off + (i as u64) * 4096).to_le_bytes());
                    h.update(block);
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    })
    .expect("read_iterate");
    format!("{:x}", h.finalize())
}

#[derive(Debug, Clone)]
struct Row {
    scenario: &'static str,
    method: &'static str,
    seconds: f64,
    /// Bytes of the diff stream (CLI methods) or bytes written + zeroed (ours).
    moved: Option<u64>,
    stats: Option<TransferStats>,
    /// Every repetition's time (sorted), for the summary rows.
    runs: Vec<f64>,
}

fn main() {
    let conf1 = need("CEPH_CONF");
    let conf2 = need("RBD_TEST_CEPH_CONF2");
    let id = std::env::var("RBD_TEST_CLIENT_ID").unwrap_or_else(|_| "admin".into());
    let volume = env_u64("BENCH_VOLUME_MIB", 1024) * MIB;
    let base = (env_u64("BENCH_BASE_MIB", 256) * MIB).min(volume);
    let changed = env_u64("BENCH_CHANGED_MIB", 64) * MIB;
    let wsize = env_u64("BENCH_WRITE_KIB", 64) * KIB;
    let in_flight = env_u64("BENCH_IN_FLIGHT", 16) as usize;
    let verify = env_u64("BENCH_VERIFY", 1) != 0;
    let repeat = env_u64("BENCH_REPEAT", 3).max(1) as usize;
    let t_all = Instant::now();

    let c1 = Cluster::shared(Some(Path::new(&conf1)), &id).expect("connect to CEPH_CONF");
    let c2 = Cluster::shared(Some(Path::new(&conf2)), &id).expect("connect to RBD_TEST_CEPH_CONF2");
    assert_ne!(c1.fsid().ok(), c2.fsid().ok(), "CEPH_CONF and RBD_TEST_CEPH_CONF2 must be two clusters");
    let tag = format!("rbdbench-{}", std::process::id());
    let tmp = std::env::temp_dir().join(format!("{tag}.diff"));
    let ctx = Ctx {
        src_pool: Pool::open(&c1, "volumes").expect("pool volumes"),
        dst_pool: Pool::open(&c2, "backups").expect("pool backups"),
        src: format!("{tag}-src"),
        conf1,
        conf2,
        id,
        tmp,
    };
    let mut created = Created(Vec::new());

    // Source volume: base data, s1, random writes, s2.
    eprintln!(
        "setup: {} MiB volume, {} MiB base, {} MiB changed in {} KiB writes",
        volume / MIB,
        base / MIB,
        changed / MIB,
        wsize / KIB
    );
    ctx.src_pool.create_image(&ctx.src, volume, &ImageOptions::new()).expect("create source");
    created.0.push((ctx.src_pool.clone(), ctx.src.clone()));
    {
        let img = Image::open(&ctx.src_pool, &ctx.src).expect("open source");
        let mut w = AioWriter::new(&img, 16);
        let mut off = 0;
        while off < base {
            let n = (base - off).min(4 * MIB);
            w.write(off, pattern(off / MIB + 1, n as usize)).expect("write base");
            off += n;
        }
        w.finish().expect("flush base");
        img.snap_create("s1").expect("snap s1");
        let slots = volume / wsize;
        let count = (changed / wsize).min(slots);
        let mut chosen = BTreeSet::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        while (chosen.len() as u64) < count {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chosen.insert(x % slots);
        }
        let mut w = AioWriter::new(&img, 16);
        for (i, slot) in chosen.iter().enumerate() {
            w.write(slot * wsize, pattern(10_000 + i as u64, wsize as usize)).expect("write change");
        }
        w.finish().expect("flush changes");
        img.snap_create("s2").expect("snap s2");
    }

    // Stream sizes of both export modes (for the table), without transferring.
    let stream_size = |from: Option<&str>, to: &str, cli: bool| -> u64 {
        let img = Image::open_at_snap(&ctx.src_pool, &ctx.src, to).expect("open");
        DiffExport::new(&img)
            .from_snap(from)
            .cli_identical(cli)
            .run(std::io::sink(), &mut Progress::none())
            .expect("export")
            .stream_bytes
    };
    let sizes = json!({
        "full_cli": stream_size(None, "s1", true), "full_fine": stream_size(None, "s1", false),
        "incremental_cli": stream_size(Some("s1"), "s2", true), "incremental_fine": stream_size(Some("s1"), "s2", false),
    });
    eprintln!("stream sizes: {sizes}");

    let want = if verify { Some(content_hash(&ctx.src_pool, &ctx.src, "s2")) } else { None };
    const METHODS: [&str; 3] = ["rbd-core transfer", "cinder pipe (export-diff | import-diff)", "cli via file"];
    let mut rows: Vec<Row> = Vec::new();
    let mut verified = Vec::new();
    for rep in 0..repeat {
        // Rotate the order between repetitions so no method always runs first.
        for k in 0..METHODS.len() {
            let method = METHODS[(k + rep) % METHODS.len()];
            let dst = format!("{tag}-dst-r{rep}-m{k}");
            ctx.dst_pool.create_image(&dst, volume, &ImageOptions::new()).expect("create destination");
            created.0.push((ctx.dst_pool.clone(), dst.clone()));
            for (scenario, from, to) in [("full (to s1)", None, "s1"), ("incremental (s1 to s2)", Some("s1"), "s2")] {
                eprintln!("[{}/{repeat}] {method}: {scenario} ...", rep + 1);
                let row = run_one(&ctx, method, scenario, &dst, from, to, in_flight);
                eprintln!("  {:.2} s", row.seconds);
                rows.push(row);
            }
            if let (Some(w), 0) = (&want, rep) {
                let got = content_hash(&ctx.dst_pool, &dst, "s2");
                assert_eq!(&got, w, "{method}: destination differs from the source at s2");
                verified.push(method);
            }
            // Free the destination cluster's memory (memstore) before the next run.
            if let Some((pool, name)) = created.0.pop() {
                purge(&pool, &name).expect("remove destination");
            }
        }
    }
    // Median per (scenario, method), in the order of the first repetition.
    let mut summary: Vec<Row> = Vec::new();
    for r in &rows {
        if summary.iter().any(|s| s.scenario == r.scenario && s.method == r.method) {
            continue;
        }
        let mut times: Vec<f64> =
            rows.iter().filter(|x| x.scenario == r.scenario && x.method == r.method).map(|x| x.seconds).collect();
        times.sort_by(f64::total_cmp);
        let mut m = r.clone();
        m.seconds = times[times.len() / 2];
        m.runs = times;
        summary.push(m);
    }
    summary.sort_by_key(|r| (METHODS.iter().position(|m| *m == r.method), r.scenario.starts_with("incr")));
    let rows = summary;
    drop(created);

    let ceph_version = cmd_out("ceph", &["-c", &ctx.conf1, "--id", &ctx.id, "version"]);
    let osd_meta = cmd_out("ceph", &["-c", &ctx.conf1, "--id", &ctx.id, "osd", "metadata", "-f", "json"]);
    let objectstore = serde_json::from_str::<Value>(&osd_meta)
        .ok()
        .and_then(|v| v.get(0).and_then(|o| o.get("osd_objectstore")).and_then(|s| s.as_str().map(String::from)))
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let results: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "scenario": r.scenario, "method": r.method, "median_seconds": r.seconds, "runs_seconds": r.runs,
                "moved_bytes": r.moved,
                "bytes_read": r.stats.as_ref().map(|s| s.bytes_read),
                "bytes_written": r.stats.as_ref().map(|s| s.bytes_written),
                "bytes_zeroed": r.stats.as_ref().map(|s| s.bytes_zeroed),
                "bytes_skipped": r.stats.as_ref().map(|s| s.bytes_skipped),
            })
        })
        .collect();
    let report = json!({
        "benchmark": "diff_transfer", "ceph_version": ceph_version, "objectstore": objectstore, "cores": cores,
        "volume_bytes": volume, "base_bytes": base, "changed_bytes": changed, "write_bytes": wsize,
        "in_flight": in_flight, "repeat": repeat, "stream_bytes": sizes, "verified": verified, "results": results,
        "total_seconds": t_all.elapsed().as_secs_f64(),
    });

    let md = markdown(&report, &rows);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&dir).expect("create target/bench-results");
    std::fs::write(dir.join("diff_transfer.json"), serde_json::to_string_pretty(&report).unwrap_or_default())
        .expect("write json");
    std::fs::write(dir.join("diff_transfer.md"), &md).expect("write md");
    println!("{md}");
    let _ = std::fs::remove_file(&ctx.tmp);
}

fn run_one(
    ctx: &Ctx,
    method: &'static str,
    scenario: &'static str,
    dst: &str,
    from: Option<&str>,
    to: &str,
    in_flight: usize,
) -> Row {
    let src_spec = format!("volumes/{}@{to}", ctx.src);
    let dst_spec = format!("backups/{dst}");
    let from_arg = from.map(|f| format!("--from-snap {f}")).unwrap_or_default();
    let rbd1 = format!("rbd -c {} --id {}", ctx.conf1, ctx.id);
    let rbd2 = format!("rbd -c {} --id {}", ctx.conf2, ctx.id);
    match method {
        "rbd-core transfer" => {
            let t0 = Instant::now();
            let src = Image::open_at_snap(&ctx.src_pool, &ctx.src, to).expect("open source");
            let d = Image::open(&ctx.dst_pool, dst).expect("open destination");
            let stats = Transfer::new(&src, &d)
                .from_snap(from)
                .in_flight(in_flight)
                .dst_is_zero(from.is_none())
                .run(&mut Progress::none())
                .expect("transfer");
            let seconds = t0.elapsed().as_secs_f64();
            Row {
                scenario,
                method,
                seconds,
                moved: Some(stats.bytes_written + stats.bytes_zeroed),
                stats: Some(stats),
                runs: Vec::new(),
            }
        }
        "cinder pipe (export-diff | import-diff)" => {
            let dt = sh(&format!(
                "{rbd1} export-diff --no-progress {from_arg} {src_spec} - | {rbd2} import-diff --no-progress - {dst_spec}"
            ));
            Row { scenario, method, seconds: dt.as_secs_f64(), moved: None, stats: None, runs: Vec::new() }
        }
        _ => {
            let _ = std::fs::remove_file(&ctx.tmp);
            let file = ctx.tmp.display();
            let dt = sh(&format!(
                "{rbd1} export-diff --no-progress {from_arg} {src_spec} {file} && {rbd2} import-diff --no-progress {file} {dst_spec}"
            ));
            let size = std::fs::metadata(&ctx.tmp).map(|m| m.len()).ok();
            let _ = std::fs::remove_file(&ctx.tmp);
            Row { scenario, method, seconds: dt.as_secs_f64(), moved: size, stats: None, runs: Vec::new() }
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

fn markdown(r: &Value, rows: &[Row]) -> String {
    let g = |k: &str| r[k].as_u64().unwrap_or(0);
    let s = &r["stream_bytes"];
    let mut md = String::new();
    let _ = writeln!(md, "## diff_transfer: moving one diff between two clusters\n");
    let _ = writeln!(
        md,
        "{} · objectstore `{}` · {} cores · volume {} (base {} before `s1`), {} changed as {} KiB random writes before `s2` · {} in flight for rbd-core · source `volumes` on cluster 1 → `backups` on cluster 2 (both local, single OSD)\n",
        r["ceph_version"].as_str().unwrap_or("?"),
        r["objectstore"].as_str().unwrap_or("?"),
        g("cores"),
        mib(g("volume_bytes")),
        mib(g("base_bytes")),
        mib(g("changed_bytes")),
        g("write_bytes") / KIB,
        g("in_flight"),
    );
    let _ = writeln!(
        md,
        "Stream sizes (`rbd export-diff` = our CLI-identical mode / our fine-grained mode): full {} / {}, incremental {} / {}.\n",
        mib(s["full_cli"].as_u64().unwrap_or(0)),
        mib(s["full_fine"].as_u64().unwrap_or(0)),
        mib(s["incremental_cli"].as_u64().unwrap_or(0)),
        mib(s["incremental_fine"].as_u64().unwrap_or(0)),
    );
    let _ = writeln!(md, "| diff | method | median time (s) | runs (s) | vs Cinder pipe | moved |");
    let _ = writeln!(md, "|---|---|---:|---|---:|---|");
    for row in rows {
        let pipe = rows
            .iter()
            .find(|p| p.scenario == row.scenario && p.method.starts_with("cinder"))
            .map(|p| p.seconds)
            .unwrap_or(row.seconds);
        let moved = match (&row.stats, row.moved) {
            (Some(st), _) => format!(
                "read {}, wrote {}, zeroed {}, skipped {}",
                mib(st.bytes_read),
                mib(st.bytes_written),
                mib(st.bytes_zeroed),
                mib(st.bytes_skipped)
            ),
            (None, Some(b)) => format!("stream file {}", mib(b)),
            (None, None) => "stream through the pipe".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {} | {:.2}× | {} |",
            row.scenario,
            row.method.replace('|', "\\|"),
            row.seconds,
            row.runs.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>().join(", "),
            pipe / row.seconds.max(1e-9),
            moved
        );
    }
    let verified = r["verified"].as_array().map(|v| v.len()).unwrap_or(0);
    let _ = writeln!(
        md,
        "\nMedian of {} runs (method order rotated between runs). Every method's destination was compared with the source at `s2` (content hash of all non-zero 4 KiB blocks): {} of {} verified. Total benchmark time {:.0} s.",
        r["repeat"].as_u64().unwrap_or(1),
        verified,
        rows.len() / 2,
        r["total_seconds"].as_f64().unwrap_or(0.0)
    );
    md
}
