//! Just enough of the RDB format to identify a snapshot: its version (`REDIS0010`, `REDIS0011`,
//! `REDIS0012`, Valkey 9's `VALKEY080`) and its leading AUX fields (`redis-ver`/`valkey-ver`,
//! `repl-id`, `repl-offset`, `repl-stream-db`), plus Redis' CRC-64 (Jones, reflected) that ends
//! every RDB and DUMP payload (both from `flashback-rdb`, which reads whole files). Restore needs the version to pick a redis-server able to load it.
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

/// Decompresses an LZF block of known output length (flashback_rdb::lzf, the one copy).
fn lzf_decompress(input: &[u8], ulen: u64) -> std::result::Result<Vec<u8>, String> {
    flashback_rdb::lzf::decompress(input, ulen)
}

/// Redis' CRC-64 (crc64-jones, reflected, init 0), incrementally: `crc = crc64(crc, chunk)`;
/// its one copy lives in the RDB reader crate.
pub use flashback_rdb::crc64::crc64;

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
