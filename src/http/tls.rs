//! HTTPS for the API: the certificate and key files read once at start into a rustls server
//! config (on the ring provider), and a listener that hands `axum::serve` TLS streams, so
//! HTTP and HTTPS share one serve loop and one graceful shutdown. Handshakes run beside the
//! accept loop, each under a timeout, so a slow or silent client holds up no one else.
//!
//! It does not ask clients for certificates (callers prove who they are with tokens) and does
//! not reload the files while running; a restart picks up renewed ones.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The server's certificate chain and private key, as configured (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files read and checked: what [`crate::http::serve`] needs to serve HTTPS.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

/// Why a certificate or key file cannot be used; the reason (an IO or rustls error) is the
/// source.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} file {path}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the {what} file {path} holds no {expected} in PEM form ({reason})")]
    NotPem {
        what: &'static str,
        path: String,
        expected: &'static str,
        reason: String,
    },
    #[error("the TLS certificate {cert} and key {key} cannot be used together")]
    Refused {
        cert: String,
        key: String,
        source: rustls::Error,
    },
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsFiles {
    /// Reads both files and builds the server's TLS config; every refusal names its file.
    pub fn load(&self) -> Result<ServerTls, TlsError> {
        let certs = read_certificates(&self.cert, "TLS certificate")?;
        let key_pem = read(&self.key, "TLS key")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NotPem {
            what: "TLS key",
            path: self.key.display().to_string(),
            expected: "private key",
            reason: e.to_string(),
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|source| TlsError::Refused {
                cert: self.cert.display().to_string(),
                key: self.key.display().to_string(),
                source,
            })?;
        // HTTP/2 for clients that offer it (browsers: the console's event streams then share
        // one connection), HTTP/1.1 for the rest.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// The rustls provider remotask uses everywhere: ring. rustls 0.23.48 deprecates it as it has
/// no post-quantum key exchange; aws-lc-rs, which has one, is a long C and cmake build.
#[expect(
    deprecated,
    reason = "ring keeps the build short; no post-quantum key exchange for now"
)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (a server's chain, or the CA a client trusts); `what` names
/// the file in errors.
pub fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let not_pem = |reason: String| TlsError::NotPem {
        what,
        path: path.display().to_string(),
        expected: "certificate",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(not_pem("no CERTIFICATE section".to_owned()));
    }
    Ok(certs)
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// A TCP listener whose connections are TLS streams once their handshake is done. Dropping
/// it (as `axum::serve` does when shutting down) drops the handshakes still running.
pub(super) struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub(super) fn new(tcp: TcpListener, tls: ServerTls) -> Self {
        Self {
            tcp,
            acceptor: tls.acceptor,
            handshakes: JoinSet::new(),
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                // axum's own accept: retries, and backs off on errors such as too many files.
                (stream, addr) = Listener::accept(&mut self.tcp) => {
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => Some((tls, addr)),
                            Ok(Err(e)) => {
                                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(%addr, "TLS handshake timed out");
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
