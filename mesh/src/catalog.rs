//! Catalogs: a compact, lossy summary of the cache keys
//! a device can share, so a miss asks only the peers that may hold the key. A Golomb-coded
//! set (as BIP 158's block filters): each key is hashed into `[0, n·M)`, the sorted values
//! are sent as Golomb–Rice coded gaps with `P` = 8 (M = 256) — about 9.5 bits per key, no
//! false negatives, 1/256 ≈ 0.39 % false positives. (A binary fuse filter, xorf's
//! `BinaryFuse8`, was measured first: 12.8 KB per 10,000 keys at this size, over the 12 KB
//! target.) Only for trusted peers: strangers get no catalog (a filter answers "do you
//! hold URL X?" for anyone who can guess X).
//!
//! A catalog arrives from the network: [`Filter::decode`] bounds the count and checks that
//! the bits decode to exactly that many values, each in range, before it is used; the
//! values are then kept sorted for lookups by binary search.
//!
//! The exchange (whole catalog on connect, deltas after, the miss path consulting them,
//! feed heads) is `exchange.rs`.

use serde::{Deserialize, Serialize};

/// Golomb–Rice parameter: remainders of `P` bits, false positives 1 / 2^P.
const P: u32 = 8;
/// Most keys a catalog from the network may hold.
pub const MAX_KEYS: u32 = 1 << 20;

/// A set of cache keys, lossy (false positives, never false negatives).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The number of keys it was built from (the range of the values is `n << P`).
    n: u32,
    /// The hashed values, sorted, deduplicated.
    values: Vec<u64>,
}

/// The wire form.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    n: u32,
    /// Values coded (at most `n`: keys that hash alike are one value).
    count: u32,
    bits: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog does not decode: {0}")]
    Decode(String),
    #[error("catalog is inconsistent: {0}")]
    Invalid(&'static str),
}

/// A key's 64-bit hash: what deltas carry, and what a filter's values are scaled from.
pub fn key_hash(key: &str) -> u64 {
    let d = blake3::derive_key("meshcache catalog v1 key", key.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

/// The value of `key` in a set of `n` keys: its hash scaled into `[0, n << P)`.
fn value(key: &str, n: u32) -> u64 {
    scaled(key_hash(key), n)
}

fn scaled(h: u64, n: u32) -> u64 {
    ((h as u128 * ((n as u128) << P)) >> 64) as u64
}

impl Filter {
    /// A filter of these cache keys.
    pub fn build<'a>(keys: impl IntoIterator<Item = &'a str>) -> Filter {
        let keys: Vec<&str> = keys.into_iter().collect();
        let n = keys.len().min(u32::MAX as usize) as u32;
        let mut values: Vec<u64> = keys.iter().map(|k| value(k, n)).collect();
        values.sort_unstable();
        values.dedup();
        Filter { n, values }
    }

    /// May the set hold `key`?
    pub fn may_hold(&self, key: &str) -> bool {
        self.may_hold_hash(key_hash(key))
    }

    /// May the set hold the key whose [`key_hash`] is `h`?
    pub fn may_hold_hash(&self, h: u64) -> bool {
        self.n > 0 && self.values.binary_search(&scaled(h, self.n)).is_ok()
    }

    /// Keys it was built from.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = BitWriter::default();
        let mut last = 0u64;
        for &v in &self.values {
            let gap = v - last;
            last = v;
            for _ in 0..(gap >> P) {
                w.bit(true);
            }
            w.bit(false);
            for i in (0..P).rev() {
                w.bit((gap >> i) & 1 == 1);
            }
        }
        postcard::to_stdvec(&Wire {
            n: self.n,
            count: self.values.len() as u32,
            bits: w.bytes,
        })
        .unwrap_or_default()
    }

    /// A catalog from the network: at most [`MAX_KEYS`], every value in range and above the
    /// one before, exactly as many values as it says, nothing after them but padding.
    pub fn decode(bytes: &[u8]) -> Result<Filter, CatalogError> {
        let w: Wire =
            postcard::from_bytes(bytes).map_err(|e| CatalogError::Decode(e.to_string()))?;
        if w.n > MAX_KEYS || w.count > w.n {
            return Err(CatalogError::Invalid("too many keys"));
        }
        // Each value takes at least P + 1 bits: a claim the bits cannot back is refused
        // before anything is allocated for it.
        if (w.bits.len() as u64) * 8 < w.count as u64 * (P as u64 + 1) {
            return Err(CatalogError::Invalid("truncated"));
        }
        let range = (w.n as u64) << P;
        let mut r = BitReader {
            bytes: &w.bits,
            pos: 0,
        };
        let mut values = Vec::with_capacity(w.count as usize);
        let mut last = 0u64;
        while values.len() < w.count as usize {
            let mut q = 0u64;
            loop {
                match r.bit() {
                    Some(true) => q += 1,
                    Some(false) => break,
                    None => return Err(CatalogError::Invalid("truncated")),
                }
                if q > range >> P {
                    return Err(CatalogError::Invalid("gap out of range"));
                }
            }
            let mut rem = 0u64;
            for _ in 0..P {
                rem = (rem << 1) | r.bit().ok_or(CatalogError::Invalid("truncated"))? as u64;
            }
            let v = last + (q << P) + rem;
            if v >= range || (!values.is_empty() && v == last) {
                return Err(CatalogError::Invalid("value out of range"));
            }
            values.push(v);
            last = v;
        }
        // What is left may only be the last byte's padding.
        if r.pos + 8 <= r.bytes.len() * 8 {
            return Err(CatalogError::Invalid("trailing bits"));
        }
        Ok(Filter { n: w.n, values })
    }
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u32,
}

impl BitWriter {
    fn bit(&mut self, b: bool) {
        if self.used.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if b {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> (self.used % 8);
        }
        self.used += 1;
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.pos / 8)?;
        let b = byte & (0x80 >> (self.pos % 8)) != 0;
        self.pos += 1;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize, tag: &str) -> Vec<String> {
        (0..n)
            .map(|i| format!("https://cdn{}.example.org/{tag}/{i}.jpg", i % 7))
            .collect()
    }

    #[test]
    fn ten_thousand_keys_in_at_most_12_kb_with_under_half_a_percent_false_hits() {
        let members = keys(10_000, "in");
        let f = Filter::build(members.iter().map(|k| k.as_str()));
        let bytes = f.encode();
        assert!(
            bytes.len() <= 12 * 1024,
            "{} bytes per 10,000 keys",
            bytes.len()
        );
        let g = Filter::decode(&bytes).unwrap();
        assert_eq!(g.values, f.values, "round trip");
        assert!(members.iter().all(|k| g.may_hold(k)), "no false negatives");
        let probes = keys(200_000, "out");
        let false_hits = probes.iter().filter(|k| g.may_hold(k)).count();
        let rate = false_hits as f64 / probes.len() as f64;
        assert!(rate <= 0.005, "false hits {rate:.4}");
        eprintln!(
            "catalog: {} bytes per 10,000 keys, false hits {:.3} % of {} probes",
            bytes.len(),
            rate * 100.0,
            probes.len()
        );
    }

    #[test]
    fn empty_and_duplicate_keys() {
        let f = Filter::decode(&Filter::build([]).encode()).unwrap();
        assert!(!f.may_hold("http://a/"));
        assert!(f.is_empty());
        let f = Filter::decode(&Filter::build(["http://a/", "http://a/", "http://b/"]).encode())
            .unwrap();
        assert!(f.may_hold("http://a/") && f.may_hold("http://b/"));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn hostile_catalogs_are_refused_or_stay_in_bounds() {
        let big = |n: u32, count: u32, bits: Vec<u8>| {
            postcard::to_stdvec(&Wire { n, count, bits }).unwrap()
        };
        assert!(
            Filter::decode(&big(MAX_KEYS + 1, 0, vec![])).is_err(),
            "too many keys"
        );
        assert!(
            Filter::decode(&big(2, 3, vec![0; 8])).is_err(),
            "more values than keys"
        );
        assert!(
            Filter::decode(&big(4, 4, vec![0xff; 64])).is_err(),
            "a gap beyond the range"
        );
        assert!(
            Filter::decode(&big(1, 1, vec![0, 0, 0, 0])).is_err(),
            "trailing bits"
        );
        assert!(Filter::decode(&big(3, 3, vec![0x00])).is_err(), "truncated");
        assert!(Filter::decode(b"\xff\xff").is_err());
        let good = Filter::build(keys(500, "x").iter().map(|k| k.as_str())).encode();
        for seed in 0..3000usize {
            let mut bytes = good.clone();
            let i = (seed * 7919) % bytes.len();
            bytes[i] = bytes[i].wrapping_add((seed % 251) as u8 + 1);
            if let Ok(f) = Filter::decode(&bytes) {
                assert!(f.values.len() <= f.n as usize);
                assert!(f.values.windows(2).all(|w| w[0] < w[1]), "sorted");
                let _ = f.may_hold("k");
            }
        }
    }
}
