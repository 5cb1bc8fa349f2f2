//! The `flashback` binary: parses arguments and calls the library. One file per subcommand in
//! `cli/`. Exit codes (DESIGN.md): 0 ok, 1 runtime failure, 2 bad usage.

mod cli;

use clap::{Parser, Subcommand};
use flashback::store::{Access, StoreConfig};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "flashback", version, about = "Point-in-time recovery for Redis and Valkey", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// S3-compatible endpoint for s3:// stores (MinIO, Ceph, R2…), e.g. http://10.0.0.9:9000
    #[arg(long, global = true, value_name = "URL", env = flashback::store::S3_ENDPOINT_ENV)]
    s3_endpoint: Option<String>,
    /// Encrypt the store's objects at rest (AES-256-GCM) with the key in this file: 64 hex
    /// digits (`openssl rand -hex 32`), base64 of 32 bytes, or 32 raw bytes. Or give the key
    /// itself in FLASHBACK_ENCRYPTION_KEY. Every command reading the store needs the same key.
    #[arg(long, global = true, value_name = "PATH", env = flashback::store::crypt::KEY_FILE_ENV)]
    encryption_key_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to a primary as a replica and record every write, until SIGINT/SIGTERM.
    Capture(cli::capture::Args),
    /// Rebuild the dataset as of an instant into an RDB file, a live instance, or a new server.
    Restore(cli::restore::Args),
    /// Sources, generations, restorable windows, capture lag and bytes stored.
    Info(cli::info::Args),
    /// What happened when: writes per second, destructive events (FLUSHALL, mass deletes…)
    /// with the restore that undoes each, windows and gaps.
    Timeline(cli::timeline::Args),
    /// Every write to one key (following RENAME/COPY/MOVE/SWAPDB), and its value at chosen points.
    History(cli::history::Args),
    /// Keys and bytes of an RDB file (or of the store at an instant) by db and type, biggest keys, expiries.
    Inspect(cli::inspect::Args),
    /// Check every stored object a restore needs, then drill a timed restore (RTO, digest).
    Verify(cli::verify::Args),
    /// Make a new base off the primary: the latest sealed state, rebuilt in a private server.
    Compact(cli::compact::Args),
    /// Delete what the retention policy no longer needs (--keep 7d, daily/weekly/monthly points).
    Prune(cli::prune::Args),
    /// A consistent cut: hold writes back on the primaries for at most --pause, record each
    /// one's replication offset as a mark (restore --at-mark), release. The data is unchanged.
    Mark(cli::mark::Args),
    /// The whole story on a throwaway redis-server: capture, an accident, a restore.
    Demo(cli::demo::Args),
    /// A segment's or an RDB's byte-level structure, for a maintainer looking at a damaged file.
    Debug(cli::debug::Args),
}

/// glibc's malloc gives each thread that allocates an arena of its own, up to 8 per core, and
/// an arena never returns to the system what is freed below its top. The agent's threads come
/// and go (tokio's blocking pool serves every local file operation and lets idle threads go
/// after 10 s), each new peak of them adds an arena, and each arena keeps what the transient
/// buffers of a compaction or an upload left in it: bench/soak.sh measured +0.12 MB of RSS per
/// compaction with buffers already capped at 1 MiB (`store::chunks`), 13.6 MB flat with two
/// arenas (docs/benchmarks.md, "Soak"). Two is what we measured; the agent's allocations are
/// few and short next to its I/O, so threads waiting on an arena's lock cost nothing visible
/// (the soak's agent CPU did not change). `MALLOC_ARENA_MAX` in the environment still wins.
/// Rejected: another allocator (jemalloc and mimalloc bring a C build and their own tuning for
/// the same effect), and `malloc_trim` after each compaction (it returns free pages but lets
/// the arenas multiply, and uploads and verify drills allocate outside compaction too).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_malloc_arenas() {
    const ARENAS: libc::c_int = 2;
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; called first thing in main, before
        // any other thread exists. A refusal (0) leaves glibc's default, which only costs memory.
        #[allow(unsafe_code)] // the one call to glibc's mallopt, which has no safe wrapper
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_arenas() {}

/// `flashback timeline | head` closes our stdout before we are done: `println!` then panics
/// with "failed printing to stdout: Broken pipe". That panic unwinds (so every private
/// redis-server and temp file is still cleaned up by its destructor); the hook only keeps its
/// message, which is no error of ours, off the terminal, and `main` exits 141 as a shell
/// reports a process a SIGPIPE ended. Rejected: SIGPIPE's default action (the process would die
/// on the spot, leaving work directories behind) and replacing every `println!` (forty places
/// and every future one).
fn is_broken_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = match payload.downcast_ref::<String>() {
        Some(s) => s.as_str(),
        None => payload.downcast_ref::<&str>().copied().unwrap_or(""),
    };
    msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe")
}

fn quiet_broken_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_stdout(info.payload()) {
            default(info)
        }
    }));
}

/// The exit code of a process a closed pipe ended (128 + SIGPIPE), as shells report it.
const BROKEN_PIPE_EXIT: u8 = 141;

fn main() -> ExitCode {
    bound_malloc_arenas();
    quiet_broken_stdout();
    let cli = Cli::parse();
    // The demo tells its own story on stdout; the agent's routine log lines would only clutter it.
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLASHBACK_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    // After the log is set up: a key file others can read is a warning.
    let store = match store_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match flashback::runtime::build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Capture stops gracefully on its own signals (it must make what it received durable);
    // these commands just stop.
    let stoppable = matches!(
        cli.command,
        Command::Restore(_)
            | Command::Verify(_)
            | Command::Compact(_)
            | Command::Demo(_)
            | Command::History(_)
            | Command::Inspect(_)
    );
    let run = std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let work = async {
                match cli.command {
                    Command::Capture(a) => cli::capture::run(a, &store).await,
                    Command::Restore(a) => cli::restore::run(a, &store).await,
                    Command::Info(a) => cli::info::run(a, &store).await,
                    Command::Timeline(a) => cli::timeline::run(a, &store).await,
                    Command::History(a) => cli::history::run(a, &store).await,
                    Command::Inspect(a) => cli::inspect::run(a, &store).await,
                    Command::Verify(a) => cli::verify::run(a, &store).await,
                    Command::Compact(a) => cli::compact::run(a, &store).await,
                    Command::Prune(a) => cli::prune::run(a, &store).await,
                    Command::Mark(a) => cli::mark::run(a, &store).await,
                    Command::Demo(a) => cli::demo::run(a).await,
                    Command::Debug(a) => cli::debug::run(a).await,
                }
            };
            if !stoppable {
                return work.await;
            }
            let stop = match stop_signal() {
                Ok(s) => s,
                Err(e) => return Err(anyhow::anyhow!("cannot watch for SIGINT/SIGTERM: {e}")),
            };
            // Dropping `work` runs every destructor of the command in flight: each private
            // redis-server is killed and its directory removed, an --rdb temp file is deleted.
            // Rejected: a process-wide registry of children to kill from a signal handler; it
            // would duplicate what ownership already knows (and miss temp files).
            tokio::select! {
                r = work => r,
                sig = stop => Err(Stopped(sig).into()),
            }
        })
    });
    let result = match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(p) if is_broken_stdout(&*p) => {
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            return ExitCode::from(BROKEN_PIPE_EXIT);
        }
        Err(p) => std::panic::resume_unwind(p),
    };
    // Tasks still running (the demo's agent) are dropped here, their servers with them; a
    // blocking copy in flight gets a bounded wait rather than holding the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<cli::UsageError>() {
                eprintln!("error: {u}");
                return ExitCode::from(2);
            }
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The store settings of the global flags and their variables: the S3 endpoint, and the key
/// from `--encryption-key-file` or FLASHBACK_ENCRYPTION_KEY (one, not both). Commands set the
/// access they need. The key text stays in this process's environment (changing it is unsound
/// once threads run); `redis_server` keeps it out of every server it starts.
fn store_config(cli: &Cli) -> Result<StoreConfig, String> {
    use flashback::store::crypt::{EncryptionKey, KEY_ENV, KEY_FILE_ENV};
    let file = cli
        .encryption_key_file
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty());
    let text = std::env::var_os(KEY_ENV).filter(|v| !v.is_empty());
    let encryption_key = match (file, text) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "both --encryption-key-file ({KEY_FILE_ENV}) and {KEY_ENV} are set: keep one"
            ))
        }
        (Some(f), None) => Some(EncryptionKey::from_file(f).map_err(|e| e.to_string())?),
        (None, Some(t)) => {
            let t = zeroize::Zeroizing::new(t.into_encoded_bytes());
            Some(EncryptionKey::from_text(&t).map_err(|what| format!("{KEY_ENV}: {what}"))?)
        }
        (None, None) => None,
    };
    Ok(StoreConfig {
        access: Access::Read,
        s3_endpoint: cli.s3_endpoint.clone().filter(|e| !e.is_empty()),
        encryption_key,
    })
}

/// SIGINT or SIGTERM arrived: the command was abandoned and cleaned up after.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {0} before it finished: every redis-server this command started is stopped and its work files are removed")]
struct Stopped(&'static str);

/// Resolves with the name of the first SIGINT or SIGTERM. Installed before the work starts, so
/// a signal during startup is not lost to the default action (which would skip the cleanup).
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}

/// The error and its causes on one line, leaving out a cause whose text the message already
/// carries (our error types print their underlying I/O error themselves, so anyhow's `{:#}`
/// would say it twice).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
