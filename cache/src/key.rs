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
    // What follows the host: nothing, `:` (the default port) or `:` and a valid port.
    // `port_u16` reads `:65536` (or the `a` of `[::1]a`) as no port at all, so such a
    // target was keyed — and connected to — as the default port while its `Host` named
    // another: refused.
    let port = match &authority.as_str()[authority.host().len()..] {
        "" | ":" => None,
        after => {
            let p = after.strip_prefix(':')?;
            if !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(p.parse::<u16>().ok()?)
        }
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = if path.is_empty() || path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Some(match port {
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
/// a response that varies on `names`: each named header's value as [`vary_value`] reads it.
/// A header that is absent differs from one that is present but empty (RFC 9111 4.1: an
/// absent field only matches an absent one; `Accept-Encoding:` asks for no coding, no
/// header for any).
pub fn variant_key(names: &[String], request_headers: &HeaderMap) -> String {
    let mut out = String::new();
    for name in names {
        out.push_str(name);
        if let Some(value) = vary_value(name, request_headers) {
            out.push('=');
            out.push_str(&value);
        }
        out.push('\n');
    }
    out
}

/// Request headers whose values RFC 9111 4.1 lets a cache case-normalize when matching
/// `Vary`: their members are case-insensitive tokens (language ranges, RFC 4647 2;
/// content-codings, RFC 9110 8.4.1). Their order is kept: it may carry a preference.
const CASE_INSENSITIVE_VALUES: &[&str] = &["accept-language", "accept-encoding"];

/// The value of request header `name` (lower-case) as `Vary` matching compares it (RFC
/// 9111 4.1), `None` when it is absent: repeated field lines joined as one list, optional
/// whitespace around its members removed, and for headers whose values are defined to be
/// case-insensitive, lower-cased. Only optional whitespace (SP, HTAB) is trimmed, not a
/// no-break space; bytes that are not UTF-8 are written as hex after a byte no header value
/// holds (0x01), so two different values never read the same.
pub fn vary_value(name: &str, request_headers: &HeaderMap) -> Option<String> {
    let mut values = request_headers.get_all(name).iter().peekable();
    values.peek()?;
    let lower = CASE_INSENSITIVE_VALUES.contains(&name);
    let mut out = String::new();
    let mut first = true;
    for v in values {
        for part in v.as_bytes().split(|&b| b == b',') {
            if !first {
                out.push(',');
            }
            first = false;
            let part = part.trim_ascii();
            match std::str::from_utf8(part) {
                Ok(text) if lower => out.push_str(&text.to_ascii_lowercase()),
                Ok(text) => out.push_str(text),
                Err(_) => {
                    out.push('\u{1}');
                    for b in part {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    Some(out)
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

    /// Found by the `key` fuzz target: `http://a:65536/x` was keyed `http://a/x` (the
    /// `http` crate parses the port but `port_u16` says there is none; the same for the
    /// `a` of `http://[::1]a/x`), and the origin
    /// connection went to port 80 with `Host: a:65536` — a response to another `Host`
    /// stored under `http://a/x`, served to everyone who asks for it.
    #[test]
    fn port_beyond_65535_is_refused_not_dropped() {
        assert_eq!(key("http://example.com:65536/x"), None);
        assert_eq!(key("http://example.com:99999999999999999999/x"), None);
        assert_eq!(key("http://[::1]:65536/x"), None);
        assert_eq!(key("http://[::1]a/x"), None);
        assert_eq!(
            key("http://example.com:65535/x").as_deref(),
            Some("http://example.com:65535/x")
        );
        assert_eq!(
            key("http://example.com:/x").as_deref(),
            Some("http://example.com/x")
        );
        assert_eq!(key("http://[::1]:080/x").as_deref(), Some("http://[::1]/x"));
        assert_eq!(key("http://[::1]/x").as_deref(), Some("http://[::1]/x"));
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

    /// Found by the `key` fuzz target: `Accept-Encoding:` (empty) and no `Accept-Encoding`
    /// had the same variant key, so a gzip variant stored for the one was served to the
    /// other, which asked for no content coding.
    #[test]
    fn absent_and_empty_headers_are_different_variants() {
        let names = vec!["accept-encoding".to_string()];
        let mut empty = HeaderMap::new();
        empty.insert("accept-encoding", "".parse().unwrap());
        let absent = HeaderMap::new();
        assert_ne!(variant_key(&names, &empty), variant_key(&names, &absent));
        let mut also_empty = HeaderMap::new();
        also_empty.insert("accept-encoding", " ".parse().unwrap());
        assert_eq!(
            variant_key(&names, &empty),
            variant_key(&names, &also_empty)
        );
    }

    /// Found by the `key` fuzz target: values were read lossily and trimmed of Unicode
    /// whitespace, so `br` and `br\u{a0}`, or two different non-UTF-8 values, selected the
    /// same stored variant.
    #[test]
    fn values_differing_in_a_no_break_space_or_non_utf8_bytes_are_different_variants() {
        let names = vec!["accept-encoding".to_string()];
        let with = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert("accept-encoding", http::HeaderValue::from_bytes(v).unwrap());
            variant_key(&names, &h)
        };
        assert_ne!(with(b"br"), with("br\u{a0}".as_bytes()));
        assert_ne!(with(b"x\xff"), with(b"x\xfe"));
        assert_ne!(with(b"x\xff"), with("x\u{fffd}".as_bytes()));
        assert_eq!(with(b"gzip ,\tbr"), with(b"gzip,br"));
        assert_eq!(with("caf\u{e9}".as_bytes()), "accept-encoding=caf\u{e9}\n");
    }

    #[test]
    fn vary_values_combine_lines_drop_whitespace_and_lower_language_tags_only() {
        let names = vec!["accept-language".to_string(), "foo".to_string()];
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
                h.append(name, v.parse().unwrap());
            }
            h
        };
        let a = headers(&[("accept-language", "en, de"), ("foo", "1, 2")]);
        let b = headers(&[
            ("accept-language", " eN ,   De"),
            ("foo", "1"),
            ("foo", " 2 "),
        ]);
        assert_eq!(variant_key(&names, &a), variant_key(&names, &b));
        assert_eq!(vary_value("accept-language", &b).unwrap(), "en,de");
        // Order may carry a preference; other headers' case may be significant.
        let order = headers(&[("accept-language", "de, en"), ("foo", "1, 2")]);
        assert_ne!(variant_key(&names, &a), variant_key(&names, &order));
        let case = headers(&[("accept-language", "en, de"), ("foo", "A")]);
        let lower = headers(&[("accept-language", "en, de"), ("foo", "a")]);
        assert_ne!(variant_key(&names, &case), variant_key(&names, &lower));
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
