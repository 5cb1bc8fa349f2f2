//! The one reader loop: streams a plan's records, in order, into a [`RecordSink`].
//!
//! It holds one segment's bytes at a time and decodes one block at a time. It checks that every
//! record starts exactly where the previous one ended (from the base offset on) and that the
//! log reaches the planned stop: a restore never silently skips a hole.

use super::plan::{fetch, RestorePlan};
use super::RestoreError;
use crate::store::Store;
use flashback_format::segment::{Record, SegmentFile};

/// Where records go: the engine, or (later) `history KEY` and `verify`.
pub trait RecordSink {
    /// Called once per block with that block's records inside `(base_offset, stop_offset]`.
    // Not `async fn`: a public trait's async fn hides whether its future is Send.
    fn records(
        &mut self,
        records: Vec<Record>,
    ) -> impl std::future::Future<Output = Result<(), RestoreError>>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub segments: usize,
    pub blocks: usize,
    pub records: u64,
    /// Compressed bytes fetched from the store.
    pub bytes_fetched: u64,
}

pub async fn read_records<S: RecordSink>(
    store: &Store,
    plan: &RestorePlan,
    sink: &mut S,
) -> Result<ReadStats, RestoreError> {
    let mut stats = ReadStats::default();
    let mut prev_end = plan.base_offset;
    for seg in &plan.segments {
        if prev_end >= plan.stop_offset {
            break;
        }
        let key = seg.key.as_ref();
        let bytes = fetch(store, &seg.key).await?;
        stats.segments += 1;
        stats.bytes_fetched += bytes.len() as u64;
        let file = SegmentFile::parse(key, &bytes, seg.sealed_mode())?;
        if file.header.start_offset != seg.start_offset {
            return Err(RestoreError::Log {
                key: key.to_string(),
                what: format!(
                    "header says the segment starts at offset {}, its name says {}",
                    file.header.start_offset, seg.start_offset
                ),
            });
        }
        for (i, b) in file.blocks.iter().enumerate() {
            if b.record_count == 0 || b.end_offset <= prev_end {
                continue;
            }
            if b.start_offset >= plan.stop_offset {
                break;
            }
            let mut keep = Vec::with_capacity(b.record_count as usize);
            for r in file.records(i)? {
                if r.end_offset <= plan.base_offset {
                    continue;
                }
                if r.end_offset > plan.stop_offset {
                    break;
                }
                let start = r.end_offset.checked_sub(r.resp.len() as u64);
                if start != Some(prev_end) {
                    return Err(RestoreError::Log {
                        key: key.to_string(),
                        what: format!(
                            "block {i} at byte {}: a record ending at offset {} does not start where the previous one ended ({prev_end}): the log has a hole or an overlap",
                            b.file_pos, r.end_offset
                        ),
                    });
                }
                prev_end = r.end_offset;
                keep.push(r);
            }
            stats.blocks += 1;
            stats.records += keep.len() as u64;
            if !keep.is_empty() {
                sink.records(keep).await?;
            }
            if prev_end >= plan.stop_offset {
                break;
            }
        }
    }
    if prev_end != plan.stop_offset {
        let key = plan
            .segments
            .last()
            .map(|s| s.key.to_string())
            .unwrap_or_else(|| plan.base_key.to_string());
        return Err(RestoreError::Log {
            key,
            what: format!("the log ends at offset {prev_end}, before the planned stop at {}: a segment is shorter than its name says", plan.stop_offset),
        });
    }
    Ok(stats)
}
