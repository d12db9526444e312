//! Turns a parsed [`config::Config`] into the options of each part (ripgrep's
//! low-args → high-args step). The library crates never see the config crate.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::origin::OriginOptions;
use crate::server::ServerOptions;

/// Everything needed to start a proxy.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub cache: cache::Options,
    pub origin: OriginOptions,
    pub server: ServerOptions,
    pub access_log: bool,
    pub tls: TlsSettings,
    /// The transparent listener's address (gateways). Default none.
    pub transparent: Option<SocketAddr>,
    /// The mesh. Default none (off) here; the configuration file turns it on.
    pub mesh: Option<mesh::Options>,
}

/// HTTPS interception settings. Every field documents its default.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Intercept CONNECT with the local CA. Default true.
    pub intercept: bool,
    /// Host patterns always tunnelled blindly. Default none.
    pub passthrough: Vec<String>,
    /// How long a host whose client refused our certificate is tunnelled. Default 7 days.
    pub learned_ttl: std::time::Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            intercept: true,
            passthrough: Vec::new(),
            learned_ttl: std::time::Duration::from_secs(7 * 86400),
        }
    }
}

impl Settings {
    /// Settings with every default, storing in `data_dir`, listening on `listen`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            cache: cache::Options::new(data_dir.join("cache")),
            data_dir,
            origin: OriginOptions::default(),
            server: ServerOptions::default(),
            access_log: true,
            tls: TlsSettings::default(),
            transparent: None,
            mesh: None,
        }
    }

    /// Resolves a configuration; `data_dir` is the already-resolved data directory.
    pub fn from_config(cfg: &config::Config, data_dir: PathBuf) -> Self {
        let mut s = Self::new(cfg.listen.forward, data_dir);
        let c = &cfg.cache;
        s.cache.max_size = c.max_size.bytes();
        s.cache.max_object_size = c.max_object_size.bytes();
        s.cache.shared = c.shared;
        s.cache.heuristic_fraction = c.heuristic_fraction as f32;
        s.cache.range_offset_limit = c.range_offset_limit.bytes();
        s.cache.background_fill_max = c.background_fill_max.bytes();
        s.cache.memory_cache_size = c.memory_cache_size.bytes();
        s.cache.memory_object_max = c.memory_object_max.bytes();
        s.cache.min_free_space = c.min_free_space.bytes();
        let o = &cfg.origin;
        s.origin = OriginOptions {
            connect_timeout: o.connect_timeout,
            response_header_timeout: o.response_header_timeout,
            body_idle_timeout: o.body_idle_timeout,
            max_idle_per_host: o.max_idle_per_host,
            pool_idle_timeout: o.pool_idle_timeout,
            extra_roots: cfg.tls.extra_roots.clone(),
        };
        s.tls = TlsSettings {
            intercept: cfg.tls.intercept,
            passthrough: cfg.tls.passthrough.clone(),
            learned_ttl: cfg.tls.learned_passthrough_ttl,
        };
        let l = &cfg.listen;
        s.server = ServerOptions {
            max_connections: l.max_connections,
            max_header_bytes: l.max_header_bytes.bytes() as usize,
            header_read_timeout: l.header_read_timeout,
            idle_timeout: l.idle_timeout,
            allow: l
                .allow
                .iter()
                .filter_map(|a| config::parse_cidr(a))
                .collect(),
        };
        s.access_log = cfg.log.access;
        s.transparent = cfg.listen.transparent;
        let m = &cfg.mesh;
        s.mesh = m.enabled.then(|| {
            let mut o = mesh::Options::new(s.data_dir.join("mesh"));
            o.bind = m.listen;
            o.relay = m.relay.clone();
            o.peers = m.peers.clone();
            o.friends = m.friends.clone();
            o.mdns = m.mdns;
            o.lookup_timeout = m.lookup_timeout;
            o.peer_fill_wait = m.peer_fill_wait;
            o.fetch_idle_timeout = m.fetch_idle_timeout;
            o.ban_duration = m.ban_duration;
            o.heuristic_fraction = c.heuristic_fraction as f32;
            o
        });
        s
    }
}

/// Where the local CA lives inside a data directory.
pub fn ca_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("ca")
}

/// The platform's data directory for meshcache (`$XDG_DATA_HOME/meshcache`,
/// `~/.local/share/meshcache`, `~/Library/Application Support/meshcache`, …), or
/// `./meshcache-data` when the platform has none.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("meshcache"))
        .unwrap_or_else(|| PathBuf::from("meshcache-data"))
}
