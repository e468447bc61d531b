//! Feeds arbitrary bytes through `rbd_core::stream`'s readers (diff v1/v2 and the image v2
//! container) and checks invariants beyond "no panic":
//!
//! * every error is a `diff_stream` error with a byte offset, and never points past the input;
//! * chunking does not change the decoded stream (`max_chunk` 4 MiB vs 7 bytes);
//! * whatever parses re-encodes with `DiffWriter` into a stream that parses to the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbd_core::stream::{
    is_truncation, DiffReader, DiffVersion, DiffWriter, ImageExportReader, Record, DIFF_BANNER_V1, DIFF_BANNER_V2,
    IMAGE_BANNER_V2, STREAM_OP,
};
use rbd_core::{Error, ErrorKind};

fn check_error(e: &Error, input_len: usize) -> String {
    assert_eq!(e.op(), STREAM_OP, "{e}");
    assert_eq!(e.kind(), ErrorKind::Malformed, "{e}");
    let msg = e.message().expect("stream errors carry a message");
    let at = msg.find("at byte ").unwrap_or_else(|| panic!("no byte offset in {msg:?}"));
    let digits: String = msg[at + 8..].chars().take_while(char::is_ascii_digit).collect();
    let pos: u64 = digits.parse().unwrap_or_else(|_| panic!("bad byte offset in {msg:?}"));
    assert!(pos <= input_len as u64, "offset {pos} past the end ({input_len}) in {msg:?}");
    if is_truncation(e) {
        assert!(msg.starts_with("truncated at byte "), "{msg:?}");
    }
    msg.to_string()
}

/// Decodes a whole diff stream; `Err` carries the checked error message.
fn decode(bytes: &[u8], max_chunk: usize) -> Result<(DiffVersion, Vec<Record>), String> {
    let mut r = DiffReader::new(bytes).map_err(|e| check_error(&e, bytes.len()))?.with_max_chunk(max_chunk);
    let mut recs = Vec::new();
    loop {
        let before = r.position();
        match r.next_record() {
            Ok(Some(rec)) => {
                if let Record::Write { data, .. } = &rec {
                    assert!(data.len() <= max_chunk.max(1));
                }
                assert!(r.position() >= before);
                recs.push(rec);
            }
            Ok(None) => break,
            Err(e) => {
                let msg = check_error(&e, bytes.len());
                assert!(r.next_record().is_err(), "a failed reader must stay failed");
                return Err(msg);
            }
        }
    }
    assert_eq!(recs.last(), Some(&Record::End));
    assert!(r.position() <= bytes.len() as u64);
    Ok((r.version(), recs))
}

/// Joins consecutive, contiguous `Write`s so differently chunked decodes compare equal.
fn merge(recs: Vec<Record>) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::with_capacity(recs.len());
    for rec in recs {
        if let (Some(Record::Write { offset: o, data: d }), Record::Write { offset, data }) = (out.last_mut(), &rec) {
            if *o + d.len() as u64 == *offset {
                d.extend_from_slice(data);
                continue;
            }
        }
        out.push(rec);
    }
    out
}

fn diff_invariants(bytes: &[u8]) {
    let big = decode(bytes, 4 << 20);
    let small = decode(bytes, 7);
    match (&big, &small) {
        (Ok((v1, a)), Ok((v2, b))) => {
            assert_eq!(v1, v2);
            assert_eq!(merge(a.clone()), merge(b.clone()), "chunking changed the records");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "chunking changed the error"),
        _ => panic!("chunking changed the outcome: {big:?} vs {small:?}"),
    }
    let Ok((version, recs)) = big else { return };
    if recs.iter().any(|r| matches!(r, Record::Unknown { .. })) {
        return; // skipped payloads cannot be re-encoded
    }
    let mut w = DiffWriter::new(Vec::new(), version).expect("Vec writes never fail");
    for rec in &recs[..recs.len() - 1] {
        w.record(rec).expect("decoded records re-encode");
    }
    let encoded = w.end().expect("Vec writes never fail");
    let (v, again) = decode(&encoded, 4 << 20).expect("re-encoded stream parses");
    assert_eq!(v, version);
    assert_eq!(merge(again), merge(recs));
}

fn image_invariants(bytes: &[u8]) {
    let Ok(mut r) = ImageExportReader::new(bytes).map_err(|e| check_error(&e, bytes.len())) else { return };
    if bytes.len() % 3 == 0 {
        r.set_max_chunk(5);
    }
    let count = r.diff_count();
    let mut i = 0u64;
    loop {
        match r.next_diff() {
            Ok(Some(mut d)) => {
                assert_eq!(d.index(), i);
                // Read some diffs fully, some partly, and drop others unread.
                let limit = match i % 3 {
                    0 => usize::MAX,
                    1 => 2,
                    _ => 0,
                };
                for _ in 0..limit {
                    match d.next_record() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            check_error(&e, bytes.len());
                            break;
                        }
                    }
                }
                i += 1;
            }
            Ok(None) => {
                assert_eq!(i, count);
                break;
            }
            Err(e) => {
                check_error(&e, bytes.len());
                break;
            }
        }
        assert!(r.position() <= bytes.len() as u64);
    }
}

fn prefixed(banner: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(banner.len() + data.len());
    v.extend_from_slice(banner);
    v.extend_from_slice(data);
    v
}

fuzz_target!(|data: &[u8]| {
    diff_invariants(data);
    diff_invariants(&prefixed(DIFF_BANNER_V1, data));
    diff_invariants(&prefixed(DIFF_BANNER_V2, data));
    image_invariants(data);
    image_invariants(&prefixed(IMAGE_BANNER_V2, data));
});
