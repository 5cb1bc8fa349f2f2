//! "The window is evidence, never hope" (DESIGN.md) against real servers: a link that goes
//! silent with its sockets open while the primary goes on writing, and a primary restarted
//! empty on the same port. In both, a restore by time must either equal the source's state at
//! that time or exit 1; it never returns a state the source did not have.

#[path = "../util/tcp_proxy.rs"]
mod tcp_proxy;

use crate::util::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tcp_proxy::TcpProxy;

/// The source's state at a known instant (nothing is written between the two reads).
struct Sample {
    t_ms: u64,
    offset: u64,
    state: String,
}

fn sample(c: &mut Conn) -> Sample {
    let t_ms = now_ms();
    let offset = parse_info(&c.call(&["INFO", "replication"]).text()).master_offset;
    let state = state(c);
    std::thread::sleep(Duration::from_millis(5));
    Sample {
        t_ms,
        offset,
        state,
    }
}

fn writes(c: &mut Conn, tag: &str, n: usize) {
    for i in 0..n {
        c.call(&[
            b"SET".as_ref(),
            format!("{tag}:{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        ]);
    }
    c.call(&["MULTI"]);
    c.call(&["INCR", "counter"]);
    c.call(&[b"RPUSH".as_ref(), b"log", tag.as_bytes()]);
    c.call(&["EXEC"]);
}

fn restore_at(store: &std::path::Path, args: &[&str]) -> Output {
    let rdb = store.with_extension(format!("r{}.rdb", now_ms()));
    let mut argv: Vec<std::ffi::OsString> = vec!["restore".into(), "--store".into(), store.into()];
    argv.extend(args.iter().map(Into::into));
    argv.extend(["--rdb".into(), rdb.clone().into()]);
    let out = run_flashback(&argv, Duration::from_secs(120));
    if out.code == Some(0) {
        let r = RedisProc::start_with_rdb(&rdb, &[]);
        let got = state(&mut r.conn());
        let _ = std::fs::remove_file(&rdb);
        return Output { stdout: got, ..out };
    }
    out
}

/// Every sample restored by time equals the source then, or is refused (exit 1).
fn never_a_state_the_source_did_not_have(store: &std::path::Path, samples: &[Sample]) -> usize {
    let mut refused = 0;
    for s in samples {
        let out = restore_at(store, &["--at", &at_arg(s.t_ms)]);
        match out.code {
            Some(0) => assert_eq!(
                out.stdout, s.state,
                "restore --at {} returned a state the source did not have then",
                s.t_ms
            ),
            Some(1) => refused += 1,
            other => panic!("restore --at {}: exit {other:?}\n{}", s.t_ms, out.all()),
        }
    }
    refused
}

#[test]
fn a_silent_link_is_an_uncertain_interval_not_part_of_the_window() {
    let src = RedisProc::start(&["--repl-backlog-size", "16mb"]);
    let proxy = TcpProxy::start(src.port);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start_url(&proxy.url(), src.port, &store, &[]);
    agent.wait_online(&src);
    let mut c = src.conn();
    let mut samples = vec![];
    writes(&mut c, "before", 200);
    agent.wait_caught_up(&src);
    std::thread::sleep(Duration::from_millis(300));
    samples.push(sample(&mut c));
    let before = samples.len() - 1;
    // Evidence comes every 100 ms: let one poll vouch for the sample before the silence.
    std::thread::sleep(Duration::from_millis(400));

    // The link (and the agent's poll, which goes the same way) goes silent, sockets open; the
    // primary goes on writing.
    proxy.pause();
    let paused_at = now_ms();
    let mut inside = vec![];
    for round in 0..6 {
        writes(&mut c, &format!("silent{round}"), 50);
        std::thread::sleep(Duration::from_millis(400));
        inside.push(sample(&mut c));
    }
    // While it is silent the window must not grow on heartbeats.
    let info = info_json(&store);
    let end = info["sources"][0]["windows"]
        .as_array()
        .and_then(|w| w.last())
        .and_then(|w| w["to_ms"].as_u64())
        .expect("a window");
    assert!(
        end <= paused_at + 150,
        "the window grew to {end} while the link was silent since {paused_at}"
    );
    proxy.resume();
    agent.wait_caught_up(&src);
    writes(&mut c, "after", 100);
    agent.wait_caught_up(&src);
    std::thread::sleep(Duration::from_millis(1500));
    samples.push(sample(&mut c));
    agent.stop();
    let log = agent.log_text();
    assert!(
        log.contains("restore by time is not exact from"),
        "the agent names the interval:\n{log}"
    );

    // Inside the silence: refused, naming the interval and the exact offsets.
    let mid = &inside[2];
    let out = restore_at(&store, &["--at", &at_arg(mid.t_ms)]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = one_error_line(&out);
    assert!(
        line.contains("uncertain interval")
            && line.contains("--at-offset")
            && line.contains("--inexact"),
        "{line}"
    );
    // --at-offset stays exact inside it; --inexact proceeds, loudly.
    let out = restore_at(&store, &["--at-offset", &mid.offset.to_string()]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(out.stdout, mid.state);
    let out = restore_at(&store, &["--at", &at_arg(mid.t_ms), "--inexact"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    // The exact instants on both sides restore exactly; every one inside is refused.
    let refused = never_a_state_the_source_did_not_have(&store, &samples);
    assert_eq!(refused, 0, "before and after the silence are exact");
    assert_eq!(
        samples[before].state,
        restore_at(&store, &["--at", &at_arg(samples[before].t_ms)]).stdout
    );
    assert_eq!(
        never_a_state_the_source_did_not_have(&store, &inside),
        inside.len(),
        "every instant inside the silence is refused"
    );
    // `info` lists the interval.
    let info = info_json(&store);
    let uncertain = info["sources"][0]["uncertain"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        uncertain.iter().any(|u| {
            u["from_ms"].as_u64().is_some_and(|f| f <= paused_at + 150)
                && u["to_ms"].as_u64().is_some_and(|t| t >= inside[5].t_ms)
        }),
        "info --json lists the silence: {uncertain:?}"
    );
}

/// A redis-server on a fixed port, for restarting "the same primary".
struct Fixed {
    child: Child,
    port: u16,
}

impl Fixed {
    fn start(port: u16, dir: &std::path::Path) -> Fixed {
        let mut cmd = Command::new(redis_server_bin());
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--enable-debug-command", "local"])
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // Owned by the guard at once, so a failed start still kills and reaps it.
        let fixed = Fixed {
            child: die_with_parent(&mut cmd).spawn().unwrap(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Conn::connect(port) {
                if matches!(c.try_call(&["PING"]), Ok(Reply::Status(s)) if s == b"PONG") {
                    return fixed;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn conn(&self) -> Conn {
        Conn::connect(self.port).unwrap()
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_primary_restarted_empty_ends_its_generation_at_its_last_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = Fixed::start(port, dir.path());
    let store = dir.path().join("store");
    let mut agent = Agent::start(port, &store, &[]);
    let mut c = first.conn();
    let online = Instant::now() + Duration::from_secs(30);
    while !parse_info(&c.call(&["INFO", "replication"]).text())
        .slaves
        .iter()
        .any(|(s, _)| s == "online")
    {
        assert!(Instant::now() < online, "agent never online");
        std::thread::sleep(Duration::from_millis(20));
    }
    writes(&mut c, "old", 200);
    std::thread::sleep(Duration::from_millis(1500));
    let old = sample(&mut c);
    std::thread::sleep(Duration::from_millis(400));
    // SHUTDOWN NOSAVE closes the connection without a reply.
    let _ = c.try_call(&["SHUTDOWN", "NOSAVE"]);
    let mut first = first;
    let _ = first.child.wait();
    let down_at = now_ms();
    std::thread::sleep(Duration::from_millis(2500));
    let gap = sample_time_only();
    std::thread::sleep(Duration::from_millis(500));
    let second = Fixed::start(port, dir.path());
    let up_at = now_ms();
    let mut c = second.conn();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = info_json(&store);
        if json_generation_count(&info) == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no second generation:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    writes(&mut c, "new", 100);
    std::thread::sleep(Duration::from_millis(1500));
    let new = sample(&mut c);
    agent.stop();

    let info = info_json(&store);
    let windows = info["sources"][0]["windows"].as_array().cloned().unwrap();
    assert_eq!(windows.len(), 2, "{windows:?}");
    let (w1_to, w2_from) = (
        windows[0]["to_ms"].as_u64().unwrap(),
        windows[1]["from_ms"].as_u64().unwrap(),
    );
    assert!(
        w1_to <= down_at,
        "the old generation runs to {w1_to}, after the primary went down at {down_at}"
    );
    assert!(
        w2_from >= up_at,
        "the new generation starts at {w2_from}, before the primary came back at {up_at}"
    );
    // In between, the primary was down, then empty: no restore by time may claim it.
    let out = restore_at(&store, &["--at", &at_arg(gap)]);
    assert_eq!(out.code, Some(1), "a time in the gap: {}", out.all());
    let out = run_flashback(
        &[
            "verify".as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
            "--at".as_ref(),
            at_arg(gap).as_ref(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        out.code,
        Some(1),
        "verify --at a time in the gap: {}",
        out.all()
    );
    let text = run_flashback(
        &["info".as_ref(), "--store".as_ref(), store.as_os_str()],
        Duration::from_secs(30),
    );
    assert!(!text.stdout.contains("gap of 0ms"), "{}", text.stdout);
    assert_eq!(
        never_a_state_the_source_did_not_have(&store, &[old, new]),
        0
    );
}

fn sample_time_only() -> u64 {
    now_ms()
}
