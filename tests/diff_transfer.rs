//! Live tests of the in-process image → image transfer between two running clusters: same
//! content and snapshots as the CLI pipe `rbd export-diff ... - | rbd import-diff - ...`,
//! incremental transfers that move about the changed bytes, the checks made before anything is
//! written, cancellation and re-run, resizing, and clones (parent data included).
//!
//! The second cluster is found through `RBD_TEST_CEPH_CONF2` (its ceph.conf). Without it these
//! tests fail with a message (unless `RBD_TEST_NO_CLUSTER` opts out, as for the first cluster).

mod common;

use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;

use common::{unique, ScratchImage};
use rbd_core::import::rollback_to_from_snap;
use rbd_core::transfer::Transfer;
use rbd_core::{clone_image, Cluster, ErrorKind, Image, ImageOptions, Pool, Progress, SnapNamespace};
use sha2::{Digest, Sha256};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

const HOW2: &str = "start the second dev cluster with `RBD_DEV_DIR=.ceph-dev/shared2 RBD_DEV_MON_PORT=40920 \
scripts/vstart.sh up` and export RBD_TEST_CEPH_CONF2=<its ceph.conf> (`... scripts/vstart.sh env` prints it)";

/// The second cluster (the "backup" side), or `None` under the `RBD_TEST_NO_CLUSTER` opt-out.
fn cluster2() -> Option<Cluster> {
    if std::env::var_os("RBD_TEST_NO_CLUSTER").is_some() {
        eprintln!("RBD_TEST_NO_CLUSTER is set: skipping a two-cluster test");
        return None;
    }
    let conf = conf2();
    Some(
        Cluster::shared(Some(Path::new(&conf)), &common::client_id())
            .unwrap_or_else(|e| panic!("cannot connect to the second dev cluster at {conf} ({e}); {HOW2}")),
    )
}

fn conf2() -> String {
    std::env::var("RBD_TEST_CEPH_CONF2")
        .unwrap_or_else(|_| panic!("RBD_TEST_CEPH_CONF2 is not set: this test needs a second cluster; {HOW2}"))
}

fn conf1() -> String {
    std::env::var("CEPH_CONF").expect("CEPH_CONF is set for live tests")
}

macro_rules! live2 {
    () => {
        match cluster2() {
            Some(c) => c,
            None => return,
        }
    };
}

/// sha256 of size + contents of `pool/name[@snap]`.
fn sha_at(pool: &Pool, name: &str, snap: Option<&str>) -> String {
    let img = match snap {
        Some(s) => Image::open_at_snap(pool, name, s).expect("open at snap"),
        None => Image::open_read_only(pool, name).expect("open read-only"),
    };
    let size = img.size().unwrap();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut off = 0;
    while off < size {
        let n = (size - off).min(4 * MIB) as usize;
        let v = img.read_vec(off, n).unwrap();
        assert_eq!(v.len(), n);
        h.update(&v);
        off += n as u64;
    }
    format!("{:x}", h.finalize())
}

/// sha256 of size + (offset, block) of every non-zero 4 KiB block of `pool/name@snap`, reading
/// only allocated extents: equal for equal content whatever the allocation.
fn sparse_sha(pool: &Pool, name: &str, snap: &str) -> String {
    let img = Image::open_at_snap(pool, name, snap).expect("open at snap");
    let size = img.size().unwrap();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    img.read_iterate(0, size, |off, _len, data| {
        for (i, block) in data.unwrap_or_default().chunks(4096).enumerate() {
            if !rbd_core::is_all_zero(block) {
                h.update((off + i as u64 * 4096).to_le_bytes());
                h.update(block);
            }
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    format!("{:x}", h.finalize())
}

fn snaps(pool: &Pool, name: &str) -> Vec<(String, bool)> {
    let img = Image::open_read_only(pool, name).unwrap();
    let mut v: Vec<_> = img.snapshots().unwrap().into_iter().filter(|s| s.namespace == SnapNamespace::User).collect();
    v.sort_by_key(|s| s.id);
    v.into_iter().map(|s| (s.name, s.protected == Some(true))).collect()
}

fn spec(pool: &Pool, name: &str, snap: Option<&str>) -> String {
    match snap {
        Some(s) => format!("{}/{name}@{s}", pool.name()),
        None => format!("{}/{name}", pool.name()),
    }
}

/// The Cinder pipe between the two clusters, through `bash -c`.
fn cli_pipe(src: &str, from: Option<&str>, dst: &str) {
    let id = common::client_id();
    let from = from.map(|f| format!("--from-snap {f}")).unwrap_or_default();
    let script = format!(
        "set -o pipefail; rbd -c {c1} --id {id} export-diff --no-progress {from} {src} - | \
         rbd -c {c2} --id {id} import-diff --no-progress - {dst}",
        c1 = conf1(),
        c2 = conf2()
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().expect("run bash");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Same history as the interop tests: s1, s2 (grown to 24 MiB, writes into new objects), head.
fn build_history(img: &Image) {
    img.write(0, &common::pattern(1, 64 * KIB as usize)).unwrap();
    img.write(4 * MIB + 128 * KIB, &common::pattern(2, 512 * KIB as usize)).unwrap();
    img.write(8 * MIB, &vec![0u8; 64 * KIB as usize]).unwrap();
    img.write(16 * MIB - 4 * KIB, &common::pattern(3, 4 * KIB as usize)).unwrap();
    img.snap_create("s1").unwrap();
    img.discard(0, 64 * KIB).unwrap();
    img.write(4 * MIB, &common::pattern(4, 512)).unwrap();
    img.write(13 * MIB, &common::pattern(5, 64 * KIB as usize)).unwrap();
    img.write(17 * MIB, &common::pattern(6, 64 * KIB as usize)).unwrap();
    img.resize(24 * MIB, false).unwrap();
    img.write(22 * MIB, &common::pattern(7, 100 * KIB as usize)).unwrap();
    img.snap_create("s2").unwrap();
    img.write(MIB, &common::pattern(8, 8 * KIB as usize)).unwrap();
    img.write(4 * MIB + 192 * KIB, &vec![0u8; 4 * KIB as usize]).unwrap();
}

fn open_end(pool: &Pool, name: &str, snap: Option<&str>) -> Image {
    match snap {
        Some(s) => Image::open_at_snap(pool, name, s).unwrap(),
        None => Image::open_read_only(pool, name).unwrap(),
    }
}

#[test]
fn transfer_between_clusters_matches_the_cli_pipe() {
    let c1 = live!();
    let c2 = live2!();
    assert_ne!(c1.fsid().unwrap(), c2.fsid().unwrap(), "two different clusters");
    let src = ScratchImage::new(&c1, "volumes", "xfer-src", 20 * MIB);
    build_history(&src.open());
    let ours = ScratchImage::new(&c2, "backups", "xfer-ours", MIB);
    let theirs = ScratchImage::new(&c2, "backups", "xfer-cli", MIB);
    let dst = ours.open();

    for (from, to) in [(None, Some("s1")), (Some("s1"), Some("s2")), (Some("s2"), None)] {
        let end = open_end(&src.pool, &src.name, to);
        let mut last = (0, 0);
        let mut cb = |d: u64, t: u64| {
            last = (d, t);
            ControlFlow::Continue(())
        };
        let stats = Transfer::new(&end, &dst)
            .from_snap(from)
            .in_flight(8)
            .max_io(256 * KIB as usize)
            .run(&mut Progress::new(&mut cb))
            .unwrap();
        assert_eq!(last.0, last.1, "progress reaches the total");
        assert!(stats.extents > 0);
        assert!(stats.bytes_written <= stats.bytes_read);
        cli_pipe(&spec(&src.pool, &src.name, to), from, &spec(&theirs.pool, &theirs.name, None));
        let want = sha_at(&src.pool, &src.name, to);
        assert_eq!(sha_at(&ours.pool, &ours.name, to), want, "ours at {to:?}");
        assert_eq!(sha_at(&theirs.pool, &theirs.name, to), want, "cli at {to:?}");
    }
    assert_eq!(snaps(&ours.pool, &ours.name), snaps(&theirs.pool, &theirs.name));
    assert_eq!(snaps(&ours.pool, &ours.name), vec![("s1".to_string(), false), ("s2".to_string(), false)]);
    assert_eq!(sha_at(&ours.pool, &ours.name, None), sha_at(&theirs.pool, &theirs.name, None));
}

#[test]
fn incremental_transfer_moves_about_the_changed_bytes() {
    let c1 = live!();
    let c2 = live2!();
    const SIZE: u64 = 256 * MIB;
    let src = ScratchImage::new(&c1, "volumes", "xfer-incr", SIZE);
    let img = src.open();
    // Base: the first MiB of every object.
    for obj in 0..SIZE / (4 * MIB) {
        img.write(obj * 4 * MIB, &common::pattern(100 + obj, MIB as usize)).unwrap();
    }
    img.snap_create("s1").unwrap();
    let dst_img = ScratchImage::new(&c2, "backups", "xfer-incr-dst", MIB);
    let dst = dst_img.open();
    let full = Transfer::new(&open_end(&src.pool, &src.name, Some("s1")), &dst)
        .dst_is_zero(true)
        .run(&mut Progress::none())
        .unwrap();
    assert_eq!(full.bytes_written, 64 * MIB);
    assert_eq!(full.bytes_zeroed, 0);

    // 8 MiB changed: 128 distinct 64 KiB writes at pseudo-random 64 KiB-aligned offsets.
    let slots = SIZE / (64 * KIB);
    let mut chosen = std::collections::BTreeSet::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while chosen.len() < 128 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chosen.insert(x % slots);
    }
    for (i, slot) in chosen.iter().enumerate() {
        img.write(slot * 64 * KIB, &common::pattern(1000 + i as u64, 64 * KIB as usize)).unwrap();
    }
    img.snap_create("s2").unwrap();
    let changed = 8 * MIB;

    let incr = Transfer::new(&open_end(&src.pool, &src.name, Some("s2")), &dst)
        .from_snap(Some("s1"))
        .run(&mut Progress::none())
        .unwrap();
    let moved = incr.bytes_written + incr.bytes_zeroed;
    eprintln!("incremental transfer of {changed} changed bytes: {incr:?}");
    assert!(moved >= changed && moved <= 2 * changed, "moved {moved} bytes for {changed} changed (stats {incr:?})");
    // Hole-aware comparison (256 MiB, mostly unallocated).
    for snap in ["s1", "s2"] {
        assert_eq!(sparse_sha(&dst_img.pool, &dst_img.name, snap), sparse_sha(&src.pool, &src.name, snap), "{snap}");
    }
    assert_eq!(snaps(&dst_img.pool, &dst_img.name), vec![("s1".to_string(), false), ("s2".to_string(), false)]);
}

#[test]
fn transfer_checks_come_before_any_change() {
    let c1 = live!();
    let c2 = live2!();
    let src = ScratchImage::new(&c1, "volumes", "xfer-chk", 20 * MIB);
    build_history(&src.open());
    let at_s2 = open_end(&src.pool, &src.name, Some("s2"));
    let d = ScratchImage::new(&c2, "backups", "xfer-chk-dst", 8 * MIB);
    let dst = d.open();
    dst.write(0, &common::pattern(5, 8192)).unwrap();
    let before = sha_at(&d.pool, &d.name, None);

    let e = Transfer::new(&at_s2, &dst).from_snap(Some("s1")).run(&mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("destination"), "{e}");

    let e = Transfer::new(&at_s2, &dst).from_snap(Some("nope")).run(&mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("source"), "{e}");

    dst.snap_create("s2").unwrap();
    let e = Transfer::new(&at_s2, &dst).run(&mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    dst.snap_remove("s2").unwrap();

    let ro = Image::open_read_only(&d.pool, &d.name).unwrap();
    let e = Transfer::new(&at_s2, &ro).run(&mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    let same = src.open();
    let e = Transfer::new(&at_s2, &same).to_snap(None).run(&mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    assert_eq!(sha_at(&d.pool, &d.name, None), before, "nothing changed");
    assert_eq!(dst.size().unwrap(), 8 * MIB);
    assert!(snaps(&d.pool, &d.name).is_empty());
}

#[test]
fn cancelled_transfer_creates_no_snapshot_and_can_be_rerun() {
    let c1 = live!();
    let c2 = live2!();
    let src = ScratchImage::new(&c1, "volumes", "xfer-cancel", 20 * MIB);
    build_history(&src.open());
    let d = ScratchImage::new(&c2, "backups", "xfer-cancel-dst", MIB);
    let dst = d.open();
    Transfer::new(&open_end(&src.pool, &src.name, Some("s1")), &dst).run(&mut Progress::none()).unwrap();
    let at_s1 = sha_at(&d.pool, &d.name, Some("s1"));

    let at_s2 = open_end(&src.pool, &src.name, Some("s2"));
    let mut calls = 0;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        if calls >= 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let e = Transfer::new(&at_s2, &dst)
        .from_snap(Some("s1"))
        .max_io(16 * KIB as usize)
        .in_flight(2)
        .run(&mut Progress::new(&mut cb))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!(snaps(&d.pool, &d.name), vec![("s1".to_string(), false)], "no s2 after a cancel");

    // Back to s1, then the same transfer completes.
    rollback_to_from_snap(&dst, "s1", &mut Progress::none()).unwrap();
    assert_eq!(sha_at(&d.pool, &d.name, None), at_s1);
    Transfer::new(&at_s2, &dst).from_snap(Some("s1")).run(&mut Progress::none()).unwrap();
    assert_eq!(sha_at(&d.pool, &d.name, Some("s2")), sha_at(&src.pool, &src.name, Some("s2")));

    // A cancel token works too (checked before anything is written).
    let token = rbd_core::CancelToken::new();
    token.cancel();
    let head = open_end(&src.pool, &src.name, None);
    let e = Transfer::new(&head, &dst).from_snap(Some("s2")).run(&mut Progress::none().with_cancel(token)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
}

#[test]
fn transfer_follows_shrink_and_grow_within_one_cluster() {
    let c1 = live!();
    let src = ScratchImage::new(&c1, "volumes", "xfer-resize", 16 * MIB);
    let img = src.open();
    img.write(0, &common::pattern(1, 4 * MIB as usize)).unwrap();
    img.write(12 * MIB, &common::pattern(2, 4 * MIB as usize)).unwrap();
    img.snap_create("s1").unwrap();
    img.resize(10 * MIB, true).unwrap();
    img.snap_create("s2").unwrap();
    img.resize(30 * MIB, false).unwrap();
    img.write(29 * MIB, &common::pattern(3, MIB as usize)).unwrap();
    img.snap_create("s3").unwrap();

    let d = ScratchImage::new(&c1, "backups", "xfer-resize-dst", 64 * MIB);
    let dst = d.open();
    let mut prev: Option<&str> = None;
    for s in ["s1", "s2", "s3"] {
        Transfer::new(&open_end(&src.pool, &src.name, Some(s)), &dst)
            .from_snap(prev)
            .run(&mut Progress::none())
            .unwrap();
        assert_eq!(sha_at(&d.pool, &d.name, Some(s)), sha_at(&src.pool, &src.name, Some(s)), "{s}");
        prev = Some(s);
    }
    assert_eq!(dst.size().unwrap(), 30 * MIB);
}

#[test]
fn transfer_of_a_clone_includes_the_parent_data() {
    let c1 = live!();
    let c2 = live2!();
    let parent = ScratchImage::new(&c1, "images", "xfer-parent", 12 * MIB);
    let p = parent.open();
    p.write(0, &common::pattern(1, 3 * MIB as usize)).unwrap();
    p.write(8 * MIB, &common::pattern(2, MIB as usize)).unwrap();
    p.snap_create("snap").unwrap();
    p.snap_protect("snap").unwrap();
    let vols = Pool::open(&c1, "volumes").unwrap();
    let child = unique("xfer-child");
    clone_image(&parent.pool, &parent.name, "snap", &vols, &child, &ImageOptions::new()).unwrap();
    let _child_guard = ChildGuard(vols.clone(), child.clone());
    let ch = Image::open(&vols, &child).unwrap();
    ch.write(MIB, &common::pattern(3, 64 * KIB as usize)).unwrap();
    ch.snap_create("c1").unwrap();

    let d = ScratchImage::new(&c2, "backups", "xfer-child-dst", MIB);
    let dst = d.open();
    let stats = Transfer::new(&open_end(&vols, &child, Some("c1")), &dst).run(&mut Progress::none()).unwrap();
    assert!(stats.bytes_written >= 4 * MIB, "parent data travels: {stats:?}");
    assert_eq!(sha_at(&d.pool, &d.name, Some("c1")), sha_at(&vols, &child, Some("c1")));
}

/// Removes the clone before the parent's ScratchImage guard runs.
struct ChildGuard(Pool, String);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        common::purge_image(&self.0, &self.1);
    }
}
