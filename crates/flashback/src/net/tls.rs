//! The TLS client configuration of a `rediss://` URL.
//!
//! rustls with the aws-lc-rs provider, the stack object_store's HTTPS already links: a second
//! stack (openssl-sys) would add a C dependency and a second set of certificate rules. The
//! provider is named explicitly rather than taken from a process default, so the build cannot
//! panic if another crate ever enables rustls' `ring` feature too.
//!
//! Verification is on by default: the server's chain must lead to `--tls-ca` (or, without it,
//! to the system's trust store) and name the URL's host (an IP address must be an IP SAN).
//! `--tls-insecure` replaces only the chain and name checks; handshake signatures are still
//! checked, so the session is at least bound to the certificate the server showed.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// `--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-insecure` as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA certificate(s) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (chain), for servers with `tls-auth-clients yes`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure: bool,
}

impl TlsOptions {
    /// Whether any option was given (they make sense only with a `rediss://` URL).
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.insecure
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: cannot read it ({source}); check the path and its permissions")]
    Read {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{flag} {path}: {what}")]
    Pem {
        flag: &'static str,
        path: String,
        what: String,
    },
    #[error("--tls-cert and --tls-key go together: give both (the client certificate and its private key) or neither")]
    Pair,
    #[error("--tls-cert/--tls-key: the key does not fit the certificate ({0}); pass the key the certificate was made for")]
    KeyMismatch(String),
    #[error("no trusted CA certificates: the system trust store is empty or unreadable ({0}); pass --tls-ca FILE (the CA that signed the server's certificate)")]
    NoRoots(String),
}

/// A ready TLS client configuration, cheap to clone (shared by every connection of a URL).
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    opts: TlsOptions,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({:?})", self.opts)
    }
}

/// Two URLs with the same TLS options connect the same way.
impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        self.opts == other.opts
    }
}
impl Eq for Tls {}

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

impl Tls {
    /// Reads the files and builds the configuration.
    pub fn new(opts: &TlsOptions) -> Result<Tls, TlsError> {
        if opts.cert.is_some() != opts.key.is_some() {
            return Err(TlsError::Pair);
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            // Only fails for a provider without TLS 1.2/1.3 suites, which aws-lc-rs is not.
            .map_err(|e| TlsError::NoRoots(e.to_string()))?;
        let builder = if opts.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        } else {
            let roots = match &opts.ca {
                Some(ca) => ca_file(ca)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots)
        };
        let config = match (&opts.cert, &opts.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certs(cert, "--tls-cert")?;
                let key = private_key(key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::KeyMismatch(e.to_string()))?
            }
            _ => return Err(TlsError::Pair),
        };
        Ok(Tls {
            config: Arc::new(config),
            opts: opts.clone(),
        })
    }

    pub fn options(&self) -> &TlsOptions {
        &self.opts
    }

    pub fn insecure(&self) -> bool {
        self.opts.insecure
    }

    pub(super) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The name the certificate must carry: the URL's host, a DNS name or an IP address.
    pub(super) fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        ServerName::try_from(host.to_string()).map_err(|_| {
            format!("'{host}' is neither a DNS name nor an IP address a TLS certificate can name")
        })
    }
}

fn read(path: &Path, flag: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })
}

fn pem_error(path: &Path, flag: &'static str, what: impl Into<String>) -> TlsError {
    TlsError::Pem {
        flag,
        path: path.display().to_string(),
        what: what.into(),
    }
}

fn certs(path: &Path, flag: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, flag, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(pem_error(
            path,
            flag,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn ca_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(path, "--tls-ca")? {
        roots.add(c).map_err(|e| {
            pem_error(
                path,
                "--tls-ca",
                format!("not a usable CA certificate ({e})"),
            )
        })?;
    }
    Ok(roots)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "--tls-key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        pem_error(
            path,
            "--tls-key",
            format!("no PEM private key in it ({e}); expected -----BEGIN PRIVATE KEY----- (PKCS#8), RSA or EC"),
        )
    })
}

/// The system's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's bundle),
/// read once per process.
fn system_roots() -> Result<RootCertStore, TlsError> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "no certificates found".into());
                return Err(why);
            }
            Ok(roots)
        })
        .clone()
        .map_err(TlsError::NoRoots)
}

/// `--tls-insecure`: every certificate is accepted; handshake signatures are still verified
/// with the provider's algorithms.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
