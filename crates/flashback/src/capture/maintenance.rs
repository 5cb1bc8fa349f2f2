//! Maintenance beside capture: compaction (new bases, `crate::compact`) and retention
//! (`crate::prune`), each in a task of its own on the store (the remote one when there is one),
//! never on the primary: a slow rebuild must not delay a single fsync. When each runs is decided
//! by the pure functions at the top, which the tests check in milliseconds.

use super::options::CaptureOptions;
use crate::store::Store;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often the agent applies its retention policy (more often for a window under 40 min).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How often the agent looks for a base to make, given `--base-every`: four times an interval
/// (at least once a minute, at most once a second). A pass that finds a little less than
/// `every` of history skips, and checking only every `every` would then make bases every
/// 2 × `every` (found by bench/restore_history.py). Once a minute also serves the volume
/// trigger.
pub fn compaction_check_every(base_every: Duration) -> Duration {
    (base_every / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// How often the agent prunes, given `--keep`: every 10 minutes, but a short window more often
/// (a quarter of it, at least once a second), or it would hold 10 minutes.
pub fn prune_check_every(keep: Duration) -> Duration {
    PRUNE_EVERY.min(keep / 4).max(Duration::from_secs(1))
}

/// The maintenance tasks of one capture run.
pub(super) struct Maintenance {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Maintenance {
    /// Starts what `opts` asks for (nothing without `--base-every` and `--keep`).
    pub(super) fn start(store: &Store, opts: &CaptureOptions) -> Maintenance {
        let (maint_stop, maint_rx) = watch::channel(false);
        let mut maintenance = Vec::new();
        if let Some(every) = opts.base_every {
            let mut copts = opts.compact.clone();
            copts.min_interval = every;
            let every = compaction_check_every(every);
            let stop = wait_true(maint_rx.clone());
            maintenance.push(tokio::spawn(crate::compact::run_every(
                store.clone(),
                opts.name.clone(),
                every,
                copts,
                stop,
            )));
        }
        if let Some(policy) = opts.retention {
            let (store, name, rx) = (store.clone(), opts.name.clone(), maint_rx.clone());
            maintenance.push(tokio::spawn(async move {
                prune_every(store, name, policy, wait_true(rx)).await
            }));
        }
        Maintenance {
            stop: maint_stop,
            tasks: maintenance,
        }
    }

    /// Stops the tasks and waits for them.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        for m in self.tasks {
            let _ = m.await;
        }
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The agent's retention: the same plan `flashback prune` makes, applied every `PRUNE_EVERY`.
async fn prune_every(
    store: Store,
    source: String,
    policy: crate::prune::Policy,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let every = prune_check_every(policy.keep);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(every) => {}
        }
        let gens = match crate::store::catalog::load_generations(&store, &source).await {
            Ok(g) => g,
            Err(e) => {
                warn!("retention: cannot list '{source}': {e}");
                continue;
            }
        };
        let plan = crate::prune::prune_plan(&gens, &policy, crate::now_ms());
        if plan.deletions.is_empty() {
            continue;
        }
        match crate::prune::execute(&store, &plan).await {
            Ok(r) => info!("retention: {r}"),
            Err(e) => warn!("retention of '{source}' failed (retrying in 10 min): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn compaction_is_checked_four_times_an_interval_between_a_second_and_a_minute() {
        assert_eq!(
            compaction_check_every(Duration::from_secs(3600)),
            ms(60_000)
        );
        assert_eq!(compaction_check_every(Duration::from_secs(240)), ms(60_000));
        assert_eq!(compaction_check_every(Duration::from_secs(120)), ms(30_000));
        assert_eq!(compaction_check_every(ms(10_000)), ms(2_500));
        // A tiny interval (tests use seconds) is still checked at most once a second.
        assert_eq!(compaction_check_every(ms(2_000)), ms(1_000));
        assert_eq!(compaction_check_every(Duration::ZERO), ms(1_000));
    }

    #[test]
    fn retention_runs_every_ten_minutes_or_a_quarter_of_a_short_window() {
        assert_eq!(
            prune_check_every(Duration::from_secs(7 * 86_400)),
            ms(600_000)
        );
        assert_eq!(prune_check_every(Duration::from_secs(2_400)), ms(600_000));
        assert_eq!(prune_check_every(Duration::from_secs(600)), ms(150_000));
        assert_eq!(prune_check_every(ms(3_000)), ms(1_000));
        assert_eq!(prune_check_every(ms(1)), ms(1_000));
    }
}
