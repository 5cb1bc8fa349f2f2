//! The compact in-memory encodings Redis saves as one RDB string: listpack, ziplist, intset and
//! zipmap. Each walker checks the blob's own header and terminator and every element's bounds,
//! and hands out elements as string slices or integers; errors are a text plus the position in
//! the blob, which the caller turns into a file offset.

/// One element of a compact encoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Elem<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl Elem<'_> {
    /// The element as Redis would reply with it (integers in decimal).
    pub fn to_bytes(&self, tmp: &mut Vec<u8>) -> Vec<u8> {
        match self {
            Elem::Str(s) => s.to_vec(),
            Elem::Int(i) => {
                tmp.clear();
                crate::input::push_int(tmp, *i);
                tmp.clone()
            }
        }
    }

    /// The element's bytes, integers rendered into `tmp`.
    pub fn as_bytes<'b>(&'b self, tmp: &'b mut Vec<u8>) -> &'b [u8] {
        match self {
            Elem::Str(s) => s,
            Elem::Int(i) => {
                tmp.clear();
                crate::input::push_int(tmp, *i);
                tmp
            }
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Elem::Int(i) => Some(*i),
            Elem::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        }
    }
}

/// A problem inside a blob: what, and at which byte of the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobError {
    pub pos: usize,
    pub what: String,
}

type R<T> = Result<T, BlobError>;

fn bad<T>(pos: usize, what: impl Into<String>) -> R<T> {
    Err(BlobError {
        pos,
        what: what.into(),
    })
}

fn get(b: &[u8], at: usize, n: usize, what: &str) -> R<usize> {
    match at.checked_add(n) {
        Some(end) if end <= b.len() => Ok(end),
        _ => bad(at, format!("{what} runs past the end of the blob")),
    }
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x))
}

/// Sign-extends the low `bits` bits of `v`.
fn sext(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Walks a listpack, calling `f` for every element; returns the element count.
pub fn listpack<'a>(b: &'a [u8], mut f: impl FnMut(Elem<'a>) -> R<()>) -> R<u64> {
    if b.len() < 7 {
        return bad(
            0,
            format!("listpack of {} bytes is shorter than its header", b.len()),
        );
    }
    let total = le(&b[0..4]) as usize;
    if total != b.len() {
        return bad(
            0,
            format!(
                "listpack header says {total} bytes, the blob has {}",
                b.len()
            ),
        );
    }
    let stated = le(&b[4..6]);
    if b[b.len() - 1] != 0xFF {
        return bad(b.len() - 1, "listpack does not end with 0xFF");
    }
    let mut p = 6;
    let last = b.len() - 1;
    let mut count = 0u64;
    while p < last {
        let start = p;
        let e = b[p];
        let (elem, data_end) = if e & 0x80 == 0 {
            (Elem::Int(i64::from(e & 0x7f)), p + 1)
        } else if e & 0xC0 == 0x80 {
            let n = (e & 0x3f) as usize;
            let end = get(b, p + 1, n, "listpack string")?;
            (Elem::Str(&b[p + 1..end]), end)
        } else if e & 0xE0 == 0xC0 {
            let end = get(b, p, 2, "listpack 13-bit integer")?;
            let v = (u64::from(e & 0x1f) << 8) | u64::from(b[p + 1]);
            (Elem::Int(sext(v, 13)), end)
        } else if e & 0xF0 == 0xE0 {
            let hdr = get(b, p, 2, "listpack 12-bit string length")?;
            let n = ((usize::from(e & 0x0f)) << 8) | usize::from(b[p + 1]);
            let end = get(b, hdr, n, "listpack string")?;
            (Elem::Str(&b[hdr..end]), end)
        } else {
            match e {
                0xF0 => {
                    let hdr = get(b, p, 5, "listpack 32-bit string length")?;
                    let n = le(&b[p + 1..hdr]) as usize;
                    let end = get(b, hdr, n, "listpack string")?;
                    (Elem::Str(&b[hdr..end]), end)
                }
                0xF1..=0xF4 => {
                    let n = [2usize, 3, 4, 8][(e - 0xF1) as usize];
                    let end = get(b, p + 1, n, "listpack integer")?;
                    let v = le(&b[p + 1..end]);
                    (Elem::Int(sext(v, 8 * n as u32)), end)
                }
                0xFF => return bad(p, "listpack terminator before the end of the blob"),
                _ => return bad(p, format!("unknown listpack encoding {e:#04x}")),
            }
        };
        // The back-length: the entry's size (encoding + data) in 7-bit groups.
        let l = (data_end - start) as u64;
        let bl = match l {
            // lpEncodeBacklen's thresholds, off-by-one and all (16383 takes 3 bytes).
            0..=127 => 1,
            128..=16382 => 2,
            16383..=2097150 => 3,
            2097151..=268435454 => 4,
            _ => 5,
        };
        let next = get(b, data_end, bl, "listpack back-length")?;
        if next > last {
            return bad(data_end, "listpack back-length runs into the terminator");
        }
        f(elem)?;
        count += 1;
        p = next;
    }
    if stated != 0xFFFF && stated != count {
        return bad(
            4,
            format!("listpack header says {stated} elements, it holds {count}"),
        );
    }
    Ok(count)
}

/// Walks a ziplist (RDB ≤ 9 lists/hashes/zsets, quicklist v1 nodes); returns the count.
pub fn ziplist<'a>(b: &'a [u8], mut f: impl FnMut(Elem<'a>) -> R<()>) -> R<u64> {
    if b.len() < 11 {
        return bad(
            0,
            format!("ziplist of {} bytes is shorter than its header", b.len()),
        );
    }
    let total = le(&b[0..4]) as usize;
    if total != b.len() {
        return bad(
            0,
            format!(
                "ziplist header says {total} bytes, the blob has {}",
                b.len()
            ),
        );
    }
    let stated = le(&b[8..10]);
    let last = b.len() - 1;
    if b[last] != 0xFF {
        return bad(last, "ziplist does not end with 0xFF");
    }
    let mut p = 10;
    let mut count = 0u64;
    while p < last {
        // prevlen: 1 byte, or 0xFE and 4 bytes.
        p = if b[p] < 0xFE {
            p + 1
        } else if b[p] == 0xFE {
            get(b, p, 5, "ziplist prevlen")?
        } else {
            return bad(p, "ziplist entry with prevlen 0xFF");
        };
        if p >= last {
            return bad(p, "ziplist entry cut by the terminator");
        }
        let e = b[p];
        let (elem, end) = match e >> 6 {
            0 => {
                let n = (e & 0x3f) as usize;
                let end = get(b, p + 1, n, "ziplist string")?;
                (Elem::Str(&b[p + 1..end]), end)
            }
            1 => {
                let hdr = get(b, p, 2, "ziplist 14-bit length")?;
                let n = (usize::from(e & 0x3f) << 8) | usize::from(b[p + 1]);
                let end = get(b, hdr, n, "ziplist string")?;
                (Elem::Str(&b[hdr..end]), end)
            }
            2 => {
                let hdr = get(b, p, 5, "ziplist 32-bit length")?;
                let n = u32::from_be_bytes([b[p + 1], b[p + 2], b[p + 3], b[p + 4]]) as usize;
                let end = get(b, hdr, n, "ziplist string")?;
                (Elem::Str(&b[hdr..end]), end)
            }
            _ => {
                let (n, bits) = match e {
                    0xC0 => (2usize, 16),
                    0xD0 => (4, 32),
                    0xE0 => (8, 64),
                    0xF0 => (3, 24),
                    0xFE => (1, 8),
                    0xF1..=0xFD => (0, 0),
                    _ => return bad(p, format!("unknown ziplist encoding {e:#04x}")),
                };
                if n == 0 {
                    (Elem::Int(i64::from(e & 0x0f) - 1), p + 1)
                } else {
                    let end = get(b, p + 1, n, "ziplist integer")?;
                    (Elem::Int(sext(le(&b[p + 1..end]), bits)), end)
                }
            }
        };
        if end > last {
            return bad(p, "ziplist entry runs into the terminator");
        }
        f(elem)?;
        count += 1;
        p = end;
    }
    if stated != 0xFFFF && stated != count {
        return bad(
            8,
            format!("ziplist header says {stated} entries, it holds {count}"),
        );
    }
    Ok(count)
}

/// Walks an intset; returns the count.
pub fn intset(b: &[u8], mut f: impl FnMut(i64) -> R<()>) -> R<u64> {
    if b.len() < 8 {
        return bad(0, "intset shorter than its header");
    }
    let width = le(&b[0..4]) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return bad(0, format!("intset encoding {width} (expected 2, 4 or 8)"));
    }
    let n = le(&b[4..8]);
    if (b.len() - 8) as u64 != n.saturating_mul(width as u64) {
        return bad(
            4,
            format!(
                "intset of {n} {width}-byte integers in {} bytes",
                b.len() - 8
            ),
        );
    }
    for c in b[8..].chunks_exact(width) {
        f(sext(le(c), 8 * width as u32))?;
    }
    Ok(n)
}

/// Walks a zipmap (RDB ≤ 3 hashes) calling `f(field, value)`; returns the pair count.
pub fn zipmap(b: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> R<()>) -> R<u64> {
    if b.is_empty() {
        return bad(0, "empty zipmap");
    }
    let mut p = 1;
    let mut count = 0u64;
    let len_at = |p: usize| -> R<(usize, usize)> {
        match b.get(p) {
            None => bad(p, "zipmap runs past the end of the blob"),
            Some(&l) if l < 254 => Ok((l as usize, p + 1)),
            Some(254) => {
                let end = get(b, p, 5, "zipmap length")?;
                Ok((le(&b[p + 1..end]) as usize, end))
            }
            Some(_) => bad(p, "zipmap end where a length was expected"),
        }
    };
    loop {
        match b.get(p) {
            None => return bad(p, "zipmap without its 0xFF terminator"),
            Some(0xFF) => break,
            _ => {}
        }
        let (klen, k) = len_at(p)?;
        let kend = get(b, k, klen, "zipmap field")?;
        let (vlen, v) = len_at(kend)?;
        let free = *b.get(v).ok_or(BlobError {
            pos: v,
            what: "zipmap free byte missing".into(),
        })? as usize;
        let vend = get(b, v + 1, vlen, "zipmap value")?;
        let next = get(b, vend, free, "zipmap free space")?;
        f(&b[k..kend], &b[v + 1..vend])?;
        count += 1;
        p = next;
    }
    if p + 1 != b.len() {
        return bad(p, "bytes after the zipmap terminator");
    }
    if b[0] < 254 && u64::from(b[0]) != count {
        return bad(
            0,
            format!("zipmap header says {} pairs, it holds {count}", b[0]),
        );
    }
    Ok(count)
}

#[cfg(test)]
mod tests;
