//! Leaf certificates for intercepted hosts, minted on demand and kept in a bounded cache.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration as StdDuration, Instant};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ServerConfig;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use time::{Duration, OffsetDateTime};

use crate::bounded::BoundedMap;
use crate::ca::generate;
use crate::crypto::{provider, random_serial};
use crate::{Ca, CertError};

/// Thirty days: the CA is ours and a leaf is re-minted in milliseconds, so there is no reason
/// for a long life (and Apple platforms refuse TLS server certificates valid over 825 days).
const LEAF_VALIDITY: Duration = Duration::days(30);

/// A cached configuration is re-minted once this old, well before its leaf expires,
/// so that a proxy running for months never serves an expired certificate.
const REUSE_FOR: StdDuration = StdDuration::from_secs(20 * 24 * 60 * 60);

/// Mints and caches leaf certificates signed by the [`Ca`], one rustls server configuration
/// per host. Cheap to clone (an `Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct Leaves {
    inner: Arc<Inner>,
}

struct Inner {
    ca: Arc<Ca>,
    provider: Arc<CryptoProvider>,
    /// The key of every leaf, or why it could not be generated (reported by `server_config`).
    key: Result<LeafKey, String>,
    configs: Mutex<BoundedMap<CacheKey, Cached>>,
    reuse_for: StdDuration,
}

/// One key for all leaves: generating a key per host would cost more than the signature,
/// and it protects nothing the CA key does not (whoever reads this process's memory has both).
struct LeafKey {
    key: KeyPair,
    signing: Arc<dyn SigningKey>,
}

type CacheKey = (Host, Vec<Vec<u8>>);

#[derive(Clone)]
struct Cached {
    config: Arc<ServerConfig>,
    minted: Instant,
}

impl Leaves {
    /// Leaves signed by `ca`, the configurations of at most `capacity` hosts kept (at least one).
    /// The leaf key is generated here, once.
    pub fn new(ca: Arc<Ca>, capacity: usize) -> Leaves {
        Leaves::with_reuse(ca, capacity, REUSE_FOR)
    }

    pub(crate) fn with_reuse(ca: Arc<Ca>, capacity: usize, reuse_for: StdDuration) -> Leaves {
        let provider = provider();
        let key = LeafKey::generate(&provider);
        if let Err(message) = &key {
            tracing::error!(%message, "cannot generate the leaf certificate key");
        }
        Leaves {
            inner: Arc::new(Inner {
                ca,
                provider,
                key,
                configs: Mutex::new(BoundedMap::new(capacity)),
                reuse_for,
            }),
        }
    }

    /// A rustls server configuration presenting a leaf for `host` (and the CA after it),
    /// offering the protocols `alpn` (e.g. `[b"h2", b"http/1.1"]`).
    ///
    /// `host` is a DNS name (case and one trailing dot do not matter) or an IP address
    /// literal (IPv6 with or without brackets). The leaf has that name or address as its
    /// subjectAltName and common name, an ECDSA P-256 key, extendedKeyUsage serverAuth, a
    /// random serial, and is valid from a day ago for 30 days.
    ///
    /// ALPN follows rustls: the server picks the first protocol of `alpn` that the client
    /// offers; a client that offers protocols but none of these gets a
    /// `no_application_protocol` alert. An empty `alpn` negotiates nothing.
    ///
    /// Configurations are cached by host and `alpn`: asking again returns the same `Arc`
    /// without signing anything (until it is evicted, or 20 days old).
    pub fn server_config(
        &self,
        host: &str,
        alpn: &[&[u8]],
    ) -> Result<Arc<ServerConfig>, CertError> {
        let key = (
            Host::parse(host)?,
            alpn.iter().map(|p| p.to_vec()).collect(),
        );
        if let Some(config) = self.cached(&key) {
            return Ok(config);
        }
        // Signed outside the lock: other hosts need not wait for this one.
        let config = Arc::new(self.build(&key.0, key.1.clone())?);
        let mut configs = self.configs();
        // Another thread may have minted the same host meanwhile: keep the first, so that
        // every caller gets the same configuration (and TLS session cache).
        if let Some(config) = self.fresh(configs.get(&key)) {
            return Ok(config);
        }
        let cached = Cached {
            config: config.clone(),
            minted: Instant::now(),
        };
        configs.insert(key, cached);
        Ok(config)
    }

    /// How many host configurations are cached.
    pub fn len(&self) -> usize {
        self.configs().len()
    }

    /// Whether no host configuration is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cached(&self, key: &CacheKey) -> Option<Arc<ServerConfig>> {
        let found = self.configs().get(key);
        self.fresh(found)
    }

    fn fresh(&self, cached: Option<Cached>) -> Option<Arc<ServerConfig>> {
        cached
            .filter(|c| c.minted.elapsed() < self.inner.reuse_for)
            .map(|c| c.config)
    }

    fn configs(&self) -> MutexGuard<'_, BoundedMap<CacheKey, Cached>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent
        // (each operation completes before it returns): keep serving.
        self.inner
            .configs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn build(&self, host: &Host, alpn: Vec<Vec<u8>>) -> Result<ServerConfig, CertError> {
        let key = self
            .inner
            .key
            .as_ref()
            .map_err(|message| CertError::Generate(message.clone()))?;
        let leaf = self.mint(host, key)?;
        tracing::debug!(%host, "minted a leaf certificate");
        let chain = vec![leaf, self.inner.ca.cert().clone()];
        let certified = CertifiedKey::new(chain, key.signing.clone());
        let mut config = ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = alpn;
        Ok(config)
    }

    fn mint(&self, host: &Host, key: &LeafKey) -> Result<CertificateDer<'static>, CertError> {
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host.to_string());
        let san = match host {
            Host::Dns(dns) => SanType::DnsName(dns.as_str().try_into().map_err(generate)?),
            Host::Ip(ip) => SanType::IpAddress(*ip),
        };

        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        // Clients match the name against the subjectAltName only (the CN is for people).
        params.subject_alt_names = vec![san];
        // A TLS server key, nothing else: not a CA, not for client authentication.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        // Backdated a day for clients whose clocks run behind.
        params.not_before = now - Duration::days(1);
        params.not_after = now + LEAF_VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(&key.key, self.inner.ca.issuer())
            .map_err(generate)?;
        Ok(cert.der().clone())
    }
}

impl fmt::Debug for Leaves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaves")
            .field("ca", &self.inner.ca)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl LeafKey {
    fn generate(provider: &CryptoProvider) -> Result<LeafKey, String> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| e.to_string())?;
        Ok(LeafKey { key, signing })
    }
}

/// What a leaf is for: a DNS name (lower case, without a trailing dot) or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Host {
    Dns(String),
    Ip(IpAddr),
}

impl Host {
    fn parse(host: &str) -> Result<Host, CertError> {
        let invalid =
            || CertError::Generate(format!("{host:?} is neither a DNS name nor an IP address"));
        // Brackets, as in a URL's authority, around an IPv6 address only.
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| invalid());
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        // The syntax a client accepts for the name it connects to: a certificate for
        // anything else could never match.
        match DnsName::try_from(name.as_str()) {
            Ok(_) => Ok(Host::Dns(name)),
            Err(_) => Err(invalid()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}
