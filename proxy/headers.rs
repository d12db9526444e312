//! Header plumbing: hop-by-hop stripping (RFC 9110 7.6.1), `Via` (7.6.3, and loop
//! detection), and `Cache-Status` (RFC 9211).

use http::header::{HeaderName, HeaderValue, CONNECTION};
use http::HeaderMap;

/// Fields that describe one connection, not the message: never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A client's range and validators: a fill asks the origin for the whole representation
/// and answers these locally, so they are removed from what goes upstream.
pub const CLIENT_CONDITIONALS: [HeaderName; 6] = [
    http::header::RANGE,
    http::header::IF_RANGE,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_MATCH,
    http::header::IF_UNMODIFIED_SINCE,
];

/// Removes hop-by-hop fields, including those the `Connection` field names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(*n);
    }
}

/// This proxy's `Via` pseudonym; unique per process so a forwarding loop through this
/// very process is recognised while a chain of distinct meshcache proxies still works.
#[derive(Debug, Clone)]
pub struct Via {
    token: String,
    value: HeaderValue,
}

impl Via {
    pub fn new(instance: u32) -> Self {
        let token = format!("meshcache-{instance:08x}");
        let value = HeaderValue::from_str(&format!("1.1 {token}"))
            .unwrap_or(HeaderValue::from_static("1.1 meshcache"));
        Self { token, value }
    }

    /// True when the message already passed through this process.
    pub fn is_loop(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(http::header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|hop| hop.split_whitespace().nth(1) == Some(self.token.as_str()))
    }

    /// Appends this hop, keeping earlier ones.
    pub fn append(&self, headers: &mut HeaderMap) {
        headers.append(http::header::VIA, self.value.clone());
    }
}

/// How a response was produced, for `Cache-Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Served from the cache without contacting the origin.
    Hit,
    /// Served from a fill another request started (collapsed forwarding).
    Collapsed,
    /// Stale entry served while revalidating in the background.
    StaleWhileRevalidate,
    /// Stale entry served because the origin failed.
    StaleOnError(String),
    /// Stale entry revalidated with the origin (304).
    Revalidated,
    /// Fetched from the origin. `stored` when it is being stored.
    Miss {
        vary_miss: bool,
        stored: bool,
        detail: Option<&'static str>,
    },
    /// Stale entry replaced by a new response from the origin.
    StaleReplaced { stored: bool },
    /// Fetched from a peer (and now stored); `stale` when served because the origin is
    /// unreachable.
    Peer { peer: String, stale: bool },
    /// Byte ranges fetched from a peer for this request only (nothing stored).
    PeerRange { peer: String },
    /// Not cacheable by method; forwarded.
    Bypass(&'static str),
    /// Answered by the proxy itself (status page, errors).
    Local(&'static str),
}

impl Phase {
    /// Short name for the access log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Hit => "hit",
            Phase::Collapsed => "collapsed",
            Phase::StaleWhileRevalidate => "stale-swr",
            Phase::StaleOnError(_) => "stale-error",
            Phase::Revalidated => "revalidated",
            Phase::Miss { .. } => "miss",
            Phase::StaleReplaced { .. } => "stale-miss",
            Phase::Peer { .. } | Phase::PeerRange { .. } => "peer",
            Phase::Bypass(_) => "bypass",
            Phase::Local(_) => "local",
        }
    }

    /// The `Cache-Status` field value (RFC 9211).
    pub fn cache_status(&self, fwd_status: Option<u16>) -> String {
        let mut s = String::from("meshcache");
        match self {
            Phase::Hit => s.push_str("; hit"),
            Phase::Collapsed => s.push_str("; hit; detail=collapsed"),
            Phase::StaleWhileRevalidate => {
                s.push_str("; hit; fwd=stale; detail=stale-while-revalidate")
            }
            Phase::StaleOnError(why) => {
                s.push_str("; fwd=stale; detail=");
                s.push_str(why);
            }
            Phase::Revalidated => s.push_str("; fwd=stale"),
            Phase::Miss {
                vary_miss,
                stored,
                detail,
            } => {
                s.push_str(if *vary_miss {
                    "; fwd=vary-miss"
                } else {
                    "; fwd=miss"
                });
                if *stored {
                    s.push_str("; stored");
                }
                if let Some(d) = detail {
                    s.push_str("; detail=");
                    s.push_str(d);
                }
            }
            Phase::StaleReplaced { stored } => {
                s.push_str("; fwd=stale");
                if *stored {
                    s.push_str("; stored");
                }
            }
            Phase::Peer { peer, stale } => {
                s.push_str(if *stale {
                    "; fwd=stale; stored; detail=origin-unreachable"
                } else {
                    "; fwd=miss; stored"
                });
                s.push_str("; peer=\"");
                s.push_str(peer);
                s.push('"');
            }
            Phase::PeerRange { peer } => {
                s.push_str("; fwd=miss; detail=peer-range; peer=\"");
                s.push_str(peer);
                s.push('"');
            }
            Phase::Bypass(why) => {
                s.push_str("; fwd=bypass; detail=");
                s.push_str(why);
            }
            Phase::Local(why) => {
                s.push_str("; detail=");
                s.push_str(why);
            }
        }
        if let Some(code) = fwd_status {
            if !matches!(self, Phase::Hit | Phase::Collapsed | Phase::Local(_)) {
                s.push_str(&format!("; fwd-status={code}"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_connection_named_fields() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn via_detects_own_token_only() {
        let via = Via::new(0xabc);
        let other = Via::new(0xdef);
        let mut h = HeaderMap::new();
        h.append("via", "1.1 squid, 1.0 gateway".parse().unwrap());
        assert!(!via.is_loop(&h));
        other.append(&mut h);
        assert!(!via.is_loop(&h));
        via.append(&mut h);
        assert!(via.is_loop(&h));
    }

    #[test]
    fn cache_status_values() {
        assert_eq!(Phase::Hit.cache_status(None), "meshcache; hit");
        let miss = Phase::Miss {
            vary_miss: false,
            stored: true,
            detail: None,
        };
        assert_eq!(
            miss.cache_status(Some(200)),
            "meshcache; fwd=miss; stored; fwd-status=200"
        );
    }
}
