//! The replication stream after PSYNC, cut into commands: [`Framer`] takes the bytes as they
//! arrive and yields each complete command ([`StreamItem::Command`]: its raw bytes, which count
//! toward the replication offset, and its argv), or, for a command too big to buffer whole, its
//! bytes in parts ([`StreamItem::Part`]) as they come.
//!
//! It lives in the format crate rather than next to the socket (`flashback::replica`) because
//! it is a pure decoder of untrusted bytes: it needs no tokio, so a fuzz target can drive it
//! with nothing but this crate, and what it yields is exactly what a segment stores (a
//! record's bytes are a command's raw bytes; a big command's parts become fragment blocks).
//!
//! ```
//! use flashback_format::resp::stream::{Framer, StreamItem};
//!
//! let mut framer = Framer::default();
//! framer.extend(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET");
//! let Some(StreamItem::Command(c)) = framer.next().unwrap() else { panic!() };
//! assert_eq!(c.argv, [&b"PING"[..]]);
//! assert!(framer.next().unwrap().is_none()); // the GET has not fully arrived
//! ```

use super::{self as resp, FrameError, MAX_ARRAY, MAX_LEN};
use bytes::{Bytes, BytesMut};

/// One command of the stream: its raw bytes (which count toward the offset) and its argv.
#[derive(Debug, Clone)]
pub struct StreamCommand {
    pub raw: Bytes,
    pub argv: Vec<Bytes>,
}

/// A command that has not fully arrived is passed on in parts once it is known to be at least
/// this big, instead of being buffered whole: a 512 MB value must not cost 512 MB of memory.
/// Smaller commands stay whole (one record, one block), which compresses better.
pub const STREAM_FROM: u64 = 8 << 20;
/// Size of the parts of a streamed command (one segment block each).
pub const PART_BYTES: usize = 4 << 20;

// A command kept whole is under STREAM_FROM plus one read (a buffer that may double), and is
// stored in one block with what was pending; a part is one block on its own.
const _: () = assert!(
    3 * STREAM_FROM <= crate::segment::MAX_BLOCK_RAW_BYTES as u64
        && PART_BYTES as u64 <= crate::segment::MAX_BLOCK_RAW_BYTES as u64
);

/// What the stream yields next.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Command(StreamCommand),
    /// The next raw bytes of a command too big to buffer whole, in order; `end` is set on the
    /// last part.
    Part {
        bytes: Bytes,
        end: Option<BigEnd>,
    },
}

/// What is known of a streamed command once all of it has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigEnd {
    /// The leading arguments, as long as each is at most [`HEAD_ARG_MAX`] bytes, at most two:
    /// all the stream state needs (SELECT n, MULTI, EXEC, REPLCONF GETACK).
    pub head: Vec<Bytes>,
    /// The command's length in bytes.
    pub len: u64,
}

pub const HEAD_ARG_MAX: usize = 64;

/// Walks a RESP array of bulk strings incrementally, over a buffer that grows at its end and
/// whose front the caller may cut off between calls (`pos` is then moved back by as much). It
/// reads only the `*N` and `$L` lines and the CRLFs; bodies are skipped by length, so a 512 MB
/// argument costs nothing to walk, and it resumes where it stopped, even inside a line, so
/// each byte is looked at once however many reads a command arrives in.
#[derive(Debug, Default)]
struct FrameScan {
    /// Buffer position up to which the frame has been checked.
    pos: usize,
    /// Bytes of the frame cut off the buffer so far.
    passed: u64,
    /// Arguments announced by `*N` (None before that line) and arguments started.
    args: Option<u64>,
    started: u64,
    /// Body bytes of the current argument still to pass, then its CRLF bytes.
    body_left: u64,
    crlf_left: u8,
    /// The current argument is kept for `head`.
    keep: bool,
    head: Vec<Bytes>,
    cur: Vec<u8>,
    /// An argument was too long to keep: no later one is kept either.
    head_closed: bool,
    /// Bytes of the current `*N`/`$L` line already searched for its CRLF.
    line_searched: usize,
    /// Bytes looked at so far (see [`Framer::bytes_examined`]).
    examined: u64,
}

impl FrameScan {
    /// Bytes the frame is known to take so far.
    fn known_len(&self) -> u64 {
        self.passed + self.pos as u64 + self.body_left + u64::from(self.crlf_left)
    }

    /// Advances over `buf[self.pos..]`; true when the frame ends at `self.pos`.
    fn advance(&mut self, buf: &[u8]) -> Result<bool, FrameError> {
        loop {
            if self.body_left > 0 {
                let take = (self.body_left.min((buf.len() - self.pos) as u64)) as usize;
                if take == 0 {
                    return Ok(false);
                }
                if self.keep {
                    self.cur.extend_from_slice(&buf[self.pos..self.pos + take]);
                }
                self.examined += take as u64;
                self.pos += take;
                self.body_left -= take as u64;
                continue;
            }
            if self.crlf_left > 0 {
                let Some(&b) = buf.get(self.pos) else {
                    return Ok(false);
                };
                if b != b"\r\n"[2 - self.crlf_left as usize] {
                    return Err(FrameError::Protocol(
                        "bulk string not terminated by CRLF".into(),
                    ));
                }
                self.examined += 1;
                self.pos += 1;
                self.crlf_left -= 1;
                if self.crlf_left == 0 && self.keep {
                    self.head.push(Bytes::from(std::mem::take(&mut self.cur)));
                }
                continue;
            }
            if self.args.is_some_and(|n| self.started == n) {
                return Ok(true);
            }
            let rest = buf.get(self.pos..).unwrap_or_default();
            let want = if self.args.is_none() { b'*' } else { b'$' };
            if let Some(&t) = rest.first().filter(|&&t| t != want) {
                // Said at once, as `check` does, rather than after the line's CRLF arrives.
                return Err(FrameError::Protocol(format!(
                    "a command in the stream is not an array of bulk strings (type byte 0x{t:02x} where {:?} belongs)",
                    want as char
                )));
            }
            // A CR at the end of what was searched may pair with an LF that just arrived.
            let from = self.line_searched.saturating_sub(1).min(rest.len());
            let found = rest[from..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map(|i| from + i);
            self.examined += (found.map_or(rest.len(), |i| i + 2) - from) as u64;
            let Some(i) = found else {
                if rest.len() > 64 * 1024 {
                    return Err(FrameError::Protocol("line longer than 64 KiB".into()));
                }
                self.line_searched = rest.len();
                return Ok(false);
            };
            self.line_searched = 0;
            let line = &rest[..i];
            let n: Option<i64> = std::str::from_utf8(line.get(1..).unwrap_or_default())
                .ok()
                .and_then(|t| t.parse().ok());
            match (self.args, line.first(), n) {
                // The same limits as `resp::check`, which framed commands before this scan did.
                (None, Some(b'*'), Some(n)) if n > MAX_ARRAY => {
                    return Err(FrameError::Protocol(format!("array length {n} too large")));
                }
                (Some(_), Some(b'$'), Some(n)) if n > MAX_LEN => {
                    return Err(FrameError::Protocol(format!("bulk length {n} too large")));
                }
                (None, Some(b'*'), Some(n)) if n >= 1 => self.args = Some(n as u64),
                (Some(_), Some(b'$'), Some(n)) if n >= 0 => {
                    self.started += 1;
                    self.body_left = n as u64;
                    self.crlf_left = 2;
                    self.keep =
                        !self.head_closed && self.head.len() < 2 && (n as usize) <= HEAD_ARG_MAX;
                    self.head_closed |= !self.keep;
                }
                _ => {
                    return Err(FrameError::Protocol(format!(
                        "a command in the stream is not an array of bulk strings (line {})",
                        shown(line)
                    )))
                }
            }
            self.pos += i + 2;
        }
    }
}

/// Cuts the buffered stream into commands and parts of big commands. It does no I/O: the
/// caller reads into [`buf_mut`](Self::buf_mut) (or [`extend`](Self::extend)s it), then calls
/// [`next`](Self::next) until it yields `None`.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
    /// The command at the front of the buffer, as far as it has been scanned. Kept across
    /// calls: scanning the buffer afresh on each call (as a `resp::check` per read would) is
    /// quadratic for a command of many arguments arriving in many small reads.
    scan: FrameScan,
    /// The scanned command is known to be big: it is being passed on in parts.
    big: bool,
    /// Bytes examined by the scans of the commands already yielded.
    examined: u64,
}

impl Framer {
    /// A framer whose buffer already holds the first bytes of the stream (what arrived with
    /// the PSYNC reply or the snapshot).
    pub fn with_buffer(buf: BytesMut) -> Self {
        Framer {
            buf,
            ..Framer::default()
        }
    }

    /// Appends bytes that arrived.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer, for reading straight into it (`read_buf`); only append to it.
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered and not yet yielded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Buffer bytes the framer has looked at so far, counting a byte again each time a scan
    /// passes over it: for tests and fuzz targets that check it stays linear in the input.
    pub fn bytes_examined(&self) -> u64 {
        self.examined + self.scan.examined
    }

    /// The next complete command buffered, or the next part of a big one, if any; `None`
    /// until more bytes arrive. A protocol error leaves the framer unusable (the link is
    /// dropped and the stream resumed elsewhere).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<StreamItem>, FrameError> {
        let complete = self.scan.advance(&self.buf)?;
        if !self.big {
            if complete {
                let n = self.scan.pos;
                let done = std::mem::take(&mut self.scan);
                // `parse` reads the command once more, to cut it into its arguments.
                self.examined += done.examined + n as u64;
                let raw = self.buf.split_to(n).freeze();
                let frame = resp::parse(&raw)?;
                let argv = resp::argv(frame).filter(|a| !a.is_empty()).ok_or_else(|| {
                    FrameError::Protocol(
                        "a command in the stream is not an array of bulk strings".into(),
                    )
                })?;
                return Ok(Some(StreamItem::Command(StreamCommand { raw, argv })));
            }
            if self.scan.known_len() < STREAM_FROM {
                return Ok(None);
            }
            self.big = true;
        }
        let scan = &mut self.scan;
        let n = scan.pos.min(PART_BYTES);
        if n == 0 || (!complete && n < PART_BYTES) {
            return Ok(None);
        }
        let last = complete && n == scan.pos;
        let bytes = self.buf.split_to(n).freeze();
        scan.pos -= n;
        scan.passed += n as u64;
        let end = if last {
            let s = std::mem::take(&mut self.scan);
            self.big = false;
            self.examined += s.examined;
            Some(BigEnd {
                head: s.head,
                len: s.passed,
            })
        } else {
            None
        };
        Ok(Some(StreamItem::Part { bytes, end }))
    }
}

/// A line of the stream for an error message: escaped, and cut to a length a log can hold.
fn shown(line: &[u8]) -> String {
    let cut = &line[..line.len().min(120)];
    let more = if line.len() > cut.len() {
        format!("… ({} bytes)", line.len())
    } else {
        String::new()
    };
    format!("\"{}\"{more}", cut.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` to a framer in reads of `step` bytes; returns what came out, with big
    /// commands' parts checked and joined.
    /// Each command's bytes, with its `BigEnd` when it came in parts.
    type Framed = Vec<(Vec<u8>, Option<BigEnd>)>;

    fn frame_all(stream: &[u8], step: usize) -> Result<Framed, FrameError> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let mut big: Vec<u8> = Vec::new();
        let mut max_buf = 0;
        for chunk in stream.chunks(step) {
            f.extend(chunk);
            max_buf = max_buf.max(f.buffered());
            while let Some(item) = f.next()? {
                match item {
                    StreamItem::Command(c) => {
                        assert!(big.is_empty(), "a command inside a big one");
                        out.push((c.raw.to_vec(), None));
                    }
                    StreamItem::Part { bytes, end } => {
                        assert!(bytes.len() <= PART_BYTES);
                        big.extend_from_slice(&bytes);
                        if let Some(e) = end {
                            assert_eq!(e.len, big.len() as u64);
                            out.push((std::mem::take(&mut big), Some(e)));
                        }
                    }
                }
            }
        }
        assert!(big.is_empty(), "an unfinished big command");
        // What is buffered stays near the threshold plus a read, whatever the command size.
        assert!(
            max_buf as u64 <= STREAM_FROM + PART_BYTES as u64 + step as u64,
            "{max_buf}"
        );
        Ok(out)
    }

    #[test]
    fn big_commands_pass_in_parts_byte_exact() {
        let value: Vec<u8> = (0..20 << 20)
            .map(|i: u32| (i * 7 + i / 251) as u8)
            .collect();
        let set = resp::encode_command(&[&b"SET"[..], b"k", &value]);
        let mset_args: Vec<Vec<u8>> = std::iter::once(b"MSET".to_vec())
            .chain((0..200_000).map(|i| format!("key:{i:050}").into_bytes()))
            .collect();
        let mset = resp::encode_command(&mset_args);
        assert!(mset.len() as u64 > STREAM_FROM);
        let ping = resp::encode_command(&["PING"]);
        let long_name = resp::encode_command(&[
            vec![b'x'; 100],
            b"SELECT".to_vec(),
            value[..9 << 20].to_vec(),
        ]);
        let mut stream = Vec::new();
        for c in [&ping, &set, &ping, &mset, &long_name, &ping] {
            stream.extend_from_slice(c);
        }
        for step in [1 << 16, 3_000_001] {
            let out = frame_all(&stream, step).unwrap();
            let cmds: Vec<&[u8]> = out.iter().map(|(c, _)| c.as_slice()).collect();
            assert_eq!(
                cmds,
                [&ping[..], &set, &ping, &mset, &long_name, &ping],
                "step {step}"
            );
            let heads: Vec<Option<Vec<Bytes>>> = out
                .iter()
                .map(|(_, e)| e.as_ref().map(|e| e.head.clone()))
                .collect();
            assert_eq!(heads[1], Some(vec![Bytes::from("SET"), Bytes::from("k")]));
            assert_eq!(
                heads[3],
                Some(vec![Bytes::from("MSET"), Bytes::from(mset_args[1].clone())])
            );
            // A head stops at the first argument too long to keep.
            assert_eq!(heads[4], Some(vec![]));
            assert_eq!((heads[0].clone(), heads[2].clone()), (None, None));
        }
    }

    #[test]
    fn a_bad_big_command_is_a_protocol_error() {
        let mut set = resp::encode_command(&[&b"SET"[..], b"k", &vec![b'v'; 9 << 20]]);
        let n = set.len();
        set[n - 2] = b'X';
        assert!(matches!(
            frame_all(&set, 1 << 20),
            Err(FrameError::Protocol(_))
        ));
        let mut nested = b"*2\r\n$3\r\nSET\r\n".to_vec();
        nested.extend_from_slice(format!("*1\r\n${}\r\n", 9 << 20).as_bytes());
        nested.resize(nested.len() + (9 << 20) + 2, b'v');
        assert!(matches!(
            frame_all(&nested, 1 << 20),
            Err(FrameError::Protocol(_))
        ));
    }

    #[test]
    fn a_big_many_argument_command_in_small_reads_is_scanned_in_linear_time() {
        let args: Vec<Vec<u8>> = std::iter::once(b"RPUSH".to_vec())
            .chain((0..50_000).map(|i| format!("element:{i:024}").into_bytes()))
            .collect();
        let cmd = resp::encode_command(&args);
        assert!(cmd.len() > 1 << 20 && (cmd.len() as u64) < STREAM_FROM);
        let mut f = Framer::default();
        let mut out = Vec::new();
        for chunk in cmd.chunks(1024) {
            f.extend(chunk);
            while let Some(item) = f.next().unwrap() {
                out.push(item);
            }
        }
        let [StreamItem::Command(c)] = &out[..] else {
            panic!("{} items", out.len())
        };
        assert_eq!(c.raw, cmd);
        assert_eq!(c.argv.len(), args.len());
        assert!(
            f.bytes_examined() < 4 * cmd.len() as u64,
            "{} bytes examined for a command of {}",
            f.bytes_examined(),
            cmd.len()
        );
    }

    #[test]
    fn commands_cut_anywhere_come_out_whole_and_bad_type_bytes_fail_at_once() {
        let cmds = [
            resp::encode_command(&["PING"]),
            resp::encode_command(&[&b"SET"[..], b"k\r\n", b"\r\n\r"]),
            resp::encode_command(&[vec![b'x'; 300], vec![b'\r'; 70_000]]),
            resp::encode_command(&["SELECT", "3"]),
        ];
        let stream = cmds.concat();
        for step in 1..8 {
            let out = frame_all(&stream, step).unwrap();
            let got: Vec<Vec<u8>> = out.into_iter().map(|(c, _)| c).collect();
            assert_eq!(got, cmds, "step {step}");
        }
        for bad in [&b"\n"[..], b"+OK", b"*2\r\n:1", b"*1\r\n*1"] {
            let mut f = Framer::default();
            f.extend(bad);
            assert!(
                matches!(f.next(), Err(FrameError::Protocol(_))),
                "{:?}",
                bad.escape_ascii().to_string()
            );
        }
        let mut f = Framer::default();
        f.extend(format!("*1\r\n${}\r\n", (4u64 << 30) + 1).as_bytes());
        assert!(matches!(f.next(), Err(FrameError::Protocol(_))));
    }
}
