//! liblzf's format, as Redis writes LZF-compressed strings (RDB_ENC_LZF). Decompression only:
//! the writer copies entries verbatim and never needs to compress.

/// The most output one input byte can yield: a back reference of 3 bytes copies at most
/// 7 + 255 + 2 = 264 bytes. A stated length beyond `input * MAX_RATIO` is a lie, refused
/// before any allocation.
pub const MAX_RATIO: u64 = 90;

/// Decompresses `input` into `out` (cleared first), which must come to exactly `ulen` bytes.
pub fn decompress_into(input: &[u8], ulen: u64, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    if ulen > (input.len() as u64).saturating_mul(MAX_RATIO) + 64 {
        return Err(format!(
            "states {ulen} bytes from {} compressed bytes, more than LZF can expand to",
            input.len()
        ));
    }
    let ulen = usize::try_from(ulen).map_err(|_| format!("implausible length {ulen}"))?;
    out.reserve(ulen);
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
            let n = len + 2;
            if dist >= n {
                out.extend_from_within(start..start + n);
            } else {
                // The source overlaps what this copy writes (a run): byte by byte.
                for k in 0..n {
                    let byte = out[start + k];
                    out.push(byte);
                }
            }
        }
        if out.len() > ulen {
            return Err(format!("output exceeds the stated {ulen} bytes"));
        }
    }
    if out.len() != ulen {
        return Err(format!("output is {} bytes, stated {ulen}", out.len()));
    }
    Ok(())
}

/// [`decompress_into`] into a new vector.
pub fn decompress(input: &[u8], ulen: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    decompress_into(input, ulen, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_overlapping_reference() {
        // "abcabcabcabc": literal "abc" then a back reference of 9 bytes at distance 3.
        let input = [2, b'a', b'b', b'c', (7 << 5), 0, 2];
        assert_eq!(decompress(&input, 12).unwrap(), b"abcabcabcabc");
        assert!(decompress(&input, 11).is_err());
        assert!(
            decompress(&[0x20, 0], 2).is_err(),
            "reference before the start"
        );
        assert!(
            decompress(&[0], 1 << 40).is_err(),
            "refused before allocating"
        );
    }
}
