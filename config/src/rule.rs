//! `[[cache.rule]]`: freshness for responses that state none, chosen by URL (Squid's
//! `refresh_pattern`, nginx's `proxy_cache_valid`).

use std::fmt;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::units::duration_str;

/// One `[[cache.rule]]`. Rules are tried in the file's order; the first whose `url`
/// matches applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A regular expression (the `regex` crate's syntax), searched for in the URL as the
    /// cache keys it: the normalized absolute URL (`http://host/path?query`, scheme and
    /// host lower-case, no default port). Checked when the file is read. Required.
    pub url: UrlPattern,
    /// How long a matching response is fresh, where RFC 9111 lets a cache choose that
    /// itself (4.2.2: the response states no `max-age`, no `Expires`, on a gateway no
    /// `s-maxage`, and nothing such as `no-store`, `no-cache` or `private` forbids it): in
    /// place of the `Last-Modified` heuristic (`heuristic_fraction`). Whole seconds, at
    /// least `"1s"`. Required.
    #[serde(with = "duration_str")]
    pub fresh_for: Duration,
}

/// A regular expression on URLs, compiled when the file is read: a bad one is an error
/// with its file, line, column and field.
#[derive(Clone)]
pub struct UrlPattern(regex::Regex);

impl UrlPattern {
    /// Compiles `pattern`; the error says what is wrong with it, on one line.
    pub fn new(pattern: &str) -> Result<Self, String> {
        regex::Regex::new(pattern).map(UrlPattern).map_err(|e| {
            // The regex crate draws the pattern with a caret under the fault on the lines
            // above its last one, which says what is wrong.
            let text = e.to_string();
            let last = text.lines().last().unwrap_or_default().trim();
            let why = last.strip_prefix("error: ").unwrap_or(last);
            format!("invalid regular expression {pattern:?}: {why}")
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The compiled expression.
    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }
}

impl fmt::Debug for UrlPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for UrlPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for UrlPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for UrlPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(deserializer)?;
        UrlPattern::new(&pattern).map_err(de::Error::custom)
    }
}
