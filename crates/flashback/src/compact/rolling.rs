//! Rolling bases (issue 12): compaction at a replica's cost. A private redis-server is kept
//! warm beside capture (`restore::engine::Warm`): loaded once from the newest base, then fed
//! each sealed segment as it appears, and asked to SAVE a new base whenever replaying the log
//! since the last base would take longer than `replay_budget` × the time to load that base
//! (so a restore at any instant costs at most about (1 + budget) × a bare load of its state),
//! or at `base_every` at the latest. Scheduled compaction (`compact::run_every`) instead
//! rebuilds each base from the previous one, loading it and replaying an interval every time.
//!
//! The cost: the warm server holds the dataset, as a replica does; that is why it is a choice
//! (`capture --rolling-bases`), and off it the agent falls back to scheduled rebuilds.
//!
//! Crash safety is compaction's: a base is stored under its final name only whole (a temp
//! object, then a create-only copy: `compact::store_base`), at a transaction boundary (the cut
//! of a restore plan at a sealed segment's end). A dead server (kill -9 mid-apply or mid-SAVE)
//! fails the feed or the SAVE; nothing is stored, and the compactor starts over from the
//! newest stored base after a backoff.
//!
//! The rates behind the decision are the compactor's own measurements on this machine: the
//! load of its initial base and the throughput of its feeds ([`Calibration`]).

use super::{check_rdb_version, store_base, CompactError};
use crate::backoff::Backoff;
use crate::redis_server::{RedisServer, ServerBinary, ServerOptions};
use crate::restore::cost::{Rates, DEFAULT_RATES};
use crate::restore::engine::{self, Fed, Warm};
use crate::restore::{self, RestoreError, Target};
use crate::store::catalog::{self, Generation};
use crate::store::{layout, Store};
use crate::timespec::format_ms;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct RollingOptions {
    /// The warm server (None: `redis-server` on PATH); it must write the source's RDB version.
    pub redis_server: Option<PathBuf>,
    /// A new base once the log since the last one would replay in more than this fraction of
    /// the last base's load time (0.25: a restore at any instant ≤ 1.25 × a bare load).
    pub replay_budget: f64,
    /// …or once this much history lies since the last base, whatever the budget says.
    pub base_every: Duration,
    /// Never a base for less log than this (a tiny dataset loads in milliseconds: without a
    /// floor every segment would make one).
    pub min_log_bytes: u64,
    /// How often the store is listed for newly sealed segments.
    pub check_every: Duration,
}

impl Default for RollingOptions {
    fn default() -> Self {
        RollingOptions {
            redis_server: None,
            replay_budget: 0.25,
            base_every: Duration::from_secs(3600),
            min_log_bytes: 1 << 20,
            check_every: Duration::from_secs(1),
        }
    }
}

/// The rates measured so far (the defaults until a measurement exists).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    pub rates: Rates,
    fed_bytes: u64,
    fed_time: Duration,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            rates: DEFAULT_RATES,
            fed_bytes: 0,
            fed_time: Duration::ZERO,
        }
    }
}

impl Calibration {
    /// A base of `bytes` loaded in `took` (handshake and all, as a restore pays it). A small
    /// base's time is the handshake's, not a throughput (172 bytes "loaded at 57 KB/s" made
    /// every later base look slow to load, so none was ever due): below [`MIN_LOAD_SAMPLE`]
    /// the default rate stays.
    pub fn loaded(&mut self, bytes: u64, took: Duration) {
        if bytes >= MIN_LOAD_SAMPLE && !took.is_zero() {
            self.rates.load_bytes_per_s = bytes as f64 / took.as_secs_f64();
        }
    }

    /// A feed: the replay rate is over every feed so far (fetch, apply and ACK included), so
    /// one slow segment (a store hiccup) does not swing it.
    pub fn fed(&mut self, f: &Fed) {
        self.fed_bytes += f.log_bytes;
        self.fed_time += f.elapsed;
        if self.fed_bytes > 0 && !self.fed_time.is_zero() {
            self.rates.replay_bytes_per_s = self.fed_bytes as f64 / self.fed_time.as_secs_f64();
        }
    }
}

/// The smallest base whose load time calibrates the load rate.
pub const MIN_LOAD_SAMPLE: u64 = 8 << 20;

/// Why a new base is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Replaying the log since the last base would exceed the budget.
    Budget { replay: Duration, load: Duration },
    /// `base_every` of history since the last base.
    Interval,
}

/// Whether the state at the warm server's offset should become a base: `log_bytes` of log
/// and `history` of time since the last base, whose size is `base_size`.
pub fn base_due(
    opts: &RollingOptions,
    rates: &Rates,
    base_size: u64,
    log_bytes: u64,
    history: Duration,
) -> Option<Due> {
    if log_bytes == 0 || log_bytes < opts.min_log_bytes {
        return None;
    }
    let (replay, load) = (rates.replay(log_bytes), rates.load(base_size));
    if replay.as_secs_f64() > opts.replay_budget * load.as_secs_f64() {
        return Some(Due::Budget { replay, load });
    }
    (history >= opts.base_every).then_some(Due::Interval)
}

/// The warm compactor until `shutdown`: one life after another (a life ends with an error, or
/// when the generation changes), each from the newest stored base.
pub async fn run(
    store: Store,
    source: String,
    opts: RollingOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    let mut calib = Calibration::default();
    loop {
        let mut made = 0u64;
        let r = tokio::select! {
            _ = &mut shutdown => return,
            r = life(&store, &source, &opts, &mut calib, &mut made) => r,
        };
        if made > 0 {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        match r {
            Ok(why) => info!("rolling bases of '{source}': {why}; starting again from the newest base"),
            Err(e) => warn!(
                "rolling bases of '{source}' stopped ({e}); nothing half-made was stored; starting again from the newest base in {:.0} s",
                delay.as_secs_f64()
            ),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The latest restorable generation and the newest base on its window's run.
fn newest(gens: &[Generation]) -> Option<(&Generation, &catalog::BaseObject)> {
    let g = gens
        .iter()
        .rev()
        .find(|g| g.manifest.is_some() && !g.bases.is_empty())?;
    let b = g.chain().latest_base()?;
    Some((g, b))
}

/// The end of the latest sealed segment on the generation's window (what compaction cuts at).
fn sealed_end(g: &Generation) -> Option<u64> {
    let w = g.window()?;
    g.sealed
        .iter()
        .rev()
        .find(|s| s.name.end_offset <= w.to_offset && s.name.end_offset > s.name.start_offset)
        .map(|s| s.name.end_offset)
}

/// The last base the budget counts from.
#[derive(Debug, Clone, Copy)]
struct Last {
    offset: u64,
    time_ms: u64,
    size: u64,
}

/// One warm server's life. Returns (Ok) why it ended when that is no failure.
async fn life(
    store: &Store,
    source: &str,
    opts: &RollingOptions,
    calib: &mut Calibration,
    made: &mut u64,
) -> Result<String, CompactError> {
    let gens = catalog::load_generations(store, source).await?;
    let Some((g, b)) = newest(&gens) else {
        tokio::time::sleep(opts.check_every).await;
        return Ok("no base stored yet (capture's initial sync)".into());
    };
    let gen_id = g.id.clone();
    let Some(gen_num) = layout::parse_generation_id(&gen_id) else {
        return Ok(format!("generation {gen_id} has an unknown name"));
    };
    let mut last = Last {
        offset: b.offset,
        time_ms: b.time_ms,
        size: b.size,
    };
    let at = |offset| Target::InGeneration {
        generation: gen_num,
        offset,
    };
    let plan0 = restore::plan(store, source, at(b.offset)).await?;
    let binary = ServerBinary::find(opts.redis_server.as_deref()).map_err(RestoreError::from)?;
    engine::check_base_version(store, &plan0, &binary).await?;
    let server = RedisServer::start(
        &binary,
        ServerOptions {
            // The replica drops a master silent this long; our SAVE of a big dataset blocks
            // it longer than the default 60 s, and between segments we only ping.
            extra_args: vec!["--repl-timeout".into(), "86400".into()],
            ..Default::default()
        },
    )
    .await
    .map_err(RestoreError::from)?;
    let mut warm = Warm::start(store, &plan0, &server).await?;
    calib.loaded(warm.base_bytes, warm.load_time);
    info!(
        "rolling bases of '{source}': warm replica (pid {}) loaded the base at offset {} ({} bytes) in {:.2} s",
        server.pid().unwrap_or(0),
        warm.offset,
        warm.base_bytes,
        warm.load_time.as_secs_f64()
    );
    if plan0.stop_offset > warm.offset {
        let f = warm.feed(store, &plan0).await?;
        calib.fed(&f);
    }
    loop {
        tokio::time::sleep(opts.check_every).await;
        warm.ping().await?;
        let gens = catalog::load_generations(store, source).await?;
        match newest(&gens) {
            Some((g2, _)) if g2.id == gen_id => {}
            _ => return Ok(format!("generation {gen_id} is no longer the latest")),
        }
        let Some(g) = gens.iter().find(|g| g.id == gen_id) else {
            return Ok(format!("generation {gen_id} is gone"));
        };
        let Some(end) = sealed_end(g).filter(|&e| e > warm.offset) else {
            continue;
        };
        let plan = restore::plan(store, source, at(end)).await?;
        if plan.generation != gen_id || plan.stop_offset <= warm.offset {
            continue;
        }
        if plan.base_offset > warm.offset {
            return Ok(format!(
                "a base at offset {} appeared past the warm replica's {} (another compaction)",
                plan.base_offset, warm.offset
            ));
        }
        let mut p = plan.clone();
        p.base_offset = warm.offset;
        p.base_db = None;
        p.segments.retain(|s| s.end_offset > warm.offset);
        let f = warm.feed(store, &p).await?;
        calib.fed(&f);
        let (failed, first) = engine::replica_errors(&server);
        if failed > 0 {
            return Err(CompactError::ReplayFailed {
                offset: warm.offset,
                failed,
                first: first.into_iter().next().unwrap_or_default(),
            });
        }
        let Some(time_ms) = plan.stop_time_ms else {
            continue;
        };
        let history = Duration::from_millis(time_ms.saturating_sub(last.time_ms));
        let log_bytes = warm.offset - last.offset;
        let Some(due) = base_due(opts, &calib.rates, last.size, log_bytes, history) else {
            continue;
        };
        let rdb = warm.save().await?;
        let stored = async {
            check_rdb_version(&rdb, &plan.manifest).await?;
            store_base(store, source, &gen_id, warm.offset, time_ms, &rdb).await
        }
        .await;
        let _ = tokio::fs::remove_file(&rdb).await;
        let why = match due {
            Due::Budget { replay, load } => format!(
                "replaying its {log_bytes} bytes of log would take ~{:.2} s, over {} × the base's ~{:.2} s load",
                replay.as_secs_f64(),
                opts.replay_budget,
                load.as_secs_f64()
            ),
            Due::Interval => "--base-every of history since the last base".to_string(),
        };
        match stored? {
            Ok((key, size)) => {
                *made += 1;
                info!(
                    "rolling base {key} ({size} bytes) at offset {} ({}): {why}",
                    warm.offset,
                    format_ms(time_ms)
                );
                last = Last {
                    offset: warm.offset,
                    time_ms,
                    size,
                };
            }
            Err(skip) => {
                info!("rolling base at offset {} not stored: {skip}", warm.offset);
                last.offset = warm.offset;
                last.time_ms = time_ms;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rates = Rates {
        load_bytes_per_s: 100e6,
        replay_bytes_per_s: 10e6,
    };

    fn opts() -> RollingOptions {
        RollingOptions {
            min_log_bytes: 1000,
            base_every: Duration::from_secs(3600),
            ..Default::default()
        }
    }

    #[test]
    fn a_base_is_due_once_the_replay_exceeds_the_budget() {
        // 100 MB base: 1 s to load; budget 0.25 s of replay = 2.5 MB of log.
        let o = opts();
        assert_eq!(
            base_due(&o, &R, 100_000_000, 2_400_000, Duration::ZERO),
            None
        );
        assert_eq!(
            base_due(&o, &R, 100_000_000, 2_600_000, Duration::ZERO),
            Some(Due::Budget {
                replay: Duration::from_millis(260),
                load: Duration::from_secs(1)
            })
        );
        // A bigger budget waits longer.
        let lax = RollingOptions {
            replay_budget: 1.0,
            ..opts()
        };
        assert_eq!(
            base_due(&lax, &R, 100_000_000, 2_600_000, Duration::ZERO),
            None
        );
    }

    #[test]
    fn base_every_is_the_latest_and_the_floor_holds_both() {
        let o = opts();
        let hour = Duration::from_secs(3600);
        assert_eq!(
            base_due(&o, &R, 100_000_000, 5000, hour),
            Some(Due::Interval)
        );
        assert_eq!(base_due(&o, &R, 100_000_000, 5000, hour / 2), None);
        // Under the floor nothing is due, however long or costly.
        assert_eq!(base_due(&o, &R, 1, 999, hour * 10), None);
        assert_eq!(base_due(&o, &R, 1, 0, hour * 10), None);
    }

    #[test]
    fn calibration_takes_the_load_and_averages_the_feeds() {
        let mut c = Calibration::default();
        assert_eq!(c.rates, DEFAULT_RATES);
        c.loaded(50_000_000, Duration::from_millis(500));
        assert_eq!(c.rates.load_bytes_per_s, 100e6);
        c.loaded(0, Duration::from_secs(1));
        assert_eq!(c.rates.load_bytes_per_s, 100e6);
        // A tiny base measures the handshake, not the load rate.
        c.loaded(172, Duration::from_millis(3));
        assert_eq!(c.rates.load_bytes_per_s, 100e6);
        let fed = |b, ms| Fed {
            records: 0,
            log_bytes: b,
            elapsed: Duration::from_millis(ms),
        };
        c.fed(&fed(1_000_000, 100));
        assert_eq!(c.rates.replay_bytes_per_s, 10e6);
        // One slow feed moves the average, not replaces it.
        c.fed(&fed(1_000_000, 900));
        assert_eq!(c.rates.replay_bytes_per_s, 2e6);
    }
}
