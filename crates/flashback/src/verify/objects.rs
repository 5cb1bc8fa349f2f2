//! Reading and checking each stored object of a generation: manifest, uncertain
//! intervals, bases (size, RDB CRC-64, the crc32c in the name) and segments (every block decoded,
//! one block in memory at a time). A failure becomes a [`Failure`] sorted into a [`Kind`]; the
//! caller (`check`) decides what it means for restore.

use super::check::*;
use super::*;
use crate::store::catalog::BaseObject;
use crate::store::layout;
use crate::store::manifest::GenerationManifest;
use crate::store::stream::{SegmentStream, StreamError};
use crate::store::StoreError;
use crate::timespec::format_ms;
use flashback_format::segment::{self, Item, Sealed, SegmentHeader, SegmentSummary};
use flashback_format::{rdb, Error as FormatError};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStoreExt};

/// A failure reading one object.
pub(super) struct Failure {
    pub(super) kind: Kind,
    pub(super) offset: Option<u64>,
    pub(super) what: String,
}

impl Failure {
    pub(super) fn new(kind: Kind, offset: Option<u64>, what: impl Into<String>) -> Self {
        Failure {
            kind,
            offset,
            what: what.into(),
        }
    }

    /// A format error, sorted into a kind. The file name is dropped: the problem names the key.
    pub(super) fn format(e: &FormatError) -> Self {
        match e {
            FormatError::Corrupt { offset, what, .. } => {
                let kind = if what.contains("truncated") || what.contains("too short") {
                    Kind::Truncated
                } else {
                    Kind::Corrupt
                };
                Failure::new(kind, Some(*offset), what.clone())
            }
            FormatError::Version {
                found, supported, ..
            } => Failure::new(
                Kind::Version,
                None,
                format!("format version {found}, newer than this build reads ({supported}): upgrade flashback"),
            ),
            FormatError::Io { source, .. } => {
                Failure::new(Kind::Unreadable, None, source.to_string())
            }
            FormatError::Damaged { damage, .. } => {
                Failure::new(Kind::Corrupt, Some(damage.offset), damage.details())
            }
            other => Failure::new(Kind::Corrupt, None, other.to_string()),
        }
    }

    /// A segment that could not be read to its end.
    pub(super) fn stream(e: StreamError) -> Self {
        match e {
            StreamError::Format(e) => Failure::format(&e),
            StreamError::Short { have, len, .. } => Failure::new(
                Kind::Truncated,
                Some(have),
                format!("the store returned {have} of the object's {len} bytes"),
            ),
            StreamError::Store(StoreError::ObjectStore(e)) => Failure::store(e),
            StreamError::Store(e) => Failure::new(Kind::Unreadable, None, e.to_string()),
        }
    }

    pub(super) fn store(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => {
                Failure::new(Kind::Missing, None, GONE_WHEN_READ)
            }
            e => Failure::new(Kind::Unreadable, None, e.to_string()),
        }
    }
}

/// An object the listing named that a read then did not find: a live agent's retention or
/// seal moved on between the two. [`super::verify`] checks the source again when it sees it.
pub(super) const GONE_WHEN_READ: &str =
    "listed, but gone when read (pruned, or sealed by a live agent since): run verify again";

/// What one segment's scan found.
#[derive(Default)]
pub(super) struct Scan {
    pub(super) summary: Option<SegmentSummary>,
    pub(super) header: Option<SegmentHeader>,
    /// First record time of the last block with records that read and decoded fine.
    pub(super) last_good_first_ms: Option<u64>,
    pub(super) torn: Option<String>,
    /// An open tail damaged (a bad block with intact ones after it): the time through which
    /// its valid prefix is complete, where restore stops cleanly.
    pub(super) damaged_through_ms: Option<u64>,
    pub(super) failure: Option<Failure>,
    /// The crc32c of every byte the store returned, when it returned the whole object.
    pub(super) crc32c: Option<u32>,
}

impl GenCheck<'_> {
    /// An uncertain-interval object must decode: it is what tells restore and `info` that times
    /// in it are not exact (restore also finds the catch-up blocks themselves, so a damaged one
    /// costs the explanation, not the protection).
    pub(super) async fn check_uncertain(&mut self, key: &Path) {
        let read = self.read_small(key).await.and_then(|b| {
            crate::store::manifest::UncertainRecord::decode(key.as_ref(), &b)
                .map_err(|e| Failure::format(&e))
        });
        if let Err(f) = read {
            let impact = "no instant is lost; `info` cannot show this uncertain interval (restore still finds it in the log)".to_string();
            self.problem(key.to_string(), f, impact, None);
        }
    }

    /// A segment summary must decode and describe the offsets its name says; one whose segment
    /// is not listed is left over (a crash between writing it and sealing, or a prune that
    /// stopped between the two deletes). Advice, not data: a bad one costs `timeline` and
    /// `restore --before` a read of the segment, never an instant.
    pub(super) async fn check_summary(
        &mut self,
        key: &Path,
        start: u64,
        end: u64,
        has_segment: bool,
    ) {
        let read = self.read_small(key).await.and_then(|b| {
            flashback_format::summary::Summary::decode(key.as_ref(), &b)
                .map_err(|e| Failure::format(&e))
        });
        let failure = match read {
            Ok(s) if s.start_offset == start && s.end_offset == end => None,
            Ok(s) => Some(Failure::new(
                Kind::Corrupt,
                None,
                format!(
                    "the summary describes offsets {}..{}, its name says {start}..{end}",
                    s.start_offset, s.end_offset
                ),
            )),
            Err(f) => Some(f),
        };
        if let Some(f) = failure {
            let impact = "no instant is lost; `timeline` and `restore --before/--after` read the segment instead of its summary".to_string();
            self.problem(key.to_string(), f, impact, None);
        } else if !has_segment {
            self.report.warnings.push(Problem {
                key: key.to_string(),
                offset: None,
                kind: Kind::Leftover,
                message: format!(
                    "a summary of offsets {start}..{end}, for which no sealed segment is listed"
                ),
                impact: "none: readers use a summary only beside its segment".into(),
                restorable_through_ms: None,
            });
        }
    }

    /// The stored COMMAND reply must decode into a command table: without it `history` falls
    /// back to the builtin table and cannot see module commands' keys.
    pub(super) async fn check_commands(&mut self, key: &Path) {
        let read = self.read_small(key).await.and_then(|b| {
            use crate::store::commands::CommandsObjectError as E;
            crate::store::commands::decode(key.as_ref(), &b)
                .map(|_| ())
                .map_err(|e| match e {
                    E::Format(f) => Failure::format(&f),
                    E::Resp { offset, what, .. } => Failure::new(Kind::Corrupt, Some(offset), what),
                    E::Table { err, .. } => Failure::new(Kind::Corrupt, None, err.to_string()),
                })
        });
        if let Err(f) = read {
            let impact = "no instant is lost; `history` reads this generation with the builtin command table (module commands' keys unknown)".to_string();
            self.problem(key.to_string(), f, impact, None);
        }
    }

    /// A small object whole (a manifest, a log head).
    pub(super) async fn read_small(&self, key: &Path) -> Result<bytes::Bytes, Failure> {
        match self.store.os.get(key).await {
            Ok(r) => r.bytes().await.map_err(Failure::store),
            Err(e) => Err(Failure::store(e)),
        }
    }

    pub(super) async fn read_manifest(&mut self, key: &Path) -> Option<GenerationManifest> {
        let failure = match self.read_small(key).await {
            Ok(b) => match GenerationManifest::decode(key.as_ref(), &b) {
                Ok(m) => {
                    self.counts.bytes += b.len() as u64;
                    self.progress.add(b.len() as u64);
                    return Some(m);
                }
                Err(e) => Failure::format(&e),
            },
            Err(f) => f,
        };
        let impact = format!(
            "no instant of generation {} can be restored (restore needs the manifest to find the base)",
            self.gen
        );
        self.problem(key.to_string(), failure, impact, None);
        None
    }

    /// Every base: whole, with the right CRC; the first one also exists and has the size the
    /// manifest recorded.
    pub(super) async fn check_bases(
        &mut self,
        bases: &[BaseObject],
        m: Option<&GenerationManifest>,
    ) {
        if let Some(m) = m {
            // A later base without the first is what a prune leaves: restores start there.
            if !bases.iter().any(|b| b.offset >= m.base_offset) {
                // Its size and checksum are in its name, so only the start of it is known.
                let key = format!(
                    "{}/{:016x}-{:012x}-*.rdb",
                    layout::base_prefix(self.source, &self.gen),
                    m.base_offset,
                    m.base_time_ms
                );
                let impact = self.base_impact(bases, m.base_offset, m.base_time_ms);
                self.problem(
                    key.to_string(),
                    Failure::new(
                        Kind::Missing,
                        None,
                        format!(
                            "the base snapshot at offset {} is not in the store",
                            m.base_offset
                        ),
                    ),
                    impact,
                    None,
                );
            }
        }
        let mut bad = Vec::new();
        for b in bases {
            let expected = m.filter(|m| m.base_offset == b.offset).map(|m| m.base_size);
            if let Some(f) = self.check_base(b, expected).await {
                bad.push((b.offset, b.time_ms, b.key.to_string(), f));
            }
        }
        for (offset, time_ms, key, f) in bad {
            let impact = self.base_impact(bases, offset, time_ms);
            self.problem(key, f, impact, None);
        }
    }

    /// Restore starts from the latest base at or before the instant, so a bad base spoils the
    /// instants from its own time up to the next base.
    pub(super) fn base_impact(&self, bases: &[BaseObject], offset: u64, time_ms: u64) -> String {
        match bases.iter().find(|b| b.offset > offset) {
            Some(next) => format!(
                "instants of generation {} from {} to before {} cannot be restored (restores there start from this base)",
                self.gen,
                format_ms(time_ms),
                format_ms(next.time_ms)
            ),
            None => format!(
                "no instant of generation {} from {} on can be restored (restores there start from this base)",
                self.gen,
                format_ms(time_ms)
            ),
        }
    }

    /// Streams a base: size, RDB magic, the CRC-64 in its trailer, and the crc32c its name
    /// records.
    pub(super) async fn check_base(
        &mut self,
        b: &BaseObject,
        expected_size: Option<u64>,
    ) -> Option<Failure> {
        if let Some(f) = size_mismatch(b.size, b.recorded_size) {
            return Some(f);
        }
        match expected_size {
            Some(n) if b.size < n => {
                return Some(Failure::new(
                    Kind::Truncated,
                    Some(b.size),
                    format!("{} bytes, but the manifest recorded {n}", b.size),
                ))
            }
            Some(n) if b.size > n => {
                return Some(Failure::new(
                    Kind::Corrupt,
                    Some(n),
                    format!("{} bytes, more than the {n} the manifest recorded", b.size),
                ))
            }
            _ => {}
        }
        let got = match self.store.os.get(&b.key).await {
            Ok(g) => g,
            Err(e) => return Some(Failure::store(e)),
        };
        let len = got.meta.size;
        let crc_end = len.saturating_sub(8);
        let trailer_start = len.saturating_sub(9);
        let (mut crc, mut pos, mut crc32c) = (0u64, 0u64, 0u32);
        let mut head = Vec::new();
        let mut trailer = Vec::with_capacity(9);
        let mut body = got.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Some(Failure::store(e)),
            };
            let end = pos + chunk.len() as u64;
            let slice = |from: u64, to: u64| {
                &chunk[(from.clamp(pos, end) - pos) as usize..(to.clamp(pos, end) - pos) as usize]
            };
            crc = rdb::crc64(crc, slice(0, crc_end));
            crc32c = crc32c::crc32c_append(crc32c, &chunk);
            trailer.extend_from_slice(slice(trailer_start, len));
            if head.len() < rdb::MAGIC_LEN {
                head.extend_from_slice(slice(0, rdb::MAGIC_LEN as u64));
            }
            pos = end;
        }
        self.counts.bytes += pos;
        self.progress.add(pos);
        if pos != len {
            return Some(Failure::new(
                Kind::Truncated,
                Some(pos),
                format!("the store returned {pos} of the object's {len} bytes"),
            ));
        }
        if let Err(e) = rdb::peek(b.key.as_ref(), &head) {
            return Some(Failure::format(&e));
        }
        if let Err(e) = rdb::check_trailer(b.key.as_ref(), len, crc, &trailer) {
            return Some(Failure::format(&e));
        }
        crc_mismatch(Some(crc32c), b.crc32c)
    }

    /// Streams a segment through the scanner ([`SegmentStream`]), decoding every block.
    pub(super) async fn scan(&mut self, key: &Path, size: u64, sealed: Sealed) -> Scan {
        let mut scan = Scan::default();
        // An open tail may have grown since the listing; a sealed segment must not have.
        let expected = (sealed == Sealed::Yes).then_some(size);
        let mut stream = match SegmentStream::open(self.store, key, sealed, expected).await {
            Ok(s) => s,
            Err(e) => {
                scan.failure = Some(Failure::stream(e));
                return scan;
            }
        };
        let failure = loop {
            let block = match stream.next_block().await {
                Ok(Some(b)) => b,
                Ok(None) => break None,
                Err(e) => break Some(Failure::stream(e)),
            };
            match stream.decode(&block) {
                Ok(items) => {
                    self.counts.blocks += 1;
                    self.counts.records += items
                        .iter()
                        .filter(|i| !matches!(i, Item::Fragment(f) if f.end.is_none()))
                        .count() as u64;
                    if block.info.record_count > 0 {
                        scan.last_good_first_ms = Some(block.info.first_time_ms);
                    }
                }
                Err(e) => break Some(Failure::stream(e)),
            }
        };
        // The scan is done; what it did not need still counts for the checksum.
        if failure.is_none() {
            match stream.drain().await {
                Ok((crc, _)) => scan.crc32c = Some(crc),
                Err(e) => {
                    self.counts.bytes += stream.received();
                    self.progress.add(stream.received());
                    scan.failure = Some(Failure::stream(e));
                    return scan;
                }
            }
        }
        self.counts.bytes += stream.received();
        self.progress.add(stream.received());
        scan.header = stream.header().cloned();
        if failure.is_none() {
            scan.summary = stream.summary();
            scan.torn = stream.torn_reason().map(str::to_string);
        } else if stream.damage().is_some() {
            // The prefix before the damage is intact, and restore reads it (plan.rs).
            scan.summary = stream.summary();
            scan.damaged_through_ms = scan.summary.as_ref().map(|s| s.end_time_ms);
        }
        scan.failure = failure;
        scan
    }

    pub(super) async fn ends_with_footer_magic(&self, key: &Path, size: u64) -> bool {
        let n = segment::FOOTER_MAGIC.len() as u64;
        if size < n {
            return false;
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(size - n..size)),
            ..Default::default()
        };
        match self.store.os.get_opts(key, opts).await {
            Ok(r) => r
                .bytes()
                .await
                .is_ok_and(|b| b[..] == segment::FOOTER_MAGIC),
            // Cannot tell: keep the scanner's verdict.
            Err(_) => true,
        }
    }
}

/// A sealed segment's name is what restore plans with: it must say what the footer says (for
/// a segment without records the agent names it by its creation time, as `first_time_ms` 0
/// would sort it before its predecessors).
pub(super) fn name_mismatch(
    n: &layout::SealedName,
    h: Option<&SegmentHeader>,
    s: Option<&SegmentSummary>,
) -> Option<Failure> {
    let (h, s) = (h?, s?);
    let first = if s.first_time_ms == 0 {
        h.created_ms
    } else {
        s.first_time_ms
    };
    let named = (n.start_offset, n.end_offset, n.first_time_ms, n.end_time_ms);
    let found = (
        s.start_offset,
        s.end_offset,
        first,
        s.end_time_ms.max(first),
    );
    if named == found {
        return None;
    }
    Some(Failure::new(
        Kind::Corrupt,
        None,
        format!(
            "the name says offsets {}..{} and times {}..{}, the footer says offsets {}..{} and times {}..{}",
            named.0, named.1, named.2, named.3, found.0, found.1, found.2, found.3
        ),
    ))
}

/// The listed size against the one the name records (the size the writer read back after its
/// fsync).
pub(super) fn size_mismatch(listed: u64, recorded: u64) -> Option<Failure> {
    if listed < recorded {
        Some(Failure::new(
            Kind::Truncated,
            Some(listed),
            format!("{listed} bytes, but its name records {recorded}: the object was cut short"),
        ))
    } else if listed > recorded {
        Some(Failure::new(
            Kind::Corrupt,
            Some(recorded),
            format!("{listed} bytes, more than the {recorded} its name records"),
        ))
    } else {
        None
    }
}

/// The checksum of the bytes read against the one the name records. The formats' own checks
/// passed by now, so this is damage they do not cover, or another object under this name.
pub(super) fn crc_mismatch(read: Option<u32>, recorded: u32) -> Option<Failure> {
    match read {
        Some(c) if c != recorded => Some(Failure::new(
            Kind::Corrupt,
            None,
            format!(
                "checksum {c:08x} (crc32c of its bytes), not the {recorded:08x} recorded in its name: the bytes changed after they were written"
            ),
        )),
        _ => None,
    }
}

pub(super) fn name_mismatch_tail(start: u64, h: Option<&SegmentHeader>) -> Option<Failure> {
    match h {
        Some(h) if h.start_offset != start => Some(Failure::new(
            Kind::Corrupt,
            Some(16),
            format!(
                "the header says the segment starts at offset {}, its name says {start}",
                h.start_offset
            ),
        )),
        _ => None,
    }
}
