//! Every real server-written RDB under tests/data parses to the end with its checksum checked,
//! decoded element by element; the deliberately corrupt ones are refused with an offset.

use flashback_rdb::{Item, RdbReader, StreamGroup, StreamId, StreamMeta, Visitor};
use std::path::{Path, PathBuf};

#[derive(Default, Debug)]
struct Dump {
    out: Vec<String>,
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Visitor for Dump {
    fn string(&mut self, v: &[u8]) {
        self.out.push(format!("  = {}", s(v)));
    }
    fn list_item(&mut self, v: &[u8]) {
        self.out.push(format!("  - {}", s(v)));
    }
    fn set_member(&mut self, v: &[u8]) {
        self.out.push(format!("  * {}", s(v)));
    }
    fn zset_member(&mut self, m: &[u8], score: f64) {
        self.out.push(format!("  {} {score}", s(m)));
    }
    fn hash_field(&mut self, f: &[u8], v: &[u8], ttl: Option<i64>) {
        self.out.push(format!("  {} => {} {ttl:?}", s(f), s(v)));
    }
    fn stream_entry(&mut self, id: StreamId, fields: &[(Vec<u8>, Vec<u8>)]) {
        let f: Vec<String> = fields
            .iter()
            .map(|(a, b)| format!("{}={}", s(a), s(b)))
            .collect();
        self.out.push(format!("  {id} {}", f.join(" ")));
    }
    fn stream_meta(&mut self, m: &StreamMeta) {
        self.out.push(format!("  meta {m:?}"));
    }
    fn stream_group(&mut self, g: &StreamGroup) {
        self.out.push(format!(
            "  group {} pel {} consumers {}",
            s(&g.name),
            g.pending.len(),
            g.consumers.len()
        ));
    }
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Reads a whole file, every value visited; returns the dump lines.
fn dump(path: &Path) -> flashback_rdb::Result<Vec<String>> {
    let mut r = RdbReader::open(path)?;
    let mut d = Dump::default();
    d.out.push(format!("{:?}", r.header()));
    while let Some(item) = r.next()? {
        match item {
            Item::Entry(e) => {
                d.out.push(format!(
                    "db{} {} {:?} expire {:?}",
                    e.db,
                    s(r.key()),
                    e.kind,
                    e.expire_ms
                ));
                let sum = r.visit(&mut d)?;
                d.out.push(format!(
                    "  ({} elements, {} bytes)",
                    sum.elements, sum.entry_bytes
                ));
            }
            other => d.out.push(format!("{other:?}")),
        }
    }
    Ok(d.out)
}

#[test]
fn every_good_file_parses() {
    for name in [
        "encodings.rdb",
        "hash-ziplist.rdb",
        "hash-zipmap.rdb",
        "list-quicklist.rdb",
        "rdb-preamble.aof",
        "scriptbackup.rdb",
        "zset-ziplist.rdb",
    ] {
        let lines = dump(&data(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        if std::env::var_os("RDB_DUMP").is_some() {
            println!("== {name}\n{}", lines.join("\n"));
        }
    }
}

#[test]
fn corrupt_files_are_refused_with_an_offset() {
    for name in ["corrupt_empty_keys.rdb", "corrupt_ziplist.rdb"] {
        let e = dump(&data(name)).expect_err(name);
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains("byte "), "{name}: {msg}");
        println!("{name}: {msg}");
    }
}
