//! The local certificate authority: created on first run, kept in the data directory.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::crypto::{hex, provider, random_bytes, random_serial};
use crate::files::{check_key_mode, write_atomic};
use crate::CertError;

const CERT_FILE: &str = "ca.pem";
const KEY_FILE: &str = "ca.key";

/// Ten years: installing a CA on every device is a chore nobody should repeat often.
const VALIDITY: Duration = Duration::days(3650);

/// The local certificate authority, created on first run in a directory.
///
/// Clients that trust its certificate (`cert_pem`, the file at `cert_path`) accept the
/// leaf certificates that [`Leaves`](crate::Leaves) mints with it for any host.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    cert_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Loads `dir/ca.pem` and `dir/ca.key`, or creates both if `ca.pem` is absent.
    ///
    /// A new CA has an ECDSA P-256 key, subject CN `meshcache local CA <random id>` and
    /// O "meshcache", is valid ten years (from a day ago), and may sign leaf certificates
    /// only (basicConstraints CA:true, pathlen 0; keyUsage keyCertSign and cRLSign).
    /// The key file is written with mode 0600, each file through a temporary file and a
    /// rename (the key first: a `ca.pem` on disk always has its key beside it).
    ///
    /// Errors: [`CertError::KeyPermissions`] for a key file that the group or others may
    /// access; [`CertError::Invalid`] naming the file for unparsable or mismatched files (or a
    /// `ca.key` missing beside an existing `ca.pem`); [`CertError::Io`] naming the path.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CertError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        match fs::metadata(&cert_path) {
            Ok(_) => Ca::load(cert_path, &key_path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ca::create(dir, cert_path, &key_path),
            Err(e) => Err(CertError::io(cert_path, e)),
        }
    }

    /// The CA certificate, PEM-encoded (what users install).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER-encoded.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Where the CA certificate is: `dir/ca.pem`.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub(crate) fn cert(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn load(cert_path: PathBuf, key_path: &Path) -> Result<Ca, CertError> {
        // Permissions first: refuse a key that may have leaked before even reading it.
        check_key_mode(key_path).map_err(|e| match e {
            CertError::Io { path, source } if source.kind() == io::ErrorKind::NotFound => {
                CertError::invalid(
                    path,
                    format!(
                        "missing, while {} exists: restore the key, or remove {0} to create \
                         a new CA (clients must then trust the new one)",
                        cert_path.display()
                    ),
                )
            }
            other => other,
        })?;

        let cert_pem = read_text(&cert_path)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            CertError::invalid(&cert_path, format!("no PEM certificate found ({e})"))
        })?;
        let key = KeyPair::from_pem(&read_text(key_path)?)
            .map_err(|e| CertError::invalid(key_path, format!("not a PEM private key ({e})")))?;

        // A key that is not the certificate's would sign leaves that no client accepts:
        // say so now, naming the files, rather than fail every handshake later.
        let signing_key = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .map_err(|e| CertError::invalid(key_path, format!("unusable private key ({e})")))?;
        rustls::sign::CertifiedKey::new(vec![cert_der.clone()], signing_key)
            .keys_match()
            .map_err(|e| {
                CertError::invalid(
                    key_path,
                    format!("does not belong to {} ({e})", cert_path.display()),
                )
            })?;

        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| CertError::invalid(&cert_path, format!("unparsable certificate ({e})")))?;
        let usages = issuer.key_usages();
        if !usages.is_empty() && !usages.contains(&KeyUsagePurpose::KeyCertSign) {
            return Err(CertError::invalid(
                &cert_path,
                "not a CA certificate (its key usage lacks keyCertSign)",
            ));
        }
        tracing::debug!(path = %cert_path.display(), "loaded the local CA");
        Ok(Ca {
            cert_pem,
            cert_der,
            cert_path,
            issuer,
        })
    }

    fn create(dir: &Path, cert_path: PathBuf, key_path: &Path) -> Result<Ca, CertError> {
        fs::create_dir_all(dir).map_err(|e| CertError::io(dir, e))?;
        // P-256: accepted by every TLS client that matters, and fast to sign with.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;

        let mut name = DistinguishedName::new();
        // A random id tells apart the CAs of several devices in a user's trust store.
        let id = hex(&random_bytes::<4>()?);
        name.push(DnType::CommonName, format!("meshcache local CA {id}"));
        name.push(DnType::OrganizationName, "meshcache");

        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        // pathlen 0: even with this key, no one can mint an intermediate CA that clients trust;
        // the CA signs leaves (and CRLs) and nothing else.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        // Backdated a day, so that a client whose clock runs behind accepts it at once.
        params.not_before = now - Duration::days(1);
        params.not_after = now + VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(generate)?;

        // Only the owner may read the key: whoever holds it can impersonate any site to
        // every client that trusts this CA.
        write_atomic(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        let cert_pem = cert.pem();
        write_atomic(&cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(
            path = %cert_path.display(),
            "created a new local CA; clients must trust it before HTTPS can be cached"
        );
        Ok(Ca {
            cert_pem,
            cert_der: cert.der().clone(),
            cert_path,
            issuer: Issuer::new(params, key),
        })
    }
}

impl fmt::Debug for Ca {
    // By hand: nothing of the key belongs in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn read_text(path: &Path) -> Result<String, CertError> {
    let bytes = fs::read(path).map_err(|e| CertError::io(path, e))?;
    String::from_utf8(bytes).map_err(|_| CertError::invalid(path, "not a PEM file (not text)"))
}

pub(crate) fn generate(e: rcgen::Error) -> CertError {
    CertError::Generate(e.to_string())
}
