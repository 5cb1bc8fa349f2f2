//! The restore drill: a real restore (plan + engine) into a private redis-server, timed from the
//! plan to a server answering with the whole dataset: the recovery time measured, not estimated.

use super::*;
use crate::client::Client;
use crate::progress::{Phase, Unit};
use crate::redis_server::{RedisServer, ServerBinary, ServerOptions};
use crate::restore::{self, engine, RestoreError, Target};
use crate::store::layout;
use crate::store::Store;
use crate::timespec::format_rfc3339_ms;
use flashback_format::Error as FormatError;
use std::time::Instant;

/// Restores `target` into a private server and measures it. Any failure is one problem.
pub(super) async fn run_drill(
    store: &Store,
    source: &str,
    d: &DrillOptions,
    side: Option<&against::SourceSide>,
) -> Result<Drill, Problem> {
    // Under a live agent an open tail can be sealed between the plan and the read, which
    // restore reports as an error on the tail. That is a race, not damage: plan again.
    let mut tries = 0;
    loop {
        tries += 1;
        match drill_once(store, source, d, side).await {
            Err(p) if tries < 3 && p.key.ends_with(".tail") => continue,
            r => return r,
        }
    }
}

pub(super) async fn drill_once(
    store: &Store,
    source: &str,
    d: &DrillOptions,
    side: Option<&against::SourceSide>,
) -> Result<Drill, Problem> {
    let started = Instant::now();
    let progress = &d.progress;
    let first_phase = progress.phases().len();
    progress.begin(Phase::Plan, Unit::Bytes, None);
    let fail = |e: RestoreError| drill_problem(source, e);
    let target = match side {
        Some(s) => Target::AtOffset(s.offset),
        None => d.target,
    };
    let plan = restore::plan(store, source, target).await.map_err(fail)?;
    progress.end();
    let binary = ServerBinary::find(d.redis_server.as_deref()).map_err(|e| fail(e.into()))?;
    let version = engine::check_base_version(store, &plan, &binary)
        .await
        .map_err(fail)?;
    // The engine's own server, used directly rather than through a restore sink: the drill
    // only looks at the result, and every sink moves it somewhere or leaves it running.
    let server = RedisServer::start(&binary, ServerOptions::default())
        .await
        .map_err(|e| fail(e.into()))?;
    let applied = engine::replay_observed(store, &plan, &server, version, None, progress)
        .await
        .map_err(fail)?;
    // The recovery time: from the plan to a promoted server holding the whole dataset. What
    // follows checks the result and is not part of a restore.
    let rto_ms = started.elapsed().as_millis() as u64;
    progress.begin(Phase::Verify, Unit::Keys, None);
    let (dbs, digest) = dataset(&server).await.map_err(fail)?;
    // The log read a second time, independently of the engine, for the sample it dictates.
    let table = crate::store::commands::command_table(store, source, &plan.generation).await;
    let mut sample = sample::LogSample::new(table, crate::now_ms());
    restore::reader::read_records(store, &plan, &mut sample)
        .await
        .map_err(fail)?;
    let mut c = server.client().await.map_err(|e| fail(e.into()))?;
    let log_sample = (!sample.spoiled).then_some(sample.check(&mut c).await.map_err(fail)?);
    let against_source = match (side, &d.against) {
        (Some(side), Some(o)) => {
            let mut c = server.client().await.map_err(|e| fail(e.into()))?;
            let keys = dbs.iter().map(|d| d.keys).sum();
            Some(
                against::compare(side, &o.url, &mut c, &digest, keys)
                    .await
                    .map_err(fail)?,
            )
        }
        _ => None,
    };
    progress.end();
    if applied.replica_errors > 0 {
        return Err(Problem {
            key: plan.base_key.to_string(),
            offset: None,
            kind: Kind::Drill,
            message: format!(
                "{} commands failed on the restore server; first: {}",
                applied.replica_errors,
                applied.first_errors.first().map_or("?", |s| s.as_str())
            ),
            impact: "the restored dataset may differ from the source's".into(),
            restorable_through_ms: None,
        });
    }
    let at_ms = match target {
        Target::At(t) => t,
        // The arrival of the last record restored.
        Target::AtOffset(_) => plan.stop_time_ms.unwrap_or(plan.window.to_ms),
        _ => plan.window.to_ms,
    };
    Ok(Drill {
        generation: plan.generation.clone(),
        at_ms,
        at: format_rfc3339_ms(at_ms),
        stop_offset: plan.stop_offset,
        rto_ms,
        keys: dbs.iter().map(|d| d.keys).sum(),
        dbs,
        digest,
        records: applied.records_applied,
        server: binary.to_string(),
        phases: progress
            .phases()
            .get(first_phase..)
            .unwrap_or_default()
            .to_vec(),
        against_source,
        log_sample,
    })
}

/// DBSIZE of every db that holds keys, and DEBUG DIGEST.
pub(super) async fn dataset(server: &RedisServer) -> Result<(Vec<DbKeys>, String), RestoreError> {
    let mut c: Client = server.client().await?;
    let mut dbs = Vec::new();
    let info = c.info("keyspace").await?;
    let mut numbers: Vec<u32> = info
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("db")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    for db in numbers {
        c.ok(&["SELECT", &db.to_string()]).await?;
        let n = c.ok(&["DBSIZE"]).await?.text();
        let keys = n.parse().map_err(|_| {
            RestoreError::engine(server, format!("DBSIZE answered {n:?}, not a number"))
        })?;
        dbs.push(DbKeys { db, keys });
    }
    let digest = c.ok(&["DEBUG", "DIGEST"]).await?.text();
    Ok((dbs, digest))
}

pub(super) fn drill_problem(source: &str, e: RestoreError) -> Problem {
    let (key, offset) = match &e {
        RestoreError::Log { key, .. } => (key.clone(), None),
        RestoreError::Format(FormatError::Corrupt { file, offset, .. }) => {
            (file.clone(), Some(*offset))
        }
        _ => (layout::source_prefix(source).to_string(), None),
    };
    let text = e.to_string();
    let what = text.strip_prefix(&format!("{key}: ")).unwrap_or(&text);
    // One line per problem: multi-line errors (the windows of an --at outside them, a server
    // log's tail) are joined.
    let what = what
        .lines()
        .map(|l| l.trim().trim_end_matches(':'))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Problem {
        message: format!("the restore drill failed: {what}"),
        key,
        offset,
        kind: Kind::Drill,
        impact: "a restore of this instant fails the same way".into(),
        restorable_through_ms: None,
    }
}
