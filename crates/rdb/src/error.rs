//! The reader's one error type. Every variant names the byte offset in the file where the
//! problem was found and, when the reader was given one, the file's name.

use std::fmt;

/// Where an error happened: an optional file name and a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: Option<String>,
    pub offset: u64,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(name) => write!(f, "{name}: byte {}", self.offset),
            None => write!(f, "byte {}", self.offset),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes do not follow the RDB format; `what` says what was expected there.
    #[error("{at}: corrupt RDB: {what}")]
    Corrupt { at: At, what: String },
    /// The input ended before the RDB did.
    #[error("{at}: RDB truncated: the input ends where {expected} was expected")]
    Truncated { at: At, expected: &'static str },
    /// The trailer's CRC-64 differs from the bytes before it.
    #[error("{at}: RDB checksum mismatch (stored {stored:#018x}, computed {computed:#018x}): the file is damaged")]
    Checksum { at: At, stored: u64, computed: u64 },
    /// Well-formed, but beyond what this reader decodes (a newer RDB version, a module value
    /// whose layout only its module knows).
    #[error("{at}: {what}")]
    Unsupported { at: At, what: String },
    /// A module value this reader cannot walk without the module that wrote it.
    #[error("{at}: key '{key}' holds a value of module type '{module}' written in the pre-release module format (RDB type 6), which only that module can parse; load the RDB into a server with the module instead")]
    UnknownModule { at: At, module: String, key: String },
    #[error("{at}: read failed: {source}")]
    Io {
        at: At,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Where the error was found.
    pub fn at(&self) -> &At {
        match self {
            Error::Corrupt { at, .. }
            | Error::Truncated { at, .. }
            | Error::Checksum { at, .. }
            | Error::Unsupported { at, .. }
            | Error::UnknownModule { at, .. }
            | Error::Io { at, .. } => at,
        }
    }

    /// The byte offset in the file where the error was found.
    pub fn offset(&self) -> u64 {
        self.at().offset
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
