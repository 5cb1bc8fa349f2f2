//! LEB128 unsigned varints, used for the per-record fields inside a segment block.

/// Appends `v` to `out`.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint from `buf` at `*pos`, advancing it; None when truncated, over 10 bytes, or
/// when the 10th byte carries bits beyond the 64th (a silent overflow would turn a corrupt
/// length into a plausible small one).
pub fn get(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for v in [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put(&mut b, v);
            let mut p = 0;
            assert_eq!(get(&b, &mut p), Some(v), "{v}");
            assert_eq!(p, b.len());
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        let mut p = 0;
        assert_eq!(get(&[0x80, 0x80], &mut p), None);
        let mut p = 0;
        assert_eq!(
            get(
                &[0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>(),
                &mut p
            ),
            None
        );
        let mut p = 0;
        assert_eq!(get(&[0xff; 11], &mut p), None);
    }
}
