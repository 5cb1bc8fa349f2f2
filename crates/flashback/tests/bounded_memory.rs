//! The mechanism behind issue 14 (an agent's RSS growing at every compaction): big transient
//! buffers. Each one allocated and freed raises glibc's mmap threshold to its size, after which
//! such buffers are carved from per-thread arenas that keep what is freed (see
//! `flashback::store::chunks`). This binary counts every allocation with a global allocator of
//! its own, runs compactions of a real capture (a base of ~16 MB, so a compaction uploads
//! several parts) and the chunked reader of uploads, and checks that no single allocation is
//! bigger than a segment block plus a little, and that the live heap returns to where it was
//! after each compaction (nothing kept across passes). Before the fix, every compaction
//! allocated 8 MiB part buffers (and tokio's 2 MiB file buffer behind them): this fails.
//! The RSS itself over hundreds of compactions is bench/soak.sh's to measure.

// A GlobalAlloc is an unsafe trait: the one unsafe here forwards to the system allocator.
#![allow(unsafe_code)]

mod util;

use flashback::compact::{compact_or_skip, CompactOptions, Outcome};
use flashback::store::chunks::{self, ChunkedFile, CHUNK};
use flashback::store::{Access, Store, StoreConfig};
use rand::{Rng, SeedableRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use util::*;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);

fn note(size: usize) {
    LIVE.fetch_add(size, Ordering::Relaxed);
    if ARMED.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            note(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            note(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            note(new);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The tests of this binary measure one process-wide allocator: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Above a segment block (1 MiB of raw records, the capture path's own largest buffer) only
/// what a block may hold past it: its last record, and the block's framing.
const BOUND: usize = CHUNK + (64 << 10);

/// Runs `f` and returns its result with the largest single allocation made meanwhile.
async fn largest_during<T>(f: impl std::future::Future<Output = T>) -> (T, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let out = f.await;
    ARMED.store(false, Ordering::Relaxed);
    (out, LARGEST.load(Ordering::Relaxed))
}

/// SETs of random 200-byte values (incompressible: neither the RDB's LZF nor the segments'
/// zstd shrinks them) to `key:<i>` for each i of `keys`.
fn random_sets(conn: &mut Conn, rng: &mut rand::rngs::SmallRng, keys: &[usize]) {
    for batch in keys.chunks(1000) {
        let cmds: Vec<Vec<Vec<u8>>> = batch
            .iter()
            .map(|k| {
                let v: Vec<u8> = (0..200).map(|_| rng.gen()).collect();
                vec![b"SET".to_vec(), format!("key:{k}").into_bytes(), v]
            })
            .collect();
        for r in conn.pipeline(&cmds) {
            assert!(!r.is_error(), "{}", r.text());
        }
    }
}

const KEYS: usize = 80_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactions_allocate_no_buffer_above_a_block_and_keep_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let source = RedisProc::start(&[]);
    let mut conn = source.conn();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed("bounded_memory"));
    // ~16 MB of values: a base of two full 8 MiB parts and a last one.
    random_sets(&mut conn, &mut rng, &(0..KEYS).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    // No compaction of its own: the passes below are this process's, so they are counted.
    let mut agent = Agent::start(
        source.port,
        &store_dir,
        &["--segment-mib", "1", "--base-every", "0", "--name", "s"],
    );
    agent.wait_online(&source);
    let store = Store::open(store_dir.to_str().unwrap(), &StoreConfig::new(Access::Read)).unwrap();
    let opts = CompactOptions {
        min_interval: Duration::ZERO,
        ..Default::default()
    };

    let mut live_after = Vec::new();
    for pass in 0..4 {
        // ~1.8 MB of log: at least one more sealed segment past the newest base.
        let keys: Vec<usize> = (0..8_000).map(|_| rng.gen_range(0..KEYS)).collect();
        random_sets(&mut conn, &mut rng, &keys);
        agent.wait_caught_up(&source);
        let (out, largest) = largest_during(compact_or_skip(&store, "s", &opts)).await;
        let made = match out {
            Ok(Outcome::Created(b)) => b,
            other => panic!("pass {pass}: no base made: {other:?}\n{}", agent.log_text()),
        };
        assert!(made.size > 12 << 20, "the base is only {} bytes", made.size);
        assert!(
            largest <= BOUND,
            "pass {pass}: compaction allocated a buffer of {largest} bytes at once (bound \
             {BOUND}): a part-sized buffer is back, see store::chunks"
        );
        // The private server is gone and the scratch directory removed by now; what the pass
        // allocated must be freed too.
        tokio::time::sleep(Duration::from_millis(200)).await;
        live_after.push(LIVE.load(Ordering::Relaxed));
    }
    let (first, last) = (live_after[0], live_after[live_after.len() - 1]);
    assert!(
        last <= first + (512 << 10),
        "the live heap grew from {first} to {last} bytes over {} compactions: {live_after:?}",
        live_after.len()
    );
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_read_files_in_chunks_whatever_the_part_or_object_size() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let data: Vec<u8> = (0..(20 << 20) + 77).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    drop(data);

    // A whole object for one PUT (a sealed segment can be up to 64 MiB).
    let (whole, largest) = largest_during(chunks::read_payload(&path)).await;
    assert_eq!(whole.unwrap().content_length(), (20 << 20) + 77);
    assert!(
        largest <= BOUND,
        "read_payload allocated {largest} bytes at once"
    );

    // Parts of 16 MiB (the uploader's) and 8 MiB (compaction's).
    for part in [16 << 20, 8 << 20] {
        let (total, largest) = largest_during(async {
            let mut f = ChunkedFile::open(&path).await.unwrap();
            let mut total = 0;
            loop {
                let p = f.next_payload(part).await.unwrap();
                if p.content_length() == 0 {
                    return total;
                }
                total += p.content_length();
            }
        })
        .await;
        assert_eq!(total, (20 << 20) + 77);
        assert!(
            largest <= BOUND,
            "parts of {part} bytes: {largest} bytes at once"
        );
    }
}
