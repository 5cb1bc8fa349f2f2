//! Telling damage from a torn write at the end of an open tail.
//!
//! An agent only appends, and acknowledges a block only once it is fsync'd, so a crash can
//! leave at most the last write half done: a bad block with nothing valid after it. A bad block
//! *followed by a block that verifies* (magic, header, checksum) is something else: bytes that
//! were written whole and acknowledged, then changed on disk. Dropping it as torn would lose
//! acknowledged records without a word, so [`Probe`] looks at the rest of the file to decide.
//!
//! The bad block's own header cannot be trusted to say where the next block starts (the flip
//! may be in its length), so the probe tries every position after it where the block magic
//! appears, and keeps one running checksum per candidate. It is fed the rest of the file in
//! [`CHUNK`]-sized pieces and holds only the current piece, the last few bytes of the one before
//! (a header may straddle two) and the candidates' small states: a tail can hold a 512 MB
//! fragmented record, and the probe may run against an object store.

use super::codec::parse_block_header;
use super::{BLOCK_HEADER_LEN, BLOCK_MAGIC};

/// How much of the file the probe asks for at a time.
pub(crate) const CHUNK: usize = 1 << 20;

/// Candidates whose checksum is in progress at once. Each costs a checksum over its payload;
/// raw bytes that happen to spell the block magic and a plausible header are rare (a fragment
/// holds a value's bytes as they are), so this bound is only a guard against a file crafted to
/// make the probe quadratic. Beyond it, new candidates are skipped: the damage may then be
/// found at a later block, or, in a file made of nothing but such traps, taken as torn.
const MAX_OPEN: usize = 256;

/// What [`Error::Damaged`](crate::Error::Damaged) reports: where the bad block is and what valid
/// data follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte position in the file of the first bad block; the valid prefix ends here.
    pub offset: u64,
    /// What is wrong with it (a checksum mismatch, no block magic, a bad header, ...).
    pub what: String,
    /// Replication offset where the records before the damage end (the end of the valid prefix).
    pub good_end_offset: u64,
    /// Intact blocks found after the bad one.
    pub blocks_after: u32,
    /// The first of them: its byte position and the replication offset its data starts at.
    pub next_pos: u64,
    pub next_start_offset: u64,
    /// The replication offset the last intact block after the damage ends at: the acknowledged
    /// records affected are `good_end_offset..last_end_offset`.
    pub last_end_offset: u64,
}

impl Damage {
    /// What [`Display`](std::fmt::Display) says after "byte N: ", for a message that gives the
    /// byte its own field.
    pub fn details(&self) -> String {
        format!(
            "{}; {} intact block(s) follow it (the first at byte {}, holding data from replication offset {}), \
             so this is damage on disk, not a torn write: the records from offset {} to {} are not readable here",
            self.what,
            self.blocks_after,
            self.next_pos,
            self.next_start_offset,
            self.good_end_offset,
            self.last_end_offset.max(self.good_end_offset),
        )
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.details())
    }
}

#[derive(Debug)]
struct Candidate {
    pos: u64,
    /// File position just after its payload.
    end: u64,
    /// Payload bytes hashed so far end here.
    hashed: u64,
    crc: u32,
    stored_crc: u32,
    start_offset: u64,
    end_offset: u64,
}

/// A block found intact after the bad one.
#[derive(Debug, Clone, Copy)]
struct Found {
    pos: u64,
    end: u64,
    start_offset: u64,
    end_offset: u64,
}

/// The search for intact blocks after a bad one at `bad_pos`, up to the file's end `len`.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) bad_pos: u64,
    pub(crate) what: String,
    len: u64,
    /// The next byte to be fed.
    at: u64,
    /// Positions before this were searched for the magic.
    searched: u64,
    /// The bytes fed last that a header starting at `searched` may still need.
    carry: Vec<u8>,
    open: Vec<Candidate>,
    found: Vec<Found>,
}

impl Probe {
    pub(crate) fn new(bad_pos: u64, what: String, len: u64) -> Self {
        Probe {
            bad_pos,
            what,
            len,
            at: bad_pos + 1,
            searched: bad_pos + 1,
            carry: Vec::new(),
            open: Vec::new(),
            found: Vec::new(),
        }
    }

    /// How many bytes to feed next; 0 when the file's end was reached.
    pub(crate) fn need(&self) -> usize {
        (self.len - self.at).min(CHUNK as u64) as usize
    }

    /// Takes the next `need()` bytes.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        let ws = self.at - (window.len() - chunk.len()) as u64;
        let we = self.at + chunk.len() as u64;
        self.at = we;
        // New candidates: every position whose whole header is in the window.
        let last = we.saturating_sub(BLOCK_HEADER_LEN as u64);
        let mut p = self.searched;
        while p <= last {
            let i = (p - ws) as usize;
            if window[i..i + 4] == BLOCK_MAGIC && self.open.len() < MAX_OPEN {
                let h = &window[i..i + BLOCK_HEADER_LEN];
                if let Ok(bh) = parse_block_header(h) {
                    let end = p + BLOCK_HEADER_LEN as u64 + u64::from(bh.comp_len);
                    if end <= self.len {
                        self.open.push(Candidate {
                            pos: p,
                            end,
                            hashed: p + BLOCK_HEADER_LEN as u64,
                            crc: crc32c::crc32c(&h[..64]),
                            stored_crc: bh.crc,
                            start_offset: bh.start_offset,
                            end_offset: bh.end_offset,
                        });
                    }
                }
            }
            p += 1;
        }
        self.searched = p.max(self.searched);
        // Payload bytes for every open candidate (a new one's may start in this same window).
        let found = &mut self.found;
        self.open.retain_mut(|c| {
            let from = c.hashed.max(ws);
            let to = c.end.min(we);
            if from < to {
                c.crc =
                    crc32c::crc32c_append(c.crc, &window[(from - ws) as usize..(to - ws) as usize]);
                c.hashed = to;
            }
            if c.hashed < c.end {
                return true;
            }
            if c.crc == c.stored_crc {
                found.push(Found {
                    pos: c.pos,
                    end: c.end,
                    start_offset: c.start_offset,
                    end_offset: c.end_offset,
                });
            }
            false
        });
        let keep = (we - self.searched) as usize;
        self.carry = window[window.len() - keep..].to_vec();
    }

    /// Once the whole rest was fed: the damage, or None when nothing intact follows (torn).
    /// `good_end_offset` is where the valid prefix's records end.
    pub(crate) fn finish(mut self, good_end_offset: u64) -> Option<Damage> {
        // A block that verifies inside another one's payload (a value holding a segment's
        // bytes) is data, not a block: keep only the outermost.
        self.found.sort_by_key(|f| f.pos);
        let mut blocks: Vec<Found> = Vec::new();
        for f in self.found {
            if blocks.last().is_some_and(|b| f.pos < b.end) {
                continue;
            }
            blocks.push(f);
        }
        let first = blocks.first()?;
        Some(Damage {
            offset: self.bad_pos,
            what: self.what,
            good_end_offset,
            blocks_after: blocks.len() as u32,
            next_pos: first.pos,
            next_start_offset: first.start_offset,
            last_end_offset: blocks.iter().map(|b| b.end_offset).max().unwrap_or(0),
        })
    }
}
