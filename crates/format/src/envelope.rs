//! A checked envelope for small metadata objects (generation manifests): the payload is JSON so
//! a person can read it with `tail -c +17 | head -c -4`, and the envelope gives it the magic,
//! version and checksum every persisted file carries.
//!
//! Bytes: `magic[8] | version u16 LE | reserved u16 | payload_len u32 LE | payload | crc32c u32 LE`
//! (crc over everything before it).

use crate::error::{Error, Result};

/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// Bytes after the payload (the crc32c).
pub const TRAILER_LEN: usize = 4;

/// Wraps `payload` under `magic` and `version`.
///
/// # Panics
/// When `payload` is 4 GiB or more: envelopes hold small metadata, and a caller that builds
/// such a payload has a bug no error could help with.
pub fn encode(magic: &[u8; 8], version: u16, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("envelope payload under 4 GiB");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks magic, length and checksum, and that the version is at most `max_version`; returns
/// (version, payload).
///
/// The version is checked right after the magic, before the length and checksum: a newer
/// writer may have changed everything after the version field, and "upgrade flashback" is
/// the useful message then. (A flipped version byte thus reads as "too new"; still an error.)
pub fn decode<'a>(
    file: &str,
    magic: &[u8; 8],
    max_version: u16,
    bytes: &'a [u8],
) -> Result<(u16, &'a [u8])> {
    let n = bytes.len();
    if n < 10 || bytes[..8] != magic[..] {
        let expected = String::from_utf8_lossy(magic);
        return Err(Error::corrupt(
            file,
            0,
            format!("not a {expected:?} file (bad magic or shorter than its header)"),
        ));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > max_version {
        return Err(Error::Version {
            file: file.to_string(),
            found: version.into(),
            supported: max_version.into(),
        });
    }
    if version == 0 {
        return Err(Error::corrupt(file, 8, "envelope version 0 does not exist"));
    }
    if n < HEADER_LEN + TRAILER_LEN {
        return Err(Error::corrupt(
            file,
            n as u64,
            format!(
                "truncated: {n} bytes, an envelope has at least {}",
                HEADER_LEN + TRAILER_LEN
            ),
        ));
    }
    let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as u64;
    if len + (HEADER_LEN + TRAILER_LEN) as u64 != n as u64 {
        let what = format!(
            "payload length says {len} bytes but the file holds {} (truncated or extended)",
            n - HEADER_LEN - TRAILER_LEN
        );
        return Err(Error::corrupt(file, 12, what));
    }
    let body = &bytes[..n - TRAILER_LEN];
    let stored = u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]);
    let crc = crc32c::crc32c(body);
    if crc != stored {
        return Err(Error::corrupt(
            file,
            (n - TRAILER_LEN) as u64,
            format!("checksum mismatch (stored {stored:#010x}, computed {crc:#010x})"),
        ));
    }
    if bytes[10..12] != [0, 0] {
        return Err(Error::corrupt(file, 10, "reserved bytes are not zero"));
    }
    Ok((version, &bytes[HEADER_LEN..n - TRAILER_LEN]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u8; 8] = *b"FBTESTEN";

    #[test]
    fn round_trip_and_layout() {
        let e = encode(&M, 3, b"{\"a\":1}");
        assert_eq!(&e[..8], b"FBTESTEN");
        assert_eq!(&e[16..23], b"{\"a\":1}");
        assert_eq!(e.len(), 16 + 7 + 4);
        assert_eq!(decode("m", &M, 3, &e).unwrap(), (3, &b"{\"a\":1}"[..]));
        let empty = encode(&M, 1, b"");
        assert_eq!(decode("m", &M, 1, &empty).unwrap(), (1, &b""[..]));
    }

    #[test]
    fn every_single_byte_flip_and_truncation_is_an_error() {
        let e = encode(&M, 1, b"{\"source\":\"cache\",\"offset\":14}");
        for i in 0..e.len() {
            for bit in 0..8 {
                let mut c = e.clone();
                c[i] ^= 1 << bit;
                assert!(decode("m", &M, 1, &c).is_err(), "flip byte {i} bit {bit}");
            }
        }
        for cut in 0..e.len() {
            assert!(decode("m", &M, 1, &e[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = e.clone();
        longer.push(0);
        assert!(matches!(
            decode("m", &M, 1, &longer),
            Err(Error::Corrupt { offset: 12, .. })
        ));
    }

    #[test]
    fn names_the_problem() {
        let e = encode(&M, 2, b"x");
        match decode("gen.meta", &M, 1, &e) {
            Err(
                err @ Error::Version {
                    found: 2,
                    supported: 1,
                    ..
                },
            ) => assert!(err.to_string().contains("upgrade flashback"), "{err}"),
            other => panic!("{other:?}"),
        }
        let other = encode(b"FBOTHER!", 1, b"x");
        let err = decode("gen.meta", &M, 1, &other).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("gen.meta: corrupt at byte 0: not a \"FBTESTEN\" file"),
            "{err}"
        );
        let mut bad = encode(&M, 1, b"hello");
        bad[17] ^= 0x20;
        let err = decode("gen.meta", &M, 1, &bad).unwrap_err();
        assert!(matches!(err, Error::Corrupt { offset: 21, .. }), "{err}");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }
}
