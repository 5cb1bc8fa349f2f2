//! Segment format v1: round trips, golden file, torn tails, corruption.

use flashback_format::segment::{
    block_flags, BlockInfo, Origin, Record, ScannedBlock, Sealed, SegmentHeader, SegmentReader,
    SegmentSummary, SegmentWriter, WriterOptions, BLOCK_HEADER_LEN, HEADER_LEN,
    MAX_BLOCK_RAW_BYTES, SUGGESTED_BLOCK_RAW_BYTES,
};
use flashback_format::spec::{resp_command, SegmentSpec};
use flashback_format::Error;
use std::io::ErrorKind;

const REPLID: &str = "5e2f7c9a1b3d4e6f80912a3b4c5d6e7f8091a2b3";

/// Deterministic xorshift: tests need varied bytes, not a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn header(start_offset: u64) -> SegmentHeader {
    SegmentHeader {
        replid: REPLID.into(),
        start_offset,
        start_db: 0,
        start_in_multi: false,
        created_ms: 1_790_000_000_000,
        origin: Origin::NewGeneration,
    }
}

/// A whole file read through the streaming scanner (the only reader there is), kept for
/// assertions: its blocks, where the valid prefix ends, and each block to decode on demand.
struct Scanned<'a> {
    header: SegmentHeader,
    blocks: Vec<BlockInfo>,
    valid_len: u64,
    torn_tail: bool,
    reader: SegmentReader<&'a [u8]>,
    scanned: Vec<ScannedBlock>,
}

impl Scanned<'_> {
    fn torn_reason(&self) -> Option<&str> {
        self.reader.scanner().torn_reason()
    }

    fn items(&self, i: usize) -> Result<Vec<Item>, Error> {
        self.reader.scanner().decode(&self.scanned[i])
    }

    /// The records of block `i`; a block holding a fragment is refused, as restore's readers
    /// must pass fragments on as they come.
    fn records(&self, i: usize) -> Result<Vec<Record>, Error> {
        assert_eq!(
            self.blocks[i].flags & block_flags::FRAGMENT,
            0,
            "block {i} holds a fragment: read it with items()"
        );
        Ok(self
            .items(i)?
            .into_iter()
            .filter_map(|it| match it {
                Item::Record(r) => Some(r),
                Item::Fragment(_) => None,
            })
            .collect())
    }

    fn summary(&self) -> SegmentSummary {
        self.reader.scanner().summary().expect("header read")
    }
}

fn parse<'a>(name: &str, bytes: &'a [u8], sealed: Sealed) -> Result<Scanned<'a>, Error> {
    let mut reader = SegmentReader::new(name, bytes, bytes.len() as u64, sealed);
    let mut scanned = Vec::new();
    while let Some(b) = reader.next_block()? {
        scanned.push(b);
    }
    let s = reader.scanner();
    Ok(Scanned {
        header: s
            .header()
            .cloned()
            .expect("a scan that did not fail read the header"),
        blocks: s.blocks().to_vec(),
        valid_len: s.valid_len(),
        torn_tail: s.valid_len() < bytes.len() as u64,
        reader,
        scanned,
    })
}

fn all_records(f: &Scanned) -> Vec<Record> {
    (0..f.blocks.len())
        .flat_map(|i| f.records(i).unwrap())
        .collect()
}

/// A spec with binary argv, transactions, db switches, a heartbeat and a catch-up block.
fn varied_spec(rng: &mut Rng, records: usize, per_block: usize) -> SegmentSpec {
    let mut s = SegmentSpec::new(REPLID, 1_000_000, 1_790_000_000_000, Origin::Resume);
    s.header.start_db = 3;
    let mut t = 1_790_000_000_100;
    let mut db = 3;
    for i in 0..records {
        t += rng.next() % 3;
        match i % 50 {
            7 => {
                db = (rng.next() % 16) as u32;
                s.command(t, db, &[b"SELECT".to_vec(), db.to_string().into_bytes()]);
            }
            13 => {
                let k = rng.bytes(5);
                s.transaction(
                    t,
                    db,
                    &[
                        &[&b"INCR"[..], &k[..]][..],
                        &[&b"DEL"[..], &b"x\r\ny"[..]][..],
                    ],
                );
            }
            _ => {
                let klen = 1 + (rng.next() % 40) as usize;
                let key = rng.bytes(klen);
                let vlen = (rng.next() % 200) as usize;
                let val = rng.bytes(vlen);
                s.command(t, db, &[b"SET".to_vec(), key, val]);
            }
        }
        if i % per_block == per_block - 1 {
            if i % (3 * per_block) == 2 * per_block - 1 {
                s.cut_with_flags(t + 5, block_flags::CATCHUP);
            } else {
                s.cut(t + 1);
            }
            if i % (4 * per_block) == per_block - 1 {
                t += 1000;
                s.cut(t); // heartbeat
            }
        }
    }
    s
}

#[test]
fn round_trip_many_records_sealed_and_tail() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let spec = varied_spec(&mut rng, 5000, 300);
    let expected = spec.records();
    let (sealed, summary) = spec.build_sealed_with_summary(1_790_000_100_000).unwrap();
    let f = parse("a.seg", &sealed, Sealed::Yes).unwrap();
    assert_eq!(f.header, spec.header);
    assert_eq!(all_records(&f), expected);
    assert_eq!(f.summary(), summary);
    assert_eq!(summary.record_count, expected.len() as u64);
    assert_eq!(summary.end_offset, expected.last().unwrap().end_offset);
    assert_eq!(summary.end_time_ms, 1_790_000_100_000);
    assert_eq!(summary.end_db, expected.last().unwrap().db);
    assert!(
        f.blocks.iter().any(|b| b.record_count == 0),
        "has heartbeats"
    );
    assert!(f.blocks.iter().any(|b| b.flags == block_flags::CATCHUP));
    assert_eq!(f.valid_len, sealed.len() as u64);

    // A sealed file read as a tail (crash after the footer, before the rename) is read whole.
    let g = parse("a.seg", &sealed, Sealed::No).unwrap();
    assert!(!g.torn_tail);
    assert_eq!(g.summary(), summary);
    assert_eq!(g.blocks, f.blocks);

    let tail = spec.build_tail().unwrap();
    assert_eq!(
        &sealed[..tail.len()],
        &tail[..],
        "the footer is appended to the tail bytes"
    );
    let t = parse("a.tail", &tail, Sealed::No).unwrap();
    assert!(!t.torn_tail && t.torn_reason().is_none());
    assert_eq!(t.valid_len, tail.len() as u64);
    assert_eq!(t.blocks, f.blocks);
    assert_eq!(all_records(&t), expected);
    let ts = t.summary();
    assert_eq!(ts.end_time_ms, f.blocks.last().unwrap().covered_through_ms);
    assert_eq!(
        SegmentSummary {
            end_time_ms: summary.end_time_ms,
            ..ts
        },
        summary
    );

    // A tail is not a sealed segment.
    let e = parse("a.tail", &tail, Sealed::Yes).err().unwrap();
    assert!(e.to_string().contains("footer"), "{e}");
}

#[test]
fn empty_segments_and_heartbeats() {
    let mut w = SegmentWriter::new(Vec::new(), &header(500), WriterOptions::default()).unwrap();
    let b = w.flush_block(1_790_000_000_500, 0).unwrap();
    assert_eq!(
        (
            b.record_count,
            b.start_offset,
            b.end_offset,
            b.first_time_ms,
            b.len
        ),
        (0, 500, 500, 0, BLOCK_HEADER_LEN as u32)
    );
    // A covered-through time going back is raised, not written backwards.
    let b2 = w.flush_block(1_790_000_000_400, 0).unwrap();
    assert_eq!(b2.covered_through_ms, 1_790_000_000_500);
    let t = parse("h.tail", w.get_ref(), Sealed::No).unwrap();
    let s = t.summary();
    assert_eq!(
        (
            s.start_offset,
            s.end_offset,
            s.first_time_ms,
            s.end_time_ms,
            s.record_count,
            s.block_count
        ),
        (500, 500, 0, 1_790_000_000_500, 0, 2)
    );
    assert!(t.records(0).unwrap().is_empty());

    // Header only: end time is the creation time.
    let w = SegmentWriter::new(Vec::new(), &header(500), WriterOptions::default()).unwrap();
    assert_eq!(w.bytes_written(), HEADER_LEN as u64);
    let t = parse("h.tail", w.get_ref(), Sealed::No).unwrap();
    assert_eq!(t.summary().end_time_ms, 1_790_000_000_000);
    assert!(t.blocks.is_empty() && !t.torn_tail);
    let (bytes, s) = w.finish(1_790_000_000_900).unwrap();
    assert_eq!(
        (s.block_count, s.end_time_ms, s.first_time_ms),
        (0, 1_790_000_000_900, 0)
    );
    assert_eq!(parse("h.seg", &bytes, Sealed::Yes).unwrap().summary(), s);
}

#[test]
fn big_record() {
    let mut rng = Rng(42);
    let value = rng.bytes(5 << 20);
    let resp = resp_command(&[&b"SET"[..], b"big", &value]);
    let mut spec = SegmentSpec::new(REPLID, 0, 1, Origin::Roll);
    spec.command(10, 0, &["SET", "a", "1"])
        .record(11, 0, true, resp.clone())
        .command(12, 0, &["DEL", "a"]);
    let bytes = spec.build_sealed(20).unwrap();
    let f = parse("big.seg", &bytes, Sealed::Yes).unwrap();
    let recs = all_records(&f);
    assert_eq!(recs, spec.records());
    assert_eq!(recs[1].resp, resp);
}

#[test]
fn writer_refuses_bad_records_and_stays_usable() {
    let mut w = SegmentWriter::new(Vec::new(), &header(100), WriterOptions::default()).unwrap();
    let r = resp_command(&["SET", "k", "v"]);
    let n = r.len() as u64;
    let rec = |end, t| Record {
        end_offset: end,
        time_ms: t,
        db: 0,
        boundary: true,
        resp: r.clone(),
    };
    w.append(&rec(100 + n, 5)).unwrap();
    for bad in [
        rec(100 + n, 6),
        rec(100 + 2 * n + 1, 6),
        rec(100 + 2 * n, 4),
        Record {
            resp: Vec::new(),
            ..rec(100 + n, 6)
        },
    ] {
        let e = w.append(&bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    let e = w.append(&rec(100 + 2 * n - 1, 6)).unwrap_err();
    assert!(e.to_string().contains("contiguous"), "{e}");
    assert!(SegmentWriter::new(
        Vec::new(),
        &SegmentHeader {
            replid: "abc".into(),
            ..header(0)
        },
        WriterOptions::default()
    )
    .is_err());
    assert_eq!(
        w.flush_block(0, 0x8000).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    w.append(&rec(100 + 2 * n, 5)).unwrap();
    assert_eq!(w.pending().0, 2);
    assert_eq!(w.end_offset(), 100 + 2 * n);
    let b = w.flush_block(3, 0).unwrap();
    assert_eq!(
        b.covered_through_ms, 5,
        "covered-through is at least the last record's time"
    );
    let (bytes, s) = w.finish(9).unwrap();
    assert_eq!(s.record_count, 2);
    assert_eq!(
        all_records(&parse("w.seg", &bytes, Sealed::Yes).unwrap()),
        vec![rec(100 + n, 5), rec(100 + 2 * n, 5)]
    );
}

/// A writer over a sink that fails refuses every later call.
#[test]
fn writer_after_io_error_refuses() {
    struct Failing(usize);
    impl std::io::Write for Failing {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.0 < b.len() {
                return Err(std::io::Error::other("disk full"));
            }
            self.0 -= b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = SegmentWriter::new(
        Failing(HEADER_LEN + 10),
        &header(0),
        WriterOptions::default(),
    )
    .unwrap();
    let r = resp_command(&["PING"]);
    w.append(&Record {
        end_offset: r.len() as u64,
        time_ms: 1,
        db: 0,
        boundary: true,
        resp: r.clone(),
    })
    .unwrap();
    assert!(w.flush_block(1, 0).is_err());
    assert!(w
        .append(&Record {
            end_offset: 2 * r.len() as u64,
            time_ms: 1,
            db: 0,
            boundary: true,
            resp: r
        })
        .is_err());
    assert!(w.finish(2).is_err());
}

// ---- golden file ----

/// The golden segment's description. Changing it, or the format, changes the file: bless it
/// with `FLASHBACK_BLESS=1 cargo test -p flashback-format golden` and review the diff.
fn golden_spec() -> SegmentSpec {
    let mut s = SegmentSpec::new(
        "0123456789abcdef0123456789abcdef01234567",
        0x1000,
        1_790_000_000_000,
        Origin::NewGeneration,
    );
    s.opts = WriterOptions { zstd_level: 3 };
    s.command(1_790_000_000_010, 0, &["SET", "greeting", "hello"])
        .command(
            1_790_000_000_010,
            0,
            &[&b"SET"[..], b"bin\x00\r\n", b"\xff\xfe\r\n$3\r\n"],
        )
        .command(1_790_000_000_250, 2, &["SELECT", "2"])
        .transaction(
            1_790_000_000_260,
            2,
            &[&["INCR", "counter"][..], &["EXPIRE", "counter", "100"][..]],
        )
        .cut(1_790_000_000_300)
        .cut(1_790_000_001_300)
        .command(1_790_000_005_000, 2, &["HSET", "userprofile", "field", "v"])
        .cut_with_flags(
            1_790_000_005_100,
            flashback_format::segment::block_flags::CATCHUP,
        )
        .command(1_790_000_006_000, 2, &["FLUSHALL"]);
    s
}

#[test]
fn golden_v1_small() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1-small.seg");
    let spec = golden_spec();
    let written = spec.build_sealed(1_790_000_007_000).unwrap();
    if std::env::var_os("FLASHBACK_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &written).unwrap();
    }
    let golden = std::fs::read(&path)
        .expect("tests/golden/v1-small.seg (regenerate with FLASHBACK_BLESS=1)");

    // Reading: the committed bytes decode to exactly these records.
    let f = parse("v1-small.seg", &golden, Sealed::Yes).unwrap();
    assert_eq!(f.header, spec.header);
    assert_eq!(f.blocks.len(), 4);
    assert_eq!(
        f.blocks
            .iter()
            .map(|b| (b.record_count, b.flags))
            .collect::<Vec<_>>(),
        vec![(7, 0), (0, 0), (1, 1), (1, 0)]
    );
    let recs = all_records(&f);
    assert_eq!(recs, spec.records());
    // Spelled out, so that a change to the spec builder cannot move both sides at once.
    assert_eq!(
        recs[0],
        Record {
            end_offset: 0x1000 + 38,
            time_ms: 1_790_000_000_010,
            db: 0,
            boundary: true,
            resp: b"*3\r\n$3\r\nSET\r\n$8\r\ngreeting\r\n$5\r\nhello\r\n".to_vec()
        }
    );
    assert_eq!(
        recs[1].resp,
        b"*3\r\n$3\r\nSET\r\n$6\r\nbin\x00\r\n\r\n$8\r\n\xff\xfe\r\n$3\r\n\r\n"
    );
    assert_eq!(
        (
            recs[3].boundary,
            recs[4].boundary,
            recs[6].boundary,
            recs[6].db
        ),
        (false, false, true, 2)
    );
    let s = f.summary();
    assert_eq!(
        (s.start_offset, s.end_offset, s.record_count, s.block_count),
        (0x1000, recs[8].end_offset, 9, 4)
    );
    assert_eq!(
        (s.first_time_ms, s.end_time_ms, s.end_db, s.end_in_multi),
        (1_790_000_000_010, 1_790_000_007_000, 2, false)
    );

    // Writing: the same records give the same bytes. A zstd library upgrade alone may change
    // the compressed bytes; if only this half fails, reading still works, and re-blessing is safe.
    assert!(written == golden, "writer output differs from tests/golden/v1-small.seg: the format changed (bless with FLASHBACK_BLESS=1 if intended, and bump VERSION if old files no longer read)");
}

// ---- torn tails and corruption ----

fn three_block_spec() -> SegmentSpec {
    let mut s = SegmentSpec::new(REPLID, 77, 1_790_000_000_000, Origin::Roll);
    let mut rng = Rng(7);
    for b in 0..3u64 {
        for i in 0..(3 + b) {
            let v = rng.bytes(20 + i as usize);
            s.command(
                1_790_000_000_100 + b * 100 + i,
                b as u32,
                &[b"SET".to_vec(), format!("k{b}:{i}").into_bytes(), v],
            );
        }
        s.cut(1_790_000_000_150 + b * 100);
    }
    s
}

#[test]
fn every_truncation_of_a_tail_keeps_only_whole_blocks() {
    let spec = three_block_spec();
    let tail = spec.build_tail().unwrap();
    let full = parse("t.tail", &tail, Sealed::No).unwrap();
    assert_eq!(full.blocks.len(), 3);
    let per_block: Vec<Vec<Record>> = (0..3).map(|i| full.records(i).unwrap()).collect();
    let ends: Vec<u64> = full
        .blocks
        .iter()
        .map(|b| b.file_pos + u64::from(b.len))
        .collect();
    for cut in 0..=tail.len() {
        let r = parse("t.tail", &tail[..cut], Sealed::No);
        if cut < HEADER_LEN {
            assert!(
                matches!(r, Err(Error::Corrupt { .. })),
                "cut {cut}: a short header is corruption"
            );
            continue;
        }
        let f = r.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
        assert_eq!(f.blocks.len(), whole, "cut {cut}");
        let valid = if whole == 0 {
            HEADER_LEN as u64
        } else {
            ends[whole - 1]
        };
        assert_eq!(f.valid_len, valid, "cut {cut}");
        assert_eq!(f.torn_tail, valid != cut as u64, "cut {cut}");
        for (i, expected) in per_block.iter().enumerate().take(whole) {
            assert_eq!(&f.records(i).unwrap(), expected, "cut {cut} block {i}");
        }
        assert_eq!(
            f.summary().end_offset,
            if whole == 0 {
                77
            } else {
                full.blocks[whole - 1].end_offset
            }
        );
    }
}

/// Scans an open tail that must turn out damaged: the damage, and the valid prefix the scanner
/// still describes (block count, valid length).
fn damaged(name: &str, bytes: &[u8]) -> (flashback_format::segment::Damage, usize, u64) {
    let mut r = SegmentReader::new(name, bytes, bytes.len() as u64, Sealed::No);
    let e = loop {
        match r.next_block() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{name}: read to the end without finding the damage"),
            Err(e) => break e,
        }
    };
    let Error::Damaged { file, damage } = &e else {
        panic!("{name}: {e}")
    };
    assert_eq!(file, name);
    assert!(
        e.to_string().contains(&format!("byte {}", damage.offset)),
        "{e}"
    );
    let s = r.scanner();
    assert_eq!(s.damage(), Some(&**damage));
    assert!(s.torn_reason().is_none(), "{:?}", s.torn_reason());
    // The error stays: a caller that asks for more is told again, never handed Ok(None).
    assert!(matches!(r.next_block(), Err(Error::Damaged { .. })));
    (
        (**damage).clone(),
        r.scanner().blocks().len(),
        r.scanner().valid_len(),
    )
}

// This test once asserted the opposite ("the scan stops at the first bad block even if good
// ones follow", everything after it dropped as torn): that dropped acknowledged records without
// a word. Since issue 8 a bad block with an intact block after it is damage, named by file and
// byte; only a bad *last* block is torn.
#[test]
fn a_bad_block_with_good_ones_after_it_is_damage_not_a_torn_tail() {
    let spec = three_block_spec();
    let tail = spec.build_tail().unwrap();
    let full = parse("t.tail", &tail, Sealed::No).unwrap();
    let (b0, b1, b2) = (
        full.blocks[0].clone(),
        full.blocks[1].clone(),
        full.blocks[2].clone(),
    );
    let expect = |what: &str, d: &flashback_format::segment::Damage| {
        assert_eq!(
            (
                d.offset,
                d.good_end_offset,
                d.blocks_after,
                d.next_pos,
                d.next_start_offset,
                d.last_end_offset
            ),
            (
                b1.file_pos,
                b0.end_offset,
                1,
                b2.file_pos,
                b2.start_offset,
                b2.end_offset
            )
        );
        assert!(d.what.contains(what), "{d}");
    };
    // Zeros where block 1 was (a lost page), block 2 intact after it.
    let mut zeroed = tail.clone();
    zeroed[b1.file_pos as usize..(b1.file_pos + u64::from(b1.len)) as usize].fill(0);
    let (d, blocks, valid) = damaged("t.tail", &zeroed);
    expect("magic", &d);
    assert_eq!((blocks, valid), (1, b1.file_pos));
    // A flipped payload byte in block 1: damage, by checksum.
    let mut flipped = tail.clone();
    flipped[b1.file_pos as usize + BLOCK_HEADER_LEN + 3] ^= 0x40;
    let (d, blocks, valid) = damaged("t.tail", &flipped);
    expect("checksum", &d);
    assert_eq!((blocks, valid), (1, b1.file_pos));
    // Block 1's length field says more than the file holds: its header cannot say where block
    // 2 is, the search for the magic still finds it.
    let mut long = tail.clone();
    long[b1.file_pos as usize + 16..b1.file_pos as usize + 20]
        .copy_from_slice(&(tail.len() as u32).to_le_bytes());
    let (d, _, _) = damaged("t.tail", &long);
    expect("truncated block payload", &d);
    // The same flip in the last block is a torn write: nothing intact follows it.
    let mut last = tail.clone();
    last[b2.file_pos as usize + BLOCK_HEADER_LEN + 3] ^= 0x40;
    let f = parse("t.tail", &last, Sealed::No).unwrap();
    assert_eq!(
        (f.blocks.len(), f.valid_len, f.torn_tail),
        (2, b2.file_pos, true)
    );
    assert!(f.torn_reason().unwrap().contains("checksum"));
    // Garbage after the last block, even garbage that starts like a block.
    let mut junk = tail.clone();
    junk.extend_from_slice(b"FBBK\x00\x00partial");
    junk.extend_from_slice(&tail[b2.file_pos as usize..b2.file_pos as usize + 60]);
    let f = parse("t.tail", &junk, Sealed::No).unwrap();
    assert_eq!(
        (f.blocks.len(), f.valid_len, f.torn_tail),
        (3, tail.len() as u64, true)
    );
    // Read as sealed, any of these is plain corruption at the bad block.
    for bytes in [&zeroed, &flipped] {
        let mut sealed_bytes = bytes.clone();
        sealed_bytes.truncate(tail.len());
        let e = parse("t.seg", &sealed_bytes, Sealed::Yes).err().unwrap();
        assert!(
            matches!(e, Error::Corrupt { offset, .. } if offset == b1.file_pos),
            "{e}"
        );
    }
}

#[test]
fn every_byte_flip_in_a_tail_is_damage_or_a_torn_last_block() {
    let spec = three_block_spec();
    let tail = spec.build_tail().unwrap();
    let expected = spec.records();
    let full = parse("t.tail", &tail, Sealed::No).unwrap();
    let blocks = full.blocks.clone();
    let last = blocks.last().unwrap().file_pos as usize;
    for i in 0..tail.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut c = tail.clone();
            c[i] ^= mask;
            if i < HEADER_LEN {
                let e = parse("t.tail", &c, Sealed::No).err();
                assert!(
                    matches!(e, Some(Error::Corrupt { .. } | Error::Version { .. })),
                    "flip {mask:#x} at header byte {i}: {e:?}"
                );
                continue;
            }
            let bad = blocks
                .iter()
                .rposition(|b| b.file_pos as usize <= i)
                .unwrap();
            if i >= last {
                let f = parse("t.tail", &c, Sealed::No)
                    .unwrap_or_else(|e| panic!("flip {mask:#x} at byte {i}: {e}"));
                assert_eq!(
                    (f.blocks.len(), f.valid_len, f.torn_tail),
                    (bad, last as u64, true),
                    "flip {mask:#x} at byte {i}"
                );
                assert_eq!(all_records(&f)[..], expected[..all_records(&f).len()]);
                continue;
            }
            let (d, kept, valid) = damaged("t.tail", &c);
            let b = &blocks[bad];
            assert_eq!(
                (d.offset, kept, valid, d.next_pos),
                (b.file_pos, bad, b.file_pos, blocks[bad + 1].file_pos),
                "flip {mask:#x} at byte {i}"
            );
            assert_eq!(d.last_end_offset, blocks[2].end_offset);
        }
    }
}

#[test]
fn damage_before_a_big_fragmented_record_is_found_in_bounded_reads() {
    // Fragments of 1.5 MiB of incompressible bytes: blocks larger than the probe's chunk.
    let big = Rng(11).bytes(6 << 20);
    let (w, _, meta) = fragmented_writer(&big, 3 << 19);
    let bytes = w.get_ref().clone();
    let all = parse("f.tail", &bytes, Sealed::No).unwrap();
    let first = all.blocks[0].clone();
    let frag0 = all.blocks[1].clone();
    let largest_block = all.blocks.iter().map(|b| b.len as usize).max().unwrap();
    for (what, at, damage_at) in [
        (
            "the first block",
            first.file_pos as usize + BLOCK_HEADER_LEN + 1,
            Some(first.file_pos),
        ),
        (
            "the first fragment",
            frag0.file_pos as usize + BLOCK_HEADER_LEN + 7,
            Some(frag0.file_pos),
        ),
        (
            "the last block",
            all.blocks.last().unwrap().file_pos as usize + 70,
            None,
        ),
    ] {
        let mut c = bytes.clone();
        c[at] ^= 0x10;
        let mut s =
            flashback_format::segment::SegmentScanner::new("f.tail", c.len() as u64, Sealed::No);
        let (mut pos, mut max_need) = (0usize, 0usize);
        let end = loop {
            let n = match s.next_need() {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            max_need = max_need.max(n);
            let fed = s.feed(&c[pos..pos + n]);
            pos += n;
            if let Err(e) = fed {
                break Err(e);
            }
        };
        assert!(
            max_need <= largest_block.max(1 << 20),
            "{what}: asked for {max_need} bytes at once"
        );
        match (end, damage_at) {
            (Err(Error::Damaged { damage, .. }), Some(p)) => {
                assert_eq!(damage.offset, p, "{what}");
                assert_eq!(
                    damage.last_end_offset,
                    meta.end_offset + resp_command(&["DEL", "kk"]).len() as u64,
                    "{what}"
                );
                assert_eq!(pos, c.len(), "{what}: the probe reads to the end");
            }
            (Ok(()), None) => {
                // The last block (a record after the big one) torn: the big record stays.
                assert_eq!(s.summary().unwrap().end_offset, meta.end_offset, "{what}");
                assert!(s.torn_reason().unwrap().contains("checksum"), "{what}");
            }
            (other, _) => panic!("{what}: {other:?}"),
        }
    }
}

/// Rewrites block `pos`'s header field at `at` and re-seals its checksum, as a buggy writer would.
fn patch_block(bytes: &mut [u8], pos: usize, at: usize, val: &[u8]) {
    bytes[pos + at..pos + at + val.len()].copy_from_slice(val);
    let comp = u32::from_le_bytes(bytes[pos + 16..pos + 20].try_into().unwrap()) as usize;
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&bytes[pos..pos + 64]),
        &bytes[pos + BLOCK_HEADER_LEN..pos + BLOCK_HEADER_LEN + comp],
    );
    bytes[pos + 64..pos + 68].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_checksummed_block_that_does_not_chain_is_corruption_not_a_torn_tail() {
    let spec = three_block_spec();
    let tail = spec.build_tail().unwrap();
    let full = parse("t.tail", &tail, Sealed::No).unwrap();
    let p2 = full.blocks[2].file_pos as usize;
    let mut gap = tail.clone();
    let start = full.blocks[2].start_offset + 1;
    patch_block(&mut gap, p2, 24, &start.to_le_bytes());
    match parse("t.tail", &gap, Sealed::No) {
        Err(Error::Corrupt { file, offset, what }) => {
            assert_eq!((file.as_str(), offset), ("t.tail", p2 as u64));
            assert!(what.contains("previous data ends"), "{what}");
        }
        other => panic!("{:?}", other.map(|f| f.blocks.len())),
    }
    // A header end offset that disagrees with the records' lengths is found when decoding.
    let mut wrong_end = tail.clone();
    let end = full.blocks[2].end_offset + 1;
    patch_block(&mut wrong_end, p2, 32, &end.to_le_bytes());
    let f = parse("t.tail", &wrong_end, Sealed::No).unwrap();
    let e = f.records(2).unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { offset, .. } if *offset == (p2 + BLOCK_HEADER_LEN) as u64),
        "{e}"
    );
    assert!(e.to_string().contains("records end at offset"), "{e}");
}

/// A zstd frame of `len` bytes that declares `content_size` bytes of content (a raw block of
/// filler): what a crafted block would carry to make a decoder allocate on its say-so.
fn zstd_frame_claiming(content_size: u64, len: usize) -> Vec<u8> {
    let filler = len - 17;
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0xc0, 0x00];
    f.extend_from_slice(&content_size.to_le_bytes());
    let block = ((filler as u32) << 3) | 1; // last block, raw
    f.extend_from_slice(&block.to_le_bytes()[..3]);
    f.resize(len, b'x');
    f
}

#[test]
fn a_block_claiming_more_than_the_maximum_raw_size_is_refused_before_decompressing() {
    let spec = three_block_spec();
    let sealed = spec.build_sealed(1_790_000_001_000).unwrap();
    let full = parse("big.seg", &sealed, Sealed::Yes).unwrap();
    let b1 = &full.blocks[1];
    let (p1, comp) = (b1.file_pos as usize, b1.len as usize - BLOCK_HEADER_LEN);
    for raw_len in [MAX_BLOCK_RAW_BYTES + 1, u32::MAX] {
        let mut bad = sealed.clone();
        let frame = zstd_frame_claiming(raw_len.into(), comp);
        bad[p1 + BLOCK_HEADER_LEN..p1 + BLOCK_HEADER_LEN + comp].copy_from_slice(&frame);
        patch_block(&mut bad, p1, 12, &raw_len.to_le_bytes());
        // The block's checksum and the footer agree with it: only the size gives it away.
        match parse("big.seg", &bad, Sealed::Yes) {
            Err(Error::Corrupt { file, offset, what }) => {
                assert_eq!((file.as_str(), offset), ("big.seg", p1 as u64));
                assert!(what.contains("raw length"), "{what}");
            }
            other => panic!("raw length {raw_len}: {:?}", other.map(|f| f.blocks.len())),
        }
    }
}

#[test]
fn the_writer_refuses_a_block_over_the_maximum_raw_size() {
    let mut w = SegmentWriter::new(Vec::new(), &header(0), WriterOptions::default()).unwrap();
    let big = vec![b'v'; MAX_BLOCK_RAW_BYTES as usize];
    let rec = Record {
        end_offset: big.len() as u64,
        time_ms: 1,
        db: 0,
        boundary: true,
        resp: big.clone(),
    };
    let e = w.append(&rec).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = w
        .append_fragment(&[&big[..], b"v"].concat(), None, 1, 0)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    // Just below the limit both are fine.
    w.append_fragment(&big[..MAX_BLOCK_RAW_BYTES as usize - 64], None, 1, 0)
        .unwrap();
}

#[test]
fn every_byte_flip_in_a_sealed_segment_is_detected() {
    let spec = three_block_spec();
    let sealed = spec.build_sealed(1_790_000_001_000).unwrap();
    let expected = spec.records();
    for i in 0..sealed.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut c = sealed.clone();
            c[i] ^= mask;
            let ok = parse("s.seg", &c, Sealed::Yes).and_then(|f| {
                (0..f.blocks.len())
                    .map(|b| f.records(b))
                    .collect::<Result<Vec<_>, _>>()
            });
            assert!(
                ok.is_err(),
                "flip {mask:#x} at byte {i} of {} went unnoticed",
                sealed.len()
            );
            // Read as an open tail, a flip never yields a wrong record: an error, or a prefix.
            if let Ok(f) = parse("s.seg", &c, Sealed::No) {
                let mut got = Vec::new();
                for b in 0..f.blocks.len() {
                    match f.records(b) {
                        Ok(r) => got.extend(r),
                        Err(_) => break,
                    }
                }
                assert_eq!(got[..], expected[..got.len()], "flip {mask:#x} at byte {i}");
            }
        }
    }
}

#[test]
fn header_errors() {
    let spec = three_block_spec();
    let sealed = spec.build_sealed(1_790_000_001_000).unwrap();
    let mut v2 = sealed.clone();
    v2[8] = 2;
    for mode in [Sealed::Yes, Sealed::No] {
        match parse("new.seg", &v2, mode) {
            Err(
                e @ Error::Version {
                    found: 2,
                    supported: 1,
                    ..
                },
            ) => assert!(e.to_string().contains("new.seg")),
            other => panic!("{:?}", other.err()),
        }
        let e = parse(
            "x.seg",
            b"not a segment at all, just some text that is long enough to be a header......",
            mode,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("not a flashback segment"), "{e}");
        let mut bad = sealed.clone();
        bad[40] ^= 1;
        let e = parse("x.seg", &bad, mode).err().unwrap();
        assert!(matches!(e, Error::Corrupt { offset: 76, .. }), "{e}");
    }
}

#[test]
fn footer_torn_after_blocks_reads_as_tail() {
    let spec = three_block_spec();
    let tail = spec.build_tail().unwrap();
    let sealed = spec.build_sealed(1_790_000_001_000).unwrap();
    for cut in tail.len() + 1..sealed.len() {
        let f = parse("s.seg", &sealed[..cut], Sealed::No).unwrap();
        assert_eq!(
            (f.blocks.len(), f.valid_len, f.torn_tail),
            (3, tail.len() as u64, true),
            "cut {cut}"
        );
        assert!(parse("s.seg", &sealed[..cut], Sealed::Yes).is_err());
    }
}

#[test]
fn stored_size_is_a_quarter_of_the_aof_or_less() {
    for (name, random) in [("sequential keys", false), ("random keys", true)] {
        let mut rng = Rng(99);
        let mut w = SegmentWriter::new(Vec::new(), &header(0), WriterOptions::default()).unwrap();
        let mut aof = 0u64;
        let mut t = 1_790_000_000_000;
        for i in 0..200_000u64 {
            let n = if random {
                rng.next() % 1_000_000_000_000
            } else {
                i
            };
            let resp = resp_command(&[
                b"SET".to_vec(),
                format!("key:{n:012}").into_bytes(),
                b"xxx".to_vec(),
            ]);
            aof += resp.len() as u64;
            t += u64::from(i % 10 == 0);
            w.append(&Record {
                end_offset: w.end_offset() + resp.len() as u64,
                time_ms: t,
                db: 0,
                boundary: true,
                resp,
            })
            .unwrap();
            if w.pending().1 >= SUGGESTED_BLOCK_RAW_BYTES {
                w.flush_block(t, 0).unwrap();
            }
        }
        let (bytes, _) = w.finish(t).unwrap();
        let ratio = bytes.len() as f64 / aof as f64;
        eprintln!(
            "{name}: {} bytes for {aof} bytes of AOF: {ratio:.3}",
            bytes.len()
        );
        assert!(ratio <= 0.25, "{name}: ratio {ratio:.3}");
    }
}

// ---- Records stored in fragments (flag FRAGMENT) ----

use flashback_format::segment::{Item, RecordMeta};
type Res<T> = std::result::Result<T, Error>;

/// A segment with two records, a record of `big.len()` bytes in fragments of `frag` bytes,
/// then one more record; returns the writer (not finished) and the big record's meta.
fn fragmented_writer(big: &[u8], frag: usize) -> (SegmentWriter<Vec<u8>>, Vec<Record>, RecordMeta) {
    let t = 1_790_000_000_000;
    let mut w = SegmentWriter::new(Vec::new(), &header(100), WriterOptions::default()).unwrap();
    let mut end = 100;
    let mut rec = |argv: &[&str], time_ms: u64, db: u32| {
        let resp = resp_command(argv);
        end += resp.len() as u64;
        Record {
            end_offset: end,
            time_ms,
            db,
            boundary: true,
            resp,
        }
    };
    let a = rec(&["SELECT", "2"], t + 1, 2);
    let b = rec(&["SET", "k", "v"], t + 2, 2);
    w.append(&a).unwrap();
    w.append(&b).unwrap();
    w.flush_block(t + 2, 0).unwrap();
    let meta = RecordMeta {
        end_offset: b.end_offset + big.len() as u64,
        time_ms: t + 9,
        db: 2,
        boundary: true,
    };
    let chunks: Vec<&[u8]> = big.chunks(frag).collect();
    for (i, c) in chunks.iter().enumerate() {
        let fin = (i + 1 == chunks.len()).then_some(&meta);
        let flags = if i == 0 { block_flags::CATCHUP } else { 0 };
        w.append_fragment(c, fin, t + 3 + i as u64, flags).unwrap();
    }
    let del = resp_command(&["DEL", "kk"]);
    let c = Record {
        end_offset: meta.end_offset + del.len() as u64,
        time_ms: t + 10,
        db: 2,
        boundary: true,
        resp: del,
    };
    w.append(&c).unwrap();
    w.flush_block(t + 10, 0).unwrap();
    let big_rec = Record {
        end_offset: meta.end_offset,
        time_ms: meta.time_ms,
        db: 2,
        boundary: true,
        resp: big.to_vec(),
    };
    (w, vec![a, b, big_rec, c], meta)
}

/// Records from items, assembling fragments (tests only: real readers stream them).
fn assemble(items: impl IntoIterator<Item = Item>) -> Vec<Record> {
    let mut out = Vec::new();
    let mut acc: Vec<u8> = Vec::new();
    for it in items {
        match it {
            Item::Record(r) => {
                assert!(acc.is_empty(), "a record inside a fragmented one");
                out.push(r)
            }
            Item::Fragment(f) => {
                acc.extend_from_slice(&f.bytes);
                if let Some(m) = f.end {
                    out.push(Record {
                        end_offset: m.end_offset,
                        time_ms: m.time_ms,
                        db: m.db,
                        boundary: m.boundary,
                        resp: std::mem::take(&mut acc),
                    });
                }
            }
        }
    }
    out
}

fn file_items(f: &Scanned) -> Vec<Item> {
    (0..f.blocks.len())
        .flat_map(|i| f.items(i).unwrap())
        .collect()
}

/// Everything a SegmentReader yields, and its end state.
fn stream_items(
    name: &str,
    bytes: &[u8],
    sealed: Sealed,
) -> Res<(
    Vec<Item>,
    Option<flashback_format::segment::SegmentSummary>,
    u64,
    bool,
)> {
    let mut r = SegmentReader::new(name, bytes, bytes.len() as u64, sealed);
    let mut items = Vec::new();
    while let Some(b) = r.next_block()? {
        items.extend(r.scanner().decode(&b)?);
    }
    let s = r.scanner();
    Ok((items, s.summary(), s.valid_len(), s.torn_reason().is_some()))
}

#[test]
fn fragmented_record_round_trip() {
    let big = Rng(7).bytes(100_000);
    let (w, expected, meta) = fragmented_writer(&big, 30_000);
    let tail = w.get_ref().clone();
    let (sealed, summary) = w.finish(1_790_000_000_020).unwrap();
    let f = parse("f.seg", &sealed, Sealed::Yes).unwrap();
    assert_eq!(f.blocks.len(), 1 + 4 + 1);
    assert_eq!(summary, f.summary());
    assert_eq!(summary.record_count, 4);
    let frags: Vec<_> = f.blocks[1..5].iter().collect();
    assert!(frags.iter().all(|b| b.flags & block_flags::FRAGMENT != 0));
    assert_eq!(frags[0].flags & block_flags::CATCHUP, block_flags::CATCHUP);
    assert_eq!(
        frags.iter().map(|b| b.record_count).collect::<Vec<_>>(),
        [0, 0, 0, 1]
    );
    assert_eq!(
        (frags[3].end_offset, frags[3].last_time_ms),
        (meta.end_offset, meta.time_ms)
    );
    // (SegmentFile::records refused such a block with Error::Fragmented; both went with
    // SegmentFile: the scanner hands out the fragment itself.)
    assert!(matches!(&f.items(1).unwrap()[..], [Item::Fragment(fr)] if fr.end.is_none()));
    let items = file_items(&f);
    // Each fragment says where it starts and which db the record applies to.
    let mut at = expected[1].end_offset;
    for it in &items[2..6] {
        let Item::Fragment(fr) = it else {
            panic!("{it:?}")
        };
        assert_eq!((fr.start_offset, fr.db), (at, 2));
        at += fr.bytes.len() as u64;
    }
    assert_eq!(assemble(items.clone()), expected);
    // The streaming reader agrees, sealed and as a tail.
    let (s_items, s_sum, s_valid, torn) = stream_items("f.seg", &sealed, Sealed::Yes).unwrap();
    assert_eq!(
        (s_items, s_sum, s_valid, torn),
        (
            items.clone(),
            Some(summary.clone()),
            sealed.len() as u64,
            false
        )
    );
    let (t_items, t_sum, t_valid, torn) = stream_items("f.tail", &tail, Sealed::No).unwrap();
    assert_eq!((t_items, t_valid, torn), (items, tail.len() as u64, false));
    assert_eq!(t_sum.unwrap().end_offset, summary.end_offset);
    // A sealed file read in tail mode (crash after sealing, before the rename).
    let (_, s2, v2, torn) = stream_items("f.tail", &sealed, Sealed::No).unwrap();
    assert_eq!((s2, v2, torn), (Some(summary), sealed.len() as u64, false));
}

#[test]
fn writer_guards_fragmented_records() {
    let t = 1_790_000_000_000;
    let mut w = SegmentWriter::new(Vec::new(), &header(0), WriterOptions::default()).unwrap();
    let r = Record {
        end_offset: 14,
        time_ms: t,
        db: 0,
        boundary: true,
        resp: resp_command(&["PING"]),
    };
    w.append(&r).unwrap();
    let e = w.append_fragment(b"*3\r\n", None, t, 0).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidInput,
        "pending records first: {e}"
    );
    w.flush_block(t, 0).unwrap();
    let before = w.bytes_written();
    w.append_fragment(b"*3\r\n$3\r\nSET", None, t, 0).unwrap();
    assert!(w.in_fragments());
    assert_eq!(w.end_offset(), 14, "an unfinished record is not appended");
    for e in [
        w.append(&Record {
            end_offset: 28,
            ..r.clone()
        })
        .unwrap_err(),
        w.flush_block(t, 0).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    let bad = RecordMeta {
        end_offset: 999,
        time_ms: t,
        db: 0,
        boundary: true,
    };
    assert_eq!(
        w.append_fragment(b"\r\n", Some(&bad), t, 0)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    let early = RecordMeta {
        end_offset: 14 + 13,
        time_ms: t - 1,
        db: 0,
        boundary: true,
    };
    assert_eq!(
        w.append_fragment(b"\r\n", Some(&early), t, 0)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    // Abandon: the writer rewinds to before the first fragment; the caller truncates.
    assert_eq!(w.abandon_fragments(), Some(before));
    w.get_mut().truncate(before as usize);
    assert_eq!(w.abandon_fragments(), None);
    let whole = resp_command(&["SET", "k", "v"]);
    let m = RecordMeta {
        end_offset: 14 + whole.len() as u64,
        time_ms: t + 1,
        db: 0,
        boundary: true,
    };
    w.append_fragment(&whole[..5], None, t, 0).unwrap();
    w.append_fragment(&whole[5..], Some(&m), t, 0).unwrap();
    assert!(!w.in_fragments());
    assert_eq!(w.end_offset(), m.end_offset);
    let (bytes, s) = w.finish(t + 2).unwrap();
    let f = parse("g.seg", &bytes, Sealed::Yes).unwrap();
    assert_eq!((s.record_count, s.end_offset), (2, m.end_offset));
    assert_eq!(assemble(file_items(&f))[1].resp, whole);
    // The streaming reader refuses an empty or short file as corruption, like parse.
    for cut in [0, 10, HEADER_LEN - 1] {
        assert!(
            matches!(
                stream_items("e.tail", &bytes[..cut], Sealed::No),
                Err(Error::Corrupt { .. })
            ),
            "cut {cut}"
        );
    }
    // finish() refuses an open record.
    let mut w = SegmentWriter::new(Vec::new(), &header(0), WriterOptions::default()).unwrap();
    w.append_fragment(b"*1\r\n", None, t, 0).unwrap();
    assert_eq!(w.finish(t).unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_tail_ending_inside_a_fragmented_record_drops_all_of_it() {
    let big = Rng(9).bytes(20_000);
    let (w, expected, _) = fragmented_writer(&big, 6_000);
    let tail = w.get_ref().clone();
    let full = parse("t.tail", &tail, Sealed::No).unwrap();
    let first_frag = full.blocks[1].file_pos;
    let after_frags = full.blocks[5].file_pos;
    let ends: Vec<u64> = full
        .blocks
        .iter()
        .map(|b| b.file_pos + u64::from(b.len))
        .collect();
    for cut in HEADER_LEN..=tail.len() {
        let bytes = &tail[..cut];
        let f = parse("t.tail", bytes, Sealed::No).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let (s_items, s_sum, s_valid, s_torn) =
            stream_items("t.tail", bytes, Sealed::No).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
        // Only whole records survive: a cut anywhere in the run keeps the blocks before it.
        let (blocks, valid) = if (first_frag as usize) < cut && cut < after_frags as usize {
            (1, first_frag)
        } else if whole == 0 {
            (0, HEADER_LEN as u64)
        } else {
            (whole, ends[whole - 1])
        };
        assert_eq!(
            (f.blocks.len(), f.valid_len, f.torn_tail),
            (blocks, valid, valid != cut as u64),
            "cut {cut}"
        );
        assert_eq!((s_valid, s_torn), (valid, valid != cut as u64), "cut {cut}");
        assert_eq!(s_sum.unwrap(), f.summary(), "cut {cut}");
        let recs = assemble(file_items(&f));
        assert_eq!(recs[..], expected[..recs.len()], "cut {cut}");
        // The stream hands out the unfinished fragments too, but never a wrong record.
        let s_recs = assemble(s_items);
        assert_eq!(s_recs, recs, "cut {cut}");
        if (first_frag as usize) < cut && cut < after_frags as usize {
            assert!(f.torn_reason().is_some());
            assert_eq!(f.summary().end_offset, expected[1].end_offset, "cut {cut}");
        }
    }
}

#[test]
fn fragment_corruption_is_detected() {
    let big = Rng(11).bytes(20_000);
    let (w, expected, _) = fragmented_writer(&big, 8_000);
    let (sealed, _) = w.finish(1_790_000_000_020).unwrap();
    let f = parse("c.seg", &sealed, Sealed::Yes).unwrap();
    // The final fragment without its FRAGMENT flag, checksum re-sealed: a record block inside
    // the run, which is corruption (a non-final one would fail its length check, a torn write).
    let p3 = f.blocks[3].file_pos as usize;
    let mut plain = sealed.clone();
    patch_block(&mut plain, p3, 4, &0u16.to_le_bytes());
    let tail_mode = &plain[..f.blocks[4].file_pos as usize];
    for (bytes, sealed_mode) in [(&plain[..], Sealed::Yes), (tail_mode, Sealed::No)] {
        let e = match parse("c.seg", bytes, sealed_mode) {
            Err(e) => e,
            Ok(f) => (0..f.blocks.len())
                .find_map(|i| f.items(i).err())
                .expect("detected"),
        };
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(matches!(
            stream_items("c.seg", bytes, sealed_mode),
            Err(Error::Corrupt { .. })
        ));
    }
    // Every byte flip is detected by both readers.
    for i in 0..sealed.len() {
        for mask in [0x01u8, 0x80] {
            let mut c = sealed.clone();
            c[i] ^= mask;
            let whole = parse("c.seg", &c, Sealed::Yes).and_then(|f| {
                (0..f.blocks.len())
                    .map(|b| f.items(b))
                    .collect::<Res<Vec<_>>>()
            });
            let streamed = stream_items("c.seg", &c, Sealed::Yes);
            match (whole, streamed) {
                (Err(_), Err(_)) => {}
                (w, s) => {
                    let w = w.map(|v| assemble(v.into_iter().flatten()));
                    let s = s.map(|v| assemble(v.0));
                    panic!(
                        "flip {mask:#x} at byte {i} undetected: {:?} {:?}",
                        w.map(|r| r == expected),
                        s.map(|r| r == expected)
                    );
                }
            }
        }
    }
}

/// Scans `bytes` as an open tail, truncates it to the valid length and seals it in place with
/// `SegmentWriter::resume`, as the agent's crash recovery does.
fn seal_in_place(bytes: &[u8], end_time_ms: u64) -> Vec<u8> {
    let f = parse("t.tail", bytes, Sealed::No).unwrap();
    let kept = bytes[..f.valid_len as usize].to_vec();
    let w = SegmentWriter::resume(kept, &f.header, &f.blocks, WriterOptions::default()).unwrap();
    w.finish(end_time_ms).unwrap().0
}

#[test]
fn sealing_a_tail_in_place_equals_sealing_it_in_one_go() {
    let spec = three_block_spec();
    let end = 1_790_000_001_000;
    let bytes = seal_in_place(&spec.build_tail().unwrap(), end);
    assert_eq!(bytes, spec.build_sealed(end).unwrap());
}

#[test]
fn every_truncation_of_a_tail_seals_in_place_to_its_whole_records() {
    let spec = three_block_spec();
    let tail = spec.build_tail().unwrap();
    let end = 1_790_000_001_000;
    for cut in HEADER_LEN..=tail.len() {
        let torn = parse("t.tail", &tail[..cut], Sealed::No).unwrap();
        let bytes = seal_in_place(&tail[..cut], end);
        let sealed = parse("t.seg", &bytes, Sealed::Yes).unwrap();
        assert_eq!(sealed.blocks, torn.blocks, "cut {cut}");
        assert_eq!(all_records(&sealed), all_records(&torn), "cut {cut}");
        let s = sealed.summary();
        assert_eq!(s.end_offset, torn.summary().end_offset, "cut {cut}");
        assert_eq!(s.end_time_ms, end, "cut {cut}");
    }
    // The fragmented record's unfinished fragments go, the records before them stay.
    let big = Rng(9).bytes(20_000);
    let (w, expected, _) = fragmented_writer(&big, 6_000);
    let tail = w.get_ref().clone();
    for cut in HEADER_LEN..=tail.len() {
        let torn = parse("t.tail", &tail[..cut], Sealed::No).unwrap();
        let bytes = seal_in_place(&tail[..cut], end);
        let sealed = parse("t.seg", &bytes, Sealed::Yes).unwrap();
        let recs = assemble(file_items(&sealed));
        assert_eq!(recs, assemble(file_items(&torn)), "cut {cut}");
        assert_eq!(recs[..], expected[..recs.len()], "cut {cut}");
    }
}

#[test]
fn a_resumed_writer_appends_where_the_tail_ended() {
    let spec = three_block_spec();
    let tail = spec.build_tail().unwrap();
    let f = parse("t.tail", &tail, Sealed::No).unwrap();
    let mut w = SegmentWriter::resume(tail.clone(), &f.header, &f.blocks, WriterOptions::default())
        .unwrap();
    let resp = resp_command(&[&b"DEL"[..], b"k0:0"]);
    let next = Record {
        end_offset: spec.end_offset() + resp.len() as u64,
        time_ms: 1_790_000_000_900,
        db: 2,
        boundary: true,
        resp,
    };
    // Records must still chain: the previous end offset is known without decoding.
    let mut early = next.clone();
    early.end_offset -= 1;
    assert_eq!(
        w.append(&early).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    w.append(&next).unwrap();
    let (bytes, summary) = w.finish(1_790_000_001_000).unwrap();
    let sealed = parse("t.seg", &bytes, Sealed::Yes).unwrap();
    let mut want = spec.records();
    want.push(next);
    assert_eq!(all_records(&sealed), want);
    assert_eq!(summary.record_count, want.len() as u64);
}

#[test]
fn resume_refuses_blocks_that_do_not_match_the_file() {
    let spec = three_block_spec();
    let tail = spec.build_tail().unwrap();
    let f = parse("t.tail", &tail, Sealed::No).unwrap();
    let resume = |blocks: &[_]| {
        SegmentWriter::resume(Vec::new(), &f.header, blocks, WriterOptions::default())
            .err()
            .map(|e| (e.kind(), e.to_string()))
    };
    // A block left out: the next one is not where the data ends.
    let gap = [f.blocks[0].clone(), f.blocks[2].clone()];
    let (kind, msg) = resume(&gap).unwrap();
    assert_eq!(kind, ErrorKind::InvalidInput);
    assert!(msg.contains("block 1 is at byte"), "{msg}");
    // Blocks of another segment: they do not chain from this header.
    let mut other = header(5);
    other.start_db = 0;
    let e = SegmentWriter::resume(Vec::new(), &other, &f.blocks, WriterOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("block 0:"), "{e}");
    // Ending inside a fragmented record.
    let big = Rng(9).bytes(20_000);
    let (w, _, _) = fragmented_writer(&big, 6_000);
    let g = parse("t.tail", w.get_ref(), Sealed::No).unwrap();
    let e = SegmentWriter::resume(
        Vec::new(),
        &g.header,
        &g.blocks[..3],
        WriterOptions::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("stored in fragments"), "{e}");
    assert!(resume(&f.blocks).is_none());
}
