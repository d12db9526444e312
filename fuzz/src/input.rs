//! How the text targets read their bytes: lines, sections separated by a `--` line,
//! `name: value` header lines, and a control line of `key=value` numbers. Anything that
//! does not fit (a header line that is not a valid name or value) is skipped, so every
//! byte string is an input.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The lines of `data` (split at `\n`), grouped into sections at each line that is `--`.
pub fn sections(data: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut out = vec![Vec::new()];
    for line in data.split(|&b| b == b'\n') {
        if line == b"--" {
            out.push(Vec::new());
        } else if let Some(last) = out.last_mut() {
            last.push(line);
        }
    }
    out
}

/// Section `i` of `s`, empty if there is none.
pub fn section<'a>(s: &[Vec<&'a [u8]>], i: usize) -> Vec<&'a [u8]> {
    s.get(i).cloned().unwrap_or_default()
}

/// `name: value` lines as (name, value) pairs that `http` accepts, in order.
pub fn header_pairs(lines: &[&[u8]]) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = trim_ows(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            out.push((n, v));
        }
    }
    out
}

/// The header lines as a map (repeated names appended in order).
pub fn header_map(lines: &[&[u8]]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in header_pairs(lines) {
        map.append(n, v);
    }
    map
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// A control line: space-separated `key=number` pairs (numbers saturate; junk is 0).
#[derive(Debug, Default)]
pub struct Controls(Vec<(String, i128)>);

impl Controls {
    pub fn parse(line: &[u8]) -> Self {
        let text = String::from_utf8_lossy(line);
        Controls(
            text.split_ascii_whitespace()
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_string(), number(v)))
                .collect(),
        )
    }

    /// The value of `key`, or `default`.
    pub fn get(&self, key: &str, default: i128) -> i128 {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map_or(default, |(_, v)| *v)
    }

    pub fn u64(&self, key: &str, default: u64) -> u64 {
        self.get(key, default as i128).clamp(0, u64::MAX as i128) as u64
    }

    pub fn i64(&self, key: &str, default: i64) -> i64 {
        self.get(key, default as i128)
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    pub fn flag(&self, key: &str) -> bool {
        self.get(key, 0) != 0
    }
}

/// An optional sign and digits, saturating at the limits of `i128`; anything else is 0.
fn number(v: &str) -> i128 {
    let (neg, digits) = match v.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, v),
    };
    let mut n: i128 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add(i128::from(b - b'0'));
    }
    if neg {
        -n
    } else {
        n
    }
}

/// A time `secs` seconds (plus `millis`) from the Unix epoch, before it when negative;
/// times a `SystemTime` cannot hold are clamped to the epoch.
pub fn time(secs: i64, millis: u64) -> std::time::SystemTime {
    use std::time::{Duration, UNIX_EPOCH};
    let ms = Duration::from_millis(millis % 1000);
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(ms)).unwrap_or(UNIX_EPOCH)
}

/// A 64-bit hash of bytes (FNV-1a): deterministic choices derived from the input.
pub fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_headers_and_controls() {
        let s = sections(b"len=5 now=-3 big=99999999999999999999999999999999999999999\na: 1\nbad line\n--\nb:  2 \n");
        assert_eq!(s.len(), 2);
        let c = Controls::parse(s[0][0]);
        assert_eq!(c.u64("len", 0), 5);
        assert_eq!(c.i64("now", 0), -3);
        assert_eq!(c.u64("big", 0), u64::MAX);
        assert_eq!(c.u64("missing", 7), 7);
        let h = header_map(&s[1]);
        assert_eq!(h["b"], "2");
        assert_eq!(header_map(&s[0][1..])["a"], "1");
    }
}
