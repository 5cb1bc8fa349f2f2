//! Redis' CRC-64 (Jones polynomial, reflected, init 0), which ends every RDB file and every
//! DUMP payload. The one copy in the workspace: `flashback-format` re-exports it.

/// Slicing-by-8 tables for the reflected Jones polynomial: base RDBs can be gigabytes, and the
/// bytewise loop would be the slowest step of reading one.
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

/// Redis' CRC-64, incrementally: `crc = crc64(crc, chunk)`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_and_incremental() {
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
        let bytewise = data.iter().fold(0u64, |c, &b| crc64(c, &[b]));
        assert_eq!(bytewise, whole);
    }
}
