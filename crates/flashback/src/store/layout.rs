//! The only module that builds or parses object names. Everything else asks it.
//!
//! ```text
//! sources/<name>/generations/<gen>/generation.meta                      manifest (envelope + JSON)
//! sources/<name>/generations/<gen>/base/<offset>-<time>-<size>-<crc>.rdb             base at offset
//! sources/<name>/generations/<gen>/segments/<start>-<end>-<t0>-<t1>-<size>-<crc>.seg sealed segment
//! sources/<name>/generations/<gen>/segments/<start>.tail                             the open tail
//! sources/<name>/generations/<gen>/segments/<start>.tail.<byte>.damaged   a damaged tail, kept
//! sources/<name>/generations/<gen>/log.head          how far the agent sealed (envelope + JSON)
//! sources/<name>/generations/<gen>/commands.resp     the source's COMMAND reply (envelope + RESP)
//! sources/<name>/generations/<gen>/uncertain/<from_off>-<to_off>-<t0>-<t1>.gap  an uncertain interval
//! sources/<name>/generations/<gen>/summaries/<start>-<end>.sum       a sealed segment's summary
//! sources/<name>/marks/<time>-<id>.mark              a consistent cut (`crate::mark`, envelope + JSON)
//! ```
//! `<gen>` is the generation's start time in ms as 16 hex digits; offsets are 16 hex digits and
//! times (ms) 12 hex digits, all fixed-width lowercase, so a plain LIST returns them in order and
//! restore can plan by time from names alone, without reading any segment (litestream's
//! `FormatWALSegmentPath` idea). The times in a sealed segment's name are its first record's
//! arrival and the time through which it is known complete.
//!
//! A sealed object's name also records its size (lowercase hex, any width) and the crc32c of
//! its whole content (8 hex digits), both taken from the bytes a `get` returns — the plaintext
//! for an encrypted store. Objects are immutable and object stores cannot append, so a manifest
//! listing every object would have to be rewritten on each seal (a read-modify-write race with a
//! second writer, and one more object to lose); in the name, one LIST gives every object's
//! recorded size and checksum next to its actual size, and that listing is the manifest
//! `verify` checks. Size and checksum come after the offsets, so names still sort by offset.
//! A listing cannot show that its *newest* objects are gone, though: `log.head`, rewritten by
//! the agent after each seal or upload, records how far the log had been stored.

use object_store::path::Path;

pub const SOURCES: &str = "sources";

/// Source names become one path segment: keep them to a safe alphabet.
pub fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

pub fn sources_prefix() -> Path {
    Path::from(SOURCES)
}

pub fn source_prefix(source: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}"))
}

/// A cluster source's list of shards (`store::cluster`), beside where a plain source keeps
/// its generations: a cluster source has none of its own.
pub fn cluster_meta_key(source: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}/cluster.meta"))
}

/// The internal source name one shard's history is stored under: `NAME+SHARD`. `+` is outside
/// [`valid_source_name`]'s alphabet, so no user-named source can collide with it and the
/// catalog's source list (which keeps only valid names) does not show shards as sources of
/// their own (rejected: `sources/NAME/shards/SHARD/…`, which would make every other name
/// here take a shard argument). The shard label itself is checked like a source name.
pub fn shard_source(source: &str, shard: &str) -> String {
    format!("{source}+{shard}")
}

/// The remote-store agent's lease (`ship::lease`); not under `generations/`, so the catalog
/// never sees it.
pub fn lease_key(source: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}/agent.lease"))
}

pub fn generations_prefix(source: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}/generations"))
}

pub fn generation_id(start_ms: u64) -> String {
    format!("{start_ms:016x}")
}

pub fn parse_generation_id(s: &str) -> Option<u64> {
    parse_hex(s, 16)
}

pub fn generation_prefix(source: &str, gen: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}/generations/{gen}"))
}

pub fn manifest_key(source: &str, gen: &str) -> Path {
    Path::from(format!(
        "{SOURCES}/{source}/generations/{gen}/generation.meta"
    ))
}

/// The generation's log head ([`super::manifest::LogHead`]).
pub fn head_key(source: &str, gen: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}/generations/{gen}/log.head"))
}

/// The source's `COMMAND` reply when the generation started (`store::commands`): key positions
/// of every command the server knew, modules' included.
pub fn commands_key(source: &str, gen: &str) -> Path {
    Path::from(format!(
        "{SOURCES}/{source}/generations/{gen}/commands.resp"
    ))
}

pub fn base_prefix(source: &str, gen: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}/generations/{gen}/base"))
}

/// A base holds the dataset at `offset`, which the stream reached at `time_ms`. The time is in
/// the name so retention can keep "one base per day" from a listing alone.
/// `size` and `crc32c` are the whole object's (see the module comment).
pub fn base_key(
    source: &str,
    gen: &str,
    offset: u64,
    time_ms: u64,
    size: u64,
    crc32c: u32,
) -> Path {
    Path::from(format!(
        "{SOURCES}/{source}/generations/{gen}/base/{offset:016x}-{time_ms:012x}-{size:x}-{crc32c:08x}.rdb"
    ))
}

pub fn segments_prefix(source: &str, gen: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}/generations/{gen}/segments"))
}

/// A sealed segment's name, from what its footer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SealedName {
    pub start_offset: u64,
    pub end_offset: u64,
    pub first_time_ms: u64,
    pub end_time_ms: u64,
    /// The whole object's size and crc32c, as a `get` returns it.
    pub size: u64,
    pub crc32c: u32,
}

pub fn segment_key(source: &str, gen: &str, n: &SealedName) -> Path {
    Path::from(format!(
        "{SOURCES}/{source}/generations/{gen}/segments/{:016x}-{:016x}-{:012x}-{:012x}-{:x}-{:08x}.seg",
        n.start_offset, n.end_offset, n.first_time_ms, n.end_time_ms, n.size, n.crc32c
    ))
}

/// An uncertain interval (`capture::core::Interval`): the agent could not vouch for the source
/// between `from_ms` and `to_ms`, while the stream moved from `from_offset` to `to_offset`. The
/// name alone carries it, so `info` lists intervals without a GET; the object (an envelope, see
/// `manifest::UncertainRecord`) repeats it with its cause and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UncertainName {
    pub from_offset: u64,
    pub to_offset: u64,
    pub from_ms: u64,
    pub to_ms: u64,
}

pub fn uncertain_key(source: &str, gen: &str, n: &UncertainName) -> Path {
    Path::from(format!(
        "{SOURCES}/{source}/generations/{gen}/uncertain/{:016x}-{:016x}-{:012x}-{:012x}.gap",
        n.from_offset, n.to_offset, n.from_ms, n.to_ms
    ))
}

/// The summary of the sealed segment of offsets `start..end` (`flashback_format::summary`):
/// named by offsets alone, so a LIST pairs each summary with its segment without a GET. Its
/// size and checksum are not in the name: the object is an envelope with its own crc32c, and
/// a summary is advice (a reader that finds it missing or bad reads the segment instead).
pub fn summary_key(source: &str, gen: &str, start_offset: u64, end_offset: u64) -> Path {
    Path::from(format!(
        "{SOURCES}/{source}/generations/{gen}/summaries/{start_offset:016x}-{end_offset:016x}.sum"
    ))
}

pub fn tail_key(source: &str, gen: &str, start_offset: u64) -> Path {
    Path::from(format!(
        "{SOURCES}/{source}/generations/{gen}/segments/{start_offset:016x}.tail"
    ))
}

/// Where an agent keeps a copy of an open tail it found damaged at byte `byte` (a bad block
/// with intact blocks after it), before sealing the good prefix: evidence for whoever looks
/// into the disk, never data. The catalog does not know the suffix (`parse_key` gives None),
/// so listing, restore, upload and prune leave it alone.
pub fn damaged_tail_key(source: &str, gen: &str, start_offset: u64, byte: u64) -> Path {
    Path::from(format!(
        "{SOURCES}/{source}/generations/{gen}/segments/{start_offset:016x}.tail.{byte}.damaged"
    ))
}

/// Where the marks of a source are: beside `generations/`, not in one, because a mark's cut
/// names a replication history (replid + offset), and across a failover or a cluster's shards
/// that is not one generation. The catalog never lists here.
pub fn marks_prefix(source: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}/marks"))
}

/// A mark taken at `time_ms` (12 hex digits, so a LIST returns marks in time order) with its
/// short id (`crate::mark::valid_id`: letters, digits, '-').
pub fn mark_key(source: &str, time_ms: u64, id: &str) -> Path {
    Path::from(format!("{SOURCES}/{source}/marks/{time_ms:012x}-{id}.mark"))
}

/// (time_ms, id) of a key under [`marks_prefix`]; None for anything else.
pub fn parse_mark_key(source: &str, key: &Path) -> Option<(u64, String)> {
    let prefix = format!("{SOURCES}/{source}/marks/");
    let f = key.as_ref().strip_prefix(&prefix)?;
    let (t, id) = f.strip_suffix(".mark")?.split_once('-')?;
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return None;
    }
    Some((parse_hex(t, 12)?, id.to_string()))
}

/// What a file name under `base/` or `segments/` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Manifest,
    Head,
    Commands,
    Base {
        offset: u64,
        time_ms: u64,
        size: u64,
        crc32c: u32,
    },
    Sealed(SealedName),
    Tail {
        start_offset: u64,
    },
    Uncertain(UncertainName),
    Summary {
        start_offset: u64,
        end_offset: u64,
    },
}

/// Parses a full key below a source: returns (generation id, entry). Unknown names give None
/// (temporary files, other tools' files): callers skip them.
pub fn parse_key(source: &str, key: &Path) -> Option<(String, Entry)> {
    let prefix = format!("{SOURCES}/{source}/generations/");
    let rest = key.as_ref().strip_prefix(&prefix)?;
    let mut parts = rest.split('/');
    let gen = parts.next()?;
    parse_generation_id(gen)?;
    let entry = match (parts.next()?, parts.next(), parts.next()) {
        ("generation.meta", None, None) => Entry::Manifest,
        ("log.head", None, None) => Entry::Head,
        ("commands.resp", None, None) => Entry::Commands,
        ("base", Some(f), None) => {
            let mut it = f.strip_suffix(".rdb")?.split('-');
            let e = Entry::Base {
                offset: parse_hex(it.next()?, 16)?,
                time_ms: parse_hex(it.next()?, 12)?,
                size: parse_size(it.next()?)?,
                crc32c: parse_crc(it.next()?)?,
            };
            if it.next().is_some() {
                return None;
            }
            e
        }
        ("segments", Some(f), None) => {
            if let Some(stem) = f.strip_suffix(".tail") {
                Entry::Tail {
                    start_offset: parse_hex(stem, 16)?,
                }
            } else {
                let stem = f.strip_suffix(".seg")?;
                let mut it = stem.split('-');
                let n = SealedName {
                    start_offset: parse_hex(it.next()?, 16)?,
                    end_offset: parse_hex(it.next()?, 16)?,
                    first_time_ms: parse_hex(it.next()?, 12)?,
                    end_time_ms: parse_hex(it.next()?, 12)?,
                    size: parse_size(it.next()?)?,
                    crc32c: parse_crc(it.next()?)?,
                };
                if it.next().is_some() {
                    return None;
                }
                Entry::Sealed(n)
            }
        }
        ("summaries", Some(f), None) => {
            let (a, b) = f.strip_suffix(".sum")?.split_once('-')?;
            Entry::Summary {
                start_offset: parse_hex(a, 16)?,
                end_offset: parse_hex(b, 16)?,
            }
        }
        ("uncertain", Some(f), None) => {
            let mut it = f.strip_suffix(".gap")?.split('-');
            let n = UncertainName {
                from_offset: parse_hex(it.next()?, 16)?,
                to_offset: parse_hex(it.next()?, 16)?,
                from_ms: parse_hex(it.next()?, 12)?,
                to_ms: parse_hex(it.next()?, 12)?,
            };
            if it.next().is_some() {
                return None;
            }
            Entry::Uncertain(n)
        }
        _ => return None,
    };
    Some((gen.to_string(), entry))
}

/// The source name of a key under `sources/`.
pub fn source_of(key: &Path) -> Option<String> {
    let rest = key.as_ref().strip_prefix(&format!("{SOURCES}/"))?;
    let name = rest.split('/').next()?;
    valid_source_name(name).then(|| name.to_string())
}

/// The size and crc32c a name records for a local file, read back in 1 MiB pieces, never
/// whole: a base can be gigabytes. Blocking I/O, so async callers run it on a blocking thread.
/// The writers of the spool sum while they write instead ([`Crc32cWriter`]); this is for files
/// someone else wrote (the RDB a private redis-server saved for a compaction) and for crash
/// recovery sealing a tail a previous process left.
pub fn file_size_crc32c(path: &std::path::Path) -> std::io::Result<(u64, u32)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => return Ok((size, crc)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
}

/// A [`Write`](std::io::Write) that keeps the size and crc32c (as a name records them) of every
/// byte that reached the inner writer, so the writer of an object names it from what it wrote
/// rather than by reading the file back: no second pass over a base of gigabytes on the
/// capture task, and a byte changed on disk between the write and the seal is caught by
/// `verify` later instead of being blessed by the name. Put it under any buffering, so that
/// only bytes the sink accepted are summed.
#[derive(Debug)]
pub struct Crc32cWriter<W> {
    inner: W,
    size: u64,
    crc: u32,
}

impl<W> Crc32cWriter<W> {
    pub fn new(inner: W) -> Self {
        Crc32cWriter {
            inner,
            size: 0,
            crc: 0,
        }
    }

    /// The size and crc32c of everything written so far.
    pub fn size_crc32c(&self) -> (u64, u32) {
        (self.size, self.crc)
    }

    /// Puts back a sum taken earlier with [`size_crc32c`](Self::size_crc32c), after the caller
    /// cut the sink back to that size (a segment's abandoned fragments).
    pub fn rewind_to(&mut self, at: (u64, u32)) {
        (self.size, self.crc) = at;
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The sink itself: bytes written through it are not summed, so only for what does not
    /// write (fsync, truncation followed by [`rewind_to`](Self::rewind_to)).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: std::io::Write> std::io::Write for Crc32cWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or(buf);
        self.crc = crc32c::crc32c_append(self.crc, done);
        self.size += done.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn parse_hex(s: &str, width: usize) -> Option<u64> {
    if s.len() != width
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// A size is written without padding (`{:x}`): no leading zeros, so each size has one spelling.
fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    parse_hex(s, s.len())
}

fn parse_crc(s: &str) -> Option<u32> {
    u32::try_from(parse_hex(s, 8)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most 3 bytes a call: the sum must follow what was accepted.
    struct Short(Vec<u8>);
    impl std::io::Write for Short {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_crc32c_writer_sums_what_reached_the_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = std::io::BufWriter::with_capacity(
            1 << 16,
            Crc32cWriter::new(std::fs::File::create(&path).unwrap()),
        );
        for piece in data.chunks(12_345) {
            w.write_all(piece).unwrap();
        }
        let w = w.into_inner().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk, data);
        let want = (data.len() as u64, crc32c::crc32c(&on_disk));
        assert_eq!(w.size_crc32c(), want);
        assert_eq!(file_size_crc32c(&path).unwrap(), want);

        let mut s = Crc32cWriter::new(Short(Vec::new()));
        s.write_all(b"partial writes are summed as accepted")
            .unwrap();
        let mark = s.size_crc32c();
        s.write_all(b" and rewound").unwrap();
        s.get_mut().0.truncate(mark.0 as usize);
        s.rewind_to(mark);
        s.write_all(b"!").unwrap();
        let bytes = &s.get_ref().0;
        assert_eq!(s.size_crc32c(), (bytes.len() as u64, crc32c::crc32c(bytes)));
        assert_eq!(bytes.as_slice(), b"partial writes are summed as accepted!");
    }

    #[test]
    fn keys_round_trip_and_sort_by_offset() {
        let n = SealedName {
            start_offset: 14,
            end_offset: 9000,
            first_time_ms: 1_790_000_000_000,
            end_time_ms: 1_790_000_001_000,
            size: 0x1_0000,
            crc32c: 0x00ab_cdef,
        };
        let k = segment_key("cache", "0000019a2b3c4d5e", &n);
        assert_eq!(
            parse_key("cache", &k),
            Some(("0000019a2b3c4d5e".into(), Entry::Sealed(n)))
        );
        assert!(k.as_ref().ends_with("-10000-00abcdef.seg"), "{k}");
        let b = base_key(
            "cache",
            "0000019a2b3c4d5e",
            14,
            1_790_000_000_000,
            0,
            u32::MAX,
        );
        assert_eq!(
            parse_key("cache", &b).map(|x| x.1),
            Some(Entry::Base {
                offset: 14,
                time_ms: 1_790_000_000_000,
                size: 0,
                crc32c: u32::MAX,
            })
        );
        // A bigger object later in the log still sorts after: the offsets come first.
        let b2 = base_key("cache", "0000019a2b3c4d5e", 9000, 1_790_000_001_000, 5, 0);
        assert!(b.as_ref() < b2.as_ref());
        let d = damaged_tail_key("cache", "0000019a2b3c4d5e", 9000, 4711);
        assert!(d
            .as_ref()
            .ends_with("/segments/0000000000002328.tail.4711.damaged"));
        assert_eq!(parse_key("cache", &d), None, "a damaged copy is not data");
        let t = tail_key("cache", "0000019a2b3c4d5e", 9000);
        assert_eq!(
            parse_key("cache", &t).map(|x| x.1),
            Some(Entry::Tail { start_offset: 9000 })
        );
        let sk = summary_key("cache", "0000019a2b3c4d5e", 14, 9000);
        assert!(sk
            .as_ref()
            .ends_with("/summaries/000000000000000e-0000000000002328.sum"));
        assert_eq!(
            parse_key("cache", &sk).map(|x| x.1),
            Some(Entry::Summary {
                start_offset: 14,
                end_offset: 9000
            })
        );
        let m = manifest_key("cache", "0000019a2b3c4d5e");
        assert_eq!(parse_key("cache", &m).map(|x| x.1), Some(Entry::Manifest));
        let c = commands_key("cache", "0000019a2b3c4d5e");
        assert_eq!(parse_key("cache", &c).map(|x| x.1), Some(Entry::Commands));
        let later = segment_key(
            "cache",
            "0000019a2b3c4d5e",
            &SealedName {
                start_offset: 9000,
                end_offset: 10_000,
                size: 1,
                ..n
            },
        );
        assert!(k.as_ref() < later.as_ref());
        assert_eq!(source_of(&k).as_deref(), Some("cache"));
        let u = UncertainName {
            from_offset: 14,
            to_offset: 9000,
            from_ms: 1_790_000_000_000,
            to_ms: 1_790_000_005_000,
        };
        let uk = uncertain_key("cache", "0000019a2b3c4d5e", &u);
        assert_eq!(
            parse_key("cache", &uk).map(|x| x.1),
            Some(Entry::Uncertain(u))
        );
    }

    #[test]
    fn mark_keys_round_trip_and_sort_by_time() {
        let a = mark_key("cache", 0x01a20a35672d, "m-1790000000250");
        assert_eq!(
            a.as_ref(),
            "sources/cache/marks/01a20a35672d-m-1790000000250.mark"
        );
        assert_eq!(
            parse_mark_key("cache", &a),
            Some((0x01a20a35672d, "m-1790000000250".to_string()))
        );
        assert!(a.as_ref() < mark_key("cache", 0x01a20a35672e, "a").as_ref());
        assert_eq!(parse_mark_key("other", &a), None);
        assert_eq!(
            parse_mark_key("cache", &Path::from("sources/cache/marks/zz-m.mark")),
            None
        );
        assert_eq!(
            parse_key("cache", &a),
            None,
            "the catalog never sees a mark"
        );
    }

    #[test]
    fn foreign_names_are_ignored() {
        for k in [
            "sources/cache/generations/zz/generation.meta",
            "sources/cache/generations/0000019a2b3c4d5e/base/x.rdb.partial",
            "sources/cache/generations/0000019a2b3c4d5e/segments/0e.seg",
            // The layout before sizes and checksums were in names.
            "sources/cache/generations/0000019a2b3c4d5e/base/000000000000000e-019a2b3c4d5e.rdb",
            // A size with a leading zero, a short checksum, a trailing field.
            "sources/cache/generations/0000019a2b3c4d5e/base/000000000000000e-019a2b3c4d5e-010-00000000.rdb",
            "sources/cache/generations/0000019a2b3c4d5e/base/000000000000000e-019a2b3c4d5e-10-0000000.rdb",
            "sources/cache/generations/0000019a2b3c4d5e/base/000000000000000e-019a2b3c4d5e-10-00000000-1.rdb",
        ] {
            assert_eq!(parse_key("cache", &Path::from(k)), None, "{k}");
        }
        assert!(!valid_source_name("../etc"));
        assert!(valid_source_name("redis-127.0.0.1-6379"));
        assert!(!valid_source_name(&shard_source("c", "s0")));
        assert_eq!(cluster_meta_key("c").as_ref(), "sources/c/cluster.meta");
        assert_eq!(
            generations_prefix(&shard_source("c", "s0")).as_ref(),
            "sources/c+s0/generations"
        );
    }
}
