//! The restore's cost model: how long a plan should take, from what its names say (the base's
//! size, the replication bytes of log after it), before anything is read. Restore uses it to
//! choose among the bases at or before a cut and prints it (`--dry-run`); the rolling
//! compactor (`compact::rolling`) uses the same model, with rates it measured itself, to decide
//! when the log since the last base is worth a new base.
//!
//! Why replication bytes and not records for the replay: a plan knows the offsets of its base
//! and its cut from names alone, but the number of records only by reading every segment. On a
//! steady write mix bytes and records are proportional; a mix of huge values replays faster
//! per byte than the default rate says, so the estimate errs on the side of a newer base.

use std::time::Duration;

/// Throughputs of this machine's redis-server: loading a base, applying the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// RDB bytes loaded per second (the sync payload read by a replica).
    pub load_bytes_per_s: f64,
    /// Replication bytes applied per second (the records fed over the master link).
    pub replay_bytes_per_s: f64,
}

/// What restore assumes without a measurement: what the rolling compactor measured on the
/// development machine (2 shared cores, Redis 7.0, `bench/rolling.sh`, docs/benchmarks.md
/// "Rolling bases"): a 10 MB base of 400k small strings loaded in ~0.29 s (~35 MB/s, handshake
/// included), SET traffic applied at ~70 MB/s of replication stream. Only their ratio matters
/// for choosing a base; the printed estimate is as good as the machine is like that one.
pub const DEFAULT_RATES: Rates = Rates {
    load_bytes_per_s: 35e6,
    replay_bytes_per_s: 70e6,
};

/// A plan's estimated time, in its two parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    pub load: Duration,
    pub replay: Duration,
}

impl Estimate {
    pub fn total(&self) -> Duration {
        self.load + self.replay
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "~{:.2} s (base load ~{:.2} s + replay ~{:.2} s)",
            self.total().as_secs_f64(),
            self.load.as_secs_f64(),
            self.replay.as_secs_f64()
        )
    }
}

impl Rates {
    pub fn load(&self, base_bytes: u64) -> Duration {
        secs(base_bytes as f64 / self.load_bytes_per_s.max(1.0))
    }

    pub fn replay(&self, log_bytes: u64) -> Duration {
        secs(log_bytes as f64 / self.replay_bytes_per_s.max(1.0))
    }

    pub fn estimate(&self, base_bytes: u64, log_bytes: u64) -> Estimate {
        Estimate {
            load: self.load(base_bytes),
            replay: self.replay(log_bytes),
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

/// A base a restore to some cut could start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub offset: u64,
    pub size: u64,
}

/// The index of the base (at or before `stop_offset`) with the least estimated cost, the
/// newer on a tie (less log to read from the store). Not always the newest: a newer base of a
/// much bigger dataset (a bulk load just before a mass delete) can cost more to load than an
/// older small base plus a little replay.
pub fn cheapest(rates: &Rates, bases: &[Candidate], stop_offset: u64) -> Option<usize> {
    bases
        .iter()
        .enumerate()
        .filter(|(_, b)| b.offset <= stop_offset)
        .min_by_key(|&(i, b)| {
            let e = rates.estimate(b.size, stop_offset - b.offset);
            (e.total(), std::cmp::Reverse(b.offset), std::cmp::Reverse(i))
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rates = Rates {
        load_bytes_per_s: 100e6,
        replay_bytes_per_s: 10e6,
    };

    #[test]
    fn estimates_add_load_by_size_and_replay_by_log() {
        let e = R.estimate(200_000_000, 5_000_000);
        assert_eq!(e.load, Duration::from_secs(2));
        assert_eq!(e.replay, Duration::from_millis(500));
        assert_eq!(e.total(), Duration::from_millis(2500));
        assert_eq!(
            e.to_string(),
            "~2.50 s (base load ~2.00 s + replay ~0.50 s)"
        );
    }

    #[test]
    fn the_newest_base_wins_on_a_steady_dataset() {
        let b = [
            Candidate {
                offset: 0,
                size: 100_000_000,
            },
            Candidate {
                offset: 50_000_000,
                size: 100_000_000,
            },
            Candidate {
                offset: 90_000_000,
                size: 100_000_000,
            },
        ];
        assert_eq!(cheapest(&R, &b, 95_000_000), Some(2));
        // A cut before the newest base cannot use it.
        assert_eq!(cheapest(&R, &b, 60_000_000), Some(1));
        assert_eq!(cheapest(&R, &b, 90_000_000), Some(2));
    }

    #[test]
    fn an_older_small_base_beats_a_newer_huge_one() {
        // 10 MB base + 1 MB of log (0.2 s) vs a 1 GB base just before the cut (10 s).
        let b = [
            Candidate {
                offset: 0,
                size: 10_000_000,
            },
            Candidate {
                offset: 1_000_000,
                size: 1_000_000_000,
            },
        ];
        assert_eq!(cheapest(&R, &b, 1_000_100), Some(0));
    }

    #[test]
    fn equal_costs_prefer_the_newer_base_and_none_is_none() {
        let b = [
            Candidate {
                offset: 0,
                size: 10,
            },
            Candidate {
                offset: 0,
                size: 10,
            },
        ];
        assert_eq!(cheapest(&R, &b, 0), Some(1));
        assert_eq!(cheapest(&R, &[], 5), None);
        assert_eq!(cheapest(&R, &[Candidate { offset: 9, size: 1 }], 5), None);
    }
}
