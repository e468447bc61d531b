//! Comparison 5: peak RSS of a 4 GiB upload (Glance recipe, hashing on) and a 4 GiB full backup
//! (backup recipe), each run in a child process (this binary re-invoked with `--child ...`) whose
//! peak RSS the parent reads with `wait4` (`ru_maxrss`). A child that only connects and writes
//! 4 MiB gives the baseline of librados/librbd themselves.

use std::path::Path;
use std::process::Command;

use rbd_core::recipes::backup::{backup_image_name, meta_object_name, Backup, VolumeRef};
use rbd_core::recipes::glance::{GlanceStore, HashAlgo};
use rbd_core::{ClusterBuilder, Image, ImageOptions, Pool, Progress};
use serde_json::{json, Value};

use crate::env::{self, DataSet, Env, GIB, MIB};
use crate::report::PhaseOut;

/// What a child process does (`--child KIND`).
#[derive(Debug, Clone)]
pub struct ChildArgs {
    pub kind: String,
    pub conf: String,
    pub dst_conf: String,
    pub id: String,
    pub size: u64,
    pub data: String,
    pub hash: bool,
    pub name: String,
    pub backup_id: String,
    /// Upload/backup knobs for diagnosis (0: the recipe's default).
    pub in_flight: usize,
    pub order: u8,
    /// Upload source: a file instead of the generator.
    pub file: Option<String>,
}

/// The child side: does the work, prints one JSON line, exits. With `RUST_LOG` set (e.g.
/// `RUST_LOG=rbd_core=debug`), every span's busy/idle time is printed when it closes (stderr):
/// the per-step profile of a recipe.
pub fn child_main(a: &ChildArgs) {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .init();
    }
    let connect = |conf: &str| {
        let mut b = ClusterBuilder::new(a.id.clone());
        b.conf_file(conf);
        b.connect().expect("connect")
    };
    let c = connect(&a.conf);
    let out: Value = match a.kind.as_str() {
        "upload" => {
            let pool = Pool::open(&c, "images").expect("pool images");
            let mut store = GlanceStore::new(&pool);
            if !a.hash {
                store.checksum(false).hash(HashAlgo::None);
            }
            if a.in_flight > 0 {
                store.in_flight(a.in_flight);
            }
            if a.order > 0 {
                store.order(a.order);
            }
            let reader: Box<dyn std::io::Read> = match &a.file {
                Some(f) => Box::new(std::fs::File::open(f).expect("open --file")),
                None => Box::new(env::DataReader::new(DataSet::parse(&a.data), a.size)),
            };
            let cpu0 = env::cpu_self();
            let t0 = std::time::Instant::now();
            let up = store.upload(&a.name, reader, Some(a.size), &mut Progress::none()).expect("upload");
            json!({"seconds": t0.elapsed().as_secs_f64(), "cpu_s": env::cpu_self() - cpu0, "bytes_stored": up.bytes_stored})
        }
        "backup" => {
            let c2 = connect(&a.dst_conf);
            let volumes = Pool::open(&c, "volumes").expect("pool volumes");
            let backups = Pool::open(&c2, "backups").expect("pool backups");
            let vol = VolumeRef::cinder(&volumes, &a.name);
            let mut b = Backup::new(&vol, &backups, &a.backup_id);
            if a.in_flight > 0 {
                b.in_flight(a.in_flight);
            }
            let cpu0 = env::cpu_self();
            let t0 = std::time::Instant::now();
            let r = b.run(&mut Progress::none()).expect("backup");
            json!({"seconds": t0.elapsed().as_secs_f64(), "cpu_s": env::cpu_self() - cpu0, "bytes_moved": r.bytes_moved,
                "kind": r.kind.name()})
        }
        "boot" => {
            // Diagnosis: `--size` boots of location `--name` into vms, then their removal.
            let vms = Pool::open(&c, "vms").expect("pool vms");
            let loc: rbd_core::recipes::location::Location = a.name.parse().expect("a location");
            let (secs, names) = crate::clones::ours(&loc, &vms, a.size as usize);
            for n in names {
                env::purge(&vms, &n).expect("remove clone");
            }
            json!({"seconds": secs})
        }
        _ => {
            // Baseline: connect, create, write 4 MiB, remove.
            let pool = Pool::open(&c, "rbd").expect("pool rbd");
            pool.create_image(&a.name, 4 * MIB, &ImageOptions::new()).expect("create");
            {
                let img = Image::open(&pool, &a.name).expect("open");
                img.write(0, &env::chunk(DataSet::Random, 0, (4 * MIB) as usize)).expect("write");
            }
            pool.remove_image(&a.name).expect("remove");
            json!({"seconds": 0.0})
        }
    };
    println!("{out}");
}

/// Runs `--child KIND ...` and returns the measured process.
pub fn spawn_child(
    env: &Env,
    kind: &str,
    size: u64,
    ds: DataSet,
    hash: bool,
    name: &str,
    backup_id: &str,
) -> env::Proc {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--child", kind, "--conf", &path(&env.conf1), "--dst-conf", &path(&env.conf2), "--id", &env.id]).args([
        "--size",
        &size.to_string(),
        "--data",
        ds.key(),
        "--name",
        name,
        "--backup-id",
        backup_id,
    ]);
    if !hash {
        cmd.arg("--no-hash");
    }
    env::run(&mut cmd).check(&format!("child {kind}"))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

pub fn size(env: &Env) -> u64 {
    if env.quick {
        16 * MIB
    } else {
        4 * GIB
    }
}

/// Half zero data when the machine lacks the memory for `copies` full copies in memstore (plus
/// 3 GiB to spare); `None` when even that does not fit.
pub fn data_set_for(env: &Env, size: u64, copies: u64, out: &mut PhaseOut) -> Option<DataSet> {
    let need = size * copies + 3 * GIB;
    let avail = env::mem_available();
    if !env.quick && avail < size * copies / 2 + 3 * GIB {
        out.note(format!("memory: SKIPPED a {} MiB run: only {} MiB of memory available", size / MIB, avail / MIB));
        return None;
    }
    if !env.quick && avail < need {
        out.note(format!(
            "memory: only {} MiB available (need {} MiB for {} copies of {} MiB in memstore plus 3 GiB): used the \
             half-zero data set (half the bytes stored)",
            avail / MIB,
            need / MIB,
            copies,
            size / MIB
        ));
        Some(DataSet::HalfZero)
    } else {
        Some(DataSet::Random)
    }
}

pub fn run(env: &Env, out: &mut PhaseOut) {
    let size = size(env);
    let c1 = env.connect(&env.conf1, None);
    let images = Pool::open(&c1, "images").expect("pool images");
    let volumes = Pool::open(&c1, "volumes").expect("pool volumes");
    let c2 = env.connect(&env.conf2, None);
    let backups = Pool::open(&c2, "backups").expect("pool backups");

    eprintln!("[memory] baseline child");
    let p = spawn_child(env, "baseline", 0, DataSet::Random, false, &env.name("mem-base"), "x");
    let r = out.rec("memory", "baseline", "ours", "connect, create, write 4 MiB, remove", "default (on)", 4 * MIB);
    r.ours = true;
    r.push(p.seconds, Some(p.maxrss_kib));

    if let Some(ds) = data_set_for(env, size, 1, out) {
        eprintln!("[memory] upload {} MiB ({}) in a child", size / MIB, ds.key());
        let name = env.name("mem-up");
        let p = spawn_child(env, "upload", size, ds, true, &name, "x");
        env::purge(&images, &name).expect("remove uploaded image");
        let j = p.json();
        let label = format!("Glance recipe upload of {} MiB, md5+sha512", size / MIB);
        let r = out.rec("memory", "upload", "ours", &label, "default (on)", size);
        r.ours = true;
        r.push(j["seconds"].as_f64().unwrap_or(p.seconds), Some(p.maxrss_kib));
        r.extra = json!({"data_set": ds.key(), "bytes_stored": j["bytes_stored"], "process_seconds": p.seconds});
        eprintln!("  {:.1} s, peak RSS {} MiB", p.seconds, p.maxrss_kib / 1024);
    }

    if let Some(ds) = data_set_for(env, size, 2, out) {
        let vid = env.name("mem-vol");
        let bid = env.name("mem-full");
        let vol = VolumeRef::cinder(&volumes, &vid);
        eprintln!("[memory] writing a {} MiB volume ({})", size / MIB, ds.key());
        volumes.create_image(vol.image_name(), size, &ImageOptions::new()).expect("create volume");
        env::fill_image(&Image::open(&volumes, vol.image_name()).expect("open volume"), ds, size);
        eprintln!("[memory] full backup of {} MiB in a child", size / MIB);
        let p = spawn_child(env, "backup", size, ds, true, &vid, &bid);
        let j = p.json();
        let label = format!("full backup (recipe) of {} MiB", size / MIB);
        let r = out.rec("memory", "backup", "ours", &label, "default (on)", size);
        r.ours = true;
        r.push(j["seconds"].as_f64().unwrap_or(p.seconds), Some(p.maxrss_kib));
        r.extra = json!({"data_set": ds.key(), "bytes_moved": j["bytes_moved"], "process_seconds": p.seconds});
        eprintln!("  {:.1} s, peak RSS {} MiB", p.seconds, p.maxrss_kib / 1024);
        env::purge(&backups, &backup_image_name(&vid, &bid)).expect("remove backup image");
        let _ = backups.object_remove(&meta_object_name(&bid));
        env::purge(&volumes, vol.image_name()).expect("remove volume");
        env::settle(env, &c1, &["volumes"]);
        env::settle(env, &c2, &["backups"]);
    }
    out.note(format!(
        "memory: peak RSS (`wait4` ru_maxrss) of a child process doing one {} MiB operation, rbd_cache at its default \
         (on, 32 MiB); the upload reads from a generator (an 8 MiB block repeated), not a file",
        size / MIB
    ));
}
