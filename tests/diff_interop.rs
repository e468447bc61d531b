//! Live interop of the diff engine with the Pacific `rbd` CLI, both directions: our export →
//! `rbd import-diff`, `rbd export-diff` → our import (from a file and from a pipe), byte identity
//! of the CLI-identical mode, the fine-grained mode's smaller streams, the image v2 container
//! against `rbd export/import --export-format 2`, and the importer's error contract (missing
//! from-snap, existing to-snap, truncation then rollback, malformed input).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{unique, ScratchImage};
use rbd_core::export::{DiffExport, ImageExport};
use rbd_core::import::{rollback_to_from_snap, DiffImport, ImageImport};
use rbd_core::stream::{is_truncation, DiffReader, Record};
use rbd_core::{ErrorKind, Image, Pool, Progress, SnapNamespace};
use sha2::{Digest, Sha256};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `rbd -c $CEPH_CONF --id <client> args...`; panics with stderr unless it succeeds.
fn rbd(args: &[&str]) -> Vec<u8> {
    let out = rbd_cmd(args).output().expect("run the rbd CLI");
    assert!(out.status.success(), "rbd {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn rbd_cmd(args: &[&str]) -> Command {
    let conf = std::env::var("CEPH_CONF").expect("CEPH_CONF is set for live tests");
    let mut c = Command::new("rbd");
    c.arg("-c").arg(conf).arg("--id").arg(common::client_id()).arg("--no-progress").args(args);
    c
}

/// A temporary file path removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        TempPath(std::env::temp_dir().join(format!("{}.bin", unique(tag))))
    }
    fn s(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
    fn read(&self) -> Vec<u8> {
        std::fs::read(&self.0).expect("read temp file")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes an image (with snapshots) on drop.
struct Cleanup(Pool, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::purge_image(&self.0, &self.1);
    }
}

/// sha256 of size + full contents of `pool/name[@snap]`.
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

/// User snapshots as (name, protected), in creation order.
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

/// Builds the standard history on a 20 MiB image (5 objects):
/// * s1: data in objects 0, 1 and 3, a 64 KiB block of written zeros in object 2;
/// * s2: a 64 KiB discard at 0, 512 bytes at 4 MiB, 64 KiB into object 3 (existing), 64 KiB
///   at 17 MiB (object 4, new since s1), grown to 24 MiB with data at 22 MiB;
/// * head: 8 KiB at 1 MiB, plus 4 KiB of zeros written over data at 4 MiB + 64 KiB.
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

/// Our v1 export of `pool/name@to` (head when None) from `from` into a file.
fn our_export(pool: &Pool, name: &str, from: Option<&str>, to: Option<&str>, cli: bool, path: &TempPath) {
    let img = match to {
        Some(s) => Image::open_at_snap(pool, name, s).unwrap(),
        None => Image::open_read_only(pool, name).unwrap(),
    };
    let file = std::fs::File::create(&path.0).unwrap();
    let stats = DiffExport::new(&img).from_snap(from).cli_identical(cli).run(file, &mut Progress::none()).unwrap();
    assert_eq!(stats.stream_bytes, std::fs::metadata(&path.0).unwrap().len(), "stream_bytes is the file size");
}

fn cli_export(pool: &Pool, name: &str, from: Option<&str>, to: Option<&str>, whole_object: bool, path: &Path) {
    let s = spec(pool, name, to);
    let p = path.to_str().unwrap();
    let mut args = vec!["export-diff", s.as_str(), p];
    if let Some(f) = from {
        args.extend(["--from-snap", f]);
    }
    if whole_object {
        args.push("--whole-object");
    }
    rbd(&args);
}

fn records(bytes: &[u8]) -> Vec<Record> {
    DiffReader::new(bytes).unwrap().collect::<rbd_core::Result<Vec<_>>>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Our export → rbd import-diff
// ---------------------------------------------------------------------------------------------

#[test]
fn our_export_is_accepted_by_rbd_import_diff() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "exp-src", 20 * MIB);
    build_history(&src.open());
    for cli_mode in [false, true] {
        let dst = ScratchImage::new(&c, "rbd", "exp-dst", MIB);
        let dspec = spec(&dst.pool, &dst.name, None);
        // Full to s1, then s1 → s2, then s2 → head (no end snapshot).
        let steps = [(None, Some("s1")), (Some("s1"), Some("s2")), (Some("s2"), None)];
        for (from, to) in steps {
            let f = TempPath::new("exp");
            our_export(&src.pool, &src.name, from, to, cli_mode, &f);
            rbd(&["import-diff", f.s(), &dspec]);
            match to {
                Some(t) => assert_eq!(
                    sha_at(&dst.pool, &dst.name, Some(t)),
                    sha_at(&src.pool, &src.name, Some(t)),
                    "{t} (cli mode {cli_mode})"
                ),
                None => assert_eq!(sha_at(&dst.pool, &dst.name, None), sha_at(&src.pool, &src.name, None)),
            }
        }
        assert_eq!(snaps(&dst.pool, &dst.name), snaps(&src.pool, &src.name));
    }
}

// ---------------------------------------------------------------------------------------------
// rbd export-diff → our import (file and pipe)
// ---------------------------------------------------------------------------------------------

#[test]
fn rbd_export_diff_is_accepted_by_our_import_from_file_and_pipe() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "imp-src", 20 * MIB);
    build_history(&src.open());
    let dst = ScratchImage::new(&c, "rbd", "imp-dst", MIB);
    let dimg = dst.open();

    // Full diff to s1 from a file.
    let f = TempPath::new("imp-full");
    cli_export(&src.pool, &src.name, None, Some("s1"), false, &f.0);
    let len = std::fs::metadata(&f.0).unwrap().len();
    let mut seen = Vec::new();
    let mut cb = |d: u64, t: u64| {
        seen.push((d, t));
        std::ops::ControlFlow::Continue(())
    };
    let mut p = Progress::new(&mut cb);
    let stats = DiffImport::new(&dimg).expected_len(Some(len)).run(std::fs::File::open(&f.0).unwrap(), &mut p).unwrap();
    drop(p);
    assert_eq!(stats.snapshots, vec!["s1".to_string()]);
    assert_eq!(stats.stream_bytes, len);
    assert_eq!(stats.size, Some(20 * MIB));
    assert_eq!(seen.last(), Some(&(len, len)), "progress ends at the stream length");
    assert_eq!(sha_at(&dst.pool, &dst.name, Some("s1")), sha_at(&src.pool, &src.name, Some("s1")));

    // s1 → s2 from a pipe (the CLI writing to stdout).
    let s = spec(&src.pool, &src.name, Some("s2"));
    let mut child = rbd_cmd(&["export-diff", "--from-snap", "s1", &s, "-"]).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stats = DiffImport::new(&dimg).in_flight(8).run(stdout, &mut Progress::none()).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(stats.from_snap.as_deref(), Some("s1"));
    assert_eq!(stats.snapshots, vec!["s2".to_string()]);
    assert_eq!(stats.size, Some(24 * MIB));
    assert_eq!(sha_at(&dst.pool, &dst.name, Some("s2")), sha_at(&src.pool, &src.name, Some("s2")));

    // s2 → head, whole-object.
    let f = TempPath::new("imp-head");
    cli_export(&src.pool, &src.name, Some("s2"), None, true, &f.0);
    let stats = DiffImport::new(&dimg).run(std::fs::File::open(&f.0).unwrap(), &mut Progress::none()).unwrap();
    assert!(stats.snapshots.is_empty());
    assert_eq!(sha_at(&dst.pool, &dst.name, None), sha_at(&src.pool, &src.name, None));
    assert_eq!(snaps(&dst.pool, &dst.name), snaps(&src.pool, &src.name));
}

// ---------------------------------------------------------------------------------------------
// Byte identity and stream size
// ---------------------------------------------------------------------------------------------

#[test]
fn cli_identical_mode_is_byte_identical_to_rbd_export_diff() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "ident", 20 * MIB);
    build_history(&src.open());
    let cases: [(Option<&str>, Option<&str>, bool); 5] = [
        (None, Some("s1"), false),
        (Some("s1"), Some("s2"), false),
        (Some("s2"), None, false),
        (None, None, false),
        (Some("s1"), Some("s2"), true),
    ];
    for (from, to, whole) in cases {
        let ours = TempPath::new("ident-ours");
        let img = match to {
            Some(s) => Image::open_at_snap(&src.pool, &src.name, s).unwrap(),
            None => Image::open_read_only(&src.pool, &src.name).unwrap(),
        };
        let file = std::fs::File::create(&ours.0).unwrap();
        // Small pieces, so that multi-piece extents are assembled too.
        DiffExport::new(&img)
            .from_snap(from)
            .cli_identical(true)
            .whole_object(whole)
            .max_io(64 * KIB as usize)
            .in_flight(3)
            .run(file, &mut Progress::none())
            .unwrap();
        let theirs = TempPath::new("ident-cli");
        cli_export(&src.pool, &src.name, from, to, whole, &theirs.0);
        let (a, b) = (ours.read(), theirs.read());
        assert!(a == b, "from {from:?} to {to:?} whole {whole}: ours {:?}\ncli {:?}", records(&a), records(&b));
    }
}

#[test]
fn fine_grained_stream_is_smaller_for_sparse_writes_into_new_objects() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "sparse", 16 * MIB);
    let img = src.open();
    img.write(0, &common::pattern(1, 64 * KIB as usize)).unwrap();
    img.snap_create("s1").unwrap();
    // 64 KiB writes 1 MiB into objects that did not exist at s1.
    for k in 1..4u64 {
        img.write(k * 4 * MIB + MIB, &common::pattern(10 + k, 64 * KIB as usize)).unwrap();
    }
    img.snap_create("s2").unwrap();

    let fine = TempPath::new("sparse-fine");
    our_export(&src.pool, &src.name, Some("s1"), Some("s2"), false, &fine);
    let cli = TempPath::new("sparse-cli");
    cli_export(&src.pool, &src.name, Some("s1"), Some("s2"), false, &cli.0);
    let (f, k) = (fine.read(), cli.read());
    let data: u64 = records(&f)
        .iter()
        .map(|r| match r {
            Record::Write { data, .. } => data.len() as u64,
            _ => 0,
        })
        .sum();
    assert_eq!(data, 3 * 64 * KIB, "only the written bytes travel as data");
    assert!(f.len() < k.len(), "fine-grained {} bytes, CLI {} bytes", f.len(), k.len());

    // Both land the same content.
    let dst = ScratchImage::new(&c, "rbd", "sparse-dst", 16 * MIB);
    let full = TempPath::new("sparse-full");
    our_export(&src.pool, &src.name, None, Some("s1"), false, &full);
    let dspec = spec(&dst.pool, &dst.name, None);
    rbd(&["import-diff", full.s(), &dspec]);
    rbd(&["import-diff", fine.s(), &dspec]);
    assert_eq!(sha_at(&dst.pool, &dst.name, Some("s2")), sha_at(&src.pool, &src.name, Some("s2")));
}

// ---------------------------------------------------------------------------------------------
// Image v2 container
// ---------------------------------------------------------------------------------------------

#[test]
fn image_v2_container_both_directions() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "v2-src", 20 * MIB);
    let img = src.open();
    build_history(&img);
    img.snap_protect("s1").unwrap();
    img.metadata_set("user.note", "hello").unwrap();

    // Byte identity with the CLI in CLI-identical mode.
    let ours = TempPath::new("v2-ours");
    let stats = ImageExport::new(&img)
        .cli_identical(true)
        .run(std::fs::File::create(&ours.0).unwrap(), &mut Progress::none())
        .unwrap();
    assert_eq!(stats.diffs, 3);
    let theirs = TempPath::new("v2-cli");
    rbd(&["export", "--export-format", "2", &spec(&src.pool, &src.name, None), theirs.s()]);
    assert!(ours.read() == theirs.read(), "image v2 export differs from the CLI's");

    // Ours (fine-grained) → rbd import --export-format 2.
    let fine = TempPath::new("v2-fine");
    ImageExport::new(&img).run(std::fs::File::create(&fine.0).unwrap(), &mut Progress::none()).unwrap();
    let cli_dst = Cleanup(src.pool.clone(), unique("v2-clidst"));
    rbd(&["import", "--export-format", "2", fine.s(), &spec(&src.pool, &cli_dst.1, None)]);

    // CLI → our import.
    let our_dst = Cleanup(src.pool.clone(), unique("v2-ourdst"));
    let stats = ImageImport::new(&src.pool, &our_dst.1)
        .run(std::fs::File::open(&theirs.0).unwrap(), &mut Progress::none())
        .unwrap();
    assert_eq!(stats.diffs, 3);
    assert_eq!(stats.snapshots, vec!["s1".to_string(), "s2".to_string()]);
    assert_eq!(stats.protected, vec!["s1".to_string()]);

    let expected = snaps(&src.pool, &src.name);
    assert_eq!(expected, vec![("s1".to_string(), true), ("s2".to_string(), false)]);
    for dst in [&cli_dst.1, &our_dst.1] {
        assert_eq!(snaps(&src.pool, dst), expected, "{dst}");
        for s in [Some("s1"), Some("s2"), None] {
            assert_eq!(sha_at(&src.pool, dst, s), sha_at(&src.pool, &src.name, s), "{dst}@{s:?}");
        }
        let d = Image::open_read_only(&src.pool, dst).unwrap();
        assert_eq!(d.metadata_get("user.note").unwrap(), "hello");
        assert_eq!(d.stat().unwrap().order, img.stat().unwrap().order);
        assert_eq!(d.features().unwrap(), img.features().unwrap());
    }

    // Importing onto an existing name fails before anything is read.
    let e = ImageImport::new(&src.pool, &our_dst.1).run(&b"garbage"[..], &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
}

#[test]
fn image_v2_import_of_a_truncated_container_removes_the_image() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "v2-trunc", 20 * MIB);
    let img = src.open();
    build_history(&img);
    img.snap_protect("s1").unwrap();
    let mut bytes = Vec::new();
    ImageExport::new(&img).run(&mut bytes, &mut Progress::none()).unwrap();
    bytes.truncate(bytes.len() - 100);
    let name = unique("v2-trunc-dst");
    let _guard = Cleanup(src.pool.clone(), name.clone());
    let e = ImageImport::new(&src.pool, &name).run(&bytes[..], &mut Progress::none()).unwrap_err();
    assert!(is_truncation(&e), "{e}");
    assert!(!src.pool.image_exists(&name).unwrap(), "the partial image was removed");
}

// ---------------------------------------------------------------------------------------------
// Importer error contract
// ---------------------------------------------------------------------------------------------

#[test]
fn import_with_missing_from_snap_fails_before_writing() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "nofrom-src", 20 * MIB);
    build_history(&src.open());
    let mut stream = Vec::new();
    let at_s2 = Image::open_at_snap(&src.pool, &src.name, "s2").unwrap();
    DiffExport::new(&at_s2).from_snap(Some("s1")).run(&mut stream, &mut Progress::none()).unwrap();

    let dst = ScratchImage::new(&c, "rbd", "nofrom-dst", 8 * MIB);
    let dimg = dst.open();
    dimg.write(0, &common::pattern(9, 4096)).unwrap();
    let before = sha_at(&dst.pool, &dst.name, None);
    let e = DiffImport::new(&dimg).run(&stream[..], &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("start snapshot 's1'"), "{e}");
    assert!(e.to_string().contains("nothing was written"), "{e}");
    assert_eq!(sha_at(&dst.pool, &dst.name, None), before, "image unchanged");
    assert!(snaps(&dst.pool, &dst.name).is_empty());
}

#[test]
fn import_with_existing_to_snap_is_exists() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "exists-src", 20 * MIB);
    build_history(&src.open());
    let mut stream = Vec::new();
    let at_s1 = Image::open_at_snap(&src.pool, &src.name, "s1").unwrap();
    DiffExport::new(&at_s1).run(&mut stream, &mut Progress::none()).unwrap();

    let dst = ScratchImage::new(&c, "rbd", "exists-dst", 8 * MIB);
    let dimg = dst.open();
    dimg.snap_create("s1").unwrap();
    let before = sha_at(&dst.pool, &dst.name, None);
    let e = DiffImport::new(&dimg).run(&stream[..], &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert_eq!(sha_at(&dst.pool, &dst.name, None), before);
    assert_eq!(dimg.size().unwrap(), 8 * MIB, "not resized");
}

#[test]
fn truncated_import_is_reported_and_rollback_restores_the_from_snap() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "trunc-src", 20 * MIB);
    build_history(&src.open());
    let dst = ScratchImage::new(&c, "rbd", "trunc-dst", MIB);
    let dimg = dst.open();

    let mut full = Vec::new();
    DiffExport::new(&Image::open_at_snap(&src.pool, &src.name, "s1").unwrap())
        .run(&mut full, &mut Progress::none())
        .unwrap();
    DiffImport::new(&dimg).run(&full[..], &mut Progress::none()).unwrap();
    let at_s1 = sha_at(&dst.pool, &dst.name, Some("s1"));
    assert_eq!(sha_at(&dst.pool, &dst.name, None), at_s1);

    let mut incr = Vec::new();
    DiffExport::new(&Image::open_at_snap(&src.pool, &src.name, "s2").unwrap())
        .from_snap(Some("s1"))
        .run(&mut incr, &mut Progress::none())
        .unwrap();
    // Cut inside the last data record, after some records were applied.
    let recs = records(&incr);
    assert!(recs.iter().filter(|r| matches!(r, Record::Write { .. })).count() >= 2, "{recs:?}");
    let cut = incr.len() - 1000;
    let e = DiffImport::new(&dimg).run(&incr[..cut], &mut Progress::none()).unwrap_err();
    assert!(is_truncation(&e), "{e}");
    assert_eq!(e.kind(), ErrorKind::Malformed);
    assert!(e.to_string().contains(&format!("truncated at byte {cut}")), "{e}");
    assert_eq!(snaps(&dst.pool, &dst.name), vec![("s1".to_string(), false)], "no s2 was created");
    assert_ne!(sha_at(&dst.pool, &dst.name, None), at_s1, "part of the diff landed on the head");

    let mut calls = 0u64;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        std::ops::ControlFlow::Continue(())
    };
    rollback_to_from_snap(&dimg, "s1", &mut Progress::new(&mut cb)).unwrap();
    assert!(calls > 0, "rollback reported progress");
    assert_eq!(sha_at(&dst.pool, &dst.name, None), at_s1, "head is back at s1");

    // The complete diff applies afterwards.
    DiffImport::new(&dimg).run(&incr[..], &mut Progress::none()).unwrap();
    assert_eq!(sha_at(&dst.pool, &dst.name, Some("s2")), sha_at(&src.pool, &src.name, Some("s2")));

    let e = rollback_to_from_snap(&dimg, "nope", &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn malformed_input_is_a_typed_error_naming_the_offset() {
    let c = live!();
    let dst = ScratchImage::new(&c, "rbd", "malformed", 4 * MIB);
    let dimg = dst.open();
    let before = sha_at(&dst.pool, &dst.name, None);
    let cases: [(&[u8], &str); 5] = [
        (b"rbd diff v9\n", "bad diff banner at byte 0"),
        (b"rbd diff v2\ne", "accepts only v1"),
        (b"rbd diff v1\nQ", "unknown tag 'Q' at byte 12"),
        (b"rbd diff v1\ns\x00\x00\x40\x00\x00\x00\x00\x00w\x00\x00\x40\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00x", "past the end of the image"),
        (b"rbd diff v1\nz\x00\x00", "truncated at byte 15"),
    ];
    for (input, want) in cases {
        let e = DiffImport::new(&dimg).run(input, &mut Progress::none()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed, "{e}");
        assert!(e.to_string().contains(want), "{e} (wanted {want:?})");
    }
    assert_eq!(sha_at(&dst.pool, &dst.name, None), before);

    // A read-only handle is refused up front.
    let ro = Image::open_read_only(&dst.pool, &dst.name).unwrap();
    let e = DiffImport::new(&ro).run(&b"rbd diff v1\ne"[..], &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[test]
fn export_errors_and_cancellation() {
    let c = live!();
    let src = ScratchImage::new(&c, "rbd", "exp-err", 20 * MIB);
    build_history(&src.open());
    let at_s2 = Image::open_at_snap(&src.pool, &src.name, "s2").unwrap();
    let e = DiffExport::new(&at_s2).from_snap(Some("nope")).run(Vec::new(), &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    let mut n = 0;
    let mut cb = |_d: u64, _t: u64| {
        n += 1;
        if n > 2 {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    };
    let mut out = Vec::new();
    let e = DiffExport::new(&at_s2).max_io(64 * KIB as usize).run(&mut out, &mut Progress::new(&mut cb)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
}
