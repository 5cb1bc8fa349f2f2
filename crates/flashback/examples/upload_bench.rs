//! The baseline of `bench/upload.py`: PUTs the same files the capture agent's uploader drains
//! from its spool, with plain `object_store::aws` against the same S3-protocol endpoint, so the
//! uploader's throughput can be read as a ratio to what the client library itself achieves.
//!
//! Not a test and not part of the product: it prints one JSON line and exits.
//!
//! ```sh
//! cargo build --release -p flashback --example upload_bench
//! AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=y target/release/examples/upload_bench \
//!     --endpoint http://127.0.0.1:9000 --bucket flashbench --prefix raw-1 \
//!     --root /tmp/store --list /tmp/keys.txt [--mode put|uploader] [--concurrency 1]
//! ```
//!
//! `--list` holds one key per line (relative to `--root`, `/`-separated), in the order the
//! uploader sends them (base, manifest, segments by offset). Each file is read from disk right
//! before its PUT, as the uploader does, so the page cache treats both the same.
//!
//! Modes: `put` is one plain PUT per object (the raw baseline); `uploader` makes the requests
//! the uploader makes per object (a create-only PUT, then a HEAD to verify the size), to tell
//! the cost of that protocol from the cost of the agent around it. `--concurrency N` keeps N
//! objects in flight but completes them in list order (`buffered`, not `buffer_unordered`):
//! the shape an uploader that must commit in order could take.

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use futures::stream::{self, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One plain PUT per object
    Put,
    /// What the agent's uploader sends per object: a create-only PUT, then a HEAD
    Uploader,
}

#[derive(Parser, Debug)]
#[command(about = "Raw object_store PUT baseline for bench/upload.py")]
struct Args {
    /// S3-protocol endpoint, e.g. http://127.0.0.1:9000 (path-style requests, as flashback's
    /// --s3-endpoint)
    #[arg(long)]
    endpoint: String,
    #[arg(long)]
    bucket: String,
    /// Key prefix inside the bucket (a fresh one per run)
    #[arg(long)]
    prefix: String,
    /// Directory the keys in --list are relative to (a flashback store or spool)
    #[arg(long)]
    root: PathBuf,
    /// File with one key per line, in upload order
    #[arg(long)]
    list: PathBuf,
    #[arg(long, value_enum, default_value = "put")]
    mode: Mode,
    /// Objects in flight at once (completed in list order)
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let keys: Vec<String> = std::fs::read_to_string(&a.list)
        .with_context(|| format!("reading --list {}", a.list.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        bail!("--list {} names no key", a.list.display());
    }
    // The same client settings flashback's `Store::open_remote` uses for an --s3-endpoint, so
    // the two sides differ only in what is done around the requests.
    let retry = object_store::RetryConfig {
        max_retries: 5,
        retry_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let os: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::from_env()
            .with_bucket_name(&a.bucket)
            .with_retry(retry)
            .with_allow_http(a.endpoint.starts_with("http://"))
            .with_endpoint(&a.endpoint)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .build()
            .context("building the S3 client")?,
    );

    let started = Instant::now();
    let jobs = keys.iter().map(|k| {
        let os = os.clone();
        let file = a.root.join(k);
        let key = Path::from(format!("{}/{}", a.prefix.trim_matches('/'), k));
        let mode = a.mode;
        async move {
            let bytes = tokio::fs::read(&file)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            let size = bytes.len() as u64;
            match mode {
                Mode::Put => {
                    os.put(&key, PutPayload::from(bytes))
                        .await
                        .with_context(|| format!("PUT {key}"))?;
                }
                Mode::Uploader => {
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    };
                    os.put_opts(&key, PutPayload::from(bytes), opts)
                        .await
                        .with_context(|| format!("create-only PUT {key}"))?;
                    let head = os.head(&key).await.with_context(|| format!("HEAD {key}"))?;
                    if head.size != size {
                        bail!("{key}: sent {size} bytes, the store holds {}", head.size);
                    }
                }
            }
            anyhow::Ok(size)
        }
    });
    let mut done = stream::iter(jobs).buffered(a.concurrency);
    let mut sizes = Vec::with_capacity(keys.len());
    let mut done_at = Vec::with_capacity(keys.len());
    while let Some(r) = done.next().await {
        sizes.push(r?);
        done_at.push(started.elapsed().as_secs_f64());
    }
    let total: u64 = sizes.iter().sum();
    let first = done_at.first().copied().unwrap_or(0.0);
    let last = done_at.last().copied().unwrap_or(0.0);
    // "Steady": from the first completion to the last, over the bytes of objects 2..N. The agent
    // side is measured the same way from its log, which cannot show when its first PUT began.
    let steady_bytes = total - sizes.first().copied().unwrap_or(0);
    let out = serde_json::json!({
        "mode": format!("{:?}", a.mode).to_lowercase(),
        "concurrency": a.concurrency,
        "objects": sizes.len(),
        "bytes": total,
        "elapsed_s": last,
        "first_done_s": first,
        "steady_bytes": steady_bytes,
        "steady_s": last - first,
        "done_s": done_at,
    });
    println!("{out}");
    Ok(())
}
