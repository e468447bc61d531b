//! Layering against the live cluster: clone v1/v2 (protection rules), cross-pool clones, parent
//! info, children/descendants, flatten with progress and cancellation, clone depth, trash
//! snapshots, and the clone geometry adjustment.
mod common;

use std::ops::ControlFlow;

use common::{pattern, unique, ScratchImage};
use rbd_core::{clone_image, CloneFormat, ErrorKind, Features, Image, ImageOptions, Pool, Progress, SnapNamespace};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn opts(format: CloneFormat) -> ImageOptions {
    let mut o = ImageOptions::new();
    o.clone_format(format);
    o
}

/// Clones and returns a guard that removes the clone (with its snapshots) on drop.
fn clone_guarded(
    parent_pool: &Pool,
    parent: &str,
    snap: &str,
    child_pool: &Pool,
    tag: &str,
    o: &ImageOptions,
) -> ScratchImage {
    let name = unique(tag);
    clone_image(parent_pool, parent, snap, child_pool, &name, o).unwrap();
    ScratchImage { pool: child_pool.clone(), name }
}

#[test]
fn clone_v1_needs_protection_v2_does_not() {
    let c = live!();
    let parent = ScratchImage::new(&c, "rbd", "l-parent", 8 * MIB);
    let pimg = parent.open();
    let data = pattern(31, 8 * MIB as usize);
    pimg.write(0, &data).unwrap();
    pimg.snap_create("base").unwrap();

    // v1 of an unprotected snapshot: EINVAL with an explanation.
    let name = unique("l-v1-fail");
    let e = clone_image(&parent.pool, &parent.name, "base", &parent.pool, &name, &opts(CloneFormat::V1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("must be protected"), "{e}");
    assert!(!parent.pool.image_exists(&name).unwrap());

    // v2 needs no protection.
    let v2 = clone_guarded(&parent.pool, &parent.name, "base", &parent.pool, "l-v2", &opts(CloneFormat::V2));
    // v1 after protecting.
    pimg.snap_protect("base").unwrap();
    let v1 = clone_guarded(&parent.pool, &parent.name, "base", &parent.pool, "l-v1", &opts(CloneFormat::V1));

    let snap_id = pimg.snap_id("base").unwrap();
    for child in [&v1, &v2] {
        let img = child.open();
        assert_eq!(sha(&img.read_vec(0, data.len()).unwrap()), sha(&data), "clone reads parent data");
        let p = img.parent().unwrap().expect("a clone has a parent");
        assert_eq!(p.pool, "rbd");
        assert_eq!(p.pool_namespace, "");
        assert_eq!(p.image, parent.name);
        assert_eq!(p.image_id, pimg.id().unwrap());
        assert_eq!(p.snap, "base");
        assert_eq!(p.snap_id, snap_id);
        assert_eq!(p.snap_namespace, SnapNamespace::User);
        assert!(!p.trash);
        assert_eq!(img.overlap().unwrap(), 8 * MIB);
    }
    assert_eq!(pimg.parent().unwrap(), None, "a plain image has no parent");

    // children/descendants from the parent's point of view.
    let mut kids: Vec<_> = pimg.children_of_snap("base").unwrap().into_iter().map(|k| k.image).collect();
    kids.sort();
    let mut want = vec![v1.name.clone(), v2.name.clone()];
    want.sort();
    assert_eq!(kids, want);
    let head_kids = pimg.children().unwrap();
    assert_eq!(head_kids.len(), 2, "at the head, children of every snapshot: {head_kids:?}");
    for k in &head_kids {
        assert_eq!(k.pool, "rbd");
        assert_eq!(k.pool_namespace, "");
        assert!(!k.trash);
        assert!(!k.image_id.is_empty());
    }
    assert!(pimg.snap_children_exist("base").unwrap());
    assert_eq!(pimg.descendants().unwrap().len(), 2);
    let at_snap = Image::open_at_snap(&parent.pool, &parent.name, "base").unwrap();
    assert_eq!(at_snap.children().unwrap().len(), 2);
    assert_eq!(pimg.children_of_snap("missing").unwrap_err().kind(), ErrorKind::NotFound);

    // Unprotect with children → Busy; remove the parent image → has snapshots.
    assert_eq!(pimg.snap_unprotect("base").unwrap_err().kind(), ErrorKind::Busy);
    assert_eq!(parent.pool.remove_image(&parent.name).unwrap_err().kind(), ErrorKind::HasSnapshots);

    // Removing both children frees the snapshot.
    drop(v1);
    drop(v2);
    assert!(!pimg.snap_children_exist("base").unwrap());
    pimg.snap_unprotect("base").unwrap();
}

#[test]
fn cross_pool_clone_rbd_to_volumes() {
    let c = live!();
    let parent = ScratchImage::new(&c, "rbd", "x-parent", 4 * MIB);
    let pimg = parent.open();
    let data = pattern(41, 64 * 1024);
    pimg.write(0, &data).unwrap();
    pimg.snap_create("s").unwrap();
    let volumes = Pool::open(&c, "volumes").unwrap();
    let child = clone_guarded(&parent.pool, &parent.name, "s", &volumes, "x-child", &opts(CloneFormat::V2));

    let cimg = child.open();
    assert_eq!(cimg.read_vec(0, data.len()).unwrap(), data);
    let p = cimg.parent().unwrap().unwrap();
    assert_eq!((p.pool.as_str(), p.image.as_str(), p.snap.as_str()), ("rbd", parent.name.as_str(), "s"));
    let kids = pimg.children_of_snap("s").unwrap();
    assert_eq!(kids.len(), 1);
    assert_eq!((kids[0].pool.as_str(), kids[0].image.as_str()), ("volumes", child.name.as_str()));
    assert_eq!(kids[0].image_id, cimg.id().unwrap());
    assert_eq!(cimg.clone_depth().unwrap(), 1);

    // Writes to the child do not reach the parent.
    cimg.write(0, &pattern(42, 4096)).unwrap();
    assert_eq!(pimg.read_vec(0, data.len()).unwrap(), data);
}

#[test]
fn flatten_with_progress_and_cancel() {
    let c = live!();
    let size = 12 * MIB; // three objects
    let parent = ScratchImage::new(&c, "rbd", "f-parent", size);
    let pimg = parent.open();
    let data = pattern(51, size as usize);
    pimg.write(0, &data).unwrap();
    pimg.snap_create("s").unwrap();
    let child = clone_guarded(&parent.pool, &parent.name, "s", &parent.pool, "f-child", &opts(CloneFormat::V2));
    let cimg = child.open();

    // Break at the first callback: cancelled, still a clone.
    let mut calls = 0;
    let mut stop = |_d: u64, _t: u64| {
        calls += 1;
        ControlFlow::Break(())
    };
    let e = cimg.flatten_with_progress(&mut Progress::new(&mut stop)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!(calls, 1, "no callback after Break");
    assert!(cimg.parent().unwrap().is_some(), "a cancelled flatten leaves a clone");

    // A cancelled token stops before starting.
    let token = rbd_core::CancelToken::new();
    token.cancel();
    let e = cimg.flatten_with_progress(&mut Progress::none().with_cancel(token)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);

    // Full flatten, with progress.
    let mut seen = Vec::new();
    let mut cb = |d: u64, t: u64| {
        seen.push((d, t));
        ControlFlow::Continue(())
    };
    cimg.flatten_with_progress(&mut Progress::new(&mut cb)).unwrap();
    assert!(!seen.is_empty(), "progress reported");
    assert!(seen.iter().all(|(d, t)| d <= t), "{seen:?}");
    assert_eq!(cimg.parent().unwrap(), None);
    assert_eq!(cimg.clone_depth().unwrap(), 0);
    assert_eq!(sha(&cimg.read_vec(0, size as usize).unwrap()), sha(&data));
    assert_eq!(cimg.flatten().unwrap_err().kind(), ErrorKind::InvalidArgument, "not a clone any more");

    // The parent snapshot has no children now and can go; the child keeps its data.
    assert!(!pimg.snap_children_exist("s").unwrap());
    pimg.snap_remove("s").unwrap();
    assert_eq!(sha(&cimg.read_vec(0, size as usize).unwrap()), sha(&data));
}

#[test]
fn clone_depth_counts_every_ancestor() {
    let c = live!();
    let volumes = Pool::open(&c, "volumes").unwrap();
    let base = ScratchImage::new(&c, "rbd", "d-base", 4 * MIB);
    let bimg = base.open();
    bimg.write(0, b"level0").unwrap();
    bimg.snap_create("s").unwrap();
    let l1 = clone_guarded(&base.pool, &base.name, "s", &volumes, "d-l1", &opts(CloneFormat::V2));
    let l1img = l1.open();
    l1img.write(6, b"level1").unwrap();
    l1img.snap_create("s").unwrap();
    // l2 without deep-flatten: flattening it later keeps its snapshot's parent link.
    let mut o2 = opts(CloneFormat::V2);
    o2.features(Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::OBJECT_MAP | Features::FAST_DIFF);
    let l2 = clone_guarded(&volumes, &l1.name, "s", &base.pool, "d-l2", &o2);
    let l2img = l2.open();
    l2img.write(12, b"level2").unwrap();
    l2img.snap_create("s").unwrap();
    let l3 = clone_guarded(&base.pool, &l2.name, "s", &volumes, "d-l3", &opts(CloneFormat::V2));
    let l3img = l3.open();

    assert_eq!(bimg.clone_depth().unwrap(), 0);
    assert_eq!(l1img.clone_depth().unwrap(), 1);
    assert_eq!(l2img.clone_depth().unwrap(), 2);
    assert_eq!(l3img.clone_depth().unwrap(), 3);
    assert_eq!(l3img.read_vec(0, 18).unwrap(), b"level0level1level2");

    // descendants crosses levels; children does not.
    assert_eq!(bimg.children().unwrap().len(), 1);
    let mut desc: Vec<_> = bimg.descendants().unwrap().into_iter().map(|d| d.image).collect();
    desc.sort();
    let mut want = vec![l1.name.clone(), l2.name.clone(), l3.name.clone()];
    want.sort();
    assert_eq!(desc, want);

    // Flattening l2 detaches its head only (no deep-flatten): l3 hangs from l2@s, which still
    // has l1@s as parent, so the walk (by snapshot id) still finds three ancestors.
    l2img.flatten().unwrap();
    assert_eq!(l2img.clone_depth().unwrap(), 0);
    let l2_at_s = Image::open_at_snap(&l2.pool, &l2.name, "s").unwrap();
    assert_eq!(l2_at_s.clone_depth().unwrap(), 2);
    assert_eq!(l3img.clone_depth().unwrap(), 3);

    // With deep-flatten (the default, l1 has it) snapshots are detached too.
    drop(l2_at_s);
    l1img.flatten().unwrap();
    let l1_at_s = Image::open_at_snap(&l1.pool, &l1.name, "s").unwrap();
    assert_eq!(l1_at_s.clone_depth().unwrap(), 0);
    assert_eq!(l3img.clone_depth().unwrap(), 2);
}

#[test]
fn removing_a_v2_parent_snapshot_moves_it_to_trash() {
    let c = live!();
    let parent = ScratchImage::new(&c, "rbd", "t-parent", 4 * MIB);
    let pimg = parent.open();
    pimg.write(0, b"parent data").unwrap();
    pimg.snap_create("s").unwrap();
    let child = clone_guarded(&parent.pool, &parent.name, "s", &parent.pool, "t-child", &opts(CloneFormat::V2));

    pimg.snap_remove("s").unwrap();
    assert!(!pimg.snap_exists("s").unwrap(), "gone from the user namespace");
    let snaps = pimg.snapshots().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0].namespace, SnapNamespace::Trash);
    assert_eq!(snaps[0].trash_original_name.as_deref(), Some("s"));
    assert_eq!(snaps[0].protected, None);

    let cimg = child.open();
    let p = cimg.parent().unwrap().unwrap();
    assert_eq!(p.snap_namespace, SnapNamespace::Trash);
    assert_eq!(p.snap_id, snaps[0].id);
    assert_eq!(cimg.read_vec(0, 11).unwrap(), b"parent data");
    assert_eq!(cimg.clone_depth().unwrap(), 1, "depth follows trash snapshots by id");

    // A trash snapshot with children cannot be removed by id either.
    assert_eq!(pimg.snap_remove_by_id(snaps[0].id).unwrap_err().kind(), ErrorKind::Busy);

    // Removing the last child deletes the trash snapshot.
    drop(cimg);
    drop(child);
    let left = pimg.snapshots().unwrap();
    assert!(left.is_empty(), "librbd removes the trash snapshot with its last child: {left:?}");
}

#[test]
fn clone_geometry_fits_the_inherited_stripe_unit() {
    let c = live!();
    let mut po = ImageOptions::new();
    po.order(23); // 8 MiB objects, like Glance
    let parent = ScratchImage::with_options(&c, "rbd", "g-parent", 16 * MIB, &po);
    let pimg = parent.open();
    pimg.snap_create("s").unwrap();

    // Order 22 alone: Pacific would fail (inherited 8 MiB stripe unit > 4 MiB objects); raised.
    let mut o = opts(CloneFormat::V2);
    o.order(22);
    let a = clone_guarded(&parent.pool, &parent.name, "s", &parent.pool, "g-a", &o);
    assert_eq!(a.open().stat().unwrap().order, 23);

    // With an explicit stripe unit the requested order is honoured.
    let mut o = opts(CloneFormat::V2);
    o.order(22).stripe(4 * MIB, 1);
    let b = clone_guarded(&parent.pool, &parent.name, "s", &parent.pool, "g-b", &o);
    let bimg = b.open();
    assert_eq!(bimg.stat().unwrap().order, 22);
    assert_eq!(bimg.stripe_unit().unwrap(), 4 * MIB);

    // No order: inherited.
    let d = clone_guarded(&parent.pool, &parent.name, "s", &parent.pool, "g-d", &opts(CloneFormat::V2));
    assert_eq!(d.open().stat().unwrap().order, 23);

    // Error kinds for missing parents and taken names.
    let e = clone_image(&parent.pool, &parent.name, "nope", &parent.pool, &unique("g-x"), &opts(CloneFormat::V2))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = clone_image(&parent.pool, &parent.name, "s", &parent.pool, &d.name, &opts(CloneFormat::V2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
}
