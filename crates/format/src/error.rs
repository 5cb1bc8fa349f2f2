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
    /// An open tail holds a bad block with intact blocks after it: damage on disk (bit rot, a
    /// bad sector, a stray write), not a write the agent died in the middle of. The records
    /// from the bad block on are not to be used, and not to be dropped silently either.
    #[error("{file}: damaged at {damage}")]
    Damaged {
        file: String,
        damage: Box<crate::segment::Damage>,
    },
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
