//! Progress of a long operation (a restore, a verify drill), phase by phase: what the library
//! reports and the binary shows (`cli/progress.rs`: a live line on a terminal, plain lines
//! otherwise), and the time of every phase at the end: the recovery time, measured per phase.
//!
//! The library only records: a `Progress` is a cheap shared handle (one mutex, touched once per
//! block or poll, never per record) that the code doing the work updates and anyone may read.
//! Rendering lives in the binary, because only the binary knows whether stderr is a terminal and
//! how loud to be; the rejected alternative, a callback per update, would put terminal logic (and
//! its rate limiting) into every phase's loop.

use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The phases of a restore and of `verify`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Listing the store and choosing the base, segments and cut.
    Plan,
    /// `verify`: reading every stored object back and checking it.
    Check,
    /// Streaming the base from the store to the private server.
    Fetch,
    /// The private server loading the base.
    Load,
    /// Replaying the log since the base.
    Replay,
    /// Moving the result out: keys to a live target, or the RDB file written.
    Copy,
    /// Checking the result (`--verify` after `--to`; the drill's key count, sample and digest).
    Verify,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Plan => "plan",
            Phase::Check => "check",
            Phase::Fetch => "fetch",
            Phase::Load => "load",
            Phase::Replay => "replay",
            Phase::Copy => "copy",
            Phase::Verify => "verify",
        }
    }
}

/// What `done`/`total` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Keys,
}

/// How long one finished phase took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PhaseTime {
    pub phase: Phase,
    #[serde(rename = "ms")]
    #[serde(serialize_with = "as_ms")]
    pub elapsed: Duration,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// The phase running now, as last reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Current {
    pub phase: Phase,
    pub unit: Unit,
    pub done: u64,
    /// None while the amount of work is not known.
    pub total: Option<u64>,
    pub elapsed: Duration,
}

#[derive(Debug)]
struct State {
    started: Instant,
    current: Option<(Phase, Unit, u64, Option<u64>, Instant)>,
    finished: Vec<PhaseTime>,
}

/// A shared, cloneable progress record. Every clone sees the same phases.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Mutex<State>>);

impl Default for Progress {
    fn default() -> Self {
        Progress(Arc::new(Mutex::new(State {
            started: Instant::now(),
            current: None,
            finished: Vec::new(),
        })))
    }
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding this lock leaves numbers, not invariants: keep going.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `phase`, ending the one before it (a phase never overlaps the next).
    pub fn begin(&self, phase: Phase, unit: Unit, total: Option<u64>) {
        let mut s = self.lock();
        close(&mut s);
        s.current = Some((phase, unit, 0, total, Instant::now()));
    }

    /// Sets the amount done in the current phase.
    pub fn set(&self, done: u64) {
        if let Some(c) = &mut self.lock().current {
            c.2 = done;
        }
    }

    /// Sets the amount done if `phase` is the one running: for a watcher that runs beside the
    /// work and may report late, after the phase it watched has ended.
    pub fn set_in(&self, phase: Phase, done: u64) {
        if let Some(c) = &mut self.lock().current {
            if c.0 == phase {
                c.2 = done;
            }
        }
    }

    /// Starts `to` if `from` is the phase running (see [`Progress::set_in`]); false otherwise.
    pub fn advance(&self, from: Phase, to: Phase, unit: Unit, total: Option<u64>) -> bool {
        let mut s = self.lock();
        if s.current.map(|c| c.0) != Some(from) {
            return false;
        }
        close(&mut s);
        s.current = Some((to, unit, 0, total, Instant::now()));
        true
    }

    /// Adds to the amount done in the current phase.
    pub fn add(&self, n: u64) {
        if let Some(c) = &mut self.lock().current {
            c.2 = c.2.saturating_add(n);
        }
    }

    /// Sets (or corrects) the current phase's total once it is known.
    pub fn set_total(&self, total: u64) {
        if let Some(c) = &mut self.lock().current {
            c.3 = Some(total);
        }
    }

    /// Ends the current phase, if one runs, recording its time.
    pub fn end(&self) {
        close(&mut self.lock());
    }

    pub fn current(&self) -> Option<Current> {
        self.lock()
            .current
            .map(|(phase, unit, done, total, at)| Current {
                phase,
                unit,
                done,
                total,
                elapsed: at.elapsed(),
            })
    }

    /// The finished phases, in order (a phase that ran twice, e.g. a retried drill, twice).
    pub fn phases(&self) -> Vec<PhaseTime> {
        self.lock().finished.clone()
    }

    /// Time since this record was created: the whole operation so far.
    pub fn elapsed(&self) -> Duration {
        self.lock().started.elapsed()
    }
}

fn close(s: &mut State) {
    if let Some((phase, _, _, _, at)) = s.current.take() {
        s.finished.push(PhaseTime {
            phase,
            elapsed: at.elapsed(),
        });
    }
}

/// `fetch 0.81 s, load 1.20 s, replay 3.05 s`: phases as one line (a phase that ran more than
/// once is summed under its first place).
pub fn phases_line(phases: &[PhaseTime]) -> String {
    let mut summed: Vec<(Phase, Duration)> = Vec::new();
    for p in phases {
        match summed.iter_mut().find(|(q, _)| *q == p.phase) {
            Some((_, d)) => *d += p.elapsed,
            None => summed.push((p.phase, p.elapsed)),
        }
    }
    summed
        .iter()
        .map(|(p, d)| format!("{} {:.2} s", p.name(), d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_closed_in_order_and_never_overlap() {
        let p = Progress::new();
        assert!(p.current().is_none());
        p.begin(Phase::Fetch, Unit::Bytes, Some(100));
        p.add(40);
        p.add(20);
        let c = p.current().expect("a phase runs");
        assert_eq!((c.phase, c.done, c.total), (Phase::Fetch, 60, Some(100)));
        // Beginning the next phase ends this one.
        p.begin(Phase::Load, Unit::Bytes, None);
        p.set_total(7);
        p.set(3);
        assert_eq!(p.current().map(|c| (c.done, c.total)), Some((3, Some(7))));
        p.end();
        p.end();
        assert!(p.current().is_none());
        let names: Vec<_> = p.phases().iter().map(|t| t.phase).collect();
        assert_eq!(names, vec![Phase::Fetch, Phase::Load]);
        // Updates with no phase running are ignored, not misfiled.
        p.add(5);
        assert_eq!(p.phases().len(), 2);
        // A late watcher neither restarts a phase nor writes into another one.
        assert!(!p.advance(Phase::Load, Phase::Replay, Unit::Bytes, None));
        p.begin(Phase::Copy, Unit::Keys, Some(10));
        p.set_in(Phase::Replay, 99);
        assert_eq!(p.current().map(|c| c.done), Some(0));
        assert!(!p.advance(Phase::Load, Phase::Replay, Unit::Bytes, None));
        assert_eq!(p.current().map(|c| c.phase), Some(Phase::Copy));
    }

    #[test]
    fn the_phase_line_sums_repeated_phases() {
        let t = |phase, ms| PhaseTime {
            phase,
            elapsed: Duration::from_millis(ms),
        };
        let line = phases_line(&[
            t(Phase::Fetch, 500),
            t(Phase::Replay, 250),
            t(Phase::Fetch, 250),
        ]);
        assert_eq!(line, "fetch 0.75 s, replay 0.25 s");
    }
}
