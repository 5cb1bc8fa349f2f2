//! RESP framing. Two steps, as in mini-redis `frame.rs`: [`check`] finds where a complete frame
//! ends (or says `Incomplete`, cheaply), then [`parse`] decodes it. Offsets in the replication
//! stream are counted from the raw bytes a frame occupies, never from a re-encoding.
//!
//! It lives in the format crate, not beside the sockets in `flashback`, because it decodes
//! bytes from the network and needs no runtime: the fuzz targets depend on this crate alone,
//! and the records a segment stores are these frames' raw bytes. [`stream`] cuts the
//! replication stream (many commands, some too big to buffer) with it.

use bytes::Bytes;

pub mod stream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Simple(Bytes),
    Error(Bytes),
    Integer(i64),
    Bulk(Bytes),
    Null,
    Array(Vec<Frame>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not enough bytes yet; read more and try again.
    #[error("incomplete frame")]
    Incomplete,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Refuse absurd lengths before allocating for them (Redis' own proto-max-bulk-len cap is 512 MB
/// by default; 4 GiB leaves room for servers configured above it).
const MAX_LEN: i64 = 4 << 30;
const MAX_ARRAY: i64 = 1 << 30;
/// Nesting deeper than any reply Redis sends; the bound keeps recursion off a crafted stack.
const MAX_DEPTH: usize = 64;

/// Returns the length of the complete frame at the start of `buf`.
pub fn check(buf: &[u8]) -> Result<usize, FrameError> {
    let mut pos = 0;
    check_at(buf, &mut pos, 0)?;
    Ok(pos)
}

fn check_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<(), FrameError> {
    if depth > MAX_DEPTH {
        return Err(FrameError::Protocol("frames nested too deep".into()));
    }
    let t = *buf.get(*pos).ok_or(FrameError::Incomplete)?;
    *pos += 1;
    match t {
        b'+' | b'-' => {
            line(buf, pos)?;
        }
        // Checked here too, so that whatever `check` accepts `parse` decodes.
        b':' => {
            number(line(buf, pos)?)?;
        }
        b'$' => {
            let n = number(line(buf, pos)?)?;
            if n >= 0 {
                if n > MAX_LEN {
                    return Err(FrameError::Protocol(format!("bulk length {n} too large")));
                }
                let end = *pos + n as usize + 2;
                if buf.len() < end {
                    return Err(FrameError::Incomplete);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(FrameError::Protocol(
                        "bulk string not terminated by CRLF".into(),
                    ));
                }
                *pos = end;
            }
        }
        b'*' => {
            let n = number(line(buf, pos)?)?;
            if n > MAX_ARRAY {
                return Err(FrameError::Protocol(format!("array length {n} too large")));
            }
            for _ in 0..n.max(0) {
                check_at(buf, pos, depth + 1)?;
            }
        }
        other => {
            return Err(FrameError::Protocol(format!(
                "unexpected type byte 0x{other:02x}"
            )))
        }
    }
    Ok(())
}

fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], FrameError> {
    let start = *pos;
    let rest = buf.get(start..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            *pos = start + i + 2;
            Ok(&rest[..i])
        }
        None if rest.len() > 64 * 1024 => {
            Err(FrameError::Protocol("line longer than 64 KiB".into()))
        }
        None => Err(FrameError::Incomplete),
    }
}

fn number(s: &[u8]) -> Result<i64, FrameError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FrameError::Protocol(format!("bad number {:?}", String::from_utf8_lossy(s))))
}

/// Decodes the complete frame `check` measured. `buf` should be exactly that frame, but parse
/// trusts nothing about it: on any bytes it returns a frame or [`FrameError::Protocol`] (a
/// truncated frame included), never a panic, so it is safe on its own (and fuzzed so).
pub fn parse(buf: &Bytes) -> Result<Frame, FrameError> {
    let mut pos = 0;
    parse_at(buf, &mut pos, 0).map_err(|e| match e {
        FrameError::Incomplete => {
            FrameError::Protocol("truncated frame (parse takes a frame check measured)".into())
        }
        e => e,
    })
}

fn parse_at(buf: &Bytes, pos: &mut usize, depth: usize) -> Result<Frame, FrameError> {
    if depth > MAX_DEPTH {
        return Err(FrameError::Protocol("frames nested too deep".into()));
    }
    let t = *buf.get(*pos).ok_or(FrameError::Incomplete)?;
    *pos += 1;
    Ok(match t {
        b'+' => Frame::Simple(buf.slice_ref(line(buf, pos)?)),
        b'-' => Frame::Error(buf.slice_ref(line(buf, pos)?)),
        b':' => Frame::Integer(number(line(buf, pos)?)?),
        b'$' => {
            let n = number(line(buf, pos)?)?;
            if n < 0 {
                Frame::Null
            } else {
                // The same rules as `check`, with every index checked: the length may run
                // past the buffer, and the body must end with CRLF.
                let body = usize::try_from(n)
                    .ok()
                    .and_then(|n| Some((*pos, pos.checked_add(n)?)))
                    .filter(|&(_, end)| end <= buf.len())
                    .ok_or(FrameError::Incomplete)?;
                match buf.get(body.1..body.1.saturating_add(2)) {
                    None => return Err(FrameError::Incomplete),
                    Some(b"\r\n") => {}
                    Some(_) => {
                        return Err(FrameError::Protocol(
                            "bulk string not terminated by CRLF".into(),
                        ))
                    }
                }
                *pos = body.1 + 2;
                Frame::Bulk(buf.slice(body.0..body.1))
            }
        }
        b'*' => {
            let n = number(line(buf, pos)?)?;
            if n < 0 {
                Frame::Null
            } else {
                let mut items = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    items.push(parse_at(buf, pos, depth + 1)?);
                }
                Frame::Array(items)
            }
        }
        other => {
            return Err(FrameError::Protocol(format!(
                "unexpected type byte 0x{other:02x}"
            )))
        }
    })
}

/// A command's arguments when `frame` is an array of bulk strings (every command in a
/// replication stream is).
pub fn argv(frame: Frame) -> Option<Vec<Bytes>> {
    match frame {
        Frame::Array(items) => items
            .into_iter()
            .map(|f| {
                if let Frame::Bulk(b) = f {
                    Some(b)
                } else {
                    None
                }
            })
            .collect(),
        _ => None,
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Frame {
    /// The text of a simple string, bulk string or error, lossily; for messages and INFO.
    pub fn text(&self) -> String {
        match self {
            Frame::Simple(b) | Frame::Error(b) | Frame::Bulk(b) => {
                String::from_utf8_lossy(b).into_owned()
            }
            Frame::Integer(i) => i.to_string(),
            Frame::Null => String::new(),
            Frame::Array(items) => items.iter().map(|f| f.text()).collect::<Vec<_>>().join(" "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_raw_bytes_and_waits_for_more() {
        let cmd = encode_command(&["SET", "k", "v"]);
        assert_eq!(check(&cmd), Ok(cmd.len()));
        for cut in 0..cmd.len() {
            assert_eq!(
                check(&cmd[..cut]),
                Err(FrameError::Incomplete),
                "cut at {cut}"
            );
        }
        let mut two = cmd.clone();
        two.extend_from_slice(b"*1\r\n$4\r\nping\r\n");
        assert_eq!(check(&two), Ok(cmd.len()));
        let f = parse(&Bytes::from(cmd)).unwrap();
        assert_eq!(
            argv(f).unwrap(),
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")]
        );
    }

    #[test]
    fn binary_values_and_bad_input() {
        let cmd = encode_command(&[&b"SET"[..], b"k\r\n\x00", b"\xff\r\n"]);
        let f = parse(&Bytes::from(cmd.clone())).unwrap();
        assert_eq!(argv(f).unwrap()[1], Bytes::from_static(b"k\r\n\x00"));
        assert!(matches!(
            check(b"$3\r\nabcXY"),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(check(b"?x\r\n"), Err(FrameError::Protocol(_))));
        assert!(matches!(check(b"*1\r\n$-1\r\n"), Ok(9)));
        assert!(matches!(
            check(b"$99999999999\r\n"),
            Err(FrameError::Protocol(_))
        ));
    }

    /// `parse` on any bytes: a frame or a protocol error, never a panic and never
    /// `Incomplete` (it is given whole frames; a short one is a caller's or a sender's bug).
    fn total(b: &[u8]) {
        match parse(&Bytes::copy_from_slice(b)) {
            Ok(_) | Err(FrameError::Protocol(_)) => {}
            Err(e) => panic!("parse({:?}) = {e:?}", b.escape_ascii().to_string()),
        }
        if check(b) == Ok(b.len()) {
            assert!(
                parse(&Bytes::copy_from_slice(b)).is_ok(),
                "check accepts {:?} but parse does not",
                b.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn parse_is_total_on_unchecked_input() {
        let frames: Vec<Vec<u8>> = vec![
            encode_command(&["SET", "k", "v"]),
            b"+OK\r\n".to_vec(),
            b"-ERR x\r\n".to_vec(),
            b":-12\r\n".to_vec(),
            b"$-1\r\n".to_vec(),
            b"*-1\r\n".to_vec(),
            b"*0\r\n".to_vec(),
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n".to_vec(),
        ];
        for f in &frames {
            for cut in 0..=f.len() {
                total(&f[..cut]);
            }
            for i in 0..f.len() {
                for b in [0, b'\r', b'\n', b'0', b'9', b'-', b'*', b'$', b'+', 0xff] {
                    let mut g = f.clone();
                    g[i] = b;
                    total(&g);
                }
            }
        }
        for bad in [
            &b"$10\r\nab"[..],
            b"$2\r\nab",
            b"$2\r\nabXY",
            b"$9223372036854775807\r\nab\r\n",
            b"$18446744073709551615\r\n",
            b"*3\r\n$1\r\na\r\n",
            b"*9223372036854775807\r\n",
            b"",
        ] {
            total(bad);
        }
    }

    #[test]
    fn parse_refuses_deep_nesting_without_overflowing_the_stack() {
        let deep = b"*1\r\n".repeat(1 << 20);
        assert!(matches!(check(&deep), Err(FrameError::Protocol(_))));
        assert!(matches!(
            parse(&Bytes::from(deep)),
            Err(FrameError::Protocol(_))
        ));
    }
}
