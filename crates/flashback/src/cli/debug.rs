//! `flashback debug`: the byte-level structure of a file a user sent, for a maintainer.
//! `segment dump` prints a segment's header fields with their bytes, every block (position,
//! length, flags, lengths, checksums, records, offsets, times), the footer, and the first bad
//! byte; `segment verify` says the same in one line; `base` prints an RDB's header, AUX fields
//! and trailer check.
//!
//! The walking is `flashback_format::inspect` (the codec's own readers, so the dump cannot
//! disagree with a restore); this file only picks what a file is and prints. Files that are not
//! what the command reads (an encrypted object, a manifest, the other kind) get one line saying
//! what they are and which command or key reads them, rather than a parse error at byte 0.

use super::UsageError;
use anyhow::Context;
use flashback::store::{crypt, layout, manifest};
use flashback::timespec::format_rfc3339_ms;
use flashback_format::inspect::{self, BadBlock, BaseReport, Decoded, Ending, SegmentReport};
use flashback_format::segment::{self, BlockInfo, Sealed, SegmentSummary};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  flashback debug segment dump spool/sources/cache/generations/0000019a2b3c4d5e/segments/0000000000001000.tail
  flashback debug segment verify 0000000000001000-0000000000002000-019a2b3c4d5e-019a2b3c4e00-3f2-1a2b3c4d.seg
  flashback debug base dump.rdb

They read plaintext files: a spool's tail, a local store's objects, a copy of an object from
an unencrypted store, an RDB. Exit status: 0 when the file reads (a torn tail included: a
reader drops it by design), 1 on damage or corruption, 2 when the file is of another kind.")]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// A segment (sealed `.seg` or open `.tail`)
    #[command(subcommand)]
    Segment(SegmentCmd),
    /// An RDB file or a stored base: header, AUX fields, trailer checksum
    Base {
        file: PathBuf,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
enum SegmentCmd {
    /// Header fields with their bytes, each block, the footer, the first damage or torn tail
    Dump {
        file: PathBuf,
        #[command(flatten)]
        mode: Mode,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One line: OK with counts, or the first damage with its byte (exit 1)
    Verify {
        file: PathBuf,
        #[command(flatten)]
        mode: Mode,
    },
}

#[derive(clap::Args)]
#[group(multiple = false)]
struct Mode {
    /// Read it as sealed (a footer must end it) [default: sealed when the file ends with the
    /// footer magic or is named as a stored sealed segment]
    #[arg(long)]
    sealed: bool,
    /// Read it as an open tail (a torn end is dropped, a bad block before good ones is damage)
    #[arg(long)]
    tail: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    // Blocking reads of one local file: a runtime thread may wait on them, nothing else runs.
    match a.what {
        What::Segment(SegmentCmd::Dump { file, mode, json }) => {
            let r = read_segment(&file, &mode)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&segment_json(&r))?);
            } else {
                print!("{}", segment_text(&r));
            }
            bad_exit(&r)
        }
        What::Segment(SegmentCmd::Verify { file, mode }) => {
            let r = read_segment(&file, &mode)?;
            bad_exit(&r)?;
            println!("{}", verify_line(&r));
            Ok(())
        }
        What::Base { file, json } => {
            let r = read_base(&file)?;
            let name = stored_name(&file);
            if json {
                println!("{}", serde_json::to_string_pretty(&base_json(&r))?);
            } else {
                print!("{}", base_text(&r, name.as_ref()));
            }
            if let Some((at, what)) = &r.trailer_problem {
                anyhow::bail!("{}: corrupt at byte {at}: {what}", r.file);
            }
            if let Some(layout::Entry::Base { size, crc32c, .. }) = name {
                if (size, crc32c) != (r.len, r.crc32c) {
                    anyhow::bail!(
                        "{}: its store name records {size} bytes and crc32c {crc32c:#010x}, the file has {} bytes and crc32c {:#010x}",
                        r.file, r.len, r.crc32c
                    );
                }
            }
            Ok(())
        }
    }
}

/// Exit 1 with the damage's one line when the segment is damaged or corrupt.
fn bad_exit(r: &SegmentReport) -> anyhow::Result<()> {
    match &r.ending {
        Ending::Damaged(d) => anyhow::bail!("{}: damaged at {d}", r.file),
        Ending::Corrupt { offset, what } => {
            anyhow::bail!("{}: corrupt at byte {offset}: {what}", r.file)
        }
        _ => Ok(()),
    }
}

fn open(file: &Path) -> anyhow::Result<(std::fs::File, u64, Vec<u8>)> {
    let mut f =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("cannot stat {}", file.display()))?
        .len();
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut f, 64), &mut head)
        .with_context(|| format!("cannot read {}", file.display()))?;
    Ok((f, len, head))
}

fn read_segment(file: &Path, mode: &Mode) -> anyhow::Result<SegmentReport> {
    let (f, len, head) = open(file)?;
    let name = file.display().to_string();
    if !head.starts_with(&segment::MAGIC) {
        return Err(UsageError(foreign(&name, &head, "a flashback segment")).into());
    }
    let named_sealed = matches!(stored_name(file), Some(layout::Entry::Sealed(_)));
    let sealed = match (mode.sealed || named_sealed, mode.tail) {
        (_, true) => Some(Sealed::No),
        (true, false) => Some(Sealed::Yes),
        (false, false) => None,
    };
    Ok(inspect::segment(&name, f, len, sealed)?)
}

fn read_base(file: &Path) -> anyhow::Result<BaseReport> {
    let (f, len, head) = open(file)?;
    let name = file.display().to_string();
    if !(head.starts_with(b"REDIS") || head.starts_with(b"VALKEY")) {
        return Err(UsageError(foreign(&name, &head, "an RDB file")).into());
    }
    Ok(inspect::base(&name, f, len)?)
}

/// One line for a file that is not what the command reads: what it is, and what reads it.
fn foreign(name: &str, head: &[u8], wanted: &str) -> String {
    let what = if head.starts_with(&crypt::MAGIC) {
        let fp = head.get(14..22).map_or("unknown".into(), |b| {
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        });
        format!("an encrypted flashback object (key fingerprint {fp}); the debug commands read plaintext: \
                 inspect the agent's spool copy, or get the object through flashback with its --encryption-key-file")
    } else if head.starts_with(&segment::MAGIC) {
        "a flashback segment: read it with `flashback debug segment dump`".into()
    } else if head.starts_with(b"REDIS") || head.starts_with(b"VALKEY") {
        "an RDB file: read it with `flashback debug base`".into()
    } else if let Some(kind) = [
        (manifest::MAGIC, "a generation manifest"),
        (manifest::HEAD_MAGIC, "a log head"),
        (manifest::UNCERTAIN_MAGIC, "an uncertain-interval record"),
    ]
    .iter()
    .find_map(|(m, k)| head.starts_with(m).then_some(k))
    {
        format!("{kind} (a checked JSON envelope): its JSON is `tail -c +17 FILE | head -c -4`")
    } else if head.is_empty() {
        "an empty file".into()
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!(
            "not a file flashback writes (first bytes {})",
            hex.join(" ")
        )
    };
    format!("{name} is {what}; this command reads {wanted}")
}

/// The object-name facts when the path is inside a store (`…/sources/<name>/generations/…`).
fn stored_name(file: &Path) -> Option<layout::Entry> {
    let s = file.to_str()?;
    let at = s.rfind(&format!("{}/", layout::SOURCES))?;
    let key = &s[at..];
    let source = key.split('/').nth(1)?;
    layout::parse_key(source, &object_store::path::Path::from(key)).map(|(_, e)| e)
}

fn time(ms: u64) -> String {
    format!("{ms} ({})", format_rfc3339_ms(ms))
}

fn block_line(i: usize, b: &BlockInfo, raw: u32, comp: u32, crc: (u32, Option<u32>)) -> String {
    let crc = match crc {
        (s, Some(c)) if s == c => format!("crc32c {s:#010x} ok"),
        (s, Some(c)) => format!("crc32c stored {s:#010x} computed {c:#010x} MISMATCH"),
        (s, None) => format!("crc32c stored {s:#010x}, payload past the end of the file"),
    };
    let mut flags = Vec::new();
    if b.flags & segment::block_flags::CATCHUP != 0 {
        flags.push("catchup");
    }
    if b.flags & segment::block_flags::FRAGMENT != 0 {
        flags.push("fragment");
    }
    let times = if b.record_count == 0 {
        "no record time".to_string()
    } else {
        format!("time {}..{}", time(b.first_time_ms), time(b.last_time_ms))
    };
    format!(
        "block {i} at bytes {}..{} ({} bytes): flags {:#06x}{} raw {raw} compressed {comp}; {crc}\n  \
         {} records, offsets {}..{}, {times}, covered through {}, then db {} {}\n",
        b.file_pos,
        b.file_pos + u64::from(b.len),
        b.len,
        b.flags,
        if flags.is_empty() { String::new() } else { format!(" ({})", flags.join(", ")) },
        b.record_count,
        b.start_offset,
        b.end_offset,
        time(b.covered_through_ms),
        b.end_db,
        if b.end_in_multi { "inside MULTI" } else { "outside MULTI" },
    )
}

fn summary_line(s: &SegmentSummary) -> String {
    format!(
        "{} blocks, {} records, offsets {}..{}, first record {}, complete through {}, then db {} {}",
        s.block_count,
        s.record_count,
        s.start_offset,
        s.end_offset,
        time(s.first_time_ms),
        time(s.end_time_ms),
        s.end_db,
        if s.end_in_multi { "inside MULTI" } else { "outside MULTI" },
    )
}

fn segment_text(r: &SegmentReport) -> String {
    let mut out = format!(
        "{}: {} bytes, read as {}\n",
        r.file,
        r.len,
        if r.sealed == Sealed::Yes {
            "a sealed segment"
        } else {
            "an open tail"
        }
    );
    if !r.header_fields.is_empty() {
        out.push_str("header (bytes 0..80)\n");
        for f in &r.header_fields {
            out.push_str(&format!(
                "  {:>2}..{:<2}  {:<15} {}\n",
                f.start, f.end, f.name, f.value
            ));
        }
    }
    for b in &r.blocks {
        let what = match b.decoded {
            Decoded::Records(_) => String::new(),
            Decoded::Fragment { bytes, last } => {
                format!(
                    "  fragment of {bytes} bytes{}\n",
                    if last { ", the record's last" } else { "" }
                )
            }
        };
        out.push_str(&block_line(
            b.index,
            &b.info,
            b.raw_len,
            b.comp_len,
            (b.stored_crc, Some(b.computed_crc)),
        ));
        out.push_str(&what);
    }
    if let Some(bb) = &r.bad_block {
        out.push_str(&bad_block_text(bb));
    }
    out.push_str(&match &r.ending {
        Ending::Sealed { footer_pos, footer_len, summary } => format!(
            "footer at bytes {footer_pos}..{} ({footer_len} bytes: {} index entries of {} bytes, a {}-byte trailer): {}\nOK\n",
            footer_pos + footer_len,
            summary.block_count,
            segment::INDEX_ENTRY_LEN,
            segment::TRAILER_LEN,
            summary_line(summary)
        ),
        Ending::Tail { summary } => format!("no footer: an open tail ending after its last block: {}\nOK\n", summary_line(summary)),
        Ending::Torn { at, reason, summary } => format!(
            "TORN TAIL at byte {at}: {}\n  a reader keeps bytes 0..{at} ({}) and drops the last {} bytes: a write cut short, as a crash leaves\nOK (torn tail)\n",
            reason.split_once(": ").map_or(reason.as_str(), |(_, w)| w),
            summary_line(summary),
            r.len - at
        ),
        Ending::Damaged(d) => format!("DAMAGED at byte {}: {}\n", d.offset, d.details()),
        Ending::Corrupt { offset, what } => format!("CORRUPT at byte {offset}: {what}\n"),
    });
    out
}

fn bad_block_text(bb: &BadBlock) -> String {
    match &bb.header {
        Err(why) => format!(
            "bad block at byte {}: its header does not read: {why}\n",
            bb.pos
        ),
        Ok(h) => format!(
            "bad block (as its own header tells it) {}",
            block_line(
                0,
                &h.info,
                h.raw_len,
                h.comp_len,
                (h.stored_crc, h.computed_crc)
            )
            .trim_start_matches("block 0 ")
        ),
    }
}

fn verify_line(r: &SegmentReport) -> String {
    let blocks = r.blocks.len();
    let records = r.record_count();
    match &r.ending {
        Ending::Sealed { summary, .. } => format!(
            "OK {}: sealed segment, {blocks} blocks, {records} records, offsets {}..{}",
            r.file, summary.start_offset, summary.end_offset
        ),
        Ending::Tail { summary } => format!(
            "OK {}: open tail, {blocks} blocks, {records} records, offsets {}..{}",
            r.file, summary.start_offset, summary.end_offset
        ),
        Ending::Torn { at, summary, .. } => format!(
            "OK {}: open tail, {} blocks, {} records, offsets {}..{}; torn tail at byte {at} ({} bytes a reader drops)",
            r.file, summary.block_count, summary.record_count, summary.start_offset, summary.end_offset, r.len - at
        ),
        // bad_exit reported these already.
        Ending::Damaged(_) | Ending::Corrupt { .. } => String::new(),
    }
}

fn info_json(b: &BlockInfo) -> Value {
    json!({
        "file_pos": b.file_pos, "len": b.len, "flags": b.flags, "record_count": b.record_count,
        "start_offset": b.start_offset, "end_offset": b.end_offset,
        "first_time_ms": b.first_time_ms, "last_time_ms": b.last_time_ms,
        "covered_through_ms": b.covered_through_ms, "end_db": b.end_db, "end_in_multi": b.end_in_multi,
    })
}

fn summary_json(s: &SegmentSummary) -> Value {
    json!({
        "start_offset": s.start_offset, "end_offset": s.end_offset, "first_time_ms": s.first_time_ms,
        "end_time_ms": s.end_time_ms, "record_count": s.record_count, "block_count": s.block_count,
        "end_db": s.end_db, "end_in_multi": s.end_in_multi,
    })
}

fn segment_json(r: &SegmentReport) -> Value {
    let blocks: Vec<Value> = r
        .blocks
        .iter()
        .map(|b| {
            let mut v = info_json(&b.info);
            v["index"] = json!(b.index);
            v["raw_len"] = json!(b.raw_len);
            v["comp_len"] = json!(b.comp_len);
            v["stored_crc32c"] = json!(b.stored_crc);
            v["computed_crc32c"] = json!(b.computed_crc);
            if let Decoded::Fragment { bytes, last } = b.decoded {
                v["fragment"] = json!({ "bytes": bytes, "last": last });
            }
            v
        })
        .collect();
    let bad_block = r.bad_block.as_ref().map(|bb| match &bb.header {
        Err(why) => json!({ "pos": bb.pos, "unreadable": why }),
        Ok(h) => {
            let mut v = info_json(&h.info);
            v["pos"] = json!(bb.pos);
            v["raw_len"] = json!(h.raw_len);
            v["comp_len"] = json!(h.comp_len);
            v["stored_crc32c"] = json!(h.stored_crc);
            v["computed_crc32c"] = json!(h.computed_crc);
            v
        }
    });
    let ending = match &r.ending {
        Ending::Sealed {
            footer_pos,
            footer_len,
            summary,
        } => json!({
            "kind": "sealed", "footer_pos": footer_pos, "footer_len": footer_len, "summary": summary_json(summary),
        }),
        Ending::Tail { summary } => json!({ "kind": "tail", "summary": summary_json(summary) }),
        Ending::Torn {
            at,
            reason,
            summary,
        } => json!({
            "kind": "torn", "at": at, "reason": reason, "summary": summary_json(summary),
        }),
        Ending::Damaged(d) => json!({
            "kind": "damaged", "at": d.offset, "what": d.what, "good_end_offset": d.good_end_offset,
            "blocks_after": d.blocks_after, "next_pos": d.next_pos,
            "next_start_offset": d.next_start_offset, "last_end_offset": d.last_end_offset,
        }),
        Ending::Corrupt { offset, what } => {
            json!({ "kind": "corrupt", "at": offset, "what": what })
        }
    };
    let header: Vec<Value> = r
        .header_fields
        .iter()
        .map(|f| json!({ "name": f.name, "start": f.start, "end": f.end, "value": f.value }))
        .collect();
    json!({
        "schema": 1, "file": r.file, "len": r.len, "sealed": r.sealed == Sealed::Yes, "ok": r.is_ok(),
        "header": header, "blocks": blocks, "bad_block": bad_block, "ending": ending,
    })
}

fn printable(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn base_text(r: &BaseReport, name: Option<&layout::Entry>) -> String {
    let mut out = format!(
        "{}: {} bytes\nheader (bytes 0..9): {}{:04} (RDB version {})\n",
        r.file, r.len, r.info.magic, r.info.version, r.info.version
    );
    if r.info.aux.is_empty() {
        out.push_str("no AUX fields\n");
    }
    for (k, v) in &r.info.aux {
        out.push_str(&format!("  aux {:<16} {}\n", printable(k), printable(v)));
    }
    let stored = r
        .stored_crc64
        .map_or("none".into(), |c| format!("{c:#018x}"));
    out.push_str(&format!(
        "trailer (last 9 bytes): crc64 stored {stored}, computed {:#018x}{}\n",
        r.computed_crc64,
        if r.stored_crc64 == Some(0) {
            " (0: written with rdbchecksum no)"
        } else {
            ""
        }
    ));
    out.push_str(&format!("crc32c of the whole file {:#010x}", r.crc32c));
    if let Some(layout::Entry::Base { size, crc32c, .. }) = name {
        let ok = *size == r.len && *crc32c == r.crc32c;
        out.push_str(&format!(
            "; its store name records {size} bytes and crc32c {crc32c:#010x}{}",
            if ok { ": they match" } else { ": MISMATCH" }
        ));
    }
    out.push('\n');
    out.push_str(&match &r.trailer_problem {
        None => "OK\n".to_string(),
        Some((at, what)) => format!("CORRUPT at byte {at}: {what}\n"),
    });
    out
}

fn base_json(r: &BaseReport) -> Value {
    let aux: Vec<Value> = r
        .info
        .aux
        .iter()
        .map(|(k, v)| json!({ "key": printable(k), "value": printable(v) }))
        .collect();
    json!({
        "schema": 1, "file": r.file, "len": r.len, "magic": r.info.magic, "version": r.info.version,
        "aux": aux, "stored_crc64": r.stored_crc64, "computed_crc64": r.computed_crc64,
        "crc32c": r.crc32c, "ok": r.trailer_problem.is_none(),
        "problem": r.trailer_problem.as_ref().map(|(at, what)| json!({ "at": at, "what": what })),
    })
}
