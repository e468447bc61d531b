//! Malformed input (issue #10, quick part).
//!
//! * A corpus of bad diff streams: every record boundary (and a cut inside every record) of
//!   streams made by this library and of the golden Pacific streams (`fuzz/corpus/diff_stream`),
//!   wrong lengths, unknown tags, huge lengths, bad banners. Each parse gives a typed
//!   [`ErrorKind::Malformed`] error, and no single allocation exceeds a bound (a counting global
//!   allocator proves that a huge length field is never allocated).
//! * Importing each bad stream into an image changes nothing, or leaves the documented
//!   recoverable state of a partial import (no end snapshot; the head is brought back to the
//!   from-snapshot by `import::rollback_to_from_snap`, verified by checksum).
//! * Bad image/pool/snapshot names, sizes (zero, `u64` overflow, unaligned stripes), malformed
//!   `rbd://` locations, missing snapshots: every recipe entry point gives a typed
//!   `InvalidArgument`/`NotFound` error and changes nothing (images of every pool carrying the
//!   test's marker, the fixture's snapshots and size are compared before and after).
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;

use common::{pattern, unique};
use rbd_core::export::DiffExport;
use rbd_core::import::{rollback_to_from_snap, DiffImport};
use rbd_core::recipes::backup::{Backup, Restore, VolumeRef};
use rbd_core::recipes::cinder::{self, VolumeFromImage, VolumeFromSnapshot, VolumeFromVolume};
use rbd_core::recipes::glance::GlanceStore;
use rbd_core::recipes::location::Location;
use rbd_core::recipes::nova::BootDisk;
use rbd_core::stream::{
    is_truncation, DiffReader, DiffWriter, ImageExportReader, DIFF_BANNER_V1, DIFF_BANNER_V2, IMAGE_BANNER_V2,
};
use rbd_core::{Cluster, Error, ErrorKind, Image, ImageOptions, Pool, Progress, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

// --- a global allocator that remembers the largest single allocation of each thread -------------

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|m| {
        if size > m.get() {
            m.set(size);
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only records sizes in a
// thread-local `Cell` (no allocation, no panic: `try_with` tolerates TLS teardown).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: ptr was allocated by System with `layout`; the caller upholds new_size rules.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the largest single allocation it made on this thread.
fn largest_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let r = f();
    (r, LARGEST.with(Cell::get))
}

/// No parse of any corpus entry may allocate more than this at once (the reader's chunk is
/// 4 MiB; the BufReader of the importer 1 MiB).
const ALLOC_BOUND: usize = 8 << 20;

// --- the corpus --------------------------------------------------------------------------------

const MIB: u64 = 1 << 20;

fn golden(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/diff_stream").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("golden stream {}: {e}", p.display()))
}

/// A v1 stream made by this library's writer: from s1 to s2, resize, writes, a zero run.
fn library_v1() -> Vec<u8> {
    let mut w = DiffWriter::new_v1(Vec::new()).expect("writer");
    w.from_snap("s1").expect("f");
    w.to_snap("s2").expect("t");
    w.size(8 * MIB).expect("s");
    w.write(0, &pattern(1, 4096)).expect("w");
    w.zero(64 << 10, 8192).expect("z");
    w.write(5 * MIB, &pattern(2, 12_288)).expect("w");
    w.end().expect("e")
}

/// The same content as a v2 (length-prefixed) stream, with a protected record.
fn library_v2() -> Vec<u8> {
    let mut w = DiffWriter::new_v2(Vec::new()).expect("writer");
    w.from_snap("s1").expect("f");
    w.to_snap("s2").expect("t");
    w.protected(true).expect("p");
    w.size(8 * MIB).expect("s");
    w.write(0, &pattern(1, 4096)).expect("w");
    w.zero(64 << 10, 8192).expect("z");
    w.end().expect("e")
}

/// Record start offsets of a valid diff stream (after the banner), and its length.
fn boundaries(stream: &[u8]) -> Vec<usize> {
    let mut r = DiffReader::new(stream).expect("valid stream").with_max_chunk(usize::MAX >> 1);
    let mut b = vec![r.position() as usize];
    while let Some(_rec) = r.next_record().expect("valid stream") {
        b.push(r.position() as usize);
    }
    b
}

/// A named bad stream, and whether a failure must be a truncation.
struct Bad {
    name: String,
    bytes: Vec<u8>,
    truncated: bool,
}

/// Every record boundary before the end, one byte into every record, and one byte short of the
/// end: each such prefix is a truncated stream.
fn truncations(label: &str, stream: &[u8]) -> Vec<Bad> {
    let mut cuts = BTreeSet::new();
    for &b in &boundaries(stream) {
        for cut in [b, b + 1, b + 5, b + 9, b + 17] {
            if cut < stream.len() {
                cuts.insert(cut);
            }
        }
    }
    cuts.extend(0..12.min(stream.len()));
    cuts.insert(stream.len() - 1);
    cuts.into_iter()
        .map(|c| Bad {
            name: format!("{label} cut at {c}/{}", stream.len()),
            bytes: stream[..c].to_vec(),
            truncated: true,
        })
        .collect()
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}
fn le64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// v1 banner + `'f' s1`, `'t' s2` (so an import gets past its checks), then `tail`.
fn v1_with(tail: &[u8]) -> Vec<u8> {
    let mut v = DIFF_BANNER_V1.to_vec();
    v.push(b'f');
    v.extend(le32(2));
    v.extend(b"s1");
    v.push(b't');
    v.extend(le32(2));
    v.extend(b"s2");
    v.extend(tail);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Hand-made malformed streams: wrong lengths, unknown tags, huge lengths, bad banners.
fn handmade() -> Vec<Bad> {
    let bad = |name: &str, bytes: Vec<u8>, truncated: bool| Bad { name: name.into(), bytes, truncated };
    let mut v2_bad_len = DIFF_BANNER_V2.to_vec();
    v2_bad_len.push(b's');
    v2_bad_len.extend(le64(7)); // 's' carries 8 bytes
    v2_bad_len.extend(le64(MIB));
    v2_bad_len.push(b'e');
    let mut v2_huge = DIFF_BANNER_V2.to_vec();
    v2_huge.push(b'x');
    v2_huge.extend(le64(u64::MAX)); // unknown tag with a huge length: skipped lazily, then truncated
    v2_huge.extend([0u8; 16]);
    let mut v2_w_huge = DIFF_BANNER_V2.to_vec();
    v2_w_huge.push(b'w');
    v2_w_huge.extend(le64(u64::MAX));
    v2_w_huge.extend(le64(0));
    v2_w_huge.extend(le64(u64::MAX - 16));
    let mut img_huge_count = IMAGE_BANNER_V2.to_vec();
    img_huge_count.push(b'E');
    img_huge_count.extend(b"rbd image diffs v2\n");
    img_huge_count.extend(le64(u64::MAX));
    let mut img_huge_meta = IMAGE_BANNER_V2.to_vec();
    img_huge_meta.push(b'M');
    img_huge_meta.extend(le64(u64::MAX));
    img_huge_meta.extend([b'k'; 32]);
    vec![
        // bad banners
        bad("empty input", Vec::new(), true),
        bad("banner without newline", b"rbd diff v1".to_vec(), true),
        bad("banner v3", b"rbd diff v3\n\x65".to_vec(), false),
        bad("banner upper case", b"RBD DIFF V1\n\x65".to_vec(), false),
        bad("banner with NUL", b"rbd diff v1\0\x65".to_vec(), false),
        bad("image banner to a diff reader", b"rbd image v2\n\x45".to_vec(), false),
        bad("garbage", pattern(7, 64), false),
        bad("all zeros", vec![0u8; 64], false),
        bad("image container with a diff banner", cat(&[b"rbd image v1\n", b"E"]), false),
        // unknown tags (v1 has no lengths: fatal)
        bad("v1 unknown tag x", v1_with(b"x"), false),
        bad("v1 unknown tag 0x00", v1_with(&[0u8; 9]), false),
        bad("v1 unknown tag 0xff", v1_with(&[0xffu8; 9]), false),
        bad("v1 v2-only tag p", v1_with(&[b'p', 1, b'e']), false),
        // wrong lengths
        bad("v1 name length past the end", cat(&[DIFF_BANNER_V1, b"t", &le32(100), b"s2", b"e"]), true),
        bad("v1 name longer than 4096", cat(&[DIFF_BANNER_V1, b"t", &le32(5000), &[b'a'; 5000], b"e"]), false),
        bad("v1 name not UTF-8", cat(&[DIFF_BANNER_V1, b"t", &le32(2), &[0xff, 0xfe], b"e"]), false),
        bad("v1 write shorter than its length", v1_with(&cat(&[b"w", &le64(0), &le64(4096), &[1u8; 100]])), true),
        bad("v1 write offset+len overflows", v1_with(&cat(&[b"w", &le64(u64::MAX - 10), &le64(100), b"e"])), false),
        bad("v1 zero offset+len overflows", v1_with(&cat(&[b"z", &le64(u64::MAX), &le64(2), b"e"])), false),
        bad("v1 size record cut", v1_with(&[b's', 1, 2, 3]), true),
        bad("v2 size with length 7", v2_bad_len, false),
        bad("v1 no end record", v1_with(&cat(&[b"s", &le64(MIB)])), true),
        // huge lengths: must fail without allocating them
        bad("v1 write of 2^62 bytes, 10 present", v1_with(&cat(&[b"w", &le64(0), &le64(1 << 62), &[9u8; 10]])), true),
        bad("v1 write of u64::MAX bytes at 0", v1_with(&cat(&[b"w", &le64(0), &le64(u64::MAX), &[9u8; 10]])), false),
        bad("v1 name length u32::MAX", cat(&[DIFF_BANNER_V1, b"f", &le32(u32::MAX), b"abc"]), false),
        bad("v2 unknown tag with length u64::MAX", v2_huge, true),
        bad("v2 write with length u64::MAX", v2_w_huge, false),
        bad("image v2 diff count u64::MAX", img_huge_count, true),
        bad("image v2 metadata entry of u64::MAX bytes", img_huge_meta, false),
    ]
}

/// Parses `bytes` completely as whatever its banner says (diff v1/v2 or image v2 container).
fn parse_all(bytes: &[u8]) -> Result<u64> {
    // A cut inside the image banner is still an image container (truncated).
    if bytes.len() >= 5 && IMAGE_BANNER_V2.starts_with(&bytes[..bytes.len().min(IMAGE_BANNER_V2.len())]) {
        let mut r = ImageExportReader::new(bytes)?;
        let mut n = 0;
        while let Some(mut d) = r.next_diff()? {
            for rec in d.by_ref() {
                rec?;
                n += 1;
            }
        }
        return Ok(n);
    }
    let mut r = DiffReader::new(bytes)?;
    let mut n = 0;
    while r.next_record()?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn full_corpus() -> Vec<Bad> {
    let mut c = Vec::new();
    c.extend(truncations("library v1", &library_v1()));
    c.extend(truncations("library v2", &library_v2()));
    for g in ["f_v1.diff", "f_full_v1.diff", "hand_v1.diff"] {
        c.extend(truncations(&format!("golden {g}"), &golden(g)));
    }
    // The image v2 container: the banner, every header record and diff start, a cut in each.
    let exp2 = golden("f.exp2");
    for cut in [0, 5, 13, 14, 20, 40, 60, 80, 100, 120, 130, 200, 1000, 65_000, exp2.len() / 2, exp2.len() - 1] {
        c.push(Bad {
            name: format!("golden f.exp2 cut at {cut}/{}", exp2.len()),
            bytes: exp2[..cut].to_vec(),
            truncated: true,
        });
    }
    c.push(Bad { name: "golden trunc.diff".into(), bytes: golden("trunc.diff"), truncated: true });
    c.extend(handmade());
    c
}

/// Every entry of the corpus parses to a typed `Malformed` error (a truncation where the cut
/// says so), and no parse allocates more than [`ALLOC_BOUND`] at once.
#[test]
fn bad_stream_corpus_gives_typed_errors_without_huge_allocations() {
    // The golden streams themselves parse (the corpus is built from good input).
    for g in ["f_v1.diff", "f_full_v1.diff", "hand_v1.diff", "f.exp2"] {
        parse_all(&golden(g)).unwrap_or_else(|e| panic!("golden {g} must parse: {e}"));
    }
    let corpus = full_corpus();
    let mut failures = Vec::new();
    let mut largest = 0usize;
    let mut truncations_seen = 0;
    for b in &corpus {
        let (r, big) = largest_alloc(|| parse_all(&b.bytes));
        largest = largest.max(big);
        match r {
            Ok(n) => failures.push(format!("{}: parsed ({n} records) instead of failing", b.name)),
            Err(e) if e.kind() != ErrorKind::Malformed => {
                failures.push(format!("{}: kind {:?}: {e}", b.name, e.kind()))
            }
            Err(e) if b.truncated && !is_truncation(&e) => failures.push(format!("{}: not a truncation: {e}", b.name)),
            Err(e) => {
                truncations_seen += usize::from(is_truncation(&e));
            }
        }
        if big > ALLOC_BOUND {
            failures.push(format!("{}: allocated {big} bytes at once", b.name));
        }
    }
    let pass = failures.is_empty();
    common::record_figure(
        "fault_input",
        "stream_corpus",
        &format!(
            "{} bad streams parsed: {} typed Malformed errors ({} truncations), {} wrong results; largest single allocation {} KiB (bound {} MiB)",
            corpus.len(),
            corpus.len() - failures.len(),
            truncations_seen,
            failures.len(),
            largest >> 10,
            ALLOC_BOUND >> 20
        ),
        pass,
        json!({ "entries": corpus.len(), "truncations": truncations_seen, "largest_alloc_bytes": largest, "failures": failures }),
    );
    assert!(pass, "bad streams handled wrongly:\n{}", failures.join("\n"));
}

// --- imports of bad streams ---------------------------------------------------------------------

fn sha(img: &Image) -> String {
    let size = img.size().expect("size");
    let data = img.read_vec(0, size as usize).expect("read");
    format!("{size}:{:x}", Sha256::digest(&data))
}

fn user_snaps(img: &Image) -> Vec<String> {
    img.snapshots().expect("snapshots").into_iter().map(|s| s.name).collect()
}

/// Imports every truncation of a real `DiffExport` stream (s1 → s2 of a live image) and every
/// hand-made bad stream into a copy that holds s1: each fails with a typed error, creates no
/// snapshot, and leaves the head either unchanged or (a partial import, as documented)
/// restorable to s1 with `rollback_to_from_snap`, verified by checksum.
#[test]
fn importing_bad_streams_changes_nothing_or_is_recoverable() {
    let c = live!();
    let src = common::ScratchImage::new(&c, "rbd", "fin-src", 8 * MIB);
    let dst = common::ScratchImage::new(&c, "rbd", "fin-dst", 8 * MIB);
    let (si, di) = (src.open(), dst.open());
    for img in [&si, &di] {
        img.write(MIB, &pattern(11, 64 << 10)).unwrap();
        img.write(7 * MIB, &pattern(12, 4096)).unwrap();
        img.snap_create("s1").unwrap();
    }
    si.write(0, &pattern(13, 8192)).unwrap();
    si.discard(MIB, 16 << 10).unwrap();
    si.write(3 * MIB + 512, &pattern(14, 70_000)).unwrap();
    si.resize(10 * MIB, false).unwrap();
    si.write(9 * MIB, &pattern(15, 4096)).unwrap();
    si.snap_create("s2").unwrap();
    let at_s2 = Image::open_at_snap(&src.pool, &src.name, "s2").unwrap();
    let mut stream = Vec::new();
    DiffExport::new(&at_s2).from_snap(Some("s1")).run(&mut stream, &mut Progress::none()).unwrap();
    let want_s2 = sha(&at_s2);

    let baseline = sha(&di);
    let snaps0 = user_snaps(&di);
    let mut corpus = truncations("DiffExport s1->s2", &stream);
    corpus
        .extend(handmade().into_iter().filter(|b| b.bytes.starts_with(DIFF_BANNER_V1) || !b.bytes.starts_with(b"rbd")));
    // A record past the end of the image, after a valid start.
    corpus.push(Bad {
        name: "write past the image end".into(),
        bytes: v1_with(&cat(&[b"s", &le64(8 * MIB), b"w", &le64(8 * MIB - 10), &le64(20), &[7u8; 20], b"e"])),
        truncated: false,
    });
    let (mut unchanged, mut recovered, mut failures) = (0, 0, Vec::new());
    for b in &corpus {
        let r = DiffImport::new(&di).run(&b.bytes[..], &mut Progress::none());
        match &r {
            Ok(s) => failures.push(format!("{}: imported ({s:?})", b.name)),
            Err(e) if !matches!(e.kind(), ErrorKind::Malformed | ErrorKind::InvalidArgument) => {
                failures.push(format!("{}: kind {:?}: {e}", b.name, e.kind()))
            }
            Err(_) => {}
        }
        if user_snaps(&di) != snaps0 {
            failures.push(format!("{}: snapshots changed to {:?}", b.name, user_snaps(&di)));
        }
        if sha(&di) == baseline {
            unchanged += 1;
        } else {
            rollback_to_from_snap(&di, "s1", &mut Progress::none()).unwrap();
            if sha(&di) == baseline {
                recovered += 1;
            } else {
                failures.push(format!("{}: head not restorable to s1", b.name));
            }
        }
    }
    // And the complete stream still imports afterwards, to exactly s2's content.
    DiffImport::new(&di).run(&stream[..], &mut Progress::none()).unwrap();
    let at = Image::open_at_snap(&dst.pool, &dst.name, "s2").unwrap();
    let complete_ok = sha(&at) == want_s2;
    drop(at);
    let pass = failures.is_empty() && complete_ok;
    common::record_figure(
        "fault_input",
        "import_bad_streams",
        &format!(
            "{} bad imports: {} typed errors; head unchanged {}, partial and rolled back to s1 {}; 0 snapshots created expected, {} problems; full import afterwards verifies: {}",
            corpus.len(),
            corpus.len() - failures.len(),
            unchanged,
            recovered,
            failures.len(),
            complete_ok
        ),
        pass,
        json!({ "imports": corpus.len(), "unchanged": unchanged, "rolled_back": recovered, "stream_bytes": stream.len(), "failures": failures }),
    );
    assert!(failures.is_empty(), "bad imports handled wrongly:\n{}", failures.join("\n"));
    assert!(complete_ok, "the complete import does not reproduce s2");
}

// --- bad names, sizes, locations, missing snapshots -------------------------------------------

const POOLS: [&str; 5] = ["rbd", "images", "volumes", "vms", "backups"];

/// Images of every pool whose name contains one of `markers`.
fn marked(c: &Cluster, markers: &[String]) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    for p in POOLS {
        let pool = Pool::open(c, p).unwrap();
        for n in pool.image_names().unwrap() {
            if markers.iter().any(|m| n.contains(m.as_str())) {
                s.insert(format!("{p}/{n}"));
            }
        }
    }
    s
}

/// One bad call: its label, the kinds it may fail with, and the call.
type Case<'a> = (String, &'static [ErrorKind], Box<dyn FnOnce() -> Result<String> + 'a>);

const INVALID: &[ErrorKind] = &[ErrorKind::InvalidArgument];
const NOT_FOUND: &[ErrorKind] = &[ErrorKind::NotFound];
const INVALID_OR_RANGE: &[ErrorKind] = &[ErrorKind::InvalidArgument, ErrorKind::OutOfRange];

fn ok<T: std::fmt::Debug>(r: Result<T>) -> Result<String> {
    r.map(|v| format!("{v:?}"))
}

/// Runs every case; returns failures.
fn run_cases(cases: Vec<Case<'_>>) -> (usize, Vec<String>, Vec<serde_json::Value>) {
    let n = cases.len();
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for (label, kinds, f) in cases {
        match f() {
            Ok(v) => failures.push(format!("{label}: succeeded ({v})")),
            Err(e) => {
                seen.push(json!({ "case": label, "kind": format!("{:?}", e.kind()) }));
                if !kinds.contains(&e.kind()) {
                    failures.push(format!("{label}: expected {kinds:?}, got {:?}: {e}", e.kind()));
                }
            }
        }
    }
    (n, failures, seen)
}

#[test]
fn bad_names_sizes_locations_and_missing_snapshots_change_nothing() {
    let c = live!();
    let marker = unique("fin-bad");
    // Nova needs instance UUIDs: their disks are found by these.
    let uu_v: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let uu: &[String] = &uu_v;
    let markers = [vec![marker.clone()], uu_v.clone()].concat();
    let fsid = c.fsid().unwrap();
    let pools: Vec<Pool> =
        ["rbd", "images", "volumes", "vms", "backups"].iter().map(|p| Pool::open(&c, p).unwrap()).collect();
    let (rbd, images, volumes, vms, backups) = (&pools[0], &pools[1], &pools[2], &pools[3], &pools[4]);

    // Fixtures: a Glance image and a Cinder volume with a snapshot, named with the marker.
    let gid_s = format!("{marker}-g");
    let gid: &str = &gid_s;
    let store_v = GlanceStore::new(images);
    let store = &store_v;
    let up = store.upload(gid, &pattern(3, 1 << 20)[..], Some(1 << 20), &mut Progress::none()).unwrap();
    let vid_s = format!("{marker}-v");
    let vid: &str = &vid_s;
    cinder::create(volumes, vid, 4 * MIB).unwrap();
    cinder::create_snapshot(volumes, vid, "s").unwrap();
    let vol_img = || Image::open_read_only(volumes, &cinder::volume_name(vid)).unwrap();
    let glance_img = || Image::open_read_only(images, gid).unwrap();
    let c = &c;
    let state = || {
        (
            marked(c, &markers),
            user_snaps(&vol_img()),
            vol_img().size().unwrap(),
            user_snaps(&glance_img()),
            images.image_exists(gid).unwrap(),
        )
    };
    let before = state();

    let long = "x".repeat(5000);
    let bad_names: Vec<(String, String)> = vec![
        ("empty".into(), String::new()),
        ("slash".into(), format!("{marker}/a")),
        ("at".into(), format!("{marker}@a")),
        ("NUL".into(), format!("{marker}\0a")),
        ("5000 bytes".into(), format!("{marker}{long}")),
    ];
    let missing_s = format!("{marker}-missing");
    let missing: &str = &missing_s;
    let loc = &up.location;
    let other_fsid = "00000000-0000-0000-0000-000000000000";
    let m: &str = &marker;
    let mut cases: Vec<Case<'_>> = Vec::new();
    for (what, name) in &bad_names {
        let name = name.clone();
        let (n1, n2, n3, n4, n5) = (name.clone(), name.clone(), name.clone(), name.clone(), name.clone());
        cases.push((
            format!("Pool::create_image {what}"),
            INVALID,
            Box::new(move || ok(rbd.create_image(&n1, MIB, &ImageOptions::new()))),
        ));
        cases.push((
            format!("glance upload {what}"),
            INVALID,
            Box::new(move || ok(store.upload(&n2, &[0u8; 4096][..], Some(4096), &mut Progress::none()))),
        ));
        cases.push((format!("cinder create {what}"), INVALID, Box::new(move || ok(cinder::create(volumes, &n3, MIB)))));
        cases.push((
            format!("snapshot create {what}"),
            INVALID,
            Box::new(move || ok(cinder::create_snapshot(volumes, vid, &n4))),
        ));
        cases.push((
            format!("nova boot instance {what}"),
            INVALID,
            Box::new(move || ok(BootDisk::new(loc, &n5).run(vms))),
        ));
    }
    // Raw snapshot names: empty and NUL are refused before librbd.
    for (what, sn) in [("empty", String::new()), ("NUL", "a\0b".to_string())] {
        cases.push((
            format!("Image::snap_create {what}"),
            INVALID,
            Box::new(move || ok(Image::open(volumes, &cinder::volume_name(vid))?.snap_create(&sn))),
        ));
    }
    // Pools.
    for (what, p) in [("empty", ""), ("NUL", "vol\0umes")] {
        cases.push((
            format!("Pool::open {what}"),
            &[ErrorKind::InvalidArgument, ErrorKind::NotFound],
            Box::new(move || ok(Pool::open(c, p).map(|p| p.name().to_string()))),
        ));
    }
    cases.push((
        "Pool::open missing pool".into(),
        NOT_FOUND,
        Box::new(move || ok(Pool::open(c, &format!("{m}-nopool")).map(|_| ()))),
    ));
    // Sizes.
    cases.push((
        "cinder create size 0".into(),
        INVALID,
        Box::new(move || ok(cinder::create(volumes, &format!("{m}-z"), 0))),
    ));
    cases.push((
        "cinder extend to u64::MAX".into(),
        INVALID_OR_RANGE,
        Box::new(move || ok(cinder::extend(volumes, vid, u64::MAX))),
    ));
    cases.push(("cinder extend shrinking".into(), INVALID, Box::new(move || ok(cinder::extend(volumes, vid, MIB)))));
    cases.push(("cinder extend size 0".into(), INVALID, Box::new(move || ok(cinder::extend(volumes, vid, 0)))));
    cases.push((
        "Pool::create_image u64::MAX bytes".into(),
        INVALID_OR_RANGE,
        Box::new(move || ok(rbd.create_image(&format!("{m}-huge"), u64::MAX, &ImageOptions::new()))),
    ));
    cases.push((
        "Image::resize to u64::MAX".into(),
        INVALID_OR_RANGE,
        Box::new(move || ok(Image::open(volumes, &cinder::volume_name(vid))?.resize(u64::MAX, false))),
    ));
    cases.push((
        "Pool::create_image unaligned stripe unit".into(),
        INVALID,
        Box::new(move || {
            ok(rbd.create_image(&format!("{m}-stripe"), MIB, ImageOptions::new().order(22).stripe(3000, 2)))
        }),
    ));
    cases.push((
        "Pool::create_image order 40".into(),
        INVALID_OR_RANGE,
        Box::new(move || ok(rbd.create_image(&format!("{m}-order"), MIB, ImageOptions::new().order(40)))),
    ));
    cases.push((
        "glance upload order 30".into(),
        INVALID,
        Box::new(move || {
            let mut s = GlanceStore::new(images);
            s.order(30);
            ok(s.upload(&format!("{m}-o"), &[0u8; 10][..], Some(10), &mut Progress::none()))
        }),
    ));
    cases.push((
        "glance upload declared size != data".into(),
        INVALID,
        Box::new(move || ok(store.upload(&format!("{m}-short"), &[1u8; 100][..], Some(4096), &mut Progress::none()))),
    ));
    cases.push((
        "volume from volume smaller than source".into(),
        INVALID,
        Box::new(move || ok(VolumeFromVolume::new(vid, &format!("{m}-vv"), MIB).run(volumes, &mut Progress::none()))),
    ));
    cases.push((
        "volume from volume size u64::MAX".into(),
        INVALID_OR_RANGE,
        Box::new(move || {
            ok(VolumeFromVolume::new(vid, &format!("{m}-vv2"), u64::MAX).run(volumes, &mut Progress::none()))
        }),
    ));
    // Malformed locations.
    for url in [
        "",
        "rbd://",
        "rbd:///images/x/snap",
        "rbd://a/b/c",
        "rbd://a/b/c/d/e",
        "rbd://fsid//img/snap",
        "rbd://fsid/images/img/",
        "rbd://fsid/images/%zz/snap",
        "rbd://fsid/images/%00/snap",
        "rbd://fsid/images/%ff%fe/snap",
        "http://fsid/images/img/snap",
        "RBD://fsid/images/img/snap",
        "rbd:/fsid/images/img/snap",
    ] {
        cases.push((format!("Location::parse {url:?}"), INVALID, Box::new(move || ok(Location::parse(url)))));
    }
    let foreign = Location::new(other_fsid, "images", gid, "snap");
    let (f1, f2, f3) = (foreign.clone(), foreign.clone(), foreign);
    cases.push((
        "glance download, other cluster".into(),
        INVALID,
        Box::new(move || ok(store.download(&f1).map(|d| d.len()))),
    ));
    cases.push(("nova boot, other cluster".into(), INVALID, Box::new(move || ok(BootDisk::new(&f2, &uu[0]).run(vms)))));
    cases.push((
        "cinder from image, other cluster".into(),
        INVALID,
        Box::new(move || ok(cinder::create_from_image(volumes, &f3, &format!("{m}-fi"), 4 * MIB))),
    ));
    cases.push((
        "nova boot, legacy location".into(),
        INVALID,
        Box::new(move || ok(BootDisk::new(&Location::legacy(gid), &uu[1]).run(vms))),
    ));
    // Missing images and snapshots.
    let miss_loc = Location::new(&fsid, "images", gid, "nosnap");
    let miss_img = Location::new(&fsid, "images", missing, "snap");
    let (l1, l2, l3, l4) = (miss_loc.clone(), miss_loc, miss_img.clone(), miss_img);
    cases.push(("Image::open missing".into(), NOT_FOUND, Box::new(move || ok(Image::open(rbd, missing).map(|_| ())))));
    cases.push((
        "Image::open_at_snap missing snapshot".into(),
        NOT_FOUND,
        Box::new(move || ok(Image::open_at_snap(images, gid, "nosnap").map(|_| ()))),
    ));
    cases.push((
        "glance download missing snapshot".into(),
        NOT_FOUND,
        Box::new(move || ok(store.download(&l1).map(|d| d.len()))),
    ));
    cases.push((
        "glance download missing image".into(),
        NOT_FOUND,
        Box::new(move || ok(store.download(&l3).map(|d| d.len()))),
    ));
    cases.push(("glance delete missing image".into(), NOT_FOUND, Box::new(move || ok(store.delete(&l4)))));
    cases.push((
        "nova boot, missing snapshot".into(),
        NOT_FOUND,
        Box::new(move || ok(BootDisk::new(&l2, &uu[2]).run(vms))),
    ));
    cases.push((
        "volume from missing snapshot".into(),
        NOT_FOUND,
        Box::new(move || {
            ok(VolumeFromSnapshot::new(vid, "nosnap", &format!("{m}-vs"), 4 * MIB).run(volumes, &mut Progress::none()))
        }),
    ));
    cases.push((
        "volume from missing image snapshot".into(),
        NOT_FOUND,
        Box::new(move || {
            ok(VolumeFromImage::new(cinder::ImageSnapRef::new("images", gid, "nosnap"), &format!("{m}-vi"), 4 * MIB)
                .run(volumes))
        }),
    ));
    cases.push((
        "volume from missing volume".into(),
        NOT_FOUND,
        Box::new(move || {
            ok(VolumeFromVolume::new(&format!("{m}-nov"), &format!("{m}-vv3"), 4 * MIB)
                .run(volumes, &mut Progress::none()))
        }),
    ));
    cases.push((
        "cinder extend missing volume".into(),
        NOT_FOUND,
        Box::new(move || ok(cinder::extend(volumes, &format!("{m}-nov"), 8 * MIB))),
    ));
    cases.push((
        "cinder revert to missing snapshot".into(),
        NOT_FOUND,
        Box::new(move || ok(cinder::revert_to_snapshot(volumes, vid, "nosnap", &mut Progress::none()))),
    ));
    // Backups: bad ids, missing volume, missing backup.
    cases.push((
        "backup with id 'A/B'".into(),
        INVALID,
        Box::new(move || ok(Backup::new(&VolumeRef::cinder(volumes, vid), backups, "A/B").run(&mut Progress::none()))),
    ));
    cases.push((
        "backup with empty id".into(),
        INVALID,
        Box::new(move || ok(Backup::new(&VolumeRef::cinder(volumes, vid), backups, "").run(&mut Progress::none()))),
    ));
    cases.push((
        "backup of a missing volume".into(),
        NOT_FOUND,
        Box::new(move || {
            ok(Backup::new(&VolumeRef::cinder(volumes, "nosuchvolume-fin"), backups, "fin-b1")
                .run(&mut Progress::none()))
        }),
    ));
    cases.push((
        "restore of a missing backup".into(),
        NOT_FOUND,
        Box::new(move || {
            ok(Restore::new(backups, vid, "fin-nob", &VolumeRef::cinder(volumes, vid)).run(&mut Progress::none()))
        }),
    ));

    let (n, failures, seen) = run_cases(cases);
    let after = state();
    let c = live!();
    let unchanged = before == after;
    let pass = failures.is_empty() && unchanged;
    common::record_figure(
        "fault_input",
        "bad_arguments",
        &format!(
            "{n} bad calls (names, sizes, rbd:// locations, missing snapshots) across recipes: {} typed InvalidArgument/NotFound errors, {} wrong; cluster unchanged: {unchanged}",
            n - failures.len(),
            failures.len()
        ),
        pass,
        json!({ "calls": n, "failures": failures, "unchanged": unchanged, "errors": seen }),
    );

    // Clean up the fixtures (through the recipes, which also proves they still work).
    let snap_del = cinder::delete_snapshot(volumes, vid, "s", cinder::ChildrenPolicy::Refuse);
    let vol_del = cinder::delete_volume(volumes, vid);
    let img_del = store.delete(&up.location);
    assert!(failures.is_empty(), "bad calls handled wrongly:\n{}", failures.join("\n"));
    assert_eq!(before, after, "a bad call changed the cluster");
    snap_del.unwrap();
    vol_del.unwrap();
    img_del.unwrap();
    assert!(marked(&c, &markers).is_empty(), "leftovers: {:?}", marked(&c, &markers));
}

/// The `Error` of a bad call never panics when displayed, and carries the call's name.
#[test]
fn errors_display_their_operation() {
    let e = Location::parse("rbd://a/b").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("location_parse"), "{e}");
    let e: Error = DiffReader::new(&b"rbd diff v9\n"[..]).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Malformed);
    assert!(e.to_string().contains("diff_stream"), "{e}");
}
