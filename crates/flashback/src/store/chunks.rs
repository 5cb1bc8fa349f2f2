//! Local files read for upload in chunks of at most [`CHUNK`] bytes: the one way compaction
//! (a new base) and the uploader (spool → remote store) turn a file into request payloads.
//!
//! Why chunks rather than one buffer per part or per object: an agent that allocates and frees
//! a buffer of many MiB at every compaction (an 8 MiB part), every upload (a 16 MiB part, or a
//! whole sealed segment) grows without leaking (issue 14: +2.5 MB of RSS per compaction, the
//! heap itself flat under heaptrack). glibc maps such a buffer on its own, but freeing it raises
//! the threshold above which it maps (to the size freed, up to 32 MiB), so from then on every
//! buffer below that size is carved from the arena of whichever thread asked (a tokio worker or
//! a blocking-pool thread, each with its own), and each arena keeps up to twice the threshold
//! of freed memory at its top, plus the holes that small long-lived allocations pin. With no
//! allocation here above a segment block's size (1 MiB: the largest buffer the capture path
//! needs anyway), the threshold, and with it what the arenas hold, stays at that size.
//! `PutPayload` is a list of `Bytes`, so a 16 MiB part needs no contiguous 16 MiB.
//!
//! Rejected: pinning the threshold with `mallopt` at start (measured: it also flattens RSS),
//! because it is glibc-only, needs `unsafe` in the binary, and leaves the buffers as big as
//! they were for every other allocator; and reusing one part-sized buffer, because a payload
//! must own its bytes until the request (and its retries) are done.

use bytes::{Bytes, BytesMut};
use object_store::PutPayload;
use std::path::Path;
use tokio::io::AsyncReadExt;

/// The largest buffer a chunk needs: a segment block's raw size (`capture::tail`).
pub const CHUNK: usize = 1 << 20;

/// A file being read in chunks of at most [`CHUNK`] bytes.
pub struct ChunkedFile {
    f: tokio::fs::File,
    done: bool,
}

impl ChunkedFile {
    pub async fn open(path: &Path) -> std::io::Result<ChunkedFile> {
        Ok(ChunkedFile {
            f: tokio::fs::File::open(path).await?,
            done: false,
        })
    }

    /// The next chunk: [`CHUNK`] bytes, fewer only at the end of the file; None after it.
    pub async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        self.next_sized(CHUNK).await
    }

    /// The next `len` bytes (fewer only at the end of the file) as one payload of chunks; an
    /// empty payload after the end.
    pub async fn next_payload(&mut self, len: usize) -> std::io::Result<PutPayload> {
        let mut chunks = Vec::with_capacity(len.div_ceil(CHUNK));
        let mut have = 0;
        while have < len {
            // The last chunk of a part is cut to the part's length, so it is allocated at that
            // length rather than cut from a full chunk (whose unused tail would live as long).
            let want = (len - have).min(CHUNK);
            let Some(c) = self.next_sized(want).await? else {
                break;
            };
            have += c.len();
            chunks.push(c);
        }
        Ok(chunks.into_iter().collect())
    }

    async fn next_sized(&mut self, want: usize) -> std::io::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let mut b = BytesMut::with_capacity(want);
        while b.len() < want {
            if self.f.read_buf(&mut b).await? == 0 {
                self.done = true;
                break;
            }
        }
        Ok((!b.is_empty()).then(|| b.freeze()))
    }
}

/// A whole file as one payload of chunks (for a single PUT).
pub async fn read_payload(path: &Path) -> std::io::Result<PutPayload> {
    let mut f = ChunkedFile::open(path).await?;
    let mut chunks = Vec::new();
    while let Some(c) = f.next_chunk().await? {
        chunks.push(c);
    }
    Ok(chunks.into_iter().collect())
}

/// Whether `payload` holds exactly the bytes of `other`.
pub fn payload_eq(payload: &PutPayload, other: &[u8]) -> bool {
    if payload.content_length() != other.len() {
        return false;
    }
    let mut at = 0;
    payload.iter().all(|c| {
        let same = other[at..at + c.len()] == c[..];
        at += c.len();
        same
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_comes_back_whole_in_bounded_chunks_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * CHUNK + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();

        let whole = read_payload(&path).await.unwrap();
        assert_eq!(whole.content_length(), data.len());
        assert!(whole.iter().all(|c| c.len() <= CHUNK));
        assert!(payload_eq(&whole, &data));
        let mut other = data.clone();
        other[2 * CHUNK + 5] ^= 1;
        assert!(!payload_eq(&whole, &other));
        assert!(!payload_eq(&whole, &data[1..]));

        // Parts of 1.5 chunks: every part but the last has exactly that length.
        let part = CHUNK + CHUNK / 2;
        let mut f = ChunkedFile::open(&path).await.unwrap();
        let mut back = Vec::new();
        loop {
            let p = f.next_payload(part).await.unwrap();
            if p.content_length() == 0 {
                break;
            }
            assert!(p.iter().all(|c| c.len() <= CHUNK));
            let n = p.content_length();
            p.iter().for_each(|c| back.extend_from_slice(c));
            if back.len() < data.len() {
                assert_eq!(n, part);
            }
        }
        assert_eq!(back, data);
        assert_eq!(f.next_chunk().await.unwrap(), None);

        std::fs::write(&path, b"").unwrap();
        assert_eq!(read_payload(&path).await.unwrap().content_length(), 0);
    }
}
