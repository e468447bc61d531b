//! Comparison 4: what Python costs. The upload and clone recipes called through the `rbd_core`
//! Python package (.venv/bin/python, benches/py/rbd_core_way.py) against the same calls in Rust,
//! with the connection made before the timing on both sides. Without the recipe bindings in the
//! installed package, the core API path is measured instead (create + `Image.write` of 8 MiB
//! pieces; `rbd_core.clone`), and the result says so.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use rbd_core::recipes::glance::{GlanceStore, HashAlgo};
use rbd_core::recipes::location::Location;
use rbd_core::{clone_image, CloneFormat, Image, ImageOptions, Pool, Progress};
use serde_json::{json, Value};

use crate::clones;
use crate::env::{self, DataSet, Env, MIB};
use crate::report::PhaseOut;

fn script(env: &Env, args: &[&str]) -> env::Proc {
    let mut cmd = Command::new(&env.venv_python);
    cmd.arg(env.py_script("rbd_core_way.py")).args(args);
    env::run(&mut cmd)
}

pub fn run(env: &Env, out: &mut PhaseOut) {
    let probe = script(env, &["--what", "probe"]).check("rbd_core_way.py --what probe").json();
    let up_api = if probe["upload"].is_string() { "recipe" } else { "core" };
    let boot_api = if probe["boot"].is_string() { "recipe" } else { "core" };
    out.note(format!(
        "python: {} (rbd_core package probe {probe}); upload measured through the {up_api} path, clones through the \
         {boot_api} path{}",
        env.venv_python,
        if up_api == "core" || boot_api == "core" {
            " (the recipe bindings rbd_core.glance / rbd_core.nova are not in the installed package yet: the core API \
             path is compared instead: create + Image.write of 8 MiB pieces, rbd_core.clone)"
        } else {
            ""
        }
    ));
    let conf = env.conf1.display().to_string();
    let c = env.connect(&env.conf1, None);
    let images = Pool::open(&c, "images").expect("pool images");
    let vms = Pool::open(&c, "vms").expect("pool vms");

    // Upload.
    let size = crate::upload::size(env);
    let file = env::data_file(env, DataSet::Random, size);
    let hashes: &[bool] = if up_api == "recipe" { &[true, false] } else { &[false] };
    // Warm the connection up with one small upload, as the Python side does in its process.
    let warm = env::data_file(env, DataSet::Random, MIB);
    let name = env.name("py-warm");
    rust_upload(&images, &name, &warm, MIB, up_api, false);
    env::purge(&images, &name).expect("remove the warm-up image");
    // Python's overhead is a few per cent at most: more repetitions than elsewhere.
    let repeat = if env.quick { env.repeat } else { env.repeat.max(5) };
    let mut n = 0;
    for rep in 0..repeat {
        for &hash in hashes {
            for k in 0..2 {
                let lang = ["rust", "python"][(k + rep) % 2];
                if !env.memory_ok(out, &format!("python upload {lang}")) {
                    continue;
                }
                n += 1;
                let name = env.name(&format!("py-up{n}"));
                eprintln!("[python {}/{}] upload {} MiB ({up_api}, hash {hash}): {lang}", rep + 1, repeat, size / MIB);
                let (secs, rss) = if lang == "rust" {
                    (rust_upload(&images, &name, &file, size, up_api, hash), None)
                } else {
                    let mut a = vec!["--what", "upload", "--conf", &conf, "--id", &env.id, "--pool", "images"];
                    let f = file.display().to_string();
                    a.extend(["--image", &name, "--file", &f, "--api", up_api]);
                    if !hash {
                        a.push("--no-hash");
                    }
                    let p = script(env, &a).check("rbd_core_way.py upload");
                    (p.json()["seconds"].as_f64().unwrap_or(p.seconds), Some(p.maxrss_kib))
                };
                env::purge(&images, &name).expect("remove uploaded image");
                eprintln!("  {secs:.2} s");
                let case = format!(
                    "upload {} MiB ({up_api}{})",
                    size / MIB,
                    if up_api == "recipe" && hash { ", md5+sha512" } else { ", no hashing" }
                );
                let r = out.rec(
                    "python",
                    &case,
                    lang,
                    if lang == "rust" { "Rust" } else { "Python (rbd_core)" },
                    "default (on)",
                    size,
                );
                r.ours = true;
                r.push(secs, rss);
                r.extra = json!({"api": up_api});
            }
        }
    }

    // Clones.
    let count = clones::count(env);
    let loc = clones::parent_image(env, &images, clones::parent_size(env));
    for rep in 0..repeat {
        for k in 0..2 {
            let lang = ["rust", "python"][(k + rep) % 2];
            eprintln!("[python {}/{}] {count} clones ({boot_api}): {lang}", rep + 1, repeat);
            let secs = if lang == "rust" {
                rust_clones(env, &images, &vms, &loc, count, boot_api, rep)
            } else {
                let prefix = env.name(&format!("pycl-r{rep}-"));
                let l = loc.to_string();
                let snap = loc.snap.clone().unwrap_or_else(|| "snap".into());
                let cnt = count.to_string();
                let a = [
                    "--what",
                    "clones",
                    "--conf",
                    &conf,
                    "--id",
                    &env.id,
                    "--pool",
                    "images",
                    "--image",
                    &loc.image,
                    "--snap",
                    &snap,
                    "--location",
                    &l,
                    "--dst-pool",
                    "vms",
                    "--count",
                    &cnt,
                    "--prefix",
                    &prefix,
                    "--api",
                    boot_api,
                ];
                let p = script(env, &a).check("rbd_core_way.py clones");
                let j: Value = p.json();
                j["seconds"].as_f64().unwrap_or(p.seconds)
            };
            eprintln!("  {secs:.2} s");
            let r = out.rec(
                "python",
                &format!("{count} clones ({boot_api})"),
                lang,
                if lang == "rust" { "Rust" } else { "Python (rbd_core)" },
                "default (on)",
                0,
            );
            r.ours = true;
            r.ops = count as u64;
            r.push(secs, None);
            r.extra = json!({"api": boot_api});
        }
    }
    env::purge(&images, &loc.image).expect("remove the parent image");
}

/// The Rust side of the upload: the recipe, or create + sequential 8 MiB `Image::write`.
fn rust_upload(pool: &Pool, name: &str, file: &Path, size: u64, api: &str, hash: bool) -> f64 {
    let mut f = File::open(file).expect("open data file");
    let t0 = std::time::Instant::now();
    if api == "recipe" {
        let mut store = GlanceStore::new(pool);
        if !hash {
            store.checksum(false).hash(HashAlgo::None);
        }
        store.upload(name, f, Some(size), &mut Progress::none()).expect("upload");
    } else {
        let mut opts = ImageOptions::new();
        opts.order(23);
        pool.create_image(name, size, &opts).expect("create");
        let img = Image::open(pool, name).expect("open");
        let mut buf = vec![0u8; 8 * MIB as usize];
        let mut off = 0;
        loop {
            let n = read_full(&mut f, &mut buf);
            if n == 0 {
                break;
            }
            img.write(off, &buf[..n]).expect("write");
            off += n as u64;
        }
    }
    t0.elapsed().as_secs_f64()
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).expect("read data file") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// The Rust side of the clones: the recipe, or `clone_image` in a loop.
fn rust_clones(env: &Env, images: &Pool, vms: &Pool, loc: &Location, count: usize, api: &str, rep: usize) -> f64 {
    if api == "recipe" {
        let (secs, names) = clones::ours(loc, vms, count);
        for n in names {
            env::purge(vms, &n).expect("remove clone");
        }
        return secs;
    }
    let snap = loc.snap.clone().unwrap_or_else(|| "snap".into());
    let names: Vec<String> = (0..count).map(|i| env.name(&format!("rscl-r{rep}-{i}_disk"))).collect();
    let mut opts = ImageOptions::new();
    opts.clone_format(CloneFormat::V2); // rbd_core.clone's default
    let t0 = std::time::Instant::now();
    for n in &names {
        clone_image(images, &loc.image, &snap, vms, n, &opts).expect("clone");
    }
    let secs = t0.elapsed().as_secs_f64();
    for n in names {
        env::purge(vms, &n).expect("remove clone");
    }
    secs
}
