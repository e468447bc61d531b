//! Comparison 1: image upload. The Glance recipe (hashing md5 + sha512 on, and off) against
//! `rbd import` from a file, glance_store's way (python-rbd, 8 MiB sequential writes, md5 +
//! sha512; benches/py/glance_store_way.py) and the ceiling `rbd bench --io-type write
//! --io-size 4M --io-threads 16` on a fresh image; two data sets (random, half zero) and
//! rbd_cache on and off.

use std::fs::File;
use std::process::Command;

use rbd_core::recipes::glance::{GlanceStore, HashAlgo};
use rbd_core::{ImageOptions, Pool, Progress};
use serde_json::json;

use crate::env::{self, DataSet, Env, Meas, MIB};
use crate::report::PhaseOut;

const METHODS: [&str; 6] =
    ["ours-hash", "ours-nohash", "rbd-import", "rbd-import-o23", "rbd-import-stdin", "glance-store-py"];

fn label(method: &str) -> &'static str {
    match method {
        "ours-hash" => "Glance recipe, md5+sha512 on",
        "ours-nohash" => "Glance recipe, hashing off",
        "rbd-import" => "rbd import FILE",
        "rbd-import-o23" => "rbd import --order 23 FILE (Glance's object size)",
        "rbd-import-stdin" => "rbd import - < FILE (stdin)",
        "glance-store-py" => "glance_store's way (python-rbd, md5+sha512)",
        _ => "rbd bench write 4M x16 (ceiling)",
    }
}

/// Upload size of the run.
pub fn size(env: &Env) -> u64 {
    if env.quick {
        8 * MIB
    } else {
        1024 * MIB
    }
}

pub fn run(env: &Env, out: &mut PhaseOut) {
    let size = size(env);
    let sets = [DataSet::Random, DataSet::HalfZero];
    let files: Vec<_> = sets.iter().map(|ds| (*ds, env::data_file(env, *ds, size))).collect();
    let mut n = 0;
    for cache in [true, false] {
        let c = env.connect(&env.conf1, Some(cache));
        let pool = Pool::open(&c, "images").expect("pool images");
        let cache_s = if cache { "on" } else { "off" };
        for rep in 0..env.repeat {
            for (ds, file) in &files {
                for k in 0..METHODS.len() {
                    let method = METHODS[(k + rep) % METHODS.len()];
                    if !env.memory_ok(out, &format!("upload {} {method}", ds.key())) {
                        continue;
                    }
                    n += 1;
                    let name = env.name(&format!("up{n}"));
                    eprintln!(
                        "[upload {}/{}] {} {} cache {cache_s}: {method}",
                        rep + 1,
                        env.repeat,
                        ds.key(),
                        size / MIB
                    );
                    let osd0 = env::osd_cpu(&env.conf1);
                    let m = one(env, &pool, method, &name, file, size, cache);
                    let osd = env::osd_cpu(&env.conf1) - osd0;
                    env::purge(&pool, &name).expect("remove uploaded image");
                    let r = out.rec("upload", ds.key(), method, label(method), cache_s, size);
                    r.ours = method.starts_with("ours");
                    r.push(m.secs, m.rss);
                    r.cpu(m.cpu, osd);
                    r.extra = m.extra;
                    eprintln!(
                        "  {:.2} s ({:.0} MiB/s), client CPU {:.2} s, OSD CPU {osd:.2} s",
                        m.secs,
                        size as f64 / MIB as f64 / m.secs,
                        m.cpu
                    );
                }
            }
            // The ceiling (independent of the data set).
            n += 1;
            let name = env.name(&format!("up{n}"));
            pool.create_image(&name, size, &ImageOptions::new()).expect("create bench image");
            let osd0 = env::osd_cpu(&env.conf1);
            let p = env::sh(&format!(
                "{} bench --io-type write --io-size 4M --io-threads 16 --io-total {} --io-pattern seq images/{name}",
                env.rbd(&env.conf1, Some(cache)),
                size
            ))
            .check("rbd bench");
            env::purge(&pool, &name).expect("remove bench image");
            let bw = parse_bench_bps(&p.stdout).unwrap_or(size as f64 / p.seconds);
            let secs = size as f64 / bw;
            eprintln!("[upload] rbd bench cache {cache_s}: {:.0} MiB/s (process {:.2} s)", bw / MIB as f64, p.seconds);
            let r = out.rec("upload", "ceiling", "rbd-bench", label("rbd-bench"), cache_s, size);
            r.push(secs, Some(p.maxrss_kib));
            r.cpu(p.cpu_s, env::osd_cpu(&env.conf1) - osd0);
            r.extra = json!({"process_seconds": p.seconds, "command": "rbd bench --io-type write --io-size 4M --io-threads 16 --io-pattern seq (fresh image, order 22)"});
        }
    }
    out.note(format!(
        "upload: {} MiB per upload; ours on one connection made before timing (a service keeps it), \
         GlanceStore defaults (order 23, thin, 8 writes in flight, hashes on helper threads); \
         `rbd import` with default options (order 22, 4 KiB sparse detection; from a file: \
         `rbd_concurrent_management_ops` = 10 writes in flight, from stdin: 1); glance_store's way \
         connects inside the timing as glance_store does per upload (rbd_thin_provisioning=False \
         default: every chunk written).",
        size / MIB
    ));
}

/// One upload by `method`.
fn one(env: &Env, pool: &Pool, method: &str, name: &str, file: &std::path::Path, size: u64, cache: bool) -> Meas {
    match method {
        "ours-hash" | "ours-nohash" => {
            let mut store = GlanceStore::new(pool);
            if method == "ours-nohash" {
                store.checksum(false).hash(HashAlgo::None);
            }
            let f = File::open(file).expect("open data file");
            let (mut m, up) =
                Meas::here(|| store.upload(name, f, Some(size), &mut Progress::none()).expect("glance upload"));
            m.extra = json!({"bytes_stored": up.bytes_stored, "md5": up.checksum});
            m
        }
        "rbd-import" | "rbd-import-o23" => {
            let order = if method == "rbd-import-o23" { " --order 23" } else { "" };
            let p = env::sh(&format!(
                "{} import --no-progress{order} {} images/{name}",
                env.rbd(&env.conf1, Some(cache)),
                file.display()
            ))
            .check("rbd import");
            let mut m = Meas::proc(&p);
            m.extra = json!({"command": format!("rbd import --no-progress{order} FILE images/NAME")});
            m
        }
        "rbd-import-stdin" => {
            let p = env::sh(&format!(
                "{} import --no-progress - images/{name} < {}",
                env.rbd(&env.conf1, Some(cache)),
                file.display()
            ))
            .check("rbd import -");
            let mut m = Meas::proc(&p);
            m.extra = json!({"command": "rbd import --no-progress - images/NAME < FILE"});
            m
        }
        _ => {
            let mut cmd = Command::new(&env.sys_python);
            cmd.arg(env.py_script("glance_store_way.py"))
                .args(["--conf", &env.conf1.display().to_string(), "--id", &env.id, "--pool", "images"])
                .args(["--image", name, "--file", &file.display().to_string()]);
            if !cache {
                cmd.arg("--no-cache");
            }
            let p = env::run(&mut cmd).check("glance_store_way.py");
            let j = p.json();
            let mut m = Meas::proc(&p);
            m.secs = j["seconds"].as_f64().unwrap_or(p.seconds);
            m.extra = json!({"process_seconds": p.seconds, "md5": j["md5"]});
            m
        }
    }
}

/// Bytes per second from `rbd bench`'s summary line (`elapsed: 0   ops: 64   ops/sec: 186.047
/// bytes/sec: 744 MiB/s`): ops/sec times the 4 MiB I/O size (more digits than bytes/sec).
pub fn parse_bench_bps(out: &str) -> Option<f64> {
    let line = out.lines().rev().find(|l| l.contains("ops/sec:"))?;
    let v: f64 = line.split("ops/sec:").nth(1)?.split_whitespace().next()?.parse().ok()?;
    Some(v * (4 * MIB) as f64)
}
