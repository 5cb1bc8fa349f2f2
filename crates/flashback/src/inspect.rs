//! `flashback inspect`: what an RDB file holds, by db and type, its biggest keys and when its
//! keys expire, read in one streaming pass by `flashback_rdb` (values are counted, never
//! copied). The report is data (serde, the `--json` schema in docs/cli.md); `cli/inspect.rs`
//! renders the text.

use flashback_rdb::{Item, Kind, Magic, RdbReader};
use serde::Serialize;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InspectReport {
    pub file: String,
    pub file_bytes: u64,
    /// "REDIS" or "VALKEY".
    pub magic: String,
    pub rdb_version: u32,
    /// The `redis-ver` / `valkey-ver` AUX field.
    pub server_version: Option<String>,
    /// The `ctime` AUX field, in ms since the epoch.
    pub created_ms: Option<u64>,
    /// Every AUX field, as text (lossy).
    pub aux: BTreeMap<String, String>,
    /// "ok", "disabled" (written with `rdbchecksum no`) or "absent" (RDB < 5).
    pub checksum: String,
    pub keys: u64,
    pub dbs: Vec<DbStats>,
    pub biggest: Vec<BigKey>,
    pub expiry: ExpiryHistogram,
    pub functions: u64,
    /// Module AUX data by module name.
    pub module_aux: Vec<String>,
    pub elapsed_ms: u64,
    pub mb_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DbStats {
    pub db: u64,
    pub keys: u64,
    pub expires: u64,
    /// Bytes of its entries in the file.
    pub bytes: u64,
    /// Keys by TYPE name (a module value under its module type name).
    pub by_type: BTreeMap<String, u64>,
    pub bytes_by_type: BTreeMap<String, u64>,
    /// Keys by RDB encoding (`hash-listpack`, `list-quicklist2`, …).
    pub by_encoding: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BigKey {
    pub db: u64,
    /// The key as UTF-8, or escaped (`\xNN`) when it is not valid UTF-8.
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub encoding: String,
    /// The entry's size in the file.
    pub bytes: u64,
    /// STRLEN, LLEN, SCARD, ZCARD, HLEN or XLEN.
    pub elements: u64,
    pub expire_ms: Option<i64>,
}

/// Keys by time left until their expiry, measured from `now_ms` of [`inspect`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ExpiryHistogram {
    pub no_ttl: u64,
    pub expired: u64,
    pub under_1m: u64,
    pub under_1h: u64,
    pub under_1d: u64,
    pub under_7d: u64,
    pub later: u64,
}

impl ExpiryHistogram {
    fn add(&mut self, expire_ms: Option<i64>, now_ms: u64) {
        let Some(at) = expire_ms else {
            self.no_ttl += 1;
            return;
        };
        let left = at.saturating_sub(now_ms as i64);
        const MIN: i64 = 60_000;
        match left {
            i64::MIN..=0 => self.expired += 1,
            l if l < MIN => self.under_1m += 1,
            l if l < 60 * MIN => self.under_1h += 1,
            l if l < 24 * 60 * MIN => self.under_1d += 1,
            l if l < 7 * 24 * 60 * MIN => self.under_7d += 1,
            _ => self.later += 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {file}: {source}")]
    Open {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Rdb(#[from] flashback_rdb::Error),
}

/// Per-db counts while reading: by RDB type byte (keys, bytes), module values by name.
#[derive(Default)]
struct Tally {
    keys: u64,
    expires: u64,
    bytes: u64,
    by_rdb_type: [(u64, u64); 32],
    modules: BTreeMap<String, (u64, u64)>,
}

impl Tally {
    fn stats(self, db: u64, magic: Magic) -> DbStats {
        let mut s = DbStats {
            db,
            keys: self.keys,
            expires: self.expires,
            bytes: self.bytes,
            ..Default::default()
        };
        for (t, &(n, b)) in self.by_rdb_type.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let t = t as u8;
            *s.by_encoding
                .entry(flashback_rdb::encoding_name(t, magic).to_string())
                .or_default() += n;
            let kind = flashback_rdb::kind_of(t, magic);
            if kind != Kind::Module {
                *s.by_type.entry(kind.name().to_string()).or_default() += n;
                *s.bytes_by_type.entry(kind.name().to_string()).or_default() += b;
            }
        }
        for (m, (n, b)) in self.modules {
            *s.by_type.entry(m.clone()).or_default() += n;
            *s.bytes_by_type.entry(m).or_default() += b;
        }
        s
    }
}

/// The key as JSON text: UTF-8 as is, anything else escaped.
fn key_text(k: &[u8]) -> String {
    match std::str::from_utf8(k) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let shown = crate::show::key(k);
            shown[1..shown.len() - 1].to_string()
        }
    }
}

/// Inspects the RDB file at `path`; `top` biggest keys; expiries measured from `now_ms`.
pub fn inspect_file(path: &Path, top: usize, now_ms: u64) -> Result<InspectReport, InspectError> {
    let name = path.display().to_string();
    let open_err = |source| InspectError::Open {
        file: name.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(open_err)?;
    let file_bytes = f.metadata().map_err(open_err)?.len();
    inspect(f, Some(name.clone()), file_bytes, top, now_ms)
}

/// Inspects an RDB read from `r` (`file` names it in errors).
pub fn inspect<R: Read>(
    r: R,
    file: Option<String>,
    file_bytes: u64,
    top: usize,
    now_ms: u64,
) -> Result<InspectReport, InspectError> {
    let started = Instant::now();
    let mut rdb = RdbReader::with_name(r, file.clone())?;
    let header = *rdb.header();
    let mut aux = BTreeMap::new();
    let mut dbs: BTreeMap<u64, Tally> = BTreeMap::new();
    // A min-heap of (bytes, order) keeps the `top` biggest in one pass; ties keep the earlier key.
    let mut heap: BinaryHeap<std::cmp::Reverse<(u64, std::cmp::Reverse<u64>, usize)>> =
        BinaryHeap::new();
    let mut slots: Vec<Option<BigKey>> = Vec::new();
    let mut expiry = ExpiryHistogram::default();
    let (mut keys, mut functions, mut module_aux, mut checksum) =
        (0u64, 0u64, Vec::new(), String::new());
    let mut order = 0u64;
    while let Some(item) = rdb.next()? {
        match item {
            Item::Aux { key, value } => {
                aux.insert(
                    String::from_utf8_lossy(&key).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
            Item::Function(_) => functions += 1,
            Item::ModuleAux { module, .. } => module_aux.push(module),
            Item::Entry(e) => {
                let sum = rdb.summarize()?;
                keys += 1;
                expiry.add(e.expire_ms, now_ms);
                let db = dbs.entry(e.db).or_default();
                db.keys += 1;
                db.expires += u64::from(e.expire_ms.is_some());
                db.bytes += sum.entry_bytes;
                // Counted in arrays by type byte, named once at the end: three map inserts
                // with a String key per entry were the slowest step of the whole read.
                let t = usize::from(e.rdb_type.min(31));
                db.by_rdb_type[t].0 += 1;
                db.by_rdb_type[t].1 += sum.entry_bytes;
                if let Some(m) = &sum.module {
                    let c = db.modules.entry(m.clone()).or_default();
                    c.0 += 1;
                    c.1 += sum.entry_bytes;
                }
                order += 1;
                if top == 0 {
                    continue;
                }
                let rank = (sum.entry_bytes, std::cmp::Reverse(order));
                let full = heap.len() >= top;
                if full && heap.peek().is_some_and(|m| (m.0 .0, m.0 .1) >= rank) {
                    continue;
                }
                let big = BigKey {
                    db: e.db,
                    key: key_text(rdb.key()),
                    kind: sum
                        .module
                        .clone()
                        .unwrap_or_else(|| e.kind.name().to_string()),
                    encoding: flashback_rdb::encoding_name(e.rdb_type, header.magic).to_string(),
                    bytes: sum.entry_bytes,
                    elements: sum.elements,
                    expire_ms: e.expire_ms,
                };
                let slot = if full {
                    let std::cmp::Reverse((_, _, s)) =
                        heap.pop()
                            .unwrap_or(std::cmp::Reverse((0, std::cmp::Reverse(0), 0)));
                    slots[s] = Some(big);
                    s
                } else {
                    slots.push(Some(big));
                    slots.len() - 1
                };
                heap.push(std::cmp::Reverse((rank.0, rank.1, slot)));
            }
            Item::End { stored_crc, .. } => {
                checksum = match stored_crc {
                    None => "absent",
                    Some(0) => "disabled",
                    Some(_) => "ok",
                }
                .to_string();
            }
            Item::SelectDb(_)
            | Item::ResizeDb { .. }
            | Item::SlotInfo { .. }
            | Item::SlotImport { .. } => {}
        }
    }
    let mut biggest: Vec<BigKey> = slots.into_iter().flatten().collect();
    biggest.sort_by_key(|k| std::cmp::Reverse(k.bytes));
    let elapsed = started.elapsed();
    let read = rdb.offset().max(file_bytes);
    let server_version = aux
        .get("valkey-ver")
        .or_else(|| aux.get("redis-ver"))
        .cloned();
    let created_ms = aux
        .get("ctime")
        .and_then(|t| t.parse::<u64>().ok())
        .map(|s| s * 1000);
    Ok(InspectReport {
        file: file.unwrap_or_else(|| "-".into()),
        file_bytes,
        magic: match header.magic {
            Magic::Redis => "REDIS",
            Magic::Valkey => "VALKEY",
        }
        .into(),
        rdb_version: header.version,
        server_version,
        created_ms,
        aux,
        checksum,
        keys,
        dbs: dbs
            .into_iter()
            .map(|(db, t)| t.stats(db, header.magic))
            .collect(),
        biggest,
        expiry,
        functions,
        module_aux,
        elapsed_ms: elapsed.as_millis() as u64,
        mb_per_s: read as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let now = 1_000_000_000u64;
        let mut h = ExpiryHistogram::default();
        for e in [
            None,
            Some(1),
            Some(now as i64),
            Some(now as i64 + 59_999),
            Some(now as i64 + 60_000),
            Some(now as i64 + 3_600_000),
            Some(now as i64 + 86_400_000 * 6),
            Some(now as i64 + 86_400_000 * 7),
        ] {
            h.add(e, now);
        }
        assert_eq!(
            h,
            ExpiryHistogram {
                no_ttl: 1,
                expired: 2,
                under_1m: 1,
                under_1h: 1,
                under_1d: 1,
                under_7d: 1,
                later: 1
            }
        );
    }
}
