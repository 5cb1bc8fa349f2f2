//! The capture core: every decision of the capture loop, as a pure state machine with the clock
//! passed in. The loop in `capture/session.rs` owns the socket, the log and the timers; it feeds
//! the core what happened ([`Event`]) and carries out what the core answers ([`Action`]). No
//! I/O here, so each rule below has a unit test that runs in microseconds.
//!
//! The rules:
//! - **Acknowledged means durable.** `REPLCONF ACK n` is only ever emitted for an `n` the log
//!   reported durable ([`Event::Durable`]); a GETACK is answered once the fsync after it is done.
//!   The core never acks on a timer alone.
//! - **The window is evidence, never hope** (DESIGN.md). The agent can vouch for the source at
//!   instant `s` when the source's own `master_repl_offset`, polled at `s` on a second
//!   connection, is no further than what the agent has received ([`Event::Polled`]: the poll is
//!   kept until the stream reaches its offset, so a busy link whose bytes are still in flight
//!   gives evidence a few ms late rather than never). A source that refuses INFO falls back to
//!   link bytes ([`Event::PollRefused`]): then a read is evidence when not catching up.
//!   Heartbeat blocks and seals are stamped with the last evidence, so a silent link stops the
//!   window's end instead of stretching it.
//! - **Uncertain intervals.** From the last evidence before a silence, a reconnect, a restart or
//!   a full resync until the first evidence after it, a record's arrival time does not say when
//!   the source made it: those records are flagged catch-up, and when evidence returns the
//!   interval is handed to the log to store ([`Action::Uncertain`]) if any record arrived in it.
//!   A session always starts inside one; mid-stream, one opens once evidence is older than
//!   `stale_after_ms`.
//! - Spool back-pressure pauses reading (a chosen silence, not a dead link), and a link silent
//!   for longer than the replication timeout is dead.

use std::collections::VecDeque;

/// Tunables of the decisions, in ms.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// An idle tail gets an empty block this often (when evidence moved), keeping the window's
    /// end current.
    pub heartbeat_ms: u64,
    /// The durable offset is acked at least this often, changed or not (the primary counts a
    /// replica silent for `repl-timeout` as dead).
    pub ack_every_ms: u64,
    /// No byte for this long (while not paused): the link is dead.
    pub link_timeout_ms: u64,
    /// Evidence older than this opens an uncertain interval mid-stream. Polls come every 100 ms,
    /// so 1 s is ten missed polls: a loaded source or agent lags less, a silent link more.
    pub stale_after_ms: u64,
    /// With link bytes as the only evidence, an idle primary still PINGs its replicas every
    /// `repl-ping-replica-period` (10 s): a shorter staleness would call every idle pause a
    /// silence.
    pub stale_after_link_only_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            heartbeat_ms: 1000,
            ack_every_ms: 1000,
            link_timeout_ms: 60_000,
            stale_after_ms: 1000,
            stale_after_link_only_ms: 12_000,
        }
    }
}

/// A time range in which restore by time is not exact, and the offsets around it (which
/// `--at-offset` still restores exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// The last instant with evidence before the interval, and what had been received then.
    pub from_ms: u64,
    pub from_offset: u64,
    /// The first instant with evidence after it, and what had been received then.
    pub to_ms: u64,
    pub to_offset: u64,
    /// Records that arrived inside it (flagged catch-up in the log).
    pub records: u64,
    pub cause: Cause,
}

/// Why an interval opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The link went quiet while the source went on (a partition, a stalled proxy) or the agent
    /// fell behind.
    Silence,
    /// A new link: after a disconnect, a restart of the agent, or a full resync (the writes made
    /// during the snapshot transfer arrive after it).
    Reconnect,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Silence => "silence",
            Cause::Reconnect => "reconnect",
        }
    }
}

/// What happened, as the loop saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// A read from the link of `bytes` bytes; after framing, the stream stands at `offset`.
    Read { bytes: usize, offset: u64 },
    /// A `REPLCONF GETACK` was read; the primary wants the offset before it.
    GetAck { offset: u64 },
    /// The INFO poll sent at `sent_ms` says the source's `master_repl_offset` was `offset`.
    Polled { sent_ms: u64, offset: u64 },
    /// The source refuses INFO (an ACL without +info, a renamed command).
    PollRefused,
    /// The log made everything up to `offset` durable (answer to [`Action::MakeDurable`]).
    Durable { offset: u64 },
    /// The flush timer (every ~100 ms).
    Tick,
    /// The spool's fill against its limit, with a remote store.
    SpoolFill(f64),
}

/// What the loop must do, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Write what is pending (an empty heartbeat block when `heartbeat` and nothing is), stamped
    /// as covered through `covered_ms`, fsync, and answer with [`Event::Durable`].
    MakeDurable {
        covered_ms: u64,
        heartbeat: bool,
    },
    /// Send `REPLCONF ACK offset`.
    Ack(u64),
    /// Store this closed interval with the log.
    Uncertain(Interval),
    /// Stop reading from the link (spool full) / read again.
    Pause,
    Resume,
    /// Warn that the spool is this full (rate-limited here).
    SpoolWarning(f64),
    /// The link has been silent past the replication timeout: drop it and reconnect.
    LinkDead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Polling,
    LinkOnly,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    from_ms: u64,
    from_offset: u64,
    records: u64,
    cause: Cause,
}

/// The core's state. Invariants: `acked <= durable <= received`; `evidence_ms` never goes back.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    mode: Mode,
    /// End offset of the last whole record framed, and of the last one the log made durable.
    received: u64,
    durable: u64,
    acked: u64,
    last_ack_ms: u64,
    /// A GETACK waiting for the fsync that covers it.
    getack: Option<u64>,
    last_read_ms: u64,
    /// When `received` last moved.
    received_at_ms: u64,
    /// When this link's session began: polls asked before it cannot end its interval.
    started_ms: u64,
    /// Evidence: at `evidence_ms` the source had made nothing beyond `evidence_offset`.
    evidence_ms: u64,
    evidence_offset: u64,
    /// The evidence stamped on the last block written (a heartbeat only repeats it if it moved).
    stamped_ms: u64,
    last_block_ms: u64,
    /// Polls whose offset the stream has not reached yet, oldest first.
    polls: VecDeque<(u64, u64)>,
    open: Option<Open>,
    paused: bool,
    last_spool_warning_ms: Option<u64>,
}

/// The flush timer: a record waits at most this long for its fsync (DESIGN: ≤ 100 ms).
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Polls kept waiting for the stream: at 10 a second, 6 s of a lagging link. Older ones are
/// dropped, which only delays evidence.
const MAX_POLLS: usize = 64;

impl Core {
    /// A new link, synced at `offset` (the durable end of the log, or a new base's offset), at
    /// `now`. `evidence_ms` is the last evidence the log holds (the covered-through time of its
    /// last block, or the instant a full resync was answered): until the first evidence on this
    /// link the agent cannot vouch for the source, so the session opens inside an interval.
    pub fn new(cfg: CoreConfig, offset: u64, evidence_ms: u64, now: u64) -> Core {
        Core {
            cfg,
            mode: Mode::Polling,
            received: offset,
            durable: offset,
            acked: 0,
            last_ack_ms: 0,
            getack: None,
            last_read_ms: now,
            received_at_ms: now,
            started_ms: now,
            evidence_ms,
            evidence_offset: offset,
            stamped_ms: evidence_ms,
            last_block_ms: now,
            polls: VecDeque::new(),
            open: Some(Open {
                from_ms: evidence_ms,
                from_offset: offset,
                records: 0,
                cause: Cause::Reconnect,
            }),
            paused: false,
            last_spool_warning_ms: None,
        }
    }

    /// Carry the evidence mode over from an earlier link (a source that refused INFO once
    /// refuses it again; asking is harmless but the fallback must hold from the start).
    pub fn with_link_only(mut self, link_only: bool) -> Core {
        if link_only {
            self.mode = Mode::LinkOnly;
        }
        self
    }

    /// The first ACK of a session, right after the sync: diskless primaries send nothing until
    /// it comes (notes §1.3), and it can only name what is durable.
    pub fn first_ack(&mut self, now: u64) -> Action {
        self.acked = self.durable;
        self.last_ack_ms = now;
        Action::Ack(self.durable)
    }

    pub fn evidence_ms(&self) -> u64 {
        self.evidence_ms
    }

    pub fn durable(&self) -> u64 {
        self.durable
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn link_timeout_secs(&self) -> u64 {
        self.cfg.link_timeout_ms / 1000
    }

    pub fn link_only(&self) -> bool {
        self.mode == Mode::LinkOnly
    }

    /// Inside an uncertain interval: records appended now get the catch-up flag.
    pub fn uncertain(&self) -> bool {
        self.open.is_some()
    }

    /// A record was appended to the log while [`uncertain`](Self::uncertain).
    pub fn counted(&mut self) {
        if let Some(o) = self.open.as_mut() {
            o.records += 1;
        }
    }

    pub fn on(&mut self, event: Event, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Read { bytes, offset } => {
                self.last_read_ms = now;
                if offset > self.received {
                    self.received = offset;
                    self.received_at_ms = now;
                }
                if self.mode == Mode::LinkOnly {
                    // Without the source's own offset, a short read is the best sign that the
                    // agent has caught up (a backlog burst arrives in full reads).
                    if self.open.is_none() || bytes < 16 * 1024 {
                        self.evidence(now, Some(now), now, &mut out);
                    }
                } else {
                    self.settle(now, true, &mut out);
                }
            }
            Event::GetAck { offset } => {
                self.getack = Some(offset);
                out.push(self.make_durable(false, now));
            }
            Event::Polled { sent_ms, offset } => {
                if self.mode == Mode::Polling {
                    // Polls answer in order; one from before this link (or the clock stepping
                    // back) must not vouch for it.
                    if self
                        .polls
                        .back()
                        .is_none_or(|&(s, o)| sent_ms >= s && offset >= o)
                    {
                        if self.polls.len() == MAX_POLLS {
                            self.polls.pop_front();
                        }
                        self.polls.push_back((sent_ms, offset));
                    }
                    self.settle(now, false, &mut out);
                }
            }
            Event::PollRefused => {
                self.mode = Mode::LinkOnly;
                self.polls.clear();
            }
            Event::Durable { offset } => {
                self.durable = self.durable.max(offset.min(self.received));
                if let Some(g) = self.getack {
                    if g <= self.durable {
                        self.getack = None;
                        self.acked = g.max(self.acked);
                        self.last_ack_ms = now;
                        out.push(Action::Ack(g));
                    }
                }
                if self.durable != self.acked
                    || now.saturating_sub(self.last_ack_ms) >= self.cfg.ack_every_ms
                {
                    self.acked = self.durable;
                    self.last_ack_ms = now;
                    out.push(Action::Ack(self.durable));
                }
            }
            Event::Tick => {
                if !self.paused && now.saturating_sub(self.last_read_ms) > self.cfg.link_timeout_ms
                {
                    out.push(Action::LinkDead);
                    return out;
                }
                let stale = match self.mode {
                    Mode::Polling => self.cfg.stale_after_ms,
                    Mode::LinkOnly => self.cfg.stale_after_link_only_ms,
                };
                if self.open.is_none() && now.saturating_sub(self.evidence_ms) > stale {
                    self.open = Some(Open {
                        from_ms: self.evidence_ms,
                        from_offset: self.evidence_offset,
                        records: 0,
                        cause: Cause::Silence,
                    });
                }
                let beat = self.evidence_ms > self.stamped_ms
                    && now.saturating_sub(self.last_block_ms) >= self.cfg.heartbeat_ms;
                if self.received > self.durable || beat {
                    out.push(self.make_durable(beat, now));
                } else if now.saturating_sub(self.last_ack_ms) >= self.cfg.ack_every_ms {
                    self.acked = self.durable;
                    self.last_ack_ms = now;
                    out.push(Action::Ack(self.durable));
                }
            }
            Event::SpoolFill(fill) => {
                let due = self
                    .last_spool_warning_ms
                    .is_none_or(|t| now.saturating_sub(t) >= 10_000);
                if fill >= 1.0 {
                    if !self.paused {
                        self.paused = true;
                        out.push(Action::Pause);
                    }
                    if due {
                        out.push(Action::SpoolWarning(fill));
                        self.last_spool_warning_ms = Some(now);
                    }
                } else {
                    if self.paused {
                        self.paused = false;
                        // A chosen silence is not a dead link.
                        self.last_read_ms = now;
                        out.push(Action::Resume);
                    } else if fill >= 0.8 && due {
                        out.push(Action::SpoolWarning(fill));
                        self.last_spool_warning_ms = Some(now);
                    }
                }
                if self.paused {
                    self.last_read_ms = now;
                }
            }
        }
        out
    }

    fn make_durable(&mut self, heartbeat: bool, now: u64) -> Action {
        self.stamped_ms = self.evidence_ms;
        self.last_block_ms = now;
        Action::MakeDurable {
            covered_ms: self.evidence_ms,
            heartbeat,
        }
    }

    /// Turns the polls the stream has caught up with into evidence.
    /// Turns the polls the stream has caught up with into evidence. `on_read`: the stream
    /// reached them just now (else they were answered after it had).
    fn settle(&mut self, now: u64, on_read: bool, out: &mut Vec<Action>) {
        let mut best = None;
        while let Some(&(sent, offset)) = self.polls.front() {
            if offset > self.received {
                break;
            }
            best = Some(sent);
            self.polls.pop_front();
        }
        let Some(sent) = best else { return };
        // When the stream held everything the poll saw: now, or (answered later) no later than
        // the read that last moved it.
        let reached = if on_read {
            now
        } else {
            self.received_at_ms.max(sent)
        };
        // An interval ends only at evidence that is fresh when reached: a poll sent early in a
        // backlog drain is reached long after, and writes made since are still on their way.
        // "Fresh" is the same tolerance as staleness (`stale_after_ms`): an instant is exact
        // when evidence within it surrounds it. A tighter bound made a loaded machine (a poll
        // answered late) keep intervals open long after the agent had caught up.
        let closes =
            sent >= self.started_ms && reached.saturating_sub(sent) <= self.cfg.stale_after_ms;
        self.evidence(sent, closes.then_some(reached), now, out);
    }

    /// Evidence at `at_ms`: the source had made nothing beyond what was received. With
    /// `close_at`, an open interval ends then (when the stream had reached the poll's offset:
    /// records arriving between the poll and that moment may have been made before the poll).
    fn evidence(&mut self, at_ms: u64, close_at: Option<u64>, now: u64, out: &mut Vec<Action>) {
        if at_ms < self.evidence_ms {
            return;
        }
        if let Some(end) = close_at {
            if let Some(o) = self.open.take() {
                if o.records > 0 {
                    // The catch-up block is written before the interval is stored, stamped with
                    // the closing evidence: the log itself then shows where the interval ends.
                    self.evidence_ms = self.evidence_ms.max(end);
                    out.push(self.make_durable(false, now));
                    out.push(Action::Uncertain(Interval {
                        from_ms: o.from_ms,
                        from_offset: o.from_offset,
                        to_ms: end,
                        to_offset: self.received,
                        records: o.records,
                        cause: o.cause,
                    }));
                }
            }
        }
        if self.open.is_none() {
            self.evidence_ms = self.evidence_ms.max(at_ms);
            self.evidence_offset = self.received;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_000_000;

    /// The core decides and nothing else: no file, socket, clock, task or log, so that every
    /// rule keeps a unit test that runs in microseconds (the loop in `session.rs` does the I/O).
    #[test]
    fn the_core_does_no_io() {
        let src = include_str!("core.rs");
        let code = src.split("#[cfg(test)]").next().unwrap_or(src);
        for banned in [
            "std::fs",
            "std::net",
            "std::io",
            "std::thread",
            "Instant",
            "SystemTime",
            "tokio",
            "tracing",
            "now_ms()",
            "crate::",
            "super::",
            "unsafe",
        ] {
            assert!(
                !code.contains(banned),
                "capture/core.rs must stay pure but names {banned}"
            );
        }
    }

    fn core(offset: u64) -> Core {
        Core::new(CoreConfig::default(), offset, T, T)
    }

    /// A core past its session start: the first poll found it caught up.
    fn live(offset: u64) -> Core {
        let mut c = core(offset);
        c.on(
            Event::Polled {
                sent_ms: T + 10,
                offset,
            },
            T + 11,
        );
        assert!(!c.uncertain());
        c
    }

    fn acks(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Ack(n) => Some(*n),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn nothing_is_acked_before_the_log_says_it_is_durable() {
        let mut c = live(100);
        let a = c.on(
            Event::Read {
                bytes: 50,
                offset: 150,
            },
            T + 20,
        );
        assert!(acks(&a).is_empty(), "{a:?}");
        // The tick asks for an fsync, and acks nothing itself.
        let a = c.on(Event::Tick, T + 100);
        assert_eq!(
            a,
            vec![Action::MakeDurable {
                covered_ms: T + 10,
                heartbeat: false
            }]
        );
        // Even a second later: the old durable offset, never the received one.
        let a = c.on(Event::Tick, T + 1200);
        assert!(acks(&a).iter().all(|&n| n <= 100), "{a:?}");
        let a = c.on(Event::Durable { offset: 150 }, T + 1201);
        assert_eq!(acks(&a), vec![150]);
    }

    #[test]
    fn the_log_cannot_report_more_durable_than_was_received() {
        let mut c = live(100);
        let a = c.on(Event::Durable { offset: 999 }, T + 20);
        assert!(acks(&a).iter().all(|&n| n <= 100), "{a:?}");
        assert_eq!(c.durable(), 100);
    }

    #[test]
    fn getack_is_answered_with_its_offset_only_after_the_fsync() {
        let mut c = live(100);
        c.on(
            Event::Read {
                bytes: 37,
                offset: 137,
            },
            T + 20,
        );
        let a = c.on(Event::GetAck { offset: 100 }, T + 20);
        assert_eq!(
            a,
            vec![Action::MakeDurable {
                covered_ms: T + 10,
                heartbeat: false
            }]
        );
        let a = c.on(Event::Durable { offset: 137 }, T + 21);
        assert_eq!(acks(&a), vec![100, 137]);
    }

    /// Feeds `event`, and carries out a MakeDurable as the loop would (everything received
    /// becomes durable); returns every action.
    fn run(c: &mut Core, event: Event, now: u64) -> Vec<Action> {
        let mut out = c.on(event, now);
        if out.iter().any(|a| matches!(a, Action::MakeDurable { .. })) {
            let received = c.received;
            out.extend(c.on(Event::Durable { offset: received }, now));
        }
        out
    }

    #[test]
    fn acks_repeat_every_second_while_idle() {
        let mut c = live(100);
        assert_eq!(
            acks(&run(&mut c, Event::Durable { offset: 100 }, T + 20)),
            vec![100]
        );
        assert!(acks(&run(&mut c, Event::Tick, T + 500)).is_empty());
        assert_eq!(acks(&run(&mut c, Event::Tick, T + 1100)), vec![100]);
        assert!(acks(&run(&mut c, Event::Tick, T + 1500)).is_empty());
        assert_eq!(acks(&run(&mut c, Event::Tick, T + 2200)), vec![100]);
    }

    #[test]
    fn heartbeats_follow_evidence_not_the_clock() {
        let mut c = live(100);
        // Evidence keeps coming: a heartbeat each second, stamped with it.
        c.on(
            Event::Polled {
                sent_ms: T + 900,
                offset: 100,
            },
            T + 901,
        );
        let a = c.on(Event::Tick, T + 1000);
        assert_eq!(
            a,
            vec![Action::MakeDurable {
                covered_ms: T + 900,
                heartbeat: true
            }]
        );
        // No evidence since (a silent link): no heartbeat, however long.
        for t in (1100..5000).step_by(100) {
            let a = c.on(Event::Tick, T + t);
            assert!(
                !a.iter().any(|x| matches!(
                    x,
                    Action::MakeDurable {
                        heartbeat: true,
                        ..
                    }
                )),
                "{t}: {a:?}"
            );
        }
    }

    #[test]
    fn a_silent_link_opens_an_interval_and_its_records_are_catch_up() {
        let mut c = live(100);
        // The source moves on (offset 300) while nothing arrives: no evidence.
        for t in (100..=1000).step_by(100) {
            c.on(
                Event::Polled {
                    sent_ms: T + t,
                    offset: 300,
                },
                T + t + 1,
            );
            c.on(Event::Tick, T + t + 2);
        }
        assert!(!c.uncertain(), "not yet stale at 1 s");
        c.on(Event::Tick, T + 1200);
        assert!(c.uncertain());
        // The link comes back: the buffered writes arrive, flagged (the loop appends a read's
        // records, counting them, before it reports the read).
        c.counted();
        c.on(
            Event::Read {
                bytes: 150,
                offset: 250,
            },
            T + 5000,
        );
        assert!(c.uncertain(), "250 < 300: still behind");
        c.counted();
        let a = c.on(
            Event::Read {
                bytes: 50,
                offset: 300,
            },
            T + 5001,
        );
        // The stream reached what the old polls saw, four seconds after they asked: writes
        // made since may still be on their way, so they are evidence of nothing new yet.
        assert!(a.is_empty() && c.uncertain(), "{a:?}");
        // A fresh poll the stream has already reached closes the interval, the catch-up block
        // written first.
        let a = c.on(
            Event::Polled {
                sent_ms: T + 5010,
                offset: 300,
            },
            T + 5011,
        );
        assert_eq!(
            a,
            vec![
                Action::MakeDurable {
                    covered_ms: T + 5010,
                    heartbeat: false
                },
                Action::Uncertain(Interval {
                    from_ms: T + 10,
                    from_offset: 100,
                    to_ms: T + 5010,
                    to_offset: 300,
                    records: 2,
                    cause: Cause::Silence,
                })
            ]
        );
        assert!(!c.uncertain());
    }

    #[test]
    fn a_quiet_spell_with_nothing_written_is_not_uncertain() {
        let mut c = live(100);
        // The poll connection hiccups for 3 s; the source wrote nothing.
        c.on(Event::Tick, T + 3000);
        assert!(c.uncertain());
        let a = c.on(
            Event::Polled {
                sent_ms: T + 3100,
                offset: 100,
            },
            T + 3101,
        );
        assert!(
            !a.iter().any(|x| matches!(x, Action::Uncertain(_))),
            "{a:?}"
        );
        assert!(!c.uncertain());
        assert_eq!(c.evidence_ms(), T + 3100);
    }

    #[test]
    fn a_busy_link_gives_evidence_once_the_stream_reaches_the_polled_offset() {
        let mut c = live(100);
        // Under load every poll is a little ahead of what has arrived.
        for i in 1..=20u64 {
            c.on(
                Event::Polled {
                    sent_ms: T + i * 100,
                    offset: 100 + i * 1000 + 500,
                },
                T + i * 100 + 1,
            );
            c.on(
                Event::Read {
                    bytes: 1000,
                    offset: 100 + (i + 1) * 1000,
                },
                T + i * 100 + 5,
            );
            c.on(Event::Tick, T + i * 100 + 6);
        }
        assert!(
            !c.uncertain(),
            "evidence lags by one poll, never goes stale"
        );
        assert_eq!(c.evidence_ms(), T + 2000);
    }

    #[test]
    fn a_reconnect_is_uncertain_until_the_first_evidence() {
        // Restarted at T+60 s; the log's last evidence is T.
        let mut c = Core::new(CoreConfig::default(), 500, T, T + 60_000);
        assert!(c.uncertain());
        assert_eq!(c.first_ack(T + 60_000), Action::Ack(500));
        c.on(
            Event::Polled {
                sent_ms: T + 60_010,
                offset: 900,
            },
            T + 60_011,
        );
        c.counted();
        let a = c.on(
            Event::Read {
                bytes: 64 * 1024,
                offset: 800,
            },
            T + 60_020,
        );
        assert!(a.is_empty() && c.uncertain(), "{a:?}");
        assert!(!c
            .on(Event::Tick, T + 60_100)
            .iter()
            .any(|x| matches!(x, Action::Uncertain(_))));
        c.counted();
        let a = c.on(
            Event::Read {
                bytes: 100,
                offset: 900,
            },
            T + 60_101,
        );
        let i = a
            .iter()
            .find_map(|x| match x {
                Action::Uncertain(i) => Some(*i),
                _ => None,
            })
            .expect("closed");
        assert_eq!(
            (
                i.from_ms,
                i.from_offset,
                i.to_ms,
                i.to_offset,
                i.records,
                i.cause
            ),
            (T, 500, T + 60_101, 900, 2, Cause::Reconnect)
        );
    }

    #[test]
    fn a_backlog_drain_in_link_only_mode_ends_at_the_first_short_read() {
        let mut c = Core::new(CoreConfig::default(), 0, T, T + 5000).with_link_only(true);
        c.counted();
        c.on(
            Event::Read {
                bytes: 64 * 1024,
                offset: 65536,
            },
            T + 5001,
        );
        assert!(c.uncertain());
        c.counted();
        let a = c.on(
            Event::Read {
                bytes: 100,
                offset: 65636,
            },
            T + 5002,
        );
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Uncertain(Interval {
                from_ms: T,
                to_ms,
                records: 2,
                ..
            }) if *to_ms == T + 5002
        )));
        // Idle pings every 10 s are not a silence in this mode.
        c.on(
            Event::Read {
                bytes: 14,
                offset: 65650,
            },
            T + 15_000,
        );
        c.on(Event::Tick, T + 25_000);
        assert!(!c.uncertain());
        c.on(Event::Tick, T + 27_100);
        assert!(c.uncertain());
    }

    #[test]
    fn polls_from_before_the_link_cannot_vouch_for_it() {
        let mut c = live(100);
        c.on(
            Event::Polled {
                sent_ms: T + 500,
                offset: 100,
            },
            T + 501,
        );
        // An answer that claims an earlier time is ignored.
        c.on(
            Event::Polled {
                sent_ms: T + 400,
                offset: 100,
            },
            T + 502,
        );
        assert_eq!(c.evidence_ms(), T + 500);
    }

    #[test]
    fn a_refused_poll_falls_back_to_link_bytes() {
        let mut c = core(100);
        c.on(Event::PollRefused, T + 1);
        assert!(c.link_only());
        let a = c.on(
            Event::Read {
                bytes: 10,
                offset: 110,
            },
            T + 2,
        );
        assert!(!c.uncertain());
        assert!(a.is_empty());
        assert_eq!(c.evidence_ms(), T + 2);
    }

    #[test]
    fn a_dead_link_is_declared_after_the_timeout_but_not_while_paused() {
        let mut c = live(100);
        assert!(!c.on(Event::Tick, T + 59_000).contains(&Action::LinkDead));
        assert!(c.on(Event::Tick, T + 61_000).contains(&Action::LinkDead));
        let mut c = live(100);
        assert_eq!(
            c.on(Event::SpoolFill(1.0), T + 100),
            vec![Action::Pause, Action::SpoolWarning(1.0)]
        );
        assert!(!c.on(Event::Tick, T + 70_000).contains(&Action::LinkDead));
        c.on(Event::SpoolFill(1.0), T + 70_001);
        assert_eq!(
            c.on(Event::SpoolFill(0.5), T + 80_000),
            vec![Action::Resume]
        );
        assert!(!c.on(Event::Tick, T + 80_100).contains(&Action::LinkDead));
    }

    #[test]
    fn spool_warnings_are_rate_limited() {
        let mut c = live(100);
        assert_eq!(
            c.on(Event::SpoolFill(0.85), T),
            vec![Action::SpoolWarning(0.85)]
        );
        assert!(c.on(Event::SpoolFill(0.9), T + 5000).is_empty());
        assert_eq!(
            c.on(Event::SpoolFill(0.9), T + 10_001),
            vec![Action::SpoolWarning(0.9)]
        );
    }
}
