//! Client-side encryption at rest: with a key, `Store::os` is an [`EncryptedStore`] and every
//! object is stored as AES-256-GCM ciphertext, so capture's uploader, restore, info, verify,
//! compact and prune all get it without knowing. Objects arrive already compressed (segments
//! are zstd blocks, bases are RDB with its own LZF), so compression comes before encryption, as
//! it must: ciphertext does not compress. A store opened without a key is wrapped in
//! [`PlainStore`], which refuses to hand out an encrypted object's bytes as if they were data.
//!
//! - `flashback_format::crypt`: the object format itself (header, 1 MiB chunks, seal and open,
//!   sizes), pure and fuzzable, with no tokio; re-exported here where callers need it.
//! - [`key`]: how a user gives the key (hex, base64, a file).
//! - [`encrypted`]: the `ObjectStore` wrapper that encrypts and decrypts (ranged reads,
//!   multipart uploads, re-encrypting copies).
//! - [`plain`]: the wrapper of a store opened without a key.

pub mod encrypted;
pub mod key;
pub mod plain;
#[cfg(test)]
mod tests;

pub use encrypted::EncryptedStore;
pub use flashback_format::crypt::{
    plain_size, stored_size, CryptError, CHUNK, HEADER_LEN, MAGIC, TAG_LEN, VERSION,
};
pub use key::{EncryptionKey, KeyFileError, KEY_ENV, KEY_FILE_ENV};
pub use plain::PlainStore;

/// The `store` of the `object_store::Error::Generic` that carries a [`CryptError`];
/// `StoreError` unwraps it.
pub const ERROR_STORE: &str = "encryption";

/// A decryption failure as the `object_store` error the wrappers must return; `StoreError`
/// downcasts it back. (A `From` impl is not allowed: both types are foreign here.)
pub(crate) fn os_error(e: CryptError) -> object_store::Error {
    object_store::Error::Generic {
        store: ERROR_STORE,
        source: Box::new(e),
    }
}
