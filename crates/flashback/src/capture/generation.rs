//! A new generation: the base snapshot's file, then its manifest (create-only, so a second
//! writer is caught) and the first segment; and the uncertain intervals recorded in the
//! current generation.
//!
//! The base's name records its size and crc32c, summed while the transfer writes it (the file
//! is handed out wrapped in a [`Crc32cWriter`]) rather than read back after: a base can be
//! gigabytes, and reading it again blocked the capture task for as long.

use super::log::{create_dir_durable, io_err, sync_dir, Log};
use super::state::{GapReason, StreamState};
use super::CaptureError;
use crate::store::layout::{self, Crc32cWriter};
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
    /// Write through the returned writer only (buffer above it): its sum names the base.
    pub fn base_file(&self, gen: &str) -> Result<(Crc32cWriter<File>, PathBuf), CaptureError> {
        let dir = self.local(&layout::base_prefix(&self.source, gen));
        create_dir_durable(&dir)?;
        let partial = dir.join("incoming.rdb.partial");
        let f = File::create(&partial).map_err(io_err(&partial))?;
        Ok((Crc32cWriter::new(f), partial))
    }

    /// The base is complete and checked: make it durable, write the manifest (create-only, so
    /// a second writer is caught), and open the first segment. `now_ms` is when the primary
    /// answered +FULLRESYNC: the snapshot is its state then (it forks at that answer), and the
    /// writes made during the transfer arrive after it, inside an uncertain interval.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_generation(
        &mut self,
        gen: &str,
        base: (Crc32cWriter<File>, PathBuf),
        replid: &str,
        offset: u64,
        db: u32,
        rdb: &crate::replica::RdbReceived,
        reason: &GapReason,
        now_ms: u64,
    ) -> Result<(), CaptureError> {
        let (file, partial) = base;
        let (size, crc) = file.size_crc32c();
        file.get_ref().sync_all().map_err(io_err(&partial))?;
        drop(file);
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

    /// Stores the source's `COMMAND` reply beside the manifest of `gen` (`store::commands`),
    /// once: an object already there is left alone. Like [`record_uncertain`](Self::record_uncertain),
    /// a failure is logged, not fatal: history then reads this generation with the builtin table.
    pub fn record_commands(&self, gen: &str, reply: &[u8]) {
        let path = self.local(&layout::commands_key(&self.source, gen));
        if path.exists() {
            return;
        }
        match write_durable(&self.root, &path, &crate::store::commands::encode(reply)) {
            Ok(()) => self.notify_sealed(),
            Err(e) => warn!(
                "{}: {e} (history will use the builtin command table for this generation)",
                path.display()
            ),
        }
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
        match write_durable(&self.root, &path, &rec.encode()) {
            Ok(()) => self.notify_sealed(),
            Err(e) => warn!(
                "{}: {e} (info will not list this uncertain interval)",
                path.display()
            ),
        }
    }
}

/// A small object written whole: a temporary file, fsync, rename, directory fsync.
fn write_durable(
    root: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(root);
    fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// The source's `COMMAND` reply, asked on an ordinary connection (never the replication link,
/// which must not carry commands with replies). None, with a warning, when the source refuses
/// (an ACL without `+command`) or does not answer in time: history then uses the builtin table.
pub(super) async fn command_reply(url: &crate::client::RedisUrl) -> Option<bytes::Bytes> {
    use crate::client::Client;
    use std::time::Duration;
    let skip = |why: String| {
        warn!("{why}: not storing the source's command table with this generation; `flashback history` will use the builtin one (grant +command to the capture user for module commands)");
        None
    };
    let mut c = match Client::connect(url, Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => return skip(e.to_string()),
    };
    match c.call_raw(&["COMMAND"]).await {
        Ok(b) if b.first() == Some(&b'-') => skip(format!(
            "{url}: COMMAND refused: {}",
            String::from_utf8_lossy(&b[1..]).trim_end()
        )),
        Ok(b) => Some(b),
        Err(e) => skip(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::Entry;
    use crate::store::{Access, Store, StoreConfig};
    use flashback_format::segment::Record;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::time::Duration;

    const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";

    fn flip(path: &std::path::Path, at: u64) {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[b[0] ^ 0xff]).unwrap();
    }

    /// Every object under the source's local store, with its parsed name.
    fn entries(root: &std::path::Path) -> Vec<(PathBuf, Entry)> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                    continue;
                }
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
                if let Some((_, entry)) =
                    layout::parse_key("src", &object_store::path::Path::from(rel))
                {
                    out.push((p, entry));
                }
            }
        }
        out
    }

    async fn new_generation(root: &std::path::Path, base: &[u8], flip_at: Option<u64>) -> Log {
        let store = Store::open(root.to_str().unwrap(), &StoreConfig::new(Access::Write)).unwrap();
        let mut log = Log::open(store, None, "src", 1 << 30, Duration::from_secs(3600))
            .await
            .unwrap();
        let now = crate::now_ms();
        let gen = layout::generation_id(now);
        let (mut w, partial) = log.base_file(&gen).unwrap();
        w.write_all(base).unwrap();
        if let Some(at) = flip_at {
            flip(&partial, at);
        }
        let rdb = crate::replica::RdbReceived {
            len: base.len() as u64,
            diskless: false,
            info: Default::default(),
        };
        log.commit_generation(
            &gen,
            (w, partial),
            REPLID,
            0,
            0,
            &rdb,
            &GapReason::FirstCapture,
            now,
        )
        .await
        .unwrap();
        log
    }

    fn append_sets(log: &mut Log, n: usize) {
        for i in 0..n {
            let resp = format!("*3\r\n$3\r\nSET\r\n$2\r\nk{}\r\n$1\r\nv\r\n", i % 10).into_bytes();
            let end = log.tail.as_ref().unwrap().writer.end_offset() + resp.len() as u64;
            let rec = Record {
                end_offset: end,
                time_ms: crate::now_ms(),
                db: 0,
                boundary: true,
                resp,
            };
            log.append(&rec, 0).unwrap();
        }
    }

    /// The names record the crc32c of the bytes capture wrote, not of what the disk holds at
    /// the commit: a byte changed in between is then caught by `verify`. Before the sums were
    /// kept while writing, both names were read back from the (changed) files.
    #[tokio::test]
    async fn names_carry_the_crc32c_of_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let base: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut log = new_generation(&root, &base, Some(777)).await;
        append_sets(&mut log, 50);
        log.make_durable_now().unwrap();
        let tail = log.tail.as_ref().unwrap().path.clone();
        flip(&tail, 100);
        log.seal().unwrap();

        let all = entries(&root);
        let (_, size, crc) = all
            .iter()
            .find_map(|(p, e)| match e {
                Entry::Base { size, crc32c, .. } => Some((p, *size, *crc32c)),
                _ => None,
            })
            .expect("a base");
        assert_eq!((size, crc), (base.len() as u64, crc32c::crc32c(&base)));
        let (path, name) = all
            .iter()
            .find_map(|(p, e)| match e {
                Entry::Sealed(n) => Some((p, *n)),
                _ => None,
            })
            .expect("a sealed segment");
        let mut written = fs::read(path).unwrap();
        assert_ne!(
            name.crc32c,
            crc32c::crc32c(&written),
            "the flip is not blessed"
        );
        written[100] ^= 0xff;
        assert_eq!(
            (name.size, name.crc32c),
            (written.len() as u64, crc32c::crc32c(&written))
        );
    }

    /// Abandoned fragments are cut off the tail and their bytes leave the sum with them.
    #[tokio::test]
    async fn abandoned_fragments_leave_the_sum() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let mut log = new_generation(&root, b"REDIS0011 not checked here", None).await;
        append_sets(&mut log, 3);
        log.append_fragment(&[b'x'; 5000], None, 0).unwrap();
        log.append_fragment(&[b'y'; 5000], None, 0).unwrap();
        log.abandon_partial().unwrap();
        append_sets(&mut log, 2);
        log.seal().unwrap();
        let (path, name) = entries(&root)
            .into_iter()
            .find_map(|(p, e)| match e {
                Entry::Sealed(n) => Some((p, n)),
                _ => None,
            })
            .expect("a sealed segment");
        let bytes = fs::read(path).unwrap();
        assert_eq!(
            (name.size, name.crc32c),
            (bytes.len() as u64, crc32c::crc32c(&bytes))
        );
    }
}
