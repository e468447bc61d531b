//! Unit tests against the golden streams written by the Pacific 16.2.15 `rbd` CLI (copied from
//! `shared/golden/` into `rbd-core/tests/golden/` so a clean checkout has them).

use super::*;
use crate::error::{Error, ErrorKind, Result};
use std::io::{self, Read};

macro_rules! golden {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/", $name)).as_slice()
    };
}

const F_V1: &[u8] = golden!("f_v1.diff");
const F_FULL_V1: &[u8] = golden!("f_full_v1.diff");
const HAND_V1: &[u8] = golden!("hand_v1.diff");
const TRUNC: &[u8] = golden!("trunc.diff");
const BADFROM: &[u8] = golden!("badfrom.diff");
const F_EXP2: &[u8] = golden!("f.exp2");

/// A record with `Write` data reduced to its length, for comparing against the README tables.
#[derive(Debug, PartialEq, Eq)]
enum R {
    F(&'static str),
    T(&'static str),
    S(u64),
    P(bool),
    W(u64, usize),
    Z(u64, u64),
    E,
    U(u8, u64),
}

fn summary(rec: &Record) -> R {
    let leak = |s: &String| -> &'static str { Box::leak(s.clone().into_boxed_str()) };
    match rec {
        Record::FromSnap(s) => R::F(leak(s)),
        Record::ToSnap(s) => R::T(leak(s)),
        Record::Size(s) => R::S(*s),
        Record::Protected(p) => R::P(*p),
        Record::Write { offset, data } => R::W(*offset, data.len()),
        Record::Zero { offset, len } => R::Z(*offset, *len),
        Record::End => R::E,
        Record::Unknown { tag, len } => R::U(*tag, *len),
    }
}

fn read_all<T: Read>(r: &mut DiffReader<T>) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok(out)
}

fn parse(bytes: &[u8]) -> Result<Vec<Record>> {
    read_all(&mut DiffReader::new(bytes)?)
}

fn parse_err(bytes: &[u8]) -> Error {
    match parse(bytes) {
        Ok(recs) => panic!("expected an error, parsed {recs:?}"),
        Err(e) => e,
    }
}

fn summaries(recs: &[Record]) -> Vec<R> {
    recs.iter().map(summary).collect()
}

/// Re-encodes `recs` with a writer of `version`.
fn encode(version: DiffVersion, recs: &[Record]) -> Vec<u8> {
    let mut w = DiffWriter::new(Vec::new(), version).unwrap();
    for rec in recs {
        if *rec == Record::End {
            break;
        }
        w.record(rec).unwrap();
    }
    let expected = w.bytes_written() + 1;
    let out = w.end().unwrap();
    assert_eq!(out.len() as u64, expected);
    out
}

fn assert_malformed(e: &Error, needle: &str) {
    assert_eq!(e.kind(), ErrorKind::Malformed, "{e}");
    assert_eq!(e.op(), STREAM_OP, "{e}");
    assert_eq!(e.errno(), libc::EBADMSG, "{e}");
    let msg = e.message().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    assert!(msg.contains("at byte "), "message {msg:?} has no byte offset");
}

// --- golden files parse to the README records ---------------------------------------------------

#[test]
fn golden_f_v1() {
    let mut r = DiffReader::new(F_V1).unwrap();
    assert_eq!(r.version(), DiffVersion::V1);
    let recs = read_all(&mut r).unwrap();
    assert_eq!(summaries(&recs), [R::F("s1"), R::T("s2"), R::S(12582912), R::Z(0, 65536), R::W(4194304, 512), R::E]);
    assert_eq!(recs[4], Record::Write { offset: 4194304, data: vec![b'E'; 512] });
    assert_eq!(r.position(), F_V1.len() as u64);
    assert!(r.is_finished());
}

#[test]
fn golden_f_full_v1() {
    let recs = parse(F_FULL_V1).unwrap();
    assert_eq!(summaries(&recs), [R::T("s1"), R::S(8388608), R::W(0, 65536), R::W(4194304, 65536), R::E]);
    assert_eq!(recs[2], Record::Write { offset: 0, data: vec![b'C'; 65536] });
    assert_eq!(recs[3], Record::Write { offset: 4194304, data: vec![b'D'; 65536] });
}

#[test]
fn golden_hand_v1() {
    let recs = parse(HAND_V1).unwrap();
    assert_eq!(
        recs,
        [
            Record::ToSnap("h1".into()),
            Record::Size(4194304),
            Record::Write { offset: 8192, data: b"HELLO".to_vec() },
            Record::Zero { offset: 0, len: 4096 },
            Record::End,
        ]
    );
}

#[test]
fn golden_badfrom_parses_its_failure_is_semantic() {
    assert_eq!(parse(BADFROM).unwrap(), [Record::FromSnap("zz".into()), Record::End]);
}

#[test]
fn golden_trunc_fails_as_truncation_with_offset() {
    let mut r = DiffReader::new(TRUNC).unwrap();
    assert_eq!(r.next_record().unwrap(), Some(Record::ToSnap("h1".into())));
    assert_eq!(r.next_record().unwrap(), Some(Record::Size(4194304)));
    let e = r.next_record().unwrap_err();
    assert!(is_truncation(&e), "{e}");
    assert_malformed(&e, "truncated at byte 40");
    assert!(e.message().unwrap().contains("'w' record at byte 28"), "{e}");
    // The reader stays failed; the iterator form stops.
    assert!(r.next_record().is_err());
    assert!(r.next().is_none());
}

#[test]
fn golden_f_exp2() {
    let mut r = ImageExportReader::new(F_EXP2).unwrap();
    assert_eq!(
        *r.header(),
        ImageHeader {
            order: Some(22),
            features: Some(61),
            stripe_unit: Some(4194304),
            stripe_count: Some(1),
            metadata: vec![("conf_rbd_cache".into(), "false".into())],
        }
    );
    assert_eq!(r.diff_count(), 3);
    let expected = [
        vec![R::T("s1"), R::P(false), R::S(8388608), R::W(0, 65536), R::W(4194304, 65536), R::E],
        vec![R::F("s1"), R::T("s2"), R::P(true), R::S(12582912), R::Z(0, 65536), R::W(4194304, 512), R::E],
        vec![R::F("s2"), R::S(12582912), R::E],
    ];
    let mut n = 0;
    while let Some(mut diff) = r.next_diff().unwrap() {
        assert_eq!(diff.index(), n);
        assert_eq!(diff.version(), DiffVersion::V2);
        let recs = read_all(&mut diff).unwrap();
        assert_eq!(summaries(&recs), expected[n as usize], "diff {n}");
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(r.position(), F_EXP2.len() as u64);
    assert!(r.next_diff().unwrap().is_none());
}

// --- byte-identical round trips ------------------------------------------------------------------

#[test]
fn v1_round_trips_are_byte_identical() {
    for (name, golden) in [("f_v1", F_V1), ("f_full_v1", F_FULL_V1), ("hand_v1", HAND_V1), ("badfrom", BADFROM)] {
        let recs = parse(golden).unwrap();
        assert_eq!(encode(DiffVersion::V1, &recs), golden, "{name}");
    }
}

#[test]
fn f_exp2_round_trip_is_byte_identical() {
    let mut r = ImageExportReader::new(F_EXP2).unwrap();
    let mut w = ImageExportWriter::new(Vec::new(), r.header()).unwrap();
    w.begin_diffs(r.diff_count()).unwrap();
    while let Some(mut diff) = r.next_diff().unwrap() {
        // Each embedded v2 stream on its own is also reproduced exactly.
        let start = diff.position() as usize - DIFF_BANNER_V2.len();
        let recs = read_all(&mut diff).unwrap();
        let end = diff.position() as usize;
        assert_eq!(encode(DiffVersion::V2, &recs), &F_EXP2[start..end]);

        let mut d = w.next_diff().unwrap();
        for rec in &recs[..recs.len() - 1] {
            d.record(rec).unwrap();
        }
        d.end().unwrap();
    }
    let expected_len = w.bytes_written();
    let out = w.finish().unwrap();
    assert_eq!(out.len() as u64, expected_len);
    assert!(out == F_EXP2, "image export re-encoding differs from f.exp2");
}

// --- truncation everywhere -----------------------------------------------------------------------

fn assert_every_prefix_is_truncation(name: &str, bytes: &[u8]) {
    for cut in 0..bytes.len() {
        let e = parse_err(&bytes[..cut]);
        assert!(is_truncation(&e), "{name} cut at {cut}: {e}");
        assert_malformed(&e, &format!("truncated at byte {cut}"));
    }
    assert!(parse(bytes).is_ok());
}

#[test]
fn every_prefix_of_f_v1_is_truncated() {
    assert_every_prefix_is_truncation("f_v1", F_V1);
}

#[test]
fn every_prefix_of_hand_v1_is_truncated() {
    assert_every_prefix_is_truncation("hand_v1", HAND_V1);
}

#[test]
fn every_prefix_of_badfrom_is_truncated() {
    assert_every_prefix_is_truncation("badfrom", BADFROM);
}

fn read_image_export(bytes: &[u8]) -> Result<Vec<Vec<Record>>> {
    let mut r = ImageExportReader::new(bytes)?;
    let mut out = Vec::new();
    while let Some(mut d) = r.next_diff()? {
        out.push(read_all(&mut d)?);
    }
    Ok(out)
}

#[test]
fn prefixes_of_f_exp2_are_truncated() {
    // Every cut in the header and around each record boundary, plus a stride through the data.
    let mut cuts: Vec<usize> = (0..400).collect();
    cuts.extend((400..F_EXP2.len()).step_by(997));
    cuts.extend(F_EXP2.len() - 700..F_EXP2.len());
    for cut in cuts {
        let e = read_image_export(&F_EXP2[..cut]).unwrap_err();
        assert!(is_truncation(&e), "cut at {cut}: {e}");
        assert_malformed(&e, &format!("truncated at byte {cut}"));
    }
    assert_eq!(read_image_export(F_EXP2).unwrap().len(), 3);
}

// --- malformed input -----------------------------------------------------------------------------

#[test]
fn bad_banner() {
    for bytes in [&b"rbd diff v3\n"[..], b"RBD", b"rbd image v2\nO", b"\0\0\0\0\0\0\0\0\0\0\0\0"] {
        let e = DiffReader::new(bytes).unwrap_err();
        assert!(!is_truncation(&e), "{e}");
        assert_malformed(&e, "bad diff banner at byte 0");
    }
    // A banner cut short is a truncation, not a bad banner.
    let e = DiffReader::new(&b"rbd diff"[..]).unwrap_err();
    assert!(is_truncation(&e), "{e}");
    let e = ImageExportReader::new(F_V1).unwrap_err();
    assert_malformed(&e, "bad image export banner at byte 0");
}

#[test]
fn unknown_tag_in_v1_fails() {
    let mut bytes = HAND_V1[..28].to_vec(); // banner, t, s
    bytes.push(b'x');
    bytes.extend_from_slice(&[0; 16]);
    let e = parse_err(&bytes);
    assert!(!is_truncation(&e));
    assert_malformed(&e, "unknown tag 'x' at byte 28");
    // v2-only 'p' is unknown in v1.
    let e = parse_err(b"rbd diff v1\np\x01e");
    assert_malformed(&e, "unknown tag 'p' at byte 12");
}

#[test]
fn unknown_tag_in_v2_is_skipped() {
    let mut bytes = DIFF_BANNER_V2.to_vec();
    bytes.push(b'X');
    bytes.extend_from_slice(&5u64.to_le_bytes());
    bytes.extend_from_slice(b"abcde");
    bytes.push(b'Y');
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.push(b's');
    bytes.extend_from_slice(&8u64.to_le_bytes());
    bytes.extend_from_slice(&42u64.to_le_bytes());
    bytes.push(b'e');
    let recs = parse(&bytes).unwrap();
    assert_eq!(
        recs,
        [Record::Unknown { tag: b'X', len: 5 }, Record::Unknown { tag: b'Y', len: 0 }, Record::Size(42), Record::End]
    );
    // An unknown tag whose payload is cut short is a truncation.
    let e = parse_err(&bytes[..20]);
    assert!(is_truncation(&e), "{e}");
}

fn w_header(offset: u64, len: u64) -> Vec<u8> {
    let mut b = DIFF_BANNER_V1.to_vec();
    b.push(b'w');
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b
}

#[test]
fn huge_lengths_fail_cleanly_without_allocating() {
    // Claimed length near u64::MAX with 3 data bytes present: truncated, not an allocation.
    let mut bytes = w_header(0, u64::MAX - 3);
    bytes.extend_from_slice(b"abc");
    let e = parse_err(&bytes);
    assert!(is_truncation(&e), "{e}");
    assert_malformed(&e, "truncated at byte 32");
    // offset + len overflows.
    let e = parse_err(&w_header(4, u64::MAX - 3));
    assert!(!is_truncation(&e));
    assert_malformed(&e, "overflows u64");
    let mut z = DIFF_BANNER_V1.to_vec();
    z.push(b'z');
    z.extend_from_slice(&u64::MAX.to_le_bytes());
    z.extend_from_slice(&1u64.to_le_bytes());
    assert_malformed(&parse_err(&z), "overflows u64");
    // v2: a length field that cannot be 16 + len.
    let mut v2 = DIFF_BANNER_V2.to_vec();
    v2.push(b'w');
    v2.extend_from_slice(&u64::MAX.to_le_bytes());
    v2.extend_from_slice(&0u64.to_le_bytes());
    v2.extend_from_slice(&(u64::MAX - 15).to_le_bytes());
    assert_malformed(&parse_err(&v2), "does not match");
    // v2 unknown tag claiming u64::MAX bytes: skipped until the stream ends.
    let mut u = DIFF_BANNER_V2.to_vec();
    u.push(b'Q');
    u.extend_from_slice(&u64::MAX.to_le_bytes());
    u.extend_from_slice(&[1; 100]);
    assert!(is_truncation(&parse_err(&u)));
}

#[test]
fn long_name_is_rejected() {
    let mut ok = DIFF_BANNER_V1.to_vec();
    ok.push(b't');
    ok.extend_from_slice(&4096u32.to_le_bytes());
    ok.extend_from_slice(&[b'a'; 4096]);
    ok.push(b'e');
    assert_eq!(parse(&ok).unwrap()[0], Record::ToSnap("a".repeat(4096)));

    let mut long = DIFF_BANNER_V1.to_vec();
    long.push(b'f');
    long.extend_from_slice(&4097u32.to_le_bytes());
    long.extend_from_slice(&[b'a'; 4097]);
    long.push(b'e');
    let e = parse_err(&long);
    assert!(!is_truncation(&e));
    assert_malformed(&e, "longer than 4096");

    let mut huge = DIFF_BANNER_V1.to_vec();
    huge.push(b'f');
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_malformed(&parse_err(&huge), "longer than 4096");

    let mut bad_utf8 = DIFF_BANNER_V1.to_vec();
    bad_utf8.push(b't');
    bad_utf8.extend_from_slice(&2u32.to_le_bytes());
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.push(b'e');
    assert_malformed(&parse_err(&bad_utf8), "not valid UTF-8");
}

#[test]
fn v2_length_fields_must_match_except_p() {
    let rec = |tag: u8, len: u64, payload: &[u8]| {
        let mut b = DIFF_BANNER_V2.to_vec();
        b.push(tag);
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(payload);
        b.push(b'e');
        b
    };
    assert_eq!(parse(&rec(b's', 8, &7u64.to_le_bytes())).unwrap()[0], Record::Size(7));
    assert_malformed(&parse_err(&rec(b's', 9, &7u64.to_le_bytes())), "'s' record at byte 12: length field 9");
    assert_malformed(&parse_err(&rec(b'z', 15, &[0; 16])), "does not match");
    assert_malformed(&parse_err(&rec(b't', 3, b"")), "does not match");
    assert_malformed(&parse_err(&rec(b't', 7, b"\x02\0\0\0s1")), "4 + 2 name bytes");
    let mut w = 0u64.to_le_bytes().to_vec();
    w.extend_from_slice(&3u64.to_le_bytes());
    w.extend_from_slice(b"abc");
    assert_eq!(parse(&rec(b'w', 19, &w)).unwrap()[0], Record::Write { offset: 0, data: b"abc".to_vec() });
    assert_malformed(&parse_err(&rec(b'w', 20, &w)), "16 + 3 data bytes");
    assert_malformed(&parse_err(&rec(b'w', 4, &w)), "at least 16");
    // 'p': Pacific writes length 8 with one byte, newer releases length 1; both read one byte.
    for len in [8, 1, 0, u64::MAX] {
        assert_eq!(parse(&rec(b'p', len, &[1])).unwrap(), [Record::Protected(true), Record::End]);
    }
    assert_eq!(parse(&rec(b'p', 8, &[0])).unwrap()[0], Record::Protected(false));
}

#[test]
fn records_after_end_are_not_read() {
    let mut bytes = HAND_V1.to_vec();
    bytes.extend_from_slice(b"garbage after the end");
    let mut r = DiffReader::new(&bytes[..]).unwrap();
    let recs: Vec<Record> = r.by_ref().collect::<Result<_>>().unwrap();
    assert_eq!(recs.last(), Some(&Record::End));
    assert_eq!(r.next_record().unwrap(), None);
    assert_eq!(r.position(), HAND_V1.len() as u64);
    let mut rest = Vec::new();
    r.into_inner().read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"garbage after the end");
}

#[test]
fn metadata_may_follow_data() {
    let mut w = DiffWriter::new_v1(Vec::new()).unwrap();
    w.zero(0, 10).unwrap();
    w.size(100).unwrap();
    w.to_snap("late").unwrap();
    let bytes = w.end().unwrap();
    assert_eq!(
        parse(&bytes).unwrap(),
        [Record::Zero { offset: 0, len: 10 }, Record::Size(100), Record::ToSnap("late".into()), Record::End]
    );
}

#[test]
fn missing_end_is_truncation() {
    let e = parse_err(&HAND_V1[..HAND_V1.len() - 1]);
    assert!(is_truncation(&e));
    assert_malformed(&e, "before the 'e' (end) record");
}

// --- chunking and reader plumbing ----------------------------------------------------------------

#[test]
fn long_writes_are_chunked_with_advancing_offsets() {
    let mut r = DiffReader::new(F_FULL_V1).unwrap().with_max_chunk(1000);
    assert_eq!(r.max_chunk(), 1000);
    let recs = read_all(&mut r).unwrap();
    let writes: Vec<(u64, usize)> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Write { offset, data } => Some((*offset, data.len())),
            _ => None,
        })
        .collect();
    assert_eq!(writes.len(), 2 * 66); // ceil(65536 / 1000) per record
    assert_eq!(writes[0], (0, 1000));
    assert_eq!(writes[1], (1000, 1000));
    assert_eq!(writes[65], (65000, 536));
    assert_eq!(writes[66], (4194304, 1000));
    // Concatenating the chunks gives back the original records.
    let mut merged: Vec<Record> = Vec::new();
    for rec in recs {
        match (merged.last_mut(), rec) {
            (Some(Record::Write { offset: o, data: d }), Record::Write { offset, data })
                if *o + d.len() as u64 == offset =>
            {
                d.extend_from_slice(&data)
            }
            (_, rec) => merged.push(rec),
        }
    }
    assert_eq!(merged, parse(F_FULL_V1).unwrap());
    // max_chunk 0 is treated as 1.
    assert_eq!(DiffReader::new(HAND_V1).unwrap().with_max_chunk(0).max_chunk(), 1);
}

#[test]
fn empty_write_record_round_trips() {
    let mut w = DiffWriter::new_v2(Vec::new()).unwrap();
    w.write(7, b"").unwrap();
    let bytes = w.end().unwrap();
    let recs = parse(&bytes).unwrap();
    assert_eq!(recs, [Record::Write { offset: 7, data: vec![] }, Record::End]);
    assert_eq!(encode(DiffVersion::V2, &recs), bytes);
}

/// Hands out one byte per read and interrupts every other call.
struct Trickle<'a> {
    data: &'a [u8],
    flip: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.flip = !self.flip;
        if self.flip {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        if self.data.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.data[0];
        self.data = &self.data[1..];
        Ok(1)
    }
}

#[test]
fn byte_at_a_time_reader_gives_the_same_records() {
    for golden in [F_V1, HAND_V1, F_FULL_V1] {
        let mut r = DiffReader::new(Trickle { data: golden, flip: false }).unwrap();
        assert_eq!(read_all(&mut r).unwrap(), parse(golden).unwrap());
    }
    let mut r = ImageExportReader::new(Trickle { data: F_EXP2, flip: false }).unwrap();
    let mut n = 0;
    while let Some(mut d) = r.next_diff().unwrap() {
        read_all(&mut d).unwrap();
        n += 1;
    }
    assert_eq!(n, 3);
}

struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
}

#[test]
fn reader_io_errors_keep_their_kind() {
    let e = DiffReader::new(Failing).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(e.op(), STREAM_OP);
    assert!(!is_truncation(&e));
    assert!(e.message().unwrap().contains("read failed at byte 0"), "{e}");
}

#[test]
fn skip_to_end_validates_without_buffering() {
    let mut r = DiffReader::new(F_FULL_V1).unwrap();
    assert_eq!(r.next_record().unwrap(), Some(Record::ToSnap("s1".into())));
    r.skip_to_end().unwrap();
    assert!(r.is_finished());
    assert_eq!(r.position(), F_FULL_V1.len() as u64);
    let mut r = DiffReader::new(&F_FULL_V1[..1000]).unwrap();
    assert!(is_truncation(&r.skip_to_end().unwrap_err()));
}

// --- image container -----------------------------------------------------------------------------

#[test]
fn image_diffs_can_be_dropped_early() {
    let mut r = ImageExportReader::new(F_EXP2).unwrap().with_max_chunk(4096);
    {
        let mut d0 = r.next_diff().unwrap().unwrap();
        assert_eq!(d0.max_chunk(), 4096);
        assert_eq!(d0.next_record().unwrap(), Some(Record::ToSnap("s1".into())));
        assert_eq!(d0.next_record().unwrap(), Some(Record::Protected(false)));
        assert_eq!(d0.next_record().unwrap(), Some(Record::Size(8388608)));
        // Stop inside the first 'w' record's data.
        assert_eq!(summary(&d0.next_record().unwrap().unwrap()), R::W(0, 4096));
    }
    let d1: Vec<Record> = r.next_diff().unwrap().unwrap().by_ref().collect::<Result<_>>().unwrap();
    assert_eq!(d1[0], Record::FromSnap("s1".into()));
    assert_eq!(d1.last(), Some(&Record::End));
    drop(r.next_diff().unwrap().unwrap()); // never read
    assert!(r.next_diff().unwrap().is_none());
    assert_eq!(r.position(), F_EXP2.len() as u64);
}

#[test]
fn leaked_image_diff_poisons_the_reader() {
    let mut r = ImageExportReader::new(F_EXP2).unwrap();
    std::mem::forget(r.next_diff().unwrap().unwrap());
    assert_malformed(&r.next_diff().unwrap_err(), "already failed");
    assert!(r.next_diff().is_err());
}

fn header_prefix(records: &[u8]) -> Vec<u8> {
    let mut b = IMAGE_BANNER_V2.to_vec();
    b.extend_from_slice(records);
    b
}

#[test]
fn image_header_edge_cases() {
    // Unknown header tags are skipped by length; missing properties are None.
    let mut rec = vec![b'F'];
    rec.extend_from_slice(&3u64.to_le_bytes());
    rec.extend_from_slice(b"xyz");
    rec.push(b'E');
    rec.extend_from_slice(IMAGE_DIFFS_BANNER_V2);
    rec.extend_from_slice(&0u64.to_le_bytes());
    let bytes = header_prefix(&rec);
    let mut r = ImageExportReader::new(&bytes[..]).unwrap();
    assert_eq!(*r.header(), ImageHeader::default());
    assert!(r.next_diff().unwrap().is_none());

    // 'O' with a wrong length.
    let mut rec = vec![b'O'];
    rec.extend_from_slice(&4u64.to_le_bytes());
    rec.extend_from_slice(&[0; 8]);
    assert_malformed(&ImageExportReader::new(&header_prefix(&rec)[..]).unwrap_err(), "length field 4");

    // 'M' whose length disagrees with klen/vlen, and one too large.
    let mut rec = vec![b'M'];
    rec.extend_from_slice(&20u64.to_le_bytes());
    rec.extend_from_slice(&1u32.to_le_bytes());
    rec.push(b'k');
    rec.extend_from_slice(&1u32.to_le_bytes());
    rec.push(b'v');
    assert_malformed(&ImageExportReader::new(&header_prefix(&rec)[..]).unwrap_err(), "8 + 1 key bytes + 1 value");
    let mut rec = vec![b'M'];
    rec.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_malformed(&ImageExportReader::new(&header_prefix(&rec)[..]).unwrap_err(), "longer than");

    // A v1 stream inside the container is rejected.
    let mut rec = vec![b'E'];
    rec.extend_from_slice(IMAGE_DIFFS_BANNER_V2);
    rec.extend_from_slice(&1u64.to_le_bytes());
    rec.extend_from_slice(HAND_V1);
    let bytes = header_prefix(&rec);
    let mut r = ImageExportReader::new(&bytes[..]).unwrap();
    assert_malformed(&r.next_diff().unwrap_err(), "bad diff banner at byte 41");

    // A diff count larger than what follows is a truncation.
    let mut rec = vec![b'E'];
    rec.extend_from_slice(IMAGE_DIFFS_BANNER_V2);
    rec.extend_from_slice(&u64::MAX.to_le_bytes());
    let bytes = header_prefix(&rec);
    let mut r = ImageExportReader::new(&bytes[..]).unwrap();
    assert_eq!(r.diff_count(), u64::MAX);
    assert!(is_truncation(&r.next_diff().unwrap_err()));
}

// --- writer misuse -------------------------------------------------------------------------------

#[test]
fn writer_rejects_invalid_records() {
    let mut w = DiffWriter::new_v1(Vec::new()).unwrap();
    assert_eq!(w.protected(true).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(w.to_snap(&"x".repeat(4097)).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(w.zero(u64::MAX, 1).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(w.write(u64::MAX, b"a").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(w.record(&Record::End).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(w.record(&Record::Unknown { tag: b'X', len: 0 }).unwrap_err().kind(), ErrorKind::InvalidArgument);
    // Nothing was written by the rejected calls.
    assert_eq!(w.bytes_written(), 12);
    assert_eq!(w.end().unwrap(), b"rbd diff v1\ne");
}

#[test]
fn pacific_p_quirk_is_written() {
    let mut w = DiffWriter::new_v2(Vec::new()).unwrap();
    w.protected(true).unwrap();
    let bytes = w.end().unwrap();
    assert_eq!(&bytes[12..], b"p\x08\0\0\0\0\0\0\0\x01e");
}

#[test]
fn image_writer_enforces_call_order() {
    let mut w = ImageExportWriter::new(Vec::new(), &ImageHeader::default()).unwrap();
    assert_eq!(w.next_diff().unwrap_err().kind(), ErrorKind::InvalidArgument);
    w.begin_diffs(2).unwrap();
    assert_eq!(w.begin_diffs(2).unwrap_err().kind(), ErrorKind::InvalidArgument);
    w.next_diff().unwrap().end().unwrap();
    drop(w.next_diff().unwrap()); // not ended
    let e = w.next_diff().unwrap_err();
    assert!(e.message().unwrap().contains("without end()"), "{e}");
    assert_eq!(w.finish().unwrap_err().kind(), ErrorKind::InvalidArgument);

    let mut w = ImageExportWriter::new(Vec::new(), &ImageHeader::default()).unwrap();
    w.begin_diffs(1).unwrap();
    let e = ImageExportWriter::new(Vec::new(), &ImageHeader::default()).unwrap().finish().unwrap_err();
    assert!(e.message().unwrap().contains("begin_diffs"), "{e}");
    assert!(w.finish().unwrap_err().message().unwrap().contains("only 0 of 1"));
}

struct FullDisk;

impl io::Write for FullDisk {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn writer_io_errors_keep_their_kind() {
    let e = DiffWriter::new_v1(FullDisk).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(e.message().unwrap().contains("write failed at byte 0"), "{e}");
}

// --- sparse extents ------------------------------------------------------------------------------

#[test]
fn sparse_extents_match_import_diff() {
    let all = |data: &[u8], size| sparse_extents(data, size).map(|e| (e.offset, e.len, e.zero)).collect::<Vec<_>>();
    assert!(all(&[], 4096).is_empty());
    assert_eq!(all(&[0; 10], 4096), [(0, 10, true)]);
    assert_eq!(all(&[1; 10], 0), [(0, 10, false)]);
    assert_eq!(all(&[0; 10], 0), [(0, 10, false)]);
    let mut buf = vec![0u8; 5 * 4096 + 100];
    buf[4096] = 1;
    buf[2 * 4096 + 5] = 1;
    buf[5 * 4096 + 99] = 1;
    assert_eq!(
        all(&buf, RBD_DEFAULT_SPARSE_SIZE),
        [(0, 4096, true), (4096, 8192, false), (12288, 8192, true), (20480, 100, false)]
    );
}
