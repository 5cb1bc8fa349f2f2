//! The byte-level structure of a segment or an RDB, for a maintainer looking at a file a user
//! sent (`flashback debug segment dump|verify`, `flashback debug base`): where each header field
//! and block sits, what each checksum is and should be, and the first byte that is wrong.
//!
//! Every field comes from the codec's own readers (the scanner, `decode_header`,
//! `parse_block_header`, `rdb::peek`, `rdb::check_trailer`), so what this shows is what a
//! restore would conclude; a second parser written for display was rejected, as it could
//! disagree with the reader it is meant to explain. The only bytes read here directly are the
//! stored checksums, to show them beside the computed ones.
//!
//! Printing is the caller's: this returns data, the CLI renders text or JSON.

use crate::error::{Error, Result};
use crate::rdb::{self, RdbInfo};
use crate::segment::{
    decode_header, parse_block_header, BlockInfo, Damage, Item, Sealed, SegmentHeader,
    SegmentScanner, SegmentSummary, BLOCK_HEADER_LEN, FOOTER_MAGIC, HEADER_LEN, MAGIC, TRAILER_LEN,
};
use std::io::{Read, Seek, SeekFrom};

/// One field of the segment header: its bytes in the file and its value as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub start: u64,
    pub end: u64,
    pub value: String,
}

/// A block the scan accepted (magic, header, checksum and chain all good), and what its
/// payload decodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockReport {
    pub index: usize,
    pub info: BlockInfo,
    pub raw_len: u32,
    pub comp_len: u32,
    pub stored_crc: u32,
    pub computed_crc: u32,
    /// Whole records decoded from the payload; for a fragment block, its bytes' length.
    pub decoded: Decoded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Records(usize),
    Fragment { bytes: usize, last: bool },
}

/// The block at the byte where the scan stopped, as far as its own bytes can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBlock {
    pub pos: u64,
    /// The header's fields when the 68 bytes are there and parse; otherwise why not.
    pub header: std::result::Result<BadHeader, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHeader {
    pub info: BlockInfo,
    pub raw_len: u32,
    pub comp_len: u32,
    pub stored_crc: u32,
    /// None when the payload runs past the end of the file.
    pub computed_crc: Option<u32>,
}

/// How the file ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A footer that matches the blocks: a sealed segment.
    Sealed {
        footer_pos: u64,
        footer_len: u64,
        summary: SegmentSummary,
    },
    /// An open tail that ends after a whole block (or the header).
    Tail { summary: SegmentSummary },
    /// An open tail whose last bytes are a torn write; a reader drops them from `at` on.
    Torn {
        at: u64,
        reason: String,
        summary: SegmentSummary,
    },
    /// An open tail with a bad block that intact blocks follow: damage on disk.
    Damaged(Damage),
    /// Anything else wrong, at this byte (a bad header, a sealed segment's bad block or
    /// footer, a block that verifies but does not decode or chain).
    Corrupt { offset: u64, what: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub file: String,
    pub len: u64,
    /// How the file was read: sealed when it ends with the footer magic, unless the caller said.
    pub sealed: Sealed,
    /// The header, when it decoded.
    pub header: Option<SegmentHeader>,
    pub header_fields: Vec<Field>,
    pub blocks: Vec<BlockReport>,
    pub bad_block: Option<BadBlock>,
    pub ending: Ending,
}

impl SegmentReport {
    /// True when nothing is wrong but, possibly, a torn tail a reader drops by design.
    pub fn is_ok(&self) -> bool {
        !matches!(self.ending, Ending::Damaged(_) | Ending::Corrupt { .. })
    }

    /// Records in the blocks read (the fragments of a record count once, at its last one).
    pub fn record_count(&self) -> u64 {
        self.blocks
            .iter()
            .map(|b| u64::from(b.info.record_count))
            .sum()
    }
}

/// Walks a segment: `r` holds `len` bytes. `sealed`: how to read it, or `None` to read it as
/// sealed exactly when it ends with the footer magic. Errors only when `r` fails; anything
/// wrong with the bytes is in the report's [`Ending`].
pub fn segment<R: Read + Seek>(
    file: &str,
    mut r: R,
    len: u64,
    sealed: Option<Sealed>,
) -> Result<SegmentReport> {
    let io = |source| Error::Io {
        file: file.to_string(),
        source,
    };
    let tail_magic = match len.checked_sub(FOOTER_MAGIC.len() as u64) {
        Some(p) if len >= (HEADER_LEN + TRAILER_LEN) as u64 => read_at(&mut r, p, 8).map_err(io)?,
        _ => Vec::new(),
    };
    let sealed = sealed.unwrap_or(if tail_magic == FOOTER_MAGIC {
        Sealed::Yes
    } else {
        Sealed::No
    });
    let head = read_at(&mut r, 0, HEADER_LEN.min(len as usize)).map_err(io)?;
    let mut report = SegmentReport {
        file: file.to_string(),
        len,
        sealed,
        header: None,
        header_fields: Vec::new(),
        blocks: Vec::new(),
        bad_block: None,
        ending: Ending::Tail {
            summary: empty_summary(),
        },
    };
    match decode_header(file, &head) {
        Ok(h) => {
            report.header_fields = header_fields(&h, &head);
            report.header = Some(h);
        }
        Err(e) => {
            report.ending = ending_of(file, e)?;
            return Ok(report);
        }
    }
    let mut scanner = SegmentScanner::new(file, len, sealed);
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut buf = Vec::new();
    let end = loop {
        let n = match scanner.next_need() {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        buf.resize(n, 0);
        r.read_exact(&mut buf).map_err(io)?;
        let b = match scanner.feed(&buf) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => break Err(e),
        };
        let block_head = read_at(&mut r, b.info.file_pos, BLOCK_HEADER_LEN).map_err(io)?;
        let here = b.info.file_pos + u64::from(b.info.len);
        r.seek(SeekFrom::Start(here)).map_err(io)?;
        let decoded = match scanner.decode(&b) {
            Ok(items) => decoded(&items),
            Err(e) => break Err(e),
        };
        // The scanner checked the header and its checksum: parse cannot fail here, but a
        // report is no place for a panic.
        let stored_crc = parse_block_header(&block_head).map_or(0, |h| h.crc);
        report.blocks.push(BlockReport {
            index: b.index,
            raw_len: b.raw_len,
            comp_len: b.payload.len() as u32,
            stored_crc,
            computed_crc: block_crc(&block_head, &b.payload),
            info: b.info,
            decoded,
        });
    };
    let summary = scanner.summary().unwrap_or_else(empty_summary);
    report.ending = match end {
        Ok(()) => match (scanner.footer(), scanner.torn_reason()) {
            (Some(s), _) => {
                let footer_pos = report.blocks.last().map_or(HEADER_LEN as u64, |b| {
                    b.info.file_pos + u64::from(b.info.len)
                });
                Ending::Sealed {
                    footer_pos,
                    footer_len: len - footer_pos,
                    summary: s.clone(),
                }
            }
            (None, Some(reason)) => Ending::Torn {
                at: scanner.valid_len(),
                reason: reason.to_string(),
                summary,
            },
            (None, None) => Ending::Tail { summary },
        },
        Err(e) => ending_of(file, e)?,
    };
    let bad_at = match &report.ending {
        Ending::Torn { at, .. } => Some(*at),
        Ending::Damaged(d) => Some(d.offset),
        Ending::Corrupt { offset, .. } if *offset >= HEADER_LEN as u64 => Some(*offset),
        _ => None,
    };
    if let Some(pos) = bad_at.filter(|&p| p < len) {
        report.bad_block = Some(bad_block(&mut r, pos, len).map_err(io)?);
    }
    Ok(report)
}

/// The summary of a file whose header did not decode: nothing in it.
fn empty_summary() -> SegmentSummary {
    SegmentSummary {
        start_offset: 0,
        end_offset: 0,
        first_time_ms: 0,
        end_time_ms: 0,
        record_count: 0,
        block_count: 0,
        end_db: 0,
        end_in_multi: false,
    }
}

fn ending_of(file: &str, e: Error) -> Result<Ending> {
    Ok(match e {
        Error::Corrupt { offset, what, .. } => Ending::Corrupt { offset, what },
        Error::Damaged { damage, .. } => Ending::Damaged(*damage),
        v @ Error::Version { .. } => Ending::Corrupt {
            offset: 8,
            what: v
                .to_string()
                .trim_start_matches(&format!("{file}: "))
                .to_string(),
        },
        other => return Err(other),
    })
}

fn decoded(items: &[Item]) -> Decoded {
    match items {
        [Item::Fragment(f)] => Decoded::Fragment {
            bytes: f.bytes.len(),
            last: f.end.is_some(),
        },
        _ => Decoded::Records(items.len()),
    }
}

/// The checksum a block header stores: crc32c over its first 64 bytes and the payload.
fn block_crc(head: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&head[..64]), payload)
}

fn bad_block<R: Read + Seek>(r: &mut R, pos: u64, len: u64) -> std::io::Result<BadBlock> {
    let have = (len - pos).min(BLOCK_HEADER_LEN as u64) as usize;
    let head = read_at(r, pos, have)?;
    if have < BLOCK_HEADER_LEN {
        let why = format!("only {have} of the {BLOCK_HEADER_LEN} header bytes are in the file");
        return Ok(BadBlock {
            pos,
            header: Err(why),
        });
    }
    let header = match parse_block_header(&head) {
        Err(m) => Err(m),
        // BlockInfo's u32 length cannot hold it (and `info` would overflow computing it).
        Ok(h) if h.comp_len > u32::MAX - BLOCK_HEADER_LEN as u32 => Err(format!(
            "compressed length {} is more than any block can hold",
            h.comp_len
        )),
        Ok(h) => {
            let payload_pos = pos + BLOCK_HEADER_LEN as u64;
            let computed_crc = if payload_pos + u64::from(h.comp_len) <= len {
                Some(block_crc(
                    &head,
                    &read_at(r, payload_pos, h.comp_len as usize)?,
                ))
            } else {
                None
            };
            Ok(BadHeader {
                info: h.info(pos),
                raw_len: h.raw_len,
                comp_len: h.comp_len,
                stored_crc: h.crc,
                computed_crc,
            })
        }
    };
    Ok(BadBlock { pos, header })
}

fn header_fields(h: &SegmentHeader, b: &[u8]) -> Vec<Field> {
    let stored = b
        .get(76..80)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    let f = |name, start: u64, end: u64, value: String| Field {
        name,
        start,
        end,
        value,
    };
    vec![
        f(
            "magic",
            0,
            8,
            format!("{:?}", String::from_utf8_lossy(&MAGIC)),
        ),
        f("version", 8, 10, crate::segment::VERSION.to_string()),
        f("origin", 10, 11, format!("{:?}", h.origin)),
        f("start_in_multi", 11, 12, h.start_in_multi.to_string()),
        f("start_db", 12, 16, h.start_db.to_string()),
        f("start_offset", 16, 24, h.start_offset.to_string()),
        f("created_ms", 24, 32, h.created_ms.to_string()),
        f("replid", 32, 72, h.replid.clone()),
        f("reserved", 72, 76, "0".into()),
        f(
            "crc32c",
            76,
            80,
            format!(
                "{stored:#010x} (computed {:#010x})",
                crc32c::crc32c(&b[..76])
            ),
        ),
    ]
}

/// `n` bytes at `pos` (fewer at the end of the file), leaving the position after them.
fn read_at<R: Read + Seek>(r: &mut R, pos: u64, n: usize) -> std::io::Result<Vec<u8>> {
    r.seek(SeekFrom::Start(pos))?;
    let mut out = Vec::with_capacity(n.min(1 << 20));
    r.take(n as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// What `flashback debug base` shows of an RDB: the header, the AUX fields, the trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseReport {
    pub file: String,
    pub len: u64,
    pub info: RdbInfo,
    /// The CRC-64 the trailer stores (0: written with `rdbchecksum no`), and the computed one.
    pub stored_crc64: Option<u64>,
    pub computed_crc64: u64,
    /// crc32c of the whole file: what a stored base's object name records.
    pub crc32c: u32,
    /// The trailer check's verdict: None when it passes.
    pub trailer_problem: Option<(u64, String)>,
}

/// How much of an RDB [`rdb::peek`] is given: the AUX fields come first and are small (a
/// `lua` script AUX can reach a few KiB).
pub const BASE_PEEK_BYTES: usize = 1 << 20;

/// Reads an RDB's header and AUX fields and checks its trailer over the whole file (`r`
/// holds `len` bytes). A file that is not an RDB is [`Error::Corrupt`] at byte 0.
pub fn base<R: Read + Seek>(file: &str, mut r: R, len: u64) -> Result<BaseReport> {
    let io = |source| Error::Io {
        file: file.to_string(),
        source,
    };
    let prefix = read_at(&mut r, 0, BASE_PEEK_BYTES).map_err(io)?;
    let info = rdb::peek(file, &prefix)?;
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    // crc64 covers all but the last 8 bytes; crc32c covers all of them.
    let body_len = len.saturating_sub(8);
    let (mut crc64, mut crc32) = (0u64, 0u32);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    let mut tail = Vec::new();
    loop {
        let n = r.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        crc32 = crc32c::crc32c_append(crc32, chunk);
        let in_body = body_len.saturating_sub(at).min(n as u64) as usize;
        crc64 = rdb::crc64(crc64, &chunk[..in_body]);
        tail.extend_from_slice(chunk);
        let keep = tail.len().saturating_sub(9);
        tail.drain(..keep);
        at += n as u64;
    }
    let trailer_problem = match rdb::check_trailer(file, at, crc64, &tail) {
        Ok(()) => None,
        Err(Error::Corrupt { offset, what, .. }) => Some((offset, what)),
        Err(e) => return Err(e),
    };
    let stored_crc64 = (tail.len() == 9).then(|| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&tail[1..]);
        u64::from_le_bytes(a)
    });
    Ok(BaseReport {
        file: file.to_string(),
        len: at,
        info,
        stored_crc64,
        computed_crc64: crc64,
        crc32c: crc32,
        trailer_problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Origin;
    use crate::spec::SegmentSpec;
    use std::io::Cursor;

    const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";

    fn spec() -> SegmentSpec {
        let mut s = SegmentSpec::new(REPLID, 100, 1_000, Origin::NewGeneration);
        s.command(1_001, 0, &["SET", "a", "1"])
            .cut(1_002)
            .command(1_003, 0, &["SET", "b", "2"])
            .command(1_004, 0, &["SET", "c", "3"])
            .cut(1_005)
            .command(1_006, 0, &["DEL", "a"]);
        s
    }

    fn inspect(b: &[u8]) -> SegmentReport {
        segment("t.seg", Cursor::new(b), b.len() as u64, None).unwrap()
    }

    #[test]
    fn a_sealed_segment_reads_whole() {
        let b = spec().build_sealed(1_010).unwrap();
        let r = inspect(&b);
        assert_eq!(r.sealed, Sealed::Yes);
        assert!(r.is_ok());
        assert_eq!(r.blocks.len(), 3);
        assert_eq!(r.record_count(), 4);
        assert_eq!(r.header_fields.len(), 10);
        for blk in &r.blocks {
            assert_eq!(blk.stored_crc, blk.computed_crc);
            assert_eq!(
                blk.decoded,
                Decoded::Records(blk.info.record_count as usize)
            );
        }
        let Ending::Sealed {
            footer_pos,
            footer_len,
            summary,
        } = &r.ending
        else {
            panic!("{:?}", r.ending)
        };
        assert_eq!(footer_pos + footer_len, b.len() as u64);
        assert_eq!(summary.record_count, 4);
    }

    #[test]
    fn a_flipped_payload_byte_is_found_at_its_block() {
        let b = spec().build_tail().unwrap();
        let clean = inspect(&b);
        assert!(
            matches!(clean.ending, Ending::Tail { .. }),
            "{:?}",
            clean.ending
        );
        let second = clean.blocks[1].info.file_pos;
        let mut bad = b.clone();
        bad[second as usize + BLOCK_HEADER_LEN + 3] ^= 0x40;
        let r = inspect(&bad);
        assert!(!r.is_ok());
        let Ending::Damaged(d) = &r.ending else {
            panic!("{:?}", r.ending)
        };
        assert_eq!(d.offset, second);
        let bb = r.bad_block.unwrap();
        assert_eq!(bb.pos, second);
        let h = bb.header.unwrap();
        assert_ne!(Some(h.stored_crc), h.computed_crc);
        // Sealed, the same flip is corruption at the same byte.
        let mut sealed = spec().build_sealed(1_010).unwrap();
        sealed[second as usize + BLOCK_HEADER_LEN + 3] ^= 0x40;
        let r = inspect(&sealed);
        assert!(
            matches!(r.ending, Ending::Corrupt { offset, .. } if offset == second),
            "{:?}",
            r.ending
        );
    }

    #[test]
    fn a_cut_tail_is_torn_where_the_last_whole_block_ends() {
        let b = spec().build_tail().unwrap();
        let r = inspect(&b[..b.len() - 3]);
        assert!(r.is_ok());
        let last = &inspect(&b).blocks[2];
        let Ending::Torn { at, reason, .. } = &r.ending else {
            panic!("{:?}", r.ending)
        };
        assert_eq!(*at, last.info.file_pos);
        assert!(reason.contains("truncated block payload"), "{reason}");
        assert!(r.bad_block.unwrap().header.unwrap().computed_crc.is_none());
    }

    #[test]
    fn a_bad_header_stops_before_any_block() {
        let mut b = spec().build_sealed(1_010).unwrap();
        b[20] ^= 1;
        let r = inspect(&b);
        assert!(r.header.is_none());
        assert!(
            matches!(&r.ending, Ending::Corrupt { offset: 76, what } if what.contains("header checksum")),
            "{:?}",
            r.ending
        );
        let r = inspect(&[b"REDIS0011".as_slice(), &[0; 100]].concat());
        assert!(
            matches!(&r.ending, Ending::Corrupt { offset: 0, .. }),
            "{:?}",
            r.ending
        );
    }

    #[test]
    fn base_reads_header_aux_and_trailer() {
        let mut f = b"REDIS0011\xfa\x09redis-ver\x057.2.4".to_vec();
        f.push(0xff);
        let crc = rdb::crc64(0, &f);
        f.extend_from_slice(&crc.to_le_bytes());
        let r = base("b.rdb", Cursor::new(&f), f.len() as u64).unwrap();
        assert_eq!(r.info.version, 11);
        assert_eq!(r.info.aux_str("redis-ver").as_deref(), Some("7.2.4"));
        assert_eq!((r.stored_crc64, r.computed_crc64), (Some(crc), crc));
        assert_eq!(r.crc32c, crc32c::crc32c(&f));
        assert_eq!(r.trailer_problem, None);
        let n = f.len();
        f[n - 3] ^= 1;
        let r = base("b.rdb", Cursor::new(&f), n as u64).unwrap();
        assert_eq!(r.trailer_problem.unwrap().0, n as u64 - 8);
    }
}
