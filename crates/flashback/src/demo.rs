//! `flashback demo`: the managed clouds' "data flashback" story on a laptop, in under a minute.
//!
//! A throwaway redis-server plays production. The agent captures it, an application writes a
//! time-stamped field into the hash `userprofile` about once a second, then "an accident"
//! (FLUSHALL) wipes everything and the application carries on writing. Flashback restores the
//! last instant before the accident's second into a brand-new server, and the demo prints what
//! each instance holds side by side. Everything runs through the same library calls as the
//! `capture` and `restore` commands; only the orchestration lives here.

use crate::capture::{self, CaptureOptions, Progress};
use crate::client::{info_field, Client, ClientError};
use crate::redis_server::{fresh_temp_dir, RedisServer, ServerBinary, ServerError, ServerOptions};
use crate::resp::Frame;
use crate::restore::{self, Output, RestoreRequest, Target, TtlMode};
use crate::store::{Access, Store, StoreConfig, StoreError};
use crate::timespec::format_ms;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub redis_server: Option<PathBuf>,
    /// Seconds of normal writes before the accident.
    pub seconds: u32,
    /// Keep the store (and print where) instead of deleting it at the end.
    pub keep_store: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("capture failed: {0}")]
    Capture(#[from] capture::CaptureError),
    #[error("restore failed: {0}")]
    Restore(#[from] restore::RestoreError),
    #[error("{0}")]
    Other(String),
}

const KEY: &str = "userprofile";

/// Runs the story, printing it to `out`.
pub async fn run(opts: DemoOptions, out: &mut (dyn Write + Send)) -> Result<(), DemoError> {
    let say = |out: &mut (dyn Write + Send), s: String| {
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    };
    let binary = ServerBinary::find(opts.redis_server.as_deref())?;
    say(out, format!("== Flashback demo, with {} ==", binary));

    // 1. "Production": a throwaway server. No fork delay for the agent's snapshot.
    let extra = vec!["--repl-diskless-sync-delay".into(), "0".into()];
    let prod = RedisServer::start(
        &binary,
        ServerOptions {
            extra_args: extra,
            ..Default::default()
        },
    )
    .await?;
    let mut app = prod.client().await?;
    app.ok(&["HSET", KEY, "name", "Ada", "plan", "premium"])
        .await?;
    say(
        out,
        format!(
            "production redis-server on 127.0.0.1:{} with a hash '{KEY}'",
            prod.port
        ),
    );

    // 2. The agent, in this process, into a fresh store.
    let store_dir = fresh_temp_dir("flashback-demo-store")?;
    // Removes the store if the demo is stopped (SIGINT drops this future) or fails; the normal
    // end below decides itself (--keep-store).
    let mut cleanup = Cleanup {
        store: Some(store_dir.clone()),
        served: None,
    };
    let store = Store::open(
        &store_dir.display().to_string(),
        &StoreConfig::new(Access::Write),
    )?;
    let (progress_tx, mut progress) = watch::channel(Progress::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts_c = CaptureOptions::new(prod.url(), "production".into());
    let agent = tokio::spawn(capture::run(
        store.clone(),
        opts_c,
        async move {
            let _ = stop_rx.await;
        },
        Some(progress_tx),
    ));
    tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|p| p.online))
        .await
        .map_err(|_| DemoError::Other("the agent did not come online within 30 s".into()))?
        .map_err(|_| DemoError::Other("the agent stopped before coming online".into()))?;
    say(
        out,
        format!(
            "flashback capture is attached as a replica, storing into {}",
            store_dir.display()
        ),
    );
    say(out, String::new());

    // 3. The application writes a field about once a second, at the start of each second.
    let mut last_good_ms = 0;
    for i in 1..=opts.seconds {
        sleep_to_next_second(100).await;
        let now = crate::now_ms();
        let field = format!("login_{i}");
        let value = format!("logged in at {}", format_ms(now));
        app.ok(&["HSET", KEY, &field, &value]).await?;
        app.ok(&["INCR", "visits"]).await?;
        say(
            out,
            format!("{}  HSET {KEY} {field} \"{value}\"", format_ms(now)),
        );
        last_good_ms = now;
    }

    // 4. The accident, in the next second; the application keeps going right after.
    sleep_to_next_second(400).await;
    let accident_ms = crate::now_ms();
    app.ok(&["FLUSHALL"]).await?;
    say(
        out,
        format!("{}  FLUSHALL   <-- the accident", format_ms(accident_ms)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = format!(
        "written after the accident at {}",
        format_ms(crate::now_ms())
    );
    app.ok(&["HSET", KEY, "login_after", &after]).await?;
    say(
        out,
        format!(
            "{}  HSET {KEY} login_after ...   (the app carries on)",
            format_ms(crate::now_ms())
        ),
    );

    // Wait until the agent has made the accident durable (it ACKs only fsync'd offsets).
    let info = app.info("replication").await?;
    let target = info_field(&info, "master_repl_offset")
        .and_then(|o| o.parse::<u64>().ok())
        .unwrap_or(0);
    tokio::time::timeout(
        Duration::from_secs(10),
        progress.wait_for(|p| p.durable_offset >= target),
    )
    .await
    .map_err(|_| DemoError::Other("the agent did not catch up within 10 s".into()))?
    .map_err(|_| DemoError::Other("the agent stopped unexpectedly".into()))?;
    let _ = stop_tx.send(());
    agent
        .await
        .map_err(|e| DemoError::Other(format!("the agent task failed: {e}")))??;

    // 5. Restore the last instant of the second before the accident into a new server.
    let at = accident_ms / 1000 * 1000 - 1;
    say(out, String::new());
    say(
        out,
        format!(
            "restoring '{KEY}' as of {} (the end of the second before the accident)...",
            format_ms(at)
        ),
    );
    let port = crate::redis_server::free_port()
        .map_err(|e| DemoError::Other(format!("no free port: {e}")))?;
    let req = RestoreRequest {
        source: "production".into(),
        target: Target::At(at),
        output: Output::Serve(port),
        redis_server: Some(binary.path.clone()),
        keys: vec![],
        ttl: TtlMode::Absolute,
        replace: false,
        force: false,
        db_map: Vec::new(),
    };
    let started = std::time::Instant::now();
    let report = restore::run(&store, req).await?;
    if let restore::outputs::Delivered::Serve {
        pid: Some(pid),
        dir,
        ..
    } = &report.delivered
    {
        cleanup.served = Some((*pid, dir.clone()));
    }
    say(
        out,
        format!(
            "restored in {:.2} s into a new redis-server on 127.0.0.1:{port}",
            started.elapsed().as_secs_f64()
        ),
    );
    let restored_url = crate::client::RedisUrl {
        host: "127.0.0.1".into(),
        port,
        user: None,
        password: None,
        db: 0,
    };
    let mut restored = Client::connect(&restored_url, Duration::from_secs(5)).await?;

    // 6. Side by side.
    let damaged = hash_lines(&mut app).await?;
    let good = hash_lines(&mut restored).await?;
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
    say(out, String::new());
    let width = damaged
        .iter()
        .chain(good.iter())
        .map(|l| l.len())
        .max()
        .unwrap_or(0)
        .max(28);
    let row = |l: &str, r: &str| format!("{l:<width$}   {r}");
    say(
        out,
        row(
            &format!("DAMAGED production :{}", prod.port),
            &format!("RESTORED new instance :{port}"),
        ),
    );
    say(
        out,
        row(&format!("HGETALL {KEY}"), &format!("HGETALL {KEY}")),
    );
    for i in 0..damaged.len().max(good.len()) {
        let l = damaged.get(i).map(String::as_str).unwrap_or("");
        let r = good.get(i).map(String::as_str).unwrap_or("");
        say(out, format!("{l:<width$}   {r}"));
    }
    say(
        out,
        row(&format!("GET visits = {dv}"), &format!("GET visits = {gv}")),
    );
    say(out, String::new());
    let complete = good.len() == opts.seconds as usize + 2 && gv == opts.seconds.to_string();
    if !complete {
        return Err(DemoError::Other(format!(
            "the restored instance is missing data ({} fields, visits={gv}); expected {} fields, visits={}",
            good.len(),
            opts.seconds + 2,
            opts.seconds
        )));
    }
    say(
        out,
        format!(
            "Every write up to {} is back; the accident and what followed are not.",
            format_ms(last_good_ms)
        ),
    );
    say(out, format!("{}", report.engine));
    say(out, String::new());
    say(out, "The same by hand, on your own server:".into());
    say(
        out,
        format!(
            "  flashback capture --source redis://127.0.0.1:{} --store {} --name production",
            prod.port,
            store_dir.display()
        ),
    );
    say(
        out,
        format!("  flashback info    --store {}", store_dir.display()),
    );
    say(
        out,
        format!(
            "  flashback restore --store {} --at '{}' --serve {port}",
            store_dir.display(),
            format_ms(at)
        ),
    );

    // The restored server was detached for --serve; this demo is throwaway, so stop it.
    let _ = restored.call(&["SHUTDOWN", "NOSAVE"]).await;
    if opts.keep_store {
        cleanup.store = None;
    }
    if opts.keep_store {
        say(
            out,
            format!("\nthe store is kept in {}", store_dir.display()),
        );
    } else {
        say(
            out,
            "(the demo's store is deleted now; pass --keep-store to look at it)".into(),
        );
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    Ok(())
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
            crate::redis_server::stop_detached(pid, &dir);
        }
        if let Some(d) = self.store.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

async fn hash_lines(c: &mut Client) -> Result<Vec<String>, DemoError> {
    let mut lines = Vec::new();
    if let Frame::Array(items) = c.ok(&["HGETALL", KEY]).await? {
        let mut pairs: Vec<(String, String)> = items
            .chunks(2)
            .map(|p| (p[0].text(), p.get(1).map(|v| v.text()).unwrap_or_default()))
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
    let now = crate::now_ms();
    let next = (now / 1000 + 1) * 1000 + ms_past;
    tokio::time::sleep(Duration::from_millis(next - now)).await;
}
