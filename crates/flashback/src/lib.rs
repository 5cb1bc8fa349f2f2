//! Flashback: point-in-time recovery for Redis and Valkey.
//!
//! # Layout
//! Data flows one way: **source → capture → store → restore → target**.
//!
//! - [`client`]: the `redis://` URL of a source or target, and a small async client for ordinary
//!   commands (INFO, DUMP/RESTORE, DEBUG DIGEST).
//! - [`commands`]: which arguments of a command are keys: a builtin table of the write commands
//!   of Redis 7.0–8.2 and Valkey 8–9, or the source's own `COMMAND` reply, which capture stores
//!   with each generation (`store::commands`) so modules' commands are known too.
//! - [`replica`]: the replica side of the replication protocol: handshake, PSYNC, the RDB
//!   transfer (sized or diskless), then a [`replica::ReplicationStream`] that only yields
//!   commands and sends ACKs. RESP framing and the stream's framer are pure decoders, so they
//!   live in the format crate (`flashback_format::resp`), where they are fuzzed.
//! - [`capture`]: `capture::core` is the pure state machine of the capture loop (acks after
//!   fsyncs, heartbeats, evidence and uncertain intervals, pause, dead link); `capture::state`
//!   follows the stream (offsets, SELECT, MULTI, continue or new generation); `capture::poll`
//!   polls the source's own offset for evidence. `run`/`session` wire them to a socket and the
//!   store; the local log is `log` (the facade) over `tail` (the open segment: append, fsync,
//!   seal), `generation` (base, manifest, uncertain intervals), `recover` (what a crash or a
//!   full disk left) and `spool` (accounting, the metrics samples), `metrics` (the
//!   `agent.prom` text format); `maintenance` schedules compaction and retention beside the
//!   capture.
//!   `capture::cluster`: `capture --cluster`, one capture loop per shard in one process, each
//!   shard linked to a replica when it has one (`capture::cluster::topology`: CLUSTER SHARDS /
//!   SLOTS), shards the cluster gains while running adopted by a look every 2 s; the shard
//!   list is `store::cluster`, each shard's history an ordinary source
//!   (`layout::shard_source`), one metrics file for all shards; `restore::cluster` restores
//!   every shard at T (or at its cut of a mark) and merges them into one dataset (a key caught
//!   mid-migration in two shards is kept once), written as one RDB or delivered to any output.
//! - [`ship`]: the spool → remote store path (`ship::upload`: ordered, verified uploads of sealed
//!   objects) and the one-writer lease an agent holds in the store (`ship::lease`).
//! - [`store`]: `Arc<dyn ObjectStore>` plus [`store::layout`] (the only place object names are
//!   built), generation manifests, the stored `COMMAND` reply (`store::commands`), the catalog
//!   (windows from a LIST), the one chain walker (`store::chain`: what restores from which
//!   base), the one segment stream (`store::stream`) and the one way a local file becomes
//!   upload payloads (`store::chunks`: 1 MiB chunks, so no transient buffer grows the agent's
//!   memory).
//! - [`restore`]: `plan` (pure: which base, which segments, where to cut; `uncertain` for the
//!   intervals the agent could not vouch for) then one reader that serves base + records to a
//!   real redis-server through the engine (`engine::master` plays its master), then an output
//!   (`restore::outputs`): `--rdb`, `--to`, `--serve`; `--to` copies key by key
//!   (`outputs::copy`): DUMP/RESTORE, payloads relabelled for an older target
//!   (`outputs::relabel`), or element by element for keys above the target's
//!   `proto-max-bulk-len` or of types it does not know (`outputs::elements`); a Cluster target
//!   routes each key to its slot's primary (`outputs::cluster`, over `outputs::slots`: CRC16,
//!   the slot map, MOVED/ASK), and `--serve-cluster` forms a new local cluster and copies into it
//!   (`outputs::serve_cluster`). `restore::keys`: key-level restores
//!   (`--keys`, `--keys-from`, `--db`): a closure pass over the log, a filtered base, a filtered
//!   replay, so a restore costs what the selected keys cost.
//!   `restore::parallel`: `--parallel N`, the same pieces with the keys split into N
//!   partitions (linked keys together) rebuilt by N private servers at once, then one RDB merged
//!   from their dumps (`parallel::merge`). `restore::splice`: `--rdb` (the default there)
//!   copies the base's entries the log never names into the file as they are and rebuilds only
//!   the named keys in a small private server, whose dump's entries are appended.
//! - [`progress`]: the phases of a restore or drill (plan, check, fetch, load, replay, copy,
//!   verify) with amounts done, shared by the code doing the work and the binary that shows it
//!   (`cli/progress.rs`: a live line on a terminal); their times are the measured RTO.
//! - [`redis_server`]: starting, finding and stopping private redis-server processes (they die
//!   with flashback), for restore, compaction, verify and the demo.
//! - [`runtime`]: the one tokio runtime every command runs on, its blocking pool bounded (a
//!   24/7 agent's threads stay flat through bursts of file work).
//! - [`backoff`]: the one retry delay (doubling, capped, reset on success) every retry loop uses.
//! - [`show`]: the one way a URL (password masked) or a key name (escaped, capped) is printed.
//! - [`timespec`]: the time and duration syntax of the command line.
//! - [`info`]: what `flashback info` reports, as serde types shared by text and `--json`.
//! - [`timeline`]: `flashback timeline` and the events `restore --before/--after EVENT` lands
//!   on, from the segment summaries the agent stores at each seal (`timeline::summarize` is
//!   the one place that decides what a record counts as; `timeline::load` falls back to reading
//!   a segment without a usable summary; `timeline::event` parses and finds EVENTs).
//! - [`history`]: `flashback history KEY`: the log of every generation through the restore
//!   reader, following the key's names (`history::track`, pure), and its value at a point
//!   (`history::value`, a restore into a private server); `history::may_touch` is the seam for
//!   per-segment key filters (the reader asks its sink before fetching a segment).
//! - [`inspect`]: what `flashback inspect` reports about an RDB file (keys and bytes by db and
//!   type, biggest keys, expiry histogram), one streaming pass of the `flashback_rdb` reader
//!   (its own crate, `crates/rdb`: every RDB version and encoding, and the raw-entry writer a
//!   key-level restore copies entries with).
//! - [`compact`]: new bases made off the primary: the state at the end of the latest sealed
//!   segment, rebuilt by the restore engine and stored as a base, so restores replay less log.
//! - [`mark`]: consistent cuts (`flashback mark`, `capture --mark-every`, `restore --at-mark`):
//!   `mark::cut` pauses every primary's writes at once (`CLIENT PAUSE WRITE`) and reads each
//!   offset inside the pause; the mark is an immutable object in the store naming each shard's
//!   replid and offset, which restore locates in the stored history (`mark::locate`); for a
//!   cluster source `mark::cluster_primaries` finds every shard's primary.
//! - [`prune`]: retention: a pure plan (continuous window + daily/weekly/monthly restore points)
//!   of what may be deleted, then deletion in a crash-safe order.
//! - [`verify`]: `flashback verify`: reads every object a restore needs (`verify::objects`:
//!   checksums, every block), walks the chain from each base (`verify::check`), then a timed
//!   restore drill into a private redis-server (`verify::drill`). The report is data; the binary
//!   renders it.
//!
//! The binary (`src/main.rs`, `src/cli/`, one file per subcommand, `cli/debug.rs` for
//! `flashback debug segment|base`) parses arguments, reads the environment into explicit
//! configuration (`store::StoreConfig`), renders reports and calls into this library; `flashback demo` (`cli/demo.rs`) is a script of named
//! steps over the same library calls as `capture` and `restore`.

pub mod backoff;
pub mod capture;
pub mod client;
pub mod commands;
pub mod compact;
pub mod history;
pub mod info;
pub mod inspect;
pub mod mark;
pub mod net;
pub mod progress;
pub mod prune;
pub mod redis_server;
pub mod replica;
pub mod restore;
pub mod runtime;
pub mod ship;
pub mod show;
pub mod store;
pub mod timeline;
pub mod timespec;
pub mod verify;

/// Milliseconds since the Unix epoch, from the system clock. The one clock capture stamps with;
/// tests of the pure parts pass times in explicitly instead.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
