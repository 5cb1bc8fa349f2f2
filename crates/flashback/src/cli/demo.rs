use flashback::demo::{self, DemoOptions};
use std::path::PathBuf;

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

pub async fn run(a: Args) -> anyhow::Result<()> {
    let opts = DemoOptions {
        redis_server: a.redis_server,
        seconds: a.seconds,
        keep_store: a.keep_store,
    };
    let mut out = std::io::stdout();
    demo::run(opts, &mut out).await?;
    Ok(())
}
