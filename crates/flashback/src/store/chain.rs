//! The one chain walker: from a generation's listing (manifest, bases, sealed segments, open
//! tails) to what restores from where. Pure: no I/O, no async, no clock; the catalog window,
//! restore's plan, `info`, `verify`, `prune` and compaction all ask it, so they cannot disagree.
//!
//! The walk, from a base at offset B: segments in order (sealed ones, then open tails); one that
//! ends at or before where the walk is and starts before it adds nothing (its data is before B,
//! or another segment holds it: a tail left next to its sealed copy) and is passed over; one that
//! starts at or before where the walk is continues it; one that starts after it is a gap and ends
//! the walk. Every base at or after the manifest's own base is a starting point.
//!
//! Bases whose walks overlap form one [`Run`]: a continuous range of offsets and times that
//! restores, from the run's oldest base or (cheaper) from its newest base at or before the cut.
//! A later run always reaches further than an earlier one (it starts past the earlier one's
//! end), so the last run is the continuous window, and the runs before it are kept restore
//! points: a base whose log was pruned restores at its own instant (a zero-length run).
//!
//! A gap after a run with segments, or after the last run, is a [`Hole`]: a missing range
//! between segments. A gap after a zero-length run before the window is not one: that is the
//! log that retention pruned between a kept restore point and the window (prune deletes a
//! segment only when it ends at or before the window's base, so it leaves no gap with segments
//! on both sides). That is indistinguishable from losing exactly those segments, and it does
//! not matter: either way the instants between are outside every window, and none inside one
//! is affected.

use super::catalog::{BaseObject, Generation, Window};

/// One segment as the walk sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub which: Which,
    pub start_offset: u64,
    pub end_offset: u64,
    /// First record's arrival (0: no records) and the time through which it is complete.
    pub first_time_ms: u64,
    pub end_time_ms: u64,
}

/// Where a [`Span`] is in the generation's listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Index into `Generation::sealed`.
    Sealed(usize),
    /// Index into `Generation::tails`.
    Tail(usize),
}

/// What a segment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// On run `.0`: a restore from that run reads it.
    Needed(usize),
    /// Its data ends at or before the base of the run after it (or the manifest's base): no
    /// restore reads it; prune deletes it.
    BeforeBase,
    /// Inside a run, but other segments hold its data (a tail left next to its sealed copy).
    Duplicate,
    /// After the last run's end, past a hole: no base reaches it.
    Unreachable,
}

/// A continuous range that restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Indices into `Generation::bases` of the bases on this run, oldest first (never empty).
    pub bases: Vec<usize>,
    /// From the oldest base's offset and time to the end of the log it reaches.
    pub window: Window,
    /// In walk order, chaining without a hole from the oldest base.
    pub segments: Vec<Span>,
}

impl Run {
    /// A base alone: nothing after its own instant restores from it.
    pub fn is_point(&self) -> bool {
        self.segments.is_empty() && self.window.from_offset == self.window.to_offset
    }
}

/// A missing range of offsets after a run that restore cannot cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    /// The run it ends.
    pub run: usize,
    /// Where the log stops (the run's end) and when.
    pub from_offset: u64,
    pub from_ms: u64,
    /// Where the next segment starts, and its first record's arrival (0: unknown).
    pub to_offset: u64,
    pub to_ms: u64,
    /// Segments no base reaches (after the last run); 0 for a bridged hole.
    pub unreachable_segments: usize,
    /// The run that resumes after it (a later base), if any: instants from that run's start on
    /// restore again; those between `from_ms` and its start do not.
    pub bridged_by: Option<usize>,
}

/// The answer for one generation.
#[derive(Debug, Clone)]
pub struct Chain<'a> {
    pub generation: &'a Generation,
    /// Oldest first; empty without a manifest or a base. The last one is the window.
    pub runs: Vec<Run>,
    pub holes: Vec<Hole>,
    /// Every segment, sealed ones then tails, with its role.
    pub spans: Vec<(Span, Role)>,
}

impl<'a> Chain<'a> {
    pub fn of(g: &'a Generation) -> Chain<'a> {
        let spans: Vec<Span> = spans(g);
        let mut runs: Vec<Run> = Vec::new();
        if let Some(m) = &g.manifest {
            for (bi, b) in g.bases.iter().enumerate() {
                if b.offset < m.base_offset {
                    continue;
                }
                if let Some(r) = runs.last_mut() {
                    // A base on a run reaches no further than the run's oldest base: the same
                    // segments, the same gap at its end.
                    if b.offset <= r.window.to_offset {
                        r.bases.push(bi);
                        continue;
                    }
                }
                let time_ms = if b.offset == m.base_offset {
                    m.base_time_ms
                } else {
                    b.time_ms
                };
                runs.push(walk(&spans, b.offset, time_ms, bi));
            }
        }
        let mut holes = Vec::new();
        let last = runs.len().checked_sub(1);
        for (i, r) in runs.iter().enumerate() {
            if Some(i) != last && r.is_point() {
                continue;
            }
            let Some(next) = spans.iter().find(|s| s.start_offset > r.window.to_offset) else {
                continue;
            };
            let bridged_by = (Some(i) != last).then_some(i + 1);
            holes.push(Hole {
                run: i,
                from_offset: r.window.to_offset,
                from_ms: r.window.to_ms,
                to_offset: next.start_offset,
                to_ms: next.first_time_ms,
                unreachable_segments: if bridged_by.is_some() {
                    0
                } else {
                    spans
                        .iter()
                        .filter(|s| s.end_offset > r.window.to_offset)
                        .filter(|s| !r.segments.contains(s))
                        .count()
                },
                bridged_by,
            });
        }
        let spans = spans
            .into_iter()
            .map(|s| {
                let role = role(&runs, &s);
                (s, role)
            })
            .collect();
        Chain {
            generation: g,
            runs,
            holes,
            spans,
        }
    }

    /// The continuous window: the last run (the oldest base whose log reaches furthest).
    pub fn window_run(&self) -> Option<&Run> {
        self.runs.last()
    }

    pub fn window(&self) -> Option<Window> {
        self.window_run().map(|r| r.window)
    }

    /// The runs before the window: kept restore points (zero-length when their log was
    /// pruned), oldest first.
    pub fn points(&self) -> &[Run] {
        &self.runs[..self.runs.len().saturating_sub(1)]
    }

    /// The run whose range holds `offset` (the latest one, should two touch).
    pub fn run_at(&self, offset: u64) -> Option<(usize, &Run)> {
        self.runs
            .iter()
            .enumerate()
            .rev()
            .find(|(_, r)| r.window.from_offset <= offset && offset <= r.window.to_offset)
    }

    /// The base a restore to `stop_offset` on run `run` starts from: its newest base at or
    /// before the cut (the least log to replay).
    pub fn base_for(&self, run: usize, stop_offset: u64) -> Option<&'a BaseObject> {
        let g = self.generation;
        self.runs
            .get(run)?
            .bases
            .iter()
            .rev()
            .map(|&i| &g.bases[i])
            .find(|b| b.offset <= stop_offset)
    }

    /// The base a restore of the latest instant would use now.
    pub fn latest_base(&self) -> Option<&'a BaseObject> {
        let r = self.runs.len().checked_sub(1)?;
        self.base_for(r, self.runs[r].window.to_offset)
    }

    /// The segments a restore from `base_offset` to `stop_offset` reads, in order.
    pub fn needed(&self, base_offset: u64, stop_offset: u64) -> Vec<Span> {
        match self.run_at(base_offset) {
            Some((_, r)) => r
                .segments
                .iter()
                .filter(|s| s.end_offset > base_offset && s.start_offset < stop_offset)
                .copied()
                .collect(),
            None => vec![],
        }
    }

    /// The first hole that bounds the log (the earliest one), if any.
    pub fn first_hole(&self) -> Option<&Hole> {
        self.holes.first()
    }

    /// The role of the sealed segment or tail `which`.
    pub fn role(&self, which: Which) -> Option<Role> {
        self.spans
            .iter()
            .find(|(s, _)| s.which == which)
            .map(|(_, r)| *r)
    }

    /// The run a segment belongs to, if a restore reads it.
    pub fn run_of(&self, which: Which) -> Option<usize> {
        match self.role(which)? {
            Role::Needed(r) => Some(r),
            _ => None,
        }
    }
}

fn spans(g: &Generation) -> Vec<Span> {
    let sealed = g.sealed.iter().enumerate().map(|(i, s)| Span {
        which: Which::Sealed(i),
        start_offset: s.name.start_offset,
        end_offset: s.name.end_offset,
        first_time_ms: s.name.first_time_ms,
        end_time_ms: s.name.end_time_ms,
    });
    let tails = g.tails.iter().enumerate().map(|(i, t)| Span {
        which: Which::Tail(i),
        start_offset: t.start_offset,
        end_offset: t.end_offset,
        first_time_ms: t.first_time_ms,
        end_time_ms: t.covered_through_ms,
    });
    sealed.chain(tails).collect()
}

fn walk(spans: &[Span], offset: u64, time_ms: u64, base: usize) -> Run {
    let mut w = Window {
        from_ms: time_ms,
        to_ms: time_ms,
        from_offset: offset,
        to_offset: offset,
    };
    let mut segments = Vec::new();
    for s in spans {
        if s.end_offset <= w.to_offset && s.start_offset < w.to_offset {
            continue;
        }
        if s.start_offset > w.to_offset {
            break;
        }
        w.to_offset = s.end_offset;
        w.to_ms = w.to_ms.max(s.end_time_ms);
        segments.push(*s);
    }
    Run {
        bases: vec![base],
        window: w,
        segments,
    }
}

fn role(runs: &[Run], s: &Span) -> Role {
    if let Some(i) = runs.iter().position(|r| r.segments.contains(s)) {
        return Role::Needed(i);
    }
    match runs.last() {
        Some(last) if s.end_offset > last.window.to_offset => Role::Unreachable,
        // No base at all (or no manifest): nothing restores, so nothing is merely "before".
        None => Role::Unreachable,
        _ if runs
            .iter()
            .any(|r| r.window.from_offset < s.end_offset && s.end_offset <= r.window.to_offset) =>
        {
            Role::Duplicate
        }
        _ => Role::BeforeBase,
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
