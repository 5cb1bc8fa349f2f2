//! Where captured data lives: an `Arc<dyn ObjectStore>` (local directory, S3, GCS, Azure) plus
//! the domain vocabulary over it. Only [`layout`] builds object names.
//!
//! A local store also exposes its root directory: the capture agent writes its open tail segment
//! there in place (append + fsync), which object stores cannot do. Restore reads everything,
//! tails included, through the object store API.
//!
//! With an encryption key ([`crypt`]), `os` encrypts and decrypts every object; the agent then
//! spools like for a remote store, since a tail cannot be encrypted in place.
//!
//! Everything a store needs is passed in a [`StoreConfig`] (the binary builds it from its flags
//! and their environment variables); the library reads no FLASHBACK_* variable. Rejected: the
//! binary setting variables for the library to read (`set_var`, unsound once threads run) and a
//! process-wide key, which hid which key a store was opened with. The cloud credential variables
//! object_store's own builders read (AWS_*, GOOGLE_*, AZURE_*) stay theirs.

pub mod aws_files;
pub mod catalog;
pub mod chain;
pub mod chunks;
pub mod cluster;
pub mod commands;
pub mod crypt;
pub mod layout;
pub mod manifest;
pub mod stream;

use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {url}: {what}")]
    Open { url: String, what: String },
    /// Displayed on one line (an S3/Azure XML body becomes "Code: Message").
    #[error("store: {}", short_error(&.0.to_string()))]
    ObjectStore(object_store::Error),
    /// A decryption failure, unwrapped from the object_store error that carried it, so the
    /// message is the object and what to do, without "Generic encryption error".
    #[error(transparent)]
    Encryption(crypt::CryptError),

    #[error("store: {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Format(#[from] flashback_format::Error),
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::Generic {
                store: crypt::ERROR_STORE,
                source,
            } => match source.downcast::<crypt::CryptError>() {
                Ok(c) => StoreError::Encryption(*c),
                Err(source) => StoreError::ObjectStore(object_store::Error::Generic {
                    store: crypt::ERROR_STORE,
                    source,
                }),
            },
            e => StoreError::ObjectStore(e),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pub os: Arc<dyn ObjectStore>,
    /// The directory behind a local store; None for remote ones.
    pub local_root: Option<PathBuf>,
    /// As the user gave it, for messages.
    pub url: String,
    /// Objects are encrypted client-side (`os` is a [`crypt::EncryptedStore`]).
    pub encrypted: bool,
}

/// How a command means to use the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Capture: create the directory if needed and prove it is writable now, not at the first
    /// segment seal minutes later.
    Write,
    /// Everything else: the store must already exist.
    Read,
}

/// Environment variable the binary reads for `--s3-endpoint` (an S3-compatible server: MinIO,
/// Ceph, R2, a test server); AWS itself needs none.
pub const S3_ENDPOINT_ENV: &str = "FLASHBACK_S3_ENDPOINT";

/// How to open a store: all of it explicit, nothing read from FLASHBACK_* variables.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub access: Access,
    /// The endpoint of an S3-compatible server for `s3://` stores: path-style requests,
    /// `http://` allowed, region `us-east-1` unless one is set.
    pub s3_endpoint: Option<String>,
    /// With a key every object is encrypted ([`crypt::EncryptedStore`]); without one an
    /// encrypted object read through the store fails asking for the key.
    pub encryption_key: Option<crypt::EncryptionKey>,
}

impl StoreConfig {
    /// No endpoint, no key.
    pub fn new(access: Access) -> StoreConfig {
        StoreConfig {
            access,
            s3_endpoint: None,
            encryption_key: None,
        }
    }

    /// The same settings for another use of a store.
    pub fn with_access(&self, access: Access) -> StoreConfig {
        StoreConfig {
            access,
            ..self.clone()
        }
    }
}

impl Store {
    /// Opens `./dir`, `/abs/dir`, `file:///abs/dir`, `s3://bucket[/prefix]`, `gs://bucket[/prefix]`
    /// or `az://container[/prefix]`. Remote credentials come from the usual environment of each
    /// cloud (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_REGION or the AWS shared files, see
    /// [`aws_files`]; GOOGLE_SERVICE_ACCOUNT,
    /// AZURE_STORAGE_ACCOUNT_NAME/AZURE_STORAGE_ACCOUNT_KEY, …). Opening a remote store does no
    /// I/O; call [`check`](Self::check) to fail fast with a clear message.
    ///
    /// With `config.encryption_key` every object is encrypted; without one, an encrypted object
    /// read through the store fails with a message asking for the key.
    pub fn open(url: &str, config: &StoreConfig) -> Result<Store, StoreError> {
        let mut store = Self::open_plain(url, config)?;
        store.os = match config.encryption_key.clone() {
            Some(key) => {
                store.encrypted = true;
                Arc::new(crypt::EncryptedStore::new(store.os, key))
            }
            None => Arc::new(crypt::PlainStore::new(store.os)),
        };
        Ok(store)
    }

    /// Opens without encryption, whatever key `config` holds: for capture's spool, which is
    /// local plaintext by design (deleted once uploaded).
    pub fn open_plain(url: &str, config: &StoreConfig) -> Result<Store, StoreError> {
        let err = |what: String| StoreError::Open {
            url: url.to_string(),
            what,
        };
        let path = if let Some(p) = url.strip_prefix("file://") {
            PathBuf::from(p)
        } else if let Some((scheme, _)) = url.split_once("://") {
            return match scheme {
                "s3" | "gs" | "az" => Self::open_remote(url, config.s3_endpoint.as_deref()),
                _ => Err(err(format!(
                    "unknown store scheme '{scheme}://': use a directory, file://, s3://, gs:// or az://"
                ))),
            };
        } else {
            PathBuf::from(url)
        };
        match config.access {
            Access::Write => {
                std::fs::create_dir_all(&path)
                    .map_err(|e| {
                        err(format!(
                            "cannot create the directory: {e}; pass a --store path in a directory you can write to"
                        ))
                    })?;
                match probe_writable(&path) {
                    Ok(()) => {}
                    // Writable but full: a capture spool must still open, so that uploading
                    // what it holds can free space; the first real write says "disk full".
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => tracing::warn!(
                        "{}: no space left on the device; free space, or the first write will fail",
                        path.display()
                    ),
                    Err(e) => {
                        return Err(err(format!(
                            "the directory is not writable: {e}; fix its permissions or pass another --store"
                        )))
                    }
                }
            }
            Access::Read => {
                if !path.is_dir() {
                    return Err(err(
                        "no such directory: pass the --store that capture wrote to".to_string(),
                    ));
                }
            }
        }
        let root = path.canonicalize().map_err(|e| err(e.to_string()))?;
        let os = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| err(e.to_string()))?
            .with_fsync(true);
        Ok(Store {
            os: Arc::new(os),
            local_root: Some(root),
            url: url.to_string(),
            encrypted: false,
        })
    }

    fn open_remote(url: &str, s3_endpoint: Option<&str>) -> Result<Store, StoreError> {
        let err = |what: String| StoreError::Open {
            url: url.to_string(),
            what,
        };
        let parsed = url::Url::parse(url).map_err(|e| err(format!("not a URL: {e}")))?;
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| err("no bucket name".into()))?;
        let prefix = parsed.path().trim_matches('/').to_string();
        let retry = object_store::RetryConfig {
            max_retries: 5,
            retry_timeout: std::time::Duration::from_secs(60),
            ..Default::default()
        };
        let inner: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => {
                // Conditional put (If-Match on the ETag) makes the agent's lease takeover
                // atomic (ship/lease.rs); set here so an AWS_CONDITIONAL_PUT in the
                // environment cannot turn it off.
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
                // The environment wins; the AWS shared files fill in what it leaves unset.
                let env_keys = std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
                let mut has_region = std::env::var_os("AWS_REGION").is_some()
                    || std::env::var_os("AWS_DEFAULT_REGION").is_some();
                if !(env_keys && has_region) {
                    if let Some(p) = aws_files::load_from_env().map_err(err)? {
                        if let (false, Some(why)) = (env_keys, p.no_keys) {
                            return Err(err(why));
                        }
                        if let (false, Some(id), Some(secret)) =
                            (env_keys, p.access_key_id, p.secret_access_key)
                        {
                            b = b.with_access_key_id(id).with_secret_access_key(secret);
                            if let Some(t) = p.session_token {
                                b = b.with_token(t);
                            }
                        }
                        if let (false, Some(r)) = (has_region, p.region) {
                            b = b.with_region(r);
                            has_region = true;
                        }
                    }
                }
                if let Some(endpoint) = s3_endpoint {
                    // Path-style requests: S3-compatible servers on a private network rarely have
                    // per-bucket DNS names.
                    b = b
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                    if !has_region {
                        b = b.with_region("us-east-1");
                    }
                }
                Arc::new(b.build().map_err(|e| err(e.to_string()))?)
            }
            // Emulators and private endpoints are reached through object_store's own variables
            // (GOOGLE_BASE_URL, AZURE_STORAGE_USE_EMULATOR, AZURE_STORAGE_ENDPOINT…), which
            // `from_env` reads: no flag of ours, unlike S3, whose compatible servers need
            // path-style requests and a default region on top of the endpoint.
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| err(config_failure("gs", &e)))?,
            ),
            "az" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| err(config_failure("az", &e)))?,
            ),
            other => return Err(err(format!("unknown scheme {other}"))),
        };
        let os: Arc<dyn ObjectStore> = if prefix.is_empty() {
            inner
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                inner,
                prefix.as_str(),
            ))
        };
        Ok(Store {
            os,
            local_root: None,
            url: url.to_string(),
            encrypted: false,
        })
    }

    pub fn is_remote(&self) -> bool {
        self.local_root.is_none()
    }

    /// Capture must write into a local spool and upload sealed objects: the store cannot take
    /// an open tail appended in place (remote), or must not hold plaintext (encrypted).
    pub fn needs_spool(&self) -> bool {
        self.is_remote() || self.encrypted
    }

    /// Proves the store answers (and, for `Write`, accepts a write) now, with one clear line if
    /// not, instead of the first real operation failing minutes later.
    pub async fn check(&self, access: Access) -> Result<(), StoreError> {
        if !self.is_remote() {
            return Ok(());
        }
        let fail = |e: object_store::Error| StoreError::Open {
            url: self.url.clone(),
            what: remote_failure(&self.url, &e),
        };
        match access {
            Access::Read => {
                self.os
                    .list_with_delimiter(Some(&layout::sources_prefix()))
                    .await
                    .map_err(fail)?;
            }
            Access::Write => {
                let probe = object_store::path::Path::from(format!(
                    "{}/.probe-{}",
                    layout::SOURCES,
                    std::process::id()
                ));
                self.os
                    .put(&probe, bytes::Bytes::from_static(b"probe").into())
                    .await
                    .map_err(fail)?;
                self.os.delete(&probe).await.map_err(fail)?;
            }
        }
        Ok(())
    }

    /// The file behind a key in a local store.
    pub fn local_path(&self, key: &object_store::path::Path) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| {
            let mut p = r.clone();
            for part in key.parts() {
                p.push(part.as_ref());
            }
            p
        })
    }
}

/// Why a remote store did not answer, in one line that names the fix for its cloud: the
/// credentials for a refused request, the bucket/container for a missing one, the endpoint
/// setting for one that cannot be reached, else the store's own message with all three hints.
fn remote_failure(url: &str, e: &object_store::Error) -> String {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    let (bucket, creds, endpoint) = match scheme {
        "gs" => (
            "bucket",
            "GOOGLE_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_BASE_URL (or gcs_base_url in the service-account JSON)",
        ),
        "az" => (
            "container",
            "AZURE_STORAGE_ACCOUNT_NAME/AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ENDPOINT (AZURITE_BLOB_STORAGE_URL for Azurite)",
        ),
        _ => (
            "bucket",
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            "--s3-endpoint",
        ),
    };
    let name = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .unwrap_or(url);
    let text = e.to_string();
    let short = short_error(&text);
    // object_store keeps its GCS credential error private, so only its text tells that no
    // credentials were configured (object_store then asked the GCE metadata server for a token).
    if scheme == "gs" && text.contains("Error performing token request") {
        let cause = text.rsplit(": ").next().unwrap_or_default().trim();
        return format!(
            "no GCS credentials (the metadata server gave no token: {cause}); set \
             GOOGLE_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS (for an emulator, a \
             service-account JSON with \"disable_oauth\": true and \"gcs_base_url\")"
        );
    }
    match classify(e) {
        Failure::Unreachable(cause) => {
            let host = request_host(&text).unwrap_or_else(|| "the endpoint".to_string());
            format!("cannot reach {host} ({cause}); check {endpoint} and the network")
        }
        Failure::Missing => format!(
            "the {bucket} '{name}' does not exist ({short}); create it, or fix the {bucket} name in --store"
        ),
        Failure::Refused => {
            format!("the store refused the credentials ({short}); check {creds}")
        }
        Failure::Other => format!(
            "the store does not answer as expected ({short}); check the {bucket} name, the credentials \
             ({creds}…) and {endpoint}"
        ),
    }
}

/// What a store error means for the one who configured the store.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The bucket or container (or the object) is not there.
    Missing,
    /// The credentials were refused or are missing.
    Refused,
    /// The request never got an answer: refused connection, no route, DNS, timeout. Holds the
    /// innermost cause's first line.
    Unreachable(String),
    Other,
}

/// Classifies by `object_store::Error` variant, and for `Generic` by the transport error among
/// its sources (object_store's `HttpError`: an error there means no HTTP answer came).
///
/// One narrow text fallback remains, for `Generic` errors that wrap an HTTP answer: object_store
/// 0.14 maps statuses to variants only for GET/PUT/HEAD (`RetryError::error`), while a failed
/// LIST (the read check) stays `Generic` around its private `RetryError`, whose status is
/// visible only in its message.
fn classify(e: &object_store::Error) -> Failure {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => return Failure::Missing,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => return Failure::Refused,
        E::Generic { .. } => {}
        _ => return Failure::Other,
    }
    if let Some(cause) = transport_failure(e) {
        return Failure::Unreachable(cause);
    }
    let text = e.to_string();
    let status = |code: &str| text.contains(&format!("status code: {code}"));
    // The status, else the error codes S3, Azure and GCS put in their bodies.
    let missing = [
        "NoSuchBucket",
        "ContainerNotFound",
        "no bucket named",
        "bucket does not exist",
    ];
    if status("404") || missing.iter().any(|m| text.contains(m)) {
        return Failure::Missing;
    }
    let refused = [
        "AuthorizationFailure",
        "AuthenticationFailed",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
    ];
    if status("401") || status("403") || refused.iter().any(|m| text.contains(m)) {
        return Failure::Refused;
    }
    Failure::Other
}

/// The innermost cause (first line) when a source of `e` is a transport error: the request
/// never got an HTTP answer.
fn transport_failure(e: &object_store::Error) -> Option<String> {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut transport = false;
    let mut cause: Option<String> = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<HttpError>() {
            // A body that could not be decoded came with an answer.
            transport |= h.kind() != HttpErrorKind::Decode;
        }
        cause = Some(s.to_string());
        source = s.source();
    }
    transport.then(|| {
        cause
            .filter(|c| !c.is_empty())
            .map(|c| c.lines().next().unwrap_or_default().trim().to_string())
            .unwrap_or_else(|| "no answer".to_string())
    })
}

/// A remote store's configuration that object_store refused before any request, with the
/// variables that set it.
fn config_failure(scheme: &str, e: &object_store::Error) -> String {
    let text = e.to_string();
    // "Generic MicrosoftAzure error: Account must be specified" -> "Account must be specified".
    let what = text.split_once(" error: ").map(|(_, w)| w).unwrap_or(&text);
    let what = what.lines().next().unwrap_or_default().trim();
    match scheme {
        "az" => format!(
            "{what}: set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or another \
             credential), or AZURE_STORAGE_USE_EMULATOR=true for Azurite"
        ),
        _ => format!(
            "{what}: set GOOGLE_SERVICE_ACCOUNT (a service-account JSON file) or \
             GOOGLE_APPLICATION_CREDENTIALS"
        ),
    }
}

/// `host:port` of the URL in object_store's "Error performing GET http://…" messages.
fn request_host(text: &str) -> Option<String> {
    let start = text.find("http://").or_else(|| text.find("https://"))?;
    let url = text[start..].split_whitespace().next()?;
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(match parsed.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// One line from a store error: S3- and Azure-style XML bodies become "Code: Message" (the
/// message's first line: Azure appends RequestId and Time lines), anything else its first line
/// (object_store appends whole response bodies, which an on-call reader does not need).
pub(crate) fn short_error(e: &str) -> String {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = e.find(&open)? + open.len();
        let end = e[start..].find(&format!("</{t}>"))? + start;
        Some(
            e[start..end]
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => e.lines().next().unwrap_or_default().trim().to_string(),
    }
}

fn probe_writable(dir: &FsPath) -> std::io::Result<()> {
    let probe = dir.join(format!(".flashback-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe")?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Azure's error bodies carry `RequestId:` and `Time:` lines inside `<Message>`; the line
    /// printed keeps only the message itself.
    #[test]
    fn short_error_is_one_line_for_azure_bodies() {
        let body = "Server responded with 404: <?xml version=\"1.0\"?>\n<Error>\n  \
                    <Code>ContainerNotFound</Code>\n  <Message>The specified container does not exist.\n\
                    RequestId:08d0\nTime:2026-11-23T20:31:23.463Z</Message>\n</Error>";
        assert_eq!(
            short_error(body),
            "ContainerNotFound: The specified container does not exist."
        );
    }

    #[test]
    fn request_host_names_the_endpoint() {
        let text = "Generic MicrosoftAzure error: Error performing list request: Error performing GET \
                    http://127.0.0.1:18029/devstoreaccount1/c?restype=container in 777ms, after 5 retries";
        assert_eq!(request_host(text).as_deref(), Some("127.0.0.1:18029"));
        assert_eq!(request_host("no url here"), None);
    }

    fn boxed(text: &str) -> Box<dyn std::error::Error + Send + Sync> {
        text.into()
    }

    /// One class per `object_store::Error` variant (a `Generic` by the transport error among
    /// its sources), each with the line a user sees.
    #[test]
    fn store_failures_are_classified_by_variant() {
        use object_store::client::{HttpError, HttpErrorKind};
        use object_store::Error as E;
        let path = || "sources/.probe-1".to_string();
        let line = |e: &E| remote_failure("s3://bkt/p", e);

        let missing = E::NotFound {
            path: path(),
            source: boxed("gone"),
        };
        assert_eq!(classify(&missing), Failure::Missing);
        assert!(
            line(&missing).starts_with("the bucket 'bkt' does not exist"),
            "{}",
            line(&missing)
        );
        for refused in [
            E::PermissionDenied {
                path: path(),
                source: boxed("<Code>AccessDenied</Code>"),
            },
            E::Unauthenticated {
                path: path(),
                source: boxed("no"),
            },
        ] {
            assert_eq!(classify(&refused), Failure::Refused);
            let l = line(&refused);
            assert!(
                l.starts_with("the store refused the credentials")
                    && l.contains("AWS_ACCESS_KEY_ID"),
                "{l}"
            );
        }
        let refused_conn =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let down = E::Generic {
            store: "S3",
            source: Box::new(HttpError::new(HttpErrorKind::Connect, refused_conn)),
        };
        assert_eq!(
            classify(&down),
            Failure::Unreachable("Connection refused".into())
        );
        assert!(
            line(&down)
                .starts_with("cannot reach the endpoint (Connection refused); check --s3-endpoint"),
            "{}",
            line(&down)
        );
        // An answer whose body would not decode came from a reachable store.
        let garbled = E::Generic {
            store: "S3",
            source: Box::new(HttpError::new(
                HttpErrorKind::Decode,
                std::io::Error::other("bad body"),
            )),
        };
        assert_eq!(classify(&garbled), Failure::Other);
        // A failed LIST stays Generic around object_store's private RetryError: its status.
        let list = E::Generic {
            store: "MicrosoftAzure",
            source: boxed("Error performing list request: Server returned non-2xx status code: 403 Forbidden: <Code>AuthenticationFailed</Code>"),
        };
        assert_eq!(classify(&list), Failure::Refused);
        let list = E::Generic {
            store: "GCS",
            source: boxed("Error performing list request: Server returned non-2xx status code: 404 Not Found: "),
        };
        assert_eq!(classify(&list), Failure::Missing);
        for other in [
            E::AlreadyExists {
                path: path(),
                source: boxed("exists"),
            },
            E::Precondition {
                path: path(),
                source: boxed("etag"),
            },
            E::NotModified {
                path: path(),
                source: boxed("same"),
            },
            E::Generic {
                store: "S3",
                source: boxed("something else"),
            },
        ] {
            assert_eq!(classify(&other), Failure::Other, "{other}");
            assert!(
                line(&other).starts_with("the store does not answer as expected"),
                "{}",
                line(&other)
            );
        }
    }
}
