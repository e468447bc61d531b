//! Cinder volume recipes against the live cluster: the end state of each of the seed's `rbd`
//! sequences (names, parent links, snapshot protection, sizes, data), an injected failure at
//! every step boundary (undone, or for deletes: finished by a re-run), clone-depth bounds over a
//! chain of 7 volumes deleted in several orders, and pool capacity.
//!
//! Failpoints are process-wide, so every test here holds `LOCK` while it runs recipes.
mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard};

use common::pattern;
use rbd_core::recipes::cinder::{
    self, clone_snap_name, volume_name, ChildrenPolicy, DeleteOutcome, DeleteSnapshot, DeleteVolume, DepthRule,
    ImageSnapRef, VolumeFromImage, VolumeFromSnapshot, VolumeFromVolume,
};
use rbd_core::recipes::failpoint::{self, Action};
use rbd_core::recipes::location::Location;
use rbd_core::{CloneFormat, Cluster, ErrorKind, Image, ImageOptions, Pool, Progress, SnapNamespace};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn none() -> Progress<'static> {
    Progress::none()
}

/// Removes every image (and trash entry) whose name contains `tag`, children first.
struct Cleanup {
    pools: Vec<Pool>,
    tag: String,
}

impl Cleanup {
    fn new(pools: &[&Pool], tag: &str) -> Cleanup {
        Cleanup { pools: pools.iter().map(|p| (*p).clone()).collect(), tag: tag.to_string() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        failpoint::clear_all();
        for _ in 0..16 {
            let mut left = 0;
            for pool in &self.pools {
                for e in pool.trash_list().unwrap_or_default() {
                    if e.name.contains(&self.tag) && pool.trash_remove(&e.id, true).is_err() {
                        // Snapshots keep it from being removed: restore, then purge below.
                        let _ = pool.trash_restore(&e.id, &e.name);
                    }
                }
                for (k, _) in pool.pool_metadata_list().unwrap_or_default() {
                    if k.contains(&self.tag) {
                        let _ = pool.pool_metadata_remove(&k);
                    }
                }
                for name in pool.image_names().unwrap_or_default() {
                    if name.contains(&self.tag) {
                        common::purge_image(pool, &name);
                        left += 1;
                    }
                }
            }
            if left == 0 {
                break;
            }
        }
    }
}

/// What a test can observe about one image.
#[derive(Debug, Clone, PartialEq)]
struct ImgState {
    size: u64,
    parent: Option<String>,
    /// (name, namespace, protected)
    snaps: Vec<(String, SnapNamespace, Option<bool>)>,
}

/// Images (and trash entries) whose names contain `tag`, keyed `pool/name`.
fn state(pools: &[&Pool], tag: &str) -> BTreeMap<String, Option<ImgState>> {
    let mut m = BTreeMap::new();
    for pool in pools {
        for name in pool.image_names().unwrap() {
            if !name.contains(tag) {
                continue;
            }
            let img = Image::open_read_only(pool, &name).unwrap();
            let parent = img.parent().unwrap().map(|p| format!("{}/{}@{}", p.pool, p.image, p.snap));
            let snaps = img.snapshots().unwrap().into_iter().map(|s| (s.name, s.namespace, s.protected)).collect();
            m.insert(format!("{}/{name}", pool.name()), Some(ImgState { size: img.size().unwrap(), parent, snaps }));
        }
        for e in pool.trash_list().unwrap() {
            if e.name.contains(tag) {
                m.insert(format!("{}/trash:{}", pool.name(), e.name), None);
            }
        }
        for (k, _) in pool.pool_metadata_list().unwrap() {
            if k.contains(tag) {
                m.insert(format!("{}/metadata:{k}", pool.name()), None);
            }
        }
    }
    m
}

fn sha(img: &Image, off: u64, len: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut pos = off;
    while pos < off + len {
        let n = (4 * MIB).min(off + len - pos) as usize;
        h.update(img.read_vec(pos, n).unwrap());
        pos += n as u64;
    }
    h.finalize().to_vec()
}

fn zeros_sha(len: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    let z = vec![0u8; MIB as usize];
    for _ in 0..len / MIB {
        h.update(&z);
    }
    h.finalize().to_vec()
}

fn open(pool: &Pool, id: &str) -> Image {
    Image::open(pool, &volume_name(id)).unwrap()
}

fn snaps_of(pool: &Pool, id: &str) -> Vec<String> {
    open(pool, id).snapshots().unwrap().into_iter().map(|s| s.name).collect()
}

/// Arms `<recipe>.<step>` for each step, runs `run`, and checks that it failed at that step
/// and left the tagged images exactly as before.
fn sweep_undone(
    recipe: &str,
    steps: &[&str],
    pools: &[&Pool],
    tag: &str,
    mut run: impl FnMut() -> rbd_core::Result<()>,
) {
    for step in steps {
        let before = state(pools, tag);
        let fp = format!("{recipe}.{step}");
        failpoint::set(&fp, Action::Error);
        let r = run();
        failpoint::clear(&fp);
        let e = match r {
            Ok(()) => panic!("{fp}: the recipe did not reach this step"),
            Err(e) => e,
        };
        assert!(e.to_string().contains(&format!("injected failure at {fp}")), "{fp}: {e}");
        assert_eq!(e.recipe_step().map(|(r, s)| format!("{r}.{s}")).as_deref(), Some(fp.as_str()));
        assert!(e.undo_errors().is_empty(), "{fp}: undo errors {:?}", e.undo_errors());
        assert_eq!(state(pools, tag), before, "{fp} left changes behind");
    }
}

fn write_pattern(img: &Image, seed: u64, off: u64, len: u64) -> Vec<u8> {
    let data = pattern(seed, len as usize);
    img.write(off, &data).unwrap();
    img.flush().unwrap();
    data
}

fn pools(c: &Cluster) -> (Pool, Pool) {
    (Pool::open(c, "volumes").unwrap(), Pool::open(c, "images").unwrap())
}

#[test]
fn create_blank_volume() {
    let c = live!();
    let _l = lock();
    let (vols, _) = pools(&c);
    let tag = common::unique("cblank");
    let _g = Cleanup::new(&[&vols], &tag);
    let id = format!("{tag}-a");

    let v = cinder::create(&vols, &id, 64 * MIB).unwrap();
    assert_eq!(v.name, format!("volume-{id}"));
    assert_eq!((v.size, v.parent.clone(), v.depth, v.flattened), (64 * MIB, None, 0, false));
    let img = open(&vols, &id);
    assert_eq!(img.stat().unwrap().order, 22, "Cinder's 4 MiB objects");
    assert!(img.snapshots().unwrap().is_empty());
    assert_eq!(sha(&img, 0, 64 * MIB), zeros_sha(64 * MIB));
    drop(img);

    assert_eq!(cinder::create(&vols, &id, MIB).unwrap_err().kind(), ErrorKind::Exists);
    let before = state(&[&vols], &tag);
    for (bad_id, size) in [("a/b", MIB), ("x@y", MIB), ("", MIB), (id.as_str(), 0)] {
        let e = cinder::create(&vols, bad_id, size).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad_id:?}/{size}: {e}");
    }
    assert_eq!(state(&[&vols], &tag), before);

    let id2 = format!("{tag}-b");
    sweep_undone("cinder.create", &["create", "describe", "commit"], &[&vols], &tag, || {
        cinder::create(&vols, &id2, 8 * MIB).map(drop)
    });
    assert_eq!(cinder::delete_volume(&vols, &id).unwrap(), DeleteOutcome::Removed);
    assert!(state(&[&vols], &tag).is_empty());
}

#[test]
fn snapshots_and_volumes_from_snapshots() {
    let c = live!();
    let _l = lock();
    let (vols, _) = pools(&c);
    let tag = common::unique("csnap");
    let _g = Cleanup::new(&[&vols], &tag);
    let (a, b, c2) = (format!("{tag}-a"), format!("{tag}-b"), format!("{tag}-c"));

    cinder::create(&vols, &a, 32 * MIB).unwrap();
    let img_a = open(&vols, &a);
    write_pattern(&img_a, 1, 0, MIB);
    write_pattern(&img_a, 2, 20 * MIB, MIB);
    let a_sha = sha(&img_a, 0, 32 * MIB);

    // rbd snap create + rbd snap protect
    let s = cinder::create_snapshot(&vols, &a, "s1").unwrap();
    assert_eq!(
        (s.name.as_str(), s.volume.clone(), s.size, s.protected),
        ("snapshot-s1", volume_name(&a), 32 * MIB, true)
    );
    assert!(img_a.snap_is_protected("snapshot-s1").unwrap());
    assert_eq!(cinder::create_snapshot(&vols, &a, "s1").unwrap_err().kind(), ErrorKind::Exists);
    write_pattern(&img_a, 3, 0, MIB); // the head moves on; clones see the snapshot

    // rbd clone volumes/volume-A@snapshot-s1 volumes/volume-B; rbd resize --size 48M
    let vb = cinder::create_from_snapshot(&vols, &a, "s1", &b, 48 * MIB, false).unwrap();
    assert_eq!(vb.parent.as_deref(), Some(format!("volumes/volume-{a}@snapshot-s1").as_str()));
    assert_eq!((vb.size, vb.depth, vb.flattened), (48 * MIB, 1, false));
    let img_b = open(&vols, &b);
    assert_eq!(sha(&img_b, 0, 32 * MIB), a_sha);
    assert_eq!(sha(&img_b, 32 * MIB, 16 * MIB), zeros_sha(16 * MIB));

    // Too small: refused before anything changes.
    let before = state(&[&vols], &tag);
    let e = cinder::create_from_snapshot(&vols, &a, "s1", &c2, 16 * MIB, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = cinder::create_from_snapshot(&vols, &a, "nope", &c2, 32 * MIB, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(state(&[&vols], &tag), before);

    // With rbd_flatten_volume_from_snapshot: no parent.
    let vc = cinder::create_from_snapshot(&vols, &a, "s1", &c2, 32 * MIB, true).unwrap();
    assert_eq!((vc.parent.clone(), vc.depth, vc.flattened), (None, 0, true));
    assert_eq!(sha(&open(&vols, &c2), 0, 32 * MIB), a_sha);

    // Refuse: Busy, nothing changed.
    let before = state(&[&vols], &tag);
    let e = cinder::delete_snapshot(&vols, &a, "s1", ChildrenPolicy::Refuse).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert_eq!(state(&[&vols], &tag), before);

    // Flatten: children flattened, snapshot gone, data intact.
    let d = cinder::delete_snapshot(&vols, &a, "s1", ChildrenPolicy::Flatten).unwrap();
    assert!(d.removed);
    assert_eq!(d.flattened_children, vec![format!("volumes/volume-{b}")]);
    assert!(img_b.parent().unwrap().is_none());
    assert_eq!(sha(&img_b, 0, 32 * MIB), a_sha);
    assert!(!img_a.snap_exists("snapshot-s1").unwrap());
    assert!(!cinder::delete_snapshot(&vols, &a, "s1", ChildrenPolicy::Refuse).unwrap().removed, "already gone");
    drop((img_a, img_b));

    // Failure at each step of create_snapshot and create_from_snapshot: undone.
    sweep_undone(
        "cinder.create_snapshot",
        &["inspect", "snapshot", "protect", "describe", "commit"],
        &[&vols],
        &tag,
        || cinder::create_snapshot(&vols, &a, "s2").map(drop),
    );
    cinder::create_snapshot(&vols, &a, "s2").unwrap();
    let d_id = format!("{tag}-d");
    sweep_undone(
        "cinder.create_from_snapshot",
        &["inspect", "clone", "flatten", "resize", "describe", "commit"],
        &[&vols],
        &tag,
        || VolumeFromSnapshot::new(&a, "s2", &d_id, 40 * MIB).flatten(true).run(&vols, &mut none()).map(drop),
    );
    // v1 from the protected snapshot works too.
    let vd = VolumeFromSnapshot::new(&a, "s2", &d_id, 40 * MIB).clone_format(CloneFormat::V1).run(&vols, &mut none());
    assert_eq!(vd.unwrap().parent.as_deref(), Some(format!("volumes/volume-{a}@snapshot-s2").as_str()));

    // delete_snapshot with children, failing at each step.
    for step in ["inspect", "flatten_children"] {
        let before = state(&[&vols], &tag);
        let fp = format!("cinder.delete_snapshot.{step}");
        failpoint::set(&fp, Action::Error);
        let e = cinder::delete_snapshot(&vols, &a, "s2", ChildrenPolicy::Flatten).unwrap_err();
        failpoint::clear(&fp);
        assert!(e.to_string().contains(&fp), "{e}");
        assert_eq!(state(&[&vols], &tag), before, "{fp}");
    }
    for step in ["unprotect", "remove"] {
        let fp = format!("cinder.delete_snapshot.{step}");
        failpoint::set(&fp, Action::Error);
        let e = cinder::delete_snapshot(&vols, &a, "s2", ChildrenPolicy::Flatten).unwrap_err();
        failpoint::clear(&fp);
        assert!(e.to_string().contains(&fp), "{e}");
        // Flattening is one-way; the snapshot itself is kept, protected.
        assert!(open(&vols, &d_id).parent().unwrap().is_none(), "{fp}");
        assert!(open(&vols, &a).snap_is_protected("snapshot-s2").unwrap(), "{fp}");
    }
    assert!(cinder::delete_snapshot(&vols, &a, "s2", ChildrenPolicy::Refuse).unwrap().removed);
    cinder::create_snapshot(&vols, &a, "s3").unwrap();
    sweep_undone("cinder.delete_snapshot", &["inspect", "unprotect", "remove"], &[&vols], &tag, || {
        DeleteSnapshot::new(&a, "s3").on_children(ChildrenPolicy::Refuse).run(&vols, &mut none()).map(drop)
    });
    failpoint::set("cinder.delete_snapshot.commit", Action::Error);
    assert!(cinder::delete_snapshot(&vols, &a, "s3", ChildrenPolicy::Refuse).is_err());
    failpoint::clear("cinder.delete_snapshot.commit");
    assert!(!snaps_of(&vols, &a).contains(&"snapshot-s3".to_string()), "a removed snapshot cannot come back");

    for id in [&b, &c2, &d_id, &a] {
        assert_eq!(cinder::delete_volume(&vols, id).unwrap(), DeleteOutcome::Removed, "{id}");
    }
    assert!(state(&[&vols], &tag).is_empty());
}

#[test]
fn volume_from_glance_image_across_pools() {
    let c = live!();
    let _l = lock();
    let (vols, images) = pools(&c);
    let tag = common::unique("cimg");
    let _g = Cleanup::new(&[&vols, &images], &tag);
    // A "Glance image" by hand: images/<id> (8 MiB objects), data, snapshot `snap`, protected.
    let image_id = format!("{tag}-glance");
    images.create_image(&image_id, 16 * MIB, ImageOptions::new().order(23)).unwrap();
    let gimg = Image::open(&images, &image_id).unwrap();
    write_pattern(&gimg, 7, 0, 3 * MIB);
    write_pattern(&gimg, 8, 12 * MIB, MIB);
    let img_sha = sha(&gimg, 0, 16 * MIB);
    gimg.snap_create("snap").unwrap();
    gimg.snap_protect("snap").unwrap();
    drop(gimg);
    let fsid = c.fsid().unwrap();
    let loc = Location::new(&fsid, "images", &image_id, "snap");
    let id = format!("{tag}-v");

    // rbd clone images/<id>@snap volumes/volume-<id>; rbd resize --size 32M
    let v = cinder::create_from_image(&vols, &loc, &id, 32 * MIB).unwrap();
    assert_eq!(v.parent.as_deref(), Some(format!("images/{image_id}@snap").as_str()));
    assert_eq!((v.size, v.depth), (32 * MIB, 1));
    let vimg = open(&vols, &id);
    assert_eq!(vimg.stat().unwrap().order, 23, "object size raised to the image's stripe unit");
    assert_eq!(sha(&vimg, 0, 16 * MIB), img_sha);
    assert_eq!(sha(&vimg, 16 * MIB, 16 * MIB), zeros_sha(16 * MIB));
    drop(vimg);

    // Bad locations: refused before anything changes.
    let before = state(&[&vols, &images], &tag);
    let other = Location::new("00000000-0000-0000-0000-000000000000", "images", &image_id, "snap");
    let id2 = format!("{tag}-w");
    for (l, kind) in [
        (other, ErrorKind::InvalidArgument),
        (Location::legacy(&image_id), ErrorKind::InvalidArgument),
        (Location::new(&fsid, "images", &format!("{tag}-missing"), "snap"), ErrorKind::NotFound),
    ] {
        assert_eq!(cinder::create_from_image(&vols, &l, &id2, 32 * MIB).unwrap_err().kind(), kind, "{l}");
    }
    assert_eq!(cinder::create_from_image(&vols, &loc, &id2, 8 * MIB).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(state(&[&vols, &images], &tag), before);

    let src = ImageSnapRef::from_location(&loc).unwrap();
    sweep_undone(
        "cinder.create_from_image",
        &["inspect", "clone", "resize", "describe", "commit"],
        &[&vols, &images],
        &tag,
        || VolumeFromImage::new(src.clone(), &id2, 24 * MIB).clone_format(CloneFormat::V1).run(&vols).map(drop),
    );

    // Deleting the volume leaves Glance's snapshot alone (it is not a .clone_snap).
    assert_eq!(cinder::delete_volume(&vols, &id).unwrap(), DeleteOutcome::Removed);
    let g = Image::open(&images, &image_id).unwrap();
    assert!(g.snap_is_protected("snap").unwrap());
    assert!(g.children().unwrap().is_empty());
}

#[test]
fn volumes_from_volumes() {
    let c = live!();
    let _l = lock();
    let (vols, _) = pools(&c);
    let tag = common::unique("cvol");
    let _g = Cleanup::new(&[&vols], &tag);
    let id = |s: &str| format!("{tag}-{s}");
    let (a, b, c1, d, e) = (id("a"), id("b"), id("c"), id("d"), id("e"));

    cinder::create(&vols, &a, 16 * MIB).unwrap();
    let a_data_sha = {
        let img = open(&vols, &a);
        write_pattern(&img, 11, 0, 2 * MIB);
        write_pattern(&img, 12, 9 * MIB, MIB);
        sha(&img, 0, 16 * MIB)
    };

    // v2: snapshot <dst>.clone_snap on the source (not protected), clone.
    let vb = cinder::create_from_volume(&vols, &a, &b, 24 * MIB, 5).unwrap();
    assert_eq!(vb.parent.as_deref(), Some(format!("volumes/volume-{a}@volume-{b}.clone_snap").as_str()));
    assert_eq!((vb.size, vb.depth, vb.flattened), (24 * MIB, 1, false));
    let a_img = open(&vols, &a);
    assert!(!a_img.snap_is_protected(&clone_snap_name(&volume_name(&b))).unwrap(), "v2: no protection");
    assert_eq!(sha(&open(&vols, &b), 0, 16 * MIB), a_data_sha);
    assert_eq!(sha(&open(&vols, &b), 16 * MIB, 8 * MIB), zeros_sha(8 * MIB));

    // v1: the clone snapshot is protected.
    let vc = VolumeFromVolume::new(&a, &c1, 16 * MIB).clone_format(CloneFormat::V1).run(&vols, &mut none()).unwrap();
    assert_eq!(vc.parent.as_deref(), Some(format!("volumes/volume-{a}@volume-{c1}.clone_snap").as_str()));
    assert!(a_img.snap_is_protected(&format!("volume-{c1}.clone_snap")).unwrap());

    // max_clone_depth = 0: a full copy, no snapshot, no parent.
    let vd = cinder::create_from_volume(&vols, &a, &d, 16 * MIB, 0).unwrap();
    assert_eq!((vd.parent.clone(), vd.depth), (None, 0));
    assert!(!a_img.snap_exists(&format!("volume-{d}.clone_snap")).unwrap());
    assert_eq!(sha(&open(&vols, &d), 0, 16 * MIB), a_data_sha);
    drop(a_img);

    // Bad input: nothing changes.
    let before = state(&[&vols], &tag);
    let bad = [
        cinder::create_from_volume(&vols, &a, &e, 8 * MIB, 5).unwrap_err(),
        cinder::create_from_volume(&vols, &a, &a, 16 * MIB, 5).unwrap_err(),
        cinder::create_from_volume(&vols, &a, "x/y", 16 * MIB, 5).unwrap_err(),
    ];
    assert!(bad.iter().all(|e| e.kind() == ErrorKind::InvalidArgument), "{bad:?}");
    assert_eq!(
        cinder::create_from_volume(&vols, &id("nope"), &e, 16 * MIB, 5).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(cinder::create_from_volume(&vols, &a, &b, 16 * MIB, 5).unwrap_err().kind(), ErrorKind::Exists);
    assert_eq!(state(&[&vols], &tag), before);

    // Too deep (b is at depth 1, max 1): clone, flatten, drop the clone snapshot. Every step
    // boundary undoes (v1, so protect/unprotect are on the path).
    let mk = || {
        VolumeFromVolume::new(&b, &e, 24 * MIB).max_clone_depth(1).clone_format(CloneFormat::V1).run(&vols, &mut none())
    };
    let steps = [
        "inspect",
        "snapshot",
        "protect",
        "clone",
        "depth",
        "flatten",
        "drop_clone_snap",
        "resize",
        "describe",
        "commit",
    ];
    sweep_undone("cinder.create_from_volume", &steps, &[&vols], &tag, || mk().map(drop));
    let ve = mk().unwrap();
    assert_eq!((ve.parent.clone(), ve.depth, ve.flattened), (None, 0, true));
    assert!(!snaps_of(&vols, &b).contains(&format!("volume-{e}.clone_snap")), "temporary snapshot removed");
    assert_eq!(sha(&open(&vols, &e), 0, 16 * MIB), a_data_sha);

    // The copy path, failing at each step.
    let f = id("f");
    sweep_undone(
        "cinder.create_from_volume",
        &["inspect", "copy", "resize", "describe", "commit"],
        &[&vols],
        &tag,
        || cinder::create_from_volume(&vols, &a, &f, 20 * MIB, 0).map(drop),
    );

    // Cancelling the copy or the depth flatten undoes like a failure.
    let before = state(&[&vols], &tag);
    let mut stop = |_: u64, _: u64| ControlFlow::Break(());
    let r = VolumeFromVolume::new(&a, &f, 16 * MIB).max_clone_depth(0).run(&vols, &mut Progress::new(&mut stop));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
    let r = VolumeFromVolume::new(&b, &f, 24 * MIB).max_clone_depth(1).run(&vols, &mut Progress::new(&mut stop));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
    assert_eq!(state(&[&vols], &tag), before);

    // Depth rules: g is a clone of b's snapshot (a <- b <- g); h from g with max depth 2.
    cinder::create_snapshot(&vols, &b, "sb").unwrap();
    let g = id("g");
    assert_eq!(cinder::create_from_snapshot(&vols, &b, "sb", &g, 24 * MIB, false).unwrap().depth, 2);
    let h = id("h");
    let vh = VolumeFromVolume::new(&g, &h, 24 * MIB)
        .max_clone_depth(2)
        .depth_rule(DepthRule::CinderCloneSnapOnly)
        .run(&vols, &mut none())
        .unwrap();
    assert!(!vh.flattened, "Cinder's rule counts only .clone_snap parents");
    let h_img = open(&vols, &h);
    assert_eq!(cinder::clone_depth(&h_img, DepthRule::CinderCloneSnapOnly).unwrap(), 1);
    assert_eq!(cinder::clone_depth(&h_img, DepthRule::AllAncestors).unwrap(), 3);
    drop(h_img);
    let i = id("i");
    let vi = cinder::create_from_volume(&vols, &g, &i, 24 * MIB, 2).unwrap();
    assert!(vi.flattened && vi.parent.is_none(), "all ancestors count by default: {vi:?}");
    assert!(!snaps_of(&vols, &g).contains(&format!("volume-{i}.clone_snap")));

    cinder::delete_snapshot(&vols, &b, "sb", ChildrenPolicy::Flatten).unwrap();
    for v in [&i, &h, &g, &e, &d, &c1, &b, &a] {
        assert_eq!(cinder::delete_volume(&vols, v).unwrap(), DeleteOutcome::Removed, "{v}");
    }
    assert!(state(&[&vols], &tag).is_empty());
}

/// Checks the invariants that must hold between deletes: no `.clone_snap` and no `.deleted`
/// image without clone children; every live volume still has the chain's data.
fn check_chain_invariants(vols: &Pool, tag: &str, data_sha: &[u8], data_len: u64) {
    for name in vols.image_names().unwrap().into_iter().filter(|n| n.contains(tag)) {
        let img = Image::open(vols, &name).unwrap();
        for s in img.snapshots().unwrap() {
            if s.namespace == SnapNamespace::User && s.name.ends_with(".clone_snap") {
                assert!(!img.children_of_snap(&s.name).unwrap().is_empty(), "orphaned {name}@{}", s.name);
            }
        }
        if name.ends_with(".deleted") {
            assert!(!img.children().unwrap().is_empty(), "{name} has no children but was kept");
        } else {
            assert_eq!(sha(&img, 0, data_len), data_sha, "{name} data");
        }
    }
}

fn chain_then_delete(vols: &Pool, order: &[usize], keep_children_as_clones: bool) {
    let tag = common::unique(if keep_children_as_clones { "cchain-keep" } else { "cchain" });
    let _g = Cleanup::new(&[vols], &tag);
    let ids: Vec<String> = (0..7).map(|i| format!("{tag}-{i}")).collect();
    cinder::create(vols, &ids[0], 8 * MIB).unwrap();
    let data_sha = {
        let img = open(vols, &ids[0]);
        write_pattern(&img, 21, 0, MIB);
        write_pattern(&img, 22, 5 * MIB, MIB);
        sha(&img, 0, 8 * MIB)
    };
    let mut depths = Vec::new();
    for i in 1..7 {
        let v = cinder::create_from_volume(vols, &ids[i - 1], &ids[i], 8 * MIB, 5).unwrap();
        let d = open(vols, &ids[i]).clone_depth().unwrap();
        assert!(d <= 5, "volume {i} at depth {d}");
        assert_eq!(d, v.depth);
        depths.push(d);
        assert_eq!(sha(&open(vols, &ids[i]), 0, 8 * MIB), data_sha);
    }
    assert_eq!(depths, vec![1, 2, 3, 4, 5, 0], "the 6th clone is flattened");

    for &i in order {
        let del = DeleteVolume::new(&ids[i]).keep_children_as_clones(keep_children_as_clones).run(vols, &mut none());
        let del = del.unwrap_or_else(|e| panic!("delete {i}: {e}"));
        assert_ne!(del.outcome, DeleteOutcome::NotFound, "{i}");
        assert_ne!(del.outcome, DeleteOutcome::Trashed, "{i}");
        if !keep_children_as_clones {
            assert_eq!(del.outcome, DeleteOutcome::Removed, "{i}");
        }
        check_chain_invariants(vols, &tag, &data_sha, 8 * MIB);
    }
    let left: Vec<String> = vols.image_names().unwrap().into_iter().filter(|n| n.contains(&tag)).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(vols.trash_list().unwrap().iter().all(|e| !e.name.contains(&tag)), "nothing in the trash");
}

#[test]
fn clone_chain_of_seven_respects_depth_and_deletes_in_any_order() {
    let c = live!();
    let _l = lock();
    let (vols, _) = pools(&c);
    let oldest_first = [0, 1, 2, 3, 4, 5, 6];
    let shuffled = [3, 0, 5, 1, 6, 2, 4];
    let newest_first = [6, 5, 4, 3, 2, 1, 0];
    for keep in [false, true] {
        for order in [&oldest_first[..], &shuffled[..], &newest_first[..]] {
            chain_then_delete(&vols, order, keep);
        }
    }
}

#[test]
fn delete_volume_paths() {
    let c = live!();
    let _l = lock();
    let (vols, _) = pools(&c);
    let tag = common::unique("cdel");
    let _g = Cleanup::new(&[&vols], &tag);
    let id = |s: &str| format!("{tag}-{s}");

    assert_eq!(cinder::delete_volume(&vols, &id("missing")).unwrap(), DeleteOutcome::NotFound);

    // Backup snapshots go with the volume.
    cinder::create(&vols, &id("bk"), 8 * MIB).unwrap();
    open(&vols, &id("bk")).snap_create("backup.b1.snap.1511348180.27").unwrap();
    let d = DeleteVolume::new(&id("bk")).run(&vols, &mut none()).unwrap();
    assert_eq!(d.outcome, DeleteOutcome::Removed);
    assert_eq!(d.removed_snapshots, vec!["backup.b1.snap.1511348180.27".to_string()]);

    // A volume with a real snapshot is moved to the trash (Cinder's fallback).
    cinder::create(&vols, &id("tr"), 8 * MIB).unwrap();
    cinder::create_snapshot(&vols, &id("tr"), "keep").unwrap();
    let d = DeleteVolume::new(&id("tr")).run(&vols, &mut none()).unwrap();
    assert_eq!(d.outcome, DeleteOutcome::Trashed);
    let trashed = vols.trash_get(d.trash_id.as_deref().unwrap()).unwrap();
    assert_eq!(trashed.name, volume_name(&id("tr")));
    assert_eq!(vols.trash_remove(&trashed.id, true).unwrap_err().kind(), ErrorKind::HasSnapshots);
    vols.trash_restore(&trashed.id, &trashed.name).unwrap();
    cinder::delete_snapshot(&vols, &id("tr"), "keep", ChildrenPolicy::Refuse).unwrap();
    assert_eq!(cinder::delete_volume(&vols, &id("tr")).unwrap(), DeleteOutcome::Removed);

    // Deleting a clone removes its .clone_snap from the parent (v2 and v1).
    for fmt in [CloneFormat::V2, CloneFormat::V1] {
        let (p, ch) = (id(&format!("p{fmt:?}")), id(&format!("c{fmt:?}")));
        cinder::create(&vols, &p, 8 * MIB).unwrap();
        VolumeFromVolume::new(&p, &ch, 8 * MIB).clone_format(fmt).run(&vols, &mut none()).unwrap();
        let d = DeleteVolume::new(&ch).run(&vols, &mut none()).unwrap();
        assert_eq!(d.outcome, DeleteOutcome::Removed);
        assert_eq!(d.parent_snapshots_removed, vec![format!("volumes/volume-{p}@volume-{ch}.clone_snap")]);
        assert!(snaps_of(&vols, &p).is_empty(), "{fmt:?}");
        assert_eq!(cinder::delete_volume(&vols, &p).unwrap(), DeleteOutcome::Removed);
    }

    // A parent with a clone: flatten the child (default) ...
    let (p, ch) = (id("fp"), id("fc"));
    cinder::create(&vols, &p, 8 * MIB).unwrap();
    write_pattern(&open(&vols, &p), 5, 0, MIB);
    let psha2 = sha(&open(&vols, &p), 0, 8 * MIB);
    cinder::create_from_volume(&vols, &p, &ch, 8 * MIB, 5).unwrap();
    let d = DeleteVolume::new(&p).run(&vols, &mut none()).unwrap();
    assert_eq!(d.outcome, DeleteOutcome::Removed);
    assert_eq!(d.flattened_children, vec![format!("volumes/volume-{ch}")]);
    assert!(open(&vols, &ch).parent().unwrap().is_none());
    assert_eq!(sha(&open(&vols, &ch), 0, 8 * MIB), psha2);
    assert_eq!(cinder::delete_volume(&vols, &ch).unwrap(), DeleteOutcome::Removed);

    // ... or keep it a clone: rename to .deleted, collected with the last child.
    let (p, ch) = (id("kp"), id("kc"));
    cinder::create(&vols, &p, 8 * MIB).unwrap();
    cinder::create_from_volume(&vols, &p, &ch, 8 * MIB, 5).unwrap();
    let d = DeleteVolume::new(&p).keep_children_as_clones(true).run(&vols, &mut none()).unwrap();
    assert_eq!((d.outcome, d.name.clone()), (DeleteOutcome::RenamedDeleted, format!("volume-{p}.deleted")));
    assert_eq!(
        open(&vols, &ch).parent().unwrap().map(|p| format!("{}@{}", p.image, p.snap)),
        Some(format!("volume-{p}.deleted@volume-{ch}.clone_snap"))
    );
    assert_eq!(cinder::delete_volume(&vols, &p).unwrap(), DeleteOutcome::NotFound, "already deleted");
    let d = DeleteVolume::new(&ch).run(&vols, &mut none()).unwrap();
    assert_eq!(d.outcome, DeleteOutcome::Removed);
    assert_eq!(d.collected_parents, vec![format!("volumes/volume-{p}.deleted")]);
    assert!(state(&[&vols], &tag).is_empty(), "{:?}", state(&[&vols], &tag));

    // The rename path undoes at every step boundary (r <- p <- ch; delete p).
    let (r, p, ch) = (id("ur"), id("up"), id("uc"));
    cinder::create(&vols, &r, 8 * MIB).unwrap();
    cinder::create_from_volume(&vols, &r, &p, 8 * MIB, 5).unwrap();
    cinder::create_from_volume(&vols, &p, &ch, 8 * MIB, 5).unwrap();
    sweep_undone(
        "cinder.delete_volume",
        &[
            "inspect",
            "journal",
            "backup_snaps",
            "remove",
            "children",
            "drop_clone_snaps",
            "rename",
            "clear_journal",
            "commit",
        ],
        &[&vols],
        &tag,
        || DeleteVolume::new(&p).keep_children_as_clones(true).run(&vols, &mut none()).map(drop),
    );
    for v in [&p, &r, &ch] {
        cinder::delete_volume(&vols, v).unwrap();
    }
    assert!(state(&[&vols], &tag).is_empty(), "{:?}", state(&[&vols], &tag));
}

#[test]
fn delete_volume_is_finished_by_a_rerun_after_a_failure_at_any_step() {
    let c = live!();
    let _l = lock();
    let (vols, _) = pools(&c);
    let tag = common::unique("cdelfp");
    let _g = Cleanup::new(&[&vols], &tag);
    let steps = [
        "inspect",
        "journal",
        "backup_snaps",
        "remove",
        "children",
        "flatten_children",
        "drop_clone_snaps",
        "retry_remove",
        "parent_refs",
        "commit",
    ];
    for (n, step) in steps.iter().enumerate() {
        // a <- b <- c, b with a backup snapshot; delete b.
        let (a, b, c2) = (format!("{tag}-{n}a"), format!("{tag}-{n}b"), format!("{tag}-{n}c"));
        cinder::create(&vols, &a, 8 * MIB).unwrap();
        let data = sha(
            &{
                let img = open(&vols, &a);
                write_pattern(&img, 31, 0, MIB);
                img
            },
            0,
            8 * MIB,
        );
        cinder::create_from_volume(&vols, &a, &b, 8 * MIB, 5).unwrap();
        open(&vols, &b).snap_create("backup.x1.snap.1").unwrap();
        cinder::create_from_volume(&vols, &b, &c2, 8 * MIB, 5).unwrap();

        let before = state(&[&vols], &format!("{tag}-{n}"));
        let fp = format!("cinder.delete_volume.{step}");
        failpoint::set(&fp, Action::Error);
        let e = cinder::delete_volume(&vols, &b).unwrap_err();
        failpoint::clear(&fp);
        assert!(e.to_string().contains(&fp), "{e}");
        if n < 3 {
            assert_eq!(state(&[&vols], &format!("{tag}-{n}")), before, "{fp}: nothing changed yet");
        }
        // The re-run finishes: b gone, its clone snapshot gone from a, c flattened, data kept.
        let d = DeleteVolume::new(&b).run(&vols, &mut none()).unwrap();
        assert!(matches!(d.outcome, DeleteOutcome::Removed | DeleteOutcome::NotFound), "{fp}: {d:?}");
        assert!(!vols.image_exists(&volume_name(&b)).unwrap(), "{fp}");
        assert!(snaps_of(&vols, &a).is_empty(), "{fp}: {:?}", snaps_of(&vols, &a));
        assert!(open(&vols, &c2).parent().unwrap().is_none(), "{fp}");
        assert_eq!(sha(&open(&vols, &c2), 0, 8 * MIB), data, "{fp}");
        for v in [&c2, &a] {
            assert_eq!(cinder::delete_volume(&vols, v).unwrap(), DeleteOutcome::Removed);
        }
    }
    assert!(state(&[&vols], &tag).is_empty(), "{:?}", state(&[&vols], &tag));

    // Interrupted right after the child went, with a `.deleted` parent to collect
    // (r <- p.deleted <- ch): the re-run finds ch gone and follows the journal up the chain.
    let (r, p, ch) = (format!("{tag}-r"), format!("{tag}-p"), format!("{tag}-ch"));
    cinder::create(&vols, &r, 8 * MIB).unwrap();
    cinder::create_from_volume(&vols, &r, &p, 8 * MIB, 5).unwrap();
    cinder::create_from_volume(&vols, &p, &ch, 8 * MIB, 5).unwrap();
    let d = DeleteVolume::new(&p).keep_children_as_clones(true).run(&vols, &mut none()).unwrap();
    assert_eq!(d.outcome, DeleteOutcome::RenamedDeleted);
    failpoint::set("cinder.delete_volume.parent_refs", Action::Error);
    assert!(cinder::delete_volume(&vols, &ch).is_err());
    failpoint::clear("cinder.delete_volume.parent_refs");
    assert!(!vols.image_exists(&volume_name(&ch)).unwrap());
    assert!(vols.image_exists(&format!("volume-{p}.deleted")).unwrap(), "not collected yet");
    let d = DeleteVolume::new(&ch).run(&vols, &mut none()).unwrap();
    assert_eq!(d.outcome, DeleteOutcome::NotFound);
    assert_eq!(d.collected_parents, vec![format!("volumes/volume-{p}.deleted")]);
    assert_eq!(
        d.parent_snapshots_removed,
        vec![
            format!("volumes/volume-{p}.deleted@volume-{ch}.clone_snap"),
            format!("volumes/volume-{r}@volume-{p}.clone_snap")
        ]
    );
    assert_eq!(cinder::delete_volume(&vols, &r).unwrap(), DeleteOutcome::Removed);
    assert!(state(&[&vols], &tag).is_empty(), "{:?}", state(&[&vols], &tag));
}

#[test]
fn extend_revert_and_manage() {
    let c = live!();
    let _l = lock();
    let (vols, _) = pools(&c);
    let tag = common::unique("cops");
    let _g = Cleanup::new(&[&vols], &tag);
    let a = format!("{tag}-a");

    cinder::create(&vols, &a, 16 * MIB).unwrap();
    let p1 = sha(
        &{
            let img = open(&vols, &a);
            write_pattern(&img, 41, 0, 2 * MIB);
            img
        },
        0,
        16 * MIB,
    );

    // extend: grow only.
    assert_eq!(cinder::extend(&vols, &a, 24 * MIB).unwrap().size, 24 * MIB);
    assert_eq!(cinder::extend(&vols, &a, 24 * MIB).unwrap().size, 24 * MIB, "same size: no-op");
    assert_eq!(cinder::extend(&vols, &a, 8 * MIB).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(open(&vols, &a).size().unwrap(), 24 * MIB);
    sweep_undone("cinder.extend", &["inspect", "resize", "describe", "commit"], &[&vols], &tag, || {
        cinder::extend(&vols, &a, 40 * MIB).map(drop)
    });

    // revert: snapshot, overwrite, extend, revert -> the snapshot's data, the current size.
    cinder::create_snapshot(&vols, &a, "r1").unwrap();
    let snap_sha = sha(&open(&vols, &a), 0, 24 * MIB);
    write_pattern(&open(&vols, &a), 42, 0, 4 * MIB);
    cinder::extend(&vols, &a, 32 * MIB).unwrap();
    assert_ne!(sha(&open(&vols, &a), 0, 24 * MIB), snap_sha);
    let mut stop = |_: u64, _: u64| ControlFlow::Break(());
    let e = cinder::revert_to_snapshot(&vols, &a, "r1", &mut Progress::new(&mut stop)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!(open(&vols, &a).size().unwrap(), 32 * MIB, "a cancelled revert keeps the size");
    let mut calls = 0u64;
    let mut count = |_: u64, _: u64| {
        calls += 1;
        ControlFlow::Continue(())
    };
    let v = cinder::revert_to_snapshot(&vols, &a, "r1", &mut Progress::new(&mut count)).unwrap();
    assert!(calls > 0, "progress reported");
    assert_eq!(v.size, 32 * MIB, "the volume keeps its extended size");
    let img = open(&vols, &a);
    assert_eq!(sha(&img, 0, 24 * MIB), snap_sha);
    assert_eq!(sha(&img, 0, 16 * MIB), p1);
    assert_eq!(sha(&img, 24 * MIB, 8 * MIB), zeros_sha(8 * MIB));
    drop(img);
    assert_eq!(cinder::revert_to_snapshot(&vols, &a, "nope", &mut none()).unwrap_err().kind(), ErrorKind::NotFound);
    cinder::delete_snapshot(&vols, &a, "r1", ChildrenPolicy::Refuse).unwrap();

    // manage_existing: rename into the naming scheme; refuse a taken name.
    let legacy = format!("{tag}-legacy");
    vols.create_image(&legacy, 8 * MIB, &ImageOptions::new()).unwrap();
    let lsha = {
        let img = Image::open(&vols, &legacy).unwrap();
        write_pattern(&img, 43, 0, MIB);
        sha(&img, 0, 8 * MIB)
    };
    let before = state(&[&vols], &tag);
    assert_eq!(cinder::manage_existing(&vols, &legacy, &a).unwrap_err().kind(), ErrorKind::Exists);
    assert_eq!(
        cinder::manage_existing(&vols, &format!("{tag}-nope"), &format!("{tag}-m")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        cinder::manage_existing(&vols, "a/b", &format!("{tag}-m")).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(state(&[&vols], &tag), before);
    let m = format!("{tag}-m");
    sweep_undone("cinder.manage_existing", &["inspect", "rename", "describe", "commit"], &[&vols], &tag, || {
        cinder::manage_existing(&vols, &legacy, &m).map(drop)
    });
    let v = cinder::manage_existing(&vols, &legacy, &m).unwrap();
    assert_eq!((v.name.clone(), v.size), (volume_name(&m), 8 * MIB));
    assert!(!vols.image_exists(&legacy).unwrap());
    assert_eq!(sha(&open(&vols, &m), 0, 8 * MIB), lsha);

    for v in [&a, &m] {
        assert_eq!(cinder::delete_volume(&vols, v).unwrap(), DeleteOutcome::Removed);
    }
}

#[test]
fn pool_capacity_is_sane() {
    let c = live!();
    let _l = lock();
    let (vols, _) = pools(&c);
    let tag = common::unique("cstat");
    let _g = Cleanup::new(&[&vols], &tag);
    let a = format!("{tag}-a");
    cinder::create(&vols, &a, 1 << 30).unwrap();
    write_pattern(&open(&vols, &a), 51, 0, 4 * MIB);

    let cap = cinder::pool_capacity(&vols).unwrap();
    assert_eq!(cap.pool, "volumes");
    assert!(cap.free_bytes <= cap.total_bytes, "{cap:?}");
    assert!(cap.used_bytes <= cap.total_bytes, "{cap:?}");
    assert_eq!(cap.total_bytes, cap.free_bytes + cap.used_bytes, "Cinder's dynamic total");
    assert!(cap.total_bytes > 0 && cap.free_bytes > 0, "{cap:?}");
    assert!(cap.provisioned_bytes >= 1 << 30, "counts the 1 GiB volume: {cap:?}");
    let (q, _) = c.mon_command(r#"{"prefix":"osd pool get-quota","pool":"volumes","format":"json"}"#, b"").unwrap();
    let q: serde_json::Value = serde_json::from_slice(&q).unwrap();
    let quota = q["quota_max_bytes"].as_u64().unwrap();
    assert_eq!(cap.quota_bytes, (quota > 0).then_some(quota));
    assert!(cap.total_gib() >= cap.free_gib());

    assert_eq!(cinder::delete_volume(&vols, &a).unwrap(), DeleteOutcome::Removed);
}
