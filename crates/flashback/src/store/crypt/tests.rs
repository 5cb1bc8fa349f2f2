//! The encrypted and the plain store end to end over in-memory and local stores: round trips,
//! ranges across chunks, every kind of damage named, copies re-encrypted. The pure format
//! (sizes, seal/open of bytes) is tested in `flashback_format::crypt`, the key forms in `key`.

use super::{EncryptedStore, EncryptionKey, PlainStore};
use flashback_format::crypt::{chunk_span, stored_size, CHUNK, MAGIC};
use futures::stream::{BoxStream, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, WriteMultipart,
};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const C: u64 = CHUNK as u64;

fn key(byte: u8) -> EncryptionKey {
    EncryptionKey::from_bytes(&[byte; 32]).unwrap()
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
