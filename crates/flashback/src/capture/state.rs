//! The capture state machine: pure, no sockets, no files, time passed in. It turns decoded
//! replication events into records and decisions, so the protocol's edge cases (SELECT not
//! re-sent after +CONTINUE, SELECT inside MULTI on 7.2+, GETACK offsets, a transaction cut by a
//! crash) are unit-tested in milliseconds. The driver in `capture/session.rs` does the I/O.

use crate::replica::PsyncReply;
use bytes::Bytes;
use flashback_format::segment::{Record, RecordMeta};

/// Where the stream stands. Invariant: `offset` is the end offset of the last record handed
/// out, and `db`/`in_multi` are the state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub replid: String,
    pub offset: u64,
    pub db: u32,
    pub in_multi: bool,
    /// Arrival times never decrease, even if the wall clock steps back (NTP): restore by time
    /// relies on the log being sorted by time.
    pub last_time_ms: u64,
}

/// What the driver must do besides appending the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    None,
    /// `REPLCONF GETACK`: make everything durable, then ACK this offset (the one before the
    /// GETACK itself, as redis-server's replicas answer, notes §1.4).
    AckNow(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("SELECT with a bad database index {0:?} in the replication stream")]
    BadSelect(String),
}

impl StreamState {
    pub fn new(replid: String, offset: u64, db: u32, in_multi: bool, last_time_ms: u64) -> Self {
        StreamState {
            replid,
            offset,
            db,
            in_multi,
            last_time_ms,
        }
    }

    /// One command of the stream, as raw bytes and argv, arriving at `now_ms`.
    pub fn on_command(
        &mut self,
        raw: &[u8],
        argv: &[Bytes],
        now_ms: u64,
    ) -> Result<(Record, Reply), StateError> {
        let (m, reply) = self.advance(argv, raw.len() as u64, now_ms)?;
        let rec = Record {
            end_offset: m.end_offset,
            time_ms: m.time_ms,
            db: m.db,
            boundary: m.boundary,
            resp: raw.to_vec(),
        };
        Ok((rec, reply))
    }

    /// A command too big to buffer, once its last part arrived at `now_ms`: `len` bytes, of
    /// which `head` holds the leading arguments (see `replica::BigEnd`). Moves the state as
    /// [`on_command`](Self::on_command) does for the same command; only argv[0] and argv[1]
    /// ever matter.
    pub fn on_streamed_command(
        &mut self,
        head: &[Bytes],
        len: u64,
        now_ms: u64,
    ) -> Result<(RecordMeta, Reply), StateError> {
        self.advance(head, len, now_ms)
    }

    fn advance(
        &mut self,
        argv: &[Bytes],
        len: u64,
        now_ms: u64,
    ) -> Result<(RecordMeta, Reply), StateError> {
        let name = argv.first().map(|a| a.as_ref()).unwrap_or_default();
        let mut reply = Reply::None;
        if name.eq_ignore_ascii_case(b"SELECT") {
            let arg = argv
                .get(1)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default();
            self.db = arg.parse().map_err(|_| StateError::BadSelect(arg))?;
        } else if name.eq_ignore_ascii_case(b"MULTI") {
            self.in_multi = true;
        } else if name.eq_ignore_ascii_case(b"EXEC") || name.eq_ignore_ascii_case(b"DISCARD") {
            self.in_multi = false;
        } else if name.eq_ignore_ascii_case(b"REPLCONF")
            && argv
                .get(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK"))
        {
            reply = Reply::AckNow(self.offset);
        }
        self.last_time_ms = self.last_time_ms.max(now_ms);
        self.offset += len;
        let meta = RecordMeta {
            end_offset: self.offset,
            time_ms: self.last_time_ms,
            db: self.db,
            boundary: !self.in_multi,
        };
        Ok((meta, reply))
    }
}

/// What the store says the agent had captured last: enough to ask for a partial resync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub generation: String,
    pub state: StreamState,
    /// The last time the log is known complete (for naming a gap).
    pub covered_through_ms: u64,
}

/// Why history has a hole: stored in the new generation's manifest and shown by `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapReason {
    /// Nothing was captured from this source before.
    FirstCapture,
    /// The primary answered FULLRESYNC to our PSYNC: its backlog no longer holds our offset,
    /// or its history changed in a way replid2 does not bridge.
    FullResync {
        asked_replid: String,
        asked_offset: u64,
        new_replid: String,
        new_offset: u64,
        since_ms: u64,
    },
    /// A full resync (`resync`) right after the agent found records it had acknowledged
    /// damaged on disk (`file`, byte `byte`), so the primary could not send them again.
    DamagedAndResynced {
        file: String,
        byte: u64,
        from_offset: u64,
        to_offset: u64,
        resync: Box<GapReason>,
    },
}

impl std::fmt::Display for GapReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GapReason::FirstCapture => write!(f, "first capture of this source"),
            GapReason::FullResync {
                asked_replid,
                asked_offset,
                new_replid,
                new_offset,
                since_ms,
            } => {
                let cause = if asked_replid == new_replid {
                    "its backlog no longer holds that offset (the agent was away too long, or repl-backlog-size is too small)"
                } else {
                    "its history changed (a restart without a saved RDB, a failover the backlog cannot bridge, or another primary)"
                };
                write!(
                    f,
                    "gap: the primary could not continue from offset {asked_offset} of replid {asked_replid}: {cause}; \
                     it sent a full snapshot at offset {new_offset} of replid {new_replid}; writes after {} and before this \
                     snapshot are not restorable",
                    crate::timespec::format_ms(*since_ms)
                )
            }
            GapReason::DamagedAndResynced {
                file,
                byte,
                from_offset,
                to_offset,
                resync,
            } => write!(
                f,
                "LOST: the records at replication offsets {from_offset}..{to_offset} were acknowledged, then damaged on disk \
                 ({file}, byte {byte}), and the primary could not send them again; {resync}"
            ),
        }
    }
}

/// Continue the current generation, or start a new one: decided in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuity {
    /// +CONTINUE: the same history; `new_replid` is set when the primary's id changed (a
    /// failover or a restart bridged by replid2), which starts a new segment, not a generation.
    Continue {
        new_replid: Option<String>,
    },
    NewGeneration(GapReason),
}

pub fn continuity(saved: Option<&Resume>, reply: &PsyncReply) -> Continuity {
    match (saved, reply) {
        (Some(r), PsyncReply::Continue { replid }) => {
            let new_replid = replid.as_ref().filter(|id| **id != r.state.replid).cloned();
            Continuity::Continue { new_replid }
        }
        (Some(r), PsyncReply::Sync) => Continuity::NewGeneration(GapReason::FullResync {
            asked_replid: r.state.replid.clone(),
            asked_offset: r.state.offset + 1,
            new_replid: String::from("(unknown)"),
            new_offset: 0,
            since_ms: r.covered_through_ms,
        }),
        (Some(r), PsyncReply::FullResync { replid, offset }) => {
            Continuity::NewGeneration(GapReason::FullResync {
                asked_replid: r.state.replid.clone(),
                asked_offset: r.state.offset + 1,
                new_replid: replid.clone(),
                new_offset: *offset,
                since_ms: r.covered_through_ms,
            })
        }
        // +CONTINUE to `PSYNC ? -1` cannot happen; treat it like a first capture so the caller
        // fails on the missing snapshot rather than inventing history.
        (None, _) => Continuity::NewGeneration(GapReason::FirstCapture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashback_format::resp::encode_command;

    fn feed(s: &mut StreamState, args: &[&str], now: u64) -> (Record, Reply) {
        let raw = encode_command(args);
        let argv: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        s.on_command(&raw, &argv, now).unwrap()
    }

    #[test]
    fn offsets_db_and_transactions() {
        let mut s = StreamState::new("a".repeat(40), 14, 0, false, 0);
        let (r, _) = feed(&mut s, &["SELECT", "3"], 100);
        assert_eq!((r.end_offset, r.db, r.boundary), (14 + 23, 3, true));
        // 7.2+: SELECT inside MULTI.
        let (r, _) = feed(&mut s, &["MULTI"], 101);
        assert!(!r.boundary);
        let (r, _) = feed(&mut s, &["select", "5"], 101);
        assert_eq!((r.db, r.boundary), (5, false));
        let (r, _) = feed(&mut s, &["set", "k", "v"], 102);
        assert!(!r.boundary);
        let (r, _) = feed(&mut s, &["EXEC"], 102);
        assert!(r.boundary);
        assert_eq!(s.db, 5);
        assert_eq!(s.offset, r.end_offset);
    }

    #[test]
    fn getack_acks_the_offset_before_itself() {
        let mut s = StreamState::new("a".repeat(40), 151, 0, false, 0);
        let (r, reply) = feed(&mut s, &["REPLCONF", "GETACK", "*"], 5);
        assert_eq!(reply, Reply::AckNow(151));
        assert_eq!(r.end_offset, 151 + 37);
    }

    #[test]
    fn time_never_goes_back() {
        let mut s = StreamState::new("a".repeat(40), 0, 0, false, 1000);
        let (r, _) = feed(&mut s, &["ping"], 900);
        assert_eq!(r.time_ms, 1000);
        let (r, _) = feed(&mut s, &["ping"], 1200);
        assert_eq!(r.time_ms, 1200);
    }

    #[test]
    fn bad_select_is_an_error_not_a_guess() {
        let mut s = StreamState::new("a".repeat(40), 0, 0, false, 0);
        let raw = encode_command(&["SELECT", "x"]);
        assert!(s
            .on_command(&raw, &[Bytes::from("SELECT"), Bytes::from("x")], 1)
            .is_err());
    }

    #[test]
    fn a_streamed_command_moves_the_state_as_a_whole_one() {
        let cmds: [&[&str]; 7] = [
            &["SET", "k", "v"],
            &["SELECT", "4"],
            &["MULTI"],
            &["select", "2"],
            &["REPLCONF", "GETACK", "*"],
            &["exec"],
            &["APPEND", "k", "xyz"],
        ];
        let mut whole = StreamState::new("a".repeat(40), 10, 0, false, 0);
        let mut streamed = whole.clone();
        for (i, args) in cmds.iter().enumerate() {
            let (rec, r1) = feed(&mut whole, args, 100 + i as u64);
            // The head holds at most the first two arguments.
            let head: Vec<Bytes> = args
                .iter()
                .take(2)
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect();
            let (meta, r2) = streamed
                .on_streamed_command(&head, rec.resp.len() as u64, 100 + i as u64)
                .unwrap();
            assert_eq!(
                (meta.end_offset, meta.time_ms, meta.db, meta.boundary, r2),
                (rec.end_offset, rec.time_ms, rec.db, rec.boundary, r1),
                "{args:?}"
            );
            assert_eq!(streamed, whole);
        }
        // A SELECT whose argument was too long to keep is refused, as its whole form would be.
        assert!(streamed
            .on_streamed_command(&[Bytes::from("SELECT")], 9 << 20, 200)
            .is_err());
    }

    #[test]
    fn continuity_decisions() {
        let saved = Resume {
            generation: "g".into(),
            state: StreamState::new("a".repeat(40), 500, 2, false, 9),
            covered_through_ms: 9,
        };
        let same = PsyncReply::Continue {
            replid: Some("a".repeat(40)),
        };
        assert_eq!(
            continuity(Some(&saved), &same),
            Continuity::Continue { new_replid: None }
        );
        let plain = PsyncReply::Continue { replid: None };
        assert_eq!(
            continuity(Some(&saved), &plain),
            Continuity::Continue { new_replid: None }
        );
        let failover = PsyncReply::Continue {
            replid: Some("b".repeat(40)),
        };
        assert_eq!(
            continuity(Some(&saved), &failover),
            Continuity::Continue {
                new_replid: Some("b".repeat(40))
            }
        );
        let full = PsyncReply::FullResync {
            replid: "a".repeat(40),
            offset: 9000,
        };
        match continuity(Some(&saved), &full) {
            Continuity::NewGeneration(
                g @ GapReason::FullResync {
                    asked_offset: 501,
                    new_offset: 9000,
                    ..
                },
            ) => {
                assert!(g.to_string().contains("backlog no longer holds"), "{g}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            continuity(None, &full),
            Continuity::NewGeneration(GapReason::FirstCapture)
        );
    }
}
