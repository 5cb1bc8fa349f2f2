//! Where captured data lives: an `Arc<dyn ObjectStore>` (local directory, S3, GCS, Azure) plus
//! the domain vocabulary over it. Only [`layout`] builds object names.
//!
//! A local store also exposes its root directory: the capture agent writes its open tail segment
//! there in place (append + fsync), which object stores cannot do. Restore reads everything,
//! tails included, through the object store API.

pub mod catalog;
pub mod layout;
pub mod manifest;

use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {url}: {what}")]
    Open { url: String, what: String },
    #[error("store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("store: {path}: {source}")]
    Io { path: String, #[source] source: std::io::Error },
    #[error(transparent)]
    Format(#[from] flashback_format::Error),
}

#[derive(Clone)]
pub struct Store {
    pub os: Arc<dyn ObjectStore>,
    /// The directory behind a local store; None for remote ones.
    pub local_root: Option<PathBuf>,
    /// As the user gave it, for messages.
    pub url: String,
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

impl Store {
    /// Opens `./dir`, `/abs/dir` or `file:///abs/dir`. Remote URLs (s3://, gs://, az://) are
    /// recognised and refused with a clear message until remote stores land.
    pub fn open(url: &str, access: Access) -> Result<Store, StoreError> {
        let err = |what: String| StoreError::Open { url: url.to_string(), what };
        let path = if let Some(p) = url.strip_prefix("file://") {
            PathBuf::from(p)
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(err(format!(
                "'{scheme}://' stores are not supported by this build yet; use a local directory"
            )));
        } else {
            PathBuf::from(url)
        };
        match access {
            Access::Write => {
                std::fs::create_dir_all(&path).map_err(|e| err(format!("cannot create the directory: {e}")))?;
                probe_writable(&path).map_err(|e| err(format!("the directory is not writable: {e}; fix its permissions or pass another --store")))?;
            }
            Access::Read => {
                if !path.is_dir() {
                    return Err(err("no such directory: pass the --store that capture wrote to".to_string()));
                }
            }
        }
        let root = path.canonicalize().map_err(|e| err(e.to_string()))?;
        let os = LocalFileSystem::new_with_prefix(&root).map_err(|e| err(e.to_string()))?.with_fsync(true);
        Ok(Store { os: Arc::new(os), local_root: Some(root), url: url.to_string() })
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

fn probe_writable(dir: &FsPath) -> std::io::Result<()> {
    let probe = dir.join(format!(".flashback-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe")?;
    std::fs::remove_file(&probe)
}
