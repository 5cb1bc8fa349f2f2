//! Just enough of the RDB format to identify a snapshot: its version (`REDIS0010`, `REDIS0011`,
//! `REDIS0012`, Valkey 9's `VALKEY080`) and its leading AUX fields (`redis-ver`/`valkey-ver`,
//! `repl-id`, `repl-offset`, `repl-stream-db`), plus Redis' CRC-64 (Jones, reflected) that ends
//! every RDB and DUMP payload. Restore needs the version to pick a redis-server able to load it.
//!
//! [`peek`] reads any `REDIS` + 4 digits or `VALKEY` + 3 digits header and reports the number;
//! deciding which versions a restore can load is the caller's job. Rejecting older versions
//! here was considered and rejected: a Redis 6 primary sends `REDIS0009`, its AUX fields read
//! the same, and "not an RDB file" would be a false message.

use crate::error::{Error, Result};

/// Header facts of an RDB file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdbInfo {
    /// "REDIS" or "VALKEY".
    pub magic: String,
    /// The number after the magic (10 for Redis 7.0, 11 for 7.2/Valkey 8, 12 for 7.4+, 80 for Valkey 9).
    pub version: u32,
    /// AUX fields before the first non-AUX opcode, in order, as (key, value) bytes.
    pub aux: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RdbInfo {
    pub fn aux_str(&self, key: &str) -> Option<String> {
        self.aux
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Length of the magic + version at the start of every RDB.
pub const MAGIC_LEN: usize = 9;
const OP_AUX: u8 = 0xFA;
const OP_EOF: u8 = 0xFF;

/// Reads the header and leading AUX fields from the first bytes of an RDB (a few KiB suffice).
/// AUX values encoded as integers (RDB_ENC_INT8/16/32) are returned as decimal text, and
/// LZF-compressed values are decompressed. An AUX field cut by the end of `prefix` ends the
/// list (the prefix is allowed to stop anywhere); a malformed one is [`Error::Corrupt`].
pub fn peek(file: &str, prefix: &[u8]) -> Result<RdbInfo> {
    let not_rdb = || {
        Error::corrupt(
            file,
            0,
            "not an RDB file (expected REDIS0nnn or VALKEYnnn at the start)",
        )
    };
    let head = prefix.get(..MAGIC_LEN).ok_or_else(not_rdb)?;
    let (magic, digits) = if head.starts_with(b"REDIS") {
        ("REDIS", &head[5..])
    } else if head.starts_with(b"VALKEY") {
        ("VALKEY", &head[6..])
    } else {
        return Err(not_rdb());
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(not_rdb());
    }
    let version = digits
        .iter()
        .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
    let mut info = RdbInfo {
        magic: magic.to_string(),
        version,
        aux: Vec::new(),
    };
    let mut pos = MAGIC_LEN;
    while prefix.get(pos) == Some(&OP_AUX) {
        let mut p = pos + 1;
        let key = match read_string(prefix, &mut p) {
            Ok(k) => k,
            Err(StrError::Truncated) => break,
            Err(StrError::Bad(at, what)) => {
                return Err(Error::corrupt(file, at as u64, format!("AUX key: {what}")))
            }
        };
        let value = match read_string(prefix, &mut p) {
            Ok(v) => v,
            Err(StrError::Truncated) => break,
            Err(StrError::Bad(at, what)) => {
                return Err(Error::corrupt(
                    file,
                    at as u64,
                    format!("AUX value: {what}"),
                ))
            }
        };
        info.aux.push((key, value));
        pos = p;
    }
    Ok(info)
}

#[derive(Debug)]
enum StrError {
    /// The prefix ends inside the string.
    Truncated,
    /// Malformed at this byte.
    Bad(usize, String),
}

/// An RDB length: (value, is_special_encoding).
fn read_length(b: &[u8], pos: &mut usize) -> std::result::Result<(u64, bool), StrError> {
    let at = *pos;
    let first = *b.get(at).ok_or(StrError::Truncated)?;
    let take = |n: usize, pos: &mut usize| -> std::result::Result<&[u8], StrError> {
        let s = b.get(at + 1..at + 1 + n).ok_or(StrError::Truncated)?;
        *pos = at + 1 + n;
        Ok(s)
    };
    match first >> 6 {
        0 => {
            *pos = at + 1;
            Ok((u64::from(first & 0x3f), false))
        }
        1 => {
            let s = take(1, pos)?;
            Ok(((u64::from(first & 0x3f) << 8) | u64::from(s[0]), false))
        }
        2 => match first {
            0x80 => {
                let s = take(4, pos)?;
                Ok((
                    u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
                    false,
                ))
            }
            0x81 => {
                let s = take(8, pos)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                Ok((u64::from_be_bytes(a), false))
            }
            _ => Err(StrError::Bad(
                at,
                format!("unknown length encoding {first:#04x}"),
            )),
        },
        _ => {
            *pos = at + 1;
            Ok((u64::from(first & 0x3f), true))
        }
    }
}

/// An RDB string (plain, integer-encoded, or LZF-compressed) as bytes.
fn read_string(b: &[u8], pos: &mut usize) -> std::result::Result<Vec<u8>, StrError> {
    let at = *pos;
    let (len, special) = read_length(b, pos)?;
    let body = |pos: &mut usize, n: u64| -> std::result::Result<&[u8], StrError> {
        let n =
            usize::try_from(n).map_err(|_| StrError::Bad(at, format!("string of {n} bytes")))?;
        let s = b
            .get(*pos..pos.saturating_add(n))
            .ok_or(StrError::Truncated)?;
        *pos += n;
        Ok(s)
    };
    if !special {
        return Ok(body(pos, len)?.to_vec());
    }
    let int = match len {
        0 => i64::from(body(pos, 1)?[0] as i8),
        1 => {
            let s = body(pos, 2)?;
            i64::from(i16::from_le_bytes([s[0], s[1]]))
        }
        2 => {
            let s = body(pos, 4)?;
            i64::from(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        }
        3 => {
            let (clen, s1) = read_length(b, pos)?;
            let (ulen, s2) = read_length(b, pos)?;
            if s1 || s2 {
                return Err(StrError::Bad(
                    at,
                    "LZF string with an encoded length".into(),
                ));
            }
            let data = body(pos, clen)?;
            return lzf_decompress(data, ulen)
                .map_err(|what| StrError::Bad(at, format!("LZF string: {what}")));
        }
        n => return Err(StrError::Bad(at, format!("unknown string encoding {n}"))),
    };
    Ok(int.to_string().into_bytes())
}

/// Decompresses an LZF block (liblzf's format, as Redis writes it) of known output length.
fn lzf_decompress(input: &[u8], ulen: u64) -> std::result::Result<Vec<u8>, String> {
    // Redis strings are at most 512 MiB; refuse to pre-allocate more for a corrupt length.
    let ulen = usize::try_from(ulen)
        .ok()
        .filter(|&n| n <= 1 << 30)
        .ok_or_else(|| format!("implausible length {ulen}"))?;
    let mut out: Vec<u8> = Vec::with_capacity(ulen);
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            // A literal run of ctrl + 1 bytes.
            let run = input
                .get(i..i + ctrl + 1)
                .ok_or("literal run past the input")?;
            out.extend_from_slice(run);
            i += ctrl + 1;
        } else {
            // A back reference: length (3 bits, extended by a byte when 7) + 2, distance 13 bits + 1.
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(i).ok_or("truncated back reference")? as usize;
                i += 1;
            }
            let lo = *input.get(i).ok_or("truncated back reference")? as usize;
            i += 1;
            let dist = ((ctrl & 0x1f) << 8) + lo + 1;
            let start = out
                .len()
                .checked_sub(dist)
                .ok_or("back reference before the start")?;
            // Byte by byte: the source may overlap what this copy writes (a run).
            for k in 0..len + 2 {
                let byte = out[start + k];
                out.push(byte);
            }
        }
        if out.len() > ulen {
            return Err(format!("output exceeds the stated {ulen} bytes"));
        }
    }
    if out.len() != ulen {
        return Err(format!("output is {} bytes, stated {ulen}", out.len()));
    }
    Ok(out)
}

/// Slicing-by-8 tables for the reflected Jones polynomial: base RDBs can be gigabytes, and the
/// bytewise loop would be the slowest step of checking one.
const CRC64_TABLES: [[u64; 256]; 8] = crc64_tables();

const fn crc64_tables() -> [[u64; 256]; 8] {
    // 0xad93d23594c935a9 with its bits reversed, for the LSB-first (reflected) loop.
    const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ POLY_REFLECTED
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

/// Redis' CRC-64 (crc64-jones, reflected, init 0), incrementally: `crc = crc64(crc, chunk)`.
/// crc64(0, b"123456789") == 0xe9c6d914c4b8d9ca.
pub fn crc64(crc: u64, data: &[u8]) -> u64 {
    let t = &CRC64_TABLES;
    let mut c = crc;
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(ch);
        let v = c ^ u64::from_le_bytes(a);
        c = t[7][(v & 0xff) as usize]
            ^ t[6][((v >> 8) & 0xff) as usize]
            ^ t[5][((v >> 16) & 0xff) as usize]
            ^ t[4][((v >> 24) & 0xff) as usize]
            ^ t[3][((v >> 32) & 0xff) as usize]
            ^ t[2][((v >> 40) & 0xff) as usize]
            ^ t[1][((v >> 48) & 0xff) as usize]
            ^ t[0][(v >> 56) as usize];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ u64::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    c
}

/// Checks an RDB file's trailer: last 9 bytes are 0xFF + CRC-64 LE of everything before the
/// 8 CRC bytes; a CRC of 0 means the server ran with `rdbchecksum no` and is accepted.
/// `crc_so_far` is crc64 over all bytes except the last 8; `trailer` is the last 9 bytes.
pub fn check_trailer(file: &str, len: u64, crc_so_far: u64, trailer: &[u8]) -> Result<()> {
    if len < (MAGIC_LEN + 9) as u64 || trailer.len() != 9 {
        return Err(Error::corrupt(
            file,
            len,
            format!("{len} bytes is too short for an RDB file (truncated?)"),
        ));
    }
    if trailer[0] != OP_EOF {
        return Err(Error::corrupt(
            file,
            len - 9,
            "RDB does not end with the EOF opcode and checksum: truncated",
        ));
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&trailer[1..]);
    let stored = u64::from_le_bytes(a);
    if stored != 0 && stored != crc_so_far {
        return Err(Error::corrupt(
            file,
            len - 8,
            format!("RDB checksum mismatch (stored {stored:#018x}, computed {crc_so_far:#018x})"),
        ));
    }
    Ok(())
}

/// Checks a whole RDB held in memory: [`check_trailer`] over `bytes`.
pub fn verify(file: &str, bytes: &[u8]) -> Result<()> {
    let n = bytes.len();
    if n < MAGIC_LEN + 9 {
        return check_trailer(file, n as u64, 0, &[]);
    }
    check_trailer(file, n as u64, crc64(0, &bytes[..n - 8]), &bytes[n - 9..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_check_value_and_incremental() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = crc64(0, &data);
        for cut in [0, 1, 7, 8, 9, 500, 999, 1000] {
            assert_eq!(
                crc64(crc64(0, &data[..cut]), &data[cut..]),
                whole,
                "cut {cut}"
            );
        }
        // The table path and the bytewise path agree.
        let bytewise = data.iter().fold(0u64, |c, &b| crc64(c, &[b]));
        assert_eq!(bytewise, whole);
    }

    #[test]
    fn lengths_and_integers() {
        let mut b = vec![0x05];
        b.extend_from_slice(b"hello");
        b.extend_from_slice(&[0x40 | 0x01, 0x02]); // 14-bit length 258
        b.extend_from_slice(&[b'x'; 258]);
        b.extend_from_slice(&[0x80, 0, 0, 0, 3]);
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&[0xC0, 0xFE, 0xC1, 0x39, 0x30, 0xC2, 0x00, 0xCA, 0x9A, 0x3B]);
        let mut p = 0;
        assert_eq!(read_string(&b, &mut p).unwrap(), b"hello");
        assert_eq!(read_string(&b, &mut p).unwrap().len(), 258);
        assert_eq!(read_string(&b, &mut p).unwrap(), b"abc");
        assert_eq!(read_string(&b, &mut p).unwrap(), b"-2");
        assert_eq!(read_string(&b, &mut p).unwrap(), b"12345");
        assert_eq!(read_string(&b, &mut p).unwrap(), b"1000000000");
        assert_eq!(p, b.len());
        assert!(matches!(
            read_string(&[0xC5], &mut 0),
            Err(StrError::Bad(0, _))
        ));
        assert!(matches!(
            read_string(&[0x05, b'a'], &mut 0),
            Err(StrError::Truncated)
        ));
    }

    #[test]
    fn lzf_literal_and_overlapping_reference() {
        // "abcabcabcabc": literal "abc" then a back reference of 9 bytes at distance 3.
        let input = [2, b'a', b'b', b'c', (7 << 5), 0, 2];
        assert_eq!(lzf_decompress(&input, 12).unwrap(), b"abcabcabcabc");
        assert!(lzf_decompress(&input, 11).is_err());
        assert!(
            lzf_decompress(&[0x20, 0], 2).is_err(),
            "reference before the start"
        );
    }

    #[test]
    fn trailer_checks() {
        let mut f = b"REDIS0010".to_vec();
        f.push(OP_EOF);
        let crc = crc64(0, &f);
        f.extend_from_slice(&crc.to_le_bytes());
        assert!(verify("x.rdb", &f).is_ok());
        let mut zero = f.clone();
        zero[10..].fill(0);
        assert!(verify("x.rdb", &zero).is_ok(), "rdbchecksum no");
        let mut bad = f.clone();
        bad[12] ^= 1;
        let e = verify("x.rdb", &bad).unwrap_err();
        assert!(matches!(e, Error::Corrupt { offset: 10, .. }), "{e}");
        let e = verify("x.rdb", &f[..f.len() - 1]).unwrap_err();
        assert!(
            e.to_string().contains("too short") || e.to_string().contains("EOF opcode"),
            "{e}"
        );
    }
}
