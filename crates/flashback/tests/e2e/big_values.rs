//! A value far larger than any buffer streams through capture and restore in bounded memory
//! (DESIGN: "a 512 MB value streams through"), byte-exact.
//!
//! A real `SET` of a 300 MB value and an `APPEND` of 100 MB are sent to the source while the
//! agent runs (both replicate as themselves, with their full argument: `SETRANGE` would
//! replicate as a few bytes and prove nothing). The agent must stay under [`AGENT_PEAK_MB`] of
//! peak RSS, and so must the restore process, which then rebuilds the dataset exactly (same
//! `DEBUG DIGEST` as the source).
//!
//! The bound: both processes need about 10 MB to run, the agent buffers a big command up to
//! `replica::STREAM_FROM` (8 MiB, in a buffer that may double to 16 MiB) and hands 4 MiB parts
//! to zstd (input + output + context ≈ 10 MB); restore holds one 4 MiB block, its decompressed
//! copy and a 256 KiB socket buffer. Measured: about 20 MB each. 80 MB leaves room for
//! allocator slack while staying below even the 100 MB value: holding either value whole
//! anywhere fails the test.

use crate::util::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT_PEAK_MB: u64 = 80;
const RESTORE_PEAK_MB: u64 = 80;

/// Sends `<cmd> <key> <value of len bytes>` without building the value in memory: the bytes
/// come from a cheap generator, 1 MiB per socket write.
fn send_big(port: u16, cmd: &str, key: &str, len: usize, seed: u64) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "*3\r\n${}\r\n{cmd}\r\n${}\r\n{key}\r\n${len}\r\n",
        cmd.len(),
        key.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut x = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        for w in chunk[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            w.copy_from_slice(&b[..w.len()]);
        }
        s.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    s.write_all(b"\r\n").unwrap();
    let mut reply = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut reply).unwrap();
    let reply = &reply[..n];
    assert!(
        reply.starts_with(b"+OK") || reply.starts_with(b":"),
        "{cmd} {key}: {}",
        String::from_utf8_lossy(reply)
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_300_mb_value_streams_through_capture_and_restore() {
    let started = Instant::now();
    // A primary drops a replica whose output buffer passes 256 MB (the default replica
    // client-output-buffer-limit), which one 300 MB command does: any source with values this
    // big needs the limit raised for its real replicas too.
    let src = RedisProc::start(&["--client-output-buffer-limit", "replica 0 0 0"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(src.port, &store, &[]);
    agent.wait_online(&src);
    let mut c = src.conn();
    c.call(&["SET", "small:before", "1"]);
    send_big(src.port, "SET", "big", 300 << 20, 7);
    c.call(&["SET", "small:between", "2"]);
    c.call(&["APPEND", "grow", "head:"]);
    send_big(src.port, "APPEND", "grow", 100 << 20, 11);
    c.call(&["SET", "small:after", "3"]);
    agent.wait_caught_up(&src);
    let agent_peak = peak_rss_mb(agent.pid()).expect("agent's /proc status");
    agent.stop();
    let log = agent.log_text();
    assert_eq!(
        log.matches("full resync").count(),
        1,
        "the agent resynced:\n{log}"
    );
    eprintln!(
        "agent peak RSS {agent_peak} MB after capturing 400 MB of values ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        agent_peak < AGENT_PEAK_MB,
        "the agent's peak RSS was {agent_peak} MB (bound {AGENT_PEAK_MB} MB): a big command was held whole"
    );

    // Restore, watching the restore process's own peak RSS (not its redis-server child's).
    let rdb = dir.path().join("restored.rdb");
    let mut child = die_with_parent(&mut Command::new(flashback_bin()))
        .arg("restore")
        .arg("--store")
        .arg(&store)
        .arg("--latest")
        .arg("--rdb")
        .arg(&rdb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut restore_peak = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(mb) = peak_rss_mb(pid) {
            restore_peak = restore_peak.max(mb);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "restore did not finish in 180 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "restore failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("restore peak RSS {restore_peak} MB");
    assert!(
        restore_peak < RESTORE_PEAK_MB,
        "the restore process's peak RSS was {restore_peak} MB (bound {RESTORE_PEAK_MB} MB)"
    );

    // The random values do not compress: the store holds them, in fragment blocks.
    let stored: u64 = walk(&store)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(stored > 400 << 20, "segments hold {stored} bytes");

    let restored = RedisProc::start_with_rdb(&rdb, &[]);
    let mut r = restored.conn();
    // The measure itself works: the server holding the values has a peak above them.
    let info = r.call(&["INFO", "server"]).text();
    let server_pid: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("process_id in INFO server");
    let server_peak = peak_rss_mb(server_pid).unwrap();
    eprintln!("(the restored redis-server's peak RSS: {server_peak} MB)");
    assert!(
        server_peak > 400,
        "VmHWM does not measure what this test thinks: {server_peak} MB"
    );
    assert_eq!(r.call(&["STRLEN", "big"]).int(), 300 << 20);
    assert_eq!(r.call(&["STRLEN", "grow"]).int(), 5 + (100 << 20));
    assert_eq!(r.call(&["DBSIZE"]).int(), 5);
    assert_eq!(
        r.call(&["DEBUG", "DIGEST"]).text(),
        c.call(&["DEBUG", "DIGEST"]).text(),
        "the restored dataset differs from the source"
    );
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}

/// kill -9 while a big command is half on disk: the restarted agent drops its fragments (they
/// were never acknowledged), resumes from the record before it, receives it again whole from
/// the backlog, and the restore is exact.
#[test]
fn kill_9_in_the_middle_of_a_big_command() {
    let src = RedisProc::start(&[
        "--client-output-buffer-limit",
        "replica 0 0 0",
        "--repl-backlog-size",
        "512mb",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(src.port, &store, &[]);
    agent.wait_online(&src);
    let mut c = src.conn();
    c.call(&["SET", "small:before", "1"]);
    agent.wait_caught_up(&src);
    let port = src.port;
    let sender = std::thread::spawn(move || send_big(port, "SET", "big", 200 << 20, 5));
    // Kill once some fragments are on disk, well before the command's end.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tail: u64 = walk(&store)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "tail"))
            .map(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        if tail > 20 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "no fragments reached the tail");
        std::thread::sleep(Duration::from_millis(1));
    }
    agent.kill9();
    sender.join().unwrap();
    c.call(&["SET", "small:after", "2"]);
    let mut agent = Agent::start(src.port, &store, &[]);
    agent.wait_caught_up(&src);
    agent.stop();
    let log = agent.log_text();
    // The scanner names the first damage it meets: the run of fragments without its final
    // one, or, when the kill tore the block being written, that torn block (the whole
    // fragments before it go with it: a record is kept whole or not at all).
    assert!(
        (log.contains("has no final fragment") || log.contains("after an interrupted write"))
            && log.contains("partial resync"),
        "expected a recovery that drops the fragments, then a partial resync:\n{log}"
    );
    assert_eq!(log.matches("full resync").count(), 1, "{log}");
    let rdb = dir.path().join("restored.rdb");
    let out = run_flashback(
        &[
            "restore".as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
            "--latest".as_ref(),
            "--rdb".as_ref(),
            rdb.as_os_str(),
        ],
        Duration::from_secs(180),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let restored = RedisProc::start_with_rdb(&rdb, &[]);
    assert_eq!(
        restored.conn().call(&["DEBUG", "DIGEST"]).text(),
        c.call(&["DEBUG", "DIGEST"]).text()
    );
}
