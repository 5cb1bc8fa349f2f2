//! Is an instant inside an uncertain interval (DESIGN.md: evidence-based windows)? Stored
//! intervals answer most of it (`generations/<gen>/uncertain/`); this is the other half: a run of
//! catch-up blocks in the log itself, for an interval the agent could not store yet (it died
//! inside one). Kept apart from planning because it is a scan of blocks, not of names.

use super::plan::SegmentRef;
use super::RestoreError;
use crate::store::Store;
use flashback_format::segment::{block_flags, BlockInfo};

/// An uncertain interval found for a restore by time.
#[derive(Debug, Clone, Copy)]
pub(super) struct UncertainSpan {
    pub(super) from_ms: u64,
    pub(super) to_ms: u64,
    pub(super) from_offset: u64,
    pub(super) to_offset: u64,
    /// Catch-up records seen in it (None: from a stored interval, not counted).
    pub(super) records: Option<u64>,
}

impl UncertainSpan {
    /// Strictly inside: at its start the agent could vouch for the source, and at its end again.
    pub(super) fn contains(&self, t: u64) -> bool {
        self.from_ms < t && t < self.to_ms
    }
}

/// The uncertain interval around `t` that the log itself shows: a run of catch-up blocks
/// (records that arrived while the agent could not vouch for the source, `capture::core`),
/// from the evidence before the run to the last covered-through time in it (the agent stamps
/// the run's last block with the evidence that closed it). Reads from the segment that holds
/// `t` onward, and stops at the first block known complete past `t`.
pub(super) async fn uncertain_span(
    store: &Store,
    chain: &[SegmentRef],
    base_time_ms: u64,
    t: u64,
) -> Result<Option<UncertainSpan>, RestoreError> {
    // Start at the segment holding the cut; a run relevant to `t` starts at or after it.
    let start = chain
        .iter()
        .rposition(|s| s.first_time_ms != 0 && s.first_time_ms <= t)
        .unwrap_or(0);
    let mut prev_covered = if start == 0 {
        base_time_ms
    } else {
        chain[start - 1].end_time_ms
    };
    let mut prev_end_offset = chain.get(start).map(|s| s.start_offset).unwrap_or(0);
    let mut run: Option<UncertainSpan> = None;
    for seg in &chain[start..] {
        if prev_covered > t && run.is_none() {
            break;
        }
        let mut stream = seg.open(store).await?;
        while let Some(block) = stream.next_block().await? {
            let b = &block.info;
            if b.flags & block_flags::CATCHUP != 0 {
                let r = run.get_or_insert(UncertainSpan {
                    from_ms: prev_covered,
                    from_offset: prev_end_offset,
                    to_ms: prev_covered,
                    to_offset: prev_end_offset,
                    records: Some(0),
                });
                extend(r, b);
            } else if let Some(r) = run.take() {
                if r.contains(t) {
                    return Ok(Some(r));
                }
            }
            prev_covered = prev_covered.max(b.covered_through_ms);
            prev_end_offset = b.end_offset;
            if prev_covered > t && run.is_none() {
                return Ok(None);
            }
        }
        // A sealed segment is complete through its seal time, which can be later than its
        // last block's: without it the walk would open the next segment for nothing (and
        // fail there if that one is damaged, though the restore does not need it).
        if run.is_none() {
            prev_covered = prev_covered.max(seg.end_time_ms);
        }
    }
    Ok(run.filter(|r| r.contains(t)))
}

fn extend(r: &mut UncertainSpan, b: &BlockInfo) {
    r.records = r.records.map(|n| n + u64::from(b.record_count));
    r.to_ms = r.to_ms.max(b.covered_through_ms).max(b.last_time_ms);
    if b.record_count > 0 {
        r.to_offset = b.end_offset;
    }
}
