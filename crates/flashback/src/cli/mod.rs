//! One module per subcommand: clap arguments, then a request for the library.

pub mod capture;
pub mod compact;
pub mod debug;
pub mod demo;
pub mod history;
pub mod info;
pub mod inspect;
pub mod mark;
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

/// `--tls-ca/--tls-cert/--tls-key/--tls-insecure`, for every subcommand that takes a
/// `rediss://` URL (and `restore --serve`, which serves TLS with the certificate and key).
#[derive(clap::Args, Clone, Default)]
pub struct TlsArgs {
    /// With rediss://: the CA certificate(s), PEM, the server's certificate must be signed by
    /// [default: the system's trust store]
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With rediss://: a client certificate (PEM), for servers with tls-auth-clients yes
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// With rediss://: the private key (PEM) of --tls-cert
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
    /// With rediss://: accept any server certificate, unverified (a warning at every start;
    /// not for production: anyone on the path can read and change the data)
    #[arg(long)]
    pub tls_insecure: bool,
}

impl TlsArgs {
    pub fn options(&self) -> flashback::net::TlsOptions {
        flashback::net::TlsOptions {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            insecure: self.tls_insecure,
        }
    }
}

/// A `redis[s]://` URL given to `flag`, with the TLS options; `--tls-insecure` is said loudly,
/// every time it is used.
pub fn parse_url(
    flag: &str,
    s: &str,
    tls: &TlsArgs,
) -> Result<flashback::client::RedisUrl, UsageError> {
    let url = flashback::client::RedisUrl::parse_with(s, &tls.options())
        .map_err(|e| UsageError(format!("{flag}: {e}")))?;
    if url.tls.as_ref().is_some_and(|t| t.insecure()) {
        tracing::warn!(
            "{flag} {url}: TLS certificate verification is OFF (--tls-insecure): the server is not authenticated, and anyone on the path can read and change the data; pass --tls-ca FILE instead"
        );
    }
    Ok(url)
}
