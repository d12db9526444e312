//! Target `catalog`: bytes → `mesh::catalog::Filter::decode` (what a peer will send as its
//! catalog).
//!
//! Invariants: no panic; a decoded catalog re-encodes to bytes that decode to the same
//! answers; lookups never panic; a catalog built from keys holds every one of them.

use mesh::catalog::Filter;

use crate::mutate::Shape;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "catalog",
    run,
    seeds,
    shape: Shape {
        dictionary: &[],
        text: false,
        max_len: 4096,
    },
    stats: crate::no_stats,
};

const PROBES: [&str; 4] = ["http://a/", "https://b/c", "k", ""];

pub fn seeds() -> Vec<Vec<u8>> {
    let keys: Vec<String> = (0..40).map(|i| format!("https://e/{i}")).collect();
    vec![
        Filter::build(keys.iter().map(|k| k.as_str())).encode(),
        Filter::build(["http://a/"]).encode(),
        Filter::build([]).encode(),
    ]
}

pub fn run(data: &[u8]) {
    // Built from the input's lines: holds every one of them.
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().take(64).collect();
    let built = Filter::build(lines.iter().copied());
    assert!(
        lines.iter().all(|l| built.may_hold(l)),
        "no false negatives"
    );
    // Decoded as a catalog from the network.
    let Ok(f) = Filter::decode(data) else {
        note(1);
        return;
    };
    note(2 + f.len().min(16) as u64);
    let again = Filter::decode(&f.encode()).expect("re-encodes");
    for p in PROBES {
        assert_eq!(f.may_hold(p), again.may_hold(p), "{p}");
    }
}
