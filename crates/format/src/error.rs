use thiserror::Error;

/// What went wrong reading or writing a persisted file. `file` is the name the caller gave the
/// bytes (an object key or a path), so that messages point at the exact thing to inspect.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not what the format says: a bad checksum, magic, or length.
    #[error("{file}: corrupt at byte {offset}: {what}")]
    Corrupt {
        file: String,
        offset: u64,
        what: String,
    },
    /// A newer (or unknown) format version than this build reads.
    #[error("{file}: format version {found} is not supported (this build reads up to {supported}); upgrade flashback")]
    Version {
        file: String,
        found: u32,
        supported: u32,
    },
    /// `records()` was asked for a block that holds a slice of a large record.
    #[error(
        "{file}: block {block} holds a slice of a record stored in fragments; read it with items()"
    )]
    Fragmented { file: String, block: usize },
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn corrupt(file: &str, offset: u64, what: impl Into<String>) -> Self {
        Error::Corrupt {
            file: file.to_string(),
            offset,
            what: what.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
