//! How a user hands flashback its encryption key: 64 hex digits, base64 of 32 bytes, or a file
//! holding either (or 32 raw bytes). The key derivation and fingerprint are part of the object
//! format (`flashback_format::crypt::Key`); this is only the parsing of what a person typed.
//!
//! The library reads no environment variable for the key: the binary reads
//! [`KEY_FILE_ENV`] / [`KEY_ENV`] (its flags) and calls [`EncryptionKey::from_file`] or
//! [`EncryptionKey::from_text`], then passes the key in `StoreConfig`. Rejected: a process-wide
//! key installed once (`OnceLock`), which hid from every caller which key a store was opened with.

use flashback_format::crypt::Key;
use std::fmt;
use std::path::Path as FsPath;
use std::sync::Arc;

/// The key itself, as 64 hex digits or base64 of 32 bytes. Read by the binary; the redis-servers
/// flashback starts never inherit it (`redis_server` removes it from their environment).
pub const KEY_ENV: &str = "FLASHBACK_ENCRYPTION_KEY";
/// A file holding the key: the environment form of `--encryption-key-file`.
pub const KEY_FILE_ENV: &str = "FLASHBACK_ENCRYPTION_KEY_FILE";

/// A key file that cannot be read or does not hold a key.
#[derive(Debug, thiserror::Error)]
#[error("encryption key file {path}: {what}")]
pub struct KeyFileError {
    pub path: String,
    pub what: String,
}

/// A 256-bit key, expanded. Never printed: `Debug` shows the fingerprint only.
#[derive(Clone)]
pub struct EncryptionKey(Arc<Key>);

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(fingerprint {})", self.fingerprint())
    }
}

const HOW_TO_MAKE: &str =
    "make one with `openssl rand -hex 32 > KEYFILE` (or `head -c 32 /dev/urandom > KEYFILE`)";

impl EncryptionKey {
    /// From the 32 key bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, String> {
        let Ok(raw) = <&[u8; 32]>::try_from(raw) else {
            return Err(format!(
                "{} bytes, but AES-256 needs 32; {HOW_TO_MAKE}",
                raw.len()
            ));
        };
        Key::derive(raw)
            .map(|k| EncryptionKey(Arc::new(k)))
            .map_err(|e| e.to_string())
    }

    /// 64 hex digits or base64 of 32 bytes, surrounding whitespace ignored.
    pub fn from_text(text: &[u8]) -> Result<Self, String> {
        let t = text.trim_ascii();
        if t.is_empty() {
            return Err(format!("empty; {HOW_TO_MAKE}"));
        }
        if t.iter().all(u8::is_ascii_hexdigit) {
            if t.len() != 64 {
                return Err(format!(
                    "{} hex digits ({} bytes), but AES-256 needs 32 bytes (64 hex digits); {HOW_TO_MAKE}",
                    t.len(),
                    t.len() / 2
                ));
            }
            let mut raw = zeroize::Zeroizing::new([0u8; 32]);
            for (out, pair) in raw.iter_mut().zip(t.chunks_exact(2)) {
                *out = (hex_val(pair[0]) << 4) | hex_val(pair[1]);
            }
            return Self::from_bytes(raw.as_slice());
        }
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(t) {
            Ok(raw) => {
                let raw = zeroize::Zeroizing::new(raw);
                Self::from_bytes(&raw).map_err(|e| format!("base64 of {e}"))
            }
            Err(_) => Err(format!(
                "neither 64 hex digits nor base64 of 32 bytes; {HOW_TO_MAKE}"
            )),
        }
    }

    /// A file of 64 hex digits, base64 of 32 bytes, or exactly 32 raw bytes.
    pub fn from_file(path: &FsPath) -> Result<Self, KeyFileError> {
        let err = |what: String| KeyFileError {
            path: path.display().to_string(),
            what,
        };
        let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "encryption key file {} can be read by other users: chmod 600 it",
                    path.display()
                );
            }
        }
        // 32 raw bytes that are all text characters would be a short hex or base64 key typed
        // by hand: read those as text, which then says what is wrong with them.
        let texty = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n\t ".contains(b));
        if bytes.len() == 32 && !texty {
            return Self::from_bytes(&bytes).map_err(err);
        }
        Self::from_text(&bytes).map_err(err)
    }

    /// Sixteen hex digits that identify the key without revealing it.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint()
    }

    /// The expanded key the object format seals and opens with.
    pub fn cipher_key(&self) -> Arc<Key> {
        self.0.clone()
    }
}

/// Only ever called on an ASCII hex digit.
fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c.to_ascii_lowercase().wrapping_sub(b'a').wrapping_add(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_forms() {
        let hexkey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let a = EncryptionKey::from_text(format!("{hexkey}\n").as_bytes()).unwrap();
        let b = EncryptionKey::from_text(hexkey.to_uppercase().as_bytes()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let b64 = "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=";
        let c = EncryptionKey::from_text(b64.as_bytes()).unwrap();
        assert_eq!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert!(!format!("{a:?}").contains("0011"), "{a:?}");

        let e = EncryptionKey::from_text(&hexkey.as_bytes()[..32]).unwrap_err();
        assert!(
            e.contains("32 hex digits (16 bytes)") && e.contains("openssl rand -hex 32"),
            "{e}"
        );
        let e = EncryptionKey::from_text(b"c2hvcnQ=").unwrap_err();
        assert!(e.contains("base64 of 5 bytes"), "{e}");
        let e = EncryptionKey::from_text(b"not a key!").unwrap_err();
        assert!(e.contains("neither 64 hex digits nor base64"), "{e}");
        assert!(EncryptionKey::from_text(b" \n")
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let raw: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x80).collect();
        let f = dir.path().join("raw.key");
        std::fs::write(&f, &raw).unwrap();
        let a = EncryptionKey::from_file(&f).unwrap();
        assert_eq!(
            a.fingerprint(),
            EncryptionKey::from_bytes(&raw).unwrap().fingerprint()
        );
        let hexed: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&f, format!("{hexed}\n")).unwrap();
        assert_eq!(
            EncryptionKey::from_file(&f).unwrap().fingerprint(),
            a.fingerprint()
        );
        std::fs::write(&f, &hexed.as_bytes()[..32]).unwrap();
        let e = EncryptionKey::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("raw.key") && e.contains("16 bytes"), "{e}");
        let e = EncryptionKey::from_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("encryption key file ") && e.contains("missing"),
            "{e}"
        );
    }
}
