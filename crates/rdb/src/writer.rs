//! Writing an RDB from pieces of another: the source's header, AUX fields, functions and
//! entries copied byte for byte, then EOF and a CRC-64 computed over what was written. Entries
//! are never re-encoded, so a filtered base (some keys, one db, one hash-slot partition) loads
//! exactly as the source's entries would, whatever encodings the source server chose.

use crate::crc64::crc64;
use crate::reader::{OP_AUX, OP_EOF, OP_FUNCTION2, OP_RESIZEDB, OP_SELECTDB};
use crate::{EntryInfo, Header, Item, Magic, RdbReader};
use std::io::{Read, Write};

/// An RDB being written. Call [`RdbWriter::finish`]: a file without its EOF marker and CRC is
/// refused by every loader.
pub struct RdbWriter<W: Write> {
    w: W,
    crc: u64,
    header: Header,
    written: u64,
}

impl<W: Write> RdbWriter<W> {
    /// Starts a file with `header` (copy the source's, so the loader sees the same version).
    pub fn new(w: W, header: &Header) -> std::io::Result<Self> {
        let mut out = RdbWriter {
            w,
            crc: 0,
            header: *header,
            written: 0,
        };
        out.raw(&header.raw)?;
        Ok(out)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes bytes verbatim: an item exactly as [`RdbReader::raw`] captured it.
    pub fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.w.write_all(bytes)?;
        self.crc = crc64(self.crc, bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// An entry as [`RdbReader::raw`] captured it (expiry, LRU/LFU, type, key, value).
    pub fn entry(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.raw(raw)
    }

    pub fn aux(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        let mut b = vec![OP_AUX];
        put_string(&mut b, key);
        put_string(&mut b, value);
        self.raw(&b)
    }

    pub fn select_db(&mut self, db: u64) -> std::io::Result<()> {
        let mut b = vec![OP_SELECTDB];
        put_len(&mut b, db);
        self.raw(&b)
    }

    pub fn resize_db(&mut self, keys: u64, expires: u64) -> std::io::Result<()> {
        let mut b = vec![OP_RESIZEDB];
        put_len(&mut b, keys);
        put_len(&mut b, expires);
        self.raw(&b)
    }

    /// A function library (its code, as FUNCTION LOAD takes it).
    pub fn function(&mut self, code: &[u8]) -> std::io::Result<()> {
        let mut b = vec![OP_FUNCTION2];
        put_string(&mut b, code);
        self.raw(&b)
    }

    /// What [`RdbWriter::finish`] adds: EOF, and the CRC from RDB 5 on.
    pub fn trailer_len(&self) -> u64 {
        if self.header.magic == Magic::Redis && self.header.version < 5 {
            1
        } else {
            9
        }
    }

    /// Writes EOF and the CRC-64 of everything before it (RDB 5+), flushes, returns the sink.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.raw(&[OP_EOF])?;
        if !(self.header.magic == Magic::Redis && self.header.version < 5) {
            let crc = self.crc.to_le_bytes();
            self.w.write_all(&crc)?;
            self.written += 8;
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

/// rdbSaveLen: the shortest length encoding.
pub fn put_len(b: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        b.push(n as u8);
    } else if n < 1 << 14 {
        b.push(0x40 | (n >> 8) as u8);
        b.push(n as u8);
    } else if n <= u64::from(u32::MAX) {
        b.push(0x80);
        b.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        b.push(0x81);
        b.extend_from_slice(&n.to_be_bytes());
    }
}

/// A plain (length-prefixed) RDB string.
pub fn put_string(b: &mut Vec<u8>, s: &[u8]) {
    put_len(b, s.len() as u64);
    b.extend_from_slice(s);
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Read(#[from] crate::Error),
    #[error("writing the filtered RDB failed: {0}")]
    Write(#[from] std::io::Error),
}

/// What [`filter_rdb`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterCounts {
    pub kept: u64,
    pub dropped: u64,
    pub bytes_written: u64,
}

/// Copies `reader`'s RDB into `writer`, keeping the entries for which `keep(entry, key)` is
/// true, byte for byte; AUX fields, functions, module AUX data and slot imports are copied
/// whole. A db's SELECTDB is written only once one of its keys is kept. RESIZEDB and SLOT_INFO
/// are left out: they are size hints the loader pre-sizes its tables from, and the source's
/// counts would make it allocate for keys that are not there (rejected: a second pass to count,
/// which would read the source twice for a hint). Returns the sink and the counts.
pub fn filter_rdb<R: Read, W: Write>(
    reader: &mut RdbReader<R>,
    mut writer: RdbWriter<W>,
    mut keep: impl FnMut(&EntryInfo, &[u8]) -> bool,
) -> Result<(W, FilterCounts), FilterError> {
    reader.capture_raw(true);
    let mut counts = FilterCounts::default();
    let mut select: Option<Vec<u8>> = None;
    while let Some(item) = reader.next()? {
        match item {
            Item::Entry(info) => {
                if keep(&info, reader.key()) {
                    reader.summarize()?;
                    if let Some(s) = select.take() {
                        writer.raw(&s)?;
                    }
                    writer.entry(reader.raw())?;
                    counts.kept += 1;
                } else {
                    reader.summarize()?;
                    counts.dropped += 1;
                }
            }
            Item::SelectDb(_) => select = Some(reader.raw().to_vec()),
            Item::ResizeDb { .. } | Item::SlotInfo { .. } => {}
            Item::End { .. } => break,
            Item::Aux { .. }
            | Item::Function(_)
            | Item::ModuleAux { .. }
            | Item::SlotImport { .. } => writer.raw(reader.raw())?,
        }
    }
    counts.bytes_written = writer.written() + writer.trailer_len();
    Ok((writer.finish()?, counts))
}
