//! Live-cluster tests for image I/O: sync round trips, the AIO window (writer and in-order
//! reader), concurrent use of one handle, handle drop order, diff extents, hole-aware reads,
//! copy / deep copy / sparsify.

mod common;

use std::ops::ControlFlow;

use rbd_core::{
    AioReader, AioWriter, DiffExtent, DiffOptions, ErrorKind, Features, Image, ImageOptions, Pool, Progress,
};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const OBJ: u64 = 4 * MIB;

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Reads the whole image in 4 MiB pieces and returns its sha256.
fn image_sha(img: &Image) -> [u8; 32] {
    let size = img.size().unwrap();
    let mut h = Sha256::new();
    let mut off = 0;
    while off < size {
        let n = (size - off).min(OBJ) as usize;
        let v = img.read_vec(off, n).unwrap();
        assert_eq!(v.len(), n);
        h.update(&v);
        off += n as u64;
    }
    h.finalize().into()
}

/// Removes an image (with snapshots) on drop, for destinations a test creates by copying.
struct Cleanup(Pool, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::purge_image(&self.0, &self.1);
    }
}

fn covered(extents: &[DiffExtent], exists: bool, off: u64, len: u64) -> bool {
    // Every byte of off..off+len is inside some extent with this `exists`.
    let mut pos = off;
    let mut v: Vec<_> = extents.iter().filter(|e| e.exists == exists).collect();
    v.sort_by_key(|e| e.offset);
    for e in v {
        if e.offset <= pos && e.end() > pos {
            pos = e.end();
        }
        if pos >= off + len {
            return true;
        }
    }
    pos >= off + len
}

#[test]
fn sync_write_read_round_trip_with_checksums() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "rt", 16 * MIB);
    let img = s.open();
    let mut expected = vec![0u8; (16 * MIB) as usize];
    // Aligned, unaligned, object-straddling writes.
    for (seed, off, len) in
        [(1u64, 0u64, 4096usize), (2, 12345, 77_777), (3, OBJ - 1000, 5000), (4, 9 * MIB, 3 * MIB as usize)]
    {
        let data = common::pattern(seed, len);
        img.write(off, &data).unwrap();
        expected[off as usize..off as usize + len].copy_from_slice(&data);
        assert_eq!(sha(&img.read_vec(off, len).unwrap()), sha(&data));
    }
    assert_eq!(image_sha(&img), sha(&expected));
    // A fresh handle sees the same bytes.
    drop(img);
    assert_eq!(image_sha(&s.open()), sha(&expected));
}

#[test]
fn aio_writer_64mib_8_in_flight_then_read_back() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "aiow", 64 * MIB);
    let img = s.open();
    let mut whole = Sha256::new();
    let mut w = AioWriter::new(&img, 8).with_flags(rbd_core::fadvise::NOCACHE);
    for i in 0..16u64 {
        let mut buf = w.buffer();
        buf.extend_from_slice(&common::pattern(100 + i, OBJ as usize));
        whole.update(&buf);
        w.write(i * OBJ, buf).unwrap();
        assert!(w.in_flight() <= 8, "window bounded: {}", w.in_flight());
    }
    let stats = w.finish().unwrap();
    assert_eq!(stats.bytes_written, 64 * MIB);
    assert_eq!(stats.ops, 17, "16 writes + the final flush");
    let expected: [u8; 32] = whole.finalize().into();
    assert_eq!(image_sha(&img), expected);
    // Through the AIO reader too.
    let mut r = AioReader::new(&img, 8).nocache(true);
    let mut h = Sha256::new();
    let mut next = 0u64;
    let mut got = 0u64;
    loop {
        while next < 64 * MIB && !r.is_full() {
            r.submit(next, OBJ as usize).unwrap();
            next += OBJ;
        }
        let Some(res) = r.next() else { break };
        let (off, data) = res.unwrap();
        assert_eq!(off, got);
        got += data.len() as u64;
        h.update(&data);
        r.recycle(data);
    }
    assert_eq!(got, 64 * MIB);
    let via_aio: [u8; 32] = h.finalize().into();
    assert_eq!(via_aio, expected);
}

#[test]
fn aio_windows_bounded_by_bytes_as_well_as_count() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "aiob", 32 * MIB);
    let img = s.open();
    let mut whole = Sha256::new();
    // 16 operations allowed, but only 8 MiB of buffers: at most two 4 MiB writes at a time,
    // while 64 KiB writes may fill the whole count.
    let mut w = AioWriter::new(&img, 16).with_max_bytes(8 * MIB);
    for i in 0..8u64 {
        let buf = common::pattern(500 + i, OBJ as usize);
        whole.update(&buf);
        w.write(i * OBJ, buf).unwrap();
        assert!(w.in_flight() <= 2, "byte budget bounds large writes: {}", w.in_flight());
    }
    w.drain().unwrap();
    let mut max_small = 0;
    for i in 0..32u64 {
        w.write(i * 64 * 1024, common::pattern(500 + i / 64, 64 * 1024)).unwrap();
        max_small = max_small.max(w.in_flight());
    }
    assert!(max_small <= 16);
    let stats = w.finish().unwrap();
    assert_eq!(stats.bytes_written, 32 * MIB + 2 * MIB);
    // Restore the first 2 MiB to the large pattern, then read everything back through a
    // byte-bounded reader.
    img.write(0, &common::pattern(500, OBJ as usize)[..2 * MIB as usize]).unwrap();
    let expected: [u8; 32] = whole.finalize().into();
    let mut r = AioReader::new(&img, 16).with_max_bytes(8 * MIB);
    let (mut next, mut h) = (0u64, Sha256::new());
    loop {
        while next < 32 * MIB && !r.is_full() {
            r.submit(next, OBJ as usize).unwrap();
            next += OBJ;
            assert!(r.pending() <= 2, "byte budget bounds queued reads: {}", r.pending());
        }
        let Some(res) = r.next() else { break };
        let (_, data) = res.unwrap();
        h.update(&data);
        r.recycle(data);
    }
    let got: [u8; 32] = h.finalize().into();
    assert_eq!(got, expected);
}

#[test]
fn aio_writer_zeroes_discard_and_flush() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "aioz", 16 * MIB);
    let img = s.open();
    img.write(0, &common::pattern(5, (16 * MIB) as usize)).unwrap();
    let mut w = AioWriter::new(&img, 4);
    w.write_zeroes(MIB, 64 * 1024).unwrap();
    w.discard(OBJ, OBJ).unwrap(); // a whole object: reads back as zeros
    w.write(2 * OBJ, vec![7u8; 4096]).unwrap();
    w.flush_io().unwrap();
    assert_eq!(w.in_flight(), 0);
    let st = w.finish().unwrap();
    assert_eq!((st.bytes_zeroed, st.bytes_discarded, st.bytes_written), (64 * 1024, OBJ, 4096));
    assert!(rbd_core::is_all_zero(&img.read_vec(MIB, 64 * 1024).unwrap()));
    assert!(rbd_core::is_all_zero(&img.read_vec(OBJ, OBJ as usize).unwrap()));
    assert_eq!(img.read_vec(2 * OBJ, 4096).unwrap(), vec![7u8; 4096]);
    assert_eq!(img.read_vec(0, 4096).unwrap(), common::pattern(5, 4096));
}

#[test]
fn aio_writer_dropped_mid_flight_keeps_completed_data() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "aiodrop", 32 * MIB);
    let img = s.open();
    {
        let mut w = AioWriter::new(&img, 8);
        for i in 0..8u64 {
            w.write(i * OBJ, common::pattern(200 + i, OBJ as usize)).unwrap();
        }
        assert_eq!(w.in_flight(), 8);
        // Dropped without finish: Drop waits for all eight before freeing the buffers.
    }
    for i in 0..8u64 {
        assert_eq!(sha(&img.read_vec(i * OBJ, OBJ as usize).unwrap()), sha(&common::pattern(200 + i, OBJ as usize)));
    }
    // A reader dropped with reads in flight does not crash either.
    let mut r = AioReader::new(&img, 8);
    for i in 0..8u64 {
        r.submit(i * OBJ, OBJ as usize).unwrap();
    }
    assert_eq!(r.in_flight(), 8);
    drop(r);
}

#[test]
fn aio_errors_surface() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "aioerr", 8 * MIB);
    let ro = Image::open_read_only(&s.pool, &s.name).unwrap();
    let mut w = AioWriter::new(&ro, 2);
    // The failure of an asynchronous write surfaces on a later call or at finish.
    let mut first = None;
    for i in 0..4u64 {
        if let Err(e) = w.write(i * 4096, vec![1u8; 4096]) {
            first = Some(e);
            break;
        }
    }
    let e = match first {
        Some(e) => {
            // Every later call reports the failure too.
            assert_eq!(w.write(0, vec![1u8; 1]).unwrap_err().kind(), ErrorKind::ReadOnly);
            drop(w);
            e
        }
        None => w.finish().unwrap_err(),
    };
    assert_eq!(e.kind(), ErrorKind::ReadOnly, "{e}");

    // Reads past the end come back as errors from next(), in order.
    let img = s.open();
    let mut r = AioReader::new(&img, 4);
    r.submit(0, 4096).unwrap();
    r.submit(64 * MIB, 4096).unwrap();
    assert_eq!(r.next().unwrap().unwrap().0, 0);
    let e = r.next().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(r.next().is_none());
}

#[test]
fn aio_reader_returns_in_submission_order() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "aior", 12 * MIB);
    let img = s.open();
    for i in 0..12u64 {
        img.write(i * MIB, &common::pattern(300 + i, MIB as usize)).unwrap();
    }
    // Shuffled offsets and mixed lengths; results must come back in submission order.
    let order: Vec<u64> = vec![7, 2, 11, 0, 5, 9, 1, 10, 3, 8, 6, 4];
    let mut r = AioReader::new(&img, 3);
    let mut pending = std::collections::VecDeque::new();
    let mut seen = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if r.is_full() {
            let (off, data) = r.next().unwrap().unwrap();
            let (want_off, want_len) = pending.pop_front().unwrap();
            assert_eq!((off, data.len()), (want_off, want_len));
            seen.push((off, data));
        }
        let len = if k % 2 == 0 { MIB as usize } else { 4096 };
        r.submit(i * MIB, len).unwrap();
        pending.push_back((i * MIB, len));
        assert!(r.in_flight() <= 3);
    }
    while let Some(res) = r.next() {
        let (off, data) = res.unwrap();
        let (want_off, want_len) = pending.pop_front().unwrap();
        assert_eq!((off, data.len()), (want_off, want_len));
        seen.push((off, data));
    }
    assert!(pending.is_empty());
    let offs: Vec<u64> = seen.iter().map(|(o, _)| o / MIB).collect();
    assert_eq!(offs, order);
    for (off, data) in seen {
        let i = off / MIB;
        assert_eq!(data, common::pattern(300 + i, MIB as usize)[..data.len()]);
    }
}

#[test]
fn one_image_from_eight_threads() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "threads", 32 * MIB);
    let img = s.open();
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let img = &img;
            sc.spawn(move || {
                let region = pattern_region(t);
                for (k, chunk) in region.chunks(64 * 1024).enumerate() {
                    img.write(t * OBJ + (k as u64) * 64 * 1024, chunk).unwrap();
                }
                // And some AIO from the same handle at the same time.
                let mut r = AioReader::new(img, 2);
                r.submit(t * OBJ, 4096).unwrap();
                r.next().unwrap().unwrap();
            });
        }
    });
    for t in 0..8u64 {
        assert_eq!(sha(&img.read_vec(t * OBJ, OBJ as usize).unwrap()), sha(&pattern_region(t)), "region {t}");
    }
}

fn pattern_region(t: u64) -> Vec<u8> {
    common::pattern(400 + t, OBJ as usize)
}

#[test]
fn handles_dropped_in_any_order() {
    let _ = live!();
    // Cluster dropped first, then pool, image still usable, then image.
    let own = common::cluster_as(&common::client_id());
    let pool = Pool::open(&own, "rbd").unwrap();
    let name = common::unique("droporder");
    pool.create_image(&name, 4 * MIB, &ImageOptions::new()).unwrap();
    let _cleanup = Cleanup(Pool::open(&common::cluster().unwrap(), "rbd").unwrap(), name.clone());
    let img = Image::open(&pool, &name).unwrap();
    drop(own);
    drop(pool);
    img.write(0, b"still alive").unwrap();
    assert_eq!(img.read_vec(0, 11).unwrap(), b"still alive");
    drop(img);

    // A clone of the cluster handle dropped while an image and a writer are open.
    let c2 = common::cluster_as(&common::client_id());
    let c3 = c2.clone();
    let p2 = Pool::open(&c3, "rbd").unwrap();
    let img2 = Image::open(&p2, &name).unwrap();
    drop(c2);
    drop(c3);
    {
        let mut w = AioWriter::new(&img2, 2);
        w.write(4096, vec![9u8; 4096]).unwrap();
        drop(p2);
        w.finish().unwrap();
    }
    let ro = Image::open_read_only(img2.pool(), &name).unwrap();
    drop(img2);
    assert_eq!(ro.read_vec(4096, 4096).unwrap(), vec![9u8; 4096]);
}

#[test]
fn read_only_and_range_errors() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "roerr", 4 * MIB);
    let img = s.open();
    img.snap_create("s1").unwrap();
    let ro = Image::open_read_only(&s.pool, &s.name).unwrap();
    assert_eq!(ro.write(0, b"x").unwrap_err().kind(), ErrorKind::ReadOnly);
    let at = Image::open_at_snap(&s.pool, &s.name, "s1").unwrap();
    assert_eq!(at.write(0, b"x").unwrap_err().kind(), ErrorKind::ReadOnly);
    let mut buf = [0u8; 16];
    assert_eq!(img.read(4 * MIB + 4096, &mut buf).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        img.read_iterate(8 * MIB, 10, |_, _, _| ControlFlow::Continue(())).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn diff_extents_after_writes_zeroes_and_discard() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "diff", 16 * MIB);
    let img = s.open();
    // Objects 0, 1 and 2 get data; 3 stays empty.
    img.write(0, &common::pattern(1, MIB as usize)).unwrap();
    img.write(OBJ, &common::pattern(2, OBJ as usize)).unwrap();
    img.write(2 * OBJ, &common::pattern(3, MIB as usize)).unwrap();
    img.snap_create("s1").unwrap();
    // After s1: a write in object 0, zeroes in object 2, object 1 discarded whole.
    img.write(2 * MIB, &common::pattern(4, 64 * 1024)).unwrap();
    img.write_zeroes(2 * OBJ + 4096, 64 * 1024, false).unwrap();
    img.discard(OBJ, OBJ).unwrap();

    let size = img.size().unwrap();
    let from_s1 = img.diff_extents(Some("s1"), 0, size, DiffOptions::default()).unwrap();
    eprintln!("from s1: {from_s1:?}");
    assert!(covered(&from_s1, true, 2 * MIB, 64 * 1024), "written range reported: {from_s1:?}");
    assert!(covered(&from_s1, false, OBJ, OBJ), "discarded object reported as zeros: {from_s1:?}");
    assert!(from_s1.iter().all(|e| e.end() <= 3 * OBJ), "object 3 never changed: {from_s1:?}");
    assert!(from_s1.windows(2).all(|w| w[0].offset <= w[1].offset), "sorted");
    // The zeroed range in object 2 is reported in some form (data or zeros).
    assert!(
        covered(&from_s1, true, 2 * OBJ + 4096, 64 * 1024) || covered(&from_s1, false, 2 * OBJ + 4096, 64 * 1024),
        "{from_s1:?}"
    );

    // Whole-object extents are object aligned.
    let whole =
        img.diff_extents(Some("s1"), 0, size, DiffOptions { whole_object: true, ..DiffOptions::default() }).unwrap();
    eprintln!("whole: {whole:?}");
    assert!(!whole.is_empty());
    for e in &whole {
        assert_eq!(e.offset % OBJ, 0, "{whole:?}");
        assert!(e.len % OBJ == 0 || e.end() == size, "{whole:?}");
    }
    assert!(covered(&whole, true, 0, OBJ) || covered(&whole, true, 2 * MIB, 64 * 1024), "{whole:?}");

    // From the beginning of time at s1 (handle opened at the END point s1).
    let at_s1 = Image::open_at_snap(&s.pool, &s.name, "s1").unwrap();
    let all_s1 = at_s1.diff_extents(None, 0, size, DiffOptions::default()).unwrap();
    eprintln!("all at s1: {all_s1:?} head: {:?}", img.diff_extents(None, 0, size, DiffOptions::default()).unwrap());
    assert!(
        covered(&all_s1, true, 0, MIB) && covered(&all_s1, true, OBJ, OBJ) && covered(&all_s1, true, 2 * OBJ, MIB),
        "{all_s1:?}"
    );
    assert!(all_s1.iter().all(|e| e.end() <= 3 * OBJ), "{all_s1:?}");

    // Break stops after the first extent and is not an error.
    let mut calls = 0;
    img.diff_iterate(None, 0, size, DiffOptions::default(), |_| {
        calls += 1;
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(calls, 1);

    // A panic in the callback is resumed in the caller.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = img.diff_iterate(None, 0, size, DiffOptions::default(), |_| panic!("boom"));
    }));
    assert!(r.is_err());

    assert_eq!(
        img.diff_extents(Some("nope"), 0, size, DiffOptions::default()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // allocated_bytes counts what exists at head: objects 0 and 2 (object 1 is gone).
    let alloc = img.allocated_bytes(None).unwrap();
    assert!((MIB + 64 * 1024..=2 * OBJ).contains(&alloc), "allocated {alloc}");
    assert!(at_s1.allocated_bytes(None).unwrap() >= MIB + OBJ + MIB);
}

#[test]
fn read_iterate_reports_holes_and_data() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "holes", 16 * MIB);
    let img = s.open();
    let data = common::pattern(9, MIB as usize);
    img.write(OBJ + 512 * 1024, &data).unwrap();
    let size = img.size().unwrap();
    let mut pieces: Vec<(u64, u64, Option<Vec<u8>>)> = Vec::new();
    img.read_iterate(0, size, |off, len, buf| {
        pieces.push((off, len, buf.map(<[u8]>::to_vec)));
        ControlFlow::Continue(())
    })
    .unwrap();
    // Contiguous cover of the whole image.
    let mut pos = 0;
    for (off, len, buf) in &pieces {
        assert_eq!(*off, pos, "{:?}", pieces.iter().map(|p| (p.0, p.1, p.2.is_some())).collect::<Vec<_>>());
        if let Some(b) = buf {
            assert_eq!(b.len() as u64, *len);
            assert_eq!(sha(b), sha(&img.read_vec(*off, *len as usize).unwrap()), "data at {off}");
        }
        pos += len;
    }
    assert_eq!(pos, size);
    // The unwritten objects are holes; the written range is data.
    let hole_at = |o: u64| pieces.iter().any(|(off, len, b)| b.is_none() && *off <= o && o < off + len);
    let data_at = |o: u64| pieces.iter().any(|(off, len, b)| b.is_some() && *off <= o && o < off + len);
    assert!(hole_at(0) && hole_at(OBJ - 1) && hole_at(2 * OBJ) && hole_at(size - 1));
    assert!(data_at(OBJ + 512 * 1024) && data_at(OBJ + 512 * 1024 + MIB - 1));
    // Reassembling gives the image.
    let mut whole = vec![0u8; size as usize];
    for (off, _, b) in &pieces {
        if let Some(b) = b {
            whole[*off as usize..*off as usize + b.len()].copy_from_slice(b);
        }
    }
    assert_eq!(sha(&whole), image_sha(&img));
    // A sub-range starting inside data reports absolute offsets.
    let mut first = None;
    img.read_iterate(OBJ + 600 * 1024, 4096, |off, len, b| {
        first.get_or_insert((off, len, b.map(<[u8]>::to_vec)));
        ControlFlow::Break(())
    })
    .unwrap();
    let (off, len, b) = first.unwrap();
    assert_eq!((off, len), (OBJ + 600 * 1024, 4096));
    let b = b.expect("data, not a hole");
    let at = data.windows(4096).position(|w| w == &b[..]);
    assert_eq!(sha(&b), sha(&data[88 * 1024..88 * 1024 + 4096]), "found at {at:?}");
}

#[test]
fn copy_to_with_sparse_size_preserves_data_and_stays_sparse() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "cpsrc", 16 * MIB);
    let img = s.open();
    img.write(0, &common::pattern(11, MIB as usize)).unwrap();
    img.write(2 * OBJ, &common::pattern(12, MIB as usize)).unwrap();
    // Zeros written as data: allocated in the source, skipped by a sparse copy.
    img.write(3 * OBJ, &vec![0u8; 2 * MIB as usize]).unwrap();
    let dest_name = common::unique("cpdst");
    let _g = Cleanup(s.pool.clone(), dest_name.clone());
    let mut calls = 0u32;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        ControlFlow::Continue(())
    };
    img.copy_to(&s.pool, &dest_name, &ImageOptions::new(), 4096, &mut Progress::new(&mut cb)).unwrap();
    assert!(calls > 0, "progress reported");
    let dst = Image::open(&s.pool, &dest_name).unwrap();
    assert_eq!(dst.size().unwrap(), 16 * MIB);
    assert_eq!(image_sha(&dst), image_sha(&img));
    let (a_src, a_dst) = (img.allocated_bytes(None).unwrap(), dst.allocated_bytes(None).unwrap());
    assert!(a_dst < a_src, "sparse copy allocates less: src {a_src} dst {a_dst}");
    assert!(a_dst >= 2 * MIB, "the data is allocated: {a_dst}");
    assert!(dst.snapshots().unwrap().is_empty());

    // Stopping from the progress callback cancels.
    let cancel_name = common::unique("cpcancel");
    let _g2 = Cleanup(s.pool.clone(), cancel_name.clone());
    let mut stop = |_d: u64, _t: u64| ControlFlow::Break(());
    let e = img.copy_to(&s.pool, &cancel_name, &ImageOptions::new(), 4096, &mut Progress::new(&mut stop)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert!(
        s.pool.image_exists(&cancel_name).unwrap(),
        "Pacific finishes the copy; the destination is left for the caller"
    );
}

#[test]
fn deep_copy_copies_snapshots() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "dcsrc", 8 * MIB);
    let img = s.open();
    let a = common::pattern(21, MIB as usize);
    let b = common::pattern(22, MIB as usize);
    img.write(0, &a).unwrap();
    img.snap_create("s1").unwrap();
    img.write(0, &b).unwrap();
    let dest_name = common::unique("dcdst");
    let _g = Cleanup(s.pool.clone(), dest_name.clone());
    let mut calls = 0u32;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        ControlFlow::Continue(())
    };
    img.deep_copy_to(&s.pool, &dest_name, &ImageOptions::new(), &mut Progress::new(&mut cb)).unwrap();
    assert!(calls > 0);
    let dst = Image::open(&s.pool, &dest_name).unwrap();
    let names: Vec<String> = dst.snapshots().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["s1".to_string()]);
    assert_eq!(dst.read_vec(0, MIB as usize).unwrap(), b);
    let dst_s1 = Image::open_at_snap(&s.pool, &dest_name, "s1").unwrap();
    assert_eq!(dst_s1.read_vec(0, MIB as usize).unwrap(), a);

    let cancel_name = common::unique("dccancel");
    let _g2 = Cleanup(s.pool.clone(), cancel_name.clone());
    let mut stop = |_d: u64, _t: u64| ControlFlow::Break(());
    let e = img.deep_copy_to(&s.pool, &cancel_name, &ImageOptions::new(), &mut Progress::new(&mut stop)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert!(s.pool.image_exists(&cancel_name).unwrap());
}

#[test]
fn sparsify_deallocates_zeros() {
    let c = live!();
    let mut opts = ImageOptions::new();
    opts.features(Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::OBJECT_MAP | Features::FAST_DIFF);
    let s = common::ScratchImage::with_options(&c, "rbd", "sparsify", 16 * MIB, &opts);
    let img = s.open();
    img.write(0, &vec![0u8; OBJ as usize]).unwrap();
    img.write(2 * OBJ, &common::pattern(31, MIB as usize)).unwrap();
    let before_sha = image_sha(&img);
    let before = img.allocated_bytes(None).unwrap();
    assert!(before >= OBJ + MIB, "zeros are allocated before: {before}");
    for bad in [0usize, 512, 4095, 6000] {
        assert_eq!(img.sparsify(bad, &mut Progress::none()).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    let mut calls = 0u32;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        ControlFlow::Continue(())
    };
    img.sparsify(4096, &mut Progress::new(&mut cb)).unwrap();
    let after = img.allocated_bytes(None).unwrap();
    assert!(after < before, "sparsify freed space: {before} -> {after}");
    assert!(after >= MIB, "data stays: {after}");
    assert_eq!(image_sha(&img), before_sha);

    let mut stop = |_d: u64, _t: u64| ControlFlow::Break(());
    let e = img.sparsify(4096, &mut Progress::new(&mut stop)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
}
