//! The cache key. "Getting this wrong leads to cache poisoning" (pingora): this is the one
//! place that decides which requests share a stored response.
//!
//! The primary key is the normalized absolute URL: scheme and host lower-cased, the default
//! port dropped, an empty path written as `/`, the query kept byte for byte, no user info.
//! Variants under one URL are told apart by the request headers the response's `Vary`
//! names ([`variant_key`]).

use http::{HeaderMap, Uri};

/// The normalized absolute URL of a request, or `None` when the URI is not an absolute
/// `http`/`https` URL with a host (such requests are never cached).
pub fn primary_key(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = if path.is_empty() || path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Some(match authority.port_u16() {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}{path}"),
        _ => format!("{scheme}://{host}{path}"),
    })
}

/// The request header names a response's `Vary` lists, lower-cased and sorted;
/// `None` for `Vary: *` (such a response never matches a later request).
pub fn vary_names(response_headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for value in response_headers.get_all(http::header::VARY) {
        let value = value.to_str().ok()?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            names.push(name.to_ascii_lowercase());
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// A string that is equal for two requests exactly when they select the same variant of
/// a response that varies on `names`: each named header's values, normalized by joining
/// repeated fields with `, ` and trimming whitespace around commas.
pub fn variant_key(names: &[String], request_headers: &HeaderMap) -> String {
    let mut out = String::new();
    for name in names {
        out.push_str(name);
        out.push('=');
        let mut first = true;
        for v in request_headers.get_all(name.as_str()) {
            for part in String::from_utf8_lossy(v.as_bytes()).split(',') {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(part.trim());
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<String> {
        primary_key(&s.parse().unwrap())
    }

    #[test]
    fn normalizes_scheme_host_and_default_port() {
        assert_eq!(
            key("HTTP://Example.COM:80/a?b=C").as_deref(),
            Some("http://example.com/a?b=C")
        );
        assert_eq!(
            key("https://example.com:443/x").as_deref(),
            Some("https://example.com/x")
        );
        assert_eq!(
            key("http://example.com:8080/x").as_deref(),
            Some("http://example.com:8080/x")
        );
        assert_eq!(
            key("http://example.com").as_deref(),
            Some("http://example.com/")
        );
        assert_eq!(
            key("http://example.com?q").as_deref(),
            Some("http://example.com/?q")
        );
    }

    #[test]
    fn path_and_query_case_are_kept() {
        assert_ne!(key("http://a/X"), key("http://a/x"));
        assert_ne!(key("http://a/x?A"), key("http://a/x?a"));
        assert_ne!(key("http://a/x"), key("https://a/x"));
        assert_ne!(key("http://a:81/x"), key("http://a/x"));
    }

    #[test]
    fn refuses_non_http_relative_and_userinfo() {
        assert_eq!(key("/relative"), None);
        assert_eq!(key("ftp://a/x"), None);
        assert_eq!(key("http://user:pw@a/x"), None);
    }

    #[test]
    fn vary_star_and_names() {
        let mut h = HeaderMap::new();
        h.append("vary", "Accept-Encoding, accept-language".parse().unwrap());
        h.append("vary", "Accept-Encoding".parse().unwrap());
        assert_eq!(
            vary_names(&h).unwrap(),
            vec!["accept-encoding", "accept-language"]
        );
        h.append("vary", "*".parse().unwrap());
        assert_eq!(vary_names(&h), None);
    }

    #[test]
    fn variant_key_tells_values_apart_and_normalizes_whitespace() {
        let names = vec!["accept-encoding".to_string()];
        let mut a = HeaderMap::new();
        a.insert("accept-encoding", "gzip,  br".parse().unwrap());
        let mut b = HeaderMap::new();
        b.append("accept-encoding", "gzip".parse().unwrap());
        b.append("accept-encoding", "br".parse().unwrap());
        let c = HeaderMap::new();
        assert_eq!(variant_key(&names, &a), variant_key(&names, &b));
        assert_ne!(variant_key(&names, &a), variant_key(&names, &c));
    }
}
