//! Comparison 6: scaling. Incremental backup time for 1, 10 and 100 % of a volume changed (backup
//! recipe, and the Cinder pipe for reference), and upload time for 256 MiB, 1 GiB and 4 GiB
//! (Glance recipe with hashing on and off, each in a child process so its peak RSS is known too).

use rbd_core::recipes::backup::{backup_image_name, meta_object_name, Backup, VolumeRef};
use rbd_core::{Image, ImageOptions, Pool, Progress};
use serde_json::json;

use crate::backup::cli_transfer;
use crate::env::{self, DataSet, Env, GIB, KIB, MIB};
use crate::memory::spawn_child;
use crate::report::PhaseOut;

pub const PERCENTS: [u64; 3] = [1, 10, 100];

pub fn volume(env: &Env) -> u64 {
    if env.quick {
        32 * MIB
    } else {
        512 * MIB
    }
}

pub fn upload_sizes(env: &Env) -> [u64; 3] {
    if env.quick {
        [4 * MIB, 8 * MIB, 16 * MIB]
    } else {
        [256 * MIB, GIB, 4 * GIB]
    }
}

pub fn run(env: &Env, out: &mut PhaseOut) {
    backups(env, out);
    uploads(env, out);
}

fn backups(env: &Env, out: &mut PhaseOut) {
    let volume = volume(env);
    let wsize = 64 * KIB;
    let c1 = env.connect(&env.conf1, None);
    let c2 = env.connect(&env.conf2, None);
    let volumes = Pool::open(&c1, "volumes").expect("pool volumes");
    let backups = Pool::open(&c2, "backups").expect("pool backups");
    let tmp = env.data_dir.join(format!("{}.diff", env.tag));
    for rep in 0..env.repeat {
        for pct in PERCENTS {
            if !env.memory_ok(out, &format!("scaling backup {pct}%")) {
                continue;
            }
            let changed = volume * pct / 100;
            let vid = env.name(&format!("sc-r{rep}-p{pct}"));
            let vol = VolumeRef::cinder(&volumes, &vid);
            let (b1, b2) = (env.name(&format!("sc-r{rep}-p{pct}-a")), env.name(&format!("sc-r{rep}-p{pct}-b")));
            volumes.create_image(vol.image_name(), volume, &ImageOptions::new()).expect("create volume");
            let img = Image::open(&volumes, vol.image_name()).expect("open volume");
            env::fill_image(&img, DataSet::Random, volume);
            let full = Backup::new(&vol, &backups, &b1).run(&mut Progress::none()).expect("full backup");
            env::write_changes(&img, volume, changed, wsize, 0xC0FFEE + pct);
            eprintln!(
                "[scaling {}/{}] incremental backup, {pct} % of {} MiB changed",
                rep + 1,
                env.repeat,
                volume / MIB
            );
            let t0 = std::time::Instant::now();
            let incr = {
                let mut b = Backup::new(&vol, &backups, &b2);
                b.parent(Some(&b1));
                b.run(&mut Progress::none()).expect("incremental backup")
            };
            let secs = t0.elapsed().as_secs_f64();
            assert!(incr.kind.is_incremental(), "expected an incremental backup, got {}", incr.kind.name());
            eprintln!("  recipe {secs:.2} s ({} MiB moved)", incr.bytes_moved / MIB);
            let case = format!("backup {pct}%");
            let r = out.rec("scaling", &case, "recipe", "backup recipe, incremental", "default (on)", changed);
            r.ours = true;
            r.push(secs, None);
            r.extra = json!({"percent": pct, "volume_bytes": volume, "bytes_moved": incr.bytes_moved});

            // The Cinder pipe over the same two snapshots, into its own copy of the full backup.
            let dst = env.name(&format!("sc-r{rep}-p{pct}-pipe"));
            backups.create_image(&dst, volume, &ImageOptions::new()).expect("create pipe destination");
            let spec = |snap: &str| format!("volumes/{}@{snap}", vol.image_name());
            cli_transfer(env, "cinder-pipe", None, &spec(&full.snap), &format!("backups/{dst}"), &tmp);
            let p =
                cli_transfer(env, "cinder-pipe", Some(&full.snap), &spec(&incr.snap), &format!("backups/{dst}"), &tmp);
            eprintln!("  cinder pipe {:.2} s", p.seconds);
            let r = out.rec("scaling", &case, "cinder-pipe", "Cinder pipe, incremental", "default (on)", changed);
            r.push(p.seconds, Some(p.maxrss_kib));
            r.extra = json!({"percent": pct, "volume_bytes": volume});

            drop(img);
            env::purge(&backups, &dst).expect("remove pipe destination");
            env::purge(&backups, &backup_image_name(&vid, &b1)).expect("remove backup image");
            for b in [&b1, &b2] {
                let _ = backups.object_remove(&meta_object_name(b));
            }
            env::purge(&volumes, vol.image_name()).expect("remove volume");
            env::settle(env, &c1, &["volumes"]);
            env::settle(env, &c2, &["backups"]);
        }
    }
    out.note(format!(
        "scaling: a {} MiB volume written in full, a full backup, then 1/10/100 % of it rewritten as 64 KiB writes at \
         random distinct offsets, then the timed incremental backup",
        volume / MIB
    ));
}

fn uploads(env: &Env, out: &mut PhaseOut) {
    let c1 = env.connect(&env.conf1, None);
    let images = Pool::open(&c1, "images").expect("pool images");
    let mut n = 0;
    for rep in 0..env.repeat {
        for size in upload_sizes(env) {
            if size + 2 * GIB > env::mem_available() && !env.quick {
                out.note(format!(
                    "scaling: upload of {} MiB skipped: only {} MiB of memory available for memstore",
                    size / MIB,
                    env::mem_available() / MIB
                ));
                continue;
            }
            for hash in [true, false] {
                n += 1;
                let name = env.name(&format!("sc-up{n}"));
                eprintln!(
                    "[scaling {}/{}] upload {} MiB, hashing {}",
                    rep + 1,
                    env.repeat,
                    size / MIB,
                    if hash { "on" } else { "off" }
                );
                let p = spawn_child(env, "upload", size, DataSet::Random, hash, &name, "x");
                env::purge(&images, &name).expect("remove uploaded image");
                let secs = p.json()["seconds"].as_f64().unwrap_or(p.seconds);
                eprintln!(
                    "  {secs:.2} s ({:.0} MiB/s), peak RSS {} MiB",
                    size as f64 / MIB as f64 / secs,
                    p.maxrss_kib / 1024
                );
                let (method, label) = if hash {
                    ("ours-hash", "Glance recipe, md5+sha512")
                } else {
                    ("ours-nohash", "Glance recipe, hashing off")
                };
                let r = out.rec("scaling", &format!("upload {} MiB", size / MIB), method, label, "default (on)", size);
                r.ours = true;
                r.push(secs, Some(p.maxrss_kib));
            }
        }
    }
    out.note(
        "scaling: uploads of random data from a generator (an 8 MiB block repeated), one child process each".into(),
    );
}
