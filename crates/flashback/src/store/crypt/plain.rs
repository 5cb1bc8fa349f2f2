//! [`PlainStore`]: a store opened without a key. Everything passes through, except that a
//! read from an object's first byte that finds an encrypted object fails saying which key to
//! pass, instead of a segment or manifest decoder choking on ciphertext later.

use super::os_error;
use bytes::Bytes;
use flashback_format::crypt::{refuse_encrypted, HEADER_LEN};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

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
                refuse_encrypted(location.as_ref(), &prefix).map_err(os_error)?;
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
                refuse_encrypted(location.as_ref(), &prefix).map_err(os_error)?;
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
