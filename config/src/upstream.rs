//! `origin.proxy` and `origin.no_proxy`: an upstream proxy for origin traffic, and the hosts
//! reached directly, in curl's syntax. The parsers are public so that the environment's
//! `http_proxy` / `NO_PROXY` are read the same way as the file (`proxy/settings.rs`).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// An upstream HTTP proxy: `http://host:port`. Only `http://` proxies are supported (plain
/// requests go to them in absolute form, HTTPS through their `CONNECT`); checked when the
/// file is read.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// The host: a name, an IPv4 address or an IPv6 address (without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl ProxyUrl {
    /// Parses `http://host:port` (a trailing `/` is allowed). `default_port`: the port when
    /// none is written (curl's 1080 for the environment's proxies); `None` requires one.
    /// A value without a scheme is taken as `http://` when `default_port` is given (as curl
    /// reads `http_proxy=proxy:3128`). The error says what is wrong, on one line.
    pub fn parse(text: &str, default_port: Option<u16>) -> Result<ProxyUrl, String> {
        let t = text.trim();
        let fail = |why: &str| Err(format!("{text:?} is not a proxy URL: {why}"));
        if t.is_empty() {
            return fail("it is empty");
        }
        let rest = match t.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return fail(&format!(
                    "only http:// upstream proxies are supported, not {}://",
                    scheme.to_ascii_lowercase()
                ))
            }
            None if default_port.is_some() => t,
            None => return fail("expected http://host:port"),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return fail("credentials in the proxy URL are not supported");
        }
        if rest.contains(['/', '?', '#']) {
            return fail("expected http://host:port, without a path");
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return fail("unclosed [ in the host");
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return fail("not an IPv6 address between [ ]");
            }
            match after {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return fail("expected :port after the address"),
                },
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return fail("write an IPv6 address in brackets: http://[::1]:3128")
                }
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return fail("no host");
        }
        if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
            return fail(&format!("{host:?} is not a host name or address"));
        }
        let port = match (port, default_port) {
            (Some(p), _) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return fail(&format!("{p:?} is not a port")),
            },
            (None, Some(d)) => d,
            (None, None) => return fail("it needs a port: http://host:port"),
        };
        Ok(ProxyUrl {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `host:port`, with an IPv6 address in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Letters, digits, `-`, `_` and dots (a DNS name as hosts files and resolvers take it).
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').enumerate().all(|(i, label)| {
            // A trailing dot (a fully qualified name) leaves one empty last label.
            (!label.is_empty() || (i > 0 && s.ends_with('.')))
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority())
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ProxyUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProxyUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ProxyUrl::parse(&text, None).map_err(de::Error::custom)
    }
}

/// One `no_proxy` entry (curl's `NO_PROXY` syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoProxyEntry {
    /// `*`: every host is reached directly.
    All,
    /// `example.com`, `.example.com` or `*.example.com`: that domain and its subdomains
    /// (lower case, without the leading dot or trailing dot).
    Domain(String),
    /// `10.0.0.0/8`, `192.168.1.7`, `::1`, `[::1]`: an address or a network, matched
    /// against hosts written as addresses (no name is resolved to match it).
    Net(IpNet),
}

impl NoProxyEntry {
    /// Parses one entry; the error says what is wrong, on one line.
    pub fn parse(text: &str) -> Result<NoProxyEntry, String> {
        let t = text.trim();
        if t == "*" {
            return Ok(NoProxyEntry::All);
        }
        let unbracketed = t
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(t);
        if let Ok(net) = unbracketed.parse::<IpNet>() {
            return Ok(NoProxyEntry::Net(net.trunc()));
        }
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(NoProxyEntry::Net(IpNet::from(ip)));
        }
        let domain = t
            .strip_prefix("*.")
            .or_else(|| t.strip_prefix('.'))
            .unwrap_or(t);
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if domain.contains(':') {
            return Err(format!(
                "{text:?} is not a no_proxy entry: ports are not supported (write the host alone)"
            ));
        }
        if !is_host_name(domain) {
            return Err(format!(
                "{text:?} is not a no_proxy entry (\"example.com\", \".example.com\", \
                 \"10.0.0.0/8\", an address or \"*\")"
            ));
        }
        Ok(NoProxyEntry::Domain(domain.to_ascii_lowercase()))
    }

    /// Does this entry cover `host` (a URL's host: a name, or an address with or without
    /// brackets)?
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host);
        match self {
            NoProxyEntry::All => true,
            NoProxyEntry::Net(net) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| net.contains(&ip.to_canonical())),
            NoProxyEntry::Domain(d) => {
                host.eq_ignore_ascii_case(d)
                    || (host.len() > d.len()
                        && host.as_bytes()[host.len() - d.len() - 1] == b'.'
                        && host[host.len() - d.len()..].eq_ignore_ascii_case(d))
            }
        }
    }

    /// Splits a `NO_PROXY` value (entries separated by commas or white space) into its
    /// entries, parsed; empty entries are skipped.
    pub fn parse_list(text: &str) -> Vec<Result<NoProxyEntry, String>> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .map(NoProxyEntry::parse)
            .collect()
    }
}

/// `origin.no_proxy`: hosts reached directly, not through the upstream proxy — a list of
/// entries or one comma-separated string, as `NO_PROXY` is written. Each entry is checked
/// when the file is read; the entries are kept as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy(pub Vec<String>);

impl NoProxy {
    /// The parsed entries (the file was checked: every one parses).
    pub fn entries(&self) -> Vec<NoProxyEntry> {
        self.0
            .iter()
            .filter_map(|e| NoProxyEntry::parse(e).ok())
            .collect()
    }
}

impl Serialize for NoProxy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NoProxy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            List(Vec<String>),
        }
        let entries: Vec<String> = match Form::deserialize(deserializer).map_err(|_| {
            de::Error::custom(
                "expected a list of hosts, domains and networks, or one comma-separated string",
            )
        })? {
            Form::One(s) => s
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
            Form::List(l) => l.into_iter().map(|e| e.trim().to_owned()).collect(),
        };
        for e in &entries {
            NoProxyEntry::parse(e).map_err(de::Error::custom)?;
        }
        Ok(NoProxy(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = ProxyUrl::parse("http://proxy.corp:3128", None).unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        let p = ProxyUrl::parse("HTTP://[::1]:8080/", None).unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 8080));
        assert_eq!(p.authority(), "[::1]:8080");
        assert_eq!(ProxyUrl::parse("10.0.0.1", Some(1080)).unwrap().port, 1080);
        assert_eq!(ProxyUrl::parse("proxy:81", Some(1080)).unwrap().port, 81);
        for (bad, why) in [
            ("https://p:1", "only http://"),
            ("socks5://p:1", "only http://"),
            ("http://p", "needs a port"),
            ("p:3128", "expected http://"),
            ("http://u:pw@p:1", "credentials"),
            ("http://p:1/x", "without a path"),
            ("http://p:0", "not a port"),
            ("http://p:x", "not a port"),
            ("http://::1:80", "brackets"),
            ("http://a b:1", "not a host name"),
            ("", "empty"),
        ] {
            let e = ProxyUrl::parse(bad, None).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn no_proxy_entries_match_as_curl_does() {
        let e = |s: &str| NoProxyEntry::parse(s).unwrap();
        assert!(e("example.com").matches("example.com"));
        assert!(e("example.com").matches("www.Example.com"));
        assert!(!e("example.com").matches("badexample.com"));
        assert!(e(".example.com").matches("example.com"));
        assert!(e(".example.com").matches("a.b.example.com."));
        assert!(e("*.example.com").matches("a.example.com"));
        assert!(e("*").matches("anything"));
        assert!(e("10.0.0.0/8").matches("10.1.2.3"));
        assert!(!e("10.0.0.0/8").matches("11.1.2.3"));
        assert!(
            !e("10.0.0.0/8").matches("ten.example"),
            "names are not resolved"
        );
        assert!(e("127.0.0.1").matches("127.0.0.1"));
        assert!(e("::1").matches("[::1]"));
        assert!(e("[::1]").matches("::1"));
        assert!(e("fd00::/8").matches("[fd12::1]"));
        assert!(!e("localhost").matches("127.0.0.1"));
        assert!(NoProxyEntry::parse("host:8080")
            .unwrap_err()
            .contains("ports"));
        assert!(NoProxyEntry::parse("a/b").is_err());
        let list = NoProxyEntry::parse_list("localhost, .corp ,10.0.0.0/8,,");
        assert_eq!(list.len(), 3);
        assert!(list.iter().all(Result::is_ok));
    }
}
