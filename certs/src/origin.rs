//! The TLS client configuration for connections to origins, and where its trust comes from.
//!
//! Origins are verified against the operating system's trust store, so that a CA the machine
//! trusts (say the one a company's or an antivirus' TLS inspection installed) is trusted by
//! meshcache as it is by curl and the browsers on the same machine:
//!
//! - Linux and the other Unix systems except macOS, iOS and Android: the certificates of the
//!   system store, found as OpenSSL finds them (in the file and directories that
//!   `SSL_CERT_FILE` and `SSL_CERT_DIR` name when either is set, else in the distribution's
//!   bundle and directory such as `/etc/ssl/certs`), loaded by `rustls-native-certs` and
//!   checked by rustls' own verifier. When the store holds no usable certificate (a minimal
//!   container), the Mozilla roots bundled with `webpki-roots` stand in, with a warning;
//!   errors reading parts of the store are logged, not fatal.
//! - Android, iOS, macOS and Windows: the platform's own verifier
//!   (`rustls-platform-verifier`), which also applies the system's trust settings. On Android
//!   the host application must have initialized it (`rustls_platform_verifier::android`) and
//!   bundle its Kotlin component, or verification panics.
//!
//! The certificates of the PEM files given (private CAs) are trusted in addition, everywhere
//! but on Android, whose platform verifier takes no extra roots: there any is an error
//! rather than silently ignored.
//!
//! Verification is always on, whatever the platform.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::{ClientConfig, ConfigBuilder, WantsVerifier};

use crate::crypto::provider;
use crate::CertError;

/// The TLS client configuration for origins: the operating system's trust store (on Linux
/// and the other Unix systems its certificates, honouring `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`, with the bundled Mozilla roots when it has none; on Android, iOS, macOS
/// and Windows the platform's verifier) plus every certificate in the PEM files
/// `extra_roots` (private CAs), ALPN `h2` then `http/1.1`.
///
/// Certificate verification is always on, and there is deliberately no way to turn it off:
/// the proxy re-signs what it fetches with a CA its clients trust, so an origin it failed to
/// verify would reach them looking verified.
///
/// On Linux this reads the whole system store, on every call: call it once, at start.
///
/// Errors: [`CertError::Io`] naming a file that cannot be read; [`CertError::Invalid`] naming
/// a file with no certificate in it or an unusable one (or, on Android, the first file: extra
/// roots are not supported there); [`CertError::Tls`] if the platform verifier refuses to be
/// set up.
pub fn origin_client_config(extra_roots: &[PathBuf]) -> Result<Arc<ClientConfig>, CertError> {
    #[cfg(not(any(
        target_os = "android",
        target_os = "ios",
        target_os = "macos",
        target_os = "windows"
    )))]
    let config = native::client_config(rustls_native_certs::load_native_certs(), extra_roots);
    #[cfg(any(
        target_os = "android",
        target_os = "ios",
        target_os = "macos",
        target_os = "windows"
    ))]
    let config = platform::client_config(extra_roots);
    config
}

/// Linux and the other Unix systems except macOS, iOS and Android: rustls verifies, against
/// the certificates of the system store.
#[cfg(not(any(
    target_os = "android",
    target_os = "ios",
    target_os = "macos",
    target_os = "windows"
)))]
pub(crate) mod native {
    use rustls::RootCertStore;
    use rustls_native_certs::CertificateResult;

    use super::*;

    /// The configuration trusting the system store `found` (what
    /// [`rustls_native_certs::load_native_certs`] found, through [`system_roots`]) and the
    /// certificates of `extra_roots`.
    pub(crate) fn client_config(
        found: CertificateResult,
        extra_roots: &[PathBuf],
    ) -> Result<Arc<ClientConfig>, CertError> {
        let extra = read_extra_roots(extra_roots)?;
        let mut roots = system_roots(found);
        // Every one was checked by read_extra_roots.
        roots.add_parsable_certificates(extra);
        Ok(finish(builder()?.with_root_certificates(roots)))
    }

    /// The usable certificates of `found`, or the bundled Mozilla roots (with a warning) when
    /// there is none. Errors loading parts of the store are logged only.
    pub(crate) fn system_roots(found: CertificateResult) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            for error in &found.errors {
                tracing::warn!(%error, "cannot load the system's trust store");
            }
            tracing::warn!(
                ignored,
                "the system's trust store holds no usable certificate: origins are verified \
                 against the Mozilla roots bundled with meshcache instead (SSL_CERT_FILE and \
                 SSL_CERT_DIR name where the store is)"
            );
            roots.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec();
        } else {
            for error in &found.errors {
                tracing::debug!(%error, "skipped part of the system's trust store");
            }
            tracing::debug!(added, ignored, "trusting the system's roots for origins");
        }
        roots
    }
}

/// Android, iOS, macOS and Windows: the platform's verifier decides.
#[cfg(any(
    target_os = "android",
    target_os = "ios",
    target_os = "macos",
    target_os = "windows"
))]
mod platform {
    use rustls_platform_verifier::Verifier;

    use super::*;

    pub(super) fn client_config(extra_roots: &[PathBuf]) -> Result<Arc<ClientConfig>, CertError> {
        let builder = builder()?;
        let verifier = verifier(extra_roots, builder.crypto_provider().clone())?;
        Ok(finish(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier)),
        ))
    }

    #[cfg(not(target_os = "android"))]
    fn verifier(
        extra_roots: &[PathBuf],
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Verifier, CertError> {
        let extra = read_extra_roots(extra_roots)?;
        let verifier = if extra.is_empty() {
            Verifier::new(provider)
        } else {
            Verifier::new_with_extra_roots(extra, provider)
        };
        verifier.map_err(|e| CertError::Tls(e.to_string()))
    }

    #[cfg(target_os = "android")]
    fn verifier(
        extra_roots: &[PathBuf],
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Verifier, CertError> {
        if let Some(path) = extra_roots.first() {
            return Err(CertError::invalid(
                path,
                "extra roots are not supported on Android, whose platform verifier takes \
                 none: install this CA in the system's trust store instead",
            ));
        }
        Verifier::new(provider).map_err(|e| CertError::Tls(e.to_string()))
    }
}

/// Every certificate of the PEM files `paths`, each checked to be a usable trust anchor.
#[cfg(not(target_os = "android"))]
fn read_extra_roots(
    paths: &[PathBuf],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, CertError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use rustls::RootCertStore;
    use std::fs;

    let mut certs = Vec::new();
    let mut check = RootCertStore::empty();
    for path in paths {
        let pem = fs::read(path).map_err(|e| CertError::io(path, e))?;
        let before = certs.len();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| CertError::invalid(path, format!("unparsable PEM ({e})")))?;
            check.add(cert.clone()).map_err(|e| {
                CertError::invalid(path, format!("not a usable CA certificate ({e})"))
            })?;
            certs.push(cert);
        }
        let added = certs.len() - before;
        if added == 0 {
            return Err(CertError::invalid(path, "no PEM CERTIFICATE block found"));
        }
        tracing::debug!(path = %path.display(), added, "trusting extra roots for origins");
    }
    Ok(certs)
}

/// A client configuration with the ring provider and the safe default protocol versions.
fn builder() -> Result<ConfigBuilder<ClientConfig, WantsVerifier>, CertError> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Tls(e.to_string()))
}

/// No client certificate, ALPN `h2` then `http/1.1`.
fn finish(builder: ConfigBuilder<ClientConfig, WantsClientCert>) -> Arc<ClientConfig> {
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
