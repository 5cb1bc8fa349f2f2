//! The compact encodings from hand-built bytes, one case per element encoding.

use super::*;

fn collect_lp(b: &[u8]) -> R<Vec<Elem<'_>>> {
    let mut v = Vec::new();
    listpack(b, |e| {
        v.push(e);
        Ok(())
    })?;
    Ok(v)
}

/// A listpack from raw entries (encoding + data), with back-lengths, header and terminator.
pub(crate) fn lp(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in entries {
        body.extend_from_slice(e);
        let l = e.len();
        // Back-length: big-endian 7-bit groups, high bit set on all but the first byte.
        let mut groups = vec![(l & 127) as u8];
        let mut rest = l >> 7;
        while rest > 0 {
            groups.push((rest & 127) as u8);
            rest >>= 7;
        }
        groups.reverse();
        for (i, g) in groups.iter().enumerate() {
            body.push(if i == 0 { *g } else { g | 128 });
        }
    }
    let total = 6 + body.len() + 1;
    let mut out = (total as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.push(0xFF);
    out
}

#[test]
fn listpack_every_encoding() {
    let long = vec![b'x'; 5000];
    let mut s32 = vec![0xF0];
    s32.extend_from_slice(&5000u32.to_le_bytes());
    s32.extend_from_slice(&long);
    let mut s12 = vec![0xE0 | (100 >> 8) as u8, 100u8];
    s12.extend_from_slice(&[b'y'; 100]);
    let entries = vec![
        vec![5],                                                           // 7-bit uint
        vec![0x80 | 3, b'a', b'b', b'c'],                                  // 6-bit string
        vec![0xC0 | 0x1F, 0xFF],                                           // 13-bit: -1
        vec![0xC0 | 0x0F, 0xFF],                                           // 13-bit: 4095
        s12,                                                               // 12-bit string
        s32,                                                               // 32-bit string
        vec![0xF1, 0x18, 0xFC],                                            // int16: -1000
        vec![0xF2, 0x40, 0x42, 0x0F],                                      // int24: 1000000
        vec![0xF3, 0x00, 0x94, 0x35, 0x77],                                // int32: 2000000000
        [vec![0xF4], (-6_000_000_000i64).to_le_bytes().to_vec()].concat(), // int64
    ];
    let b = lp(&entries);
    let got = collect_lp(&b).unwrap();
    assert_eq!(got[0], Elem::Int(5));
    assert_eq!(got[1], Elem::Str(b"abc"));
    assert_eq!(got[2], Elem::Int(-1));
    assert_eq!(got[3], Elem::Int(4095));
    assert_eq!(got[4], Elem::Str(&[b'y'; 100]));
    assert_eq!(got[5], Elem::Str(&long));
    assert_eq!(got[6], Elem::Int(-1000));
    assert_eq!(got[7], Elem::Int(1_000_000));
    assert_eq!(got[8], Elem::Int(2_000_000_000));
    assert_eq!(got[9], Elem::Int(-6_000_000_000));
    // Every cut and every stated-length lie is an error, never a panic.
    for cut in 0..b.len() {
        assert!(collect_lp(&b[..cut]).is_err(), "cut {cut}");
    }
    let mut lie = b.clone();
    lie[4] = 3; // element count
    assert!(collect_lp(&lie).is_err());
    let mut bad = b.clone();
    bad[6] = 0xF5; // unknown encoding
    assert!(collect_lp(&bad).is_err());
}

fn zl(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut prev = 0usize;
    for e in entries {
        if prev < 254 {
            body.push(prev as u8);
        } else {
            body.push(0xFE);
            body.extend_from_slice(&(prev as u32).to_le_bytes());
        }
        let start = body.len();
        body.extend_from_slice(e);
        prev = body.len() - start + if prev < 254 { 1 } else { 5 };
    }
    let total = 10 + body.len() + 1;
    let mut out = (total as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&0u32.to_le_bytes()); // zltail: not read
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.push(0xFF);
    out
}

#[test]
fn ziplist_every_encoding() {
    let mut s14 = vec![0x40 | (300 >> 8) as u8, (300 & 0xff) as u8];
    s14.extend_from_slice(&[b'z'; 300]);
    let b = zl(&[
        vec![3, b'a', b'b', b'c'],
        s14,
        vec![0x80, 0, 0, 0, 2, b'h', b'i'],
        vec![0xC0, 0xE8, 0x03],             // int16 1000
        vec![0xD0, 0xFF, 0xFF, 0xFF, 0x7F], // int32 max
        [vec![0xE0], 6_000_000_000i64.to_le_bytes().to_vec()].concat(),
        vec![0xF0, 0xFF, 0xFF, 0xFF], // int24 -1
        vec![0xFE, 0xFD],             // int8 -3
        vec![0xF1],                   // immediate 0
        vec![0xFD],                   // immediate 12
    ]);
    let mut got = Vec::new();
    ziplist(&b, |e| {
        got.push(e);
        Ok(())
    })
    .unwrap();
    assert_eq!(got[0], Elem::Str(b"abc"));
    assert_eq!(got[1], Elem::Str(&[b'z'; 300]));
    assert_eq!(got[2], Elem::Str(b"hi"));
    assert_eq!(
        &got[3..],
        &[
            Elem::Int(1000),
            Elem::Int(i32::MAX as i64),
            Elem::Int(6_000_000_000),
            Elem::Int(-1),
            Elem::Int(-3),
            Elem::Int(0),
            Elem::Int(12)
        ]
    );
    for cut in 0..b.len() {
        assert!(ziplist(&b[..cut], |_| Ok(())).is_err(), "cut {cut}");
    }
}

#[test]
fn intset_widths() {
    for (w, vals) in [
        (2u32, vec![-3i64, 7]),
        (4, vec![-70000, 70000]),
        (8, vec![-5_000_000_000, 1 << 40]),
    ] {
        let mut b = w.to_le_bytes().to_vec();
        b.extend_from_slice(&(vals.len() as u32).to_le_bytes());
        for v in &vals {
            b.extend_from_slice(&v.to_le_bytes()[..w as usize]);
        }
        let mut got = Vec::new();
        assert_eq!(
            intset(&b, |i| {
                got.push(i);
                Ok(())
            }),
            Ok(vals.len() as u64)
        );
        assert_eq!(got, vals);
        assert!(intset(&b[..b.len() - 1], |_| Ok(())).is_err());
    }
    assert!(
        intset(&[3, 0, 0, 0, 0, 0, 0, 0], |_| Ok(())).is_err(),
        "width 3"
    );
    assert!(
        intset(&[2, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF], |_| Ok(())).is_err(),
        "count lie"
    );
}

#[test]
fn zipmap_pairs_and_free_bytes() {
    // zmlen 2; "f1" => "v1"; "f2" => "v2" with one free byte; end.
    let b = [
        2, 2, b'f', b'1', 2, 0, b'v', b'1', 2, b'f', b'2', 2, 1, b'v', b'2', b'X', 0xFF,
    ];
    let mut got = Vec::new();
    assert_eq!(
        zipmap(&b, |f, v| {
            got.push((f.to_vec(), v.to_vec()));
            Ok(())
        }),
        Ok(2)
    );
    assert_eq!(
        got,
        vec![
            (b"f1".to_vec(), b"v1".to_vec()),
            (b"f2".to_vec(), b"v2".to_vec())
        ]
    );
    for cut in 0..b.len() {
        assert!(zipmap(&b[..cut], |_, _| Ok(())).is_err(), "cut {cut}");
    }
}
