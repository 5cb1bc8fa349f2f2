//! The key's value at a point of its history: for now a full restore up to that point into a
//! private redis-server (the restore engine), then TYPE and the read of its type, and PTTL.
//! A key-level restore that reads only the key from the base is later work (an RDB reader).

use super::HistoryError;
use crate::redis_server::{RedisServer, ServerBinary, ServerOptions};
use crate::restore::{engine, plan, RestoreError, Target};
use crate::store::Store;
use bytes::Bytes;
use flashback_format::resp::Frame;
use serde_json::Value;

/// Elements of a collection shown before "… N more".
const ELEMENTS_SHOWN: usize = 100;

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyValue {
    pub db: u32,
    /// Escaped as in the text output.
    pub name: String,
    /// `none` when the key does not exist there.
    #[serde(rename = "type")]
    pub kind: String,
    /// A string, or an array for a collection (hash: field, value, …; zset: member, score, …;
    /// stream: [id, [field, value, …]] …), every byte string escaped and capped.
    pub value: Value,
    /// Remaining time to live as the restored server saw it (ms), None without one.
    pub ttl_ms: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ValueAt {
    /// The offset restored to (end of the last transaction included).
    pub offset: u64,
    /// Arrival time of the last record restored, when known.
    pub time_ms: Option<u64>,
    pub generation: String,
    pub keys: Vec<KeyValue>,
}

/// Restores `target` and reads every `(db, name)` in `names`.
pub async fn value_at(
    store: &Store,
    source: &str,
    target: Target,
    names: &[(u32, Bytes)],
    redis_server: Option<&std::path::Path>,
) -> Result<ValueAt, HistoryError> {
    let p = plan::plan(store, source, target).await?;
    let binary = ServerBinary::find(redis_server).map_err(RestoreError::from)?;
    let version = engine::check_base_version(store, &p, &binary).await?;
    let server = RedisServer::start(&binary, ServerOptions::default())
        .await
        .map_err(RestoreError::from)?;
    engine::replay(store, &p, &server, version).await?;
    let mut c = server.client().await.map_err(RestoreError::from)?;
    let mut keys = Vec::new();
    for (db, name) in names {
        call(&mut c, vec!["SELECT".into(), db.to_string().into()]).await?;
        let kind = call(&mut c, vec!["TYPE".into(), name.clone()])
            .await?
            .text();
        let read: Option<Vec<Bytes>> = match kind.as_str() {
            "string" => Some(vec!["GET".into(), name.clone()]),
            "hash" => Some(vec!["HGETALL".into(), name.clone()]),
            "list" => Some(vec!["LRANGE".into(), name.clone(), "0".into(), "-1".into()]),
            "set" => Some(vec!["SMEMBERS".into(), name.clone()]),
            "zset" => Some(vec![
                "ZRANGE".into(),
                name.clone(),
                "0".into(),
                "-1".into(),
                "WITHSCORES".into(),
            ]),
            "stream" => Some(vec!["XRANGE".into(), name.clone(), "-".into(), "+".into()]),
            _ => None,
        };
        let value = match read {
            Some(args) => {
                let mut v = json(&call(&mut c, args).await?);
                if kind == "set" {
                    // SMEMBERS has no order; sorted, two points of one set compare.
                    if let Value::Array(items) = &mut v {
                        items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                    }
                }
                v
            }
            None => Value::Null,
        };
        let ttl = match call(&mut c, vec!["PTTL".into(), name.clone()]).await? {
            Frame::Integer(t) if t >= 0 => Some(t),
            _ => None,
        };
        keys.push(KeyValue {
            db: *db,
            name: crate::show::key(name),
            kind,
            value,
            ttl_ms: ttl,
        });
    }
    Ok(ValueAt {
        offset: p.stop_offset,
        time_ms: p.stop_time_ms,
        generation: p.generation.clone(),
        keys,
    })
}

async fn call(c: &mut crate::client::Client, args: Vec<Bytes>) -> Result<Frame, RestoreError> {
    c.ok(&args).await.map_err(RestoreError::from)
}

fn json(f: &Frame) -> Value {
    match f {
        Frame::Bulk(b) | Frame::Simple(b) => Value::String(crate::show::key(b)),
        Frame::Error(e) => Value::String(format!("(error) {}", String::from_utf8_lossy(e))),
        Frame::Integer(i) => Value::from(*i),
        Frame::Null => Value::Null,
        Frame::Array(items) => {
            let mut out: Vec<Value> = items.iter().take(ELEMENTS_SHOWN).map(json).collect();
            if items.len() > ELEMENTS_SHOWN {
                out.push(Value::String(format!(
                    "… {} more",
                    items.len() - ELEMENTS_SHOWN
                )));
            }
            Value::Array(out)
        }
    }
}
