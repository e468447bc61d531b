//! Comparison 3: boot-from-image clones per second. The Nova recipe
//! (`rbd_core::recipes::nova::boot_disk`) on one shared connection against Nova's own way with
//! python-rbd (benches/py/nova_way.py: a connect + open_ioctx + shutdown around every
//! operation; `driver.clone` makes two connects, the whole boot path six), plus python-rbd on one
//! shared connection as a reference.

use std::fs::File;
use std::process::Command;

use rbd_core::recipes::glance::{GlanceStore, HashAlgo};
use rbd_core::recipes::location::Location;
use rbd_core::recipes::nova::boot_disk;
use rbd_core::{Pool, Progress};

use crate::env::{self, DataSet, Env, MIB};
use crate::report::PhaseOut;

const METHODS: [&str; 4] = ["nova-recipe", "py-driver-clone", "py-boot", "py-shared"];

fn label(method: &str) -> &'static str {
    match method {
        "nova-recipe" => "Nova recipe boot_disk, shared connection",
        "py-driver-clone" => "Nova's driver.clone (python-rbd, 2 connects per clone)",
        "py-boot" => "Nova's boot path (python-rbd, 6 connects per boot)",
        _ => "python-rbd clone on one shared connection",
    }
}

pub fn count(env: &Env) -> usize {
    if env.quick {
        5
    } else {
        50
    }
}

/// Size of the parent image.
pub fn parent_size(env: &Env) -> u64 {
    if env.quick {
        8 * MIB
    } else {
        32 * MIB
    }
}

/// Uploads the parent image (Glance recipe, untimed) and returns its location.
pub fn parent_image(env: &Env, pool: &Pool, size: u64) -> Location {
    let file = env::data_file(env, DataSet::Random, size);
    let mut store = GlanceStore::new(pool);
    store.checksum(false).hash(HashAlgo::None);
    let name = env.name("clone-parent");
    store
        .upload(&name, File::open(file).expect("open data file"), Some(size), &mut Progress::none())
        .expect("upload the parent image")
        .location
}

pub fn run(env: &Env, out: &mut PhaseOut) {
    let n = count(env);
    let c = env.connect(&env.conf1, None);
    let images = Pool::open(&c, "images").expect("pool images");
    let vms = Pool::open(&c, "vms").expect("pool vms");
    let loc = parent_image(env, &images, parent_size(env));
    for rep in 0..env.repeat {
        for k in 0..METHODS.len() {
            let method = METHODS[(k + rep) % METHODS.len()];
            eprintln!("[clones {}/{}] {n} x {method}", rep + 1, env.repeat);
            let (secs, rss) = if method == "nova-recipe" {
                let (secs, names) = ours(&loc, &vms, n);
                for d in &names {
                    env::purge(&vms, d).expect("remove clone");
                }
                (secs, None)
            } else {
                let mode = method.trim_start_matches("py-");
                let p = python(env, &loc, mode, &env.name(&format!("cl-r{rep}-{mode}-")), n);
                (p.json()["seconds"].as_f64().unwrap_or(p.seconds), Some(p.maxrss_kib))
            };
            eprintln!("  {secs:.2} s, {:.1} clones/s", n as f64 / secs);
            let r = out.rec("clones", "boot from image", method, label(method), "default (on)", 0);
            r.ours = method == "nova-recipe";
            r.ops = n as u64;
            r.push(secs, rss);
        }
    }
    env::purge(&images, &loc.image).expect("remove the parent image");
    out.note(format!(
        "clones: {n} clones of a {} MiB Glance image (`images/<id>@snap`, protected) into pool vms per run; removal not timed",
        parent_size(env) / MIB
    ));
}

/// `n` boots through the recipe on one connection: (seconds, disk names).
pub fn ours(loc: &Location, vms: &Pool, n: usize) -> (f64, Vec<String>) {
    let uuids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let t0 = std::time::Instant::now();
    let names: Vec<String> =
        uuids.iter().map(|u| boot_disk(loc, vms, u, "disk", None).expect("boot_disk").name).collect();
    (t0.elapsed().as_secs_f64(), names)
}

fn python(env: &Env, loc: &Location, mode: &str, prefix: &str, n: usize) -> env::Proc {
    let mut cmd = Command::new(&env.sys_python);
    cmd.arg(env.py_script("nova_way.py"))
        .args(["--conf", &env.conf1.display().to_string(), "--id", &env.id])
        .args(["--src-pool", loc.pool.as_deref().unwrap_or("images"), "--image", &loc.image])
        .args(["--snap", loc.snap.as_deref().unwrap_or("snap"), "--dst-pool", "vms"])
        .args(["--prefix", prefix, "--count", &n.to_string(), "--mode", mode]);
    env::run(&mut cmd).check("nova_way.py")
}
