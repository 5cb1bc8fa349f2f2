//! `flashback demo`: the managed clouds' "data flashback" story on a laptop, in under a minute.
//!
//! A throwaway redis-server plays production. The agent captures it, an application writes a
//! time-stamped field into the hash `userprofile` about once a second, then "an accident"
//! (FLUSHALL) wipes everything and the application carries on writing. Flashback restores the
//! last instant before the accident's second into a brand-new server, and the demo prints what
//! each instance holds side by side.
//!
//! It lives in the binary, as one named step per part of the story ([`run`] reads like the
//! script), because it is orchestration only: every step calls the same library functions as
//! the `capture` and `restore` commands, so the demo proves them rather than a demo-only path.

use anyhow::{anyhow, bail, Context as _};
use flashback::capture::{self, CaptureError, CaptureOptions, Progress};
use flashback::client::{info_field, Client, RedisUrl};
use flashback::redis_server::{self, RedisServer, ServerBinary, ServerOptions};
use flashback::restore::{self, outputs::Delivered, Output, RestoreReport, RestoreRequest};
use flashback::restore::{Target, TtlMode};
use flashback::store::{Access, Store, StoreConfig};
use flashback::timespec::format_ms;
use flashback_format::resp::Frame;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

#[derive(clap::Args)]
#[command(after_help = "Example:
  flashback demo
  flashback demo --redis-server /usr/local/bin/valkey-server --seconds 8 --keep-store

Needs redis-server (or valkey-server) on PATH or given with --redis-server.")]
pub struct Args {
    /// The redis-server (or valkey-server) binary to use
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
    /// Seconds of writes before the accident
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=60))]
    seconds: u32,
    /// Keep the demo's store afterwards (its path is printed)
    #[arg(long)]
    keep_store: bool,
}

const KEY: &str = "userprofile";

/// The story, step by step.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let binary = ServerBinary::find(a.redis_server.as_deref())?;
    say(format!("== Flashback demo, with {binary} =="));
    let (prod, mut app) = start_production(&binary).await?;
    // Removes the store if the demo is stopped (SIGINT drops this future) or fails; the normal
    // end decides itself (--keep-store).
    let mut cleanup = Cleanup {
        store: Some(redis_server::fresh_temp_dir("flashback-demo-store")?),
        served: None,
    };
    let store_dir = cleanup.store.clone().unwrap_or_default();
    let mut agent = Agent::attach(&prod, &store_dir).await?;
    let last_good_ms = write_for_a_while(&mut app, a.seconds).await?;
    let accident_ms = the_accident(&mut app).await?;
    agent.stop_when_durable(&mut app).await?;

    let at = accident_ms / 1000 * 1000 - 1;
    let (report, port) = restore_before(&agent.store, &binary, at).await?;
    if let Delivered::Serve {
        pid: Some(pid),
        dir,
        ..
    } = &report.delivered
    {
        cleanup.served = Some((*pid, dir.clone()));
    }
    let mut restored = Client::connect(&local(port), Duration::from_secs(5)).await?;
    side_by_side(&mut app, &mut restored, prod.port, port, a.seconds).await?;
    say(format!(
        "Every write up to {} is back; the accident and what followed are not.",
        format_ms(last_good_ms)
    ));
    say(format!("{}", report.engine));
    by_hand(prod.port, &store_dir, at, port);

    // The restored server was detached for --serve; this demo is throwaway, so stop it.
    let _ = restored.call(&["SHUTDOWN", "NOSAVE"]).await;
    if a.keep_store {
        cleanup.store = None;
        say(format!("\nthe store is kept in {}", store_dir.display()));
    } else {
        say("(the demo's store is deleted now; pass --keep-store to look at it)".into());
    }
    Ok(())
}

/// Step 1: "Production": a throwaway server (no fork delay for the agent's snapshot) holding a hash.
async fn start_production(binary: &ServerBinary) -> anyhow::Result<(RedisServer, Client)> {
    let extra = vec!["--repl-diskless-sync-delay".into(), "0".into()];
    let prod = RedisServer::start(
        binary,
        ServerOptions {
            extra_args: extra,
            ..Default::default()
        },
    )
    .await?;
    let mut app = prod.client().await?;
    app.ok(&["HSET", KEY, "name", "Ada", "plan", "premium"])
        .await?;
    say(format!(
        "production redis-server on 127.0.0.1:{} with a hash '{KEY}'",
        prod.port
    ));
    Ok((prod, app))
}

/// Step 2: The agent, in this process, capturing into a fresh store.
struct Agent {
    store: Store,
    progress: watch::Receiver<Progress>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), CaptureError>>,
}

impl Agent {
    async fn attach(prod: &RedisServer, store_dir: &std::path::Path) -> anyhow::Result<Agent> {
        let store = Store::open(
            &store_dir.display().to_string(),
            &StoreConfig::new(Access::Write),
        )?;
        let (progress_tx, mut progress) = watch::channel(Progress::default());
        let (stop, stop_rx) = oneshot::channel::<()>();
        let opts = CaptureOptions::new(prod.url(), "production".into());
        let task = tokio::spawn(capture::run(
            store.clone(),
            opts,
            async move {
                let _ = stop_rx.await;
            },
            Some(progress_tx),
        ));
        tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|p| p.online))
            .await
            .map_err(|_| anyhow!("the agent did not come online within 30 s"))?
            .map_err(|_| anyhow!("the agent stopped before coming online"))?;
        say(format!(
            "flashback capture is attached as a replica, storing into {}",
            store_dir.display()
        ));
        say(String::new());
        Ok(Agent {
            store,
            progress,
            stop: Some(stop),
            task,
        })
    }

    /// Waits until the agent has made everything written so far durable (it ACKs only fsync'd
    /// offsets), then stops it cleanly.
    async fn stop_when_durable(&mut self, app: &mut Client) -> anyhow::Result<()> {
        let info = app.info("replication").await?;
        let target = info_field(&info, "master_repl_offset")
            .and_then(|o| o.parse::<u64>().ok())
            .unwrap_or(0);
        tokio::time::timeout(
            Duration::from_secs(10),
            self.progress.wait_for(|p| p.durable_offset >= target),
        )
        .await
        .map_err(|_| anyhow!("the agent did not catch up within 10 s"))?
        .map_err(|_| anyhow!("the agent stopped unexpectedly"))?;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .context("the agent task failed")?
            .context("capture failed")?;
        Ok(())
    }
}

/// Step 3: the application writes a field about once a second, at the start of each second;
/// returns the time of the last write.
async fn write_for_a_while(app: &mut Client, seconds: u32) -> anyhow::Result<u64> {
    let mut last_good_ms = 0;
    for i in 1..=seconds {
        sleep_to_next_second(100).await;
        let now = flashback::now_ms();
        let field = format!("login_{i}");
        let value = format!("logged in at {}", format_ms(now));
        app.ok(&["HSET", KEY, &field, &value]).await?;
        app.ok(&["INCR", "visits"]).await?;
        say(format!(
            "{}  HSET {KEY} {field} \"{value}\"",
            format_ms(now)
        ));
        last_good_ms = now;
    }
    Ok(last_good_ms)
}

/// Step 4: the accident, in the next second; the application keeps going right after;
/// returns the accident's time.
async fn the_accident(app: &mut Client) -> anyhow::Result<u64> {
    sleep_to_next_second(400).await;
    let accident_ms = flashback::now_ms();
    app.ok(&["FLUSHALL"]).await?;
    say(format!(
        "{}  FLUSHALL   <-- the accident",
        format_ms(accident_ms)
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = format!(
        "written after the accident at {}",
        format_ms(flashback::now_ms())
    );
    app.ok(&["HSET", KEY, "login_after", &after]).await?;
    say(format!(
        "{}  HSET {KEY} login_after ...   (the app carries on)",
        format_ms(flashback::now_ms())
    ));
    Ok(accident_ms)
}

/// Step 5: Restores `at` (the last instant of the second before the accident) into a new server.
async fn restore_before(
    store: &Store,
    binary: &ServerBinary,
    at: u64,
) -> anyhow::Result<(RestoreReport, u16)> {
    say(String::new());
    say(format!(
        "restoring '{KEY}' as of {} (the end of the second before the accident)...",
        format_ms(at)
    ));
    let port = redis_server::free_port().context("no free port")?;
    let req = RestoreRequest {
        source: "production".into(),
        target: Target::At(at),
        output: Output::Serve(port),
        redis_server: Some(binary.path.clone()),
        keys: vec![],
        db: None,
        ttl: TtlMode::Absolute,
        replace: false,
        force: false,
        verify: None,
        db_map: Vec::new(),
        parallel: 1,
        splice: true,
    };
    let started = std::time::Instant::now();
    let report = restore::run(store, req).await.context("restore failed")?;
    say(format!(
        "restored in {:.2} s into a new redis-server on 127.0.0.1:{port}",
        started.elapsed().as_secs_f64()
    ));
    Ok((report, port))
}

/// Step 6: What each instance holds, side by side; fails when the restore is not complete.
async fn side_by_side(
    app: &mut Client,
    restored: &mut Client,
    prod_port: u16,
    port: u16,
    seconds: u32,
) -> anyhow::Result<()> {
    let damaged = hash_lines(app).await?;
    let good = hash_lines(restored).await?;
    let visits = |f: Frame| {
        if f == Frame::Null {
            "(none)".to_string()
        } else {
            f.text()
        }
    };
    let (dv, gv) = (
        visits(app.ok(&["GET", "visits"]).await?),
        visits(restored.ok(&["GET", "visits"]).await?),
    );
    say(String::new());
    let width = damaged
        .iter()
        .chain(good.iter())
        .map(|l| l.len())
        .max()
        .unwrap_or(0)
        .max(28);
    let row = |l: &str, r: &str| format!("{l:<width$}   {r}");
    say(row(
        &format!("DAMAGED production :{prod_port}"),
        &format!("RESTORED new instance :{port}"),
    ));
    say(row(&format!("HGETALL {KEY}"), &format!("HGETALL {KEY}")));
    for i in 0..damaged.len().max(good.len()) {
        let l = damaged.get(i).map(String::as_str).unwrap_or("");
        let r = good.get(i).map(String::as_str).unwrap_or("");
        say(row(l, r));
    }
    say(row(
        &format!("GET visits = {dv}"),
        &format!("GET visits = {gv}"),
    ));
    say(String::new());
    if good.len() != seconds as usize + 2 || gv != seconds.to_string() {
        bail!(
            "the restored instance is missing data ({} fields, visits={gv}); expected {} fields, visits={seconds}",
            good.len(),
            seconds + 2,
        );
    }
    Ok(())
}

/// Step 7: The same story with the commands a user would type.
fn by_hand(prod_port: u16, store_dir: &std::path::Path, at: u64, port: u16) {
    let store = store_dir.display();
    say(String::new());
    say("The same by hand, on your own server:".into());
    say(format!(
        "  flashback capture --source redis://127.0.0.1:{prod_port} --store {store} --name production"
    ));
    say(format!("  flashback info    --store {store}"));
    say(format!(
        "  flashback restore --store {store} --at '{}' --serve {port}",
        format_ms(at)
    ));
}

/// What the demo made that outlives its handles: the store directory, and the restored server
/// once `--serve` detached it.
struct Cleanup {
    store: Option<PathBuf>,
    served: Option<(u32, PathBuf)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((pid, dir)) = self.served.take() {
            redis_server::stop_detached(pid, &dir);
        }
        if let Some(d) = self.store.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn say(s: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

fn local(port: u16) -> RedisUrl {
    RedisUrl::local(port)
}

async fn hash_lines(c: &mut Client) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    if let Frame::Array(items) = c.ok(&["HGETALL", KEY]).await? {
        let mut pairs: Vec<(String, String)> = items
            .chunks(2)
            .map(|p| {
                let field = p.first().map(|f| f.text()).unwrap_or_default();
                (field, p.get(1).map(|v| v.text()).unwrap_or_default())
            })
            .collect();
        pairs.sort();
        for (f, v) in pairs {
            lines.push(format!("{f}: {v}"));
        }
    }
    if lines.is_empty() {
        lines.push("(empty)".into());
    }
    Ok(lines)
}

/// Sleeps until `ms_past` milliseconds after the next whole second, so the printed seconds
/// line up with the story ("the accident happened at 12:00:07").
async fn sleep_to_next_second(ms_past: u64) {
    let now = flashback::now_ms();
    let next = (now / 1000 + 1) * 1000 + ms_past;
    tokio::time::sleep(Duration::from_millis(next - now)).await;
}
