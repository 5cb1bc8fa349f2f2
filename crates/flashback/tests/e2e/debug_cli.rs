//! `flashback debug segment dump|verify` and `flashback debug base`, run as a maintainer would
//! on files a user sent: segments written through the format crate's public writer (a good
//! one, one with a flipped byte mid-block, a truncated one), a real RDB, and foreign files.

use flashback_format::segment::{Origin, BLOCK_HEADER_LEN, HEADER_LEN};
use flashback_format::spec::SegmentSpec;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn flashback(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashback"))
        .args(args)
        .env_remove("FLASHBACK_ENCRYPTION_KEY")
        .env_remove("FLASHBACK_ENCRYPTION_KEY_FILE")
        .output()
        .expect("run flashback")
}

fn text(o: &Output) -> (String, String, Option<i32>) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code(),
    )
}

/// Three blocks of records: (tail bytes, sealed bytes, the byte where block 1 starts).
fn segment() -> (Vec<u8>, Vec<u8>, usize) {
    let mut s = SegmentSpec::new(
        "8f0c2a5b6e1d4c3b9a7f8e6d5c4b3a2918273645",
        1_000,
        1_790_000_000_000,
        Origin::NewGeneration,
    );
    s.command(1_790_000_000_001, 0, &["SET", "a", "1"])
        .cut(1_790_000_000_002)
        .command(1_790_000_000_003, 0, &["SET", "b", "2"])
        .command(1_790_000_000_004, 0, &["SET", "c", "3"])
        .cut(1_790_000_000_005)
        .command(1_790_000_000_006, 0, &["DEL", "a"]);
    let tail = s.build_tail().unwrap();
    let sealed = s.build_sealed(1_790_000_000_010).unwrap();
    // Block 0's length is in its header: 68 bytes plus the compressed length at 16..20.
    let comp = u32::from_le_bytes(tail[HEADER_LEN + 16..HEADER_LEN + 20].try_into().unwrap());
    (tail, sealed, HEADER_LEN + BLOCK_HEADER_LEN + comp as usize)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_good_sealed_segment_dumps_every_block_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (_, sealed, _) = segment();
    let f = write(dir.path(), "good.seg", &sealed);
    let (out, err, code) = text(&flashback(&[
        "debug",
        "segment",
        "dump",
        f.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("read as a sealed segment"), "{out}");
    assert!(out.contains("16..24  start_offset    1000"), "{out}");
    assert!(out.contains("block 0 at bytes 80.."), "{out}");
    assert!(out.contains("block 2 at bytes"), "{out}");
    assert!(out.contains("crc32c 0x") && out.contains(" ok"), "{out}");
    assert!(out.contains("footer at bytes"), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
    let (out, err, code) = text(&flashback(&[
        "debug",
        "segment",
        "verify",
        f.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("OK ") && out.contains("sealed segment, 3 blocks, 4 records"),
        "{out}"
    );
    // --json carries the same facts.
    let (out, _, code) = text(&flashback(&[
        "debug",
        "segment",
        "dump",
        "--json",
        f.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["blocks"].as_array().unwrap().len(), 3);
    assert_eq!(v["ending"]["kind"], "sealed");
    assert_eq!(
        v["blocks"][1]["stored_crc32c"],
        v["blocks"][1]["computed_crc32c"]
    );
}

#[test]
fn a_flipped_byte_mid_block_is_damage_at_that_block() {
    let dir = tempfile::tempdir().unwrap();
    let (tail, sealed, block1) = segment();
    let mut bad = tail.clone();
    bad[block1 + BLOCK_HEADER_LEN + 4] ^= 0x08;
    let f = write(dir.path(), "0000000000000000.tail", &bad);
    let (out, err, code) = text(&flashback(&[
        "debug",
        "segment",
        "dump",
        f.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!(
            "DAMAGED at byte {block1}: block checksum mismatch"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "bad block (as its own header tells it) at bytes {block1}.."
        )),
        "{out}"
    );
    assert!(out.contains("MISMATCH"), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("damaged at byte {block1}")), "{err}");
    let (out, err, code) = text(&flashback(&[
        "debug",
        "segment",
        "verify",
        f.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.starts_with("error: ")
            && err.contains(f.to_str().unwrap())
            && err.contains(&format!("byte {block1}")),
        "{err}"
    );
    // The same flip in a sealed segment: corruption at the same byte.
    let mut bad = sealed.clone();
    bad[block1 + BLOCK_HEADER_LEN + 4] ^= 0x08;
    let f = write(dir.path(), "bad.seg", &bad);
    let (_, err, code) = text(&flashback(&[
        "debug",
        "segment",
        "verify",
        f.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "corrupt at byte {block1}: block checksum mismatch"
        )),
        "{err}"
    );
}

#[test]
fn a_truncated_tail_is_torn_where_its_last_whole_block_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (tail, _, _) = segment();
    let f = write(dir.path(), "cut.tail", &tail[..tail.len() - 5]);
    let (out, err, code) = text(&flashback(&[
        "debug",
        "segment",
        "dump",
        f.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("read as an open tail"), "{out}");
    assert!(
        out.contains("TORN TAIL at byte") && out.contains("truncated block payload"),
        "{out}"
    );
    let (out, _, code) = text(&flashback(&[
        "debug",
        "segment",
        "verify",
        f.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("OK ")
            && out.contains("2 blocks, 3 records")
            && out.contains("torn tail at byte"),
        "{out}"
    );
    // Told it is sealed, the same file is corrupt: no footer.
    let (_, err, code) = text(&flashback(&[
        "debug",
        "segment",
        "verify",
        "--sealed",
        f.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(1));
    assert!(err.contains("corrupt at byte"), "{err}");
}

#[test]
fn a_real_rdb_shows_its_header_aux_fields_and_trailer() {
    let rdb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../format/tests/data/scriptbackup.rdb");
    let (out, err, code) = text(&flashback(&["debug", "base", rdb.to_str().unwrap()]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("header (bytes 0..9): REDIS0010 (RDB version 10)"),
        "{out}"
    );
    assert!(out.contains("aux redis-ver"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("aux redis-bits") && l.ends_with(" 64")),
        "{out}"
    );
    assert!(out.contains("crc64 stored 0x"), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
    // A flipped byte breaks the trailer check, named at the checksum's byte.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&rdb).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 1;
    let f = write(dir.path(), "bad.rdb", &bytes);
    let (_, err, code) = text(&flashback(&["debug", "base", f.to_str().unwrap()]));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("corrupt at byte {}: RDB checksum mismatch", n - 8)),
        "{err}"
    );
}

#[test]
fn a_foreign_file_gets_one_line_saying_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let rdb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../format/tests/data/scriptbackup.rdb");
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "notes.txt",
            b"hello, this is not a segment\n".to_vec(),
            "segment",
            "not a file flashback writes (first bytes 68 65",
        ),
        (
            "x.seg",
            [&b"FBENC\r\n\x1a\x01\x01"[..], &[0; 40]].concat(),
            "segment",
            "an encrypted flashback object",
        ),
        (
            "base.rdb",
            std::fs::read(&rdb).unwrap(),
            "segment",
            "an RDB file: read it with `flashback debug base`",
        ),
        (
            "generation.meta",
            flashback_format::envelope::encode(b"FBGENMAN", 1, b"{}"),
            "base",
            "a generation manifest",
        ),
        (
            "s.seg",
            segment().1,
            "base",
            "a flashback segment: read it with `flashback debug segment dump`",
        ),
    ];
    for (name, bytes, cmd, says) in cases {
        let f = write(dir.path(), name, &bytes);
        let args: Vec<&str> = match cmd {
            "segment" => vec!["debug", "segment", "dump", f.to_str().unwrap()],
            _ => vec!["debug", "base", f.to_str().unwrap()],
        };
        let (out, err, code) = text(&flashback(&args));
        assert_eq!(code, Some(2), "{name}: {out}{err}");
        assert!(out.is_empty(), "{name}: {out}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
    }
}
