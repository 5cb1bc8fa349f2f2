//! Compaction end to end: a real redis-server captured by `flashback capture --segment-mib 1`,
//! `flashback compact`, then restores before and after the new base, digest-equal with the
//! source's state recorded at each instant.

use crate::util::*;
use std::path::Path;
use std::time::Duration;

/// About 1.3 MB of writes (so a 1 MiB segment seals), over several types, a transaction, a
/// key with a (long) TTL and a delete, all tagged with `phase`.
fn phase_writes(conn: &mut Conn, phase: &str) {
    bulk_sets(conn, phase);
    conn.call(&["HSET", "profile", phase, "1"]);
    conn.call(&["INCRBY", "counter", "7"]);
    conn.call(&["RPUSH", "events", phase]);
    conn.call(&["MULTI"]);
    conn.call(&["SET", &format!("{phase}:tx"), "a"]);
    conn.call(&["INCR", "counter"]);
    conn.call(&["EXEC"]);
    conn.call(&["SET", &format!("{phase}:ttl"), "x", "EX", "86400"]);
    conn.call(&["DEL", &format!("{phase}:k5")]);
}

/// Writes a phase, waits until the agent has it durably, and returns (instant, state).
fn phase(source: &RedisProc, agent: &mut Agent, name: &str) -> (u64, String) {
    let mut conn = source.conn();
    phase_writes(&mut conn, name);
    agent.wait_caught_up(source);
    let t = now_ms();
    let state = state(&mut conn);
    // The next write must arrive in a later millisecond than the instant recorded.
    std::thread::sleep(Duration::from_millis(5));
    (t, state)
}

fn flashback(args: &[&str]) -> Output {
    run_flashback(args, Duration::from_secs(300))
}

fn dry_run_base(store: &Path, at: u64) -> String {
    let s = store.to_str().unwrap();
    let out = flashback(&["restore", "--store", s, "--at", &at_arg(at), "--dry-run"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    out.stdout
        .lines()
        .find(|l| l.starts_with("base:"))
        .unwrap_or_else(|| panic!("no base line in the plan:\n{}", out.all()))
        .to_string()
}

#[test]
fn compaction_makes_a_base_that_restores_exactly_and_shortens_replay() {
    // No master PINGs: one landing between an instant and the agent's stop would move the cut.
    let source = RedisProc::start(&["--repl-ping-replica-period", "3600"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let mut agent = Agent::start(source.port, &store, &["--segment-mib", "1"]);
    agent.wait_online(&source);

    // Nothing sealed yet beyond the first writes: compaction has nothing to do.
    let out = flashback(&["compact", "--store", s, "--force"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("nothing to compact"), "{}", out.all());

    let (t_a, state_a) = phase(&source, &mut agent, "a");
    let (t_b, state_b) = phase(&source, &mut agent, "b");
    // Stop and restart the agent: the stop seals the tail, so the cut falls after all of b.
    agent.stop();
    let mut agent = Agent::start(source.port, &store, &["--segment-mib", "1"]);
    agent.wait_online(&source);

    // The defaults want 10 minutes of history since the newest base: skipped, saying why.
    let out = flashback(&["compact", "--store", s]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("nothing to compact") && out.stdout.contains("minimum"),
        "{}",
        out.all()
    );
    let out = flashback(&["compact", "--store", s, "--force"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.starts_with("new base "), "{}", out.all());
    let new_base_line = out.stdout.clone();
    // A second pass right away finds the newest base already at the latest sealed segment.
    let out = flashback(&["compact", "--store", s, "--force"]);
    assert!(
        out.code == Some(0) && out.stdout.contains("already covers"),
        "{}",
        out.all()
    );

    let (t_c, state_c) = phase(&source, &mut agent, "c");
    agent.stop();

    // Two bases now; the new one is named by the cut's offset and time.
    let gen = &generation_dirs(&store)[0];
    let mut bases: Vec<String> = std::fs::read_dir(gen.join("base"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rdb"))
        .collect();
    bases.sort();
    assert_eq!(bases.len(), 2, "{bases:?}");
    let new_offset = u64::from_str_radix(&bases[1][..16], 16).unwrap();
    assert!(
        new_base_line.contains(&format!("at offset {new_offset} ")),
        "{new_base_line}"
    );
    assert!(
        !std::fs::read_dir(gen.join("base")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial")),
        "no temporary object is left behind"
    );

    // Before the new base, the plan uses the first base; from it on, the new one.
    assert!(dry_run_base(&store, t_a).contains(&bases[0]));
    assert!(dry_run_base(&store, t_b).contains(&bases[1]));
    assert!(dry_run_base(&store, t_c).contains(&bases[1]));
    // At the new base's own instant the plan replays no segment at all.
    let out = flashback(&["restore", "--store", s, "--at", &at_arg(t_b), "--dry-run"]);
    assert!(!out.stdout.contains("segment:"), "{}", out.all());

    assert_eq!(
        restore_rdb(&store, &["--at", &at_arg(t_a)]),
        state_a,
        "at a"
    );
    assert_eq!(
        restore_rdb(&store, &["--at", &at_arg(t_b)]),
        state_b,
        "at b"
    );
    assert_eq!(
        restore_rdb(&store, &["--at", &at_arg(t_c)]),
        state_c,
        "at c"
    );
    // And the exact offset of the new base, the state the source had at the end of b.
    assert_eq!(
        restore_rdb(&store, &["--at-offset", &new_offset.to_string()]),
        state_b,
        "at the new base's offset"
    );
}

fn incompressible_sets(conn: &mut Conn, n: usize) {
    use rand::RngCore;
    let mut rng = rand::thread_rng();
    let cmds: Vec<Vec<Vec<u8>>> = (0..n)
        .map(|i| {
            let mut v = vec![0u8; 1000];
            rng.fill_bytes(&mut v);
            vec![b"SET".to_vec(), format!("noise:{i}").into_bytes(), v]
        })
        .collect();
    conn.pipeline(&cmds);
}

fn base_count(store: &Path) -> usize {
    generation_dirs(store)
        .iter()
        .filter_map(|g| std::fs::read_dir(g.join("base")).ok())
        .flatten()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".rdb"))
        })
        .count()
}

/// `flashback-*` directories in `tmp` (private redis-servers and compaction work dirs).
fn work_dirs(tmp: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("flashback-"))
        })
        .collect()
}

/// kill -9 of the agent in the middle of its own compaction (`--base-every`): the private
/// redis-server it was rebuilding in dies with it (PR_SET_PDEATHSIG) and its work directories
/// stay. The next agent sweeps the directories, compacts again, and every instant still
/// restores exactly.
#[test]
fn agent_killed_mid_compaction_leaves_nothing_behind() {
    let source = RedisProc::start(&["--repl-ping-replica-period", "3600"]);
    // A dataset that takes a moment to rebuild, so the kill lands mid-compaction.
    source
        .conn()
        .call(&["DEBUG", "POPULATE", "300000", "pop", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let log = dir.path().join("agent.log");
    let start = || {
        Agent::start_env(
            &source.url(),
            source.port,
            store.to_str().unwrap(),
            &log,
            &[
                "--segment-mib",
                "1",
                "--base-every",
                "2s",
                "--base-every-mib",
                "1",
            ],
            &[("TMPDIR", tmp.to_str().unwrap())],
        )
    };
    let mut agent = start();
    agent.wait_online(&source);
    let (t_a, state_a) = phase(&source, &mut agent, "a");
    // Values zstd cannot shrink, so a 1 MiB segment seals and there is log to compact.
    incompressible_sets(&mut source.conn(), 1500);

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Mid-compaction: once the private server that rebuilds the state is running.
    let rebuilding = |tmp: &Path| work_dirs(tmp).iter().any(|d| d.join("server.pid").exists());
    let mut wrote = std::time::Instant::now();
    while !rebuilding(&tmp) {
        agent.assert_alive("waiting for its compaction to start");
        // More log now and then, in case the first did not seal enough to trigger it.
        if wrote.elapsed() > Duration::from_secs(2) {
            incompressible_sets(&mut source.conn(), 500);
            wrote = std::time::Instant::now();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction within 60 s:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    agent.signal_and_wait(libc::SIGKILL);
    assert_eq!(
        base_count(&store),
        1,
        "the kill must land before the new base is stored"
    );
    let left = work_dirs(&tmp);
    let orphan: Option<u32> = left
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("server.pid")).ok())
        .and_then(|p| p.trim().parse().ok());
    let orphan = orphan.unwrap_or_else(|| {
        panic!(
            "the kill left no private redis-server behind (did it land mid-compaction?): {left:?}"
        )
    });
    // Zombie or gone: either way no longer running.
    let running = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    // The kernel kills it with the agent (PR_SET_PDEATHSIG): it must not outlive it.
    let gone_by = std::time::Instant::now() + Duration::from_secs(10);
    while running(orphan) {
        assert!(
            std::time::Instant::now() < gone_by,
            "the private server {orphan} outlived the agent killed with -9"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let logged = agent.log_text().len();
    let mut agent = start();
    agent.wait_online(&source);
    let (t_b, state_b) = phase(&source, &mut agent, "b");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while base_count(&store) < 2 {
        agent.assert_alive("waiting for the new base");
        assert!(
            std::time::Instant::now() < deadline,
            "no new base within 90 s:\n{}",
            &agent.log_text()[logged..]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.stop();
    let after = &agent.log_text()[logged..];
    // What the kill -9 left (the dead server's directory) is swept by the restarted agent.
    for d in &left {
        assert!(
            after.contains(&format!("removed {}", d.display())),
            "{after}"
        );
    }
    assert!(!running(orphan), "the orphaned server {orphan} still runs");
    for d in &left {
        assert!(!d.exists(), "{} was not removed", d.display());
    }
    assert!(work_dirs(&tmp).is_empty(), "{:?}", work_dirs(&tmp));

    assert_eq!(
        restore_rdb(&store, &["--at", &at_arg(t_a)]),
        state_a,
        "at a"
    );
    assert_eq!(
        restore_rdb(&store, &["--at", &at_arg(t_b)]),
        state_b,
        "at b"
    );
    let s = store.to_str().unwrap();
    let out = flashback(&["verify", "--store", s, "--no-drill"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
}
