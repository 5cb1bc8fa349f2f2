//! A stream written element by element ([`super::elements`]): its entries with their own IDs
//! (XADD), then what XINFO STREAM says of its history (XSETID: last ID, entries added, max
//! deleted ID, Redis 7.0+), then each consumer group (XGROUP CREATE … ENTRIESREAD), its
//! consumers (XGROUP CREATECONSUMER) and its pending entries (XCLAIM … IDLE RETRYCOUNT FORCE
//! JUSTID: the owner, the delivery count and, as of now, the idle time).
//!
//! Not reproducible, so the key is refused: a pending entry whose message was deleted from the
//! stream (XCLAIM only claims messages that exist). Approximated: each consumer's seen and
//! active times (no command sets them; they start at the copy).

use super::elements::{bulks, int, Pace, Stop, Writer};
use bytes::Bytes;
use flashback_format::resp::Frame;

/// `name value name value …` (a RESP2 map) → the value of `name`.
fn field<'f>(v: &'f [Frame], name: &[u8]) -> Option<&'f Frame> {
    v.chunks(2).find_map(|kv| match kv {
        [Frame::Bulk(k) | Frame::Simple(k), val] if &k[..] == name => Some(val),
        _ => None,
    })
}

fn bytes_of(f: Option<&Frame>) -> Option<Bytes> {
    match f {
        Some(Frame::Bulk(b) | Frame::Simple(b)) => Some(b.clone()),
        _ => None,
    }
}

fn array(f: Frame) -> Vec<Frame> {
    match f {
        Frame::Array(v) => v,
        _ => Vec::new(),
    }
}

pub(super) async fn stream(w: &mut Writer<'_>) -> Result<(), Stop> {
    let mut start = Bytes::from_static(b"-");
    let mut pace = Pace::default();
    let mut any = false;
    loop {
        let asked = pace.count;
        let count = asked.to_string();
        let entries = array(
            w.read(&[b"XRANGE", w.key, &start, b"+", b"COUNT", count.as_bytes()])
                .await?,
        );
        if entries.is_empty() {
            break;
        }
        let n = entries.len();
        let mut seen = Vec::new();
        for e in entries {
            let mut parts = array(e).into_iter();
            let (Some(Frame::Bulk(id)), Some(fields)) = (parts.next(), parts.next()) else {
                continue;
            };
            let fields = bulks(fields);
            seen.extend(fields.iter().cloned());
            let mut args = w.cmd(b"XADD");
            args.push(id.clone());
            args.extend(fields);
            w.write(&args).await?;
            any = true;
            let mut next = b"(".to_vec();
            next.extend_from_slice(&id);
            start = Bytes::from(next);
        }
        pace.saw(&seen);
        if n < asked {
            break;
        }
    }
    let info = array(w.read(&[b"XINFO", b"STREAM", w.key]).await?);
    if !any {
        // An empty stream (every entry deleted, or made by XGROUP … MKSTREAM): MKSTREAM it.
        let mut a = w.cmd(b"XGROUP");
        a.insert(1, Bytes::from_static(b"CREATE"));
        a.extend([
            Bytes::from_static(b"flashback:tmp"),
            Bytes::from_static(b"0"),
        ]);
        a.push(Bytes::from_static(b"MKSTREAM"));
        w.write(&a).await?;
        let mut d = w.cmd(b"XGROUP");
        d.insert(1, Bytes::from_static(b"DESTROY"));
        d.push(Bytes::from_static(b"flashback:tmp"));
        w.write(&d).await?;
    }
    if let Some(last) = bytes_of(field(&info, b"last-generated-id")) {
        let mut a = w.cmd(b"XSETID");
        a.push(last);
        if let Some(n) = field(&info, b"entries-added").and_then(int) {
            a.extend([
                Bytes::from_static(b"ENTRIESADDED"),
                Bytes::from(n.to_string()),
            ]);
            if let Some(m) = bytes_of(field(&info, b"max-deleted-entry-id")) {
                a.extend([Bytes::from_static(b"MAXDELETEDID"), m]);
            }
        }
        w.write(&a).await?;
    }
    for g in array(w.read(&[b"XINFO", b"GROUPS", w.key]).await?) {
        let g = array(g);
        let Some(name) = bytes_of(field(&g, b"name")) else {
            continue;
        };
        let last = bytes_of(field(&g, b"last-delivered-id")).unwrap_or(Bytes::from_static(b"0"));
        let mut a = w.cmd(b"XGROUP");
        a.insert(1, Bytes::from_static(b"CREATE"));
        a.extend([name.clone(), last]);
        if let Some(n) = field(&g, b"entries-read").and_then(int) {
            a.extend([
                Bytes::from_static(b"ENTRIESREAD"),
                Bytes::from(n.to_string()),
            ]);
        }
        w.write(&a).await?;
        group_members(w, &name).await?;
    }
    Ok(())
}

/// A group's consumers, then its pending entries, a page at a time.
async fn group_members(w: &mut Writer<'_>, group: &Bytes) -> Result<(), Stop> {
    for c in array(w.read(&[b"XINFO", b"CONSUMERS", w.key, group]).await?) {
        let c = array(c);
        if let Some(name) = bytes_of(field(&c, b"name")) {
            let mut a = w.cmd(b"XGROUP");
            a.insert(1, Bytes::from_static(b"CREATECONSUMER"));
            a.extend([group.clone(), name]);
            w.write(&a).await?;
        }
    }
    let mut start = Bytes::from_static(b"-");
    loop {
        let page = array(
            w.read(&[b"XPENDING", w.key, group, &start, b"+", b"500"])
                .await?,
        );
        if page.is_empty() {
            return Ok(());
        }
        for p in page {
            let p = array(p);
            let (Some(Frame::Bulk(id)), Some(Frame::Bulk(consumer))) = (p.first(), p.get(1)) else {
                continue;
            };
            let idle = p.get(2).and_then(int).unwrap_or(0);
            let deliveries = p.get(3).and_then(int).unwrap_or(1);
            let mut a = w.cmd(b"XCLAIM");
            a.extend([
                group.clone(),
                consumer.clone(),
                Bytes::from_static(b"0"),
                id.clone(),
                Bytes::from_static(b"IDLE"),
                Bytes::from(idle.to_string()),
                Bytes::from_static(b"RETRYCOUNT"),
                Bytes::from(deliveries.to_string()),
                Bytes::from_static(b"FORCE"),
                Bytes::from_static(b"JUSTID"),
            ]);
            if array(w.write(&a).await?).is_empty() {
                return Err(Stop::Refused(format!(
                    "group {} has pending entry {} whose message was deleted from the stream, which XCLAIM cannot recreate: restore it with --redis-server set to a server of the target's version (DUMP/RESTORE carries it)",
                    crate::show::key(group),
                    String::from_utf8_lossy(id)
                )));
            }
            let mut next = b"(".to_vec();
            next.extend_from_slice(id);
            start = Bytes::from(next);
        }
    }
}
