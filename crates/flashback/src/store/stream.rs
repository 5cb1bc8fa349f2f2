//! The one store-backed segment stream: a segment object read from the store one block at a
//! time through a [`SegmentScanner`], every block's checksum checked on the way. Restore's
//! planner and reader, verify, the catalog (open tails) and compaction (through restore) all
//! read segments with it.
//!
//! Never the whole object in memory: a segment can hold a 512 MB record (in fragments), and
//! neither planning, replaying nor verifying may need that much. It also keeps the crc32c of
//! every byte the store returned, so verify can compare the one a sealed segment's name records
//! without a second read.

use super::{Store, StoreError};
use bytes::{Bytes, BytesMut};
use flashback_format::segment::{
    Item, ScannedBlock, Sealed, SegmentHeader, SegmentScanner, SegmentSummary,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;

/// Why a segment could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The store answered with an error (a missing object is
    /// `Store(StoreError::ObjectStore(NotFound))`, see [`StreamError::is_not_found`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The body ended before the object's size: a truncated object, or one that shrank.
    #[error("store: {key}: the store returned {have} of the object's {len} bytes")]
    Short { key: String, have: u64, len: u64 },
    /// The bytes fail a checksum or a format rule (the error names the file and offset).
    #[error(transparent)]
    Format(#[from] flashback_format::Error),
}

impl StreamError {
    /// The object was not there when opened (pruned, or sealed by a live agent, since the
    /// listing).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StreamError::Store(StoreError::ObjectStore(
                object_store::Error::NotFound { .. }
            ))
        )
    }
}

pub struct SegmentStream {
    key: String,
    scanner: SegmentScanner,
    body: BoxStream<'static, object_store::Result<Bytes>>,
    buf: BytesMut,
    len: u64,
    /// Bytes handed to the scanner so far.
    pub fetched: u64,
    /// Bytes the store returned so far, and their crc32c.
    received: u64,
    crc: u32,
    /// Where the listing said this segment ends: for a damaged open tail, where the damage
    /// starts. Damage found past it is the end of what the reader asked for, not an error, so
    /// a restore before the damage never trips over it.
    listed_end: Option<u64>,
}

impl SegmentStream {
    /// Opens `key` for scanning in `sealed` mode. `size`: the size a sealed segment must have
    /// (its listed size: it must not have changed since); None reads what the GET returns (an
    /// open tail may have grown since the listing).
    pub async fn open(
        store: &Store,
        key: &Path,
        sealed: Sealed,
        size: Option<u64>,
    ) -> Result<Self, StreamError> {
        let got = store.os.get(key).await.map_err(StoreError::from)?;
        let len = size.unwrap_or(got.meta.size);
        Ok(SegmentStream {
            key: key.to_string(),
            scanner: SegmentScanner::new(key.as_ref(), len, sealed),
            body: got.into_stream(),
            buf: BytesMut::new(),
            len,
            fetched: 0,
            received: 0,
            crc: 0,
            listed_end: None,
        })
    }

    /// See `listed_end`.
    pub fn with_listed_end(mut self, end_offset: u64) -> Self {
        self.listed_end = Some(end_offset);
        self
    }

    fn past_damage(&self, e: flashback_format::Error) -> Result<Option<ScannedBlock>, StreamError> {
        match (&e, self.listed_end) {
            (flashback_format::Error::Damaged { damage, .. }, Some(end))
                if damage.good_end_offset >= end =>
            {
                Ok(None)
            }
            _ => Err(e.into()),
        }
    }

    /// The next block, checked (its payload is decoded by [`decode`](Self::decode)); None at
    /// the end.
    pub async fn next_block(&mut self) -> Result<Option<ScannedBlock>, StreamError> {
        loop {
            let n = match self.scanner.next_need() {
                Ok(n) => n,
                Err(e) => return self.past_damage(e),
            };
            if n == 0 {
                return Ok(None);
            }
            while self.buf.len() < n {
                match self.body.next().await {
                    Some(chunk) => {
                        let chunk = chunk.map_err(StoreError::from)?;
                        self.received += chunk.len() as u64;
                        self.crc = crc32c::crc32c_append(self.crc, &chunk);
                        self.buf.extend_from_slice(&chunk);
                    }
                    None => {
                        return Err(StreamError::Short {
                            key: self.key.clone(),
                            have: self.fetched + self.buf.len() as u64,
                            len: self.len,
                        })
                    }
                }
            }
            let bytes = self.buf.split_to(n);
            self.fetched += n as u64;
            match self.scanner.feed(&bytes) {
                Ok(Some(b)) => return Ok(Some(b)),
                Ok(None) => {}
                Err(e) => return self.past_damage(e),
            }
        }
    }

    /// Reads to the end, every block checked but none decoded.
    pub async fn skip_to_end(&mut self) -> Result<(), StreamError> {
        while self.next_block().await?.is_some() {}
        Ok(())
    }

    /// Reads what the scan did not need (bytes after a torn end) and returns the crc32c and
    /// count of every byte the store returned.
    pub async fn drain(&mut self) -> Result<(u32, u64), StreamError> {
        while let Some(chunk) = self.body.next().await {
            let chunk = chunk.map_err(StoreError::from)?;
            self.received += chunk.len() as u64;
            self.crc = crc32c::crc32c_append(self.crc, &chunk);
        }
        Ok((self.crc, self.received))
    }

    /// Bytes the store returned so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn decode(&self, b: &ScannedBlock) -> Result<Vec<Item>, StreamError> {
        Ok(self.scanner.decode(b)?)
    }

    /// The segment's header, once a block (or the end) was read.
    pub fn header(&self) -> Option<&SegmentHeader> {
        self.scanner.header()
    }

    /// Offsets and times of what was read, once at the end.
    pub fn summary(&self) -> Option<SegmentSummary> {
        self.scanner.summary()
    }

    /// Why an open tail's end was dropped as a torn write, if it was.
    /// The damage the scan found (a bad block with intact ones after it), if any.
    pub fn damage(&self) -> Option<&flashback_format::segment::Damage> {
        self.scanner.damage()
    }

    pub fn torn_reason(&self) -> Option<&str> {
        self.scanner.torn_reason()
    }

    /// The finished scan.
    pub fn into_scanner(self) -> SegmentScanner {
        self.scanner
    }
}
