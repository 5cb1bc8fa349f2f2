//! Maintenance beside capture: compaction (new bases, `crate::compact`) and retention
//! (`crate::prune`), each in a task of its own on the store (the remote one when there is one),
//! never on the primary: a slow rebuild must not delay a single fsync. When each runs is decided
//! by the pure functions at the top, which the tests check in milliseconds.

use super::options::CaptureOptions;
use crate::backoff::Backoff;
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

/// Between restarts of a maintenance task that failed: soon at first, then at most every
/// 10 minutes (a bug that panics every pass must not fill the log).
fn restart_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(600))
}

/// Runs the task `make` builds until `stop` turns true, and returns how often it failed. A
/// failure (a panic: the tasks themselves log and retry their errors) is an ERROR in the log
/// and the task starts again after `backoff`, rather than the whole agent exiting: capture must
/// go on (the primary's backlog is finite, and a deterministic bug would only make a
/// supervisor restart capture in a loop), while missing compaction or retention for a while
/// costs restore time or disk, never data. Before, a panicked task was joined with `let _ =`
/// at shutdown and nobody heard of it.
async fn supervise<F, Fut>(
    what: &'static str,
    stop: watch::Receiver<bool>,
    backoff: Backoff,
    mut make: F,
) -> u32
where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (mut stop, mut backoff, mut failures) = (stop, backoff, 0);
    loop {
        let joined = tokio::spawn(make(stop.clone())).await;
        if *stop.borrow() {
            return failures;
        }
        failures += 1;
        let why = match joined {
            Ok(()) => "it ended on its own".to_string(),
            Err(e) => e.to_string(),
        };
        let delay = backoff.next_delay();
        tracing::error!(
            "{what} failed ({why}); capture goes on, and {what} restarts in {:.0} s",
            delay.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|v| *v) => return failures,
        }
    }
}

/// The maintenance tasks of one capture run.
pub(super) struct Maintenance {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<u32>>,
}

impl Maintenance {
    /// Starts what `opts` asks for (nothing without `--base-every`, `--rolling-bases` and
    /// `--keep`).
    pub(super) fn start(store: &Store, opts: &CaptureOptions) -> Maintenance {
        let (maint_stop, maint_rx) = watch::channel(false);
        let mut maintenance = Vec::new();
        if let Some(ropts) = opts.rolling.clone() {
            // Rolling bases replace the scheduled rebuilds: both would make bases of the same
            // log, and the warm server already holds what a rebuild would load.
            let (store, name) = (store.clone(), opts.name.clone());
            maintenance.push(tokio::spawn(supervise(
                "rolling bases",
                maint_rx.clone(),
                restart_backoff(),
                move |rx| {
                    crate::compact::rolling::run(
                        store.clone(),
                        name.clone(),
                        ropts.clone(),
                        wait_true(rx),
                    )
                },
            )));
        } else if let Some(every) = opts.base_every {
            let mut copts = opts.compact.clone();
            copts.min_interval = every;
            let every = compaction_check_every(every);
            let (store, name) = (store.clone(), opts.name.clone());
            maintenance.push(tokio::spawn(supervise(
                "compaction",
                maint_rx.clone(),
                restart_backoff(),
                move |rx| {
                    crate::compact::run_every(
                        store.clone(),
                        name.clone(),
                        every,
                        copts.clone(),
                        wait_true(rx),
                    )
                },
            )));
        }
        if let Some(policy) = opts.retention {
            let (store, name) = (store.clone(), opts.name.clone());
            maintenance.push(tokio::spawn(supervise(
                "retention",
                maint_rx.clone(),
                restart_backoff(),
                move |rx| prune_every(store.clone(), name.clone(), policy, wait_true(rx)),
            )));
        }
        Maintenance {
            stop: maint_stop,
            tasks: maintenance,
        }
    }

    /// Stops the tasks and waits for them; says how often they had failed.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        for m in self.tasks {
            match m.await {
                Ok(0) => {}
                Ok(n) => {
                    warn!("maintenance failed {n} time(s) during this run (see the errors above)")
                }
                Err(e) => tracing::error!("the maintenance supervisor failed: {e}"),
            }
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
            Err(e) => warn!(
                "retention of '{source}' failed (retrying in {}): {e}",
                crate::timespec::format_duration_ms(every.as_millis() as u64)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A maintenance task that panics (a bug) is restarted, and the failure counted, while
    /// capture goes on; at stop the supervisor returns.
    #[tokio::test]
    async fn a_panicked_maintenance_task_is_restarted() {
        let starts = Arc::new(AtomicU32::new(0));
        let (stop, rx) = watch::channel(false);
        let counted = starts.clone();
        let task = tokio::spawn(supervise(
            "test",
            rx,
            Backoff::new(ms(1), ms(5)),
            move |rx| {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        panic!("a bug in maintenance");
                    }
                    wait_true(rx).await
                }
            },
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while starts.load(Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the task was not restarted"
            );
            tokio::time::sleep(ms(5)).await;
        }
        stop.send(true).unwrap();
        let failures = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(failures, 1);
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

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
