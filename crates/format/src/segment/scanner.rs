//! Reading a segment front to back: [`SegmentScanner`], a state machine that does no I/O (a
//! blocking file and an async object store drive it alike, and a fuzz target can feed it any
//! bytes), and [`SegmentReader`], which drives it over `std::io::Read`.
//!
//! Reading the whole file into memory and parsing it in one call was rejected: a segment may
//! hold a 512 MB record in fragments, and a restore streams it from the store.

use super::chain::{summarize, ChainState};
use super::codec::{
    decode_block, decode_header, encode_footer, le64, parse_block_header, BlockHeader,
};
use super::damage::{Damage, Probe};
use super::{
    BlockInfo, Item, SegmentHeader, SegmentSummary, BLOCK_HEADER_LEN, BLOCK_MAGIC, HEADER_LEN,
    INDEX_ENTRY_LEN, TRAILER_LEN,
};
use crate::error::{Error, Result};

/// Whether a segment's bytes are expected to carry a footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// A sealed segment: the footer must be present and intact; any bad block is corruption.
    Yes,
    /// An open tail: no footer expected; blocks are scanned and a torn last block is dropped.
    /// A bad block with an intact block anywhere after it is damage, not torn
    /// ([`Error::Damaged`]). A file that does carry an intact footer (a crash after sealing,
    /// before the rename) is read as sealed.
    No,
}

/// A block read by [`SegmentScanner`]: its index entry and its still-compressed payload.
#[derive(Debug, Clone)]
pub struct ScannedBlock {
    pub index: usize,
    pub info: BlockInfo,
    pub(crate) raw_len: u32,
    pub(crate) payload: Vec<u8>,
}

#[derive(Debug)]
enum Next {
    Header,
    BlockHeader,
    Payload(Box<([u8; BLOCK_HEADER_LEN], BlockHeader)>),
    /// The footer, of which these first bytes were read as a would-be block header.
    Footer(Vec<u8>),
    /// In an open tail, after a bad block: the rest of the file is searched for intact blocks.
    Probe(Box<Probe>),
    Done,
}

/// Reads a segment front to back holding one block at a time, for segments too large to hold
/// whole (a fragmented 512 MB record). It does no I/O itself, so that a blocking file and an
/// async object store can drive it alike: ask [`next_need`](Self::next_need) how many bytes
/// come next, [`feed`](Self::feed) exactly those, and get each block as it completes.
/// [`SegmentReader`] drives it over `std::io::Read`.
///
/// It knows the file's length up front (a store lists it). In a sealed segment the footer must
/// follow the last block and equal, byte for byte, the index of the blocks read; any bad block
/// is [`Error::Corrupt`]. In an open tail the scan stops at the first bad block (truncated, no
/// magic, a bad header, a checksum mismatch), then reads the rest of the file in bounded chunks
/// looking for any block that verifies after it: if none does, the bad bytes are a torn write
/// and dropped ([`torn_reason`](Self::torn_reason)); if one does, the scan fails with
/// [`Error::Damaged`], and [`damage`](Self::damage), [`blocks`](Self::blocks),
/// [`summary`](Self::summary) and [`valid_len`](Self::valid_len) still describe the valid
/// prefix before it, for a caller that keeps what is good. A block that verifies but does not
/// follow the one before (offsets, times, db) is corruption. One difference follows from
/// streaming: the fragments of a record
/// whose final fragment never comes (the end of an open tail) have already been handed out
/// when the scan ends; the scan then reports them torn ([`torn_reason`](Self::torn_reason))
/// and leaves them out of [`summary`](Self::summary) and [`valid_len`](Self::valid_len). A
/// consumer that acts on fragments before the final one must stop at an offset the summary
/// covers, as restore does.
#[derive(Debug)]
pub struct SegmentScanner {
    name: String,
    len: u64,
    sealed: Sealed,
    pos: u64,
    next: Next,
    header: Option<SegmentHeader>,
    chain: Option<ChainState>,
    blocks: Vec<BlockInfo>,
    footer: Option<SegmentSummary>,
    torn_reason: Option<String>,
    damage: Option<Damage>,
    valid_len: u64,
}

impl SegmentScanner {
    /// `len` is the file's length; bytes beyond it (a tail that grew since) are not read.
    pub fn new(name: &str, len: u64, sealed: Sealed) -> Self {
        SegmentScanner {
            name: name.to_string(),
            len,
            sealed,
            pos: 0,
            next: Next::Header,
            header: None,
            chain: None,
            blocks: Vec::new(),
            footer: None,
            torn_reason: None,
            damage: None,
            valid_len: 0,
        }
    }

    fn corrupt(&self, offset: u64, what: impl Into<String>) -> Error {
        Error::corrupt(&self.name, offset, what)
    }

    /// A bad block at `self.pos`, of which `consumed` were fed already (the stream cannot go
    /// back). In a sealed segment: corruption. In a tail: torn unless an intact block follows,
    /// which the probe (driven by `next_need`/`feed`) finds out.
    fn torn(&mut self, what: String, consumed: &[u8]) -> Result<()> {
        if self.sealed == Sealed::Yes {
            return Err(self.corrupt(self.pos, what));
        }
        // No room for a whole block after the bad one's first byte: nothing to probe.
        if self.len - self.pos > BLOCK_HEADER_LEN as u64 {
            let mut p = Probe::new(self.pos, what, self.len);
            p.feed(consumed.get(1..).unwrap_or_default());
            self.next = Next::Probe(Box::new(p));
            return self.next_need().map(|_| ());
        }
        self.torn_reason = Some(format!("byte {}: {what}", self.pos));
        self.finish();
        Ok(())
    }

    /// The probe has seen the rest of the file: torn, or damaged.
    fn end_probe(&mut self, probe: Probe) -> Result<()> {
        self.pos = probe.bad_pos;
        let reason = format!("byte {}: {}", probe.bad_pos, probe.what);
        let torn_reason = self.torn_reason.replace(reason);
        self.finish();
        let good_end = match (self.blocks.last(), &self.header) {
            (Some(b), _) => b.end_offset,
            (None, Some(h)) => h.start_offset,
            (None, None) => 0,
        };
        match probe.finish(good_end) {
            None => Ok(()),
            Some(d) => {
                self.torn_reason = torn_reason;
                self.damage = Some(d);
                Err(self.damaged())
            }
        }
    }

    fn damaged(&self) -> Error {
        Error::Damaged {
            file: self.name.clone(),
            damage: Box::new(self.damage.clone().expect("damage found")),
        }
    }

    fn finish(&mut self) {
        self.next = Next::Done;
        self.valid_len = self.pos;
        if let Some((start, run_pos)) = self.chain.as_mut().and_then(|c| c.run.take()) {
            self.blocks.retain(|b| b.file_pos < run_pos);
            self.valid_len = run_pos;
            if self.torn_reason.is_none() {
                self.torn_reason = Some(format!(
                    "byte {run_pos}: the record stored in fragments from offset {start} has no final fragment"
                ));
            }
        }
    }

    /// How many bytes [`feed`](Self::feed) takes next; 0 when the scan is over. Errors when
    /// a sealed segment ends where a block or the footer should be.
    pub fn next_need(&mut self) -> Result<usize> {
        let rem = self.len - self.pos;
        let footer_len = (self.blocks.len() * INDEX_ENTRY_LEN + TRAILER_LEN) as u64;
        match &self.next {
            Next::Done if self.damage.is_some() => Err(self.damaged()),
            Next::Done => Ok(0),
            Next::Probe(p) if p.need() == 0 => {
                let Next::Probe(p) = std::mem::replace(&mut self.next, Next::Done) else {
                    unreachable!("matched above")
                };
                self.end_probe(*p)?;
                Ok(0)
            }
            Next::Probe(p) => Ok(p.need()),
            // A short header is corruption in both modes; decode_header says how.
            Next::Header if self.len == 0 => Err(decode_header(&self.name, &[])
                .err()
                .unwrap_or_else(|| self.corrupt(0, "empty file"))),
            Next::Header => Ok(rem.min(HEADER_LEN as u64) as usize),
            Next::BlockHeader if rem == 0 => {
                if self.sealed == Sealed::Yes {
                    return Err(self.corrupt(
                        self.pos,
                        "no footer: the segment is truncated or was never sealed",
                    ));
                }
                self.finish();
                Ok(0)
            }
            // Only a footer can start there in a sealed segment; in a tail a block may too, and
            // its magic tells them apart (`feed`).
            Next::BlockHeader if rem == footer_len && self.sealed == Sealed::Yes => {
                self.next = Next::Footer(Vec::new());
                Ok(rem as usize)
            }
            Next::BlockHeader if rem < BLOCK_HEADER_LEN as u64 => {
                self.torn(
                    format!("truncated block header ({rem} of {BLOCK_HEADER_LEN} bytes)"),
                    &[],
                )?;
                self.next_need()
            }
            Next::BlockHeader => Ok(BLOCK_HEADER_LEN),
            Next::Payload(h) if u64::from(h.1.comp_len) > rem => {
                let what = format!("truncated block payload ({rem} of {} bytes)", h.1.comp_len);
                let raw = h.0;
                self.pos -= BLOCK_HEADER_LEN as u64;
                self.torn(what, &raw)?;
                self.next_need()
            }
            Next::Payload(h) => Ok(h.1.comp_len as usize),
            Next::Footer(prefix) => Ok(rem as usize - prefix.len()),
        }
    }

    /// Takes exactly the bytes [`next_need`](Self::next_need) asked for; returns the block
    /// they complete, if any.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<ScannedBlock>> {
        match std::mem::replace(&mut self.next, Next::Done) {
            Next::Done => Ok(None),
            Next::Header => {
                let h = decode_header(&self.name, bytes)?;
                self.chain = Some(ChainState::start(&h));
                self.header = Some(h);
                self.pos = HEADER_LEN as u64;
                self.next = Next::BlockHeader;
                Ok(None)
            }
            Next::BlockHeader => {
                let footer_len = (self.blocks.len() * INDEX_ENTRY_LEN + TRAILER_LEN) as u64;
                if self.len - self.pos == footer_len && !bytes.starts_with(&BLOCK_MAGIC) {
                    self.next = Next::Footer(bytes.to_vec());
                    return Ok(None);
                }
                let h = match parse_block_header(bytes) {
                    Ok(h) => h,
                    Err(m) => {
                        self.torn(m, bytes)?;
                        return Ok(None);
                    }
                };
                let mut raw = [0u8; BLOCK_HEADER_LEN];
                raw.copy_from_slice(bytes);
                self.pos += BLOCK_HEADER_LEN as u64;
                self.next = Next::Payload(Box::new((raw, h)));
                if self.next_need()? == 0 && matches!(self.next, Next::Payload(_)) {
                    // An empty payload (a heartbeat) completes the block now.
                    return self.feed(&[]);
                }
                Ok(None)
            }
            Next::Payload(b) => {
                let (raw, h) = *b;
                let block_pos = self.pos - BLOCK_HEADER_LEN as u64;
                // Checksum before the chain: a torn write can leave a block whose fields are
                // garbage, which is a torn tail (or damage), not a broken chain.
                let crc = crc32c::crc32c_append(crc32c::crc32c(&raw[..64]), bytes);
                if crc != h.crc {
                    self.pos = block_pos;
                    let mut consumed = raw.to_vec();
                    consumed.extend_from_slice(bytes);
                    self.torn(
                        format!(
                            "block checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                            h.crc
                        ),
                        &consumed,
                    )?;
                    return Ok(None);
                }
                let info = h.info(block_pos);
                let index = self.blocks.len();
                let chain = self.chain.as_mut().expect("header read first");
                if let Err(m) = chain.step(&info) {
                    return Err(self.corrupt(block_pos, format!("block {index}: {m}")));
                }
                self.pos += bytes.len() as u64;
                self.blocks.push(info.clone());
                self.next = Next::BlockHeader;
                Ok(Some(ScannedBlock {
                    index,
                    info,
                    raw_len: h.raw_len,
                    payload: bytes.to_vec(),
                }))
            }
            Next::Footer(mut prefix) => {
                prefix.extend_from_slice(bytes);
                self.check_footer(&prefix)?;
                Ok(None)
            }
            Next::Probe(mut p) => {
                p.feed(bytes);
                if p.need() == 0 {
                    self.end_probe(*p)?;
                } else {
                    self.next = Next::Probe(p);
                }
                Ok(None)
            }
        }
    }

    fn check_footer(&mut self, bytes: &[u8]) -> Result<()> {
        let header = self.header.as_ref().expect("header read first");
        let chain = self.chain.as_ref().expect("header read first");
        let end_time = le64(bytes, bytes.len() - TRAILER_LEN + 40);
        let summary = summarize(&ChainState::start(header), &self.blocks, end_time);
        // The writer's own encoding of the blocks read: equal bytes check the index entries,
        // the trailer, its checksum and the reserved bytes in one comparison.
        let expected = encode_footer(self.pos, &self.blocks, &summary);
        let bad = if chain.run.is_some() {
            Some("the segment ends inside a record stored in fragments".to_string())
        } else if end_time < chain.covered_ms {
            Some(format!(
                "footer end time {end_time} is before the last block's covered-through {}",
                chain.covered_ms
            ))
        } else if bytes != expected.as_slice() {
            Some("footer does not match the blocks before it (index, summary or checksum)".into())
        } else {
            None
        };
        match bad {
            Some(m) => self.torn(m, bytes),
            None => {
                self.footer = Some(summary);
                self.pos = self.len;
                self.next = Next::Done;
                self.valid_len = self.len;
                Ok(())
            }
        }
    }

    /// Decodes a block this scanner returned.
    pub fn decode(&self, b: &ScannedBlock) -> Result<Vec<Item>> {
        decode_block(&self.name, b.index, &b.info, b.raw_len, &b.payload)
    }

    /// The header, once the first bytes were fed.
    pub fn header(&self) -> Option<&SegmentHeader> {
        self.header.as_ref()
    }

    /// The footer's summary, when the scan found an intact footer (an open tail that was
    /// sealed but not yet renamed when its agent stopped).
    pub fn footer(&self) -> Option<&SegmentSummary> {
        self.footer.as_ref()
    }

    /// Why the scan dropped the bytes after [`valid_len`](Self::valid_len) (an open tail).
    pub fn torn_reason(&self) -> Option<&str> {
        self.torn_reason.as_deref()
    }

    /// In an open tail that [`Error::Damaged`] ended: where the damage is and what follows.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// Once the scan is over: the length of the valid prefix (header + intact blocks, without
    /// a torn end or anything from a damaged block on); a writer resuming the file truncates
    /// it here. For a sealed segment: the file length.
    pub fn valid_len(&self) -> u64 {
        self.valid_len
    }

    /// The blocks read so far (once the scan is over: the whole records' blocks).
    pub fn blocks(&self) -> &[BlockInfo] {
        &self.blocks
    }

    /// Once the scan is over: the footer's summary, or one computed from the blocks read (then
    /// `end_time_ms` is the last block's covered-through time, or the header's `created_ms`
    /// when there is no block).
    pub fn summary(&self) -> Option<SegmentSummary> {
        if let Some(s) = &self.footer {
            return Some(s.clone());
        }
        let h = self.header.as_ref()?;
        let end_time = self
            .blocks
            .last()
            .map_or(h.created_ms, |b| b.covered_through_ms);
        Some(summarize(&ChainState::start(h), &self.blocks, end_time))
    }
}

/// [`SegmentScanner`] over a blocking reader (a file).
pub struct SegmentReader<R> {
    r: R,
    scanner: SegmentScanner,
    buf: Vec<u8>,
}

impl<R: std::io::Read> SegmentReader<R> {
    /// `len` is the file's length (its metadata); `r` must yield at least that many bytes.
    pub fn new(name: &str, r: R, len: u64, sealed: Sealed) -> Self {
        SegmentReader {
            r,
            scanner: SegmentScanner::new(name, len, sealed),
            buf: Vec::new(),
        }
    }

    /// The next block, or `None` at the end (see [`SegmentScanner`] for what the end means).
    pub fn next_block(&mut self) -> Result<Option<ScannedBlock>> {
        loop {
            let n = self.scanner.next_need()?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.resize(n, 0);
            self.r
                .read_exact(&mut self.buf)
                .map_err(|source| Error::Io {
                    file: self.scanner.name.clone(),
                    source,
                })?;
            if let Some(b) = self.scanner.feed(&self.buf)? {
                return Ok(Some(b));
            }
        }
    }

    pub fn scanner(&self) -> &SegmentScanner {
        &self.scanner
    }
}
