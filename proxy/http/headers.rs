//! Header plumbing: hop-by-hop stripping (RFC 9110 7.6.1), `Via` (7.6.3, and loop
//! detection), and the client conditionals a fill answers locally.

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
}
