//! The chain rule: each block must follow the one before it (its start offset is where the
//! previous data ended; times and covered-through never go back; a heartbeat or a non-final
//! fragment keeps the db and MULTI state; fragments are never interleaved with records).
//!
//! The writer walks it to refuse writing a log with a hole, and the scanner walks it to refuse
//! reading one, so both sides share this one [`ChainState::step`] rather than two copies that
//! could drift apart.

use super::{block_flags, BlockInfo, SegmentHeader, SegmentSummary};

/// Where the stream stands at a point of the log; both the writer and the readers walk it
/// forward block by block and refuse any step that goes backwards.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChainState {
    pub(super) end_offset: u64,
    /// Time of the last record so far (0 before any).
    pub(super) last_time_ms: u64,
    pub(super) covered_ms: u64,
    pub(super) db: u32,
    pub(super) in_multi: bool,
    /// Inside a fragmented record: (its start offset, file position of its first fragment
    /// block). `end_offset` is then the end of the fragments so far, not a record end.
    pub(super) run: Option<(u64, u64)>,
}

impl ChainState {
    pub(super) fn start(h: &SegmentHeader) -> Self {
        ChainState {
            end_offset: h.start_offset,
            last_time_ms: 0,
            covered_ms: 0,
            db: h.start_db,
            in_multi: h.start_in_multi,
            run: None,
        }
    }

    /// Checks that block `b` follows this state, and moves past it. The message names the
    /// inconsistency; the caller adds the file and position.
    pub(super) fn step(&mut self, b: &BlockInfo) -> std::result::Result<(), String> {
        if b.flags & !KNOWN_FLAGS != 0 {
            return Err(format!(
                "unknown block flags {:#06x} (written by a newer flashback?)",
                b.flags
            ));
        }
        if b.start_offset != self.end_offset {
            return Err(format!(
                "block starts at offset {} but the previous data ends at {}",
                b.start_offset, self.end_offset
            ));
        }
        if b.covered_through_ms < self.covered_ms {
            return Err(format!(
                "covered-through time {} goes back from {}",
                b.covered_through_ms, self.covered_ms
            ));
        }
        let fragment = b.flags & block_flags::FRAGMENT != 0;
        if !fragment {
            if let Some((start, _)) = self.run {
                return Err(format!(
                    "a block without the FRAGMENT flag inside the record stored in fragments from offset {start}"
                ));
            }
        } else if b.end_offset <= b.start_offset || b.record_count > 1 {
            return Err(format!(
                "fragment block spans offsets {}..{} with {} records (must be non-empty, 0 or 1 record)",
                b.start_offset, b.end_offset, b.record_count
            ));
        }
        if fragment && b.record_count == 0 {
            // A non-final fragment: no record ends here, so no time, and the db state is the
            // one at the record's start, as for a heartbeat.
            if b.first_time_ms != 0 || b.last_time_ms != 0 {
                return Err("non-final fragment with a record time".into());
            }
            if b.end_db != self.db || b.end_in_multi != self.in_multi {
                return Err(format!(
                    "non-final fragment says db {} multi {} but the stream is at db {} multi {}",
                    b.end_db, b.end_in_multi, self.db, self.in_multi
                ));
            }
            self.run.get_or_insert((b.start_offset, b.file_pos));
        } else if b.record_count == 0 {
            if b.end_offset != b.start_offset || b.first_time_ms != 0 || b.last_time_ms != 0 {
                return Err("empty block with a non-empty offset or time range".into());
            }
            if b.end_db != self.db || b.end_in_multi != self.in_multi {
                return Err(format!(
                    "empty block says db {} multi {} but the stream is at db {} multi {}",
                    b.end_db, b.end_in_multi, self.db, self.in_multi
                ));
            }
        } else {
            if b.end_offset <= b.start_offset
                || b.end_offset - b.start_offset < u64::from(b.record_count)
            {
                return Err(format!(
                    "{} records cannot span offsets {}..{}",
                    b.record_count, b.start_offset, b.end_offset
                ));
            }
            if b.first_time_ms < self.last_time_ms {
                return Err(format!(
                    "first record time {} goes back from {}",
                    b.first_time_ms, self.last_time_ms
                ));
            }
            if b.last_time_ms < b.first_time_ms || b.covered_through_ms < b.last_time_ms {
                return Err(format!(
                    "times out of order: first {} last {} covered through {}",
                    b.first_time_ms, b.last_time_ms, b.covered_through_ms
                ));
            }
            if fragment && b.first_time_ms != b.last_time_ms {
                return Err("final fragment with two record times".into());
            }
            self.last_time_ms = b.last_time_ms;
            self.run = None;
        }
        self.end_offset = b.end_offset;
        self.covered_ms = b.covered_through_ms;
        self.db = b.end_db;
        self.in_multi = b.end_in_multi;
        Ok(())
    }
}

pub(super) const KNOWN_FLAGS: u16 = block_flags::CATCHUP | block_flags::FRAGMENT;
/// The summary of a segment that starts at `start` (its header's state) and holds `blocks`:
/// what the writer stores in the footer and what a scanner expects to find there.
pub(super) fn summarize(
    start: &ChainState,
    blocks: &[BlockInfo],
    end_time_ms: u64,
) -> SegmentSummary {
    let last = blocks.last();
    SegmentSummary {
        start_offset: start.end_offset,
        end_offset: last.map_or(start.end_offset, |b| b.end_offset),
        first_time_ms: blocks
            .iter()
            .find(|b| b.record_count > 0)
            .map_or(0, |b| b.first_time_ms),
        end_time_ms,
        record_count: blocks.iter().map(|b| u64::from(b.record_count)).sum(),
        block_count: blocks.len() as u32,
        end_db: last.map_or(start.db, |b| b.end_db),
        end_in_multi: last.map_or(start.in_multi, |b| b.end_in_multi),
    }
}
