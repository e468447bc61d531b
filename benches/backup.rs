//! Benchmark: Cinder-layout volume backups from `volumes` on one cluster to `backups` on
//! another, full and incremental, by (a) the rbd-core recipe
//! (`rbd_core::recipes::backup::Backup`: snapshot, in-process diff transfer, metadata object)
//! and (b) what Cinder's Ceph backup driver runs: `rbd create` of the backup image (full
//! only), `rbd snap create` on the volume, `rbd export-diff [--from-snap] ... - | rbd import-diff
//! - ...` (through `bash -c`).
//!
//! ```text
//! eval "$(scripts/vstart.sh env)"                      # CEPH_CONF: the volume cluster
//! export RBD_TEST_CEPH_CONF2=.ceph-dev/shared2/ceph.conf  # the backup cluster
//! cargo bench --bench backup
//! ```
//!
//! Workload (environment variables, defaults in brackets): per repetition a fresh
//! `BENCH_VOLUME_MIB` [2048] volume whose first `BENCH_BASE_MIB` [256] are written, then both
//! methods take a full backup of it; then `BENCH_CHANGED_MIB` [64] of `BENCH_WRITE_KIB` [1024]
//! KiB writes at random aligned offsets over the whole volume, then both methods take an
//! incremental backup (each from its own full backup's snapshot, so both move the same diff).
//! `BENCH_REPEAT` [5] repetitions (median reported; method order rotated), `BENCH_IN_FLIGHT`
//! [16]. `BENCH_VERIFY` [1] compares both backup images with the volume at the end of the
//! first repetition. CLI times include starting the `rbd` processes and their cluster
//! connections, which is part of what Cinder pays; rbd-core's connections are made once,
//! before timing. Results: `target/bench-results/backup.json` and `.md`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime};

use rbd_core::recipes::backup::{self, Backup, VolumeRef};
use rbd_core::{AioWriter, Cluster, Image, ImageOptions, Pool, Progress, Result, SnapNamespace};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;
const OURS: &str = "rbd-core backup recipe";
const PIPE: &str = "cinder (rbd snap create + export-diff | import-diff)";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn need(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!(
            "{name} is not set. This benchmark needs two dev clusters: CEPH_CONF (volumes, \
             `eval \"$(scripts/vstart.sh env)\"`) and RBD_TEST_CEPH_CONF2 (backups, e.g. \
             .ceph-dev/shared2/ceph.conf from `RBD_DEV_DIR=.ceph-dev/shared2 RBD_DEV_MON_PORT=40920 scripts/vstart.sh up`)."
        );
        std::process::exit(2)
    })
}

/// Images created by the benchmark, removed (snapshots first) at the end, also on panic.
struct Created(Vec<(Pool, String)>);

impl Drop for Created {
    fn drop(&mut self) {
        for (pool, name) in self.0.drain(..).rev() {
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

fn sh(cmd: &str) -> f64 {
    let t0 = Instant::now();
    let out = Command::new("bash").arg("-c").arg(format!("set -o pipefail; {cmd}")).output().expect("run bash");
    let dt = t0.elapsed().as_secs_f64();
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

/// sha256 over the size and (offset, bytes) of every non-zero 4 KiB block.
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

fn write_all(img: &Image, writes: impl Iterator<Item = (u64, Vec<u8>)>) {
    let mut w = AioWriter::new(img, 16);
    for (off, data) in writes {
        w.write(off, data).expect("write");
    }
    w.finish().expect("flush");
}

#[derive(Debug, Clone)]
struct Row {
    scenario: &'static str,
    method: &'static str,
    seconds: f64,
    moved: Option<u64>,
    read: Option<u64>,
    runs: Vec<f64>,
}

struct Ctx {
    conf1: String,
    conf2: String,
    id: String,
    volumes: Pool,
    backups: Pool,
    in_flight: usize,
}

impl Ctx {
    fn rbd1(&self) -> String {
        format!("rbd -c {} --id {}", self.conf1, self.id)
    }
    fn rbd2(&self) -> String {
        format!("rbd -c {} --id {}", self.conf2, self.id)
    }

    /// rbd-core: the recipe; returns the row and the snapshot.
    fn ours(&self, scenario: &'static str, vid: &str, bid: &str, parent: Option<&str>) -> (Row, String) {
        let vol = VolumeRef::cinder(&self.volumes, vid);
        let t0 = Instant::now();
        let r = Backup::new(&vol, &self.backups, bid)
            .parent(parent)
            .in_flight(self.in_flight)
            .run(&mut Progress::none())
            .expect("backup");
        let seconds = t0.elapsed().as_secs_f64();
        assert_eq!(r.kind.is_incremental(), parent.is_some(), "{r:?}");
        let row = Row {
            scenario,
            method: OURS,
            seconds,
            moved: Some(r.bytes_moved),
            read: Some(r.transfer.bytes_read),
            runs: Vec::new(),
        };
        (row, r.snap)
    }

    /// Cinder's commands; returns the row and the snapshot.
    fn pipe(&self, scenario: &'static str, vid: &str, bid: &str, from: Option<(&str, &str)>) -> (Row, String) {
        let (rbd1, rbd2) = (self.rbd1(), self.rbd2());
        let snap = backup::snap_name(bid, SystemTime::now());
        let vol = format!("volumes/volume-{vid}");
        let (base, from_arg) = match from {
            None => (backup::backup_image_name(vid, bid), String::new()),
            Some((base_bid, from_snap)) => {
                (backup::backup_image_name(vid, base_bid), format!("--from-snap {from_snap}"))
            }
        };
        let size = Image::open_read_only(&self.volumes, &format!("volume-{vid}")).expect("open").size().expect("size");
        let create = if from.is_none() {
            format!("{rbd2} create --size {}M --image-feature layering,exclusive-lock,object-map,fast-diff backups/{base} && ", size / MIB)
        } else {
            String::new()
        };
        let seconds = sh(&format!(
            "{create}{rbd1} snap create {vol}@{snap} && \
             {rbd1} export-diff --no-progress {from_arg} {vol}@{snap} - | {rbd2} import-diff --no-progress - backups/{base}"
        ));
        (Row { scenario, method: PIPE, seconds, moved: None, read: None, runs: Vec::new() }, snap)
    }
}

fn main() {
    let conf1 = need("CEPH_CONF");
    let conf2 = need("RBD_TEST_CEPH_CONF2");
    let id = std::env::var("RBD_TEST_CLIENT_ID").unwrap_or_else(|_| "admin".into());
    let volume = env_u64("BENCH_VOLUME_MIB", 2048) * MIB;
    let base = (env_u64("BENCH_BASE_MIB", 256) * MIB).min(volume);
    let changed = env_u64("BENCH_CHANGED_MIB", 64) * MIB;
    let wsize = env_u64("BENCH_WRITE_KIB", 1024) * KIB;
    let in_flight = env_u64("BENCH_IN_FLIGHT", 16) as usize;
    let verify = env_u64("BENCH_VERIFY", 1) != 0;
    let repeat = env_u64("BENCH_REPEAT", 5).max(1) as usize;
    let t_all = Instant::now();

    let c1 = Cluster::shared(Some(Path::new(&conf1)), &id).expect("connect to CEPH_CONF");
    let c2 = Cluster::shared(Some(Path::new(&conf2)), &id).expect("connect to RBD_TEST_CEPH_CONF2");
    assert_ne!(c1.fsid().ok(), c2.fsid().ok(), "CEPH_CONF and RBD_TEST_CEPH_CONF2 must be two clusters");
    let ctx = Ctx {
        volumes: Pool::open(&c1, "volumes").expect("pool volumes"),
        backups: Pool::open(&c2, "backups").expect("pool backups"),
        conf1,
        conf2,
        id,
        in_flight,
    };
    eprintln!(
        "{} MiB volume, {} MiB data, {} MiB changed in {} KiB writes, {repeat} repetitions",
        volume / MIB,
        base / MIB,
        changed / MIB,
        wsize / KIB
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut verified = Vec::new();
    for rep in 0..repeat {
        let vid = format!("rbdbench-{}-r{rep}", std::process::id());
        let name = format!("volume-{vid}");
        let mut created = Created(Vec::new());
        ctx.volumes.create_image(&name, volume, &ImageOptions::new()).expect("create volume");
        created.0.push((ctx.volumes.clone(), name.clone()));
        for b in ["a1", "c1"] {
            created.0.push((ctx.backups.clone(), backup::backup_image_name(&vid, b)));
        }
        let img = Image::open(&ctx.volumes, &name).expect("open volume");
        write_all(
            &img,
            (0..base.div_ceil(4 * MIB))
                .map(|i| (i * 4 * MIB, pattern(i + 1, (4 * MIB).min(base - i * 4 * MIB) as usize))),
        );

        // Full backups, order rotated.
        let order: [&str; 2] = if rep % 2 == 0 { [OURS, PIPE] } else { [PIPE, OURS] };
        let mut c1s = String::new();
        for m in order {
            eprintln!("[{}/{repeat}] full: {m} ...", rep + 1);
            let (row, snap) =
                if m == OURS { ctx.ours("full", &vid, "a1", None) } else { ctx.pipe("full", &vid, "c1", None) };
            eprintln!("  {:.2} s", row.seconds);
            if m == PIPE {
                c1s = snap;
            }
            rows.push(row);
        }

        // The same change for both.
        let slots = volume / wsize;
        let count = (changed / wsize).min(slots);
        let mut chosen = BTreeSet::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ rep as u64;
        while (chosen.len() as u64) < count {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chosen.insert(x % slots);
        }
        write_all(
            &img,
            chosen.iter().enumerate().map(|(i, s)| (s * wsize, pattern(10_000 + i as u64, wsize as usize))),
        );
        drop(img);

        let (mut a2, mut c2s) = (String::new(), String::new());
        for m in order {
            eprintln!("[{}/{repeat}] incremental: {m} ...", rep + 1);
            let (row, snap) = if m == OURS {
                ctx.ours("incremental", &vid, "a2", Some("a1"))
            } else {
                ctx.pipe("incremental", &vid, "c2", Some(("c1", &c1s)))
            };
            eprintln!("  {:.2} s", row.seconds);
            if m == OURS {
                a2 = snap
            } else {
                c2s = snap
            }
            rows.push(row);
        }
        if verify && rep == 0 {
            let want = content_hash(&ctx.volumes, &name, &a2);
            assert_eq!(want, content_hash(&ctx.volumes, &name, &c2s), "the volume did not change between the two");
            assert_eq!(content_hash(&ctx.backups, &backup::backup_image_name(&vid, "a1"), &a2), want, "{OURS}");
            assert_eq!(content_hash(&ctx.backups, &backup::backup_image_name(&vid, "c1"), &c2s), want, "{PIPE}");
            verified = vec![OURS, PIPE];
        }
        // Remove the metadata objects (the Created guard removes the images).
        for b in ["a1", "a2"] {
            let _ = ctx.backups.object_remove(&backup::meta_object_name(b));
        }
        drop(created);
    }

    // Median per (scenario, method).
    let mut summary: Vec<Row> = Vec::new();
    for r in &rows {
        if summary.iter().any(|s| s.scenario == r.scenario && s.method == r.method) {
            continue;
        }
        let same: Vec<&Row> = rows.iter().filter(|x| x.scenario == r.scenario && x.method == r.method).collect();
        let mut times: Vec<f64> = same.iter().map(|x| x.seconds).collect();
        times.sort_by(f64::total_cmp);
        let mut m = r.clone();
        m.seconds = times[times.len() / 2];
        m.runs = times;
        summary.push(m);
    }
    summary.sort_by_key(|r| (r.scenario != "full", r.method != OURS));

    let ceph_version = cmd_out("ceph", &["-c", &ctx.conf1, "--id", &ctx.id, "version"]);
    let osd_meta = cmd_out("ceph", &["-c", &ctx.conf1, "--id", &ctx.id, "osd", "metadata", "-f", "json"]);
    let objectstore = serde_json::from_str::<Value>(&osd_meta)
        .ok()
        .and_then(|v| v.get(0).and_then(|o| o.get("osd_objectstore")).and_then(|s| s.as_str().map(String::from)))
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let results: Vec<Value> = summary
        .iter()
        .map(|r| {
            json!({"scenario": r.scenario, "method": r.method, "median_seconds": r.seconds, "runs_seconds": r.runs,
                "bytes_moved": r.moved, "bytes_read": r.read})
        })
        .collect();
    let report = json!({
        "benchmark": "backup", "ceph_version": ceph_version, "objectstore": objectstore, "cores": cores,
        "volume_bytes": volume, "base_bytes": base, "changed_bytes": changed, "write_bytes": wsize,
        "in_flight": in_flight, "repeat": repeat, "verified": verified, "results": results,
        "total_seconds": t_all.elapsed().as_secs_f64(),
    });
    let md = markdown(&report, &summary);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&dir).expect("create target/bench-results");
    std::fs::write(dir.join("backup.json"), serde_json::to_string_pretty(&report).unwrap_or_default())
        .expect("write json");
    std::fs::write(dir.join("backup.md"), &md).expect("write md");
    println!("{md}");
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

fn markdown(r: &Value, rows: &[Row]) -> String {
    let g = |k: &str| r[k].as_u64().unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(md, "## backup: Cinder-layout backups between two clusters\n");
    let _ = writeln!(
        md,
        "{} · objectstore `{}` · {} cores · volume {} with {} written before the full backup, {} changed as {} KiB random writes before the incremental · {} in flight for rbd-core · `volumes` on cluster 1 → `backups` on cluster 2 (both local, single OSD)\n",
        r["ceph_version"].as_str().unwrap_or("?"),
        r["objectstore"].as_str().unwrap_or("?"),
        g("cores"),
        mib(g("volume_bytes")),
        mib(g("base_bytes")),
        mib(g("changed_bytes")),
        g("write_bytes") / KIB,
        g("in_flight"),
    );
    let _ = writeln!(md, "| backup | method | median time (s) | runs (s) | speed-up vs Cinder | moved (rbd-core) |");
    let _ = writeln!(md, "|---|---|---:|---|---:|---|");
    for row in rows {
        let pipe = rows
            .iter()
            .find(|p| p.scenario == row.scenario && p.method == PIPE)
            .map(|p| p.seconds)
            .unwrap_or(row.seconds);
        let moved = match (row.moved, row.read) {
            (Some(m), Some(rd)) => format!("wrote {}, read {}", mib(m), mib(rd)),
            _ => "stream through the pipe".into(),
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
    let _ = writeln!(
        md,
        "\nMedian of {} repetitions (a fresh volume each; method order rotated). Times cover the whole backup: the source snapshot, the backup image (full), the transfer and, for rbd-core, the metadata object; the CLI times include starting the `rbd` processes and their connections, which Cinder pays on every backup. Both backup images were compared with the volume at the incremental snapshot: {} of 2 verified. Total benchmark time {:.0} s.",
        r["repeat"].as_u64().unwrap_or(1),
        r["verified"].as_array().map(|v| v.len()).unwrap_or(0),
        r["total_seconds"].as_f64().unwrap_or(0.0)
    );
    md
}
