//! meshcache's configuration file: parsing and validation, nothing else.
//!
//! The file is TOML. [`Config`] is the whole file, one struct per table:
//! [`Listen`] (`[listen]`, the client side), [`Data`] (`[data]`, where state
//! is stored), [`Cache`] (`[cache]`, sizes and caching policy; its `[[cache.rule]]`
//! entries are [`Rule`]s), [`Origin`]
//! (`[origin]`, talking to origin servers and where they may be), [`Tls`] (`[tls]`),
//! [`Mesh`] (`[mesh]`, nearby devices), [`Admin`] (`[admin]`, admin clients), [`Sync`]
//! (`[sync]` and `[[sync.feed]]`, feed sync) and [`Log`] (`[log]`). Every field
//! is optional and has a default (an empty file is the default
//! configuration); unknown fields are errors. Sizes are [`ByteSize`] values
//! (`"64MiB"` or an integer of bytes) and durations are written as strings
//! such as `"10s"`, `"500ms"`, `"2m"` or `"1h"` (or an integer of seconds).
//!
//! [`Config::load`] reads and checks a file, [`Config::from_toml_str`] does
//! the same for text, and [`Config::to_toml_string`] writes the effective
//! configuration back. Every failure is a [`ConfigError`] naming the file,
//! and for syntax or type errors the line, column and field.

#![warn(missing_docs)]

mod error;
mod rule;
mod sync;
mod units;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use units::duration_str;

pub use error::ConfigError;
pub use rule::{Rule, UrlPattern};
pub use sync::{Feed, Media, Sync};
pub use units::{ByteSize, ParseUnitError};
pub use upstream::{NoProxy, NoProxyEntry, ProxyUrl};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[listen]`: the proxy's client side. Default: see [`Listen`].
    pub listen: Listen,
    /// `[data]`: where state is stored. Default: see [`Data`].
    pub data: Data,
    /// `[cache]`: cache sizes and policy. Default: see [`Cache`].
    pub cache: Cache,
    /// `[origin]`: connections to origin servers. Default: see [`Origin`].
    pub origin: Origin,
    /// `[log]`: logging. Default: see [`Log`].
    pub log: Log,
    /// `[tls]`: HTTPS interception. Default: see [`Tls`].
    pub tls: Tls,
    /// `[mesh]`: nearby devices. Default: see [`Mesh`].
    pub mesh: Mesh,
    /// `[admin]`: admin clients. Default: see [`Admin`].
    pub admin: Admin,
    /// `[sync]`: feeds kept up to date from nearby devices. Default: see [`Sync`].
    pub sync: Sync,
}

/// `[listen]`: where and how the proxy accepts clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// Address of the forward-proxy listener. Default `127.0.0.1:3128`.
    pub forward: SocketAddr,
    /// Most client connections served at once, all clients together (tunnels
    /// and intercepted HTTPS included); must be above 0. Default 1024.
    pub max_connections: usize,
    /// Most connections one client address may hold at once, so that one
    /// client cannot take every connection; must be above 0. Default 256 (a
    /// browser on a phone uses well under 100; a gateway raises
    /// `max_connections`, not this).
    pub max_connections_per_client: usize,
    /// Most concurrent streams on one HTTP/2 connection; must be above 0.
    /// Default 100.
    pub h2_max_concurrent_streams: u32,
    /// Largest request head (request line and headers) accepted from a
    /// client; must be above 0. Default 64 KiB (`"64KiB"`, 65536 bytes).
    pub max_header_bytes: ByteSize,
    /// A client must send a complete request head within this: the first
    /// counted from accept (a connection that sends nothing is closed), later
    /// ones from their first byte; non-zero. Default `"10s"`.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// Idle keep-alive client connections are kept at least this long;
    /// non-zero. Default `"75s"`.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// Client networks served (CIDR, e.g. `"10.0.0.0/8"`); connections from
    /// anywhere else are refused, so the proxy is never an open proxy.
    /// Default loopback only: `["127.0.0.0/8", "::1/128"]`.
    pub allow: Vec<String>,
    /// Address of the transparent listener for connections a gateway's
    /// firewall redirected (`REDIRECT`); Linux only. Default unset (off).
    pub transparent: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            forward: SocketAddr::from(([127, 0, 0, 1], 3128)),
            max_connections: 1024,
            max_connections_per_client: 256,
            h2_max_concurrent_streams: 100,
            max_header_bytes: ByteSize(64 << 10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            transparent: None,
        }
    }
}

/// Parses a CIDR network such as `"10.0.0.0/8"`, `"::1/128"` or a bare address
/// (a single host); host bits are cleared (`"10.1.2.3/8"` is `10.0.0.0/8`).
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    match s.parse::<ipnet::IpNet>() {
        Ok(net) => Some(net.trunc()),
        Err(_) => s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from),
    }
}

/// `[admin]`: who may see and change what passengers must not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Admin clients (CIDR): they alone get the pages that reveal secrets or
    /// change state (group tickets, peer details, `/share`, the full status),
    /// and may make the proxy connect to local destinations. Every other
    /// allowed client gets the CA pages, the PAC file and a public summary.
    /// Default this machine only: `["127.0.0.1/32", "::1/128"]` (`127.0.0.2`
    /// is not an admin).
    pub allow: Vec<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            allow: vec!["127.0.0.1/32".into(), "::1/128".into()],
        }
    }
}

/// `[data]`: where meshcache keeps its state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Data {
    /// Directory for the cache's files. Default unset: the platform's data
    /// directory, which is resolved outside this crate.
    pub dir: Option<PathBuf>,
}

/// `[cache]`: sizes and caching policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cache {
    /// Total size of stored bodies; least recently used entries are evicted
    /// beyond it. Default `"10GiB"`.
    pub max_size: ByteSize,
    /// Larger responses stream through uncached; at most `max_size`.
    /// Default `"4GiB"`.
    pub max_object_size: ByteSize,
    /// `false`: an on-device single-user cache (private responses are kept
    /// for this user, never shared); `true`: a gateway following RFC 9111's
    /// shared-cache rules. Default `false`.
    pub shared: bool,
    /// Fraction of (Date - Last-Modified) used as heuristic freshness; in
    /// 0.0..=1.0. Default `0.1`.
    pub heuristic_fraction: f64,
    /// A Range request on a miss whose first byte is within this many bytes
    /// of the start (or of an in-progress fill's position) fills the whole
    /// object while answering; a range further out is forwarded uncached.
    /// Default `"16MiB"`.
    pub range_offset_limit: ByteSize,
    /// A fill whose every client has gone away keeps downloading if the
    /// object is at most this size. Default `"256MiB"`.
    pub background_fill_max: ByteSize,
    /// Memory for hot small bodies. Default `"64MiB"`.
    pub memory_cache_size: ByteSize,
    /// Largest body kept in the memory cache; at most `memory_cache_size`.
    /// Default `"256KiB"`.
    pub memory_object_max: ByteSize,
    /// Disk space always left free: a response is stored only if this much
    /// would remain; below it the cache passes requests through.
    /// Default `"64MiB"`.
    pub min_free_space: ByteSize,
    /// `[[cache.rule]]`: freshness for responses that state none, by URL, tried in
    /// order (the first whose `url` matches applies). Default none.
    pub rule: Vec<Rule>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            max_size: ByteSize(10 << 30),
            max_object_size: ByteSize(4 << 30),
            shared: false,
            heuristic_fraction: 0.1,
            range_offset_limit: ByteSize(16 << 20),
            background_fill_max: ByteSize(256 << 20),
            memory_cache_size: ByteSize(64 << 20),
            memory_object_max: ByteSize(256 << 10),
            min_free_space: ByteSize(64 << 20),
            rule: Vec::new(),
        }
    }
}

/// `[origin]`: connections to origin servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Origin {
    /// Time allowed to connect to an origin (through an upstream proxy: to connect
    /// to it, and again for its answer to `CONNECT`); non-zero. Default `"10s"`.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// The origin must start its response within this, else the client
    /// gets a 504; non-zero. Default `"30s"`.
    #[serde(with = "duration_str")]
    pub response_header_timeout: Duration,
    /// Longest gap allowed between body chunks from the origin; non-zero.
    /// Default `"60s"`.
    #[serde(with = "duration_str")]
    pub body_idle_timeout: Duration,
    /// Idle connections pooled per origin host (0: no pooling). Default 32.
    pub max_idle_per_host: usize,
    /// Pooled idle connections are closed after this; non-zero.
    /// Default `"90s"`.
    #[serde(with = "duration_str")]
    pub pool_idle_timeout: Duration,
    /// Destination networks (CIDR) every client may reach, even where the
    /// built-in rules refuse them (loopback, link-local, the proxy's own
    /// addresses, private ranges in shared mode) — not those in `deny`.
    /// Default empty.
    pub allow: Vec<String>,
    /// Destination networks (CIDR) no client may reach, admins included.
    /// Default empty.
    pub deny: Vec<String>,
    /// Ports a client that is not an admin may `CONNECT` to (Squid's
    /// `SSL_ports`). Default `[443]`.
    pub connect_ports: Vec<u16>,
    /// An upstream proxy for origin traffic, `"http://host:port"` (only `http://`
    /// proxies): plain requests go to it in absolute form, HTTPS through its `CONNECT`
    /// (origin certificates are still verified here). Default unset: the environment's
    /// `https_proxy` / `HTTPS_PROXY`, `http_proxy` (lower case only) and `all_proxy` /
    /// `ALL_PROXY`, read as curl reads them, unless one points at this proxy itself.
    pub proxy: Option<ProxyUrl>,
    /// Hosts reached directly, not through the upstream proxy: curl's `NO_PROXY`
    /// syntax, a list or one comma-separated string — `"example.com"` (it and its
    /// subdomains, as `".example.com"`), addresses and networks (`"10.0.0.0/8"`,
    /// matched against hosts written as addresses), `"*"` (every host). Applies to the
    /// environment's proxies too, with `NO_PROXY` / `no_proxy`. Default empty.
    pub no_proxy: NoProxy,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            connect_timeout: Duration::from_secs(10),
            response_header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            max_idle_per_host: 32,
            pool_idle_timeout: Duration::from_secs(90),
            allow: Vec::new(),
            deny: Vec::new(),
            connect_ports: vec![443],
            proxy: None,
            no_proxy: NoProxy::default(),
        }
    }
}

/// `[tls]`: HTTPS interception with the local CA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// Intercept `CONNECT` tunnels (decrypt with a certificate from the local
    /// CA, so HTTPS is cached); `false` tunnels everything blindly.
    /// Default `true`.
    pub intercept: bool,
    /// Hosts always tunnelled blindly (banks, pinned apps): `"bank.example"`
    /// (exactly), `"*.bank.example"` (its subdomains), `".bank.example"`
    /// (the domain and its subdomains). Default empty.
    pub passthrough: Vec<String>,
    /// PEM files of extra CA certificates trusted for origins (private CAs),
    /// on top of the operating system's trust store. Default empty.
    pub extra_roots: Vec<PathBuf>,
    /// How long a host whose client refused our certificate (a pinned app) is
    /// tunnelled blindly for that client (other clients are still
    /// intercepted); non-zero. Default `"7d"`.
    #[serde(with = "duration_str")]
    pub learned_passthrough_ttl: Duration,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            intercept: true,
            passthrough: Vec::new(),
            extra_roots: Vec::new(),
            learned_passthrough_ttl: Duration::from_secs(7 * 86400),
        }
    }
}

/// `[mesh]`: sharing the cache with nearby devices over iroh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mesh {
    /// Run the mesh. Default `true` (it shares nothing until the device joins a
    /// group: `meshcache group create` / `group join`).
    pub enabled: bool,
    /// UDP address of the mesh endpoint. Default `"0.0.0.0:4919"` (the LAN).
    pub listen: SocketAddr,
    /// A relay server URL for peers that cannot reach each other directly.
    /// Default unset (LAN only).
    pub relay: Option<String>,
    /// Peers added by hand: tickets printed by `meshcache mesh addr`.
    /// Default empty.
    pub peers: Vec<String>,
    /// Endpoint ids (64 hex digits) whose attestations are trusted without a
    /// shared group. Default empty.
    pub friends: Vec<String>,
    /// Talk to strangers nearby (the open mesh, docs/mesh.md): ask and answer only
    /// for what a stranger cannot forge (URLs that name their hash, a hash the client
    /// or the origin stated, a signer this device trusts), under a separate identity
    /// made anew at every start. Default `true`.
    pub open: bool,
    /// UDP address of the open mesh's endpoint. Default `"0.0.0.0:0"` (any free
    /// port; strangers find it by mDNS or ticket).
    pub open_listen: SocketAddr,
    /// Strangers added by hand: open-mesh tickets (`/status.json`, `mesh.open_ticket`).
    /// Default empty.
    pub open_peers: Vec<String>,
    /// Carriage operators: endpoint ids (64 hex digits) whose attestations are
    /// trusted whoever relays them (a gateway's id from its onboarding page).
    /// Default empty.
    pub operators: Vec<String>,
    /// This device is a carriage operator: it answers strangers with attestations
    /// under its own (published) id. Default `false` (a device relays only others'
    /// signatures to strangers, so its group identity is never linked to its open one).
    pub operator: bool,
    /// How often the open mesh's identity is made anew (it is also new at every
    /// start); non-zero. Default `"24h"`.
    #[serde(with = "duration_str")]
    pub open_rotate: Duration,
    /// Find peers on the LAN by mDNS (needs a default or multicast route).
    /// Default `true`.
    pub mdns: bool,
    /// Exchange catalogs with members, so a miss asks only the peers that may hold
    /// the key (off: every miss asks every member). Default `true`.
    pub catalogs: bool,
    /// How long a miss waits for peers' answers; non-zero. Default `"50ms"`.
    #[serde(with = "duration_str")]
    pub lookup_timeout: Duration,
    /// How long a miss waits for a peer that is fetching the same object.
    /// Default `"30s"`.
    #[serde(with = "duration_str")]
    pub peer_fill_wait: Duration,
    /// A transfer from a peer with no progress for this long is abandoned;
    /// non-zero. Default `"10s"`.
    #[serde(with = "duration_str")]
    pub fetch_idle_timeout: Duration,
    /// How long a misbehaving peer is banned; non-zero. Default `"10m"`.
    #[serde(with = "duration_str")]
    pub ban_duration: Duration,
    /// Largest file that may be shared or fetched by share ticket; above 0.
    /// Default `"512MiB"`.
    pub share_max_file: ByteSize,
    /// Most bytes all shared files together may hold (they are kept apart
    /// from the cache's `max_size`); at least `share_max_file`.
    /// Default `"2GiB"`.
    pub share_max_size: ByteSize,
}

impl Default for Mesh {
    fn default() -> Self {
        Mesh {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 4919)),
            relay: None,
            peers: Vec::new(),
            friends: Vec::new(),
            open: true,
            open_listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            open_peers: Vec::new(),
            operators: Vec::new(),
            operator: false,
            open_rotate: Duration::from_secs(24 * 3600),
            mdns: true,
            catalogs: true,
            lookup_timeout: Duration::from_millis(50),
            peer_fill_wait: Duration::from_secs(30),
            fetch_idle_timeout: Duration::from_secs(10),
            ban_duration: Duration::from_secs(600),
            share_max_file: ByteSize(512 << 20),
            share_max_size: ByteSize(2 << 30),
        }
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A tracing `EnvFilter` directive string such as `"info"` or
    /// `"warn,meshcache=debug"`; must not be blank. Default `"info"`.
    pub level: String,
    /// Log one line per client request. Default `true`.
    pub access: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_owned(),
            access: true,
        }
    }
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and [validates](Config::validate) configuration text; `origin`
    /// is the file name used in error messages.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(&e, text, origin))?;
        config.validate().map_err(|e| e.in_file(origin))?;
        Ok(config)
    }

    /// Checks that the values make sense together. The error's `path` is
    /// empty; [`Config::from_toml_str`] fills it in.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.sync.validate()?;
        let (listen, cache, origin) = (&self.listen, &self.cache, &self.origin);
        let networks = [
            ("listen.allow", &self.listen.allow),
            ("admin.allow", &self.admin.allow),
            ("origin.allow", &self.origin.allow),
            ("origin.deny", &self.origin.deny),
        ];
        for (name, list) in networks {
            for (i, a) in list.iter().enumerate() {
                if parse_cidr(a).is_none() {
                    return Err(ConfigError::Invalid {
                        path: PathBuf::new(),
                        field: format!("{name}[{i}]"),
                        message: format!(
                            "{a:?} is not a network (\"10.0.0.0/8\", \"::1/128\" or an address)"
                        ),
                    });
                }
            }
        }
        for (i, p) in self.tls.passthrough.iter().enumerate() {
            let host = p.trim_start_matches("*.").trim_start_matches('.');
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '*')
            {
                return Err(ConfigError::Invalid {
                    path: PathBuf::new(),
                    field: format!("tls.passthrough[{i}]"),
                    message: format!(
                        "{p:?} is not a host pattern (\"host\", \"*.domain\" or \".domain\")"
                    ),
                });
            }
        }
        for (i, p) in self.mesh.peers.iter().enumerate() {
            if !p.trim().starts_with("endpoint") {
                return Err(ConfigError::Invalid {
                    path: PathBuf::new(),
                    field: format!("mesh.peers[{i}]"),
                    message: format!(
                        "{p:?} is not a peer ticket (`meshcache mesh addr` prints one: endpoint…)"
                    ),
                });
            }
        }
        for (i, p) in self.mesh.open_peers.iter().enumerate() {
            if !p.trim().starts_with("endpoint") {
                return Err(ConfigError::Invalid {
                    path: PathBuf::new(),
                    field: format!("mesh.open_peers[{i}]"),
                    message: format!(
                        "{p:?} is not a peer ticket (the open mesh's ticket is on the status page: endpoint…)"
                    ),
                });
            }
        }
        for (name, list) in [
            ("mesh.friends", &self.mesh.friends),
            ("mesh.operators", &self.mesh.operators),
        ] {
            for (i, f) in list.iter().enumerate() {
                if f.len() != 64 || !f.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(ConfigError::Invalid {
                        path: PathBuf::new(),
                        field: format!("{name}[{i}]"),
                        message: format!("{f:?} is not an endpoint id (64 hex digits)"),
                    });
                }
            }
        }
        if self.tls.learned_passthrough_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                path: PathBuf::new(),
                field: "tls.learned_passthrough_ttl".into(),
                message: "must be non-zero".into(),
            });
        }
        let check = |ok: bool, field: &str, message: String| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    path: PathBuf::new(),
                    field: field.to_owned(),
                    message,
                })
            }
        };
        let above_zero = || "must be above 0".to_owned();
        check(
            listen.max_connections > 0,
            "listen.max_connections",
            above_zero(),
        )?;
        check(
            listen.max_connections_per_client > 0,
            "listen.max_connections_per_client",
            above_zero(),
        )?;
        check(
            listen.h2_max_concurrent_streams > 0,
            "listen.h2_max_concurrent_streams",
            above_zero(),
        )?;
        check(
            self.mesh.share_max_file.bytes() > 0,
            "mesh.share_max_file",
            above_zero(),
        )?;
        check(
            self.mesh.share_max_file <= self.mesh.share_max_size,
            "mesh.share_max_file",
            format!(
                "{} is larger than mesh.share_max_size ({})",
                self.mesh.share_max_file, self.mesh.share_max_size
            ),
        )?;
        check(
            listen.max_header_bytes.bytes() > 0,
            "listen.max_header_bytes",
            above_zero(),
        )?;
        let timeouts = [
            ("listen.header_read_timeout", listen.header_read_timeout),
            ("listen.idle_timeout", listen.idle_timeout),
            ("origin.connect_timeout", origin.connect_timeout),
            (
                "origin.response_header_timeout",
                origin.response_header_timeout,
            ),
            ("origin.body_idle_timeout", origin.body_idle_timeout),
            ("origin.pool_idle_timeout", origin.pool_idle_timeout),
            ("mesh.lookup_timeout", self.mesh.lookup_timeout),
            ("mesh.fetch_idle_timeout", self.mesh.fetch_idle_timeout),
            ("mesh.ban_duration", self.mesh.ban_duration),
            ("mesh.open_rotate", self.mesh.open_rotate),
        ];
        for (field, timeout) in timeouts {
            check(!timeout.is_zero(), field, "must not be zero".to_owned())?;
        }
        for (i, rule) in cache.rule.iter().enumerate() {
            check(
                rule.fresh_for.as_secs() > 0,
                &format!("cache.rule[{i}].fresh_for"),
                "must be at least 1s".to_owned(),
            )?;
        }
        check(
            cache.max_object_size <= cache.max_size,
            "cache.max_object_size",
            format!(
                "{} is larger than cache.max_size ({})",
                cache.max_object_size, cache.max_size
            ),
        )?;
        check(
            cache.memory_object_max <= cache.memory_cache_size,
            "cache.memory_object_max",
            format!(
                "{} is larger than cache.memory_cache_size ({})",
                cache.memory_object_max, cache.memory_cache_size
            ),
        )?;
        check(
            (0.0..=1.0).contains(&cache.heuristic_fraction),
            "cache.heuristic_fraction",
            format!("{} is not between 0.0 and 1.0", cache.heuristic_fraction),
        )?;
        check(
            !self.log.level.trim().is_empty(),
            "log.level",
            "must not be empty".to_owned(),
        )
    }

    /// The configuration as TOML with every field, which
    /// [`Config::from_toml_str`] reads back as the same configuration. An
    /// unset `data.dir` is written as a comment; a `data.dir` that is not
    /// UTF-8 is written lossily (TOML strings are UTF-8).
    pub fn to_toml_string(&self) -> String {
        let mut config = self.clone();
        if let Some(dir) = &mut config.data.dir {
            *dir = PathBuf::from(dir.to_string_lossy().into_owned());
        }
        // With a UTF-8 path every value is representable in TOML, so this
        // does not fail.
        let mut text = toml::to_string(&config).unwrap_or_else(|e| format!("# {e}\n"));
        if config.data.dir.is_none() {
            text = text.replacen(
                "[data]\n",
                "[data]\n# dir: unset, the platform's data directory\n",
                1,
            );
        }
        text
    }
}

#[cfg(test)]
mod tests;
