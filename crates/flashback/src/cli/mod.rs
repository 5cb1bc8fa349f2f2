//! One module per subcommand: clap arguments, then a request for the library.

pub mod capture;
pub mod compact;
pub mod debug;
pub mod demo;
pub mod history;
pub mod info;
pub mod inspect;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod timeline;
pub mod verify;

use flashback::store::{catalog, Access, Store, StoreConfig};

pub const DEFAULT_STORE: &str = "./flashback-data";

/// A mistake in how the command was called (exit code 2), as opposed to a runtime failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Opens the store for reading and picks the source: `--name`, or the only one there.
pub async fn open_source(
    store_url: &str,
    config: &StoreConfig,
    name: Option<String>,
) -> anyhow::Result<(Store, String)> {
    let store = Store::open(store_url, &config.with_access(Access::Read))?;
    store.check(Access::Read).await?;
    let sources = catalog::list_sources(&store).await?;
    let name = match name {
        Some(n) if sources.contains(&n) => n,
        Some(n) => anyhow::bail!(
            "no source named '{n}' in {store_url}; sources there: {}",
            if sources.is_empty() { "none".to_string() } else { sources.join(", ") }
        ),
        None => match sources.as_slice() {
            [one] => one.clone(),
            [] => anyhow::bail!("{store_url} holds no captured source yet: run flashback capture --store {store_url} first"),
            many => return Err(UsageError(format!("{store_url} holds several sources ({}): pick one with --name", many.join(", "))).into()),
        },
    };
    Ok((store, name))
}
