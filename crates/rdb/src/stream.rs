//! Streams (RDB_TYPE_STREAM_LISTPACKS 1–3): the listpacks of entries keyed by their master
//! ID, the stream's metadata, then consumer groups with their PELs and consumers.

use crate::encodings::{self, BlobError, Elem};
use crate::error::Result;
use crate::reader::RdbReader;
use crate::Visitor;
use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A stream's own fields (XINFO STREAM). The v2+ fields are None in a v1 stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMeta {
    pub length: u64,
    pub last_id: StreamId,
    pub first_id: Option<StreamId>,
    pub max_deleted_id: Option<StreamId>,
    pub entries_added: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPending {
    pub id: StreamId,
    pub delivery_time_ms: i64,
    pub delivery_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConsumer {
    pub name: Vec<u8>,
    pub seen_time_ms: i64,
    /// RDB_TYPE_STREAM_LISTPACKS_3 (Redis 7.2+).
    pub active_time_ms: Option<i64>,
    pub pending: Vec<StreamId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamGroup {
    pub name: Vec<u8>,
    pub last_id: StreamId,
    /// v2+: the group's entries-read counter.
    pub entries_read: Option<u64>,
    pub pending: Vec<StreamPending>,
    pub consumers: Vec<StreamConsumer>,
}

fn raw_id(b: &[u8; 16]) -> StreamId {
    let mut ms = [0u8; 8];
    let mut seq = [0u8; 8];
    ms.copy_from_slice(&b[..8]);
    seq.copy_from_slice(&b[8..]);
    StreamId {
        ms: u64::from_be_bytes(ms),
        seq: u64::from_be_bytes(seq),
    }
}

fn int(e: Option<&Elem<'_>>, what: &str) -> std::result::Result<i64, BlobError> {
    e.and_then(Elem::as_int).ok_or_else(|| BlobError {
        pos: 0,
        what: format!("stream listpack: {what} missing or not an integer"),
    })
}

/// Calls `f` for each live entry of one stream listpack whose master ID is `master`.
fn entries(
    lp: &[u8],
    master: StreamId,
    mut f: impl FnMut(StreamId, &[(Vec<u8>, Vec<u8>)]),
) -> std::result::Result<(), BlobError> {
    let mut el: Vec<Elem<'_>> = Vec::new();
    encodings::listpack(lp, |e| {
        el.push(e);
        Ok(())
    })?;
    // Master entry: count, deleted, field count, fields…, 0.
    let nf = int(el.get(2), "the master field count")?;
    let nf = usize::try_from(nf)
        .ok()
        .filter(|&n| 3 + n < el.len() + 1)
        .ok_or_else(|| BlobError {
            pos: 0,
            what: format!("stream listpack: master field count {nf} beyond the listpack"),
        })?;
    let master_fields = el.get(3..3 + nf).ok_or_else(|| BlobError {
        pos: 0,
        what: "stream listpack: master fields cut".into(),
    })?;
    let mut p = 3 + nf + 1;
    let mut tmp = Vec::new();
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    while p < el.len() {
        let flags = int(el.get(p), "an entry's flags")?;
        let ms = int(el.get(p + 1), "an entry's ms delta")?;
        let seq = int(el.get(p + 2), "an entry's seq delta")?;
        p += 3;
        pairs.clear();
        let same = flags & 2 != 0;
        let n = if same {
            nf
        } else {
            let n = int(el.get(p), "an entry's field count")?;
            p += 1;
            usize::try_from(n).map_err(|_| BlobError {
                pos: 0,
                what: "stream listpack: negative field count".into(),
            })?
        };
        for i in 0..n {
            let (fe, ve) = if same {
                (master_fields.get(i), el.get(p))
            } else {
                let f = el.get(p);
                p += 1;
                (f, el.get(p))
            };
            p += 1;
            let (Some(fe), Some(ve)) = (fe, ve) else {
                return Err(BlobError {
                    pos: 0,
                    what: "stream listpack: an entry's fields run past the listpack".into(),
                });
            };
            pairs.push((fe.to_bytes(&mut tmp), ve.to_bytes(&mut tmp)));
        }
        int(el.get(p), "an entry's lp-count")?;
        p += 1;
        if flags & 1 == 0 {
            let id = StreamId {
                ms: master.ms.wrapping_add(ms as u64),
                seq: master.seq.wrapping_add(seq as u64),
            };
            f(id, &pairs);
        }
    }
    Ok(())
}

impl<R: Read> RdbReader<R> {
    fn stream_id(&mut self, what: &'static str) -> Result<StreamId> {
        Ok(StreamId {
            ms: self.inp.num(what)?,
            seq: self.inp.num(what)?,
        })
    }

    /// Returns the stream's length (XLEN).
    pub(crate) fn stream(&mut self, t: u8, mut v: Option<&mut (dyn Visitor + '_)>) -> Result<u64> {
        let n = self.inp.num("a stream's listpack count")?;
        let mut key = Vec::new();
        let mut lp = Vec::new();
        for _ in 0..n {
            let at = self.inp.offset();
            self.inp.string(&mut key, "a stream listpack's master ID")?;
            let Ok(raw) = <[u8; 16]>::try_from(key.as_slice()) else {
                return Err(self.inp.corrupt(
                    at,
                    format!("stream master ID of {} bytes (expected 16)", key.len()),
                ));
            };
            let master = raw_id(&raw);
            let at = self.inp.offset();
            match v.as_deref_mut() {
                Some(v) => {
                    self.inp.string(&mut lp, "a stream listpack")?;
                    entries(&lp, master, |id, f| v.stream_entry(id, f)).map_err(|e| {
                        self.inp.corrupt(
                            at,
                            format!("{} (in the listpack of master ID {master})", e.what),
                        )
                    })?;
                }
                None => {
                    self.inp.skip_string("a stream listpack")?;
                }
            }
        }
        let length = self.inp.num("a stream's length")?;
        let last_id = self.stream_id("a stream's last ID")?;
        let (first_id, max_deleted_id, entries_added) = if t >= 19 {
            (
                Some(self.stream_id("a stream's first ID")?),
                Some(self.stream_id("a stream's max deleted ID")?),
                Some(self.inp.num("a stream's entries-added")?),
            )
        } else {
            (None, None, None)
        };
        if let Some(v) = v.as_deref_mut() {
            v.stream_meta(&StreamMeta {
                length,
                last_id,
                first_id,
                max_deleted_id,
                entries_added,
            });
        }
        let groups = self.inp.num("a stream's consumer group count")?;
        for _ in 0..groups {
            let mut name = Vec::new();
            self.inp.string(&mut name, "a consumer group name")?;
            let last_id = self.stream_id("a consumer group's last ID")?;
            let entries_read = if t >= 19 {
                Some(self.inp.num("a consumer group's entries-read")?)
            } else {
                None
            };
            let mut pending = Vec::new();
            let pel = self.inp.num("a consumer group's PEL size")?;
            for _ in 0..pel {
                let id = raw_id(&self.inp.array("a PEL entry's ID")?);
                let delivery_time_ms = self.inp.ms("a PEL entry's delivery time")?;
                let delivery_count = self.inp.num("a PEL entry's delivery count")?;
                if v.is_some() {
                    pending.push(StreamPending {
                        id,
                        delivery_time_ms,
                        delivery_count,
                    });
                }
            }
            let mut consumers = Vec::new();
            let nc = self.inp.num("a consumer group's consumer count")?;
            for _ in 0..nc {
                let mut cname = Vec::new();
                self.inp.string(&mut cname, "a consumer name")?;
                let seen_time_ms = self.inp.ms("a consumer's seen time")?;
                let active_time_ms = if t >= 21 {
                    Some(self.inp.ms("a consumer's active time")?)
                } else {
                    None
                };
                let np = self.inp.num("a consumer's PEL size")?;
                let mut ids = Vec::new();
                for _ in 0..np {
                    let id = raw_id(&self.inp.array("a consumer PEL entry's ID")?);
                    if v.is_some() {
                        ids.push(id);
                    }
                }
                if v.is_some() {
                    consumers.push(StreamConsumer {
                        name: cname,
                        seen_time_ms,
                        active_time_ms,
                        pending: ids,
                    });
                }
            }
            if let Some(v) = v.as_deref_mut() {
                v.stream_group(&StreamGroup {
                    name,
                    last_id,
                    entries_read,
                    pending,
                    consumers,
                });
            }
        }
        Ok(length)
    }
}
