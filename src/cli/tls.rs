//! TLS for the client commands: rustls on the ring provider, trusting the platform's roots (on
//! Linux the system's CA bundle) and, with `--ca-cert`, a private CA. reqwest's own rustls
//! setup would bring the aws-lc-rs provider, a long C build; so the client is handed this
//! config ready-made.
//!
//! The platform's roots are read at the first handshake, not when the client is built: a
//! command talking plain HTTP reads no CA bundle and works on a machine without one.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;

use crate::http::{crypto_provider, read_certificates};

/// Makes ring this process's rustls provider, for any `reqwest::Client` built without a
/// ready-made TLS config (reqwest's `rustls-no-provider` needs one, and panics without it).
/// Does nothing if a provider is already installed.
pub fn install_default_provider() {
    let _ = Arc::unwrap_or_clone(crypto_provider()).install_default();
}

/// The client's TLS config: the platform's roots plus the CA certificates in `ca_cert`.
pub(super) fn client_config(ca_cert: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let extra = match ca_cert {
        Some(path) => read_certificates(path, "CA certificate")?,
        None => Vec::new(),
    };
    let provider = crypto_provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PlatformRoots {
            extra,
            provider,
            verifier: OnceLock::new(),
        }))
        .with_no_client_auth();
    // The API speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// rustls-platform-verifier's `Verifier`, made at its first use.
#[derive(Debug)]
struct PlatformRoots {
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Verifier, rustls::Error>>,
}

impl PlatformRoots {
    fn verifier(&self) -> Result<&Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                Verifier::new_with_extra_roots(self.extra.clone(), self.provider.clone())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for PlatformRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
