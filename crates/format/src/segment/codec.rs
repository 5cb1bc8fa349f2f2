//! The byte encodings of a segment: the file header, the block header, the footer index, and
//! the decoding of a block's payload into records or a fragment. The only file that knows
//! where a field sits (`docs/formats.md` has the same table for people).
//!
//! Every decoder here takes bytes from disk or a store and must not panic or allocate on their
//! say-so beyond the format's limits: they are what the fuzz targets drive.

use super::{
    block_flags, BlockInfo, Fragment, Item, Origin, Record, RecordMeta, SegmentHeader,
    SegmentSummary, BLOCK_HEADER_LEN, BLOCK_MAGIC, FOOTER_MAGIC, HEADER_LEN, INDEX_ENTRY_LEN,
    MAGIC, MAX_BLOCK_RAW_BYTES, REPLID_LEN, TRAILER_LEN, VERSION,
};
use crate::error::{Error, Result};
use crate::varint;

/// Decompresses a block whose header and checksum were checked, and decodes it.
pub(super) fn decode_block(
    name: &str,
    i: usize,
    b: &BlockInfo,
    raw_len: u32,
    payload: &[u8],
) -> Result<Vec<Item>> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let ppos = b.file_pos + BLOCK_HEADER_LEN as u64;
    let corrupt = |what: String| Error::corrupt(name, ppos, format!("block {i}: {what}"));
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n == u64::from(raw_len) => {}
        other => {
            return Err(corrupt(format!(
                "zstd frame size {other:?} is not the header's raw length {raw_len}"
            )));
        }
    }
    // `raw_len` is at most MAX_BLOCK_RAW_BYTES: parse_block_header refused the block otherwise.
    let raw = zstd::bulk::decompress(payload, raw_len as usize)
        .map_err(|e| corrupt(format!("zstd: {e}")))?;
    if raw.len() != raw_len as usize {
        return Err(corrupt(format!(
            "decompressed to {} bytes, header says {raw_len}",
            raw.len()
        )));
    }
    if b.flags & block_flags::FRAGMENT != 0 {
        // The header check made raw_len the slice's length; the metadata is the header's.
        let end = (b.record_count == 1).then_some(RecordMeta {
            end_offset: b.end_offset,
            time_ms: b.last_time_ms,
            db: b.end_db,
            boundary: !b.end_in_multi,
        });
        return Ok(vec![Item::Fragment(Fragment {
            start_offset: b.start_offset,
            db: b.end_db,
            bytes: raw,
            end,
        })]);
    }
    let recs = decode_records(&raw, b).map_err(corrupt)?;
    Ok(recs.into_iter().map(Item::Record).collect())
}

fn decode_records(raw: &[u8], b: &BlockInfo) -> std::result::Result<Vec<Record>, String> {
    let mut out = Vec::with_capacity(b.record_count as usize);
    let mut p = 0usize;
    let mut offset = b.start_offset;
    let mut time = b.first_time_ms;
    for k in 0..b.record_count {
        let at = p;
        let bad = |what: &str| format!("record {k} (raw byte {at}): {what}");
        let len = varint::get(raw, &mut p).ok_or_else(|| bad("truncated length"))?;
        let dt = varint::get(raw, &mut p).ok_or_else(|| bad("truncated time delta"))?;
        let dbb = varint::get(raw, &mut p).ok_or_else(|| bad("truncated db"))?;
        if len == 0 {
            return Err(bad("empty record"));
        }
        if k == 0 && dt != 0 {
            return Err(bad(
                "first record's time differs from the block's first time",
            ));
        }
        time = time.checked_add(dt).ok_or_else(|| bad("time overflows"))?;
        let db = u32::try_from(dbb >> 1).map_err(|_| bad("db number too large"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| p.checked_add(l))
            .filter(|&e| e <= raw.len())
            .ok_or_else(|| bad("record runs past the block"))?;
        offset = offset
            .checked_add(len)
            .ok_or_else(|| bad("offset overflows"))?;
        out.push(Record {
            end_offset: offset,
            time_ms: time,
            db,
            boundary: dbb & 1 == 1,
            resp: raw[p..end].to_vec(),
        });
        p = end;
    }
    if p != raw.len() {
        return Err(format!("{} bytes after the last record", raw.len() - p));
    }
    if offset != b.end_offset {
        return Err(format!(
            "records end at offset {offset}, header says {}",
            b.end_offset
        ));
    }
    if time != b.last_time_ms {
        return Err(format!(
            "last record time {time}, header says {}",
            b.last_time_ms
        ));
    }
    // Non-empty: the block step check guarantees record_count > 0 here.
    if let Some(last) = out.last() {
        if last.db != b.end_db || last.boundary == b.end_in_multi {
            return Err(format!(
                "last record (db {}, boundary {}) disagrees with the header's end state (db {}, in multi {})",
                last.db, last.boundary, b.end_db, b.end_in_multi
            ));
        }
    }
    Ok(out)
}

/// An `InvalidInput` error: what the writer returns for a caller's mistake.
pub(super) fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

pub(super) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(super) fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(super) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

const ORIGINS: [Origin; 4] = [
    Origin::NewGeneration,
    Origin::Roll,
    Origin::Resume,
    Origin::ReplidChange,
];

fn valid_replid(r: &[u8]) -> bool {
    r.len() == REPLID_LEN && r.iter().all(|b| (0x21..=0x7e).contains(b))
}

pub(super) fn encode_header(h: &SegmentHeader) -> std::io::Result<[u8; HEADER_LEN]> {
    if !valid_replid(h.replid.as_bytes()) {
        return Err(invalid(format!(
            "replid {:?} is not 40 printable ASCII characters",
            h.replid
        )));
    }
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&VERSION.to_le_bytes());
    b[10] = h.origin as u8;
    b[11] = u8::from(h.start_in_multi);
    b[12..16].copy_from_slice(&h.start_db.to_le_bytes());
    b[16..24].copy_from_slice(&h.start_offset.to_le_bytes());
    b[24..32].copy_from_slice(&h.created_ms.to_le_bytes());
    b[32..72].copy_from_slice(h.replid.as_bytes());
    // 72..76 reserved, zero.
    let crc = crc32c::crc32c(&b[..76]);
    b[76..80].copy_from_slice(&crc.to_le_bytes());
    Ok(b)
}

pub(crate) fn decode_header(file: &str, b: &[u8]) -> Result<SegmentHeader> {
    let short = || {
        Error::corrupt(
            file,
            b.len() as u64,
            format!(
                "{} bytes is shorter than a segment header ({HEADER_LEN})",
                b.len()
            ),
        )
    };
    if b.len() < 10 {
        return Err(short());
    }
    if b[0..8] != MAGIC {
        return Err(Error::corrupt(
            file,
            0,
            "not a flashback segment (bad magic)",
        ));
    }
    let version = le16(b, 8);
    if version > VERSION {
        return Err(Error::Version {
            file: file.to_string(),
            found: version.into(),
            supported: VERSION.into(),
        });
    }
    if version == 0 {
        return Err(Error::corrupt(file, 8, "segment version 0 does not exist"));
    }
    if b.len() < HEADER_LEN {
        return Err(short());
    }
    let stored = le32(b, 76);
    let crc = crc32c::crc32c(&b[..76]);
    if crc != stored {
        return Err(Error::corrupt(
            file,
            76,
            format!("header checksum mismatch (stored {stored:#010x}, computed {crc:#010x})"),
        ));
    }
    let origin = *ORIGINS
        .get(b[10] as usize)
        .ok_or_else(|| Error::corrupt(file, 10, format!("unknown origin {}", b[10])))?;
    if b[11] > 1 || b[72..76] != [0; 4] || !valid_replid(&b[32..72]) {
        return Err(Error::corrupt(
            file,
            11,
            "header has a bad multi flag, replid or reserved bytes",
        ));
    }
    Ok(SegmentHeader {
        replid: String::from_utf8_lossy(&b[32..72]).into_owned(),
        start_offset: le64(b, 16),
        start_db: le32(b, 12),
        start_in_multi: b[11] == 1,
        created_ms: le64(b, 24),
        origin,
    })
}

/// A block header as stored.
#[derive(Debug)]
pub(crate) struct BlockHeader {
    flags: u16,
    end_in_multi: bool,
    record_count: u32,
    pub(crate) raw_len: u32,
    pub(crate) comp_len: u32,
    end_db: u32,
    pub(crate) start_offset: u64,
    pub(crate) end_offset: u64,
    first_time_ms: u64,
    last_time_ms: u64,
    covered_through_ms: u64,
    pub(crate) crc: u32,
}

impl BlockHeader {
    pub(crate) fn info(&self, file_pos: u64) -> BlockInfo {
        BlockInfo {
            file_pos,
            len: BLOCK_HEADER_LEN as u32 + self.comp_len,
            flags: self.flags,
            record_count: self.record_count,
            start_offset: self.start_offset,
            end_offset: self.end_offset,
            first_time_ms: self.first_time_ms,
            last_time_ms: self.last_time_ms,
            covered_through_ms: self.covered_through_ms,
            end_db: self.end_db,
            end_in_multi: self.end_in_multi,
        }
    }
}

pub(super) fn encode_block_header(
    b: &BlockInfo,
    raw_len: u32,
    comp_len: u32,
    payload: &[u8],
) -> [u8; BLOCK_HEADER_LEN] {
    let mut h = [0u8; BLOCK_HEADER_LEN];
    h[0..4].copy_from_slice(&BLOCK_MAGIC);
    h[4..6].copy_from_slice(&b.flags.to_le_bytes());
    h[6] = u8::from(b.end_in_multi);
    h[8..12].copy_from_slice(&b.record_count.to_le_bytes());
    h[12..16].copy_from_slice(&raw_len.to_le_bytes());
    h[16..20].copy_from_slice(&comp_len.to_le_bytes());
    h[20..24].copy_from_slice(&b.end_db.to_le_bytes());
    h[24..32].copy_from_slice(&b.start_offset.to_le_bytes());
    h[32..40].copy_from_slice(&b.end_offset.to_le_bytes());
    h[40..48].copy_from_slice(&b.first_time_ms.to_le_bytes());
    h[48..56].copy_from_slice(&b.last_time_ms.to_le_bytes());
    h[56..64].copy_from_slice(&b.covered_through_ms.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..64]), payload);
    h[64..68].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes and checks the fields of a 68-byte block header (not its checksum, which covers
/// the payload too).
pub(crate) fn parse_block_header(h: &[u8]) -> std::result::Result<BlockHeader, String> {
    if h[0..4] != BLOCK_MAGIC {
        return Err("no block magic".into());
    }
    let bh = BlockHeader {
        flags: le16(h, 4),
        end_in_multi: h[6] == 1,
        record_count: le32(h, 8),
        raw_len: le32(h, 12),
        comp_len: le32(h, 16),
        end_db: le32(h, 20),
        start_offset: le64(h, 24),
        end_offset: le64(h, 32),
        first_time_ms: le64(h, 40),
        last_time_ms: le64(h, 48),
        covered_through_ms: le64(h, 56),
        crc: le32(h, 64),
    };
    if h[6] > 1 || h[7] != 0 {
        return Err("bad multi flag or reserved byte in block header".into());
    }
    // The raw length is what decoding allocates: refused here, before any allocation, and
    // before the checksum is even computed over the payload.
    if bh.raw_len > MAX_BLOCK_RAW_BYTES {
        return Err(format!(
            "raw length {} is over the format's maximum block size ({MAX_BLOCK_RAW_BYTES} bytes)",
            bh.raw_len
        ));
    }
    // Each record takes at least 4 raw bytes (three varints and one RESP byte); an empty block
    // has no payload at all; a fragment's raw bytes are exactly its slice of the record.
    let lens_ok = if bh.flags & block_flags::FRAGMENT != 0 {
        bh.comp_len > 0
            && bh.raw_len > 0
            && bh.record_count <= 1
            && Some(u64::from(bh.raw_len)) == bh.end_offset.checked_sub(bh.start_offset)
    } else if bh.record_count == 0 {
        bh.raw_len == 0 && bh.comp_len == 0
    } else {
        bh.comp_len > 0 && u64::from(bh.raw_len) >= 4 * u64::from(bh.record_count)
    };
    if !lens_ok {
        return Err(format!(
            "{} records cannot have raw length {} and compressed length {}",
            bh.record_count, bh.raw_len, bh.comp_len
        ));
    }
    Ok(bh)
}

pub(super) fn encode_footer(index_pos: u64, blocks: &[BlockInfo], s: &SegmentSummary) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * INDEX_ENTRY_LEN + TRAILER_LEN);
    for b in blocks {
        out.extend_from_slice(&b.file_pos.to_le_bytes());
        out.extend_from_slice(&b.len.to_le_bytes());
        out.extend_from_slice(&b.record_count.to_le_bytes());
        out.extend_from_slice(&b.flags.to_le_bytes());
        out.push(u8::from(b.end_in_multi));
        out.push(0);
        out.extend_from_slice(&b.end_db.to_le_bytes());
        for v in [
            b.start_offset,
            b.end_offset,
            b.first_time_ms,
            b.last_time_ms,
            b.covered_through_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out.extend_from_slice(&index_pos.to_le_bytes());
    out.extend_from_slice(&s.block_count.to_le_bytes());
    out.extend_from_slice(&s.end_db.to_le_bytes());
    for v in [
        s.start_offset,
        s.end_offset,
        s.first_time_ms,
        s.end_time_ms,
        s.record_count,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(u8::from(s.end_in_multi));
    out.extend_from_slice(&[0, 0, 0]);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&FOOTER_MAGIC);
    out
}
