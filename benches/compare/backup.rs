//! Comparison 2: backups of a thin 8 GiB volume into another cluster (or another pool of the same
//! cluster): a full backup of 256 MiB of data, then an incremental one of 64 MiB changed in
//! 64 KiB random writes. The backup recipe (`rbd_core::recipes::backup::Backup`, data moved by
//! `rbd_core::transfer::Transfer`) and `Transfer` alone, against Cinder's pipe `rbd export-diff
//! --from-snap s1 vol@s2 - | rbd import-diff - dst` and the CLI through a file.

use std::path::Path;

use rbd_core::recipes::backup::{backup_image_name, meta_object_name, Backup, VolumeRef};
use rbd_core::transfer::Transfer;
use rbd_core::{Image, ImageOptions, Pool, Progress};
use serde_json::json;

use crate::env::{self, DataSet, Env, Meas, KIB, MIB};
use crate::report::PhaseOut;

const METHODS: [&str; 4] = ["recipe", "transfer", "cinder-pipe", "cli-file"];

pub fn label(method: &str) -> &'static str {
    match method {
        "recipe" => "backup recipe (rbd_core Backup)",
        "transfer" => "rbd_core Transfer alone (16 in flight)",
        "cinder-pipe" => "Cinder: export-diff - | import-diff -",
        _ => "CLI via a file",
    }
}

/// The workload sizes: (volume, base data, changed, write size).
pub fn sizes(env: &Env) -> (u64, u64, u64, u64) {
    if env.quick {
        (256 * MIB, 16 * MIB, 4 * MIB, 64 * KIB)
    } else {
        (8192 * MIB, 256 * MIB, 64 * MIB, 64 * KIB)
    }
}

/// The Cinder pipe / file commands for a diff of `src_spec` (`pool/image@snap`) into `dst_spec`.
pub fn cli_transfer(
    env: &Env,
    method: &str,
    from: Option<&str>,
    src_spec: &str,
    dst_spec: &str,
    tmp: &Path,
) -> env::Proc {
    let from_arg = from.map(|f| format!("--from-snap {f}")).unwrap_or_default();
    let rbd1 = env.rbd(&env.conf1, None);
    let rbd2 = env.rbd(&env.conf2, None);
    if method == "cinder-pipe" {
        env::sh(&format!(
            "{rbd1} export-diff --no-progress {from_arg} {src_spec} - | {rbd2} import-diff --no-progress - {dst_spec}"
        ))
        .check("cinder pipe")
    } else {
        let _ = std::fs::remove_file(tmp);
        let p = env::sh(&format!(
            "{rbd1} export-diff --no-progress {from_arg} {src_spec} {f} && {rbd2} import-diff --no-progress {f} {dst_spec}",
            f = tmp.display()
        ))
        .check("cli via file");
        let _ = std::fs::remove_file(tmp);
        p
    }
}

/// CPU seconds of the OSDs of both clusters.
pub fn osd_cpu(env: &Env) -> f64 {
    env::osd_cpu(&env.conf1) + if env.two_clusters { env::osd_cpu(&env.conf2) } else { 0.0 }
}

pub fn run(env: &Env, out: &mut PhaseOut) {
    let (volume, base, changed, wsize) = sizes(env);
    let c1 = env.connect(&env.conf1, None);
    let c2 = env.connect(&env.conf2, None);
    let volumes = Pool::open(&c1, "volumes").expect("pool volumes");
    let backups = Pool::open(&c2, "backups").expect("pool backups");
    let tmp = env.data_dir.join(format!("{}.diff", env.tag));
    let case_full = "full";
    let case_incr = "incremental";
    for rep in 0..env.repeat {
        let seed = 0x5EED_0000 + rep as u64;
        // One source volume for every method, named as Cinder names volumes (the recipe's
        // input): base data, `s1`, [full backups], changes, `s2`, [incremental backups]. The
        // recipe takes its own snapshot right after `s1` / `s2`, at the same content.
        let vid = env.name(&format!("bk-r{rep}"));
        let vol = VolumeRef::cinder(&volumes, &vid);
        let src = vol.image_name().to_string();
        volumes.create_image(&src, volume, &ImageOptions::new()).expect("create source volume");
        let img = Image::open(&volumes, &src).expect("open source volume");
        env::fill_image(&img, DataSet::Random, base);
        img.snap_create("s1").expect("snap s1");
        let (bid_full, bid_incr) = (env.name(&format!("r{rep}-full")), env.name(&format!("r{rep}-incr")));
        let dst = |m: &str| env.name(&format!("bk-dst-r{rep}-{m}"));
        for m in &METHODS[1..] {
            backups.create_image(&dst(m), volume, &ImageOptions::new()).expect("create destination");
        }

        for (case, from, to) in [(case_full, None, "s1"), (case_incr, Some("s1"), "s2")] {
            if case == case_incr {
                env::write_changes(&img, volume, changed, wsize, seed);
                img.snap_create("s2").expect("snap s2");
            }
            for k in 0..METHODS.len() {
                let method = METHODS[(k + rep) % METHODS.len()];
                if !env.memory_ok(out, &format!("backup {case} {method}")) {
                    continue;
                }
                eprintln!("[backup {}/{}] {case}: {method}", rep + 1, env.repeat);
                let osd0 = osd_cpu(env);
                let (ops1, ops2) = (env::osd_ops(&env.conf1), env::osd_ops(&env.conf2));
                let mut m = match method {
                    "recipe" => {
                        let b = if case == case_full {
                            Backup::new(&vol, &backups, &bid_full)
                        } else {
                            let mut b = Backup::new(&vol, &backups, &bid_incr);
                            b.parent(Some(&bid_full));
                            b
                        };
                        let (mut m, r) = Meas::here(|| b.run(&mut Progress::none()).expect("backup recipe"));
                        assert!(
                            case == case_full || r.kind.is_incremental(),
                            "the recipe made a {} backup instead of an incremental one",
                            r.kind.name()
                        );
                        m.extra = json!({"kind": r.kind.name(), "bytes_moved": r.bytes_moved,
                            "bytes_read": r.transfer.bytes_read, "bytes_skipped": r.transfer.bytes_skipped});
                        m
                    }
                    "transfer" => {
                        let s = Image::open_at_snap(&volumes, &src, to).expect("open source at snap");
                        let d = Image::open(&backups, &dst(method)).expect("open destination");
                        let (mut m, st) = Meas::here(|| {
                            Transfer::new(&s, &d)
                                .from_snap(from)
                                .dst_is_zero(from.is_none())
                                .run(&mut Progress::none())
                                .expect("transfer")
                        });
                        m.extra = json!({"bytes_moved": st.bytes_written + st.bytes_zeroed, "bytes_read": st.bytes_read,
                            "bytes_skipped": st.bytes_skipped});
                        m
                    }
                    _ => {
                        let p = cli_transfer(
                            env,
                            method,
                            from,
                            &format!("volumes/{src}@{to}"),
                            &format!("backups/{}", dst(method)),
                            &tmp,
                        );
                        Meas::proc(&p)
                    }
                };
                let osd = osd_cpu(env) - osd0;
                if env.two_clusters {
                    let ops = json!({"source": env::ops_delta(ops1, env::osd_ops(&env.conf1)),
                        "destination": env::ops_delta(ops2, env::osd_ops(&env.conf2))});
                    match m.extra.as_object_mut() {
                        Some(o) => {
                            o.insert("osd_ops".into(), ops);
                        }
                        None => m.extra = json!({"osd_ops": ops}),
                    }
                }
                let secs = m.secs;
                eprintln!("  {secs:.2} s, client CPU {:.2} s, OSD CPU {osd:.2} s", m.cpu);
                let data = if case == case_full { base } else { changed };
                let r = out.rec("backup", case, method, label(method), "default (on)", data);
                r.ours = matches!(method, "recipe" | "transfer");
                r.push(secs, m.rss);
                r.cpu(m.cpu, osd);
                r.extra = m.extra;
                if case == case_incr {
                    // A memstore OSD stores the zeros the CLI writes: free them right away.
                    let name = if method == "recipe" { backup_image_name(&vid, &bid_full) } else { dst(method) };
                    env::purge(&backups, &name).expect("remove destination");
                }
            }
        }
        // Free both clusters' memory before the next repetition.
        drop(img);
        for m in &METHODS[1..] {
            env::purge(&backups, &dst(m)).expect("remove destination");
        }
        env::purge(&backups, &backup_image_name(&vid, &bid_full)).expect("remove backup image");
        for b in [&bid_full, &bid_incr] {
            let _ = backups.object_remove(&meta_object_name(b));
        }
        env::purge(&volumes, &src).expect("remove source volume");
        env::settle(env, &c1, &["volumes"]);
        env::settle(env, &c2, &["backups"]);
    }
    out.note(format!(
        "backup: thin {} MiB volume, {} MiB written before the full backup, then {} MiB changed as {} KiB writes \
         at random distinct offsets before the incremental one; {}; the recipe's time includes its snapshot, \
         metadata object and checks, the others start from existing snapshots (`s1`, `s2`) of the same volume.",
        volume / MIB,
        base / MIB,
        changed / MIB,
        wsize / KIB,
        if env.two_clusters {
            "volumes on cluster 1 -> backups on cluster 2".to_string()
        } else {
            "ONE cluster: pool volumes -> pool backups (no second cluster given)".to_string()
        }
    ));
}
