//! Target `range`: `Range` and `If-Range` → the proxy's range parser
//! (`meshcache::parse_range`, `first_byte`, `if_range_matches`).
//!
//! Input: a control line `len=N`, request header lines (`Range`, `If-Range`), then a
//! `--` section of stored response headers (`ETag`, `Last-Modified`).
//!
//! Invariants: every range of a `Partial` answer is non-empty and lies within `0..len`,
//! the list has at most 16 ranges, sorted and neither overlapping nor touching (they were
//! coalesced); `Unsatisfiable` only when the header asked for something; `first_byte` is
//! no later than the first range served, and is it when that range starts where asked;
//! `If-Range` without the header matches, with a weak validator never does; all of them
//! deterministic.

use http::HeaderMap;
use meshcache::{first_byte, if_range_matches, parse_range, Ranges};

use crate::input::{header_map, section, sections, Controls};
use crate::mutate::Shape;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "range",
    run,
    seeds,
    shape: Shape {
        dictionary: DICTIONARY,
        text: true,
        max_len: 1024,
    },
    stats: crate::no_stats,
};

const DICTIONARY: &[&str] = &[
    "bytes=",
    "Bytes=",
    "items=",
    "range: ",
    "if-range: ",
    "etag: ",
    "last-modified: ",
    "-",
    ",",
    ", ",
    "0-",
    "-0",
    "0-0",
    "-1",
    "len=0",
    "len=1",
    "len=18446744073709551615",
    "\"v1\"",
    "W/\"v1\"",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994",
    "Fri, 31 Dec 9999 23:59:59 GMT",
];

pub fn seeds() -> Vec<Vec<u8>> {
    [
        "len=1000\nrange: bytes=0-99\n--\n",
        "len=1000\nrange: bytes=-100\n--\n",
        "len=1000\nrange: bytes=990-5000, 0-9,5-19\n--\n",
        "len=1000\nrange: bytes=1000-\n--\n",
        "len=0\nrange: bytes=-5\n--\n",
        "len=0\nrange: bytes=0-\n--\n",
        "len=18446744073709551615\nrange: bytes=18446744073709551614-18446744073709551615\n--\n",
        "len=100\nrange: bytes=0-1,2-3,4-5,6-7,8-9,10-11,12-13,14-15,16-17,18-19,20-21,22-23,24-25,26-27,28-29,30-31,32-33\n--\n",
        "len=50\nrange: bytes=10-20\nif-range: \"v1\"\n--\netag: \"v1\"\n",
        "len=50\nrange: bytes=10-20\nif-range: W/\"v1\"\n--\netag: W/\"v1\"\n",
        "len=50\nrange: bytes=10-20\nif-range: Sun, 06 Nov 1994 08:49:37 GMT\n--\nlast-modified: Sunday, 06-Nov-94 08:49:37 GMT\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub fn run(data: &[u8]) {
    let s = sections(data);
    let first = section(&s, 0);
    let controls = Controls::parse(first.first().copied().unwrap_or_default());
    let len = controls.u64("len", 1000);
    let req = header_map(first.get(1..).unwrap_or_default());
    let res = header_map(&section(&s, 1));
    check(&req, &res, len);
}

/// Checks the range functions on one request (and stored response) for a length.
pub fn check(req: &HeaderMap, res: &HeaderMap, len: u64) {
    let ranges = parse_range(req, len);
    assert_eq!(ranges, parse_range(req, len), "not deterministic");
    let first = first_byte(req);
    match &ranges {
        Ranges::Full => note(1),
        Ranges::Unsatisfiable => {
            note(2);
            assert!(req.contains_key(http::header::RANGE));
        }
        Ranges::Partial(list) => {
            note(3 + list.len() as u64);
            assert!(!list.is_empty() && list.len() <= 16, "{list:?}");
            for r in list {
                assert!(r.start < r.end, "empty or inverted range {r:?} (len {len})");
                assert!(r.end <= len, "range {r:?} beyond the length {len}");
            }
            for w in list.windows(2) {
                assert!(w[0].end < w[1].start, "ranges not coalesced: {list:?}");
            }
            if let Some(f) = first {
                assert!(
                    f <= list[0].start,
                    "first_byte {f} after the first range {:?}",
                    list[0]
                );
            }
        }
    }
    let matches = if_range_matches(req, res);
    assert_eq!(matches, if_range_matches(req, res));
    match req.get(http::header::IF_RANGE) {
        None => assert!(matches, "no If-Range must match"),
        Some(v) => {
            note(if matches { 20 } else { 21 });
            if v.as_bytes().trim_ascii_start().starts_with(b"W/") {
                assert!(!matches, "a weak If-Range matched");
            }
        }
    }
}
