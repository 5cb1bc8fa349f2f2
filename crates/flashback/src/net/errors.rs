//! rustls failures as one line each, naming the fix. rustls reports them as `io::Error`s
//! wrapping a `rustls::Error`; the wording of its own Display ("invalid peer certificate:
//! UnknownIssuer") says what failed but not what to do.

use rustls::{AlertDescription, CertificateError, Error as TlsErr};
use std::io;

fn inner(e: &io::Error) -> Option<&TlsErr> {
    e.get_ref().and_then(|i| i.downcast_ref::<TlsErr>())
}

fn date(t: rustls::pki_types::UnixTime) -> String {
    crate::timespec::format_ms(t.as_secs().saturating_mul(1000))
}

/// The TLS handshake to `addr` (the URL's `host`) failed with `e`.
pub(super) fn handshake(e: &io::Error, host: &str, addr: &str) -> String {
    match inner(e) {
        Some(t) => describe(t, host, addr),
        // The peer closed (or reset) during the handshake: a plain-text server closing on a
        // ClientHello it cannot parse as a command.
        None if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        ) =>
        {
            format!("the server closed the connection during the TLS handshake (is it a plain port? use redis://{addr})")
        }
        None => format!("TLS handshake failed: {e}"),
    }
}

fn describe(t: &TlsErr, host: &str, addr: &str) -> String {
    match t {
        TlsErr::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "certificate not signed by a trusted CA: pass --tls-ca FILE (the CA that signed the server's certificate), or --tls-insecure to skip verification (not for production)".into()
            }
            CertificateError::Expired => {
                "the server's certificate has expired: renew it on the server (its tls-cert-file)".into()
            }
            CertificateError::ExpiredContext { time, not_after } => format!(
                "the server's certificate expired at {} (now {}): renew it on the server (its tls-cert-file)",
                date(*not_after),
                date(*time)
            ),
            CertificateError::NotValidYet => {
                "the server's certificate is not valid yet: check the clocks of both machines".into()
            }
            CertificateError::NotValidYetContext { time, not_before } => format!(
                "the server's certificate is valid only from {} (now {}): check the clocks of both machines",
                date(*not_before),
                date(*time)
            ),
            CertificateError::NotValidForName => format!(
                "the server's certificate is not valid for '{host}': connect by a name it carries, or reissue it with '{host}' in its subjectAltName"
            ),
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the server's certificate is not valid for '{host}' (it names {}): connect by a name it carries, or reissue it with '{host}' in its subjectAltName",
                if presented.is_empty() {
                    "nothing".to_string()
                } else {
                    presented.iter().map(|n| bare_name(n)).collect::<Vec<_>>().join(", ")
                }
            ),
            other => format!("the server's certificate was rejected ({other:?}): fix it on the server, or pass --tls-insecure to skip verification (not for production)"),
        },
        // Bytes that are not a TLS record: a plain server answering the ClientHello with a
        // RESP error ("-ERR unknown command…").
        TlsErr::InvalidMessage(_) | TlsErr::InappropriateMessage { .. } => format!(
            "the server did not answer TLS (is it a plain port? use redis://{addr})"
        ),
        TlsErr::AlertReceived(a) => alert(a),
        TlsErr::PeerIncompatible(p) => format!(
            "the server and Flashback share no TLS version or cipher ({p:?}): enable TLS 1.2 or 1.3 on the server (tls-protocols)"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

/// rustls renders presented names as `DnsName("x")` / `IpAddress(V4(…))`: the name alone.
fn bare_name(n: &str) -> &str {
    match (n.find('"'), n.rfind('"')) {
        (Some(a), Some(b)) if b > a => &n[a + 1..b],
        _ => n,
    }
}

fn alert(a: &AlertDescription) -> String {
    match a {
        AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure => {
            "the server requires a client certificate (tls-auth-clients yes): pass --tls-cert FILE --tls-key FILE".into()
        }
        AlertDescription::UnknownCA
        | AlertDescription::BadCertificate
        | AlertDescription::CertificateUnknown
        | AlertDescription::DecryptError => {
            "the server refused our client certificate: pass a --tls-cert signed by the CA in the server's tls-ca-cert-file".into()
        }
        AlertDescription::CertificateExpired => {
            "the server refused our client certificate: it has expired; renew --tls-cert".into()
        }
        AlertDescription::ProtocolVersion => {
            "the server and Flashback share no TLS version: enable TLS 1.2 or 1.3 on the server (tls-protocols)".into()
        }
        other => format!("the server ended the TLS session (alert {other:?})"),
    }
}

/// An I/O error after the handshake: in TLS 1.3 the server judges the client certificate only
/// once the client already considers the handshake done, so its refusal arrives on the first
/// read.
pub(super) fn after_handshake(e: io::Error) -> io::Error {
    match inner(&e) {
        Some(TlsErr::AlertReceived(a)) => io::Error::new(e.kind(), alert(a)),
        _ => e,
    }
}
