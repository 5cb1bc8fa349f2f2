//! Hand-built RDB files for what current servers no longer write (RDB 1–9: EXPIRETIME in
//! seconds, text scores, ZSET vs ZSET_2, zipmap, ziplist, quicklist v1, LZF strings, no
//! checksum before RDB 5), module values and AUX data, functions; and corrupt input:
//! truncation at every byte, every byte flipped, a bad CRC, lying lengths. Always an error with
//! an offset, never a panic.

use flashback_rdb::crc64::crc64;
use flashback_rdb::{filter_rdb, Error, Item, Kind, RdbReader, RdbWriter, Visitor};

fn s(b: &[u8]) -> Vec<u8> {
    assert!(b.len() < 64);
    let mut v = vec![b.len() as u8];
    v.extend_from_slice(b);
    v
}

/// Header + body + EOF (+ CRC from RDB 5 on).
fn file(header: &[u8; 9], body: &[u8]) -> Vec<u8> {
    let mut f = header.to_vec();
    f.extend_from_slice(body);
    f.push(0xFF);
    let v: u32 = std::str::from_utf8(&header[5..])
        .unwrap()
        .trim_start_matches('0')
        .parse()
        .unwrap_or(0);
    if header.starts_with(b"VALKEY") || v >= 5 {
        let crc = crc64(0, &f);
        f.extend_from_slice(&crc.to_le_bytes());
    }
    f
}

#[derive(Default)]
struct Lines(Vec<String>);

fn t(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Visitor for Lines {
    fn string(&mut self, v: &[u8]) {
        self.0.push(format!("={}", t(v)));
    }
    fn list_item(&mut self, v: &[u8]) {
        self.0.push(format!("-{}", t(v)));
    }
    fn set_member(&mut self, v: &[u8]) {
        self.0.push(format!("*{}", t(v)));
    }
    fn zset_member(&mut self, m: &[u8], score: f64) {
        self.0.push(format!("{}:{score}", t(m)));
    }
    fn hash_field(&mut self, f: &[u8], v: &[u8], ttl: Option<i64>) {
        self.0.push(format!("{}={} {ttl:?}", t(f), t(v)));
    }
    fn module_value(&mut self, m: &str, encver: u64) {
        self.0.push(format!("module {m} v{encver}"));
    }
    fn module_field(&mut self, f: flashback_rdb::ModuleField<'_>) {
        self.0.push(format!("{f:?}"));
    }
}

/// Every item, values visited, as text lines.
fn read_all(bytes: &[u8]) -> flashback_rdb::Result<Vec<String>> {
    let mut r = RdbReader::new(bytes)?;
    let mut out = Lines::default();
    while let Some(item) = r.next()? {
        match item {
            Item::Entry(e) => {
                out.0.push(format!(
                    "db{} {} {:?} exp {:?}",
                    e.db,
                    t(r.key()),
                    e.kind,
                    e.expire_ms
                ));
                let sum = r.visit(&mut out)?;
                out.0.push(format!("({} elements)", sum.elements));
            }
            Item::End { .. } => out.0.push("end".into()),
            other => out.0.push(format!("{other:?}")),
        }
    }
    Ok(out.0)
}

fn ziplist(entries: &[&[u8]]) -> Vec<u8> {
    // Plain short strings only: prevlen 1 byte, 6-bit string encoding.
    let mut body = Vec::new();
    let mut prev = 0u8;
    for e in entries {
        body.push(prev);
        body.push(e.len() as u8);
        body.extend_from_slice(e);
        prev = (e.len() + 2) as u8;
    }
    let mut out = ((10 + body.len() + 1) as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.push(0xFF);
    out
}

/// An LZF "compression" of `data` as literal runs only (valid liblzf output).
fn lzf_literal(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(32) {
        out.push((chunk.len() - 1) as u8);
        out.extend_from_slice(chunk);
    }
    out
}

fn lzf_string(data: &[u8]) -> Vec<u8> {
    let c = lzf_literal(data);
    let mut v = vec![0xC3, c.len() as u8, data.len() as u8];
    v.extend_from_slice(&c);
    v
}

/// An RDB 3 file: SELECTDB, EXPIRETIME in seconds, text scores, a zipmap, an int string.
fn old_file() -> Vec<u8> {
    let mut b = vec![0xFE, 0x00];
    b.push(0xFD);
    b.extend_from_slice(&1_700_000_000i32.to_le_bytes());
    b.push(0);
    b.extend(s(b"k"));
    b.extend([0xC1, 0x39, 0x30]); // int16 12345
    b.push(3); // ZSET with text scores
    b.extend(s(b"z"));
    b.push(3);
    b.extend(s(b"a"));
    b.extend(s(b"1.5"));
    b.extend(s(b"hi"));
    b.push(254);
    b.extend(s(b"lo"));
    b.push(255);
    b.push(9); // zipmap hash
    b.extend(s(b"h"));
    let zm = [1u8, 2, b'f', b'1', 2, 0, b'v', b'1', 0xFF];
    b.extend(s(&zm));
    file(b"REDIS0003", &b)
}

#[test]
fn rdb3_expiretime_seconds_text_scores_zipmap() {
    let lines = read_all(&old_file()).unwrap();
    assert_eq!(
        lines,
        [
            "SelectDb(0)",
            "db0 k String exp Some(1700000000000)",
            "=12345",
            "(5 elements)",
            "db0 z ZSet exp None",
            "a:1.5",
            "hi:inf",
            "lo:-inf",
            "(3 elements)",
            "db0 h Hash exp None",
            "f1=v1 None",
            "(1 elements)",
            "end"
        ]
    );
}

/// An RDB 9 file: ZSET_2, an LZF string, a quicklist v1 with one LZF node, a ziplist list,
/// an intset, EXPIRETIME_MS, IDLE and FREQ, a module value, module AUX data, a second db.
fn rdb9_file() -> Vec<u8> {
    let mut b = vec![0xFA];
    b.extend(s(b"redis-ver"));
    b.extend(s(b"5.0.0"));
    b.extend([0xFE, 0x00, 0xFB, 0x05, 0x01]);
    b.push(5);
    b.extend(s(b"z2"));
    b.push(2);
    b.extend(s(b"m"));
    b.extend(2.5f64.to_le_bytes());
    b.extend(s(b"n"));
    b.extend((-1.0f64).to_le_bytes());
    b.push(0xFC);
    b.extend(1_800_000_000_000i64.to_le_bytes());
    b.push(0xF8);
    b.push(0x05); // idle 5 s
    b.push(0);
    b.extend(s(b"lzf"));
    b.extend(lzf_string(b"compressed-looking text"));
    b.push(0xF9);
    b.push(7); // freq
    b.push(14); // quicklist v1
    b.extend(s(b"ql"));
    b.push(2);
    b.extend(s(&ziplist(&[b"a", b"b"])));
    let node = ziplist(&[b"c"]);
    let c = lzf_literal(&node);
    b.extend([0xC3, c.len() as u8, node.len() as u8]);
    b.extend(c);
    b.push(10);
    b.extend(s(b"zl"));
    b.extend(s(&ziplist(&[b"x", b"y", b"z"])));
    b.push(11);
    b.extend(s(b"is"));
    let mut is = 2u32.to_le_bytes().to_vec();
    is.extend(2u32.to_le_bytes());
    is.extend(1i16.to_le_bytes());
    is.extend((-2i16).to_le_bytes());
    b.extend(s(&is));
    // A module value of type "mymodule1", encoding version 3: uint, string, double, float, EOF.
    let id = module_id("mymodule1", 3);
    b.push(7);
    b.extend(s(b"mod"));
    b.push(0x81);
    b.extend(id.to_be_bytes());
    b.extend([2, 42, 5]);
    b.extend(s(b"abc"));
    b.push(4);
    b.extend(1.5f64.to_le_bytes());
    b.push(3);
    b.extend(0.25f32.to_le_bytes());
    b.push(0);
    b.push(0xF7); // module AUX
    b.push(0x81);
    b.extend(id.to_be_bytes());
    b.extend([2, 2, 2, 9, 0]);
    b.extend([0xFE, 0x03]);
    b.push(4);
    b.extend(s(b"h"));
    b.push(1);
    b.extend(s(b"f"));
    b.extend(s(b"v"));
    b.push(0xF5);
    b.extend(s(b"#!lua name=x"));
    file(b"REDIS0009", &b)
}

fn module_id(name: &str, encver: u64) -> u64 {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = 0u64;
    for c in name.bytes() {
        id = (id << 6) | SET.iter().position(|&x| x == c).unwrap() as u64;
    }
    (id << 10) | encver
}

#[test]
fn rdb9_every_old_encoding_modules_functions() {
    let lines = read_all(&rdb9_file()).unwrap();
    let want = [
        "Aux { key: [114, 101, 100, 105, 115, 45, 118, 101, 114], value: [53, 46, 48, 46, 48] }",
        "SelectDb(0)",
        "ResizeDb { keys: 5, expires: 1 }",
        "db0 z2 ZSet exp None",
        "m:2.5",
        "n:-1",
        "(2 elements)",
        "db0 lzf String exp Some(1800000000000)",
        "=compressed-looking text",
        "(23 elements)",
        "db0 ql List exp None",
        "-a",
        "-b",
        "-c",
        "(3 elements)",
        "db0 zl List exp None",
        "-x",
        "-y",
        "-z",
        "(3 elements)",
        "db0 is Set exp None",
        "*1",
        "*-2",
        "(2 elements)",
        "db0 mod Module exp None",
        "module mymodule1 v3",
        "Int(42)",
        "String([97, 98, 99])",
        "Double(1.5)",
        "Float(0.25)",
        "(4 elements)",
        "ModuleAux { module: \"mymodule1\", encver: 3, when: 2 }",
        "SelectDb(3)",
        "db3 h Hash exp None",
        "f=v None",
        "(1 elements)",
        "Function([35, 33, 108, 117, 97, 32, 110, 97, 109, 101, 61, 120])",
        "end",
    ];
    assert_eq!(lines, want);
    // IDLE and FREQ reach the entry.
    let f = rdb9_file();
    let mut r = RdbReader::new(&f[..]).unwrap();
    let mut found = 0;
    while let Some(item) = r.next().unwrap() {
        if let Item::Entry(e) = item {
            if r.key() == b"lzf" {
                assert_eq!((e.idle, e.freq), (Some(5), None));
                found += 1;
            }
            if r.key() == b"ql" {
                assert_eq!((e.idle, e.freq), (None, Some(7)));
                found += 1;
            }
        }
    }
    assert_eq!(found, 2);
}

#[test]
fn pre_release_module_value_names_module_key_and_offset() {
    let mut b = vec![0xFE, 0x00, 6];
    b.extend(s(b"thekey"));
    b.push(0x81);
    b.extend(module_id("graphdata", 1).to_be_bytes());
    let f = file(b"REDIS0008", &b);
    let e = read_all(&f).unwrap_err();
    assert!(
        matches!(&e, Error::UnknownModule { module, key, .. } if module == "graphdata" && key == "thekey"),
        "{e}"
    );
    assert_eq!(e.offset(), 11);
    // An unknown opcode inside a v2 module value names the module.
    let mut b = vec![0xFE, 0x00, 7];
    b.extend(s(b"k"));
    b.push(0x81);
    b.extend(module_id("graphdata", 1).to_be_bytes());
    b.push(9);
    let e = read_all(&file(b"REDIS0009", &b)).unwrap_err();
    assert!(e.to_string().contains("module 'graphdata'"), "{e}");
}

#[test]
fn truncation_at_every_byte_is_an_error_with_an_offset() {
    for f in [old_file(), rdb9_file()] {
        for cut in 0..f.len() {
            let e = read_all(&f[..cut]).expect_err(&format!("cut at {cut}"));
            assert!(e.offset() <= cut as u64, "cut {cut}: {e}");
            assert!(e.to_string().contains("byte "), "{e}");
        }
    }
}

#[test]
fn every_flipped_byte_is_caught_or_harmless_and_never_panics() {
    let f = rdb9_file();
    for i in 0..f.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut g = f.clone();
            g[i] ^= mask;
            // The CRC covers every byte: a flip anywhere must be an error.
            assert!(read_all(&g).is_err(), "flip {mask:#x} at {i}");
        }
    }
}

#[test]
fn checksum_mismatch_and_disabled() {
    let mut f = rdb9_file();
    let n = f.len();
    f[n - 1] ^= 0x10;
    let e = read_all(&f).unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e}");
    assert_eq!(e.offset(), n as u64 - 8);
    f[n - 8..].fill(0);
    assert!(read_all(&f).is_ok(), "rdbchecksum no writes 0");
}

#[test]
fn lying_lengths_are_refused_without_allocating() {
    // A 2^60-byte key in a 30-byte file.
    let mut b = vec![0xFE, 0x00, 0x00, 0x81];
    b.extend((1u64 << 60).to_be_bytes());
    let e = read_all(&file(b"REDIS0011", &b)).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    // An LZF string claiming 4 GiB from 2 bytes.
    let mut b = vec![0xFE, 0x00, 0x00];
    b.extend(s(b"k"));
    b.extend([0xC3, 0x02, 0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, b'a']);
    let e = read_all(&file(b"REDIS0011", &b)).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { .. }) && e.to_string().contains("LZF"),
        "{e}"
    );
    // A list of 2^62 elements: each must be read, so the input runs out (into the EOF byte).
    let mut b = vec![0xFE, 0x00, 0x01];
    b.extend(s(b"k"));
    b.push(0x81);
    b.extend((1u64 << 62).to_be_bytes());
    assert!(matches!(
        read_all(&file(b"REDIS0011", &b)),
        Err(Error::Truncated { .. } | Error::Corrupt { .. })
    ));
    // An unknown length encoding, an unknown opcode, an empty set.
    let e = read_all(&file(b"REDIS0011", &[0xFE, 0x82])).unwrap_err();
    assert!(e.to_string().contains("length encoding"), "{e}");
    let e = read_all(&file(b"REDIS0011", &[0xF0])).unwrap_err();
    assert_eq!(e.offset(), 9);
    let e = read_all(&file(b"REDIS0011", &[0x02, 0x01, b'k', 0x00])).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn headers() {
    assert!(matches!(
        RdbReader::new(&b"REDIS0013"[..]),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        RdbReader::new(&b"VALKEY081"[..]),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        RdbReader::new(&b"REDIS0000"[..]),
        Err(Error::Unsupported { .. })
    ));
    let e = RdbReader::new(&b"GIF89a..."[..]).err().unwrap();
    assert!(matches!(e, Error::Corrupt { .. }) && e.offset() == 0, "{e}");
    assert!(matches!(
        RdbReader::new(&b"RED"[..]),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        RdbReader::new(&b"REDIS0012"[..]).unwrap().next(),
        Err(Error::Truncated { .. })
    ));
    let r = RdbReader::new(&b"VALKEY080"[..]).unwrap();
    assert_eq!(r.header().version, 80);
}

/// Every item's raw bytes, written back through the writer, are the file again.
fn identity_copy(f: &[u8]) -> Vec<u8> {
    let mut r = RdbReader::new(f).unwrap();
    r.capture_raw(true);
    let mut w = RdbWriter::new(Vec::new(), r.header()).unwrap();
    while let Some(item) = r.next().unwrap() {
        if let Item::Entry(_) = item {
            r.summarize().unwrap();
        }
        if !matches!(item, Item::End { .. }) {
            w.raw(r.raw()).unwrap();
        }
    }
    w.finish().unwrap()
}

#[test]
fn raw_items_copy_back_byte_for_byte() {
    for f in [old_file(), rdb9_file()] {
        assert_eq!(identity_copy(&f), f);
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for name in [
        "encodings.rdb",
        "hash-ziplist.rdb",
        "hash-zipmap.rdb",
        "list-quicklist.rdb",
        "scriptbackup.rdb",
        "zset-ziplist.rdb",
    ] {
        let f = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(identity_copy(&f), f, "{name}");
    }
}

#[test]
fn filter_keeps_chosen_keys_and_their_dbs_only() {
    let f = rdb9_file();
    let mut r = RdbReader::new(&f[..]).unwrap();
    let w = RdbWriter::new(Vec::new(), r.header()).unwrap();
    let (out, counts) = filter_rdb(&mut r, w, |e, key| {
        e.db == 0 && (key == b"ql" || key == b"mod")
    })
    .unwrap();
    assert_eq!(
        (counts.kept, counts.dropped, counts.bytes_written),
        (2, 5, out.len() as u64)
    );
    let lines = read_all(&out).unwrap();
    let entries: Vec<&String> = lines.iter().filter(|l| l.starts_with("db")).collect();
    assert_eq!(entries, ["db0 ql List exp None", "db0 mod Module exp None"]);
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("SelectDb(3)") || l.starts_with("ResizeDb")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("Function"))
            && lines.iter().any(|l| l.starts_with("ModuleAux"))
    );
    // Kinds survive: the copy reads back as what it was.
    let mut r = RdbReader::new(&out[..]).unwrap();
    let mut kinds = Vec::new();
    while let Some(i) = r.next().unwrap() {
        if let Item::Entry(e) = i {
            kinds.push(e.kind);
        }
    }
    assert_eq!(kinds, [Kind::List, Kind::Module]);
}

/// `summarize_spilled` hands out exactly the bytes `raw` would hold, for an entry bigger than
/// the reader's buffer too, and keeps none of them.
#[test]
fn spilled_entries_are_their_raw_bytes() {
    let big = vec![b'x'; 3 << 20];
    let mut body = vec![0xFE, 0x00];
    for (k, v) in [(&b"small"[..], &b"v"[..]), (b"big", &big[..])] {
        body.push(0x00);
        flashback_rdb::writer::put_string(&mut body, k);
        flashback_rdb::writer::put_string(&mut body, v);
    }
    let f = file(b"REDIS0010", &body);
    let raws = |spilled: bool| {
        let mut r = RdbReader::new(&f[..]).unwrap();
        r.capture_raw(true);
        let mut out = Vec::new();
        while let Some(item) = r.next().unwrap() {
            if let Item::Entry(_) = item {
                if spilled {
                    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
                    let g = got.clone();
                    r.summarize_spilled(Box::new(move |b| {
                        g.lock().unwrap().extend_from_slice(b);
                        Ok(())
                    }))
                    .unwrap()
                    .unwrap();
                    assert!(r.raw().is_empty(), "spilled bytes were kept too");
                    out.push(std::mem::take(&mut *got.lock().unwrap()));
                } else {
                    r.summarize().unwrap();
                    out.push(r.raw().to_vec());
                }
            }
        }
        out
    };
    let (kept, spilled) = (raws(false), raws(true));
    assert_eq!(kept.len(), 2);
    assert!(kept[1].len() > 3 << 20);
    assert_eq!(kept, spilled);
}
