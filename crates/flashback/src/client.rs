//! `redis://[user:pass@]host:port[/db]` URLs, and a small async client for ordinary commands
//! (INFO, DEBUG DIGEST, SCAN/DUMP/RESTORE, REPLICAOF). The replication link has its own code in
//! [`crate::replica`]: it must never send a command that produces a reply.

use bytes::{Bytes, BytesMut};
use flashback_format::resp::{self, Frame, FrameError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
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
        write!(f, "redis://{auth}{}:{}", self.host, self.port)?;
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Holds the input already masked ([`crate::show::url`]): the error may be printed anywhere.
    #[error("'{0}' is not a redis:// URL: expected redis://[user:pass@]host:port[/db]")]
    Syntax(String),
    #[error("'{0}': TLS (rediss://) is not supported yet; reach the server over redis://, e.g. through a TLS tunnel (stunnel, spiped)")]
    Tls(String),
}

impl std::str::FromStr for RedisUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        let bad = || UrlError::Syntax(crate::show::url(s));
        let u = url::Url::parse(s).map_err(|_| bad())?;
        if u.scheme() == "rediss" {
            return Err(UrlError::Tls(crate::show::url(s)));
        }
        if u.scheme() != "redis" {
            return Err(bad());
        }
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
        Ok(RedisUrl {
            host,
            port: u.port().unwrap_or(6379),
            user,
            password,
            db,
        })
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
}

/// A plain request/response connection.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    pub addr: String,
    timeout: Duration,
}

impl Client {
    /// Connects, authenticates and selects the URL's db.
    pub async fn connect(url: &RedisUrl, timeout: Duration) -> Result<Client, ClientError> {
        let addr = format!("{}:{}", url.host, url.port);
        let stream =
            match tokio::time::timeout(timeout, TcpStream::connect((url.host.as_str(), url.port)))
                .await
            {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        addr,
                        secs: timeout.as_secs(),
                    })
                }
                Ok(Err(source)) => return Err(ClientError::Connect { addr, source }),
                Ok(Ok(s)) => s,
            };
        stream.set_nodelay(true).ok();
        let mut c = Client {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            addr,
            timeout,
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
        self.stream
            .write_all(bytes)
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
                Ok(n) => return Ok(self.buf.split_to(n).freeze()),
                Err(FrameError::Incomplete) => {}
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
                Ok(Err(source)) => {
                    return Err(ClientError::Io {
                        addr: self.addr.clone(),
                        source,
                    })
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Err(ClientError::Closed {
                    addr: self.addr.clone(),
                });
            }
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
            "rediss://repl:replpw@127.0.0.1:6380",
            "redis://repl:replpw@127.0.0.1:99999",
            "redis://repl:replpw@127.0.0.1:1/x",
        ] {
            let e = bad.parse::<RedisUrl>().unwrap_err().to_string();
            assert!(!e.contains("replpw") && e.contains("repl:***@"), "{e}");
        }
    }
}
