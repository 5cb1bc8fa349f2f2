//! What a store holds, from its listing plus the small manifests: sources, generations, and the
//! restorable window of each. No database, no index object: a LIST is the catalog.

use super::chain;
use super::layout::{self, Entry, SealedName, UncertainName};
use super::manifest::GenerationManifest;
use super::stream::{SegmentStream, StreamError};
use super::{Store, StoreError};
use flashback_format::segment::{Damage, Sealed, SegmentScanner};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::Serialize;
use std::collections::BTreeMap;

/// A base snapshot object.
#[derive(Debug, Clone)]
pub struct BaseObject {
    pub offset: u64,
    pub time_ms: u64,
    pub key: Path,
    /// The size the listing reports.
    pub size: u64,
    /// The size and crc32c its name records, from when it was written (`verify` compares).
    pub recorded_size: u64,
    pub crc32c: u32,
}

impl BaseObject {
    /// A base from a listing: the object as listed, and what its name ([`Entry::Base`]) records.
    pub fn listed(o: &object_store::ObjectMeta, entry: &Entry) -> Option<BaseObject> {
        match *entry {
            Entry::Base {
                offset,
                time_ms,
                size,
                crc32c,
            } => Some(BaseObject {
                offset,
                time_ms,
                key: o.location.clone(),
                size: o.size,
                recorded_size: size,
                crc32c,
            }),
            _ => None,
        }
    }
}

/// `size` is what the listing reports; `name` records what the writer wrote.
#[derive(Debug, Clone)]
pub struct SealedSegment {
    pub name: SealedName,
    pub key: Path,
    pub size: u64,
}

/// What a scan of an open tail found.
#[derive(Debug, Clone)]
pub struct TailSegment {
    pub key: Path,
    pub size: u64,
    pub start_offset: u64,
    pub end_offset: u64,
    pub first_time_ms: u64,
    pub covered_through_ms: u64,
    pub torn: bool,
    /// A bad block with intact blocks after it (damage on disk, not a torn write): the fields
    /// above describe the valid prefix before it, where the restorable window ends.
    pub damage: Option<Box<Damage>>,
}

impl TailSegment {
    /// One line for a damaged tail: file, byte, what is lost and how far restore still reaches
    /// (the window ends where the damage starts).
    pub fn damage_message(&self) -> Option<String> {
        Some(format!("{}: {}", self.key, self.damage_what()?))
    }

    /// [`damage_message`](Self::damage_message) without the file's name.
    pub fn damage_what(&self) -> Option<String> {
        let d = self.damage.as_ref()?;
        Some(format!(
            "damaged at {d}; restore reaches up to {} (offset {}), the last instant before the damage",
            crate::timespec::format_ms(self.covered_through_ms),
            self.end_offset
        ))
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub id: String,
    /// None while the base is still arriving, or if the agent died before writing it: such a
    /// generation is not restorable and is reported as incomplete.
    pub manifest: Option<GenerationManifest>,
    pub bases: Vec<BaseObject>,
    pub sealed: Vec<SealedSegment>,
    pub tails: Vec<TailSegment>,
    /// The log head object (key, size), if the agent wrote one (see `manifest::LogHead`).
    pub head: Option<(Path, u64)>,
    /// The source's COMMAND reply stored at the generation's start (key, size), if any.
    pub commands: Option<(Path, u64)>,
    /// Uncertain intervals the agent stored (see `capture::core`), in offset order.
    pub uncertain: Vec<UncertainObject>,
    /// Summaries of sealed segments (`flashback_format::summary`), in offset order. One whose
    /// offsets match no sealed segment is an orphan (left by a crash between writing it and
    /// sealing); readers pair them by offsets and ignore the rest.
    pub summaries: Vec<SummaryObject>,
}

/// A segment summary object: its name holds the segment's offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryObject {
    pub start_offset: u64,
    pub end_offset: u64,
    pub key: Path,
    pub size: u64,
}

/// An uncertain-interval object: its name holds the interval.
#[derive(Debug, Clone)]
pub struct UncertainObject {
    pub name: UncertainName,
    pub key: Path,
    pub size: u64,
}

/// One continuous time range restore can reach, and the offsets behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub from_ms: u64,
    pub to_ms: u64,
    pub from_offset: u64,
    pub to_offset: u64,
}

impl Generation {
    /// From the oldest base whose log reaches furthest, to the last time that log is known
    /// complete ([`chain::Chain::window`]). None without a manifest or a base. Usually that is
    /// the manifest's own base; after a prune removed it and the first segments, it is the
    /// oldest base kept on the log.
    pub fn window(&self) -> Option<Window> {
        self.chain().window()
    }

    /// What restores from where: the one walk of this generation's log.
    pub fn chain(&self) -> chain::Chain<'_> {
        chain::Chain::of(self)
    }

    pub fn bytes(&self) -> u64 {
        self.bases.iter().map(|b| b.size).sum::<u64>()
            + self.sealed.iter().map(|s| s.size).sum::<u64>()
            + self.tails.iter().map(|t| t.size).sum::<u64>()
            + self.summaries.iter().map(|s| s.size).sum::<u64>()
    }

    /// The summary object of a sealed segment, if one was stored.
    pub fn summary_of(&self, s: &SealedSegment) -> Option<&SummaryObject> {
        self.summaries
            .binary_search_by_key(&(s.name.start_offset, s.name.end_offset), |o| {
                (o.start_offset, o.end_offset)
            })
            .ok()
            .map(|i| &self.summaries[i])
    }
}

/// One view of a source whose objects live in two places: a capture agent's local spool (not yet
/// uploaded, and the open tail) and the remote store (already uploaded). Same keys in both are
/// the same object (an upload whose spool copy was not deleted yet).
pub fn merge(spool: Vec<Generation>, remote: Vec<Generation>) -> Vec<Generation> {
    let mut by_id: BTreeMap<String, Generation> =
        remote.into_iter().map(|g| (g.id.clone(), g)).collect();
    for g in spool {
        match by_id.get_mut(&g.id) {
            None => {
                by_id.insert(g.id.clone(), g);
            }
            Some(r) => {
                if r.manifest.is_none() {
                    r.manifest = g.manifest;
                }
                for b in g.bases {
                    if !r.bases.iter().any(|x| x.offset == b.offset) {
                        r.bases.push(b);
                    }
                }
                for s in g.sealed {
                    if !r.sealed.iter().any(|x| x.name == s.name) {
                        r.sealed.push(s);
                    }
                }
                r.tails.extend(g.tails);
                for u in g.uncertain {
                    if !r.uncertain.iter().any(|x| x.name == u.name) {
                        r.uncertain.push(u);
                    }
                }
                for o in g.summaries {
                    if !r.summaries.iter().any(|x| x.key == o.key) {
                        r.summaries.push(o);
                    }
                }
                r.summaries.sort_by_key(|o| (o.start_offset, o.end_offset));
                r.uncertain.sort_by_key(|u| u.name);
                r.bases.sort_by_key(|b| b.offset);
                r.sealed.sort_by_key(|s| s.name);
                r.tails.sort_by_key(|t| t.start_offset);
            }
        }
    }
    by_id.into_values().collect()
}

/// Source names in the store, sorted.
pub async fn list_sources(store: &Store) -> Result<Vec<String>, StoreError> {
    let listing = store
        .os
        .list_with_delimiter(Some(&layout::sources_prefix()))
        .await?;
    let mut names: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.parts().next_back().map(|s| s.as_ref().to_string()))
        .filter(|n| layout::valid_source_name(n))
        .collect();
    names.sort();
    Ok(names)
}

/// Every generation of `source`, oldest first, with manifests read and tails scanned.
pub async fn load_generations(store: &Store, source: &str) -> Result<Vec<Generation>, StoreError> {
    let objects: Vec<_> = store
        .os
        .list(Some(&layout::generations_prefix(source)))
        .try_collect()
        .await?;
    let mut gens: BTreeMap<String, Generation> = BTreeMap::new();
    let mut manifests = Vec::new();
    for o in objects {
        let Some((gen, entry)) = layout::parse_key(source, &o.location) else {
            continue;
        };
        let g = gens.entry(gen.clone()).or_insert_with(|| Generation {
            id: gen.clone(),
            manifest: None,
            bases: vec![],
            sealed: vec![],
            tails: vec![],
            head: None,
            commands: None,
            uncertain: vec![],
            summaries: vec![],
        });
        match entry {
            Entry::Manifest => manifests.push((gen, o.location)),
            Entry::Head => g.head = Some((o.location, o.size)),
            Entry::Commands => g.commands = Some((o.location, o.size)),
            e @ Entry::Base { .. } => g.bases.extend(BaseObject::listed(&o, &e)),
            Entry::Sealed(name) => g.sealed.push(SealedSegment {
                name,
                key: o.location,
                size: o.size,
            }),
            Entry::Uncertain(name) => g.uncertain.push(UncertainObject {
                name,
                key: o.location,
                size: o.size,
            }),
            Entry::Summary {
                start_offset,
                end_offset,
            } => g.summaries.push(SummaryObject {
                start_offset,
                end_offset,
                key: o.location,
                size: o.size,
            }),
            Entry::Tail { start_offset } => g.tails.push(TailSegment {
                key: o.location,
                size: o.size,
                start_offset,
                end_offset: start_offset,
                first_time_ms: 0,
                covered_through_ms: 0,
                torn: false,
                damage: None,
            }),
        }
    }
    for (gen, key) in manifests {
        let bytes = store.os.get(&key).await?.bytes().await?;
        let m = GenerationManifest::decode(key.as_ref(), &bytes)?;
        if let Some(g) = gens.get_mut(&gen) {
            g.manifest = Some(m);
        }
    }
    for g in gens.values_mut() {
        g.bases.sort_by_key(|b| b.offset);
        g.sealed.sort_by_key(|s| s.name);
        g.tails.sort_by_key(|t| t.start_offset);
        g.uncertain.sort_by_key(|u| u.name);
        g.summaries.sort_by_key(|o| (o.start_offset, o.end_offset));
        for t in &mut g.tails {
            scan_tail(store, t).await?;
        }
    }
    Ok(gens.into_values().collect())
}

/// Reads an open tail block by block (never whole: a tail may hold a 512 MB command) to learn
/// where it ends and how far it is known complete. A damaged tail is not an error here (every
/// command that lists a store would fail on it, `info` and `verify` too, which must report it):
/// it is described up to the damage, with the damage in `damage`; readers past it fail.
async fn scan_tail(store: &Store, t: &mut TailSegment) -> Result<(), StoreError> {
    let scanner = match scan_object_to_end(store, &t.key, Sealed::No).await {
        Ok((s, Ok(()))) => s,
        Ok((s, Err(StoreError::Format(flashback_format::Error::Damaged { damage, .. })))) => {
            t.damage = Some(damage);
            s
        }
        Ok((_, Err(e))) => return Err(e),
        // Sealed between our LIST and GET: the sealed copy is in the next listing.
        Err(StoreError::ObjectStore(object_store::Error::NotFound { .. })) => return Ok(()),
        Err(e) => return Err(e),
    };
    let (Some(h), Some(s)) = (scanner.header(), scanner.summary()) else {
        return Ok(());
    };
    t.end_offset = s.end_offset;
    t.first_time_ms = s.first_time_ms;
    t.covered_through_ms = s.end_time_ms.max(h.created_ms);
    t.torn = scanner.torn_reason().is_some();
    Ok(())
}

/// Streams a segment object through a [`SegmentScanner`] to its end, one block in memory at a
/// time ([`SegmentStream`]), and returns the finished scan (header, summary, blocks). Every
/// block's checksum is checked on the way. An open tail shorter than its listed size (it was
/// truncated since) ends as a torn write; a sealed segment that short is an error naming it.
pub async fn scan_object(
    store: &Store,
    key: &Path,
    sealed: Sealed,
) -> Result<SegmentScanner, StoreError> {
    let (scanner, end) = scan_object_to_end(store, key, sealed).await?;
    end.map(|()| scanner)
}

/// As [`scan_object`], but a failure of the scan itself comes with the scanner, which still
/// describes what was valid before it (a damaged tail's prefix).
async fn scan_object_to_end(
    store: &Store,
    key: &Path,
    sealed: Sealed,
) -> Result<(SegmentScanner, Result<(), StoreError>), StoreError> {
    let mut stream = SegmentStream::open(store, key, sealed, None)
        .await
        .map_err(store_error)?;
    let end = match stream.skip_to_end().await {
        Ok(()) => Ok(()),
        Err(StreamError::Short { .. }) if sealed == Sealed::No => Ok(()),
        Err(StreamError::Format(e)) => Err(StoreError::Format(e)),
        Err(e) => return Err(store_error(e)),
    };
    Ok((stream.into_scanner(), end))
}

fn store_error(e: StreamError) -> StoreError {
    match e {
        StreamError::Store(e) => e,
        StreamError::Format(e) => StoreError::Format(e),
        StreamError::Short { key, .. } => StoreError::Io {
            path: key,
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the store returned fewer bytes than the object's listed size",
            ),
        },
    }
}
