//! A record's arguments, read incrementally from its RESP bytes: a whole record in one call, or
//! a big record's fragments as they come. Arguments longer than [`MAX_ARG`] are not kept (a
//! placeholder stands in): they are values, and holding them would defeat the reader's bounded
//! memory. Rejected: parsing only whole records, which would leave every record stored in
//! fragments (a big MSET, say) without its later keys.

/// Longest argument kept; a key longer than this makes the record's keys unknown.
pub const MAX_ARG: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the `*N` line.
    Count,
    /// Reading a `$L` line.
    Len,
    /// Inside an argument's bytes; this many left (then CRLF).
    Data(usize),
    /// The CRLF after an argument: this many bytes of it left.
    Crlf(u8),
    Done,
    Bad,
}

/// Feed it bytes with [`ArgScanner::feed`]; once [`ArgScanner::done`], `args` holds the command.
#[derive(Debug, Clone)]
pub struct ArgScanner {
    state: State,
    line: Vec<u8>,
    left: u64,
    /// Each argument, or None when it was longer than [`MAX_ARG`].
    pub args: Vec<Option<Vec<u8>>>,
    cur: Option<Vec<u8>>,
}

impl Default for ArgScanner {
    fn default() -> Self {
        ArgScanner {
            state: State::Count,
            line: Vec::new(),
            left: 0,
            args: Vec::new(),
            cur: None,
        }
    }
}

impl ArgScanner {
    /// The arguments of one whole record.
    pub fn whole(resp: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
        let mut s = ArgScanner::default();
        s.feed(resp);
        s.done().then_some(s.args)
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Not a RESP array of bulk strings (the stream never carries anything else; such a
    /// record's keys are unknown).
    pub fn bad(&self) -> bool {
        self.state == State::Bad
    }

    pub fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            match self.state {
                State::Done | State::Bad => return,
                State::Count | State::Len => {
                    let Some(nl) = b.iter().position(|&c| c == b'\n') else {
                        self.line.extend_from_slice(b);
                        if self.line.len() > 32 {
                            self.state = State::Bad;
                        }
                        return;
                    };
                    self.line.extend_from_slice(&b[..nl]);
                    b = &b[nl + 1..];
                    self.end_line();
                }
                State::Data(n) => {
                    let take = n.min(b.len());
                    if let Some(cur) = self.cur.as_mut() {
                        cur.extend_from_slice(&b[..take]);
                    }
                    b = &b[take..];
                    self.state = if take == n {
                        State::Crlf(2)
                    } else {
                        State::Data(n - take)
                    };
                }
                State::Crlf(n) => {
                    b = &b[1..];
                    if n > 1 {
                        self.state = State::Crlf(n - 1);
                    } else {
                        self.args.push(self.cur.take());
                        self.left -= 1;
                        self.state = if self.left == 0 {
                            State::Done
                        } else {
                            State::Len
                        };
                    }
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let (mark, want) = match self.state {
            State::Count => (b'*', true),
            _ => (b'$', false),
        };
        let n = match line.split_first() {
            Some((&m, digits)) if m == mark => std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<u64>().ok()),
            _ => None,
        };
        self.state = match (n, want) {
            (None, _) | (Some(0), true) => State::Bad,
            (Some(n), true) => {
                self.left = n;
                State::Len
            }
            (Some(n), false) => {
                let n = n as usize;
                self.cur = (n <= MAX_ARG).then(|| Vec::with_capacity(n.min(4096)));
                if n == 0 {
                    State::Crlf(2)
                } else {
                    State::Data(n)
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashback_format::resp::encode_command;

    #[test]
    fn whole_and_in_pieces() {
        let cmd = encode_command(&["MSET", "k1", "v", "k2", ""]);
        let want: Vec<Option<Vec<u8>>> = ["MSET", "k1", "v", "k2", ""]
            .iter()
            .map(|s| Some(s.as_bytes().to_vec()))
            .collect();
        assert_eq!(ArgScanner::whole(&cmd), Some(want.clone()));
        for split in 1..cmd.len() {
            let mut s = ArgScanner::default();
            s.feed(&cmd[..split]);
            assert!(!s.done());
            s.feed(&cmd[split..]);
            assert!(s.done(), "split at {split}");
            assert_eq!(s.args, want);
        }
        let big = "x".repeat(MAX_ARG + 1);
        let got = ArgScanner::whole(&encode_command(&["SET", "k", &big])).unwrap();
        assert_eq!(got[1].as_deref(), Some(&b"k"[..]));
        assert_eq!(got[2], None);
        assert_eq!(ArgScanner::whole(b"+OK\r\n"), None);
        assert_eq!(ArgScanner::whole(b"*2\r\n$3\r\nGET\r\n"), None);
    }
}
