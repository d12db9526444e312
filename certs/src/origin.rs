//! The TLS client configuration for connections to origins.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::crypto::provider;
use crate::CertError;

/// The TLS client configuration for origins: the Mozilla roots (embedded, so the same on
/// every platform) plus every certificate in the PEM files `extra_roots` (private CAs),
/// ALPN `h2` then `http/1.1`.
///
/// Certificate verification is always on, and there is deliberately no way to turn it off:
/// the proxy re-signs what it fetches with a CA its clients trust, so an origin it failed to
/// verify would reach them looking verified.
///
/// Errors: [`CertError::Io`] naming a file that cannot be read; [`CertError::Invalid`] naming
/// a file with no certificate in it or an unusable one.
pub fn origin_client_config(extra_roots: &[PathBuf]) -> Result<Arc<ClientConfig>, CertError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for path in extra_roots {
        let pem = fs::read(path).map_err(|e| CertError::io(path, e))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| CertError::invalid(path, format!("unparsable PEM ({e})")))?;
            roots.add(cert).map_err(|e| {
                CertError::invalid(path, format!("not a usable CA certificate ({e})"))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(CertError::invalid(path, "no PEM CERTIFICATE block found"));
        }
        tracing::debug!(path = %path.display(), added, "trusting extra roots for origins");
    }

    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
