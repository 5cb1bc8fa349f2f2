//! `flashback prune`: retention. Lists (`--dry-run`) or deletes what the policy no longer needs.

use super::{UsageError, DEFAULT_STORE};
use flashback::prune::{self, Policy};
use flashback::store::{catalog, Access, Store, StoreConfig};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  flashback prune --keep 7d --dry-run
  flashback prune --keep 7d --keep-daily 30 --keep-weekly 12 --keep-monthly 12
  flashback prune --store /var/lib/flashback --name sessions --keep 48h

Every instant of the last --keep stays restorable. --keep-daily/weekly/monthly N also keep the
newest base of each of the last N days, ISO weeks and months (UTC), as restore points at that
base's own time. Open tails, the newest generation and anything the kept points need are never
deleted. Without --name, every source in the store is pruned.")]
pub struct Args {
    /// Where capture stored the data
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Only this source [default: every source in the store]
    #[arg(long)]
    name: Option<String>,
    /// The continuous window to keep restorable, back from now: '7d', '48h', '2w', '1d12h'
    #[arg(long, value_name = "DURATION")]
    keep: String,
    /// Also keep the newest base of each of the last N days (UTC)
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_daily: u32,
    /// Also keep the newest base of each of the last N ISO weeks (UTC)
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_weekly: u32,
    /// Also keep the newest base of each of the last N months (UTC)
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_monthly: u32,
    /// List what would be deleted, and why, and delete nothing
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(a: Args, config: &StoreConfig) -> anyhow::Result<()> {
    let keep = flashback::timespec::parse_duration(&a.keep)
        .map_err(|e| UsageError(format!("--keep: {e}")))?;
    if keep.is_zero() {
        return Err(UsageError(
            "--keep 0 would leave only the newest base restorable; give the window to keep, e.g. --keep 7d".into(),
        )
        .into());
    }
    let policy = Policy {
        keep,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
    };
    let store = Store::open(&a.store, &config.with_access(Access::Read))?;
    store.check(Access::Read).await?;
    let all = catalog::list_sources(&store).await?;
    let sources = match a.name {
        Some(n) if all.contains(&n) => vec![n],
        Some(n) => anyhow::bail!(
            "no source named '{n}' in {}; sources there: {}",
            a.store,
            if all.is_empty() {
                "none".to_string()
            } else {
                all.join(", ")
            }
        ),
        None if all.is_empty() => {
            anyhow::bail!("{} holds no captured source: nothing to prune", a.store)
        }
        None => all,
    };
    let now = flashback::now_ms();
    for (i, source) in sources.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let gens = catalog::load_generations(&store, source).await?;
        let plan = prune::prune_plan(&gens, &policy, now);
        println!(
            "source '{source}'{}:",
            if a.dry_run {
                " (dry run: nothing is deleted)"
            } else {
                ""
            }
        );
        println!("{plan}");
        if a.dry_run || plan.deletions.is_empty() {
            continue;
        }
        let report = prune::execute(&store, &plan).await?;
        println!("{report}");
    }
    Ok(())
}
