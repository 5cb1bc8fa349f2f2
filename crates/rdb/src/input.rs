//! The byte source under the reader: one reused buffer over any `Read`, which knows the file
//! offset of every byte (for errors), folds consumed bytes into the running CRC-64, and can
//! record the bytes of the item being read (for copying entries verbatim).
//!
//! Rejected: `std::io::BufReader`. Its buffer cannot be compacted under our control, so the
//! CRC and the raw capture would need a second pass over every byte or a copy per read.

use crate::crc64::crc64;
use crate::error::{At, Error, Result};
use crate::lzf;
use std::io::Read;

const BUF: usize = 1 << 19;
/// The largest fixed-size read (`take`); everything longer goes through `copy`/`skip`.
pub(crate) const MAX_TAKE: usize = 256;

/// An RDB length: a number, or (top bits 11) the code of a special string encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Len {
    Plain(u64),
    Encoded(u8),
}

/// Where [`crate::RdbReader::summarize_spilled`] hands an entry's bytes.
pub type Spill = Box<dyn FnMut(&[u8]) -> std::io::Result<()> + Send>;

pub(crate) struct Input<R> {
    r: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    crc: u64,
    crc_pos: usize,
    crc_on: bool,
    /// Recording from this buffer position into `raw`.
    cap: Option<usize>,
    pub(crate) raw: Vec<u8>,
    /// While set, captured bytes go here as they are consumed instead of into `raw`
    /// ([`crate::RdbReader::summarize_spilled`]); its first error is kept in `spill_err`.
    pub(crate) spill: Option<Spill>,
    pub(crate) spill_err: Option<std::io::Error>,
    pub(crate) file: Option<String>,
    /// Compressed bytes of an LZF string, reused.
    lzf_in: Vec<u8>,
}

impl<R: Read> Input<R> {
    pub(crate) fn new(r: R, file: Option<String>) -> Self {
        Input {
            r,
            buf: vec![0; BUF],
            pos: 0,
            end: 0,
            base: 0,
            eof: false,
            crc: 0,
            crc_pos: 0,
            crc_on: true,
            cap: None,
            raw: Vec::new(),
            spill: None,
            spill_err: None,
            file,
            lzf_in: Vec::new(),
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn at(&self, offset: u64) -> At {
        At {
            file: self.file.clone(),
            offset,
        }
    }

    pub(crate) fn corrupt(&self, offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupt {
            at: self.at(offset),
            what: what.into(),
        }
    }

    pub(crate) fn truncated(&self, expected: &'static str) -> Error {
        Error::Truncated {
            at: self.at(self.offset()),
            expected,
        }
    }

    /// Folds the consumed bytes into the CRC and the capture, so the buffer can move.
    fn settle(&mut self) {
        if self.crc_on && self.crc_pos < self.pos {
            self.crc = crc64(self.crc, &self.buf[self.crc_pos..self.pos]);
        }
        self.crc_pos = self.pos;
        if let Some(c) = self.cap {
            self.keep(c);
            self.cap = Some(self.pos);
        }
    }

    /// The captured bytes from `c` to `pos`: to the spill while one is set, else into `raw`.
    fn keep(&mut self, c: usize) {
        let bytes = &self.buf[c..self.pos];
        match &mut self.spill {
            Some(f) => {
                if self.spill_err.is_none() {
                    if let Err(e) = f(bytes) {
                        self.spill_err = Some(e);
                    }
                }
            }
            None => self.raw.extend_from_slice(bytes),
        }
    }

    /// Ensures `n` (≤ BUF) unread bytes are buffered; false at the end of the input.
    fn fill(&mut self, n: usize) -> Result<bool> {
        debug_assert!(n <= BUF);
        if self.end - self.pos >= n {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        self.settle();
        self.buf.copy_within(self.pos..self.end, 0);
        self.base += self.pos as u64;
        self.end -= self.pos;
        self.pos = 0;
        self.crc_pos = 0;
        if self.cap.is_some() {
            self.cap = Some(0);
        }
        while self.end < n {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Io {
                        at: self.at(self.base + self.end as u64),
                        source: e,
                    })
                }
            }
        }
        Ok(true)
    }

    /// The CRC-64 of every byte consumed so far.
    pub(crate) fn crc(&mut self) -> u64 {
        self.settle();
        self.crc
    }

    /// Stops folding bytes into the CRC (before reading the trailer's 8 bytes).
    pub(crate) fn crc_off(&mut self) {
        self.settle();
        self.crc_on = false;
    }

    /// Starts recording consumed bytes into `raw` (cleared).
    pub(crate) fn capture_start(&mut self) {
        self.raw.clear();
        self.cap = Some(self.pos);
    }

    pub(crate) fn capture_stop(&mut self) {
        if let Some(c) = self.cap.take() {
            self.keep(c);
        }
    }

    /// One byte, or None at the very end of the input.
    pub(crate) fn try_u8(&mut self) -> Result<Option<u8>> {
        if self.pos < self.end || self.fill(1)? {
            let b = self.buf[self.pos];
            self.pos += 1;
            return Ok(Some(b));
        }
        Ok(None)
    }

    pub(crate) fn u8(&mut self, expected: &'static str) -> Result<u8> {
        self.try_u8()?.ok_or_else(|| self.truncated(expected))
    }

    /// `n` (≤ MAX_TAKE) bytes.
    pub(crate) fn take(&mut self, n: usize, expected: &'static str) -> Result<&[u8]> {
        debug_assert!(n <= MAX_TAKE);
        if !self.fill(n)? {
            // Consume what there is, so the error points at the end of the input.
            self.pos = self.end;
            return Err(self.truncated(expected));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self, expected: &'static str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, expected)?);
        Ok(a)
    }

    /// Appends the next `n` bytes to `out`; memory grows only with bytes actually read.
    pub(crate) fn copy(
        &mut self,
        mut n: u64,
        out: &mut Vec<u8>,
        expected: &'static str,
    ) -> Result<()> {
        while n > 0 {
            if self.pos == self.end && !self.fill(1)? {
                return Err(self.truncated(expected));
            }
            let k = (self.end - self.pos).min(usize::try_from(n).unwrap_or(usize::MAX));
            out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            n -= k as u64;
        }
        Ok(())
    }

    pub(crate) fn skip(&mut self, mut n: u64, expected: &'static str) -> Result<()> {
        while n > 0 {
            if self.pos == self.end && !self.fill(1)? {
                return Err(self.truncated(expected));
            }
            let k = (self.end - self.pos).min(usize::try_from(n).unwrap_or(usize::MAX));
            self.pos += k;
            n -= k as u64;
        }
        Ok(())
    }

    pub(crate) fn len(&mut self, expected: &'static str) -> Result<Len> {
        let at = self.offset();
        let first = self.u8(expected)?;
        Ok(match first >> 6 {
            0 => Len::Plain(u64::from(first & 0x3f)),
            1 => Len::Plain((u64::from(first & 0x3f) << 8) | u64::from(self.u8(expected)?)),
            2 => match first {
                0x80 => Len::Plain(u64::from(u32::from_be_bytes(self.array(expected)?))),
                0x81 => Len::Plain(u64::from_be_bytes(self.array(expected)?)),
                _ => {
                    return Err(self.corrupt(
                        at,
                        format!("unknown length encoding {first:#04x} (expected {expected})"),
                    ))
                }
            },
            _ => Len::Encoded(first & 0x3f),
        })
    }

    /// A length that must be a plain number (not a string encoding).
    pub(crate) fn num(&mut self, expected: &'static str) -> Result<u64> {
        let at = self.offset();
        match self.len(expected)? {
            Len::Plain(n) => Ok(n),
            Len::Encoded(e) => Err(self.corrupt(
                at,
                format!("string encoding {e} where {expected} (a length) was expected"),
            )),
        }
    }

    /// 8-byte little-endian milliseconds (rdbSaveMillisecondTime).
    pub(crate) fn ms(&mut self, expected: &'static str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(expected)?))
    }

    /// An RDB string into `out` (cleared): plain, integer-encoded (as decimal text) or LZF.
    pub(crate) fn string(&mut self, out: &mut Vec<u8>, expected: &'static str) -> Result<()> {
        out.clear();
        let at = self.offset();
        match self.len(expected)? {
            Len::Plain(n) => self.copy(n, out, expected),
            Len::Encoded(0) => {
                let v = self.u8(expected)? as i8;
                push_int(out, i64::from(v));
                Ok(())
            }
            Len::Encoded(1) => {
                let v = i16::from_le_bytes(self.array(expected)?);
                push_int(out, i64::from(v));
                Ok(())
            }
            Len::Encoded(2) => {
                let v = i32::from_le_bytes(self.array(expected)?);
                push_int(out, i64::from(v));
                Ok(())
            }
            Len::Encoded(3) => {
                let clen = self.num("the compressed length of an LZF string")?;
                let ulen = self.num("the length of an LZF string")?;
                let mut input = std::mem::take(&mut self.lzf_in);
                input.clear();
                let r = self.copy(clen, &mut input, "LZF-compressed bytes");
                let r = r.and_then(|()| {
                    lzf::decompress_into(&input, ulen, out)
                        .map_err(|what| self.corrupt(at, format!("LZF string: {what}")))
                });
                self.lzf_in = input;
                r
            }
            Len::Encoded(e) => Err(self.corrupt(
                at,
                format!("unknown string encoding {e} (expected {expected})"),
            )),
        }
    }

    /// Skips an RDB string without decoding it; returns its decoded length.
    pub(crate) fn skip_string(&mut self, expected: &'static str) -> Result<u64> {
        let at = self.offset();
        match self.len(expected)? {
            Len::Plain(n) => {
                self.skip(n, expected)?;
                Ok(n)
            }
            Len::Encoded(e @ 0..=2) => {
                let n = [1usize, 2, 4][e as usize];
                let b = self.take(n, expected)?;
                let v = match n {
                    1 => i64::from(b[0] as i8),
                    2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
                    _ => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                };
                Ok(int_len(v))
            }
            Len::Encoded(3) => {
                let clen = self.num("the compressed length of an LZF string")?;
                let ulen = self.num("the length of an LZF string")?;
                if ulen > clen.saturating_mul(lzf::MAX_RATIO) + 64 || (clen > 0 && ulen == 0) {
                    return Err(self.corrupt(
                        at,
                        format!("LZF string states {ulen} bytes from {clen} compressed bytes"),
                    ));
                }
                self.skip(clen, "LZF-compressed bytes")?;
                Ok(ulen)
            }
            Len::Encoded(e) => Err(self.corrupt(
                at,
                format!("unknown string encoding {e} (expected {expected})"),
            )),
        }
    }
}

/// Appends `v` in decimal, as Redis prints an integer.
pub(crate) fn push_int(out: &mut Vec<u8>, v: i64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut u = v.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&tmp[i..]);
}

/// The length of `v` in decimal.
pub(crate) fn int_len(v: i64) -> u64 {
    let mut n = u64::from(v < 0);
    let mut u = v.unsigned_abs();
    loop {
        n += 1;
        u /= 10;
        if u == 0 {
            return n;
        }
    }
}
