use super::*;

fn sample() -> Summary {
    let span = |s, e, t| Span {
        start_offset: s,
        end_offset: e,
        time_ms: t,
    };
    let mut fam = [0; FAMILIES];
    fam[Family::String as usize] = 3;
    fam[Family::Key as usize] = 2;
    Summary {
        start_offset: 1000,
        end_offset: 5000,
        start_in_multi: false,
        end_in_multi: true,
        dels_complete: true,
        keys_unknown: false,
        first_time_ms: 1_790_000_000_123,
        record_count: 42,
        first_boundary: Some(1040),
        last_boundary: Some(4900),
        buckets: vec![
            Bucket {
                second: 1_790_000_000,
                writes: 5,
                by_family: fam,
                by_db: vec![(0, 4), (7, 1)],
                deleted: 3,
                expired: 0,
                first_delete: Some(span(1100, 1200, 1_790_000_000_500)),
                first_expire: None,
            },
            Bucket {
                second: 1_790_000_002,
                writes: 1,
                expired: 1,
                first_expire: Some(span(4800, 4900, 1_790_000_002_001)),
                ..Default::default()
            },
        ],
        events: vec![
            Event {
                kind: EventKind::Del,
                db: 7,
                other_db: 0,
                span: span(1100, 1200, 1_790_000_000_500),
                command: b"UNLINK".to_vec(),
                key_count: 3,
                keys: vec![b"a".to_vec(), b"\x00\xffbin".to_vec(), Vec::new()],
            },
            Event {
                kind: EventKind::SwapDb,
                db: 1,
                other_db: 2,
                span: span(4900, 5000, 1_790_000_002_100),
                command: b"SWAPDB".to_vec(),
                key_count: 0,
                keys: vec![],
            },
        ],
        commands: vec![(b"DEL".to_vec(), 1), (b"SET".to_vec(), 3)],
        filter: KeyFilter::build([1u64, 2, 3].into_iter()),
    }
}

#[test]
fn round_trips() {
    let s = sample();
    let bytes = s.encode();
    assert_eq!(&bytes[..8], MAGIC);
    assert_eq!(Summary::decode("x.sum", &bytes).unwrap(), s);
    assert_eq!(s.command_count(b"SET"), 3);
    assert_eq!(s.command_count(b"HSET"), 0);
    // An empty segment's summary.
    let empty = Summary {
        buckets: vec![],
        events: vec![],
        commands: vec![],
        first_boundary: None,
        last_boundary: None,
        filter: KeyFilter::build(std::iter::empty()),
        ..sample()
    };
    assert_eq!(Summary::decode("e.sum", &empty.encode()).unwrap(), empty);
    // Keys a writer could not place: every key may be touched.
    let unknown = Summary {
        keys_unknown: true,
        ..empty
    };
    let back = Summary::decode("u.sum", &unknown.encode()).unwrap();
    assert!(back.keys_unknown && back.may_touch(9, b"anything"));
}

#[test]
fn every_byte_flip_is_detected() {
    let bytes = sample().encode();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            assert!(
                Summary::decode("x.sum", &b).is_err(),
                "flip {mask:#x} at byte {i} went unnoticed"
            );
        }
    }
    for n in 0..bytes.len() {
        assert!(Summary::decode("x.sum", &bytes[..n]).is_err(), "cut at {n}");
    }
}

/// Payloads with a good envelope but impossible contents: each is named, at a byte.
#[test]
fn impossible_contents_are_corruption_at_a_byte() {
    let cases: Vec<(Summary, &str)> = vec![
        (
            Summary {
                end_offset: 4850,
                ..sample()
            },
            "outside the segment",
        ),
        (
            {
                let mut s = sample();
                s.buckets.swap(0, 1);
                s
            },
            "do not increase",
        ),
        (
            {
                let mut s = sample();
                s.events[0].key_count = 1;
                s
            },
            "keeps 3 keys but counts 1",
        ),
        (
            {
                let mut s = sample();
                s.commands.reverse();
                s
            },
            "not sorted",
        ),
    ];
    for (s, want) in cases {
        let e = Summary::decode("x.sum", &s.encode())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want) && e.starts_with("x.sum: corrupt at byte "),
            "{e}"
        );
    }
    let mut v2 = sample().encode();
    v2[8] = 2;
    let e = Summary::decode("x.sum", &v2).unwrap_err().to_string();
    assert!(e.contains("format version 2"), "{e}");
}
