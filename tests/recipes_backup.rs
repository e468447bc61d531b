//! Backup recipes against two live clusters: volumes on the shared cluster (`CEPH_CONF`),
//! backups in `backups` on the second one (`RBD_TEST_CEPH_CONF2`). Full then incremental
//! backups, restores of every kind, Cinder's layout checked with the `rbd` CLI, bytes moved by
//! an incremental, forced full backups and source-snapshot trimming, delete order, and the undo
//! at every step boundary (plus an interrupted transfer and the leftovers of a crashed run).
mod common;

use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use common::{pattern, purge_image, unique};
use rbd_core::recipes::backup::{
    self, backup_image_name, delete_backup, list_backups, meta_object_name, parse_snap_name, verify, Backup,
    BackupKind, Restore, RestoreKind, VolumeRef, CREATE_STEPS,
};
use rbd_core::recipes::failpoint::{self, Action};
use rbd_core::{AioWriter, Cluster, ErrorKind, Image, ImageOptions, Pool, Progress};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const HOW2: &str = "start the second dev cluster with `RBD_DEV_DIR=.ceph-dev/shared2 RBD_DEV_MON_PORT=40920 \
scripts/vstart.sh up` and export RBD_TEST_CEPH_CONF2=<its ceph.conf> (`... scripts/vstart.sh env` prints it)";

/// Every test here runs `backup.create`, and failpoints are process-global.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn conf1() -> String {
    std::env::var("CEPH_CONF").expect("CEPH_CONF is set for live tests")
}

fn conf2() -> String {
    std::env::var("RBD_TEST_CEPH_CONF2")
        .unwrap_or_else(|_| panic!("RBD_TEST_CEPH_CONF2 is not set: these tests need a second cluster; {HOW2}"))
}

/// The volume side (shared cluster, pool `volumes`) and the backup side (second cluster, pool
/// `backups`).
struct Env {
    volumes: Pool,
    backups: Pool,
}

fn env() -> Option<Env> {
    let c1 = common::cluster()?;
    let conf = conf2();
    let c2 = Cluster::shared(Some(Path::new(&conf)), &common::client_id())
        .unwrap_or_else(|e| panic!("cannot connect to the second dev cluster at {conf} ({e}); {HOW2}"));
    assert_ne!(c1.fsid().unwrap(), c2.fsid().unwrap(), "CEPH_CONF and RBD_TEST_CEPH_CONF2 must be two clusters");
    Some(Env { volumes: Pool::open(&c1, "volumes").unwrap(), backups: Pool::open(&c2, "backups").unwrap() })
}

macro_rules! live2 {
    () => {
        match env() {
            Some(e) => e,
            None => return,
        }
    };
}

/// A test volume `volume-<vid>` and everything made from it: removed on drop (restore targets,
/// every `volume-<vid>.backup.*` image and the metadata objects of the backup ids used).
struct Fixture<'e> {
    env: &'e Env,
    vid: String,
    image: String,
    bids: Mutex<Vec<String>>,
    extra: Mutex<Vec<String>>,
}

impl<'e> Fixture<'e> {
    fn new(env: &'e Env, tag: &str, size: u64) -> Fixture<'e> {
        let vid = unique(tag);
        let image = format!("volume-{vid}");
        env.volumes.create_image(&image, size, &ImageOptions::new()).unwrap();
        Fixture { env, vid, image, bids: Mutex::new(Vec::new()), extra: Mutex::new(Vec::new()) }
    }

    fn vol(&self) -> VolumeRef<'e> {
        VolumeRef::cinder(&self.env.volumes, &self.vid)
    }

    fn bid(&self) -> String {
        let b = uuid::Uuid::new_v4().to_string();
        self.bids.lock().unwrap().push(b.clone());
        b
    }

    /// A restore target name in `volumes`, removed on drop.
    fn target(&self, tag: &str) -> String {
        let n = format!("volume-{}", unique(tag));
        self.extra.lock().unwrap().push(n.clone());
        n
    }

    fn write(&self, off: u64, seed: u64, len: u64) {
        let img = Image::open(&self.env.volumes, &self.image).unwrap();
        let mut w = AioWriter::new(&img, 16);
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(4 * MIB);
            w.write(off + pos, pattern(seed * 1000 + pos / MIB, n as usize)).unwrap();
            pos += n;
        }
        w.finish().unwrap();
    }

    fn backup(&self, bid: &str, parent: Option<&str>) -> backup::BackupResult {
        Backup::new(&self.vol(), &self.env.backups, bid).parent(parent).run(&mut Progress::none()).unwrap()
    }

    /// Source snapshot names (sorted).
    fn source_snaps(&self) -> Vec<String> {
        snap_names(&self.env.volumes, &self.image)
    }

    /// `image -> snapshots` of every `volume-<vid>.backup.*` image, and which metadata objects
    /// of the used backup ids exist: the backup side of the state.
    fn backup_side(&self) -> (Vec<(String, Vec<String>)>, Vec<String>) {
        let prefix = format!("volume-{}.backup.", self.vid);
        let images: Vec<(String, Vec<String>)> = self
            .env
            .backups
            .image_names()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .map(|n| {
                let s = snap_names(&self.env.backups, &n);
                (n, s)
            })
            .collect();
        let metas = self
            .bids
            .lock()
            .unwrap()
            .iter()
            .map(|b| meta_object_name(b))
            .filter(|o| self.env.backups.object_stat(o).is_ok())
            .collect();
        (images, metas)
    }
}

impl Drop for Fixture<'_> {
    fn drop(&mut self) {
        let (images, metas) = self.backup_side();
        for (n, _) in images {
            purge_image(&self.env.backups, &n);
        }
        for o in metas {
            let _ = self.env.backups.object_remove(&o);
        }
        for n in self.extra.lock().unwrap().iter() {
            purge_image(&self.env.volumes, n);
        }
        purge_image(&self.env.volumes, &self.image);
    }
}

fn snap_names(pool: &Pool, image: &str) -> Vec<String> {
    let mut v: Vec<String> =
        Image::open_read_only(pool, image).unwrap().snapshots().unwrap().into_iter().map(|s| s.name).collect();
    v.sort();
    v
}

/// sha256 over the size and (offset, bytes) of every non-zero 4 KiB block of `pool/name[@snap]`.
fn content(pool: &Pool, name: &str, snap: Option<&str>) -> String {
    let img = match snap {
        Some(s) => Image::open_at_snap(pool, name, s).unwrap(),
        None => Image::open_read_only(pool, name).unwrap(),
    };
    let size = img.size().unwrap();
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
        ControlFlow::Continue(())
    })
    .unwrap();
    format!("{:x}", h.finalize())
}

/// `rbd -c <conf> --id <id> <args> --format json`.
fn rbd_json(conf: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("rbd")
        .args(["-c", conf, "--id", &common::client_id()])
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run rbd");
    assert!(out.status.success(), "rbd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("rbd json")
}

/// Snapshot names of `spec` as `rbd snap ls` shows them, in its (snapshot id) order.
fn cli_snaps(conf: &str, spec: &str) -> Vec<String> {
    rbd_json(conf, &["snap", "ls", spec])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn full_then_incrementals_restore_layout_and_delete() {
    let _l = lock();
    let env = live2!();
    let f = Fixture::new(&env, "bk-chain", 64 * MIB);
    let vid = f.vid.clone();
    let (volumes, backups) = (&env.volumes, &env.backups);
    f.write(0, 1, 8 * MIB);
    f.write(40 * MIB, 2, 4 * MIB);

    // Full, then three incrementals with writes in between.
    let ids: Vec<String> = (0..4).map(|_| f.bid()).collect();
    let mut results = Vec::new();
    let mut want = Vec::new();
    for (i, bid) in ids.iter().enumerate() {
        if i > 0 {
            f.write((i as u64) * 12 * MIB, 10 + i as u64, 2 * MIB);
            f.write(60 * MIB, 20 + i as u64, MIB / 2);
        }
        let parent = if i == 0 { None } else { Some(ids[i - 1].as_str()) };
        let r = f.backup(bid, parent);
        assert_eq!(r.image, backup_image_name(&vid, &ids[0]), "incrementals go to the first backup's image");
        assert_eq!(parse_snap_name(&r.snap).unwrap().backup_id, *bid);
        if i == 0 {
            assert_eq!(r.kind, BackupKind::Full);
            assert!(r.bytes_moved >= 12 * MIB && r.bytes_moved < 16 * MIB, "{r:?}");
        } else {
            let from_snap = results.last().map(|p: &backup::BackupResult| p.snap.clone()).unwrap();
            assert_eq!(r.kind, BackupKind::Incremental { parent: ids[i - 1].clone(), from_snap });
            assert!(r.bytes_moved >= 2 * MIB + MIB / 2 && r.bytes_moved <= 4 * MIB, "{r:?}");
        }
        assert!(r.warnings.is_empty() && r.cleaned.is_empty() && !r.rewound, "{r:?}");
        want.push(content(volumes, &f.image, Some(&r.snap)));
        results.push(r);
    }
    let snaps: Vec<String> = results.iter().map(|r| r.snap.clone()).collect();
    assert_eq!(want.iter().collect::<std::collections::BTreeSet<_>>().len(), 4, "every backup differs");

    // Cinder's layout, as the rbd CLI sees it on both clusters.
    let base = backup_image_name(&vid, &ids[0]);
    let listed: Vec<String> = rbd_json(&conf2(), &["ls", "backups"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .filter(|n| n.starts_with(&format!("volume-{vid}.")))
        .collect();
    assert_eq!(listed, vec![base.clone()]);
    assert_eq!(cli_snaps(&conf2(), &format!("backups/{base}")), snaps);
    assert_eq!(cli_snaps(&conf1(), &format!("volumes/volume-{vid}")), snaps);
    for (i, s) in snaps.iter().enumerate() {
        let ts = s.strip_prefix(&format!("backup.{}.snap.", ids[i])).expect("backup.<id>.snap.<time>");
        let secs: f64 = ts.parse().expect("unix time with fraction");
        assert!(ts.contains('.') && secs > 1.6e9, "{s}");
        let meta: serde_json::Value =
            serde_json::from_slice(&backups.object_read_full(&meta_object_name(&ids[i])).unwrap()).unwrap();
        assert_eq!(meta["version"], 2);
        assert_eq!(meta["rbd-core"]["snap"], s.as_str());
        assert_eq!(meta["rbd-core"]["image"], base.as_str());
    }
    let info = rbd_json(&conf2(), &["info", &format!("backups/{base}")]);
    let features: Vec<&str> = info["features"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(features, vec!["layering", "exclusive-lock", "object-map", "fast-diff"]);

    // The chain from the cluster state alone.
    let list = list_backups(backups, &vid).unwrap();
    assert_eq!(list.iter().map(|b| b.backup_id.clone()).collect::<Vec<_>>(), ids);
    let parents: Vec<Option<String>> = list.iter().map(|b| b.parent.clone()).collect();
    assert_eq!(parents, vec![None, Some(ids[0].clone()), Some(ids[1].clone()), Some(ids[2].clone())]);
    assert!(list.iter().all(|b| b.size == 64 * MIB && b.image == base && b.time.is_some() && b.created.is_some()));
    assert!(list[0].delta_bytes >= 12 * MIB && list[1].delta_bytes <= 4 * MIB, "{list:?}");

    // Proof: each backup equals the source at its snapshot.
    for bid in &ids {
        let v = verify(backups, &vid, bid, &f.vol(), &mut Progress::none()).unwrap();
        assert!(v.matches && v.mismatched_bytes == 0 && v.backup_digest == v.source_digest, "{v:?}");
    }

    // Each restore into a new volume equals the source at that snapshot (diff restore).
    for (i, bid) in ids.iter().enumerate() {
        let t = f.target(&format!("r{i}"));
        let target = VolumeRef::image(volumes, &t);
        let r = Restore::new(backups, &vid, bid, &target).run(&mut Progress::none()).unwrap();
        assert_eq!((r.kind.clone(), r.created, r.size), (RestoreKind::Diff, true, 64 * MIB), "{r:?}");
        assert_eq!(content(volumes, &t, None), want[i], "restore of backup {i}");
        assert!(snap_names(volumes, &t).is_empty(), "restores create no snapshot");
    }
    // Into an existing, bigger, empty volume: diff restore, the size is kept.
    let t = f.target("empty");
    volumes.create_image(&t, 80 * MIB, &ImageOptions::new()).unwrap();
    let r = backup::restore(backups, &vid, &ids[1], &VolumeRef::image(volumes, &t), &mut Progress::none()).unwrap();
    assert_eq!((r.kind, r.created, r.size), (RestoreKind::Diff, false, 80 * MIB));
    let img = Image::open_read_only(volumes, &t).unwrap();
    assert_eq!(img.size().unwrap(), 80 * MIB);
    assert_eq!(img.read_vec(0, (64 * MIB) as usize).unwrap(), {
        let src = Image::open_at_snap(volumes, &f.image, &snaps[1]).unwrap();
        src.read_vec(0, (64 * MIB) as usize).unwrap()
    });
    drop(img);
    // Onto a volume holding other data: the comparing restore writes only what differs.
    let t = f.target("r0");
    let target = VolumeRef::image(volumes, &t);
    backup::restore(backups, &vid, &ids[0], &target, &mut Progress::none()).unwrap();
    let r = backup::restore(backups, &vid, &ids[3], &target, &mut Progress::none()).unwrap();
    assert_eq!(r.kind, RestoreKind::Full);
    assert!(r.bytes_written + r.bytes_zeroed <= 8 * MIB && r.bytes_unchanged >= 8 * MIB, "{r:?}");
    assert_eq!(content(volumes, &t, None), want[3]);
    // Too small a target is refused before anything changes.
    let small = f.target("small");
    volumes.create_image(&small, 32 * MIB, &ImageOptions::new()).unwrap();
    let e =
        backup::restore(backups, &vid, &ids[3], &VolumeRef::image(volumes, &small), &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    // Onto the source volume: rollback to the backup's own snapshot...
    f.write(0, 99, 16 * MIB);
    let r = backup::restore(backups, &vid, &ids[3], &f.vol(), &mut Progress::none()).unwrap();
    assert_eq!(r.kind, RestoreKind::Rollback { snap: snaps[3].clone() });
    assert_eq!(content(volumes, &f.image, None), want[3]);
    // ...or, when that snapshot is gone, rollback to an older common one plus the diff.
    Image::open(volumes, &f.image).unwrap().snap_remove(&snaps[2]).unwrap();
    f.write(8 * MIB, 98, 4 * MIB);
    let r = backup::restore(backups, &vid, &ids[2], &f.vol(), &mut Progress::none()).unwrap();
    assert_eq!(r.kind, RestoreKind::RollbackDiff { from_snap: snaps[1].clone() });
    assert!(r.bytes_written + r.bytes_zeroed <= 4 * MIB, "{r:?}");
    assert_eq!(content(volumes, &f.image, None), want[2]);

    // Delete: refused while a newer incremental depends on it, then newest first.
    let e = delete_backup(backups, &vid, &ids[1], Some(&f.vol())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert!(e.to_string().contains(&ids[2]), "{e}");
    assert_eq!(cli_snaps(&conf2(), &format!("backups/{base}")), snaps, "a refused delete changes nothing");
    for (i, bid) in ids.iter().enumerate().rev() {
        let d = delete_backup(backups, &vid, bid, Some(&f.vol())).unwrap();
        assert_eq!(d.snapshot.as_deref(), Some(snaps[i].as_str()));
        assert!(d.metadata_removed);
        assert_eq!(d.image_removed, i == 0, "{d:?}");
        assert_eq!(d.source_snapshots_removed.len(), usize::from(i != 2), "{d:?}");
    }
    assert!(f.source_snaps().iter().all(|s| !s.starts_with("backup.")), "{:?}", f.source_snaps());
    let (images, metas) = f.backup_side();
    assert!(images.is_empty() && metas.is_empty(), "{images:?} {metas:?}");
    assert!(list_backups(backups, &vid).unwrap().is_empty());
    let e = delete_backup(backups, &vid, &ids[0], Some(&f.vol())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn incremental_moves_only_the_change_on_a_big_thin_volume() {
    let _l = lock();
    let env = live2!();
    let f = Fixture::new(&env, "bk-8g", 8 * GIB);
    f.write(0, 1, 8 * MIB);
    f.write(5 * GIB, 2, 8 * MIB);
    let b1 = f.bid();
    let full = f.backup(&b1, None);
    assert_eq!(full.kind, BackupKind::Full);
    assert!(full.bytes_moved >= 16 * MIB && full.bytes_moved <= 20 * MIB, "{full:?}");
    // 64 MiB of change: 16 writes of 4 MiB spread over the volume.
    for i in 0..16u64 {
        f.write(i * 512 * MIB + 4 * MIB, 100 + i, 4 * MIB);
    }
    let b2 = f.bid();
    let inc = f.backup(&b2, Some(&b1));
    assert!(inc.kind.is_incremental(), "{inc:?}");
    assert!(inc.bytes_moved >= 64 * MIB && inc.bytes_moved <= 68 * MIB, "moved {} bytes", inc.bytes_moved);
    assert!(inc.transfer.bytes_read <= 68 * MIB, "{inc:?}");
    assert_eq!(inc.size, 8 * GIB);
    let v = verify(&env.backups, &f.vid, &b2, &f.vol(), &mut Progress::none()).unwrap();
    assert!(v.matches && v.bytes_compared <= 96 * MIB, "{v:?}");
    delete_backup(&env.backups, &f.vid, &b2, Some(&f.vol())).unwrap();
    delete_backup(&env.backups, &f.vid, &b1, Some(&f.vol())).unwrap();
    let (images, metas) = f.backup_side();
    assert!(images.is_empty() && metas.is_empty());
}

#[test]
fn forced_full_backups_trimming_and_bad_input() {
    let _l = lock();
    let env = live2!();
    let f = Fixture::new(&env, "bk-force", 16 * MIB);
    let (volumes, backups) = (&env.volumes, &env.backups);
    f.write(0, 1, 2 * MIB);
    let before = (f.source_snaps(), f.backup_side());

    // Bad input is refused before anything changes.
    let b = f.bid();
    for (bid, parent) in [("Bad.Id", None), (b.as_str(), Some(b.as_str())), (b.as_str(), Some("x.y"))] {
        let e = Backup::new(&f.vol(), backups, bid).parent(parent).run(&mut Progress::none()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
    let e = Backup::new(&f.vol(), backups, &b).keep_source_snapshots(Some(0)).run(&mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = Backup::new(&VolumeRef::cinder(volumes, "no.dots"), backups, &b).run(&mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!((f.source_snaps(), f.backup_side()), before);

    // Keep at most 2 backup snapshots on the source: the oldest go, the newest stays.
    let ids: Vec<String> = (0..3).map(|_| f.bid()).collect();
    let mut snaps: Vec<String> = Vec::new();
    for (i, bid) in ids.iter().enumerate() {
        f.write(MIB * i as u64, 10 + i as u64, MIB);
        let parent = (i > 0).then(|| ids[i - 1].as_str());
        let r = Backup::new(&f.vol(), backups, bid)
            .parent(parent)
            .keep_source_snapshots(Some(2))
            .run(&mut Progress::none())
            .unwrap();
        assert_eq!(r.kind.is_incremental(), i > 0);
        assert_eq!(r.trimmed, if i == 2 { vec![snaps[0].clone()] } else { vec![] }, "{r:?}");
        snaps.push(r.snap);
    }
    let mut kept = vec![snaps[1].clone(), snaps[2].clone()];
    kept.sort();
    assert_eq!(f.source_snaps(), kept);
    assert!(backup::trim_source_snapshots(&f.vol(), 0).is_err());

    // The parent's snapshot is gone from the source: a full backup into a new image, said so.
    Image::open(volumes, &f.image).unwrap().snap_remove(&snaps[2]).unwrap();
    let b4 = f.bid();
    let r = f.backup(&b4, Some(&ids[2]));
    match &r.kind {
        BackupKind::FullForced { reason } => {
            assert!(reason.contains(&ids[2]) && reason.contains(&snaps[2]), "{reason}")
        }
        k => panic!("expected a forced full backup, got {k:?}"),
    }
    assert_eq!(r.image, backup_image_name(&f.vid, &b4));
    assert!(!r.warnings.is_empty());
    // The parent does not exist at all: also a forced full backup.
    let b5 = f.bid();
    let r5 = f.backup(&b5, Some("00000000-dead-beef-0000-000000000000"));
    assert!(matches!(r5.kind, BackupKind::FullForced { .. }), "{r5:?}");
    // An incremental on the forced full works again.
    f.write(3 * MIB, 50, MIB);
    let b6 = f.bid();
    let r6 = f.backup(&b6, Some(&b5));
    assert_eq!(r6.image, backup_image_name(&f.vid, &b5));
    assert!(r6.kind.is_incremental());
    let t = f.target("r6");
    backup::restore(backups, &f.vid, &b6, &VolumeRef::image(volumes, &t), &mut Progress::none()).unwrap();
    assert_eq!(content(volumes, &t, None), content(volumes, &f.image, Some(&r6.snap)));
    // The same backup id twice is refused.
    let e = Backup::new(&f.vol(), backups, &b6).run(&mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists);

    // Verify needs the source snapshot; a trimmed one is NotFound.
    let e = verify(backups, &f.vid, &ids[0], &f.vol(), &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let list = list_backups(backups, &f.vid).unwrap();
    assert_eq!(list.len(), 6);
    for bid in [&b6, &b5, &b4, &ids[2], &ids[1], &ids[0]] {
        delete_backup(backups, &f.vid, bid, Some(&f.vol())).unwrap();
    }
    assert!(f.source_snaps().iter().all(|s| !s.starts_with("backup.")));
    let (images, metas) = f.backup_side();
    assert!(images.is_empty() && metas.is_empty(), "{images:?} {metas:?}");
}

#[test]
fn every_step_boundary_undoes_and_the_next_run_succeeds() {
    let _l = lock();
    let env = live2!();
    let f = Fixture::new(&env, "bk-fp", 16 * MIB);
    let (volumes, backups) = (&env.volumes, &env.backups);
    f.write(0, 1, 4 * MIB);

    // Full backup: fail at each step (and at commit); the state is exactly as before.
    let b1 = f.bid();
    let full_steps = ["cleanup", "create_image", "snapshot", "transfer", "metadata", "commit"];
    for step in full_steps {
        let before = (f.source_snaps(), f.backup_side());
        let fp = format!("backup.create.{step}");
        failpoint::set(&fp, Action::Error);
        let e = Backup::new(&f.vol(), backups, &b1).run(&mut Progress::none()).unwrap_err();
        failpoint::clear(&fp);
        assert_eq!(e.recipe_step(), Some(("backup.create", step)), "{e}");
        assert!(e.undo_errors().is_empty(), "{e}");
        assert_eq!((f.source_snaps(), f.backup_side()), before, "after a failure at {step}");
    }
    // Cancelled mid-transfer: no backup snapshot anywhere, the new image is gone.
    let before = (f.source_snaps(), f.backup_side());
    let mut cb = |done: u64, _total: u64| if done > 0 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
    let e = Backup::new(&f.vol(), backups, &b1).in_flight(1).run(&mut Progress::new(&mut cb)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!((f.source_snaps(), f.backup_side()), before);
    let r1 = f.backup(&b1, None);
    assert_eq!(r1.kind, BackupKind::Full);

    // Incremental: the same sweep.
    f.write(4 * MIB, 2, 4 * MIB);
    let b2 = f.bid();
    for step in ["cleanup", "rewind", "snapshot", "transfer", "metadata", "commit"] {
        assert!(CREATE_STEPS.contains(&step) || step == "commit");
        let before = (f.source_snaps(), f.backup_side());
        let fp = format!("backup.create.{step}");
        failpoint::set(&fp, Action::Error);
        let e = Backup::new(&f.vol(), backups, &b2).parent(Some(&b1)).run(&mut Progress::none()).unwrap_err();
        failpoint::clear(&fp);
        assert_eq!(e.recipe_step(), Some(("backup.create", step)), "{e}");
        assert_eq!((f.source_snaps(), f.backup_side()), before, "after a failure at {step}");
    }
    // An incremental cancelled mid-transfer leaves data on the backup image's head but no
    // snapshot; the next run rolls the head back to the parent first.
    let before = (f.source_snaps(), f.backup_side());
    let mut cb = |done: u64, _total: u64| if done > 0 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
    let e = Backup::new(&f.vol(), backups, &b2).parent(Some(&b1)).in_flight(1).run(&mut Progress::new(&mut cb));
    assert_eq!(e.unwrap_err().kind(), ErrorKind::Cancelled);
    assert_eq!((f.source_snaps(), f.backup_side()), before);
    let r2 = f.backup(&b2, Some(&b1));
    assert!(r2.kind.is_incremental() && r2.rewound, "{r2:?}");
    assert!(verify(backups, &f.vid, &b2, &f.vol(), &mut Progress::none()).unwrap().matches);

    // A crashed run (killed between steps) leaves a source snapshot without a backup-side
    // counterpart and maybe an empty backup image: a re-run with the same id removes both.
    let b3 = f.bid();
    let stale = rbd_core::recipes::backup::snap_name(&b3, std::time::SystemTime::now());
    Image::open(volumes, &f.image).unwrap().snap_create(&stale).unwrap();
    backups.create_image(&backup_image_name(&f.vid, &b3), 16 * MIB, &ImageOptions::new()).unwrap();
    f.write(0, 3, MIB);
    let r3 = f.backup(&b3, None);
    assert_eq!(r3.cleaned.len(), 2, "{r3:?}");
    let mine: Vec<String> =
        f.source_snaps().into_iter().filter(|s| parse_snap_name(s).is_some_and(|p| p.backup_id == b3)).collect();
    assert_eq!(mine, vec![r3.snap.clone()]);
    assert!(verify(backups, &f.vid, &b3, &f.vol(), &mut Progress::none()).unwrap().matches);

    // Restore into a missing volume: a failure at any step removes the volume it created.
    let t = f.target("fp");
    for step in ["create_image", "transfer", "resize", "commit"] {
        let fp = format!("backup.restore.{step}");
        failpoint::set(&fp, Action::Error);
        let e = backup::restore(backups, &f.vid, &b2, &VolumeRef::image(volumes, &t), &mut Progress::none());
        failpoint::clear(&fp);
        assert_eq!(e.unwrap_err().recipe_step(), Some(("backup.restore", step)));
        assert!(!volumes.image_exists(&t).unwrap(), "after a failure at {step}");
    }

    // An interrupted delete finishes when run again.
    failpoint::set("backup.delete.remove_metadata", Action::Error);
    let e = delete_backup(backups, &f.vid, &b3, Some(&f.vol())).unwrap_err();
    failpoint::clear("backup.delete.remove_metadata");
    assert_eq!(e.recipe_step(), Some(("backup.delete", "remove_metadata")));
    let d = delete_backup(backups, &f.vid, &b3, Some(&f.vol())).unwrap();
    assert!(d.snapshot.is_none() && d.metadata_removed && d.source_snapshots_removed.len() == 1, "{d:?}");
    for bid in [&b2, &b1] {
        delete_backup(backups, &f.vid, bid, Some(&f.vol())).unwrap();
    }
    assert!(f.source_snaps().is_empty());
    let (images, metas) = f.backup_side();
    assert!(images.is_empty() && metas.is_empty(), "{images:?} {metas:?}");
}

/// Runs `cmd` with bash (`set -o pipefail`), failing the test on a non-zero exit.
fn sh(cmd: &str) {
    let out = Command::new("bash").arg("-c").arg(format!("set -o pipefail; {cmd}")).output().expect("run bash");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn interoperates_with_cinders_cli_pipe_and_the_legacy_base_image() {
    let _l = lock();
    let env = live2!();
    let f = Fixture::new(&env, "bk-cinder", 16 * MIB);
    let (volumes, backups) = (&env.volumes, &env.backups);
    let id = common::client_id();
    let rbd1 = format!("rbd -c {} --id {id}", conf1());
    let rbd2 = format!("rbd -c {} --id {id}", conf2());
    let vol = format!("volumes/{}", f.image);
    let base = rbd_core::recipes::backup::legacy_backup_image_name(&f.vid);
    f.write(0, 1, 3 * MIB);

    // Old Cinder's first backup, with its exact commands: legacy base image, CLI pipe.
    let c1 = f.bid();
    let s1 = rbd_core::recipes::backup::snap_name(&c1, std::time::SystemTime::now());
    sh(&format!("{rbd2} create --size 16M backups/{base}"));
    sh(&format!("{rbd1} snap create {vol}@{s1}"));
    sh(&format!("{rbd1} export-diff --no-progress {vol}@{s1} - | {rbd2} import-diff --no-progress - backups/{base}"));

    // Our incremental on top of it goes to the legacy image.
    f.write(4 * MIB, 2, MIB);
    let b2 = f.bid();
    let r2 = f.backup(&b2, Some(&c1));
    assert_eq!(r2.kind, BackupKind::Incremental { parent: c1.clone(), from_snap: s1.clone() });
    assert_eq!(r2.image, base);

    // Cinder's incremental on top of ours (export-diff --from-snap our snapshot).
    f.write(8 * MIB, 3, MIB);
    let c3 = f.bid();
    let s3 = rbd_core::recipes::backup::snap_name(&c3, std::time::SystemTime::now());
    sh(&format!("{rbd1} snap create {vol}@{s3}"));
    sh(&format!(
        "{rbd1} export-diff --no-progress --from-snap {} {vol}@{s3} - | {rbd2} import-diff --no-progress - backups/{base}",
        r2.snap
    ));

    // One chain, read from the cluster alone (CLI-made backups have no metadata object).
    let list = list_backups(backups, &f.vid).unwrap();
    let chain: Vec<(String, Option<String>)> = list.iter().map(|b| (b.backup_id.clone(), b.parent.clone())).collect();
    assert_eq!(chain, vec![(c1.clone(), None), (b2.clone(), Some(c1.clone())), (c3.clone(), Some(b2.clone()))]);
    assert!(list[0].metadata.is_none() && list[1].metadata.is_some());

    // We restore Cinder's backup; Cinder's diff restore (the CLI pipe) restores ours.
    let t = f.target("c3");
    backup::restore(backups, &f.vid, &c3, &VolumeRef::image(volumes, &t), &mut Progress::none()).unwrap();
    assert_eq!(content(volumes, &t, None), content(volumes, &f.image, Some(&s3)));
    let t2 = f.target("b2cli");
    sh(&format!("{rbd1} create --size 16M volumes/{t2}"));
    sh(&format!(
        "{rbd2} export-diff --no-progress backups/{base}@{} - | {rbd1} import-diff --no-progress - volumes/{t2}",
        r2.snap
    ));
    assert_eq!(content(volumes, &t2, None), content(volumes, &f.image, Some(&r2.snap)));
    assert!(verify(backups, &f.vid, &c1, &f.vol(), &mut Progress::none()).unwrap().matches);

    // Deleting newest first removes everything, the legacy image included.
    assert_eq!(delete_backup(backups, &f.vid, &b2, Some(&f.vol())).unwrap_err().kind(), ErrorKind::Busy);
    for bid in [&c3, &b2, &c1] {
        delete_backup(backups, &f.vid, bid, Some(&f.vol())).unwrap();
    }
    assert!(f.source_snaps().is_empty());
    let (images, metas) = f.backup_side();
    assert!(images.is_empty() && metas.is_empty(), "{images:?} {metas:?}");
}
