//! Every fuzz target for a short, fixed run (fixed seed, fixed count), so `cargo test
//! --workspace` exercises them; the runner (`src/bin/fuzz.rs`) runs them for longer.

use meshcache_fuzz::{find, fuzz, Budget};

/// Per target: small enough for a debug build on 2 cores (all eight in well under 30 s).
const ITERATIONS: u64 = 20_000;
const SEED: u64 = 0x6d65_7368_6361_6368;

fn short(name: &str) {
    let target = find(name).expect("a target");
    let budget = Budget {
        iterations: Some(ITERATIONS),
        time: None,
    };
    match fuzz(&target, SEED, budget) {
        Ok(report) => assert!(report.iterations >= ITERATIONS),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn key() {
    short("key");
}

#[test]
fn range() {
    short("range");
}

#[test]
fn policy() {
    short("policy");
}

#[test]
fn config() {
    short("config");
}

#[test]
fn frames() {
    short("frames");
}

#[test]
fn attest() {
    short("attest");
}

#[test]
fn tickets() {
    short("tickets");
}

#[test]
fn certify() {
    short("certify");
}

#[test]
fn feed() {
    short("feed");
}

#[test]
fn catalog() {
    short("catalog");
}

#[test]
fn every_target_is_tested_here() {
    let names: Vec<_> = meshcache_fuzz::targets().iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "key", "range", "policy", "config", "frames", "attest", "tickets", "certify", "feed",
            "catalog"
        ]
    );
}
