//! Damage in an open tail is never mistaken for a torn write (DESIGN.md, issue 8): a flipped
//! byte in a middle block of the tail a kill -9 left is reported by verify, info and restore by
//! file and byte, the instants before it still restore exactly, and the restarted agent names
//! the acknowledged offsets and fetches them again (or, when the backlog no longer holds them,
//! starts a new generation whose reason names them as lost). A flip in the last block is the
//! torn write it looks like. Real redis-server processes throughout.

use crate::util::*;
use flashback_format::segment::{BlockInfo, Sealed, SegmentReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The one open tail a killed agent left in `store`.
fn the_tail(store: &Path) -> PathBuf {
    let mut tails = Vec::new();
    for g in generation_dirs(store) {
        for e in std::fs::read_dir(g.join("segments")).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "tail") {
                tails.push(e.path());
            }
        }
    }
    assert_eq!(tails.len(), 1, "expected one open tail: {tails:?}");
    tails.pop().unwrap()
}

fn blocks_of(tail: &Path) -> Vec<BlockInfo> {
    let bytes = std::fs::read(tail).unwrap();
    let mut r = SegmentReader::new("tail", &bytes[..], bytes.len() as u64, Sealed::No);
    while r.next_block().unwrap().is_some() {}
    r.scanner().blocks().to_vec()
}

fn flip(tail: &Path, at: u64) {
    let mut bytes = std::fs::read(tail).unwrap();
    bytes[at as usize] ^= 0x20;
    std::fs::write(tail, bytes).unwrap();
}

fn flashback(args: &[&str]) -> Output {
    run_flashback(args, Duration::from_secs(120))
}

/// Captures `rounds` separate batches of writes (each its own block: the agent writes a block
/// for what it acknowledges), recording the source's state after each, then kills the agent.
fn capture_then_kill(
    primary: &RedisProc,
    store: &Path,
    rounds: usize,
) -> (Agent, Vec<RecordedPoint>) {
    let mut agent = Agent::start(primary.port, store, &[]);
    agent.wait_online(primary);
    let mut conn = primary.conn();
    let mut points = Vec::new();
    for r in 0..rounds {
        for i in 0..20 {
            let v = format!("round{r}-{}", "x".repeat(50 + i));
            assert!(!conn.call(&["SET", &format!("k{r}:{i}"), &v]).is_error());
        }
        conn.call(&["HSET", "h", &format!("f{r}"), "v"]);
        points.push(record_point(
            &mut conn,
            primary,
            &mut agent,
            &format!("round{r}"),
        ));
        std::thread::sleep(Duration::from_millis(30));
    }
    agent.kill9();
    wait_no_replicas(primary);
    (agent, points)
}

#[test]
fn a_flipped_byte_in_a_middle_block_is_damage_named_everywhere_and_refetched() {
    let primary = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_s = store.to_str().unwrap();
    let (_, points) = capture_then_kill(&primary, &store, 8);
    let tail = the_tail(&store);
    let tail_name = tail.file_name().unwrap().to_str().unwrap().to_string();
    let blocks: Vec<BlockInfo> = blocks_of(&tail);
    let with_records: Vec<&BlockInfo> = blocks.iter().filter(|b| b.record_count > 0).collect();
    assert!(with_records.len() >= 5, "{blocks:?}");
    let bad = with_records[with_records.len() / 2].clone();
    let before = blocks.iter().rfind(|b| b.file_pos < bad.file_pos).unwrap();
    let bad_byte = bad.file_pos + 68 + 2;
    flip(&tail, bad_byte);
    let byte = format!("byte {}", bad.file_pos);

    // verify: exit 1, the file and the byte, and how far restore still reaches.
    let out = flashback(&["verify", "--store", store_s]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let all = out.all();
    eprintln!("verify:\n{all}");
    assert!(all.contains(&tail_name) && all.contains(&byte), "{all}");
    assert!(all.contains("still restore"), "{all}");
    assert!(!all.contains("[torn]"), "damage reported as torn:\n{all}");

    // info names it, and does not call it torn.
    let info = info_json(&store);
    let text = info.to_string();
    assert!(
        text.contains("damaged_tail") && text.contains(&byte),
        "{text}"
    );
    let out = flashback(&["info", "--store", store_s]);
    assert!(
        out.stdout.contains("DAMAGED") && out.stdout.contains(&byte),
        "{}",
        out.all()
    );
    assert!(!out.stdout.contains("partly written"), "{}", out.all());

    // restore --latest: exit 1 naming file, byte, and the last restorable instant.
    let out = flashback(&["restore", "--store", store_s, "--latest", "--dry-run"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let e = one_error_line(&out);
    eprintln!("restore --latest: {e}");
    assert!(
        e.contains(&tail_name) && e.contains(&byte) && e.contains("restore reaches up to"),
        "{e}"
    );
    // An instant after the damage: the same.
    let last = points.last().unwrap();
    let out = flashback(&[
        "restore",
        "--store",
        store_s,
        "--at",
        &at_arg(last.t_ms),
        "--dry-run",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(one_error_line(&out).contains(&byte), "{}", out.all());

    // Instants before the damage restore exactly: by offset up to the block before it, by
    // time up to what that block covers.
    let mut restored = 0;
    for p in &points {
        if p.offset <= before.end_offset {
            if let Some(m) = restore_mismatch(
                store_s,
                &[],
                &p.label,
                &p.state,
                &["--at-offset", &p.offset.to_string()],
            ) {
                panic!("{m}");
            }
            restored += 1;
        }
        if p.offset <= before.end_offset && p.t_ms <= before.covered_through_ms {
            if let Some(m) =
                restore_mismatch(store_s, &[], &p.label, &p.state, &["--at", &at_arg(p.t_ms)])
            {
                panic!("{m}");
            }
        }
    }
    assert!(restored >= 2, "only {restored} points before the damage");

    // The agent restarts: it says what was damaged, keeps a copy, and fetches the range again.
    let mut agent = Agent::start(primary.port, &store, &[]);
    agent.wait_online(&primary);
    agent.wait_caught_up(&primary);
    let log = agent.log_text();
    let want = format!(
        "were damaged on disk after being acknowledged; re-fetching them from the primary by PSYNC from offset {}",
        before.end_offset
    );
    eprintln!("agent log:\n{log}");
    assert!(log.contains(&want) && log.contains(&byte), "{log}");
    assert!(log.contains("ERROR"), "{log}");
    assert!(
        !log.contains("interrupted write that was never acknowledged"),
        "{log}"
    );
    let kept: Vec<_> = std::fs::read_dir(tail.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".damaged"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged tail is kept for forensics");
    let mut conn = primary.conn();
    conn.call(&["SET", "after", "restart"]);
    agent.wait_caught_up(&primary);
    let want = state(&mut conn);
    agent.stop();
    assert_eq!(restore_rdb(&store, &["--latest"]), want);
    let out = flashback(&["verify", "--store", store_s]);
    assert_eq!(out.code, Some(0), "{}", out.all());
}

#[test]
fn a_flipped_byte_in_the_last_block_is_still_a_torn_write() {
    let primary = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_s = store.to_str().unwrap();
    let (_, points) = capture_then_kill(&primary, &store, 4);
    let tail = the_tail(&store);
    let blocks = blocks_of(&tail);
    let last = blocks.last().unwrap().clone();
    assert!(last.record_count > 0 || last.len == 68, "{last:?}");
    // A heartbeat has no payload: flip its checksum instead.
    let at = if last.len > 68 {
        last.file_pos + 70
    } else {
        last.file_pos + 65
    };
    flip(&tail, at);
    let info = info_json(&store);
    assert!(!info.to_string().contains("damaged_tail"), "{info}");
    let out = flashback(&["verify", "--store", store_s]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.all().contains("torn"), "{}", out.all());
    // The prefix restores; the restarted agent drops the torn block and fetches it again.
    let p = points
        .iter()
        .rfind(|p| p.offset <= last.start_offset)
        .unwrap();
    if let Some(m) = restore_mismatch(
        store_s,
        &[],
        &p.label,
        &p.state,
        &["--at-offset", &p.offset.to_string()],
    ) {
        panic!("{m}");
    }
    let mut agent = Agent::start(primary.port, &store, &[]);
    agent.wait_online(&primary);
    agent.wait_caught_up(&primary);
    let log = agent.log_text();
    assert!(log.contains("interrupted write"), "{log}");
    assert!(!log.contains("damaged on disk"), "{log}");
    let want = state(&mut primary.conn());
    agent.stop();
    assert_eq!(restore_rdb(&store, &["--latest"]), want);
}

#[test]
fn damage_the_backlog_no_longer_holds_starts_a_generation_naming_the_lost_offsets() {
    let primary = RedisProc::start(&["--repl-backlog-size", "16kb"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (_, _) = capture_then_kill(&primary, &store, 6);
    let tail = the_tail(&store);
    let blocks = blocks_of(&tail);
    let with_records: Vec<&BlockInfo> = blocks.iter().filter(|b| b.record_count > 0).collect();
    let bad = with_records[with_records.len() / 2].clone();
    let good_end = blocks
        .iter()
        .rfind(|b| b.file_pos < bad.file_pos)
        .unwrap()
        .end_offset;
    flip(&tail, bad.file_pos + 68 + 2);
    // The backlog moves on past the damaged range while the agent is down.
    bulk_sets(&mut primary.conn(), "away");
    let mut agent = Agent::start(primary.port, &store, &[]);
    agent.wait_online(&primary);
    agent.wait_caught_up(&primary);
    let want = state(&mut primary.conn());
    agent.stop();
    let log = agent.log_text();
    assert!(
        log.contains("are lost: the primary answered FULLRESYNC"),
        "{log}"
    );
    let info = info_json(&store);
    let gens = info["sources"][0]["generations"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(gens.len(), 2, "{info}");
    let reason = gens[1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "LOST: the records at replication offsets {good_end}.."
        )) && reason.contains(&format!("byte {}", bad.file_pos)),
        "{reason}"
    );
    assert_eq!(restore_rdb(&store, &["--latest"]), want);
}
