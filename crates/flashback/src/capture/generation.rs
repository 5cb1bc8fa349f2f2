//! A new generation: the base snapshot's file, then its manifest (create-only, so a second
//! writer is caught) and the first segment; and the uncertain intervals recorded in the
//! current generation.

use super::log::{create_dir_durable, io_err, sync_dir, Log};
use super::state::{GapReason, StreamState};
use super::CaptureError;
use crate::store::layout;
use crate::store::manifest::{GenerationManifest, PreviousGeneration};
use flashback_format::segment::Origin;
use object_store::{PutMode, PutOptions};
use std::fs::{self, File};
use std::path::PathBuf;
use tracing::warn;

impl Log {
    /// Starts a new generation: the caller streams the base into the file this returns, then
    /// calls [`commit_generation`](Self::commit_generation). Its final name needs the offset,
    /// which a legacy SYNC answer only reveals inside the snapshot, hence a neutral name first.
    pub fn base_file(&self, gen: &str) -> Result<(File, PathBuf), CaptureError> {
        let dir = self.local(&layout::base_prefix(&self.source, gen));
        create_dir_durable(&dir)?;
        let partial = dir.join("incoming.rdb.partial");
        let f = File::create(&partial).map_err(io_err(&partial))?;
        Ok((f, partial))
    }

    /// The base is complete and checked: make it durable, write the manifest (create-only, so
    /// a second writer is caught), and open the first segment. `now_ms` is when the primary
    /// answered +FULLRESYNC: the snapshot is its state then (it forks at that answer), and the
    /// writes made during the transfer arrive after it, inside an uncertain interval.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_generation(
        &mut self,
        gen: &str,
        base: (File, PathBuf),
        replid: &str,
        offset: u64,
        db: u32,
        rdb: &crate::replica::RdbReceived,
        reason: &GapReason,
        now_ms: u64,
    ) -> Result<(), CaptureError> {
        let (file, partial) = base;
        file.sync_all().map_err(io_err(&partial))?;
        drop(file);
        let (size, crc) = layout::file_size_crc32c(&partial).map_err(io_err(&partial))?;
        let dest = self.local(&layout::base_key(
            &self.source,
            gen,
            offset,
            now_ms,
            size,
            crc,
        ));
        fs::rename(&partial, &dest).map_err(io_err(&dest))?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;

        let previous = match (&self.generation, &self.state) {
            (Some(g), Some(s)) => Some(PreviousGeneration {
                generation: g.clone(),
                end_offset: s.offset,
                end_time_ms: self.covered_through_ms,
            }),
            _ => None,
        };
        let server = ["valkey-ver", "redis-ver"]
            .iter()
            .find_map(|k| {
                rdb.info
                    .aux_str(k)
                    .map(|v| format!("{} {v}", k.trim_end_matches("-ver")))
            })
            .unwrap_or_else(|| "unknown".into());
        let m = GenerationManifest {
            source: self.source.clone(),
            generation: gen.to_string(),
            replid: replid.to_string(),
            base_offset: offset,
            base_time_ms: now_ms,
            base_db: db,
            base_size: rdb.len,
            rdb_version: rdb.info.version,
            server,
            reason: reason.to_string(),
            previous,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let key = layout::manifest_key(&self.source, gen);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.store.os.put_opts(&key, m.encode().into(), opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(CaptureError::SecondWriter(format!(
                    "{key} already exists: another agent is writing this source"
                )))
            }
            Err(e) => return Err(crate::store::StoreError::from(e).into()),
        }
        self.seal()?;
        self.generation = Some(gen.to_string());
        self.state = Some(StreamState::new(
            replid.to_string(),
            offset,
            db,
            false,
            now_ms,
        ));
        self.durable_offset = offset;
        self.covered_through_ms = now_ms;
        self.evidence_ms = now_ms;
        self.notify_sealed();
        self.open_tail(Origin::NewGeneration, crate::now_ms())
    }

    /// Stores an uncertain interval of the current generation (`capture::core`), after the
    /// blocks that hold its records were made durable. Create-new + fsync + directory fsync
    /// like every object the agent writes; the uploader takes it to a remote store. A failure
    /// is logged, not fatal: restore finds the interval's catch-up blocks in the log anyway,
    /// only `info` would not list it.
    pub fn record_uncertain(&self, i: &super::core::Interval) {
        let Some(gen) = self.generation.as_deref() else {
            return;
        };
        let name = layout::UncertainName {
            from_offset: i.from_offset,
            to_offset: i.to_offset,
            from_ms: i.from_ms,
            to_ms: i.to_ms,
        };
        let rec = crate::store::manifest::UncertainRecord {
            from_ms: i.from_ms,
            to_ms: i.to_ms,
            from_offset: i.from_offset,
            to_offset: i.to_offset,
            records: i.records,
            cause: i.cause.as_str().to_string(),
        };
        let path = self.local(&layout::uncertain_key(&self.source, gen, &name));
        let write = || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(&self.root);
            fs::create_dir_all(dir)?;
            let tmp = path.with_extension("gap.tmp");
            {
                use std::io::Write;
                let mut f = File::create(&tmp)?;
                f.write_all(&rec.encode())?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        };
        match write() {
            Ok(()) => self.notify_sealed(),
            Err(e) => warn!(
                "{}: {e} (info will not list this uncertain interval)",
                path.display()
            ),
        }
    }
}
