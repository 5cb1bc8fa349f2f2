//! Client-side encryption at rest: [`EncryptedStore`] wraps any `ObjectStore` and stores every
//! object as AES-256-GCM ciphertext, so capture's uploader, restore, info, verify, compact and
//! prune all get it through `Store::os` without knowing. Objects arrive already compressed
//! (segments are zstd blocks, bases are RDB with its own LZF), so compression comes before
//! encryption, as it must: ciphertext does not compress.
//!
//! Each object is a header, then chunks of 1 MiB of plaintext, each sealed on its own (byte
//! table in `docs/formats.md`). Chunking is what lets a ranged read decrypt only the chunks it
//! covers, and a multi-GB base be encrypted as it streams. The nonce of chunk i is the object's
//! random base nonce XOR i, and each chunk's additional data binds the header, the chunk index,
//! a last-chunk flag and the object's key (its path): chunks cannot be reordered, dropped from
//! the end, or moved to another object without failing authentication.
//!
//! Binding the path means a copy cannot reuse the ciphertext: [`EncryptedStore`] re-encrypts on
//! copy and rename (compaction's create-only copy from a temporary key included). The
//! rejected alternative, binding a random object id kept in the header, would make a whole
//! object swappable for another one (segment A's bytes served as segment B) undetected.
//!
//! A store opened without a key is wrapped in [`PlainStore`], which refuses to hand out an
//! encrypted object's bytes as if they were data, with a message that says which key to pass.
//!
//! Size: over ~600 lines because it still holds its `// ----` markers are the seams: key, format, encrypted, plain; to split into store/crypt/; the split is issue 9's
//! (a house others can carry on), deferred so this round could land the trust and durability work.

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, RenameTargetMode, UploadPart,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// The key itself, as 64 hex digits or base64 of 32 bytes.
pub const KEY_ENV: &str = "FLASHBACK_ENCRYPTION_KEY";
/// A file holding the key; `--encryption-key-file` on any command sets it.
pub const KEY_FILE_ENV: &str = "FLASHBACK_ENCRYPTION_KEY_FILE";

/// First bytes of every encrypted object. Like PNG's signature: `\r\n` and `\x1a` make
/// line-ending conversion or a text-mode transfer visible as a bad magic.
pub const MAGIC: [u8; 8] = *b"FBENC\r\n\x1a";
pub const VERSION: u8 = 1;
const ALG_AES_256_GCM: u8 = 1;
pub const HEADER_LEN: usize = 34;
pub const TAG_LEN: usize = 16;
const FINGERPRINT_LEN: usize = 8;
/// Plaintext bytes per chunk. Fixed for version 1: listings turn stored sizes into plaintext
/// sizes without reading each object's header, which they could not afford.
pub const CHUNK: u32 = 1 << 20;
/// Ciphertext handed to the inner store per multipart part: equal parts (R2 wants that) well
/// above S3's 5 MiB minimum.
const PART: usize = 16 << 20;
/// A copy of an object up to this size is re-encrypted in memory; bigger ones stream.
const COPY_IN_MEMORY: u64 = 16 << 20;

// ---------------------------------------------------------------------------------------------
// Errors

/// Everything that can be wrong with a key or an encrypted object, each naming what to do.
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
    #[error("encryption key file {path}: {what}")]
    KeyFile { path: String, what: String },
    #[error("{KEY_ENV}: {what}")]
    KeyEnv { what: String },
    #[error("both --encryption-key-file ({KEY_FILE_ENV}) and {KEY_ENV} are set: keep one")]
    BothKeys,
    #[error("the system random number generator failed")]
    Random,
}

/// The `store` of the `object_store::Error::Generic` that carries a [`CryptError`];
/// `StoreError` unwraps it.
pub const ERROR_STORE: &str = "encryption";

impl From<CryptError> for object_store::Error {
    fn from(e: CryptError) -> Self {
        object_store::Error::Generic {
            store: ERROR_STORE,
            source: Box::new(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

/// A 256-bit key, expanded. Never printed: `Debug` shows the fingerprint only.
pub struct EncryptionKey {
    aead: LessSafeKey,
    fingerprint: [u8; FINGERPRINT_LEN],
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(fingerprint {})", self.fingerprint())
    }
}

struct OkmLen(usize);

impl ring::hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

const HOW_TO_MAKE: &str =
    "make one with `openssl rand -hex 32 > KEYFILE` (or `head -c 32 /dev/urandom > KEYFILE`)";

impl EncryptionKey {
    /// From the 32 key bytes. Two subkeys come out of HKDF-SHA256 — the AES key and the
    /// fingerprint — so the fingerprint printed in errors says nothing about the AES key.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, String> {
        if raw.len() != 32 {
            return Err(format!(
                "{} bytes, but AES-256 needs 32; {HOW_TO_MAKE}",
                raw.len()
            ));
        }
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"flashback encryption v1").extract(raw);
        let unbound: UnboundKey = prk
            .expand(&[b"aes-256-gcm object key"], &AES_256_GCM)
            .map_err(|_| "key derivation failed".to_string())?
            .into();
        let mut fingerprint = [0u8; FINGERPRINT_LEN];
        prk.expand(&[b"key fingerprint"], OkmLen(FINGERPRINT_LEN))
            .and_then(|okm| okm.fill(&mut fingerprint))
            .map_err(|_| "key derivation failed".to_string())?;
        Ok(EncryptionKey {
            aead: LessSafeKey::new(unbound),
            fingerprint,
        })
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
            for (i, pair) in t.chunks(2).enumerate() {
                raw[i] = (hex_val(pair[0]) << 4) | hex_val(pair[1]);
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
    pub fn from_file(path: &FsPath) -> Result<Self, CryptError> {
        let err = |what: String| CryptError::KeyFile {
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

    /// The key configured by the environment: [`KEY_FILE_ENV`] or [`KEY_ENV`], not both.
    pub fn from_env() -> Result<Option<Self>, CryptError> {
        let file = std::env::var_os(KEY_FILE_ENV).filter(|v| !v.is_empty());
        let text = std::env::var_os(KEY_ENV).filter(|v| !v.is_empty());
        match (file, text) {
            (Some(_), Some(_)) => Err(CryptError::BothKeys),
            (Some(f), None) => Self::from_file(FsPath::new(&f)).map(Some),
            (None, Some(t)) => {
                let t = zeroize::Zeroizing::new(t.into_encoded_bytes());
                Self::from_text(&t)
                    .map(Some)
                    .map_err(|what| CryptError::KeyEnv { what })
            }
            (None, None) => Ok(None),
        }
    }

    /// Sixteen hex digits that identify the key without revealing it.
    pub fn fingerprint(&self) -> String {
        hex(&self.fingerprint)
    }
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c.to_ascii_lowercase() - b'a' + 10,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

static CONFIGURED: OnceLock<Option<Arc<EncryptionKey>>> = OnceLock::new();

/// Reads the key the environment names (once, at start-up: the binary calls this before its
/// runtime starts threads) and removes [`KEY_ENV`] from the environment, so that the
/// redis-servers restore and compaction start do not inherit the key. Later calls return
/// the first result.
pub fn configure_from_env() -> Result<Option<Arc<EncryptionKey>>, CryptError> {
    if let Some(k) = CONFIGURED.get() {
        return Ok(k.clone());
    }
    let key = EncryptionKey::from_env()?.map(Arc::new);
    std::env::remove_var(KEY_ENV);
    Ok(CONFIGURED.get_or_init(|| key).clone())
}

/// The key `Store::open` uses: the one [`configure_from_env`] installed, else whatever the
/// environment says now (for library users that never called it).
pub fn configured_key() -> Result<Option<Arc<EncryptionKey>>, CryptError> {
    match CONFIGURED.get() {
        Some(k) => Ok(k.clone()),
        None => Ok(EncryptionKey::from_env()?.map(Arc::new)),
    }
}

// ---------------------------------------------------------------------------------------------
// The object format

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    chunk: u32,
    fingerprint: [u8; FINGERPRINT_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8] = VERSION;
        h[9] = ALG_AES_256_GCM;
        h[10..14].copy_from_slice(&self.chunk.to_le_bytes());
        h[14..22].copy_from_slice(&self.fingerprint);
        h[22..34].copy_from_slice(&self.nonce);
        h
    }

    /// Checks, in the order that gives the most useful message: magic, version, key, chunk
    /// size. `stored` is the object's whole size, for the message when it is too short.
    fn decode(key: &Path, b: &[u8], stored: u64, ours: &EncryptionKey) -> Result<Self, CryptError> {
        let m = b.len().min(MAGIC.len());
        if b[..m] != MAGIC[..m] || stored == 0 {
            return Err(CryptError::NotEncrypted {
                key: key.to_string(),
            });
        }
        if b.len() < HEADER_LEN {
            return Err(CryptError::Truncated {
                key: key.to_string(),
                what: format!(
                    "{stored} bytes is shorter than the {HEADER_LEN}-byte encryption header"
                ),
            });
        }
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

/// For listings, which cannot fail one object at a time: the plaintext a damaged object
/// could at most hold. Reading it then fails with the reason.
fn listed_size(stored: u64) -> u64 {
    plain_size(stored).unwrap_or_else(|| {
        let body = stored.saturating_sub(HEADER_LEN as u64);
        let full = CHUNK as u64 + TAG_LEN as u64;
        body / full * CHUNK as u64 + (body % full).saturating_sub(TAG_LEN as u64)
    })
}

fn chunk_count(plain: u64) -> u64 {
    plain.div_ceil(CHUNK as u64).max(1)
}

/// Stored bytes of chunk `i` of an object of `stored` bytes.
fn chunk_span(i: u64, stored: u64) -> Range<u64> {
    let start = HEADER_LEN as u64 + i * (CHUNK as u64 + TAG_LEN as u64);
    start..(start + CHUNK as u64 + TAG_LEN as u64).min(stored)
}

/// One object's chunk cipher: the header plus the name the chunks are bound to.
struct ChunkCipher {
    key: Arc<EncryptionKey>,
    header: [u8; HEADER_LEN],
    nonce: [u8; NONCE_LEN],
    bound_to: String,
}

impl ChunkCipher {
    fn new(key: Arc<EncryptionKey>, h: &Header, bound_to: &Path) -> Self {
        ChunkCipher {
            key,
            header: h.encode(),
            nonce: h.nonce,
            bound_to: bound_to.to_string(),
        }
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
    fn seal_into(&self, i: u64, last: bool, plain: &[u8], out: &mut BytesMut) {
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .key
            .aead
            .seal_in_place_separate_tag(
                self.nonce(i),
                Aad::from(self.aad(i, last)),
                &mut out[start..],
            )
            .expect("AES-GCM seals any chunk under 64 GiB");
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens chunk `i` in place; returns its plaintext length.
    fn open(&self, i: u64, last: bool, chunk: &mut [u8], stored: u64) -> Result<usize, CryptError> {
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
struct Sealer {
    cipher: ChunkCipher,
    next: u64,
    pending: BytesMut,
}

impl Sealer {
    /// Also returns the header, the object's first bytes.
    fn new(
        key: Arc<EncryptionKey>,
        bound_to: &Path,
    ) -> Result<(Self, [u8; HEADER_LEN]), CryptError> {
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
                pending: BytesMut::new(),
            },
            header,
        ))
    }

    fn push(&mut self, data: &[u8], out: &mut BytesMut) {
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
            let chunk = self.pending.split_to(c);
            self.cipher.seal_into(self.next, false, &chunk, out);
            self.next += 1;
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        let rest = self.pending.split();
        self.cipher.seal_into(self.next, true, &rest, out);
        self.next += 1;
    }
}

fn encrypt_all(
    key: Arc<EncryptionKey>,
    bound_to: &Path,
    payload: &PutPayload,
) -> Result<Bytes, CryptError> {
    let (mut sealer, header) = Sealer::new(key, bound_to)?;
    let mut out = BytesMut::with_capacity(stored_size(payload.content_length() as u64) as usize);
    out.extend_from_slice(&header);
    for part in payload.iter() {
        sealer.push(part, &mut out);
    }
    sealer.finish(&mut out);
    Ok(out.freeze())
}

// ---------------------------------------------------------------------------------------------
// EncryptedStore

/// Encrypts every object written through it and decrypts every object read, over `inner`.
/// Sizes in `head` and listings are plaintext sizes, so the rest of flashback (which compares
/// sizes against its manifests) sees the same numbers as on a plain store.
#[derive(Debug)]
pub struct EncryptedStore {
    inner: Arc<dyn ObjectStore>,
    key: Arc<EncryptionKey>,
    copy_in_memory: u64,
    /// Whether the inner store copies create-only: 0 not known yet, 1 yes, 2 no.
    create_copy: AtomicU8,
}

impl fmt::Display for EncryptedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encrypted({}, key {})",
            self.inner,
            self.key.fingerprint()
        )
    }
}

impl EncryptedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, key: Arc<EncryptionKey>) -> Self {
        EncryptedStore {
            inner,
            key,
            copy_in_memory: COPY_IN_MEMORY,
            create_copy: AtomicU8::new(0),
        }
    }

    /// Copies of objects bigger than this stream instead of going through memory (tests use
    /// a small value to reach the streaming path without big objects).
    pub fn with_copy_in_memory(mut self, bytes: u64) -> Self {
        self.copy_in_memory = bytes;
        self
    }

    fn upload(
        &self,
        inner: Box<dyn MultipartUpload>,
        bound_to: &Path,
    ) -> Result<EncryptingUpload, CryptError> {
        let (sealer, header) = Sealer::new(self.key.clone(), bound_to)?;
        let mut out = BytesMut::with_capacity(PART + CHUNK as usize + TAG_LEN);
        out.extend_from_slice(&header);
        Ok(EncryptingUpload { inner, sealer, out })
    }

    /// Reads the header off the front of `body`, returning it and what came after it.
    async fn read_header(
        &self,
        location: &Path,
        stored: u64,
        body: &mut BoxStream<'static, object_store::Result<Bytes>>,
    ) -> object_store::Result<(Header, BytesMut)> {
        let mut buf = BytesMut::new();
        while buf.len() < HEADER_LEN {
            match body.next().await {
                Some(b) => buf.extend_from_slice(&b?),
                None => break,
            }
        }
        let h = Header::decode(location, &buf, stored, &self.key)?;
        let _ = buf.split_to(HEADER_LEN);
        Ok((h, buf))
    }

    fn plain_size_of(location: &Path, stored: u64) -> Result<u64, CryptError> {
        plain_size(stored).ok_or_else(|| CryptError::Truncated {
            key: location.to_string(),
            what: format!(
                "{stored} stored bytes is not a whole encrypted object (header and chunks of {} + {TAG_LEN} bytes)",
                CHUNK
            ),
        })
    }

    async fn get_whole(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut r = self.inner.get_opts(location, options).await?;
        let attributes = std::mem::take(&mut r.attributes);
        let extensions = std::mem::take(&mut r.extensions);
        let mut meta = r.meta.clone();
        let stored = meta.size;
        let mut body = r.into_stream();
        let (h, rest) = self.read_header(location, stored, &mut body).await?;
        let plain = Self::plain_size_of(location, stored)?;
        let opener = Opener {
            cipher: ChunkCipher::new(self.key.clone(), &h, location),
            stored,
            chunks: chunk_count(plain),
        };
        meta.size = plain;
        Ok(GetResult {
            payload: GetResultPayload::Stream(decrypt(opener, body, rest, 0, 0, plain)),
            meta,
            range: 0..plain,
            attributes,
            extensions,
        })
    }

    /// A range: the object's size and header first (to resolve the range and check the key),
    /// then only the chunks that cover it, both pinned to the e-tag seen first.
    async fn get_ranged(
        &self,
        location: &Path,
        range: GetRange,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let probe = self
            .inner
            .get_opts(
                location,
                GetOptions {
                    head: true,
                    range: None,
                    ..options.clone()
                },
            )
            .await?;
        let mut meta = probe.meta.clone();
        drop(probe);
        let stored = meta.size;
        let pinned = GetOptions {
            if_match: meta.e_tag.clone(),
            version: options.version.clone(),
            ..Default::default()
        };
        if stored < (HEADER_LEN + TAG_LEN) as u64 {
            // Too short for any encrypted object: read what there is, for the right message.
            let err = match self.get_whole(location, pinned).await {
                Err(e) => e,
                Ok(_) => CryptError::Truncated {
                    key: location.to_string(),
                    what: format!("{stored} bytes"),
                }
                .into(),
            };
            return Err(err);
        }
        let head_bytes = self
            .inner
            .get_opts(
                location,
                GetOptions {
                    range: Some(GetRange::Bounded(0..HEADER_LEN as u64)),
                    ..pinned.clone()
                },
            )
            .await?
            .bytes()
            .await?;
        let h = Header::decode(location, &head_bytes, stored, &self.key)?;
        let plain = Self::plain_size_of(location, stored)?;
        let want = range.as_range(plain).map_err(|e| CryptError::Range {
            key: location.to_string(),
            what: format!("cannot read range {range} of {plain} bytes: {e}"),
        })?;
        meta.size = plain;
        let opener = Opener {
            cipher: ChunkCipher::new(self.key.clone(), &h, location),
            stored,
            chunks: chunk_count(plain),
        };
        if want.is_empty() {
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                meta,
                range: want,
                attributes: Default::default(),
                extensions: Default::default(),
            });
        }
        let c = CHUNK as u64;
        let (first, last) = (want.start / c, (want.end - 1) / c);
        let span = chunk_span(first, stored).start..chunk_span(last, stored).end;
        let mut r = self
            .inner
            .get_opts(
                location,
                GetOptions {
                    range: Some(GetRange::Bounded(span)),
                    ..pinned
                },
            )
            .await?;
        let attributes = std::mem::take(&mut r.attributes);
        let extensions = std::mem::take(&mut r.extensions);
        let body = r.into_stream();
        let skip = (want.start - first * c) as usize;
        Ok(GetResult {
            payload: GetResultPayload::Stream(decrypt(
                opener,
                body,
                BytesMut::new(),
                first,
                skip,
                want.end - want.start,
            )),
            meta,
            range: want,
            attributes,
            extensions,
        })
    }

    /// Re-encrypts `from` for `to` (the ciphertext is bound to its key, so bytes cannot just
    /// be copied). A create-only copy of a big object is sealed for `to` but written to a
    /// staging key first, then moved with the inner store's own create-only copy, which keeps
    /// the bytes (and so their binding to `to`) unchanged: the destination appears whole or
    /// not at all, and never over an existing object.
    async fn copy_reencrypt(
        &self,
        from: &Path,
        to: &Path,
        mode: CopyMode,
    ) -> object_store::Result<()> {
        if from == to {
            return self
                .inner
                .copy_opts(from, to, CopyOptions::new().with_mode(mode))
                .await;
        }
        let src = self.get_opts(from, GetOptions::default()).await?;
        if src.meta.size <= self.copy_in_memory {
            let bytes = src.bytes().await?;
            let put = match mode {
                CopyMode::Overwrite => PutMode::Overwrite,
                CopyMode::Create => PutMode::Create,
            };
            self.put_opts(to, bytes.into(), put.into()).await?;
            return Ok(());
        }
        let staging = match mode {
            CopyMode::Overwrite => to.clone(),
            CopyMode::Create => {
                let staging = staging_key(to)?;
                self.check_create_copy(from, &staging).await?;
                staging
            }
        };
        let inner = self
            .inner
            .put_multipart_opts(&staging, PutMultipartOptions::default())
            .await?;
        let mut up = self.upload(inner, to)?;
        let mut body = src.into_stream();
        let streamed = async {
            while let Some(b) = body.next().await {
                up.put_part(b?.into()).await?;
            }
            up.complete().await
        }
        .await;
        if let Err(e) = streamed {
            let _ = up.abort().await;
            return Err(e);
        }
        if staging == *to {
            return Ok(());
        }
        let moved = self
            .inner
            .copy_opts(&staging, to, CopyOptions::new().with_mode(CopyMode::Create))
            .await;
        if let Err(e) = self.inner.delete(&staging).await {
            if !matches!(e, object_store::Error::NotFound { .. }) {
                tracing::warn!("could not remove the staging object {staging}: {e}");
            }
        }
        moved
    }
}

fn staging_key(to: &Path) -> Result<Path, CryptError> {
    let mut tag = [0u8; 8];
    SystemRandom::new()
        .fill(&mut tag)
        .map_err(|_| CryptError::Random)?;
    Ok(Path::from(format!("{to}.fbenc-copy-{}", hex(&tag))))
}

impl EncryptedStore {
    /// Fails at once, before any re-encryption, if the inner store has no create-only copy
    /// (S3 without a conditional-copy setting): the caller then falls back to a create-only
    /// put, instead of this store uploading the object once more for nothing. Found out once,
    /// with a server-side copy of `from` to a throwaway name.
    async fn check_create_copy(&self, from: &Path, probe: &Path) -> object_store::Result<()> {
        match self.create_copy.load(Ordering::Relaxed) {
            1 => return Ok(()),
            2 => {
                return Err(object_store::Error::NotSupported {
                    source: "the store behind the encryption cannot copy create-only".into(),
                })
            }
            _ => {}
        }
        let mode = CopyOptions::new().with_mode(CopyMode::Create);
        match self.inner.copy_opts(from, probe, mode).await {
            Ok(()) => {
                self.create_copy.store(1, Ordering::Relaxed);
                self.inner.delete(probe).await
            }
            Err(
                e @ (object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. }),
            ) => {
                self.create_copy.store(2, Ordering::Relaxed);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

fn map_meta(mut m: ObjectMeta) -> ObjectMeta {
    m.size = listed_size(m.size);
    m
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for EncryptedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let sealed = encrypt_all(self.key.clone(), location, &payload)?;
        self.inner.put_opts(location, sealed.into(), opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(self.upload(inner, location)?))
    }

    async fn get_opts(
        &self,
        location: &Path,
        mut options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head {
            options.range = None;
            let mut r = self.inner.get_opts(location, options).await?;
            r.meta = map_meta(r.meta);
            r.range = 0..r.meta.size;
            r.payload = GetResultPayload::Stream(stream::empty().boxed());
            return Ok(r);
        }
        match options.range.take() {
            None => self.get_whole(location, options).await,
            Some(range) => self.get_ranged(location, range, options).await,
        }
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        // Each range through `get_ranged`, so each is checked; the inner store's coalescing
        // would not know where chunks start.
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            out.push(
                self.get_ranged(
                    location,
                    GetRange::Bounded(r.clone()),
                    GetOptions::default(),
                )
                .await?
                .bytes()
                .await?,
            );
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix).map_ok(map_meta).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner
            .list_with_offset(prefix, offset)
            .map_ok(map_meta)
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut l = self.inner.list_with_delimiter(prefix).await?;
        l.objects = l.objects.into_iter().map(map_meta).collect();
        Ok(l)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.copy_reencrypt(from, to, options.mode).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let mode = match options.target_mode {
            RenameTargetMode::Overwrite => CopyMode::Overwrite,
            RenameTargetMode::Create => CopyMode::Create,
        };
        self.copy_reencrypt(from, to, mode).await?;
        self.inner.delete(from).await
    }
}

/// Seals parts as they come and hands the inner upload equal parts of [`PART`] bytes.
#[derive(Debug)]
struct EncryptingUpload {
    inner: Box<dyn MultipartUpload>,
    sealer: Sealer,
    out: BytesMut,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer({}, chunk {})", self.cipher.bound_to, self.next)
    }
}

#[async_trait::async_trait]
impl MultipartUpload for EncryptingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        for b in data.iter() {
            self.sealer.push(b, &mut self.out);
        }
        let mut parts: Vec<UploadPart> = Vec::new();
        while self.out.len() >= PART {
            let p = self.out.split_to(PART).freeze();
            parts.push(self.inner.put_part(p.into()));
        }
        let all: BoxFuture<'static, object_store::Result<()>> =
            Box::pin(async move { futures::future::try_join_all(parts).await.map(|_| ()) });
        all
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.sealer.finish(&mut self.out);
        let last = self.out.split().freeze();
        self.inner.put_part(last.into()).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

/// What a reader needs to open an object's chunks.
struct Opener {
    cipher: ChunkCipher,
    stored: u64,
    chunks: u64,
}

/// Decrypts chunks `first..` from `body` (which starts at chunk `first`, after `buf`), drops
/// `skip` plaintext bytes from the first and yields `take` bytes in all.
fn decrypt(
    opener: Opener,
    body: BoxStream<'static, object_store::Result<Bytes>>,
    buf: BytesMut,
    first: u64,
    skip: usize,
    take: u64,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    struct St {
        o: Opener,
        body: BoxStream<'static, object_store::Result<Bytes>>,
        buf: BytesMut,
        next: u64,
        skip: usize,
        left: u64,
    }
    let st = St {
        o: opener,
        body,
        buf,
        next: first,
        skip,
        left: take,
    };
    stream::try_unfold(st, |mut st| async move {
        if st.left == 0 || st.next >= st.o.chunks {
            return Ok(None);
        }
        let span = chunk_span(st.next, st.o.stored);
        let need = (span.end - span.start) as usize;
        while st.buf.len() < need {
            match st.body.next().await {
                Some(b) => st.buf.extend_from_slice(&b?),
                None => {
                    return Err(CryptError::Truncated {
                        key: st.o.cipher.bound_to.clone(),
                        what: format!(
                            "the store sent {} of the {} bytes of chunk {} (stored bytes {}..{})",
                            st.buf.len(),
                            need,
                            st.next,
                            span.start,
                            span.end
                        ),
                    }
                    .into())
                }
            }
        }
        let mut chunk = st.buf.split_to(need);
        let last = st.next + 1 == st.o.chunks;
        let n = st.o.cipher.open(st.next, last, &mut chunk, st.o.stored)?;
        chunk.truncate(n);
        let mut plain = chunk.freeze();
        if st.skip > 0 {
            plain = plain.slice(st.skip.min(plain.len())..);
            st.skip = 0;
        }
        if plain.len() as u64 > st.left {
            plain.truncate(st.left as usize);
        }
        st.left -= plain.len() as u64;
        st.next += 1;
        Ok(Some((plain, st)))
    })
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// PlainStore

/// A store opened without a key: everything passes through, except that a read from an
/// object's first byte that finds an encrypted object fails saying so, instead of a segment or
/// manifest decoder choking on ciphertext later with a vaguer message.
#[derive(Debug)]
pub struct PlainStore {
    inner: Arc<dyn ObjectStore>,
}

impl PlainStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        PlainStore { inner }
    }
}

impl fmt::Display for PlainStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Err if `prefix` (an object's first bytes) is an encryption header.
fn refuse_encrypted(location: &Path, prefix: &[u8]) -> Result<(), CryptError> {
    if prefix.len() < MAGIC.len() || prefix[..MAGIC.len()] != MAGIC {
        return Ok(());
    }
    let fingerprint = match prefix.get(14..22) {
        Some(fp) => hex(fp),
        None => "unknown".into(),
    };
    Err(CryptError::KeyMissing {
        key: location.to_string(),
        fingerprint,
    })
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for PlainStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let from_start = !options.head
            && match &options.range {
                None | Some(GetRange::Offset(0)) => true,
                Some(GetRange::Bounded(r)) => r.start == 0,
                Some(_) => false,
            };
        let mut r = self.inner.get_opts(location, options).await?;
        if !from_start {
            return Ok(r);
        }
        let payload = std::mem::replace(
            &mut r.payload,
            GetResultPayload::Stream(stream::empty().boxed()),
        );
        r.payload = match payload {
            // A local file: read its first bytes aside, leaving the handle as it was so the
            // caller keeps the fast file path.
            GetResultPayload::File(file, path) => {
                let probe = file.try_clone().map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })?;
                let prefix = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = [0u8; HEADER_LEN];
                    let mut n = 0;
                    while n < buf.len() {
                        match probe.read_at(&mut buf[n..], n as u64) {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(buf[..n].to_vec())
                })
                .await?
                .map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })?;
                refuse_encrypted(location, &prefix)?;
                GetResultPayload::File(file, path)
            }
            GetResultPayload::Stream(mut s) => {
                let mut head = Vec::new();
                let mut seen = 0;
                while seen < HEADER_LEN {
                    match s.next().await {
                        Some(b) => {
                            let b = b?;
                            seen += b.len();
                            head.push(b);
                        }
                        None => break,
                    }
                }
                let prefix: Vec<u8> = head
                    .iter()
                    .flat_map(|b| b.iter().copied())
                    .take(HEADER_LEN)
                    .collect();
                refuse_encrypted(location, &prefix)?;
                GetResultPayload::Stream(stream::iter(head.into_iter().map(Ok)).chain(s).boxed())
            }
        };
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::WriteMultipart;

    const C: u64 = CHUNK as u64;

    fn key(byte: u8) -> Arc<EncryptionKey> {
        Arc::new(EncryptionKey::from_bytes(&[byte; 32]).unwrap())
    }

    /// Bytes that differ at every position, so a wrong offset cannot compare equal.
    fn data(len: u64) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect()
    }

    fn stores(k: u8) -> (Arc<InMemory>, EncryptedStore) {
        let inner = Arc::new(InMemory::new());
        let enc = EncryptedStore::new(inner.clone(), key(k));
        (inner, enc)
    }

    async fn get_err(s: &dyn ObjectStore, p: &Path, range: Option<GetRange>) -> String {
        let opts = GetOptions {
            range,
            ..Default::default()
        };
        let got = match s.get_opts(p, opts).await {
            Err(e) => return e.to_string(),
            Ok(r) => r.bytes().await,
        };
        match got {
            Err(e) => e.to_string(),
            Ok(b) => panic!("read {} bytes of {p} where an error was expected", b.len()),
        }
    }

    async fn range(s: &dyn ObjectStore, p: &Path, r: GetRange) -> Vec<u8> {
        let opts = GetOptions {
            range: Some(r),
            ..Default::default()
        };
        s.get_opts(p, opts)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
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

    #[tokio::test]
    async fn round_trip_with_ranges_across_chunks() {
        let (inner, enc) = stores(1);
        let p = Path::from("sources/a/generations/g/segments/x.seg");
        let len = 3 * C + 1000;
        let plain = data(len);
        enc.put(&p, plain.clone().into()).await.unwrap();

        let stored = inner.get(&p).await.unwrap().bytes().await.unwrap();
        assert_eq!(stored.len() as u64, stored_size(len));
        assert_eq!(&stored[..8], &MAGIC);
        assert!(
            !stored
                .windows(64)
                .any(|w| w == &plain[C as usize..C as usize + 64]),
            "plaintext visible in the stored object"
        );

        let got = enc.get(&p).await.unwrap();
        assert_eq!(got.meta.size, len);
        assert_eq!(got.bytes().await.unwrap().as_ref(), plain.as_slice());
        assert_eq!(enc.head(&p).await.unwrap().size, len);
        let listed: Vec<ObjectMeta> = enc.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, len);
        let delim = enc
            .list_with_delimiter(Some(&Path::from("sources/a/generations/g/segments")))
            .await
            .unwrap();
        assert_eq!(delim.objects[0].size, len);

        let cases: Vec<Range<u64>> = vec![
            0..10,
            5..C,
            C - 5..C + 5,
            C..2 * C,
            2 * C - 1..3 * C + 1,
            3 * C + 999..3 * C + 1000,
            0..len,
            7..len,
        ];
        for r in cases {
            let got = range(&enc, &p, GetRange::Bounded(r.clone())).await;
            assert_eq!(
                got.as_slice(),
                &plain[r.start as usize..r.end as usize],
                "range {r:?}"
            );
        }
        // Past the end: clamped, like the stores themselves.
        let got = range(&enc, &p, GetRange::Bounded(len - 3..len + 100)).await;
        assert_eq!(got.as_slice(), &plain[(len - 3) as usize..]);
        let got = range(&enc, &p, GetRange::Offset(2 * C + 3)).await;
        assert_eq!(got.as_slice(), &plain[(2 * C + 3) as usize..]);
        let got = range(&enc, &p, GetRange::Suffix(C + 7)).await;
        assert_eq!(got.as_slice(), &plain[(len - C - 7) as usize..]);
        let got = range(&enc, &p, GetRange::Suffix(len + 5)).await;
        assert_eq!(got.as_slice(), plain.as_slice());
        let got = enc.get_ranges(&p, &[1..3, C - 1..C + 1]).await.unwrap();
        assert_eq!(got[0].as_ref(), &plain[1..3]);
        assert_eq!(got[1].as_ref(), &plain[(C - 1) as usize..(C + 1) as usize]);
        let e = get_err(&enc, &p, Some(GetRange::Bounded(len..len + 1))).await;
        assert!(e.contains(p.as_ref()), "{e}");
    }

    #[tokio::test]
    async fn empty_and_exact_chunk_objects() {
        let (inner, enc) = stores(1);
        for len in [0, 1, C, 2 * C] {
            let p = Path::from(format!("o{len}"));
            enc.put(&p, data(len).into()).await.unwrap();
            assert_eq!(inner.head(&p).await.unwrap().size, stored_size(len));
            assert_eq!(enc.head(&p).await.unwrap().size, len);
            let got = enc.get(&p).await.unwrap().bytes().await.unwrap();
            assert_eq!(got.as_ref(), data(len).as_slice(), "{len} bytes");
        }
    }

    /// The uploader's way (WriteMultipart, 16 MiB parts) with an object over two inner parts
    /// and a size that is a whole number of chunks (the last chunk full).
    #[tokio::test]
    async fn multipart_round_trip() {
        let (inner, enc) = stores(2);
        let p = Path::from("base/1.rdb");
        let len = 40 * C;
        let plain = data(len);
        let up = enc.put_multipart(&p).await.unwrap();
        let mut w = WriteMultipart::new_with_chunk_size(up, 16 << 20);
        // Odd write sizes, so chunk boundaries fall inside writes.
        let mut at = 0usize;
        for (i, n) in [1usize, 999, 3 << 20, 7, 5 << 20]
            .iter()
            .cycle()
            .enumerate()
        {
            if at >= plain.len() {
                break;
            }
            let end = (at + n + i).min(plain.len());
            w.write(&plain[at..end]);
            at = end;
        }
        w.finish().await.unwrap();
        assert_eq!(inner.head(&p).await.unwrap().size, stored_size(len));
        let got = enc.get(&p).await.unwrap().bytes().await.unwrap();
        assert!(got.as_ref() == plain.as_slice());
        let r = (16 << 20) - 100..(16 << 20) + 100;
        let got = range(&enc, &p, GetRange::Bounded(r.clone())).await;
        assert_eq!(got.as_slice(), &plain[r.start as usize..r.end as usize]);
    }

    #[tokio::test]
    async fn wrong_key_is_named_with_both_fingerprints() {
        let (inner, enc) = stores(1);
        let p = Path::from("sources/a/generations/g/generation.meta");
        enc.put(&p, data(100).into()).await.unwrap();
        let other = EncryptedStore::new(inner.clone(), key(9));
        for r in [None, Some(GetRange::Bounded(10..20))] {
            let e = get_err(&other, &p, r).await;
            assert!(e.contains(p.as_ref()), "{e}");
            assert!(e.contains("encrypted with another key"), "{e}");
            assert!(
                e.contains(&key(1).fingerprint()) && e.contains(&key(9).fingerprint()),
                "{e}"
            );
            assert!(e.contains("--encryption-key-file"), "{e}");
        }
        assert_ne!(key(1).fingerprint(), key(9).fingerprint());
    }

    #[tokio::test]
    async fn truncation_is_named() {
        let (inner, enc) = stores(1);
        let p = Path::from("seg");
        let plain = data(3 * C);
        enc.put(&p, plain.clone().into()).await.unwrap();
        let stored = inner.get(&p).await.unwrap().bytes().await.unwrap();

        // One byte short: the last chunk no longer authenticates.
        inner
            .put(&p, stored.slice(..stored.len() - 1).into())
            .await
            .unwrap();
        let e = get_err(&enc, &p, None).await;
        assert!(e.contains("seg: chunk 2") && e.contains("cut short"), "{e}");
        // Short of a whole tag: no object has that size.
        let cut = chunk_span(1, stored.len() as u64).end as usize + 5;
        inner.put(&p, stored.slice(..cut).into()).await.unwrap();
        let e = get_err(&enc, &p, None).await;
        assert!(
            e.contains("seg: truncated") && e.contains("not a whole encrypted object"),
            "{e}"
        );

        // Cut at a chunk boundary: the size is plausible, the last flag is not.
        let cut = chunk_span(1, stored.len() as u64).end as usize;
        inner.put(&p, stored.slice(..cut).into()).await.unwrap();
        let e = get_err(&enc, &p, None).await;
        assert!(
            e.contains("seg: truncated") && e.contains("not its last chunk"),
            "{e}"
        );
        // What comes before the cut still reads.
        let got = range(&enc, &p, GetRange::Bounded(10..C)).await;
        assert_eq!(got.as_slice(), &plain[10..C as usize]);

        // Down to a piece of the header.
        inner.put(&p, stored.slice(..10).into()).await.unwrap();
        for r in [None, Some(GetRange::Bounded(0..5))] {
            let e = get_err(&enc, &p, r).await;
            assert!(e.contains("seg: truncated"), "{e}");
        }
    }

    #[tokio::test]
    async fn flipped_byte_names_the_chunk_and_its_offset() {
        let (inner, enc) = stores(1);
        let p = Path::from("sources/s/generations/g/base/0.rdb");
        let plain = data(3 * C + 10);
        enc.put(&p, plain.clone().into()).await.unwrap();
        let mut stored = inner.get(&p).await.unwrap().bytes().await.unwrap().to_vec();
        let span = chunk_span(2, stored.len() as u64);
        stored[span.start as usize + 12345] ^= 0x20;
        inner.put(&p, stored.into()).await.unwrap();
        let e = get_err(&enc, &p, None).await;
        assert!(e.contains(p.as_ref()), "{e}");
        assert!(
            e.contains(&format!(
                "chunk 2 (stored bytes {}..{})",
                span.start, span.end
            )),
            "{e}"
        );
        let e = get_err(&enc, &p, Some(GetRange::Bounded(2 * C + 1..2 * C + 2))).await;
        assert!(e.contains("chunk 2"), "{e}");
        // Other chunks are intact and still read.
        let got = range(&enc, &p, GetRange::Bounded(0..2 * C)).await;
        assert!(got.as_slice() == &plain[..2 * C as usize]);
    }

    #[tokio::test]
    async fn moved_or_reordered_chunks_fail() {
        let (inner, enc) = stores(1);
        let (a, b) = (Path::from("segments/a.seg"), Path::from("segments/b.seg"));
        enc.put(&a, data(2 * C + 1).into()).await.unwrap();
        // Ciphertext moved to another key (a swap of two objects) does not authenticate.
        inner.copy(&a, &b).await.unwrap();
        let e = get_err(&enc, &b, None).await;
        assert!(e.contains("segments/b.seg: chunk 0"), "{e}");
        // Two chunks swapped within the object.
        let stored = inner.get(&a).await.unwrap().bytes().await.unwrap().to_vec();
        let n = stored.len() as u64;
        let (s0, s1) = (chunk_span(0, n), chunk_span(1, n));
        let mut swapped = stored[..s0.start as usize].to_vec();
        swapped.extend_from_slice(&stored[s1.start as usize..s1.end as usize]);
        swapped.extend_from_slice(&stored[s0.start as usize..s0.end as usize]);
        swapped.extend_from_slice(&stored[s1.end as usize..]);
        inner.put(&a, swapped.into()).await.unwrap();
        let e = get_err(&enc, &a, None).await;
        assert!(e.contains("segments/a.seg: chunk 0"), "{e}");
    }

    #[tokio::test]
    async fn plain_and_encrypted_objects_are_told_apart() {
        let (inner, enc) = stores(3);
        let p = Path::from("sources/a/generations/g/generation.meta");
        inner
            .put(
                &p,
                b"not encrypted at all, a plain manifest".to_vec().into(),
            )
            .await
            .unwrap();
        for r in [None, Some(GetRange::Bounded(3..9))] {
            let e = get_err(&enc, &p, r).await;
            assert!(e.contains(&format!("{p}: not an encrypted object")), "{e}");
        }
        inner.put(&p, PutPayload::new()).await.unwrap();
        let e = get_err(&enc, &p, None).await;
        assert!(e.contains("not an encrypted object"), "{e}");

        // And the other way round, through a store opened without a key.
        enc.put(&p, data(50).into()).await.unwrap();
        let plain = PlainStore::new(inner.clone());
        for r in [
            None,
            Some(GetRange::Bounded(0..4096)),
            Some(GetRange::Offset(0)),
        ] {
            let e = get_err(&plain, &p, r).await;
            assert!(
                e.contains(p.as_ref()) && e.contains("this object is encrypted"),
                "{e}"
            );
            assert!(e.contains(&key(3).fingerprint()), "{e}");
        }
        // Plain objects pass through untouched.
        let q = Path::from("plain");
        inner.put(&q, data(3000).into()).await.unwrap();
        let got = plain.get(&q).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), data(3000).as_slice());
    }

    #[tokio::test]
    async fn local_files_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let enc = EncryptedStore::new(inner.clone(), key(4));
        let p = Path::from("x/y.seg");
        let plain = data(C + 77);
        enc.put(&p, plain.clone().into()).await.unwrap();
        let got = enc.get(&p).await.unwrap().bytes().await.unwrap();
        assert!(got.as_ref() == plain.as_slice());
        let got = range(&enc, &p, GetRange::Bounded(C - 1..C + 1)).await;
        assert_eq!(got.as_slice(), &plain[(C - 1) as usize..(C + 1) as usize]);
        let guarded = PlainStore::new(inner.clone());
        let e = get_err(&guarded, &p, None).await;
        assert!(e.contains("x/y.seg: this object is encrypted"), "{e}");
        let q = Path::from("x/plain.seg");
        inner.put(&q, data(100).into()).await.unwrap();
        let r = guarded.get(&q).await.unwrap();
        assert!(
            matches!(r.payload, GetResultPayload::File(..)),
            "the file fast path is kept"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), data(100).as_slice());
    }

    #[tokio::test]
    async fn copies_reencrypt_and_keep_create_only() {
        for in_memory in [u64::MAX, 0] {
            let (inner, enc) = stores(5);
            let enc = enc.with_copy_in_memory(in_memory);
            let tmp = Path::from("g/base/1.rdb.partial-77");
            let dst = Path::from("g/base/1.rdb");
            let plain = data(2 * C + 3);
            enc.put(&tmp, plain.clone().into()).await.unwrap();
            enc.copy_if_not_exists(&tmp, &dst).await.unwrap();
            let got = enc.get(&dst).await.unwrap().bytes().await.unwrap();
            assert!(
                got.as_ref() == plain.as_slice(),
                "copy (in memory up to {in_memory})"
            );
            let e = enc.copy_if_not_exists(&tmp, &dst).await.unwrap_err();
            assert!(
                matches!(e, object_store::Error::AlreadyExists { .. }),
                "{e}"
            );
            // No staging object is left behind.
            let names: Vec<String> = inner
                .list(None)
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .unwrap();
            assert_eq!(names.len(), 2, "{names:?}");
            enc.copy(&tmp, &Path::from("g/other")).await.unwrap();
            enc.rename(&tmp, &Path::from("g/moved")).await.unwrap();
            assert!(matches!(
                enc.head(&tmp).await,
                Err(object_store::Error::NotFound { .. })
            ));
            for k in ["g/other", "g/moved"] {
                let got = enc
                    .get(&Path::from(k))
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert!(got.as_ref() == plain.as_slice(), "{k}");
            }
        }
    }

    /// A store without create-only copy (S3 unless configured), counting multipart uploads.
    #[derive(Debug, Default)]
    struct NoCreateCopy {
        inner: InMemory,
        multipart: std::sync::atomic::AtomicUsize,
    }

    impl fmt::Display for NoCreateCopy {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "NoCreateCopy")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for NoCreateCopy {
        async fn put_opts(
            &self,
            p: &Path,
            b: PutPayload,
            o: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(p, b, o).await
        }
        async fn put_multipart_opts(
            &self,
            p: &Path,
            o: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.multipart.fetch_add(1, Ordering::Relaxed);
            self.inner.put_multipart_opts(p, o).await
        }
        async fn get_opts(&self, p: &Path, o: GetOptions) -> object_store::Result<GetResult> {
            self.inner.get_opts(p, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> object_store::Result<()> {
            match o.mode {
                CopyMode::Create => Err(object_store::Error::NotSupported {
                    source: "no conditional copy".into(),
                }),
                CopyMode::Overwrite => self.inner.copy_opts(f, t, o).await,
            }
        }
    }

    /// The caller (compaction) falls back to a create-only put when the store cannot copy
    /// create-only: it must learn that before any re-encryption, and nothing may be left.
    #[tokio::test]
    async fn no_create_only_copy_fails_fast() {
        let inner = Arc::new(NoCreateCopy::default());
        let enc = EncryptedStore::new(inner.clone(), key(6)).with_copy_in_memory(0);
        let (tmp, dst) = (Path::from("b.rdb.partial-1"), Path::from("b.rdb"));
        enc.put(&tmp, data(C + 1).into()).await.unwrap();
        for _ in 0..2 {
            let e = enc.copy_if_not_exists(&tmp, &dst).await.unwrap_err();
            assert!(matches!(e, object_store::Error::NotSupported { .. }), "{e}");
        }
        assert_eq!(
            inner.multipart.load(Ordering::Relaxed),
            0,
            "re-encrypted for nothing"
        );
        let names: Vec<String> = inner
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(names, vec!["b.rdb.partial-1".to_string()]);
        // A plain copy still works, streamed.
        enc.copy(&tmp, &dst).await.unwrap();
        assert_eq!(inner.multipart.load(Ordering::Relaxed), 1);
        let got = enc.get(&dst).await.unwrap().bytes().await.unwrap();
        assert!(got.as_ref() == data(C + 1).as_slice());
    }

    #[tokio::test]
    async fn put_modes_are_kept() {
        let (_inner, enc) = stores(1);
        let p = Path::from("m");
        let create = PutOptions::from(PutMode::Create);
        enc.put_opts(&p, data(5).into(), create.clone())
            .await
            .unwrap();
        let e = enc.put_opts(&p, data(6).into(), create).await.unwrap_err();
        assert!(
            matches!(e, object_store::Error::AlreadyExists { .. }),
            "{e}"
        );
        assert_eq!(enc.head(&p).await.unwrap().size, 5);
    }

    #[tokio::test]
    async fn store_errors_read_as_one_clean_line() {
        let (inner, enc) = stores(1);
        let p = Path::from("sources/a/x.seg");
        inner.put(&p, data(100).into()).await.unwrap();
        let e = enc.get(&p).await.unwrap_err();
        let line = crate::store::StoreError::from(e).to_string();
        assert!(
            line.starts_with("sources/a/x.seg: not an encrypted object"),
            "{line}"
        );
        // Other errors keep their form.
        let e = enc.get(&Path::from("missing")).await.unwrap_err();
        let line = crate::store::StoreError::from(e).to_string();
        assert!(
            line.starts_with("store: Object at location missing not found"),
            "{line}"
        );
    }

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
