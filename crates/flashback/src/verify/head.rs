//! The log head check: the listing must reach where the agent last stored its log
//! (`log.head`), else the newest segments are gone; a live agent that sealed since the listing
//! is told apart by a second listing. Split from `objects` (the other stored objects' checks).

use super::check::*;
use super::objects::Failure;
use super::*;
use crate::store::chain::Chain;
use crate::store::layout;
use crate::store::manifest::LogHead;
use crate::timespec::format_ms;
use object_store::path::Path;

impl GenCheck<'_> {
    /// Whether sealed segments chaining from `from` to at least `to` exist now: a live agent
    /// seals (and writes its head) between verify's listing and its read of the head, so a
    /// head beyond the listing is first checked against a second listing. Only segments that
    /// are really gone stay missing; rejected: trusting the head's `written_ms` against the
    /// listing's time, which clock skew between agent and verifier would defeat.
    async fn sealed_since_listing(&self, from: u64, to: u64) -> bool {
        use futures::TryStreamExt;
        let prefix = layout::segments_prefix(self.source, &self.gen);
        let Ok(objects) = self
            .store
            .os
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
        else {
            return false;
        };
        let mut spans: Vec<(u64, u64)> = objects
            .iter()
            .filter_map(|o| match layout::parse_key(self.source, &o.location) {
                Some((_, layout::Entry::Sealed(n))) => Some((n.start_offset, n.end_offset)),
                _ => None,
            })
            .collect();
        spans.sort_unstable();
        let mut reach = from;
        for (start, end) in spans {
            if start <= reach && end > reach {
                reach = end;
            }
        }
        reach >= to
    }

    /// The listing must reach the log head the agent recorded: otherwise the newest segments
    /// are gone, which the names of those left cannot show. A head that cannot be read is
    /// damage like any other stored file's (verify cannot vouch for the log's end without it);
    /// one that vanished since the listing is a warning (a prune or a new generation raced us).
    /// Returns the problem for the caller to give the log's impact, when that is not known here.
    pub(super) async fn check_head(
        &mut self,
        key: &Path,
        walk: &Chain<'_>,
        runs: &[RunState],
    ) -> Option<usize> {
        let head = self
            .read_small(key)
            .await
            .and_then(|b| LogHead::decode(key.as_ref(), &b).map_err(|e| Failure::format(&e)));
        let head = match head {
            Ok(h) => h,
            Err(f) if f.kind == Kind::Missing => {
                self.report.warnings.push(Problem {
                    key: key.to_string(),
                    offset: f.offset,
                    kind: f.kind,
                    message: format!("the log head cannot be read: {}", f.what),
                    impact: "none for restore; verify cannot tell whether the newest segments are all there".into(),
                    restorable_through_ms: None,
                });
                return None;
            }
            Err(f) => {
                let through = walk.window().map(|w| w.to_ms);
                let what = format!("the log head is damaged: {}", f.what);
                let impact = format!(
                    "restore does not read it, so the restorable instants are as reported for the log{}; but verify cannot tell whether the newest segments are all there, and a restarted agent cannot use it: rewrite it by restarting capture",
                    through.map(|t| format!(" (through {})", format_ms(t))).unwrap_or_default()
                );
                self.problem(key.to_string(), Failure { what, ..f }, impact, None);
                return None;
            }
        };
        let g = walk.generation;
        if g.sealed.is_empty() && g.tails.is_empty() && !g.bases.is_empty() {
            // A head beside bases alone: a prune (older than the one that deletes such heads)
            // kept this generation for its restore points only and deleted the log it
            // describes. Those points need no log.
            self.report.warnings.push(Problem {
                key: key.to_string(),
                offset: None,
                kind: Kind::Leftover,
                message: format!(
                    "a log head (the log went through offset {}, {}) beside no segment: the generation holds only restore points, its log was pruned",
                    head.end_offset,
                    format_ms(head.end_time_ms)
                ),
                impact: "none: each kept base restores at its own instant; `flashback prune` deletes such a head".into(),
                restorable_through_ms: None,
            });
            return None;
        }
        // How far the listing reaches, past holes too: a hole is reported on its own.
        let listed_end = walk
            .spans
            .iter()
            .map(|(s, _)| s.end_offset)
            .chain(walk.window().map(|w| w.to_offset))
            .max()
            .unwrap_or(0);
        if listed_end >= head.end_offset {
            return None;
        }
        if self.sealed_since_listing(listed_end, head.end_offset).await {
            return None;
        }
        let f = Failure::new(
            Kind::Missing,
            Some(listed_end),
            format!(
                "the log ends at offset {} but the agent stored it through offset {} ({}, newest segment {}): the segments after offset {} are gone",
                listed_end,
                head.end_offset,
                format_ms(head.end_time_ms),
                head.segment,
                listed_end
            ),
        );
        let i = self.problem(
            layout::segments_prefix(self.source, &self.gen).to_string(),
            f,
            String::new(),
            None,
        );
        // Instants up to the end of what is left still restore, unless an earlier break
        // already bounds them.
        let last = runs.last().zip(walk.window());
        if let Some((state, w)) = last.filter(|(s, _)| s.broken.is_none()) {
            let _ = state;
            self.report.problems[i].impact = format!(
                "instants of generation {} up to {} still restore; later ones, through {}, are lost",
                self.gen,
                format_ms(w.to_ms),
                format_ms(head.end_time_ms)
            );
            self.report.problems[i].restorable_through_ms = Some(w.to_ms);
        }
        Some(i)
    }
}
