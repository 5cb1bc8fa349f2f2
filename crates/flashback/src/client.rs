//! `redis[s]://[user:pass@]host:port[/db]` URLs, and a small async client for ordinary commands
//! (INFO, DEBUG DIGEST, SCAN/DUMP/RESTORE, REPLICAOF). The replication link has its own code in
//! [`crate::replica`]: it must never send a command that produces a reply. Both connect through
//! [`crate::net::connect`], TLS included.

use crate::net::{self, Stream, Tls, TlsOptions};
use bytes::{Bytes, BytesMut};
use flashback_format::resp::{self, Frame, FrameError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `rediss://`: the TLS configuration every connection to this URL uses.
    pub tls: Option<Tls>,
}

impl RedisUrl {
    /// A plain URL to a local server without a password (the private servers Flashback starts).
    pub fn local(port: u16) -> RedisUrl {
        RedisUrl {
            host: "127.0.0.1".into(),
            port,
            user: None,
            password: None,
            db: 0,
            tls: None,
        }
    }

    /// Parses `s` with the command line's TLS options: they apply to a `rediss://` URL (which
    /// without them verifies against the system's trust store) and are a mistake with a
    /// `redis://` one, which would silently ignore them.
    pub fn parse_with(s: &str, tls: &TlsOptions) -> Result<RedisUrl, UrlError> {
        let (mut url, rediss) = parse(s)?;
        match (rediss, tls.any()) {
            (true, _) => {
                url.tls = Some(
                    Tls::new(tls).map_err(|e| UrlError::Tls(crate::show::url(s), e.to_string()))?,
                )
            }
            (false, true) => return Err(UrlError::TlsOnPlain(crate::show::url(s))),
            (false, false) => {}
        }
        Ok(url)
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self)
    }
}

/// Prints without the password.
impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        write!(f, "{}://{auth}{}:{}", self.scheme(), self.host, self.port)?;
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Holds the input already masked ([`crate::show::url`]): the error may be printed anywhere.
    #[error("'{0}' is not a redis:// URL: expected redis[s]://[user:pass@]host:port[/db]")]
    Syntax(String),
    #[error("'{0}': {1}")]
    Tls(String, String),
    #[error("'{0}': --tls-ca/--tls-cert/--tls-key/--tls-insecure apply to TLS connections: write the URL as rediss://…, or leave the options out")]
    TlsOnPlain(String),
}

/// Parses with no TLS options: a `rediss://` URL verifies against the system's trust store.
impl std::str::FromStr for RedisUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        RedisUrl::parse_with(s, &TlsOptions::default())
    }
}

/// The URL's parts, and whether it is `rediss://` (the configuration is [`RedisUrl::parse_with`]'s).
fn parse(s: &str) -> Result<(RedisUrl, bool), UrlError> {
    {
        let bad = || UrlError::Syntax(crate::show::url(s));
        let u = url::Url::parse(s).map_err(|_| bad())?;
        let tls = match u.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad()),
        };
        let host = u
            .host_str()
            .ok_or_else(bad)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |x: &str| {
            url::form_urlencoded::parse(format!("x={x}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        let user = (!u.username().is_empty())
            .then(|| decode(u.username()))
            .flatten();
        let password = u.password().and_then(decode);
        let db = match u.path().trim_start_matches('/') {
            "" => 0,
            d => d.parse().map_err(|_| bad())?,
        };
        let url = RedisUrl {
            host,
            port: u.port().unwrap_or(6379),
            user,
            password,
            db,
            tls: None,
        };
        Ok((url, tls))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}; check the host and port, and that the server is running")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: timed out after {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("{addr}: authentication failed ({msg}); check the user and password in the URL")]
    Auth { addr: String, msg: String },
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: connection closed by the server")]
    Closed { addr: String },
    #[error("{addr}: {0}", addr = .1)]
    Protocol(FrameError, String),
    #[error("{addr}: {cmd}: {msg}")]
    Server {
        addr: String,
        cmd: String,
        msg: String,
    },
    /// A TLS failure, or plain text spoken to a TLS port: one line naming the fix.
    #[error("{addr}: {msg}")]
    Tls { addr: String, msg: String },
}

impl From<net::ConnectError> for ClientError {
    fn from(e: net::ConnectError) -> Self {
        match e {
            net::ConnectError::Tcp { addr, source } => ClientError::Connect { addr, source },
            net::ConnectError::Timeout { addr, secs } => ClientError::Timeout { addr, secs },
            net::ConnectError::Tls { addr, msg } => ClientError::Tls { addr, msg },
        }
    }
}

/// A plain request/response connection.
pub struct Client {
    stream: Stream,
    buf: BytesMut,
    pub addr: String,
    timeout: Duration,
    /// Whether any reply arrived yet: a plain connection closed (or answered with non-RESP
    /// bytes) before its first reply is most likely a TLS port, and the error says so.
    answered: bool,
}

impl Client {
    /// Connects, authenticates and selects the URL's db.
    pub async fn connect(url: &RedisUrl, timeout: Duration) -> Result<Client, ClientError> {
        let stream = net::connect(&url.host, url.port, url.tls.as_ref(), timeout)
            .await
            .map_err(ClientError::from)?;
        let mut c = Client {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            addr: format!("{}:{}", url.host, url.port),
            timeout,
            answered: false,
        };
        if let Some(pass) = &url.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &url.user {
                args.push(u.as_bytes());
            }
            args.push(pass.as_bytes());
            if let Frame::Error(e) = c.call(&args).await? {
                return Err(ClientError::Auth {
                    addr: c.addr.clone(),
                    msg: String::from_utf8_lossy(&e).into_owned(),
                });
            }
        }
        if url.db != 0 {
            c.ok(&["SELECT".as_bytes(), url.db.to_string().as_bytes()])
                .await?;
        }
        Ok(c)
    }

    /// Sends one command and reads its reply (an error reply is returned as `Frame::Error`).
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        self.send(args).await?;
        self.read().await
    }

    /// Like [`call`](Self::call), but an error reply becomes `ClientError::Server`.
    pub async fn ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        match self.call(args).await? {
            Frame::Error(e) => Err(ClientError::Server {
                addr: self.addr.clone(),
                cmd: args
                    .first()
                    .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                    .unwrap_or_default(),
                msg: String::from_utf8_lossy(&e).into_owned(),
            }),
            f => Ok(f),
        }
    }

    /// Writes a command without reading the reply (for pipelining; pair with [`read`](Self::read)).
    pub async fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), ClientError> {
        let bytes = resp::encode_command(args);
        self.write_raw(&bytes).await
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let s = &mut self.stream;
        // The flush matters over TLS only: rustls may keep the last record of a write
        // buffered when the socket would block.
        async {
            s.write_all(bytes).await?;
            s.flush().await
        }
        .await
        .map_err(|source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        })
    }

    /// Reads one reply.
    pub async fn read(&mut self) -> Result<Frame, ClientError> {
        let frame = self.read_raw().await?;
        resp::parse(&frame).map_err(|e| ClientError::Protocol(e, self.addr.clone()))
    }

    /// Sends one command and returns its reply's bytes as the server sent them (for a reply
    /// kept verbatim, like the `COMMAND` table stored with a generation).
    pub async fn call_raw<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Bytes, ClientError> {
        self.send(args).await?;
        self.read_raw().await
    }

    /// Reads one reply's raw bytes (checked to be one whole frame, not parsed).
    pub async fn read_raw(&mut self) -> Result<Bytes, ClientError> {
        loop {
            match resp::check(&self.buf) {
                Ok(n) => {
                    self.answered = true;
                    return Ok(self.buf.split_to(n).freeze());
                }
                Err(FrameError::Incomplete) => {}
                Err(_) if self.before_first_reply() && net::is_tls_record(&self.buf) => {
                    return Err(self.plain_to_tls())
                }
                Err(e) => return Err(ClientError::Protocol(e, self.addr.clone())),
            }
            self.buf.reserve(64 * 1024);
            let n = match tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.buf))
                .await
            {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        addr: self.addr.clone(),
                        secs: self.timeout.as_secs(),
                    })
                }
                Ok(Err(source))
                    if self.before_first_reply()
                        && source.kind() == std::io::ErrorKind::ConnectionReset =>
                {
                    return Err(self.plain_to_tls())
                }
                Ok(Err(source)) => {
                    return Err(ClientError::Io {
                        addr: self.addr.clone(),
                        source,
                    })
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 && self.before_first_reply() {
                return Err(self.plain_to_tls());
            }
            if n == 0 {
                return Err(ClientError::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
    }

    fn before_first_reply(&self) -> bool {
        !self.answered && !self.stream.is_tls()
    }

    fn plain_to_tls(&self) -> ClientError {
        ClientError::Tls {
            addr: self.addr.clone(),
            msg: net::plain_to_tls_hint(&self.addr, &self.buf),
        }
    }

    /// `INFO <section>` as (field, value) pairs.
    pub async fn info(&mut self, section: &str) -> Result<Vec<(String, String)>, ClientError> {
        let f = self.ok(&["INFO", section]).await?;
        Ok(parse_info(&f.text()))
    }
}

pub fn parse_info(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

pub fn info_field<'a>(info: &'a [(String, String)], key: &str) -> Option<&'a str> {
    info.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Bytes helper for building argv from mixed pieces.
pub fn arg(s: impl Into<Bytes>) -> Bytes {
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: RedisUrl = "redis://repl:p%40ss@127.0.0.1:7000/3".parse().unwrap();
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref(), u.port, u.db),
            (Some("repl"), Some("p@ss"), 7000, 3)
        );
        assert_eq!(u.to_string(), "redis://repl:***@127.0.0.1:7000/3");
        let u: RedisUrl = "redis://:secret@localhost".parse().unwrap();
        assert_eq!(
            (u.user, u.password.as_deref(), u.port),
            (None, Some("secret"), 6379)
        );
        assert!("http://x:1".parse::<RedisUrl>().is_err());
        assert!("127.0.0.1:6379".parse::<RedisUrl>().is_err());
        for bad in [
            "redis://repl:replpw@127.0.0.1:99999",
            "redis://repl:replpw@127.0.0.1:1/x",
        ] {
            let e = bad.parse::<RedisUrl>().unwrap_err().to_string();
            assert!(!e.contains("replpw") && e.contains("repl:***@"), "{e}");
        }
    }

    #[test]
    fn tls_urls() {
        let insecure = TlsOptions {
            insecure: true,
            ..Default::default()
        };
        let u = RedisUrl::parse_with("rediss://repl:replpw@127.0.0.1:6380", &insecure).unwrap();
        assert!(u.tls.as_ref().is_some_and(|t| t.insecure()));
        assert_eq!(u.to_string(), "rediss://repl:***@127.0.0.1:6380");
        // Options with a plain URL would be ignored: refused instead, the password masked.
        let e = RedisUrl::parse_with("redis://repl:replpw@h:1", &insecure)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rediss://") && !e.contains("replpw"), "{e}");
        let missing = TlsOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = RedisUrl::parse_with("rediss://repl:replpw@h:1", &missing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--tls-ca /nonexistent/ca.pem: cannot read it") && !e.contains("replpw"),
            "{e}"
        );
        let half = TlsOptions {
            cert: Some("/x.pem".into()),
            ..Default::default()
        };
        let e = RedisUrl::parse_with("rediss://h:1", &half)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-cert and --tls-key go together"), "{e}");
    }
}
