//! The one async runtime every command runs on, with its thread count bounded.
//!
//! Tokio's default lets the blocking pool (where `tokio::fs`, the local object store's reads
//! and writes, fsyncs and our own `spawn_blocking` calls run) grow to 512 threads, each kept
//! for 10 s after its last job. A 24/7 agent under load showed why that matters: the S3 soak
//! (docs/benchmarks.md, "Soak") saw 30 threads where an idle agent has 10, every burst of
//! uploads, fsyncs and a verify drill's reads adding threads, their stacks, and a malloc arena's
//! worth of touched memory each. A bound turns a burst into a queue instead.
//!
//! Why 8: the agent's blocking work is short file operations (an fsync, a 1 MiB chunk read,
//! a rename); the most that run at once are the uploads in flight (`--upload-concurrency`, 4 by
//! default), the tail's fsync, maintenance's file reads and a restore's segment reads, so 8
//! leaves room for all of them without a wait in normal operation. Rejected: 1–2 (an fsync of a slow disk
//! would stall uploads behind it) and no bound (the spike above). Nothing here blocks on
//! another blocking task, so a full pool only delays work, it cannot deadlock.

/// The most threads the blocking pool may hold at once.
pub const MAX_BLOCKING_THREADS: usize = 8;

/// A multi-threaded runtime (one worker per core, as tokio's default) whose blocking pool
/// holds at most [`MAX_BLOCKING_THREADS`] threads.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_name("flashback")
        .build()
}

/// Aborts a spawned task when the scope that needs it ends, on every path out (errors and
/// panics too): a dropped `JoinHandle` detaches its task instead, which would leave a poller or
/// an ack reader running after the capture session or restore it served.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Threads of this process now (Linux: one entry per thread in /proc/self/task).
    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// 64 slow blocking jobs at once (what a burst of fsyncs and chunk reads looks like to the
    /// pool): with tokio's default every one gets a thread; here at most the bound run at once,
    /// and all of them still finish. Fails without `max_blocking_threads`.
    #[test]
    fn a_burst_of_blocking_work_queues_instead_of_adding_threads() {
        let rt = build().expect("runtime");
        let before = threads();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let peak_threads = rt.block_on(async {
            let mut jobs = Vec::new();
            for _ in 0..64 {
                let (running, most) = (running.clone(), most.clone());
                jobs.push(tokio::task::spawn_blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    threads()
                }));
            }
            let mut peak = 0;
            for j in jobs {
                peak = peak.max(j.await.expect("job"));
            }
            peak
        });
        assert!(
            most.load(Ordering::SeqCst) <= MAX_BLOCKING_THREADS,
            "{} blocking jobs ran at once",
            most.load(Ordering::SeqCst)
        );
        // Other tests of this binary run threads of their own beside us: allow for them, but
        // not for one thread per job.
        assert!(
            peak_threads < before + MAX_BLOCKING_THREADS + 16,
            "threads grew from {before} to {peak_threads} for 64 blocking jobs"
        );
    }
}
