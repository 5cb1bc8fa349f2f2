//! A fault-injecting HTTP/1.1 proxy for the object-store tests: it sits between the agent (or
//! any `flashback` command) and the S3 test server on 127.0.0.1 and can pass traffic through,
//! drop every connection (the store is down), accept and never answer (timeouts), or answer
//! `500 Internal Server Error` to a random share of requests.
//!
//! It parses each request (request line, headers, a `Content-Length` or chunked body) instead of
//! copying bytes blindly, because a 500 must replace exactly one whole request: answering in the
//! middle of a body, or after part of a response, would test the HTTP client's framing rather
//! than the uploader's retries. One exchange per client connection, always answered with
//! `Connection: close`, so no pooled connection can carry a request across a mode change.
//!
//! Plain std threads and blocking sockets: the tests' harness is synchronous, and a proxy
//! sharing the code under test's async runtime could hide its stalls.
#![allow(dead_code)]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every request is forwarded and its response relayed.
    Pass,
    /// Every connection is closed as soon as it is accepted (and every request not yet
    /// answered is dropped): the store is down.
    Down,
    /// Connections are accepted and read, and never answered: the client's timeouts fire.
    Stall,
    /// Forwarded, except that each request gets a 500 with the probability set by
    /// [`Proxy::set_error_rate`]: half of those before the request reaches the server, half
    /// after it was executed there (the client cannot know whether it took effect).
    Flaky,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            0 => Mode::Pass,
            1 => Mode::Down,
            2 => Mode::Stall,
            _ => Mode::Flaky,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Mode::Pass => 0,
            Mode::Down => 1,
            Mode::Stall => 2,
            Mode::Flaky => 3,
        }
    }
}

/// What the proxy did, for assertions that a fault really happened.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub forwarded: u64,
    pub dropped: u64,
    pub stalled: u64,
    pub errors_before: u64,
    pub errors_after: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    stalled: AtomicU64,
    errors_before: AtomicU64,
    errors_after: AtomicU64,
}

struct Shared {
    upstream: u16,
    mode: AtomicU8,
    /// Probability of a 500 in `Flaky` mode, in millionths.
    error_ppm: AtomicU32,
    rng: Mutex<SmallRng>,
    stop: AtomicBool,
    counters: Counters,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free loopback port in front of `127.0.0.1:upstream`, in `Pass` mode.
    pub fn start(upstream: u16, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            mode: AtomicU8::new(Mode::Pass.to_u8()),
            error_ppm: AtomicU32::new(0),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || handle(&s, conn));
            }
        });
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode.to_u8(), Ordering::SeqCst);
    }

    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.shared.mode.load(Ordering::SeqCst))
    }

    /// The share of requests answered with a 500 in `Flaky` mode (0.0 to 1.0).
    pub fn set_error_rate(&self, p: f64) {
        let ppm = (p.clamp(0.0, 1.0) * 1e6) as u32;
        self.shared.error_ppm.store(ppm, Ordering::SeqCst);
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            forwarded: c.forwarded.load(Ordering::SeqCst),
            dropped: c.dropped.load(Ordering::SeqCst),
            stalled: c.stalled.load(Ordering::SeqCst),
            errors_before: c.errors_before.load(Ordering::SeqCst),
            errors_after: c.errors_after.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so its thread sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn mode(s: &Shared) -> Mode {
    Mode::from_u8(s.mode.load(Ordering::SeqCst))
}

fn roll(s: &Shared) -> bool {
    let ppm = s.error_ppm.load(Ordering::SeqCst);
    ppm > 0 && s.rng.lock().unwrap().gen_range(0..1_000_000u32) < ppm
}

const ERROR_500: &[u8] =
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

fn handle(s: &Shared, client: TcpStream) {
    let _ = client.set_nodelay(true);
    match mode(s) {
        Mode::Down => return drop_conn(s, client),
        Mode::Stall => return stall(s, client),
        _ => {}
    }
    // Bounded, so a client that connects and sends nothing cannot pin a thread forever.
    let _ = client.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let Ok(Some(req)) = read_message(&mut reader, None) else {
        return;
    };
    // The mode may have changed while the request was arriving.
    match mode(s) {
        Mode::Down => return drop_conn(s, client),
        Mode::Stall => return stall(s, client),
        _ => {}
    }
    let inject = mode(s) == Mode::Flaky && roll(s);
    let before = inject && s.rng.lock().unwrap().gen_bool(0.5);
    let mut client = client;
    if before {
        s.counters.errors_before.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(ERROR_500);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", s.upstream)) else {
        return drop_conn(s, client);
    };
    let _ = up.set_nodelay(true);
    let _ = up.set_read_timeout(Some(Duration::from_secs(120)));
    if up.write_all(&req.raw).is_err() {
        return drop_conn(s, client);
    }
    let mut up_reader = BufReader::new(up);
    let head_request = req.method.eq_ignore_ascii_case("HEAD");
    let Ok(Some(resp)) = read_message(&mut up_reader, Some(head_request)) else {
        return drop_conn(s, client);
    };
    match mode(s) {
        Mode::Down => return drop_conn(s, client),
        Mode::Stall => return stall(s, client),
        _ => {}
    }
    if inject {
        s.counters.errors_after.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(ERROR_500);
    } else {
        s.counters.forwarded.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(&resp.raw);
    }
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Both);
}

fn drop_conn(s: &Shared, client: TcpStream) {
    s.counters.dropped.fetch_add(1, Ordering::SeqCst);
    let _ = client.shutdown(Shutdown::Both);
}

/// Reads and discards until the client gives up (its timeout) or the proxy stops; never answers.
fn stall(s: &Shared, mut client: TcpStream) {
    s.counters.stalled.fetch_add(1, Ordering::SeqCst);
    let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16 * 1024];
    while !s.stop.load(Ordering::SeqCst) {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

struct Message {
    /// The first word of a request line (for a response: the status code).
    method: String,
    /// The whole message as it goes on: head (with `Connection: close`) and body.
    raw: Vec<u8>,
}

/// One HTTP/1.1 message. `response_to_head`: None for a request; Some(whether the request
/// was HEAD) for a response, which decides whether a body follows. Any `Connection` header
/// is replaced by `Connection: close`.
fn read_message<R: BufRead>(
    r: &mut R,
    response_to_head: Option<bool>,
) -> std::io::Result<Option<Message>> {
    let mut first = Vec::new();
    if r.read_until(b'\n', &mut first)? == 0 {
        return Ok(None);
    }
    let first_line = String::from_utf8_lossy(&first).trim_end().to_string();
    let mut head = first.clone();
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let text = String::from_utf8_lossy(&line).to_string();
        let (name, value) = text.split_once(':').unwrap_or((text.as_str(), ""));
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "connection" | "keep-alive" => continue,
            "content-length" => content_length = value.parse().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
        head.extend_from_slice(&line);
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut word = first_line.split_whitespace();
    let method = match response_to_head {
        None => word.next().unwrap_or("").to_string(),
        Some(_) => word.nth(1).unwrap_or("").to_string(),
    };
    let mut raw = head;
    let no_body = match response_to_head {
        None => false,
        Some(head_req) => {
            let code: u16 = method.parse().unwrap_or(0);
            head_req || code / 100 == 1 || code == 204 || code == 304
        }
    };
    if no_body {
    } else if chunked {
        loop {
            let mut size_line = Vec::new();
            if r.read_until(b'\n', &mut size_line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            raw.extend_from_slice(&size_line);
            let size_text = String::from_utf8_lossy(&size_line);
            let size_hex = size_text.trim().split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = Vec::new();
                    if r.read_until(b'\n', &mut t)? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    raw.extend_from_slice(&t);
                    if t == b"\r\n" || t == b"\n" {
                        break;
                    }
                }
                break;
            }
            let at = raw.len();
            raw.resize(at + size + 2, 0);
            r.read_exact(&mut raw[at..])?;
        }
    } else if let Some(n) = content_length {
        let at = raw.len();
        raw.resize(at + n, 0);
        r.read_exact(&mut raw[at..])?;
    } else if response_to_head.is_some() {
        // A response without a length ends when the server closes the connection.
        r.read_to_end(&mut raw)?;
    }
    Ok(Some(Message { method, raw }))
}
