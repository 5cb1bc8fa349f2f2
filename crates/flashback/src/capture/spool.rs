//! Spool accounting: with a remote store, how full the local spool is (against `--spool-max`
//! and against what its disk can still hold), and the samples of the `agent.prom` metrics file
//! ([`super::metrics`]).
//!
//! The disk's free space comes from statvfs(2) rather than from counting our own writes: the
//! spool's disk may be shared, and only the file system knows what is left.

use super::log::Log;
use super::metrics::{self, Sample};
use super::tail::BLOCK_BYTES;
use crate::store::layout;
use std::path::Path;

/// With a remote store: how full the spool may get, and how to wake the uploader.
pub struct SpoolWatch {
    pub shared: crate::ship::upload::Shared,
    pub max_bytes: u64,
}

impl Log {
    pub fn watch_spool(&mut self, w: SpoolWatch) {
        self.spool = Some(w);
    }

    /// The spool's fill as a fraction of its limit (None without a remote store). The limit is
    /// `--spool-max`, or less when the spool's disk cannot hold that much: what the spool holds
    /// plus the disk's free space, minus a reserve for the block being written and a footer.
    /// Counting the disk too means a small or shared disk gets the same early warning and the
    /// same back-pressure as --spool-max, instead of a write failing with ENOSPC.
    pub fn spool_fill(&self) -> Option<f64> {
        let w = self.spool.as_ref()?;
        let used = self.spool_used(w);
        if used == 0 {
            return Some(0.0);
        }
        let limit = match space(&self.root) {
            Some((free, total)) => (used + free)
                .saturating_sub(spool_reserve(total))
                .min(w.max_bytes),
            None => w.max_bytes,
        };
        Some(used as f64 / limit.max(1) as f64)
    }

    fn spool_used(&self, w: &SpoolWatch) -> u64 {
        let tail = self
            .tail
            .as_ref()
            .map(|t| t.writer.bytes_written())
            .unwrap_or(0);
        let queued = w
            .shared
            .spool_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        queued + tail
    }

    /// Rewrites `sources/<name>/agent.prom` (next to the agent's lock, in the local store or
    /// the spool; see [`super::metrics`]), and for a cluster's shard gives the samples to the
    /// cluster's board too.
    pub fn write_metrics(&self, paused: bool) {
        let labels = match &self.board {
            Some((_, cluster, shard)) => format!(
                "{},{}",
                metrics::label("source", cluster),
                metrics::label("shard", shard)
            ),
            None => metrics::label("source", &self.source),
        };
        let mut samples = Vec::new();
        let mut metric = |name: &'static str, help: &'static str, value: f64| {
            samples.push(Sample {
                name,
                help,
                labels: labels.clone(),
                value,
            });
        };
        metric(
            "flashback_durable_offset",
            "Replication offset fsync'd and acknowledged to the primary.",
            self.durable_offset as f64,
        );
        metric(
            "flashback_covered_through_seconds",
            "Unix time through which the log is known complete.",
            self.covered_through_ms as f64 / 1000.0,
        );
        if self.covered_through_ms > 0 {
            metric(
                "flashback_lag_seconds",
                "Seconds from the end of the log known complete to now: what a restore --latest would miss.",
                crate::now_ms().saturating_sub(self.covered_through_ms) as f64 / 1000.0,
            );
        }
        metric(
            "flashback_link_up",
            "1 while the replication link streams; 0 while it is down or still syncing.",
            if self.link.up { 1.0 } else { 0.0 },
        );
        if let Some(w) = &self.spool {
            metric(
                "flashback_spool_bytes",
                "Bytes in the spool not yet uploaded (sealed objects and the open tail).",
                self.spool_used(w) as f64,
            );
            metric(
                "flashback_spool_max_bytes",
                "--spool-max.",
                w.max_bytes as f64,
            );
            metric(
                "flashback_spool_fill_ratio",
                "Spool bytes over its limit (--spool-max, or what its disk can still hold); at 1 capture stops reading from the primary.",
                self.spool_fill().unwrap_or(0.0),
            );
            metric(
                "flashback_capture_paused",
                "1 while capture has stopped reading because the spool is full.",
                if paused { 1.0 } else { 0.0 },
            );
        }
        if self.link.up && !self.link.node.is_empty() {
            let mut l = format!("{labels},{}", metrics::label("node", &self.link.node));
            if let Some(role) = self.link.role {
                l = format!("{l},{}", metrics::label("role", role));
            }
            samples.push(Sample {
                name: "flashback_link_info",
                help: "The node the replication link streams from (role: primary or replica, for a cluster shard).",
                labels: l,
                value: 1.0,
            });
        }
        metrics::write(
            &self.root.join(layout::SOURCES).join(&self.source),
            &metrics::render(&samples),
        );
        if let Some((board, _, shard)) = &self.board {
            if let Ok(mut b) = board.lock() {
                b.insert(shard.clone(), samples);
            }
        }
    }

    /// With a spool: whether its file system has room for a few blocks again.
    pub fn spool_has_room(&self) -> bool {
        space(&self.root).is_none_or(|(free, total)| free >= spool_reserve(total))
    }
}

/// Room kept free on a spool's file system: a full raw block compressed badly, plus a footer;
/// a quarter of a tiny disk (a 2 MiB spool could never keep 2 MiB free).
fn spool_reserve(total: u64) -> u64 {
    (2 * BLOCK_BYTES as u64).min(total / 4)
}

/// (Bytes an unprivileged process may still write, size) of the file system holding `dir`;
/// None when it cannot be asked.
// The statvfs fields are u64 here but narrower on 32-bit targets, hence `u64::from`.
#[allow(clippy::useless_conversion)]
fn space(dir: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let frsize = u64::from(st.fragment_size());
    Some((
        u64::from(st.blocks_available()) * frsize,
        u64::from(st.blocks()) * frsize,
    ))
}
