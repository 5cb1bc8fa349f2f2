//! Writes the seed corpora of the segment and envelope fuzz targets into `fuzz/seeds/`:
//! `cargo run -p flashback-format --example fuzz_seeds -- fuzz/seeds`. The seeds are committed
//! (CI must not depend on this program's output changing with a zstd upgrade); rerun it only
//! when the format changes, and review the diff. The RDB seeds are real files, copied.
//!
//! Each seed is small (a few hundred bytes): libFuzzer mutates small inputs faster, and its
//! default maximum input length follows the largest seed.

use flashback_format::envelope;
use flashback_format::segment::{block_flags, Origin, RecordMeta, SegmentHeader, SegmentWriter};
use flashback_format::spec::{resp_command, SegmentSpec};
use std::path::Path;

const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";
const T0: u64 = 1_790_000_000_000;

/// The golden file's shape: records, binary argv, SELECT, MULTI/EXEC, a heartbeat, a
/// catch-up block, an unflushed last block.
fn varied() -> SegmentSpec {
    let mut s = SegmentSpec::new(REPLID, 0x1000, T0, Origin::NewGeneration);
    s.command(T0 + 10, 0, &["SET", "greeting", "hello"])
        .command(
            T0 + 10,
            0,
            &[&b"SET"[..], b"bin\x00\r\n", b"\xff\xfe\r\n$3\r\n"],
        )
        .command(T0 + 250, 2, &["SELECT", "2"])
        .transaction(
            T0 + 260,
            2,
            &[&["INCR", "counter"][..], &["EXPIRE", "counter", "100"][..]],
        )
        .cut(T0 + 300)
        .cut(T0 + 1_300)
        .command(T0 + 5_000, 2, &["HSET", "userprofile", "field", "v"])
        .cut_with_flags(T0 + 5_100, block_flags::CATCHUP)
        .command(T0 + 6_000, 2, &["FLUSHALL"]);
    s
}

/// A resumed segment starting inside a transaction in db 5.
fn resumed() -> SegmentSpec {
    let mut s = SegmentSpec::new(REPLID, 77_000, T0, Origin::Resume);
    s.header.start_db = 5;
    s.header.start_in_multi = true;
    s.record(T0 + 1, 5, false, resp_command(&["LPUSH", "q", "a", "b"]))
        .record(T0 + 1, 5, true, resp_command(&["EXEC"]))
        .cut(T0 + 2)
        .command(T0 + 3, 5, &["DEL", "q"]);
    s
}

/// A record stored in three fragments between two whole records; `finish` seals it.
fn fragmented(seal: bool) -> std::io::Result<Vec<u8>> {
    let header = SegmentHeader {
        replid: REPLID.into(),
        start_offset: 500,
        start_db: 0,
        start_in_multi: false,
        created_ms: T0,
        origin: Origin::Roll,
    };
    let mut w = SegmentWriter::new(Vec::new(), &header, Default::default())?;
    let first = resp_command(&["SET", "a", "1"]);
    let end = 500 + first.len() as u64;
    w.append(&flashback_format::segment::Record {
        end_offset: end,
        time_ms: T0 + 1,
        db: 0,
        boundary: true,
        resp: first,
    })?;
    w.flush_block(T0 + 1, 0)?;
    let big = resp_command(&[&b"SET"[..], b"big", &[b'v'; 300][..]]);
    let (a, rest) = big.split_at(100);
    let (b, c) = rest.split_at(100);
    w.append_fragment(a, None, T0 + 2, 0)?;
    w.append_fragment(b, None, T0 + 3, 0)?;
    let meta = RecordMeta {
        end_offset: end + big.len() as u64,
        time_ms: T0 + 4,
        db: 0,
        boundary: true,
    };
    w.append_fragment(c, Some(&meta), T0 + 4, block_flags::CATCHUP)?;
    if seal {
        return Ok(w.finish(T0 + 10)?.0);
    }
    Ok(w.get_ref().clone())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: fuzz_seeds DIR (e.g. fuzz/seeds)")?;
    let dir = Path::new(&dir);
    let mut segs: Vec<(&str, Vec<u8>)> = vec![
        ("varied-sealed.seg", varied().build_sealed(T0 + 7_000)?),
        ("varied-tail.seg", varied().build_tail()?),
        ("resumed-sealed.seg", resumed().build_sealed(T0 + 9)?),
        ("resumed-tail.seg", resumed().build_tail()?),
        ("fragments-sealed.seg", fragmented(true)?),
        ("fragments-tail.seg", fragmented(false)?),
        (
            "empty-sealed.seg",
            SegmentSpec::new(REPLID, 9, T0, Origin::ReplidChange).build_sealed(T0)?,
        ),
    ];
    // A torn tail (cut mid-block) and a damaged one (a flipped payload byte, blocks after it):
    // the two endings the probe tells apart.
    let tail = varied().build_tail()?;
    segs.push(("torn-tail.seg", tail[..tail.len() - 7].to_vec()));
    let mut damaged = tail.clone();
    damaged[80 + 68 + 5] ^= 0x10;
    segs.push(("damaged-tail.seg", damaged));
    for target in ["segment_scan", "segment_blocks"] {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        for (name, bytes) in &segs {
            std::fs::write(d.join(name), bytes)?;
        }
    }
    let d = dir.join("envelope_decode");
    std::fs::create_dir_all(&d)?;
    let manifest = br#"{
  "source": "cache",
  "generation": "0000019a2b3c4d5e",
  "replid": "0123456789abcdef0123456789abcdef01234567",
  "base_offset": 14,
  "base_time_ms": 1790000000000,
  "base_db": 0,
  "base_size": 188,
  "rdb_version": 11,
  "server": "valkey 8.1.1",
  "reason": "first capture",
  "previous": null,
  "agent_version": "0.1.0"
}"#;
    std::fs::write(
        d.join("manifest.meta"),
        envelope::encode(b"FBGENMAN", 1, manifest),
    )?;
    std::fs::write(d.join("empty.meta"), envelope::encode(b"FBGENMAN", 1, b""))?;
    std::fs::write(d.join("v2.meta"), envelope::encode(b"FBGENMAN", 2, b"{}"))?;
    // Real RDBs are copied next to these (see fuzz/seeds/README.md); these two add what they
    // lack: an LZF-compressed AUX value and Valkey 9's header.
    let d = dir.join("rdb_peek");
    std::fs::create_dir_all(&d)?;
    let mut lzf = b"REDIS0011\xfa\x09redis-ver".to_vec();
    lzf.extend_from_slice(&[0xc3, 7, 12, 2, b'a', b'b', b'c', 7 << 5, 0, 2]);
    lzf.extend_from_slice(b"\xfa\x0brepl-offset\xc2\x40\xe2\x01\x00");
    std::fs::write(d.join("lzf-aux.rdb"), with_trailer(lzf))?;
    let valkey = b"VALKEY080\xfa\x0avalkey-ver\x059.1.0\xfa\x0erepl-stream-db\xc0\x03".to_vec();
    std::fs::write(d.join("valkey9.rdb"), with_trailer(valkey))?;
    // RESP: commands as a primary streams them (binary argv, a big bulk, inline PING), and
    // replies a target sends (simple, error, integer, null, nested array).
    let commands: Vec<Vec<u8>> = vec![
        resp_command(&["SET", "greeting", "hello"]),
        resp_command(&[&b"SET"[..], b"bin\x00\r\n", b"\xff\xfe"]),
        resp_command(&["SELECT", "2"]),
        [
            resp_command(&["MULTI"]),
            resp_command(&["INCR", "n"]),
            resp_command(&["EXEC"]),
        ]
        .concat(),
        resp_command(&["RPUSH", "list", &"x".repeat(300), "b", "c"]),
        b"\n*1\r\n$4\r\nPING\r\n".to_vec(),
    ];
    let replies: [&[u8]; 5] = [
        b"+OK\r\n",
        b"-ERR unknown command\r\n",
        b":12345\r\n",
        b"$-1\r\n",
        b"*2\r\n*1\r\n:1\r\n$3\r\nabc\r\n",
    ];
    for target in ["resp_frame", "stream_framer"] {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        for (i, c) in commands.iter().enumerate() {
            // stream_framer reads its first byte as the piece size.
            let seed = if target == "stream_framer" {
                [&[7u8][..], c].concat()
            } else {
                c.clone()
            };
            std::fs::write(d.join(format!("command-{i}.resp")), seed)?;
        }
        if target == "resp_frame" {
            for (i, r) in replies.iter().enumerate() {
                std::fs::write(d.join(format!("reply-{i}.resp")), r)?;
            }
        }
    }
    // An encrypted object under the decrypt target's fixed key, empty and with two chunks'
    // worth of framing (small plaintext: the chunk size is 1 MiB, one chunk covers it).
    let d = dir.join("decrypt");
    std::fs::create_dir_all(&d)?;
    let key = std::sync::Arc::new(flashback_format::crypt::Key::derive(&[7u8; 32])?);
    for (name, plain) in [("empty.enc", &b""[..]), ("segment.enc", &segs[0].1[..])] {
        let sealed =
            flashback_format::crypt::seal(key.clone(), "fuzz/object", [plain], plain.len() as u64)?;
        std::fs::write(d.join(name), sealed)?;
    }
    Ok(())
}

/// The EOF opcode and the CRC-64 trailer every RDB ends with.
fn with_trailer(mut rdb: Vec<u8>) -> Vec<u8> {
    rdb.push(0xff);
    let crc = flashback_format::rdb::crc64(0, &rdb);
    rdb.extend_from_slice(&crc.to_le_bytes());
    rdb
}
