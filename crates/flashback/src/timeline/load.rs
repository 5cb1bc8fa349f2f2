//! A generation's log as summaries: the stored summary of each sealed segment when there is a
//! good one, else the segment itself read and summarised on the fly (a store written before
//! summaries existed, a crash between a seal and its summary, a damaged summary: each such
//! segment costs a read of it, with a warning for a damaged one), and open tails always on the
//! fly (they are still growing). So a timeline is complete whatever the store holds, and fast
//! when the agent stored its summaries.

use super::summarize::{Hit, Meta, Summarizer, Want};
use crate::restore::plan::SegmentRef;
use crate::store::catalog::Generation;
use crate::store::stream::{SegmentStream, StreamError};
use crate::store::{Store, StoreError};
use flashback_format::segment::{Item, Sealed};
use flashback_format::summary::{Span, Summary};
use futures::StreamExt;
use object_store::ObjectStoreExt;

/// Summaries fetched at once from the store (a remote store answers each GET in tens of ms).
const PARALLEL_GETS: usize = 16;

/// How a segment's summary was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The summary object the agent stored at the seal.
    Stored,
    /// Read and summarised now: no summary object, or a bad one.
    Computed,
    /// An open tail, summarised now.
    Tail,
}

/// One segment of a generation's log with its summary.
#[derive(Debug, Clone)]
pub struct SegSummary {
    pub segment: SegmentRef,
    pub summary: Summary,
    pub origin: Origin,
}

/// The segments of `g` that restore can reach (every run of its chain, in offset order) whose
/// times meet `[from_ms, to_ms]`, plus one on each side (a transaction cut by a segment roll
/// is resolved with its neighbour), each with its summary. Damaged summaries are reported in
/// `warnings` and replaced by a summary of the segment.
pub async fn summaries(
    store: &Store,
    g: &Generation,
    from_ms: u64,
    to_ms: u64,
    warnings: &mut Vec<String>,
) -> Result<Vec<SegSummary>, StreamError> {
    let refs = segments(g);
    let meets = |s: &SegmentRef| s.end_time_ms >= from_ms && s.first_time_ms <= to_ms;
    let first = refs.iter().position(meets);
    let last = refs.iter().rposition(meets);
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Vec::new());
    };
    let chosen = &refs[first.saturating_sub(1)..(last + 2).min(refs.len())];
    let loads = futures::stream::iter(chosen.iter().cloned())
        .map(|s| async move {
            let stored = match (s.sealed, summary_key(g, &s)) {
                (true, Some(key)) => Some(get_summary(store, &key, &s).await),
                _ => None,
            };
            (s, stored)
        })
        .buffered(PARALLEL_GETS)
        .collect::<Vec<_>>()
        .await;
    let mut out = Vec::with_capacity(loads.len());
    for (s, stored) in loads {
        let (summary, origin) = match stored {
            Some(Ok(sum)) => (sum, Origin::Stored),
            other => {
                if let Some(Err(why)) = other {
                    warnings.push(format!("{why}; reading the segment {} instead", s.key));
                }
                let (sum, _) = scan(store, &s, Want::Nothing).await?;
                let origin = if s.sealed {
                    Origin::Computed
                } else {
                    Origin::Tail
                };
                (sum, origin)
            }
        };
        out.push(SegSummary {
            segment: s,
            summary,
            origin,
        });
    }
    Ok(out)
}

/// The summaries the agent stored for `g`'s sealed segments, by (start, end) offset, fetched
/// at once; one that cannot be read or does not match its segment is left out (its segment is
/// then simply read). For readers that only skip segments (`history`): a missing summary must
/// cost a read of the segment, never a wrong skip.
pub async fn stored_summaries(
    store: &Store,
    g: &Generation,
) -> std::collections::HashMap<(u64, u64), Summary> {
    let loads = futures::stream::iter(segments(g).into_iter().filter(|s| s.sealed))
        .map(|s| async move {
            let key = summary_key(g, &s)?;
            get_summary(store, &key, &s)
                .await
                .ok()
                .map(|sum| ((s.start_offset, s.end_offset), sum))
        })
        .buffered(PARALLEL_GETS)
        .collect::<Vec<_>>()
        .await;
    loads.into_iter().flatten().collect()
}

/// Every segment on a run of `g`'s chain, in offset order, each once.
pub fn segments(g: &Generation) -> Vec<SegmentRef> {
    let chain = g.chain();
    let mut spans: Vec<_> = chain.runs.iter().flat_map(|r| r.segments.iter()).collect();
    spans.sort_by_key(|s| (s.start_offset, s.end_offset));
    spans.dedup_by_key(|s| s.which);
    spans.into_iter().map(|s| SegmentRef::of(g, s)).collect()
}

fn summary_key(g: &Generation, s: &SegmentRef) -> Option<object_store::path::Path> {
    g.summaries
        .iter()
        .find(|o| o.start_offset == s.start_offset && o.end_offset == s.end_offset)
        .map(|o| o.key.clone())
}

/// A stored summary, checked against its segment; the error says why it cannot be used.
async fn get_summary(
    store: &Store,
    key: &object_store::path::Path,
    s: &SegmentRef,
) -> Result<Summary, String> {
    let bytes = async { store.os.get(key).await?.bytes().await }
        .await
        .map_err(|e| format!("{key}: {}", StoreError::from(e)))?;
    let sum = Summary::decode(key.as_ref(), &bytes).map_err(|e| e.to_string())?;
    if (sum.start_offset, sum.end_offset) != (s.start_offset, s.end_offset) {
        return Err(format!(
            "{key}: the summary describes offsets {}..{}, its segment {}..{}",
            sum.start_offset, sum.end_offset, s.start_offset, s.end_offset
        ));
    }
    Ok(sum)
}

/// Reads a segment and summarises it, collecting what `want` asks for on the way.
pub async fn scan(
    store: &Store,
    s: &SegmentRef,
    want: Want,
) -> Result<(Summary, Vec<Hit>), StreamError> {
    let sealed = if s.sealed { Sealed::Yes } else { Sealed::No };
    let mut stream = SegmentStream::open(store, &s.key, sealed, s.sealed.then_some(s.size)).await?;
    if !s.sealed {
        stream = stream.with_listed_end(s.end_offset);
    }
    let mut sum: Option<Summarizer> = None;
    let mut big_head: Vec<u8> = Vec::new();
    let mut end = s.start_offset;
    while let Some(block) = stream.next_block().await? {
        if block.info.start_offset >= s.end_offset && !s.sealed {
            // An open tail grew since the listing: stop where the listing said it ends.
            break;
        }
        let z = sum.get_or_insert_with(|| {
            let h = stream.header();
            Summarizer::new(
                h.map_or(s.start_offset, |h| h.start_offset),
                h.is_some_and(|h| h.start_in_multi),
            )
            .wanting(want.clone())
        });
        for item in stream.decode(&block)? {
            match item {
                Item::Record(r) => {
                    end = r.end_offset;
                    z.record(&r);
                }
                Item::Fragment(f) => {
                    if big_head.len() < 64 << 10 {
                        let room = (64 << 10) - big_head.len();
                        big_head.extend_from_slice(&f.bytes[..f.bytes.len().min(room)]);
                    }
                    if let Some(m) = f.end {
                        end = m.end_offset;
                        let meta = Meta {
                            end_offset: m.end_offset,
                            time_ms: m.time_ms,
                            db: m.db,
                            boundary: m.boundary,
                        };
                        z.add(meta, &big_head);
                        big_head.clear();
                    }
                }
            }
        }
    }
    let z = match sum {
        Some(z) => z,
        None => {
            let h = stream.header();
            Summarizer::new(
                h.map_or(s.start_offset, |h| h.start_offset),
                h.is_some_and(|h| h.start_in_multi),
            )
        }
    };
    let end = if s.sealed {
        stream.summary().map_or(end, |x| x.end_offset)
    } else {
        end.max(s.start_offset)
    };
    Ok(z.finish_with_hits(end))
}

/// `span` (from the summary of `segs[i]`) with an end or start that a segment boundary cut
/// resolved from the neighbours: a transaction open at a segment's end ends at the next one's
/// first boundary; one open at a segment's start began at the previous one's last boundary.
pub fn resolve(segs: &[SegSummary], i: usize, mut span: Span) -> Span {
    let s = &segs[i].summary;
    if s.end_in_multi && span.end_offset == s.end_offset {
        for next in segs.iter().skip(i + 1) {
            match next.summary.first_boundary {
                Some(b) => {
                    span.end_offset = b;
                    break;
                }
                None => span.end_offset = next.summary.end_offset,
            }
        }
    }
    if s.start_in_multi && span.start_offset == s.start_offset {
        for prev in segs[..i].iter().rev() {
            match prev.summary.last_boundary {
                Some(b) => {
                    span.start_offset = b;
                    break;
                }
                None => span.start_offset = prev.summary.start_offset,
            }
        }
    }
    span
}
