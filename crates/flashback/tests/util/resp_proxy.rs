//! A recording RESP proxy between the agent and its primary (tests/e2e/power_loss.rs): bytes are
//! relayed unchanged both ways; what the agent sends is parsed, and every `REPLCONF ACK <n>` is
//! recorded with its time, after it was relayed (so the primary has seen every recorded ACK).
//!
//! It can also SIGKILL a process at a chosen moment of the link, from the relaying thread, so
//! no scheduling delay of the test thread lets the agent get further: right after the k-th ACK,
//! or once k bytes of a full resync's snapshot went to the agent.
//!
//! The agent→primary side is parsed rather than pattern-matched on "ACK": a value of a write
//! never passes this way, but a handshake argument could, and a wrong offset would go unseen.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGKILL `pid` right after relaying its `n`-th ACK (counted from the arming).
    AfterAcks { pid: u32, n: usize },
    /// SIGKILL `pid` once `bytes` of the snapshot after `+FULLRESYNC` were relayed to it.
    RdbBytes { pid: u32, bytes: u64 },
}

#[derive(Default)]
struct State {
    acks: Vec<(u64, Instant)>,
    trigger: Option<Trigger>,
    acks_since_armed: usize,
    fired: Option<Trigger>,
    fullresyncs: usize,
}

pub struct RespProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl RespProxy {
    pub fn start(upstream: u16) -> RespProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let (d2, u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                let (s1, s2) = (st.clone(), st.clone());
                std::thread::spawn(move || agent_to_primary(down, up, &s1));
                std::thread::spawn(move || primary_to_agent(u2, d2, &s2));
            }
        });
        RespProxy { port, state }
    }

    /// Every ACK offset the agent sent, in order, with when it was relayed.
    pub fn acks(&self) -> Vec<(u64, Instant)> {
        self.state.lock().unwrap().acks.clone()
    }

    pub fn max_ack(&self) -> Option<u64> {
        self.state.lock().unwrap().acks.iter().map(|a| a.0).max()
    }

    pub fn arm(&self, t: Trigger) {
        let mut s = self.state.lock().unwrap();
        s.trigger = Some(t);
        s.acks_since_armed = 0;
        s.fired = None;
    }

    /// The trigger that fired since the last [`RespProxy::arm`], if any.
    pub fn fired(&self) -> Option<Trigger> {
        self.state.lock().unwrap().fired
    }

    pub fn fullresyncs(&self) -> usize {
        self.state.lock().unwrap().fullresyncs
    }
}

#[allow(unsafe_code)] // raw signals to a child process (libc), as the test needs them
fn fire(s: &mut State, t: Trigger) {
    let pid = match t {
        Trigger::AfterAcks { pid, .. } | Trigger::RdbBytes { pid, .. } => pid,
    };
    // SAFETY: kill(2) with a pid the test spawned and has not reaped (it reaps after this).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    s.fired = Some(t);
    s.trigger = None;
}

fn agent_to_primary(mut from: TcpStream, mut to: TcpStream, st: &Mutex<State>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some((argv, used)) = parse_command(&pending) {
            pending.drain(..used);
            let is_ack = argv.len() >= 3
                && argv[0].eq_ignore_ascii_case(b"REPLCONF")
                && argv[1].eq_ignore_ascii_case(b"ACK");
            if !is_ack {
                continue;
            }
            let off: u64 = std::str::from_utf8(&argv[2])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("REPLCONF ACK with a bad offset: {:?}", argv[2]));
            let mut s = st.lock().unwrap();
            s.acks.push((off, Instant::now()));
            s.acks_since_armed += 1;
            if let Some(t @ Trigger::AfterAcks { n, .. }) = s.trigger {
                if s.acks_since_armed >= n {
                    fire(&mut s, t);
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn primary_to_agent(mut from: TcpStream, mut to: TcpStream, st: &Mutex<State>) {
    let mut buf = vec![0u8; 64 * 1024];
    // The first line of a reply carrying "+FULLRESYNC" starts the count of snapshot bytes.
    let mut head: Vec<u8> = Vec::new();
    let mut rdb_bytes: Option<u64> = None;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Relay in slices so a byte-count trigger lands inside the snapshot, not after it.
        for chunk in buf[..n].chunks(16 * 1024) {
            if to.write_all(chunk).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            if rdb_bytes.is_none() && head.len() < 4096 {
                head.extend_from_slice(chunk);
                if let Some(p) = find(&head, b"+FULLRESYNC") {
                    let after = head.len() - p;
                    rdb_bytes = Some(after as u64);
                    st.lock().unwrap().fullresyncs += 1;
                }
                continue;
            }
            if let Some(b) = rdb_bytes.as_mut() {
                *b += chunk.len() as u64;
                let mut s = st.lock().unwrap();
                if let Some(t @ Trigger::RdbBytes { bytes, .. }) = s.trigger {
                    if *b >= bytes {
                        fire(&mut s, t);
                    }
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One command from the front of `buf`: a RESP array of bulk strings, or an inline line.
fn parse_command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    let line_end = |from: usize| find(&buf[from..], b"\r\n").map(|p| from + p);
    if buf.is_empty() {
        return None;
    }
    if buf[0] != b'*' {
        let e = line_end(0)?;
        let argv = buf[..e]
            .split(|b| *b == b' ')
            .filter(|a| !a.is_empty())
            .map(|a| a.to_vec())
            .collect();
        return Some((argv, e + 2));
    }
    let e = line_end(0)?;
    let n: usize = std::str::from_utf8(&buf[1..e]).ok()?.parse().ok()?;
    let mut at = e + 2;
    let mut argv = Vec::with_capacity(n);
    for _ in 0..n {
        if buf.get(at) != Some(&b'$') {
            return None;
        }
        let e = line_end(at)?;
        let len: usize = std::str::from_utf8(&buf[at + 1..e]).ok()?.parse().ok()?;
        let start = e + 2;
        if buf.len() < start + len + 2 {
            return None;
        }
        argv.push(buf[start..start + len].to_vec());
        at = start + len + 2;
    }
    Some((argv, at))
}
