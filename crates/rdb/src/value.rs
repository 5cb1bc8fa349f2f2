//! The value decoders behind [`RdbReader::summarize`] and [`RdbReader::visit`]: one arm per
//! RDB value type. Without a visitor they count (and check the compact blobs they must open
//! to count) but copy no string; with one, every element is handed out.

use crate::encodings::{self, BlobError, Elem};
use crate::error::Result;
use crate::reader::RdbReader;
use crate::{EntryInfo, Magic, Visitor};
use std::io::Read;

/// Turns a blob walker's error into a file error at the blob's start.
fn blob_err<R: Read>(r: &RdbReader<R>, at: u64, what: &str, e: BlobError) -> crate::Error {
    r.inp.corrupt(
        at,
        format!("{what}: {} (at byte {} of the {what})", e.what, e.pos),
    )
}

fn score_of(e: &Elem<'_>) -> std::result::Result<f64, BlobError> {
    match e {
        Elem::Int(i) => Ok(*i as f64),
        Elem::Str(s) => std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|f| !f.is_nan())
            .ok_or_else(|| BlobError {
                pos: 0,
                what: format!("score {:?} is not a number", String::from_utf8_lossy(s)),
            }),
    }
}

impl<R: Read> RdbReader<R> {
    /// Reads one string into `s1` and returns it (taken; the caller puts it back).
    fn blob(&mut self, expected: &'static str) -> Result<(u64, Vec<u8>)> {
        let at = self.inp.offset();
        let mut b = std::mem::take(&mut self.s1);
        match self.inp.string(&mut b, expected) {
            Ok(()) => Ok((at, b)),
            Err(e) => {
                self.s1 = b;
                Err(e)
            }
        }
    }

    /// Reads a string and hands it to `f` (a scratch buffer, reused).
    fn with_string<T>(&mut self, expected: &'static str, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
        let mut b = std::mem::take(&mut self.s2);
        let r = self.inp.string(&mut b, expected);
        let out = r.map(|()| f(&b));
        self.s2 = b;
        out
    }

    /// Returns (elements, module type name).
    pub(crate) fn decode_value(
        &mut self,
        info: &EntryInfo,
        mut v: Option<&mut (dyn Visitor + '_)>,
    ) -> Result<(u64, Option<String>)> {
        let t = info.rdb_type;
        let valkey = self.header().magic == Magic::Valkey;
        let n = match t {
            0 => match v {
                Some(v) => self.with_string("a string value", |s| {
                    v.string(s);
                    s.len() as u64
                })?,
                None => self.inp.skip_string("a string value")?,
            },
            1 | 2 => {
                let n = self.inp.num("an element count")?;
                for _ in 0..n {
                    match v.as_deref_mut() {
                        Some(v) => self.with_string("an element", |s| {
                            if t == 1 {
                                v.list_item(s)
                            } else {
                                v.set_member(s)
                            }
                        })?,
                        None => {
                            self.inp.skip_string("an element")?;
                        }
                    }
                }
                n
            }
            3 | 5 => {
                let n = self.inp.num("a sorted set's size")?;
                let mut member = Vec::new();
                for _ in 0..n {
                    self.inp.string(&mut member, "a sorted set member")?;
                    let at = self.inp.offset();
                    let score = if t == 5 {
                        f64::from_le_bytes(self.inp.array("a binary score")?)
                    } else {
                        self.text_double()?
                    };
                    if score.is_nan() {
                        return Err(self.inp.corrupt(at, "sorted set score is NaN"));
                    }
                    if let Some(v) = v.as_deref_mut() {
                        v.zset_member(&member, score);
                    }
                }
                n
            }
            4 => {
                let n = self.inp.num("a hash's size")?;
                let mut field = Vec::new();
                for _ in 0..n {
                    match v.as_deref_mut() {
                        Some(v) => {
                            self.inp.string(&mut field, "a hash field")?;
                            self.with_string("a hash value", |s| v.hash_field(&field, s, None))?;
                        }
                        None => {
                            self.inp.skip_string("a hash field")?;
                            self.inp.skip_string("a hash value")?;
                        }
                    }
                }
                n
            }
            22 if valkey => {
                // HASH_2: (field, value, 8-byte absolute expiry or -1) per field.
                let n = self.inp.num("a hash's size")?;
                let mut field = Vec::new();
                let mut value = Vec::new();
                for _ in 0..n {
                    self.inp.string(&mut field, "a hash field")?;
                    self.inp.string(&mut value, "a hash value")?;
                    let ttl = self.inp.ms("a hash field's expiry")?;
                    if let Some(v) = v.as_deref_mut() {
                        v.hash_field(&field, &value, (ttl >= 0).then_some(ttl));
                    }
                }
                n
            }
            22 | 24 => {
                // Redis 7.4+ hashes with field TTLs: [min expiry] then (ttl, field, value).
                let min = if t == 24 {
                    Some(self.inp.ms("a hash's minimum field expiry")?)
                } else {
                    None
                };
                let n = self.inp.num("a hash's size")?;
                let mut field = Vec::new();
                let mut value = Vec::new();
                for _ in 0..n {
                    let ttl = self.inp.num("a hash field's TTL")?;
                    self.inp.string(&mut field, "a hash field")?;
                    self.inp.string(&mut value, "a hash value")?;
                    let expire = match (ttl, min) {
                        (0, _) => None,
                        // Relative to the minimum, plus one (0 is taken by "none").
                        (t, Some(m)) => Some((t as i64).wrapping_add(m).wrapping_sub(1)),
                        (t, None) => Some(t as i64),
                    };
                    if let Some(v) = v.as_deref_mut() {
                        v.hash_field(&field, &value, expire);
                    }
                }
                n
            }
            9 => {
                let (at, b) = self.blob("a zipmap")?;
                let r = encodings::zipmap(&b, |f, val| {
                    if let Some(v) = v.as_deref_mut() {
                        v.hash_field(f, val, None);
                    }
                    Ok(())
                });
                self.s1 = b;
                r.map_err(|e| blob_err(self, at, "zipmap", e))?
            }
            10 | 12 | 13 | 16 | 17 | 20 | 23 | 25 => {
                if t == 25 {
                    self.inp.ms("a hash's minimum field expiry")?;
                }
                let (at, b) = self.blob("a ziplist or listpack")?;
                let (what, lp) = match t {
                    10 => ("list ziplist", false),
                    12 => ("sorted set ziplist", false),
                    13 => ("hash ziplist", false),
                    _ => ("listpack", true),
                };
                let r = self.compact(t, lp, &b, v);
                self.s1 = b;
                r.map_err(|e| blob_err(self, at, what, e))?
            }
            11 => {
                let (at, b) = self.blob("an intset")?;
                let mut tmp = Vec::new();
                let r = encodings::intset(&b, |i| {
                    if let Some(v) = v.as_deref_mut() {
                        tmp.clear();
                        crate::input::push_int(&mut tmp, i);
                        v.set_member(&tmp);
                    }
                    Ok(())
                });
                self.s1 = b;
                r.map_err(|e| blob_err(self, at, "intset", e))?
            }
            14 | 18 => {
                let nodes = self.inp.num("a quicklist's node count")?;
                let mut total = 0u64;
                for _ in 0..nodes {
                    let container = if t == 18 {
                        let at = self.inp.offset();
                        match self.inp.num("a quicklist node's container")? {
                            c @ (1 | 2) => c,
                            c => {
                                return Err(self.inp.corrupt(
                                    at,
                                    format!(
                                    "quicklist node container {c} (expected 1 plain or 2 packed)"
                                ),
                                ))
                            }
                        }
                    } else {
                        2
                    };
                    if container == 1 {
                        match v.as_deref_mut() {
                            Some(v) => {
                                self.with_string("a plain quicklist node", |s| v.list_item(s))?
                            }
                            None => {
                                self.inp.skip_string("a plain quicklist node")?;
                            }
                        }
                        total += 1;
                        continue;
                    }
                    let (at, b) = self.blob("a quicklist node")?;
                    let what = if t == 14 {
                        "quicklist ziplist node"
                    } else {
                        "quicklist listpack node"
                    };
                    if b.is_empty() {
                        self.s1 = b;
                        return Err(self.inp.corrupt(at, format!("empty {what}")));
                    }
                    let r =
                        self.compact(if t == 14 { 10 } else { 18 }, t == 18, &b, v.as_deref_mut());
                    self.s1 = b;
                    total += r.map_err(|e| blob_err(self, at, what, e))?;
                }
                total
            }
            15 | 19 | 21 => self.stream(t, v)?,
            6 | 7 => {
                let id = self.inp.num("a module type id")?;
                let module = crate::module_name(id);
                if t == 6 {
                    return Err(crate::Error::UnknownModule {
                        at: self.inp.at(info.offset),
                        module,
                        key: String::from_utf8_lossy(&self.key).into_owned(),
                    });
                }
                if let Some(v) = v.as_deref_mut() {
                    v.module_value(&module, id & 1023);
                }
                let n = self.module_opcodes(&module, v)?;
                return Ok((n, Some(module)));
            }
            other => {
                return Err(self
                    .inp
                    .corrupt(info.offset, format!("unknown value type {other}")))
            }
        };
        Ok((n, None))
    }

    /// A ziplist or listpack of one value: list items, set members, (member, score) or
    /// (field, value[, ttl]) tuples by type. Returns the value's element count.
    fn compact<'a>(
        &self,
        t: u8,
        listpack: bool,
        b: &'a [u8],
        mut v: Option<&mut (dyn Visitor + '_)>,
    ) -> std::result::Result<u64, BlobError> {
        let tuple = match t {
            10 | 18 | 20 => 1,
            12 | 13 | 16 | 17 => 2,
            _ => 3, // 23, 25: field, value, ttl
        };
        let mut held: [Option<Elem<'a>>; 2] = [None, None];
        let mut i = 0usize;
        let (mut t1, mut t2) = (Vec::new(), Vec::new());
        let mut on = |e: Elem<'a>| -> std::result::Result<(), BlobError> {
            let slot = i % tuple;
            i += 1;
            if slot + 1 < tuple {
                // Elements borrow `b` (ints are copied): held until the tuple completes.
                held[slot] = Some(e);
                return Ok(());
            }
            let Some(v) = v.as_deref_mut() else {
                if matches!(t, 12 | 17) {
                    score_of(&e)?;
                }
                return Ok(());
            };
            match t {
                10 | 18 => v.list_item(e.as_bytes(&mut t1)),
                20 => v.set_member(e.as_bytes(&mut t1)),
                12 | 17 => {
                    let score = score_of(&e)?;
                    let m = held[0].take().unwrap_or(Elem::Str(b""));
                    v.zset_member(m.as_bytes(&mut t1), score);
                }
                13 | 16 => {
                    let f = held[0].take().unwrap_or(Elem::Str(b""));
                    v.hash_field(f.as_bytes(&mut t1), e.as_bytes(&mut t2), None);
                }
                _ => {
                    let ttl = e.as_int().ok_or_else(|| BlobError {
                        pos: 0,
                        what: "hash field TTL is not an integer".into(),
                    })?;
                    let f = held[0].take().unwrap_or(Elem::Str(b""));
                    let val = held[1].take().unwrap_or(Elem::Str(b""));
                    v.hash_field(
                        f.as_bytes(&mut t1),
                        val.as_bytes(&mut t2),
                        (ttl != 0).then_some(ttl),
                    );
                }
            }
            Ok(())
        };
        let count = if listpack {
            encodings::listpack(b, &mut on)?
        } else {
            encodings::ziplist(b, &mut on)?
        };
        if count % tuple as u64 != 0 {
            return Err(BlobError {
                pos: 0,
                what: format!("{count} elements do not make whole {tuple}-tuples"),
            });
        }
        Ok(count / tuple as u64)
    }

    /// A score as RDB_TYPE_ZSET writes it: a length byte (253 NaN, 254 +inf, 255 -inf) and text.
    fn text_double(&mut self) -> Result<f64> {
        let at = self.inp.offset();
        let n = self.inp.u8("a score's length")?;
        Ok(match n {
            253 => f64::NAN,
            254 => f64::INFINITY,
            255 => f64::NEG_INFINITY,
            n => {
                let s = self.inp.take(n as usize, "a score as text")?.to_vec();
                std::str::from_utf8(&s)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .ok_or_else(|| self.inp.corrupt(at, "a score that is not a number"))?
            }
        })
    }
}
