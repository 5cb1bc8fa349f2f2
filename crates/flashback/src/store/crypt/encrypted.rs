//! [`EncryptedStore`]: an `ObjectStore` over any other that stores every object in the
//! encrypted-object format (`flashback_format::crypt`, byte table in `docs/formats.md` §6) and
//! decrypts on read, so capture's uploader, restore, info, verify, compact and prune all get
//! it through `Store::os` without knowing. What lives here is only the store plumbing: whole and
//! ranged reads as streams (a ranged read fetches and opens only the chunks it covers), multipart
//! uploads sealed as they stream, sizes in listings, and copies.
//!
//! Binding the path means a copy cannot reuse the ciphertext: copy and rename re-encrypt
//! (compaction's create-only copy from a temporary key included).
//!
//! Size: ~600 lines of code because the `ObjectStore` trait it implements is wide (get, ranged
//! get, put, multipart, list, copy, rename, delete): each method is a few lines over the codec,
//! and splitting the one `impl` across files would only scatter the trait's contract.

use super::{os_error, EncryptionKey};
use bytes::{Bytes, BytesMut};
use flashback_format::crypt::{
    chunk_count, chunk_span, cipher_truncated, hex, listed_size, plain_size_of, seal, ChunkCipher,
    CryptError, Header, Key, Sealer, CHUNK, HEADER_LEN, TAG_LEN,
};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, RenameTargetMode, UploadPart,
};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// Ciphertext handed to the inner store per multipart part: equal parts (R2 wants that) well
/// above S3's 5 MiB minimum.
const PART: usize = 16 << 20;
/// A copy of an object up to this size is re-encrypted in memory; bigger ones stream.
const COPY_IN_MEMORY: u64 = 16 << 20;

fn encrypt_all(key: Arc<Key>, bound_to: &Path, payload: &PutPayload) -> Result<Bytes, CryptError> {
    let sealed = seal(
        key,
        bound_to.as_ref(),
        payload.iter().map(|b| b.as_ref()),
        payload.content_length() as u64,
    )?;
    Ok(Bytes::from(sealed))
}

/// Encrypts every object written through it and decrypts every object read, over `inner`.
/// Sizes in `head` and listings are plaintext sizes, so the rest of flashback (which compares
/// sizes against its manifests) sees the same numbers as on a plain store.
#[derive(Debug)]
pub struct EncryptedStore {
    inner: Arc<dyn ObjectStore>,
    key: EncryptionKey,
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
    pub fn new(inner: Arc<dyn ObjectStore>, key: EncryptionKey) -> Self {
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

    fn opener(&self, h: &Header, location: &Path, stored: u64, plain: u64) -> Opener {
        Opener {
            cipher: ChunkCipher::new(self.key.cipher_key(), h, location.as_ref()),
            stored,
            chunks: chunk_count(plain),
        }
    }

    fn upload(
        &self,
        inner: Box<dyn MultipartUpload>,
        bound_to: &Path,
    ) -> Result<EncryptingUpload, CryptError> {
        let (sealer, header) = Sealer::new(self.key.cipher_key(), bound_to.as_ref())?;
        let mut out = Vec::with_capacity(PART + CHUNK as usize + TAG_LEN);
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
        let h = Header::decode(location.as_ref(), &buf, stored, &self.key.cipher_key())
            .map_err(os_error)?;
        let _ = buf.split_to(HEADER_LEN);
        Ok((h, buf))
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
        let plain = plain_size_of(location.as_ref(), stored).map_err(os_error)?;
        let opener = self.opener(&h, location, stored, plain);
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
                Ok(_) => os_error(CryptError::Truncated {
                    key: location.to_string(),
                    what: format!("{stored} bytes"),
                }),
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
        let h = Header::decode(
            location.as_ref(),
            &head_bytes,
            stored,
            &self.key.cipher_key(),
        )
        .map_err(os_error)?;
        let plain = plain_size_of(location.as_ref(), stored).map_err(os_error)?;
        let want = range.as_range(plain).map_err(|e| {
            os_error(CryptError::Range {
                key: location.to_string(),
                what: format!("cannot read range {range} of {plain} bytes: {e}"),
            })
        })?;
        meta.size = plain;
        let opener = self.opener(&h, location, stored, plain);
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
                let staging = staging_key(to).map_err(os_error)?;
                self.check_create_copy(from, &staging).await?;
                staging
            }
        };
        let inner = self
            .inner
            .put_multipart_opts(&staging, PutMultipartOptions::default())
            .await?;
        let mut up = self.upload(inner, to).map_err(os_error)?;
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
        let sealed = encrypt_all(self.key.cipher_key(), location, &payload).map_err(os_error)?;
        self.inner.put_opts(location, sealed.into(), opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(self.upload(inner, location).map_err(os_error)?))
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
    out: Vec<u8>,
}

#[async_trait::async_trait]
impl MultipartUpload for EncryptingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        for b in data.iter() {
            self.sealer.push(b, &mut self.out);
        }
        let mut parts: Vec<UploadPart> = Vec::new();
        if self.out.len() >= PART {
            // Whole parts are slices of one buffer; only the rest (under a part) is copied.
            let all = Bytes::from(std::mem::take(&mut self.out));
            let mut at = 0;
            while all.len() - at >= PART {
                parts.push(self.inner.put_part(all.slice(at..at + PART).into()));
                at += PART;
            }
            self.out.extend_from_slice(&all[at..]);
        }
        let all: BoxFuture<'static, object_store::Result<()>> =
            Box::pin(async move { futures::future::try_join_all(parts).await.map(|_| ()) });
        all
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.sealer.finish(&mut self.out);
        let last = Bytes::from(std::mem::take(&mut self.out));
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
                    return Err(os_error(cipher_truncated(
                        &st.o.cipher,
                        st.next,
                        &span,
                        st.buf.len(),
                    )))
                }
            }
        }
        let mut chunk = st.buf.split_to(need);
        let last = st.next + 1 == st.o.chunks;
        let n =
            st.o.cipher
                .open(st.next, last, &mut chunk, st.o.stored)
                .map_err(os_error)?;
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
