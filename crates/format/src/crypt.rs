//! The encrypted-object format (encryption at rest, `docs/formats.md` §6): the 34-byte header,
//! the 1 MiB chunk framing and sizes, and the AES-256-GCM seal and open of each chunk, with
//! [`open`] decrypting a whole object's bytes as a pure function that never panics.
//!
//! Why here and not beside the `ObjectStore` wrapper that uses it (`flashback::store::crypt`):
//! every persisted format's codec lives in this crate, without tokio or a network, so that it
//! can be fuzzed and golden-tested on its own; decrypting bytes an attacker may have written is
//! exactly what a fuzzer should hammer. The wrapper keeps only the store plumbing (streams,
//! ranged reads, multipart uploads, copies) and how a user hands over the key.
//!
//! Each chunk is sealed on its own: the nonce of chunk i is the object's random base nonce XOR
//! i, and its additional data binds the header, i, a last-chunk flag and the object's name, so
//! chunks cannot be reordered, dropped from the end, or moved to another object undetected.
//! Rejected: binding a random object id kept in the header, which would let a whole object be
//! served as another one (segment A's bytes as segment B).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// First bytes of every encrypted object. Like PNG's signature: `\r\n` and `\x1a` make
/// line-ending conversion or a text-mode transfer visible as a bad magic.
pub const MAGIC: [u8; 8] = *b"FBENC\r\n\x1a";
pub const VERSION: u8 = 1;
pub const ALG_AES_256_GCM: u8 = 1;
pub const HEADER_LEN: usize = 34;
pub const TAG_LEN: usize = 16;
pub const FINGERPRINT_LEN: usize = 8;
/// Plaintext bytes per chunk. Fixed for version 1: listings turn stored sizes into plaintext
/// sizes without reading each object's header, which they could not afford.
pub const CHUNK: u32 = 1 << 20;

/// Everything that can be wrong with an encrypted object, each naming what to do. `key` is the
/// object's name in the store.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("{key}: not an encrypted object (it does not start with flashback's encryption header): it was stored without an encryption key; read this store without --encryption-key-file and FLASHBACK_ENCRYPTION_KEY, and keep encrypted captures in a store of their own")]
    NotEncrypted { key: String },
    #[error("{key}: this object is encrypted (key fingerprint {fingerprint}); pass --encryption-key-file FILE or set FLASHBACK_ENCRYPTION_KEY to read this store")]
    KeyMissing { key: String, fingerprint: String },
    #[error("{key}: this object was encrypted with another key (fingerprint {theirs}; the key given has fingerprint {ours}); pass the right --encryption-key-file")]
    WrongKey {
        key: String,
        theirs: String,
        ours: String,
    },
    #[error("{key}: encryption format version {version}, algorithm {alg}, is not one this flashback reads (version 1, algorithm 1); upgrade flashback")]
    Unsupported { key: String, version: u8, alg: u8 },
    #[error("{key}: encrypted in chunks of {theirs} bytes, but this version reads chunks of {ours}; upgrade flashback")]
    ChunkSize { key: String, theirs: u32, ours: u32 },
    #[error("{key}: truncated: {what}")]
    Truncated { key: String, what: String },
    #[error("{key}: chunk {index} (stored bytes {start}..{end}) fails authentication: the object is damaged (corrupt, cut short or modified)")]
    Corrupt {
        key: String,
        index: u64,
        start: u64,
        end: u64,
    },
    #[error("{key}: {what}")]
    Range { key: String, what: String },
    #[error("key derivation failed")]
    Derive,
    #[error("the system random number generator failed")]
    Random,
}

/// A 256-bit key, expanded. Never printed: `Debug` shows the fingerprint only.
pub struct Key {
    aead: LessSafeKey,
    fingerprint: [u8; FINGERPRINT_LEN],
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(fingerprint {})", self.fingerprint())
    }
}

struct OkmLen(usize);

impl ring::hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl Key {
    /// From the 32 key bytes. Two subkeys come out of HKDF-SHA256 — the AES key and the
    /// fingerprint — so the fingerprint printed in errors says nothing about the AES key.
    pub fn derive(raw: &[u8; 32]) -> Result<Key, CryptError> {
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"flashback encryption v1").extract(raw);
        let unbound: UnboundKey = prk
            .expand(&[b"aes-256-gcm object key"], &AES_256_GCM)
            .map_err(|_| CryptError::Derive)?
            .into();
        let mut fingerprint = [0u8; FINGERPRINT_LEN];
        prk.expand(&[b"key fingerprint"], OkmLen(FINGERPRINT_LEN))
            .and_then(|okm| okm.fill(&mut fingerprint))
            .map_err(|_| CryptError::Derive)?;
        Ok(Key {
            aead: LessSafeKey::new(unbound),
            fingerprint,
        })
    }

    /// Sixteen hex digits that identify the key without revealing it.
    pub fn fingerprint(&self) -> String {
        hex(&self.fingerprint)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 34-byte header at the front of every encrypted object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub chunk: u32,
    pub fingerprint: [u8; FINGERPRINT_LEN],
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8] = VERSION;
        h[9] = ALG_AES_256_GCM;
        h[10..14].copy_from_slice(&self.chunk.to_le_bytes());
        h[14..22].copy_from_slice(&self.fingerprint);
        h[22..34].copy_from_slice(&self.nonce);
        h
    }

    /// Checks `b` (the object's first bytes, any length) in the order that gives the most
    /// useful message: magic, version, key, chunk size. `stored` is the object's whole size,
    /// for the message when it is too short.
    pub fn decode(key: &str, b: &[u8], stored: u64, ours: &Key) -> Result<Self, CryptError> {
        let m = b.len().min(MAGIC.len());
        if b.get(..m) != MAGIC.get(..m) || stored == 0 {
            return Err(CryptError::NotEncrypted {
                key: key.to_string(),
            });
        }
        let Some(b) = b.get(..HEADER_LEN) else {
            return Err(CryptError::Truncated {
                key: key.to_string(),
                what: format!(
                    "{stored} bytes is shorter than the {HEADER_LEN}-byte encryption header"
                ),
            });
        };
        if b[8] != VERSION || b[9] != ALG_AES_256_GCM {
            return Err(CryptError::Unsupported {
                key: key.to_string(),
                version: b[8],
                alg: b[9],
            });
        }
        let mut h = Header {
            chunk: u32::from_le_bytes([b[10], b[11], b[12], b[13]]),
            fingerprint: [0; FINGERPRINT_LEN],
            nonce: [0; NONCE_LEN],
        };
        h.fingerprint.copy_from_slice(&b[14..22]);
        h.nonce.copy_from_slice(&b[22..34]);
        if h.fingerprint != ours.fingerprint {
            return Err(CryptError::WrongKey {
                key: key.to_string(),
                theirs: hex(&h.fingerprint),
                ours: ours.fingerprint(),
            });
        }
        if h.chunk != CHUNK {
            return Err(CryptError::ChunkSize {
                key: key.to_string(),
                theirs: h.chunk,
                ours: CHUNK,
            });
        }
        Ok(h)
    }
}

/// Stored size of an object of `plain` bytes: even an empty one has one (empty) chunk, so that
/// cutting an object down to its header is detected like any other truncation.
pub fn stored_size(plain: u64) -> u64 {
    let c = CHUNK as u64;
    let chunks = plain.div_ceil(c).max(1);
    HEADER_LEN as u64 + plain + chunks * TAG_LEN as u64
}

/// The plaintext size behind `stored` bytes, or None when no object has that size.
pub fn plain_size(stored: u64) -> Option<u64> {
    let c = CHUNK as u64;
    let body = stored.checked_sub(HEADER_LEN as u64)?;
    let (full, rem) = (body / (c + TAG_LEN as u64), body % (c + TAG_LEN as u64));
    match rem {
        0 if full == 0 => None,
        0 => Some(full * c),
        r if r >= TAG_LEN as u64 => Some(full * c + r - TAG_LEN as u64),
        _ => None,
    }
}

/// [`plain_size`], or the error that names an impossible size.
pub fn plain_size_of(key: &str, stored: u64) -> Result<u64, CryptError> {
    plain_size(stored).ok_or_else(|| CryptError::Truncated {
        key: key.to_string(),
        what: format!(
            "{stored} stored bytes is not a whole encrypted object (header and chunks of {CHUNK} + {TAG_LEN} bytes)"
        ),
    })
}

/// For listings, which cannot fail one object at a time: the plaintext a damaged object
/// could at most hold. Reading it then fails with the reason.
pub fn listed_size(stored: u64) -> u64 {
    plain_size(stored).unwrap_or_else(|| {
        let body = stored.saturating_sub(HEADER_LEN as u64);
        let full = CHUNK as u64 + TAG_LEN as u64;
        body / full * CHUNK as u64 + (body % full).saturating_sub(TAG_LEN as u64)
    })
}

pub fn chunk_count(plain: u64) -> u64 {
    plain.div_ceil(CHUNK as u64).max(1)
}

/// Stored bytes of chunk `i` of an object of `stored` bytes.
pub fn chunk_span(i: u64, stored: u64) -> Range<u64> {
    let full = CHUNK as u64 + TAG_LEN as u64;
    let start = (HEADER_LEN as u64).saturating_add(i.saturating_mul(full));
    start..start.saturating_add(full).min(stored)
}

/// One object's chunk cipher: the header plus the name the chunks are bound to.
pub struct ChunkCipher {
    key: Arc<Key>,
    header: [u8; HEADER_LEN],
    nonce: [u8; NONCE_LEN],
    bound_to: String,
}

impl ChunkCipher {
    pub fn new(key: Arc<Key>, h: &Header, bound_to: &str) -> Self {
        ChunkCipher {
            key,
            header: h.encode(),
            nonce: h.nonce,
            bound_to: bound_to.to_string(),
        }
    }

    /// The object name the chunks are bound to.
    pub fn bound_to(&self) -> &str {
        &self.bound_to
    }

    pub fn header(&self) -> [u8; HEADER_LEN] {
        self.header
    }

    fn nonce(&self, i: u64) -> Nonce {
        let mut n = self.nonce;
        for (b, x) in n[NONCE_LEN - 8..].iter_mut().zip(i.to_le_bytes()) {
            *b ^= x;
        }
        Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, i: u64, last: bool) -> Vec<u8> {
        let mut a = Vec::with_capacity(HEADER_LEN + 9 + self.bound_to.len());
        a.extend_from_slice(&self.header);
        a.extend_from_slice(&i.to_le_bytes());
        a.push(last as u8);
        a.extend_from_slice(self.bound_to.as_bytes());
        a
    }

    /// Appends chunk `i` of `plain` to `out`, sealed.
    pub fn seal_into(&self, i: u64, last: bool, plain: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self.seal_in_place(i, last, &mut out[start..]);
        out.extend_from_slice(&tag);
    }

    /// Seals chunk `i` in place (`chunk` holds its plaintext); returns the tag that follows it.
    pub fn seal_in_place(&self, i: u64, last: bool, chunk: &mut [u8]) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        // ring refuses only inputs over GCM's limit (64 GiB), never a chunk of at most CHUNK
        // bytes, which every caller passes.
        if let Ok(tag) = self.key.aead.seal_in_place_separate_tag(
            self.nonce(i),
            Aad::from(self.aad(i, last)),
            chunk,
        ) {
            out.copy_from_slice(tag.as_ref());
        }
        out
    }

    /// Opens chunk `i` (ciphertext and tag) in place; returns its plaintext length. `stored`
    /// is the object's whole size, for the byte span in messages.
    pub fn open(
        &self,
        i: u64,
        last: bool,
        chunk: &mut [u8],
        stored: u64,
    ) -> Result<usize, CryptError> {
        let len = chunk.len();
        let span = chunk_span(i, stored);
        // A full-size last chunk may be a middle chunk of an object cut at a chunk boundary;
        // ring zeroes the buffer when authentication fails, so keep the bytes to try that.
        let cut_candidate = (last && len == CHUNK as usize + TAG_LEN).then(|| chunk.to_vec());
        if self
            .key
            .aead
            .open_in_place(self.nonce(i), Aad::from(self.aad(i, last)), chunk)
            .is_ok()
        {
            return Ok(len - TAG_LEN);
        }
        if let Some(mut copy) = cut_candidate {
            if self
                .key
                .aead
                .open_in_place(self.nonce(i), Aad::from(self.aad(i, false)), &mut copy)
                .is_ok()
            {
                return Err(CryptError::Truncated {
                    key: self.bound_to.clone(),
                    what: format!(
                        "it ends after chunk {i} (stored byte {}), which was not its last chunk",
                        span.end
                    ),
                });
            }
        }
        Err(CryptError::Corrupt {
            key: self.bound_to.clone(),
            index: i,
            start: span.start,
            end: span.end,
        })
    }
}

/// Turns a plaintext stream into sealed chunks; a chunk is sealed only once a byte after it
/// arrives, because only then is it known not to be the last.
pub struct Sealer {
    cipher: ChunkCipher,
    next: u64,
    pending: Vec<u8>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer({}, chunk {})", self.cipher.bound_to, self.next)
    }
}

impl Sealer {
    /// A new object bound to `bound_to`, with a fresh random nonce. Also returns the header,
    /// the object's first bytes.
    pub fn new(key: Arc<Key>, bound_to: &str) -> Result<(Self, [u8; HEADER_LEN]), CryptError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CryptError::Random)?;
        let h = Header {
            chunk: CHUNK,
            fingerprint: key.fingerprint,
            nonce,
        };
        let cipher = ChunkCipher::new(key, &h, bound_to);
        let header = cipher.header;
        Ok((
            Sealer {
                cipher,
                next: 0,
                pending: Vec::new(),
            },
            header,
        ))
    }

    /// Appends to `out` every chunk that `data` completes and that is known not to be last.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let c = CHUNK as usize;
        let mut data = data;
        // Whole chunks straight from `data` when nothing is pending: no copy into `pending`.
        while self.pending.is_empty() && data.len() > c {
            self.cipher.seal_into(self.next, false, &data[..c], out);
            self.next += 1;
            data = &data[c..];
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() > c {
            let rest = self.pending.split_off(c);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.cipher.seal_into(self.next, false, &chunk, out);
            self.next += 1;
        }
    }

    /// Appends the last chunk (what is pending, possibly nothing).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let rest = std::mem::take(&mut self.pending);
        self.cipher.seal_into(self.next, true, &rest, out);
        self.next += 1;
    }
}

/// A whole object: `parts` (the plaintext, in pieces) encrypted for the name `bound_to`.
pub fn seal<'a>(
    key: Arc<Key>,
    bound_to: &str,
    parts: impl IntoIterator<Item = &'a [u8]>,
    plain_len: u64,
) -> Result<Vec<u8>, CryptError> {
    let (mut sealer, header) = Sealer::new(key, bound_to)?;
    let mut out = Vec::with_capacity(usize::try_from(stored_size(plain_len)).unwrap_or(0));
    out.extend_from_slice(&header);
    for part in parts {
        sealer.push(part, &mut out);
    }
    sealer.finish(&mut out);
    Ok(out)
}

/// Decrypts the whole stored object `bytes`, named `object_name` in the store, with `key`. A
/// pure function over untrusted bytes: any damage is an error naming it, never a panic.
pub fn open(key: Arc<Key>, object_name: &str, bytes: &[u8]) -> Result<Vec<u8>, CryptError> {
    let stored = bytes.len() as u64;
    let h = Header::decode(object_name, bytes, stored, &key)?;
    let plain = plain_size_of(object_name, stored)?;
    let cipher = ChunkCipher::new(key, &h, object_name);
    let chunks = chunk_count(plain);
    let mut out = Vec::with_capacity(usize::try_from(plain).unwrap_or(0));
    let mut chunk = Vec::with_capacity(CHUNK as usize + TAG_LEN);
    for i in 0..chunks {
        let span = chunk_span(i, stored);
        let (Ok(start), Ok(end)) = (usize::try_from(span.start), usize::try_from(span.end)) else {
            return Err(cipher_truncated(&cipher, i, &span, 0));
        };
        let Some(sealed) = bytes.get(start..end) else {
            return Err(cipher_truncated(&cipher, i, &span, 0));
        };
        chunk.clear();
        chunk.extend_from_slice(sealed);
        let n = cipher.open(i, i + 1 == chunks, &mut chunk, stored)?;
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

/// The store sent `got` bytes of chunk `i` where `span` needed more.
pub fn cipher_truncated(cipher: &ChunkCipher, i: u64, span: &Range<u64>, got: usize) -> CryptError {
    CryptError::Truncated {
        key: cipher.bound_to.clone(),
        what: format!(
            "the store sent {got} of the {} bytes of chunk {i} (stored bytes {}..{})",
            span.end.saturating_sub(span.start),
            span.start,
            span.end
        ),
    }
}

/// Err if `prefix` (an object's first bytes) is an encryption header: for readers without a
/// key, which must not take ciphertext for data.
pub fn refuse_encrypted(key: &str, prefix: &[u8]) -> Result<(), CryptError> {
    if prefix.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Ok(());
    }
    let fingerprint = match prefix.get(14..22) {
        Some(fp) => hex(fp),
        None => "unknown".into(),
    };
    Err(CryptError::KeyMissing {
        key: key.to_string(),
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = CHUNK as u64;

    fn key(byte: u8) -> Arc<Key> {
        Arc::new(Key::derive(&[byte; 32]).unwrap())
    }

    fn data(len: u64) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect()
    }

    #[test]
    fn sizes_map_both_ways() {
        for p in [0, 1, 15, 16, C - 1, C, C + 1, 2 * C, 3 * C + 5, 1 << 40] {
            let s = stored_size(p);
            assert_eq!(plain_size(s), Some(p), "plaintext {p} stored as {s}");
        }
        let h = HEADER_LEN as u64;
        assert_eq!(stored_size(0), h + 16);
        assert_eq!(stored_size(C), h + C + 16);
        assert_eq!(stored_size(C + 1), h + C + 1 + 32);
        for bad in [0, h - 1, h, h + 15, h + C + 16 + 15] {
            assert_eq!(plain_size(bad), None, "{bad} bytes");
        }
        // Listings report something plausible for damaged sizes rather than failing.
        assert_eq!(listed_size(h + 10), 0);
        assert_eq!(listed_size(h + C + 16 + 5), C);
    }

    #[test]
    fn seal_then_open_round_trips_and_binds_the_name() {
        for len in [0, 1, C, C + 1, 2 * C + 7] {
            let plain = data(len);
            let sealed = seal(key(1), "a/b.seg", [plain.as_slice()], len).unwrap();
            assert_eq!(sealed.len() as u64, stored_size(len));
            assert_eq!(open(key(1), "a/b.seg", &sealed).unwrap(), plain, "{len}");
            let e = open(key(1), "a/c.seg", &sealed).unwrap_err().to_string();
            assert!(e.starts_with("a/c.seg: chunk 0"), "{e}");
            let e = open(key(2), "a/b.seg", &sealed).unwrap_err().to_string();
            assert!(e.contains("encrypted with another key"), "{e}");
        }
    }

    #[test]
    fn damage_is_named_not_panicked_on() {
        let sealed = seal(key(1), "o", [data(C + 100).as_slice()], C + 100).unwrap();
        // Every cut, from nothing to one byte short.
        for cut in (0..sealed.len())
            .step_by(997)
            .chain([HEADER_LEN, sealed.len() - 1])
        {
            assert!(open(key(1), "o", &sealed[..cut]).is_err(), "cut at {cut}");
        }
        let cut = chunk_span(0, sealed.len() as u64).end as usize;
        let e = open(key(1), "o", &sealed[..cut]).unwrap_err().to_string();
        assert!(e.contains("not its last chunk"), "{e}");
        // A flipped byte in each place of the header and the chunks.
        for at in (0..sealed.len()).step_by(4099).chain(0..HEADER_LEN) {
            let mut bad = sealed.clone();
            bad[at] ^= 0x01;
            assert!(open(key(1), "o", &bad).is_err(), "flip at {at}");
        }
        assert!(open(key(1), "o", b"plain bytes").is_err());
        assert!(refuse_encrypted("o", &sealed[..10]).is_err());
        assert!(refuse_encrypted("o", b"FBENC").is_ok());
    }
}
