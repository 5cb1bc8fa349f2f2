//! The one reader loop: streams a plan's records, in order, into a [`RecordSink`].
//!
//! It holds one block at a time (segments are streamed from the store, never fetched whole),
//! and passes the fragments of a big record on as they come, never assembling them: memory
//! stays bounded by the block size whatever the size of a value. It checks that every record
//! (and fragment) starts exactly where the previous one ended (from the base offset on) and
//! that the log reaches the planned stop: a restore never silently skips a hole.

use super::plan::{RestorePlan, SegmentRef, SegmentStream};
use super::RestoreError;
use crate::store::Store;
use flashback_format::segment::{block_flags, Item};

/// Where records go: the engine, or (later) `history KEY` and `verify`.
pub trait RecordSink {
    /// Called once per block with that block's items inside `(base_offset, stop_offset]`:
    /// whole records, or one fragment of a big record (its fragments come in order, in
    /// consecutive calls, the last one with `end` set).
    // Not `async fn`: a public trait's async fn hides whether its future is Send.
    fn items(
        &mut self,
        items: Vec<Item>,
    ) -> impl std::future::Future<Output = Result<(), RestoreError>>;

    /// Whether the reader should fetch `seg` at all. `history` answers from what it is looking
    /// for (a per-segment key filter); restore wants everything. Asked when the segment's GET
    /// would be put in flight, and asked again when the reader reaches a segment it was told to
    /// skip: the answer may have changed since (history follows a RENAME to a new name).
    fn wants(&self, _seg: &SegmentRef) -> bool {
        true
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub segments: usize,
    pub blocks: usize,
    pub records: u64,
    /// Segments the sink did not want ([`RecordSink::wants`]), never fetched.
    pub skipped: usize,
    /// Compressed bytes fetched from the store.
    pub bytes_fetched: u64,
}

/// Segment GETs kept in flight ahead of the one being read.
const PREFETCH: usize = 8;

pub async fn read_records<S: RecordSink>(
    store: &Store,
    plan: &RestorePlan,
    sink: &mut S,
) -> Result<ReadStats, RestoreError> {
    use futures::StreamExt;
    let mut stats = ReadStats::default();
    let mut prev_end = plan.base_offset;
    // The next few segments' GETs are in flight while one is read: on an object store each GET
    // costs a round trip, and a remote capture seals a segment every second or so. Each open
    // GET holds at most what its connection buffers, so memory stays bounded.
    // Boxed futures collected first (they do nothing until polled): a closure inside the
    // stream's type would trip rustc's "Send is not general enough" in spawned callers.
    // The queue is filled by hand rather than with `buffered`: whether a segment is fetched at
    // all is the sink's question, asked as late as possible.
    let mut opened = futures::stream::FuturesOrdered::new();
    let mut next = 0;
    loop {
        while opened.len() < PREFETCH && next < plan.segments.len() {
            let seg = &plan.segments[next];
            next += 1;
            opened.push_back(if sink.wants(seg) {
                open_one(store, seg)
            } else {
                skipped_one(seg)
            });
        }
        let Some((seg, stream)) = opened.next().await else {
            break;
        };
        if prev_end >= plan.stop_offset {
            break;
        }
        let key = seg.key.as_ref();
        let stream = match stream {
            Some(s) => s,
            None if sink.wants(seg) => seg.open(store).await,
            None => {
                // Names chain: the next segment starts where this one ends.
                stats.skipped += 1;
                prev_end = prev_end.max(seg.end_offset.min(plan.stop_offset));
                continue;
            }
        };
        let mut stream = stream?;
        stats.segments += 1;
        let mut first = true;
        while let Some(block) = stream.next_block().await? {
            if first {
                first = false;
                check_start(&stream, key, seg.start_offset)?;
            }
            let b = &block.info;
            let fragment = b.flags & block_flags::FRAGMENT != 0;
            if (b.record_count == 0 && !fragment) || b.end_offset <= prev_end {
                continue;
            }
            if b.start_offset >= plan.stop_offset {
                break;
            }
            let hole = |end: u64, prev_end: u64| {
                RestoreError::Log {
                key: key.to_string(),
                what: format!(
                    "block {} at byte {}: data ending at offset {end} does not start where the previous record ended ({prev_end}): the log has a hole or an overlap",
                    block.index, b.file_pos
                ),
            }
            };
            let mut keep = Vec::with_capacity(b.record_count as usize);
            for item in stream.decode(&block)? {
                let (start, end) = match &item {
                    Item::Record(r) => {
                        (r.end_offset.checked_sub(r.resp.len() as u64), r.end_offset)
                    }
                    Item::Fragment(f) => {
                        (Some(f.start_offset), f.start_offset + f.bytes.len() as u64)
                    }
                };
                if end <= plan.base_offset {
                    continue;
                }
                if end > plan.stop_offset {
                    if let Item::Fragment(_) = item {
                        if start < Some(plan.stop_offset) {
                            return Err(RestoreError::Log {
                                key: key.to_string(),
                                what: format!("the planned stop at offset {} falls inside a record stored in fragments", plan.stop_offset),
                            });
                        }
                    }
                    break;
                }
                if start != Some(prev_end) {
                    return Err(hole(end, prev_end));
                }
                prev_end = end;
                if !matches!(&item, Item::Fragment(f) if f.end.is_none()) {
                    stats.records += 1;
                }
                keep.push(item);
            }
            stats.blocks += 1;
            if !keep.is_empty() {
                sink.items(keep).await?;
            }
            if prev_end >= plan.stop_offset {
                break;
            }
        }
        if first {
            check_start(&stream, key, seg.start_offset)?;
        }
        stats.bytes_fetched += stream.fetched;
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

/// A segment and its opened stream; None: the sink did not want it when it was queued.
type Opened<'a> = (&'a SegmentRef, Option<Result<SegmentStream, RestoreError>>);

/// A named function with one lifetime, not a closure: it keeps the future provably `Send`
/// (the compaction task runs this reader inside `tokio::spawn`).
fn open_one<'a>(
    store: &'a Store,
    seg: &'a SegmentRef,
) -> futures::future::BoxFuture<'a, Opened<'a>> {
    Box::pin(async move { (seg, Some(seg.open(store).await)) })
}

fn skipped_one(seg: &SegmentRef) -> futures::future::BoxFuture<'_, Opened<'_>> {
    Box::pin(async move { (seg, None) })
}

fn check_start(stream: &SegmentStream, key: &str, named: u64) -> Result<(), RestoreError> {
    match stream.header() {
        Some(h) if h.start_offset != named => Err(RestoreError::Log {
            key: key.to_string(),
            what: format!(
                "header says the segment starts at offset {}, its name says {named}",
                h.start_offset
            ),
        }),
        _ => Ok(()),
    }
}
