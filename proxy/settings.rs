//! Turns a parsed [`config::Config`] into the options of each part (ripgrep's low-args →
//! high-args step). The library crates never see the config crate, and there is one set of
//! defaults: the config's. [`Settings::new`] is [`Settings::from_config`] on the default
//! configuration (with the mesh off, so an embedding app opts in). Neither reads the
//! environment: [`Settings::upstream_from_environment`] takes the `http_proxy` family from
//! an [`Environment`] (the binary's is the process's; tests give a map).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::origin::destination::DestinationOptions;
use crate::origin::upstream::{Upstream, UpstreamOptions, CONFIGURED};
use crate::origin::OriginOptions;

/// Everything needed to start a proxy.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub cache: cache::Options,
    pub origin: OriginOptions,
    pub server: ServerOptions,
    /// Where clients may make the proxy connect (`origin.allow`, `deny`, `connect_ports`).
    pub destinations: DestinationOptions,
    pub access_log: bool,
    pub tls: TlsSettings,
    /// The transparent listener's address (gateways), if any.
    pub transparent: Option<SocketAddr>,
    /// The mesh; `None` when off.
    pub mesh: Option<mesh::Options>,
    /// Feed sync (`[sync]`).
    pub sync: config::Sync,
}

/// HTTPS interception settings (`[tls]`).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Intercept CONNECT with the local CA.
    pub intercept: bool,
    /// Host patterns always tunnelled blindly.
    pub passthrough: Vec<String>,
    /// How long a host whose client refused our certificate is tunnelled for that client.
    pub learned_ttl: std::time::Duration,
}

fn networks(list: &[String]) -> Vec<IpNet> {
    // The config was validated: every entry parses.
    list.iter().filter_map(|a| config::parse_cidr(a)).collect()
}

impl Settings {
    /// Settings with every default, storing in `data_dir`, listening on `listen`, without
    /// the mesh.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        let mut s = Self::from_config(&config::Config::default(), data_dir);
        s.listen = listen;
        s.mesh = None;
        s
    }

    /// Resolves a configuration; `data_dir` is the already-resolved data directory.
    pub fn from_config(cfg: &config::Config, data_dir: PathBuf) -> Self {
        let c = &cfg.cache;
        let mut cache = cache::Options::new(data_dir.join("cache"));
        cache.max_size = c.max_size.bytes();
        cache.max_object_size = c.max_object_size.bytes();
        cache.shared = c.shared;
        cache.heuristic_fraction = c.heuristic_fraction as f32;
        cache.range_offset_limit = c.range_offset_limit.bytes();
        cache.background_fill_max = c.background_fill_max.bytes();
        cache.memory_cache_size = c.memory_cache_size.bytes();
        cache.memory_object_max = c.memory_object_max.bytes();
        cache.min_free_space = c.min_free_space.bytes();
        cache.rules = cache::policy::Rules::new(
            c.rule
                .iter()
                .map(|r| cache::policy::Rule {
                    url: r.url.regex().clone(),
                    fresh_for: r.fresh_for,
                })
                .collect(),
        );
        let o = &cfg.origin;
        let origin = OriginOptions {
            connect_timeout: o.connect_timeout,
            response_header_timeout: o.response_header_timeout,
            body_idle_timeout: o.body_idle_timeout,
            max_idle_per_host: o.max_idle_per_host,
            pool_idle_timeout: o.pool_idle_timeout,
            extra_roots: cfg.tls.extra_roots.clone(),
            upstream: {
                let configured = o.proxy.as_ref().map(|p| Upstream {
                    host: p.host.clone(),
                    port: p.port,
                    from: CONFIGURED.to_string(),
                });
                UpstreamOptions {
                    http: configured.clone(),
                    https: configured,
                    no_proxy: o.no_proxy.entries(),
                }
            },
        };
        let destinations = DestinationOptions {
            allow: networks(&o.allow),
            deny: networks(&o.deny),
            connect_ports: o.connect_ports.clone(),
        };
        let tls = TlsSettings {
            intercept: cfg.tls.intercept,
            passthrough: cfg.tls.passthrough.clone(),
            learned_ttl: cfg.tls.learned_passthrough_ttl,
        };
        let l = &cfg.listen;
        let server = ServerOptions {
            max_connections: l.max_connections,
            max_connections_per_client: l.max_connections_per_client,
            max_header_bytes: l.max_header_bytes.bytes() as usize,
            header_read_timeout: l.header_read_timeout,
            idle_timeout: l.idle_timeout,
            h2_max_concurrent_streams: l.h2_max_concurrent_streams,
            allow: networks(&l.allow),
            admin: networks(&cfg.admin.allow),
        };
        let m = &cfg.mesh;
        let mesh = m.enabled.then(|| {
            let mut o = mesh::Options::new(data_dir.join("mesh"));
            o.bind = m.listen;
            o.relay = m.relay.clone();
            o.peers = m.peers.clone();
            o.friends = m.friends.clone();
            o.open = m.open;
            o.open_bind = m.open_listen;
            o.open_peers = m.open_peers.clone();
            o.operators = m.operators.clone();
            o.operator = m.operator;
            o.open_rotate = m.open_rotate;
            o.mdns = m.mdns;
            o.catalogs = m.catalogs;
            o.watch = cfg
                .sync
                .feed
                .iter()
                .filter_map(|f| {
                    f.url
                        .parse::<http::Uri>()
                        .ok()
                        .and_then(|u| cache::key::primary_key(&u))
                })
                .collect();
            o.lookup_timeout = m.lookup_timeout;
            o.peer_fill_wait = m.peer_fill_wait;
            o.fetch_idle_timeout = m.fetch_idle_timeout;
            o.ban_duration = m.ban_duration;
            o.heuristic_fraction = c.heuristic_fraction as f32;
            o.share_max_file = m.share_max_file.bytes();
            o.share_max_size = m.share_max_size.bytes();
            o
        });
        Self {
            listen: l.forward,
            data_dir,
            cache,
            origin,
            server,
            destinations,
            access_log: cfg.log.access,
            tls,
            transparent: l.transparent,
            mesh,
            sync: cfg.sync.clone(),
        }
    }
}

/// Where settings read environment variables (linkerd2-proxy's env trait): the process's
/// ([`ProcessEnvironment`]), or a map in tests, which never change their own environment.
pub trait Environment {
    /// The variable's value, if it is set (to valid UTF-8).
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// curl's default port for a proxy written without one.
const CURL_PROXY_PORT: u16 = 1080;

impl Settings {
    /// Unless `origin.proxy` is set, the upstream proxies of the environment, read as curl
    /// reads them: `https_proxy` / `HTTPS_PROXY` for `https://` origins (and tunnels),
    /// `http_proxy` — lower case only: curl ignores `HTTP_PROXY`, which a CGI program would
    /// take from a request's `Proxy:` header ("httpoxy") — for `http://` ones, `all_proxy` /
    /// `ALL_PROXY` for either when its own is unset; `no_proxy` / `NO_PROXY` joins
    /// `origin.no_proxy`. Lower case first; an empty value is unset; a value without a
    /// scheme is `http://`, without a port curl's 1080. Values that cannot be used (another
    /// scheme than `http://`, a malformed one) are ignored with a log line. An upstream that
    /// turns out to be this proxy itself is dropped when it starts ([`crate::App::start`]).
    pub fn upstream_from_environment(&mut self, env: &dyn Environment) {
        let up = &mut self.origin.upstream;
        if up.http.as_ref().is_some_and(|u| !u.from_environment()) {
            return;
        }
        let first = |names: &[&'static str]| {
            names
                .iter()
                .find_map(|&n| env.var(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
        };
        let read = |found: Option<(&'static str, String)>| {
            let (name, value) = found?;
            match config::ProxyUrl::parse(&value, Some(CURL_PROXY_PORT)) {
                Ok(p) => Some(Upstream {
                    host: p.host,
                    port: p.port,
                    from: name.to_string(),
                }),
                Err(e) => {
                    tracing::warn!("ignoring {name}: {e}");
                    None
                }
            }
        };
        let all = || read(first(&["all_proxy", "ALL_PROXY"]));
        up.http = read(first(&["http_proxy"])).or_else(all);
        up.https = read(first(&["https_proxy", "HTTPS_PROXY"])).or_else(all);
        if env.var("HTTP_PROXY").is_some() && env.var("http_proxy").is_none() {
            tracing::info!(
                "HTTP_PROXY is ignored, as curl ignores it (a CGI program would take it from a                  request's Proxy: header); set http_proxy for http:// origins"
            );
        }
        if let Some((name, value)) = first(&["no_proxy", "NO_PROXY"]) {
            for entry in config::NoProxyEntry::parse_list(&value) {
                match entry {
                    Ok(e) => up.no_proxy.push(e),
                    Err(e) => tracing::warn!("ignoring an entry of {name}: {e}"),
                }
            }
        }
    }
}

/// Limits of the client side. The defaults are those of `config::Listen`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once, all clients together; more are answered 503 and closed.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are answered 503.
    pub max_connections_per_client: usize,
    /// Largest request head; larger gets 431. Also h2's header list limit.
    pub max_header_bytes: usize,
    /// A connection must deliver a whole request head within this of being accepted (and
    /// each later head within this of its first byte); else it is closed.
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Concurrent streams on one h2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Client networks served; others are refused with 403.
    pub allow: Vec<IpNet>,
    /// Admin clients: the pages that reveal secrets or change state, and local
    /// destinations, are theirs only.
    pub admin: Vec<IpNet>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The library crates keep defaults of their own (they do not see the config crate);
    /// they must be the config's.
    #[test]
    fn library_defaults_are_the_configs() {
        let dir = PathBuf::from("/tmp/x");
        let s = Settings::from_config(&config::Config::default(), dir.clone());
        let lib = cache::Options::new(dir.join("cache"));
        assert_eq!(s.cache.max_size, lib.max_size);
        assert_eq!(s.cache.max_object_size, lib.max_object_size);
        assert_eq!(s.cache.shared, lib.shared);
        assert_eq!(s.cache.heuristic_fraction, lib.heuristic_fraction);
        assert_eq!(s.cache.range_offset_limit, lib.range_offset_limit);
        assert_eq!(s.cache.background_fill_max, lib.background_fill_max);
        assert_eq!(s.cache.memory_cache_size, lib.memory_cache_size);
        assert_eq!(s.cache.memory_object_max, lib.memory_object_max);
        assert_eq!(s.cache.min_free_space, lib.min_free_space);
        assert_eq!(s.cache.rules.is_empty(), lib.rules.is_empty());
        let m = s.mesh.expect("the mesh is on by default");
        let lib = mesh::Options::new(dir.join("mesh"));
        assert_eq!(m.bind, lib.bind);
        assert_eq!(m.mdns, lib.mdns);
        assert_eq!(m.open, lib.open);
        assert_eq!(m.open_bind, lib.open_bind);
        assert_eq!(m.operator, lib.operator);
        assert_eq!(m.open_rotate, lib.open_rotate);
        assert_eq!(m.lookup_timeout, lib.lookup_timeout);
        assert_eq!(m.peer_fill_wait, lib.peer_fill_wait);
        assert_eq!(m.fetch_idle_timeout, lib.fetch_idle_timeout);
        assert_eq!(m.ban_duration, lib.ban_duration);
        assert_eq!(m.heuristic_fraction, lib.heuristic_fraction);
        assert_eq!(m.share_max_file, lib.share_max_file);
        assert_eq!(m.share_max_size, lib.share_max_size);
    }

    fn env(vars: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn upstreams(vars: &[(&str, &str)]) -> UpstreamOptions {
        let mut s = Settings::new("127.0.0.1:9".parse().unwrap(), PathBuf::from("/tmp/y"));
        s.upstream_from_environment(&env(vars));
        s.origin.upstream
    }

    fn named(u: &Option<Upstream>) -> Option<(String, String)> {
        u.as_ref().map(|u| (u.authority(), u.from.clone()))
    }

    #[test]
    fn environment_proxies_are_read_as_curl_reads_them() {
        let some = |a: &str, from: &str| Some((a.to_string(), from.to_string()));
        let u = upstreams(&[]);
        assert!(u.http.is_none() && u.https.is_none());
        // HTTP_PROXY (upper case) is ignored, as by curl; https_proxy before HTTPS_PROXY.
        let u = upstreams(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTPS_PROXY", "http://upper:3"),
        ]);
        assert_eq!(named(&u.http), None);
        assert_eq!(named(&u.https), some("lower:2", "https_proxy"));
        let u = upstreams(&[("http_proxy", "proxy.corp"), ("HTTPS_PROXY", "[::1]:8")]);
        assert_eq!(named(&u.http), some("proxy.corp:1080", "http_proxy"));
        assert_eq!(named(&u.https), some("[::1]:8", "HTTPS_PROXY"));
        // ALL_PROXY stands in for either; an empty value is unset.
        let u = upstreams(&[("http_proxy", ""), ("ALL_PROXY", "http://all:9")]);
        assert_eq!(named(&u.http), some("all:9", "ALL_PROXY"));
        assert_eq!(named(&u.https), some("all:9", "ALL_PROXY"));
        // Unusable values are ignored; NO_PROXY entries join origin.no_proxy.
        let u = upstreams(&[
            ("https_proxy", "socks5://s:1"),
            ("http_proxy", "http://p:1"),
            ("NO_PROXY", "corp.example, bad:1, 10.0.0.0/8"),
        ]);
        assert!(u.https.is_none());
        assert_eq!(u.no_proxy.len(), 2);
        assert!(u.route(false, "www.corp.example").is_none());
        assert!(u.route(false, "example.org").is_some());
    }

    #[test]
    fn origin_proxy_in_the_file_wins_over_the_environment() {
        let cfg = config::Config::from_toml_str(
            "[origin]\nproxy = \"http://parent:3128\"\nno_proxy = [\"direct.example\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let mut s = Settings::from_config(&cfg, PathBuf::from("/tmp/z"));
        s.upstream_from_environment(&env(&[
            ("http_proxy", "http://other:1"),
            ("no_proxy", "example.org"),
        ]));
        let u = &s.origin.upstream;
        let parent = Some(("parent:3128".to_string(), "origin.proxy".to_string()));
        assert_eq!(named(&u.http), parent);
        assert_eq!(named(&u.https), parent);
        assert!(u.route(true, "direct.example").is_none());
        assert!(
            u.route(true, "example.org").is_some(),
            "the environment's no_proxy is not read"
        );
    }

    #[test]
    fn new_is_the_default_configuration_without_the_mesh() {
        let s = Settings::new("127.0.0.1:9".parse().unwrap(), PathBuf::from("/tmp/y"));
        assert!(s.mesh.is_none());
        assert_eq!(s.server.admin.len(), 2);
        assert!(!crate::listen::allowed(
            &s.server.admin,
            "127.0.0.2".parse().unwrap()
        ));
        assert_eq!(s.destinations.connect_ports, vec![443]);
    }
}
