//! N partitions' RDB files into one: the header, AUX fields, functions and module AUX data of
//! the first (every partition ran the same global commands, so they hold the same), then per
//! db, in ascending order, that db's entries of every partition, byte for byte, under one
//! SELECTDB and a RESIZEDB of the summed sizes; EOF and the CRC-64 are the writer's, computed
//! over the merged bytes. Every partition's file is read once, all of them side by side.
//! Rejected: concatenating whole sections (partition 0's dbs, then partition 1's…), which a
//! server loads too (SELECTDB may repeat) but which no longer reads as one server's dump.

use flashback_rdb::{Item, RdbReader, RdbWriter};
use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

/// What the merge wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    pub entries: u64,
    pub bytes: u64,
}

type Reader = RdbReader<BufReader<std::fs::File>>;

/// Merges `inputs` (one server version's dumps) into `out`. `sizes`: per db, the (keys,
/// expires) hint written as RESIZEDB (the servers' INFO keyspace, summed).
pub fn merge_rdbs(
    inputs: &[PathBuf],
    out: &Path,
    sizes: &BTreeMap<u64, (u64, u64)>,
) -> Result<Merged, String> {
    let named = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let mut readers = Vec::with_capacity(inputs.len());
    for p in inputs {
        let f = std::fs::File::open(p).map_err(|e| named(p, &e))?;
        let mut r = RdbReader::with_name(BufReader::new(f), Some(p.display().to_string()))
            .map_err(|e| named(p, &e))?;
        r.capture_raw(true);
        readers.push(r);
    }
    let Some(first) = readers.first() else {
        return Err("no partition to merge".into());
    };
    let header = *first.header();
    if let Some(r) = readers.iter().find(|r| *r.header() != header) {
        return Err(format!(
            "the partitions' dumps differ in RDB version ({:?} and {:?}): they must come from one server binary",
            header.version,
            r.header().version
        ));
    }
    let file = std::fs::File::create(out).map_err(|e| named(out, &e))?;
    let mut w = RdbWriter::new(BufWriter::new(file), &header).map_err(|e| named(out, &e))?;
    let mut merged = Merged::default();
    // Where each reader stands: the db whose entries come next (None: at its EOF).
    let mut next = Vec::with_capacity(readers.len());
    for (i, r) in readers.iter_mut().enumerate() {
        next.push(copy_section(r, &mut w, i == 0, &mut merged).map_err(|e| named(&inputs[i], &e))?);
    }
    while let Some(db) = next.iter().flatten().min().copied() {
        w.select_db(db).map_err(|e| named(out, &e))?;
        if let Some(&(keys, expires)) = sizes.get(&db) {
            w.resize_db(keys, expires).map_err(|e| named(out, &e))?;
        }
        for (i, r) in readers.iter_mut().enumerate() {
            if next[i] == Some(db) {
                next[i] = copy_section(r, &mut w, i == 0, &mut merged)
                    .map_err(|e| named(&inputs[i], &e))?;
            }
        }
    }
    merged.bytes = w.written() + w.trailer_len();
    let buf = w.finish().map_err(|e| named(out, &e))?;
    buf.into_inner().map_err(|e| named(out, &e.into_error()))?;
    Ok(merged)
}

#[derive(Debug, thiserror::Error)]
enum SectionError {
    #[error(transparent)]
    Read(#[from] flashback_rdb::Error),
    #[error("writing the merged RDB: {0}")]
    Write(#[from] std::io::Error),
}

/// Copies `r`'s items up to its next SELECTDB (returned) or its EOF (None): entries always,
/// everything global only from the first partition (`globals`). Size hints are dropped: the
/// merge writes its own.
fn copy_section(
    r: &mut Reader,
    w: &mut RdbWriter<BufWriter<std::fs::File>>,
    globals: bool,
    merged: &mut Merged,
) -> Result<Option<u64>, SectionError> {
    loop {
        match r.next()? {
            None | Some(Item::End { .. }) => return Ok(None),
            Some(Item::SelectDb(db)) => return Ok(Some(db)),
            Some(Item::Entry(_)) => {
                r.summarize()?;
                w.entry(r.raw())?;
                merged.entries += 1;
            }
            Some(Item::ResizeDb { .. } | Item::SlotInfo { .. }) => {}
            Some(
                Item::Aux { .. }
                | Item::Function(_)
                | Item::ModuleAux { .. }
                | Item::SlotImport { .. },
            ) => {
                if globals {
                    w.raw(r.raw())?;
                }
            }
        }
    }
}
