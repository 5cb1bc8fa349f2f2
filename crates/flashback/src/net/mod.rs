//! The one way Flashback opens a connection to a Redis or Valkey server: TCP, then TLS when the
//! URL is `rediss://`. Every caller (the command client, the replication link, the offset poller,
//! restore targets, verify against the source, and later Sentinel) gets the same [`Stream`], so
//! certificate checks and their error messages cannot differ between them.
//!
//! - [`tls`]: `--tls-ca/--tls-cert/--tls-key/--tls-insecure` → a rustls client configuration,
//!   built once per process (reading the PEM files then, so a bad file fails at start-up).
//! - [`errors`] (private): a rustls failure as one line that names the fix.

mod errors;
pub mod tls;

pub use tls::{Tls, TlsError, TlsOptions};

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection: plain TCP or TLS over TCP. An enum rather than `Box<dyn AsyncRead + …>`:
/// the replication stream reads through it for days, and the plain case stays a direct call.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source}; check the host and port, and that the server is running")]
    Tcp { addr: String, source: io::Error },
    #[error(
        "cannot connect to {addr}: no answer within {secs} s; check the host, port and firewall"
    )]
    Timeout { addr: String, secs: u64 },
    /// The TLS handshake failed; `msg` names the cause and the fix (see [`errors`]).
    #[error("{addr}: {msg}")]
    Tls { addr: String, msg: String },
}

/// Connects to `host:port`, with TLS when `tls` is given (`rediss://`), within `timeout` for the
/// TCP connection and the TLS handshake together.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<&Tls>,
    timeout: Duration,
) -> Result<Stream, ConnectError> {
    let addr = format!("{host}:{port}");
    let secs = timeout.as_secs();
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect((host, port))).await {
        Err(_) => return Err(ConnectError::Timeout { addr, secs }),
        Ok(Err(source)) => return Err(ConnectError::Tcp { addr, source }),
        Ok(Ok(s)) => s,
    };
    tcp.set_nodelay(true).ok();
    let Some(tls) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let name = tls.server_name(host).map_err(|msg| ConnectError::Tls {
        addr: addr.clone(),
        msg,
    })?;
    match tokio::time::timeout_at(deadline, tls.connector().connect(name, tcp)).await {
        // A plain port reads the ClientHello as an inline command and waits for its end of
        // line: silence, not an error, is what a TLS client usually gets from it.
        Err(_) => Err(ConnectError::Tls {
            msg: format!("no TLS answer within {secs} s (is it a plain port? use redis://{addr})"),
            addr,
        }),
        Ok(Err(e)) => Err(ConnectError::Tls {
            msg: errors::handshake(&e, host, &addr),
            addr,
        }),
        Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
    }
}

/// I/O errors on a TLS stream after the handshake carry the rustls cause (a client certificate
/// the server refused, an alert): rewrite them into the same one-line explanations.
fn tls_io(r: io::Result<()>) -> io::Result<()> {
    r.map_err(errors::after_handshake)
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf).map(tls_io),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut())
                .poll_write(cx, buf)
                .map_err(errors::after_handshake),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx).map(tls_io),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx).map(tls_io),
        }
    }
}

/// What to tell someone whose plain (`redis://`) connection was closed, reset or answered with
/// bytes that are not RESP before any reply: a TLS port does exactly that to plain text
/// (OpenSSL answers a TLS alert record, or just closes).
pub fn plain_to_tls_hint(addr: &str, first_bytes: &[u8]) -> String {
    let alert = is_tls_record(first_bytes);
    format!(
        "the server {} before any reply (is it a TLS port? use rediss://{addr})",
        if alert {
            "answered with a TLS record"
        } else {
            "closed the connection"
        }
    )
}

/// Whether `b` starts like a TLS record (alert or handshake, version 3.x): what a TLS port
/// answers to plain text. Other non-RESP bytes (an HTTP server) are not a TLS port.
pub fn is_tls_record(b: &[u8]) -> bool {
    matches!(b.first(), Some(0x15 | 0x16)) && matches!(b.get(1), Some(0x03))
}
