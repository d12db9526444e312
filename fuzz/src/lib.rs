//! Fuzz targets for meshcache's parsers of untrusted input, and the engine that drives
//! them on stable Rust (no libFuzzer, no nightly).
//!
//! Each target is a `run(data: &[u8])` that takes any bytes, feeds them to one parser and
//! asserts that it does not panic and that real invariants hold (round trips, bounds,
//! determinism, order independence):
//!
//! | target | what it feeds |
//! |---|---|
//! | [`key`] | request targets and headers → `cache::key` (primary key, `Vary`, variant key) |
//! | [`range`] | `Range` / `If-Range` → the proxy's range parser |
//! | [`policy`] | `Cache-Control`, `Expires`, `Age`, `Date`, … and any `now` → `cache::policy` |
//! | [`config`] | TOML text → `config::Config` (and its serialization, read back) |
//! | [`frames`] | postcard bytes → the `meshcache/1` messages (`mesh::proto`) |
//! | [`attest`] | bytes → `mesh::attest` (attestations, origin digests) |
//! | [`tickets`] | text → group, share and endpoint (peer) tickets |
//! | [`certify`] | request targets and `Accept` → `cache::certify` (URLs that name their hash) |
//! | [`catalog`] | bytes → a peer's catalog (`mesh::catalog`, a Golomb-coded set) |
//! | [`feed`] | feed documents → feed sync's parser (RSS 2.0, Atom, JSON Feed, Media RSS) |
//!
//! [`fuzz`] runs a target from a seed: a small built-in corpus of valid examples per target
//! (real headers, real config text, encoded frames, real tickets), mutated by
//! [`mutate`] with a seeded [`rng::Rng`]; inputs that reach an outcome not seen before
//! (targets [`note`] what they did) join the corpus. A panic is caught and returned as a
//! [`Failure`] with the input. `src/bin/fuzz.rs` is the command line; `tests/short.rs`
//! runs every target briefly under `cargo test`.

pub mod input;
pub mod mutate;
pub mod rng;

pub mod attest;
pub mod catalog;
pub mod certify;
pub mod config;
pub mod feed;
pub mod frames;
pub mod key;
pub mod policy;
pub mod range;
pub mod tickets;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

use mutate::Shape;
use rng::Rng;

/// One fuzz target.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// Feeds one input to the parser; panics when an invariant breaks.
    pub run: fn(&[u8]),
    /// Valid examples to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub shape: Shape,
    /// What the target counted (e.g. non-canonical encodings accepted), for the report.
    pub stats: fn() -> String,
}

/// `stats` of a target that counts nothing.
pub fn no_stats() -> String {
    String::new()
}

/// Every target, in the order `all` runs them.
pub fn targets() -> Vec<Target> {
    vec![
        key::TARGET,
        range::TARGET,
        policy::TARGET,
        config::TARGET,
        frames::TARGET,
        attest::TARGET,
        tickets::TARGET,
        certify::TARGET,
        feed::TARGET,
        catalog::TARGET,
    ]
}

/// The target called `name`.
pub fn find(name: &str) -> Option<Target> {
    targets().into_iter().find(|t| t.name == name)
}

thread_local! {
    static OUTCOME: Cell<u64> = const { Cell::new(0) };
    static IN_TARGET: Cell<bool> = const { Cell::new(false) };
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records what an input made the parser do (an error kind, a branch taken, a count):
/// an input whose outcomes differ from every earlier one is kept in the corpus.
pub fn note(what: u64) {
    OUTCOME.with(|o| {
        let h = (o.get() ^ what).wrapping_mul(0x100_0000_01b3);
        o.set(h.rotate_left(5));
    });
}

/// Panics inside a target are recorded, not printed; elsewhere the previous hook runs.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TARGET.with(Cell::get) {
                PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `target` once on `data`: its outcome, or the panic message.
pub fn run_one(target: &Target, data: &[u8]) -> Result<u64, String> {
    install_hook();
    OUTCOME.with(|o| o.set(0));
    IN_TARGET.with(|t| t.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(data)));
    IN_TARGET.with(|t| t.set(false));
    match result {
        Ok(()) => Ok(OUTCOME.with(Cell::get)),
        Err(payload) => Err(PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| panic_text(&*payload))),
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

/// How long to fuzz: whichever limit comes first (at least the seeds are run).
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    pub iterations: Option<u64>,
    pub time: Option<Duration>,
}

/// A target's run that found nothing.
#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub iterations: u64,
    pub elapsed: Duration,
    /// Inputs kept: seeds and those that reached new outcomes.
    pub corpus: usize,
    /// The slowest input and how long it took.
    pub slowest: (Duration, Vec<u8>),
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.iterations as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// An input that broke an invariant (or panicked).
#[derive(Debug)]
pub struct Failure {
    pub target: &'static str,
    pub seed: u64,
    /// 0-based index of the failing input in this run.
    pub iteration: u64,
    pub input: Vec<u8>,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target {} failed at iteration {} (seed {:#x}):",
            self.target, self.iteration, self.seed
        )?;
        writeln!(f, "{}", self.message.trim_end())?;
        writeln!(
            f,
            "input ({} bytes), hex: {}",
            self.input.len(),
            hex(&self.input)
        )?;
        writeln!(f, "input, escaped: \"{}\"", self.input.escape_ascii())?;
        write!(
            f,
            "replay: cargo run -p meshcache-fuzz --release -- {} --replay {}",
            self.target,
            hex(&self.input)
        )
    }
}

pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let text: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

const MAX_CORPUS: usize = 2048;

/// Fuzzes `target` from `seed` within `budget`.
pub fn fuzz(target: &Target, seed: u64, budget: Budget) -> Result<Report, Failure> {
    let start = Instant::now();
    let mut rng = Rng::new(seed);
    let mut corpus = (target.seeds)();
    let mut seen = HashSet::new();
    let mut slowest = (Duration::ZERO, Vec::new());
    let mut iterations = 0u64;
    let mut pending_seeds: Vec<Vec<u8>> = corpus.iter().rev().cloned().collect();
    loop {
        if let Some(max) = budget.iterations {
            if iterations >= max && pending_seeds.is_empty() {
                break;
            }
        }
        if let Some(max) = budget.time {
            if iterations % 32 == 0 && start.elapsed() >= max && pending_seeds.is_empty() {
                break;
            }
        }
        if budget.iterations.is_none() && budget.time.is_none() && pending_seeds.is_empty() {
            break;
        }
        let data = match pending_seeds.pop() {
            Some(s) => s,
            None => {
                let mut d = if corpus.is_empty() || rng.one_in(32) {
                    let n = rng.below(64);
                    rng.bytes(n)
                } else {
                    rng.pick(&corpus).clone()
                };
                mutate::mutate(&mut d, &mut rng, &corpus, &target.shape);
                d
            }
        };
        let t0 = Instant::now();
        let result = run_one(target, &data);
        let took = t0.elapsed();
        match result {
            Ok(outcome) => {
                if took > slowest.0 {
                    slowest = (took, data.clone());
                }
                if seen.insert(outcome) && corpus.len() < MAX_CORPUS {
                    corpus.push(data);
                }
            }
            Err(message) => {
                return Err(Failure {
                    target: target.name,
                    seed,
                    iteration: iterations,
                    input: data,
                    message,
                })
            }
        }
        iterations += 1;
    }
    Ok(Report {
        target: target.name,
        iterations,
        elapsed: start.elapsed(),
        corpus: corpus.len(),
        slowest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_are_caught_with_their_message() {
        let t = Target {
            name: "boom",
            run: |d| assert!(d.len() < 3, "too long: {}", d.len()),
            seeds: || vec![b"ab".to_vec()],
            shape: Shape {
                dictionary: &[],
                text: true,
                max_len: 16,
            },
            stats: no_stats,
        };
        assert!(run_one(&t, b"a").is_ok());
        let e = run_one(&t, b"abcd").unwrap_err();
        assert!(e.contains("too long: 4"), "{e}");
        let budget = Budget {
            iterations: Some(10_000),
            time: None,
        };
        let f = fuzz(&t, 1, budget).unwrap_err();
        assert!(f.input.len() >= 3);
        assert_eq!(unhex(&hex(&f.input)).unwrap(), f.input);
        assert!(f.to_string().contains("--replay"));
    }
}
