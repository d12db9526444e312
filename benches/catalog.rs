//! Catalog bench (feed sync, issue 11): what a device's catalog costs on the wire and how
//! often it says "maybe" for a key it does not hold, against an exact list of 8-byte key
//! hashes (the reference) measured in the same run; and the time to build, encode and
//! decode it against sorting the same hashes.
//!
//! `cargo bench --bench catalog` (n = 1,000, 10,000, 100,000 keys; 200,000 probes each).
//! `MESHCACHE_BENCH_QUICK=1`: 20,000 probes. No pass/fail thresholds: the targets (≤ 12 KB
//! per 10,000 entries, ≤ 0.5 % false hits) are asserted by the unit tests in
//! `mesh/src/catalog.rs`.

mod common;

use std::time::Instant;

use mesh::catalog::Filter;

fn keys(n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("https://cdn{}.example.org/{tag}/{i}/photo.jpg", i % 13))
        .collect()
}

fn main() {
    let probes_n = if common::quick() { 20_000 } else { 200_000 };
    println!("catalog: Golomb-coded set (P = 8) vs an exact list of 8-byte key hashes");
    println!(
        "  {:>8} {:>11} {:>10} {:>8} {:>11} {:>9} {:>10} {:>10}",
        "keys", "catalog B", "B/10k", "vs list", "false hits", "build ms", "decode ms", "sort ms"
    );
    let probes = keys(probes_n, "absent");
    for n in [1_000usize, 10_000, 100_000] {
        let members = keys(n, "held");
        let t = Instant::now();
        let f = Filter::build(members.iter().map(|k| k.as_str()));
        let bytes = f.encode();
        let build = t.elapsed();
        let t = Instant::now();
        let g = Filter::decode(&bytes).expect("decodes");
        let decode = t.elapsed();
        // The reference: the exact set, as sorted 8-byte hashes.
        let t = Instant::now();
        let mut list: Vec<u64> = members
            .iter()
            .map(|k| {
                let d = blake3::hash(k.as_bytes());
                u64::from_le_bytes(d.as_bytes()[..8].try_into().unwrap())
            })
            .collect();
        list.sort_unstable();
        let sort = t.elapsed();
        let list_bytes = list.len() * 8;
        assert!(members.iter().all(|k| g.may_hold(k)), "no false negatives");
        let false_hits = probes.iter().filter(|k| g.may_hold(k)).count();
        println!(
            "  {:>8} {:>11} {:>10.0} {:>8.3} {:>10.3}% {:>9.2} {:>10.2} {:>10.2}",
            n,
            bytes.len(),
            bytes.len() as f64 * 10_000.0 / n as f64,
            bytes.len() as f64 / list_bytes as f64,
            false_hits as f64 * 100.0 / probes.len() as f64,
            build.as_secs_f64() * 1e3,
            decode.as_secs_f64() * 1e3,
            sort.as_secs_f64() * 1e3,
        );
    }
}
