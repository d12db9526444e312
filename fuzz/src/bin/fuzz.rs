//! The fuzz runner: `cargo run -p meshcache-fuzz --release -- <target|all> [--iterations N]
//! [--seconds S] [--seed X]`, or `--replay HEX` to run one input again.
//!
//! Inputs come from each target's built-in corpus, mutated with a seeded PRNG; the first
//! input that panics or breaks an invariant is printed (hex, escaped, the seed) and the
//! runner exits with status 1. At the end: iterations and iterations/second per target.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use meshcache_fuzz::{find, fuzz, run_one, targets, unhex, Budget};

#[derive(Parser)]
#[command(about = "Fuzz meshcache's parsers of untrusted input (stable Rust)")]
struct Args {
    /// A target (key, range, policy, config, frames, attest, tickets) or `all`.
    target: String,
    /// Inputs per target (with --seconds: whichever limit comes first).
    #[arg(long)]
    iterations: Option<u64>,
    /// Seconds per target (default 10 when --iterations is not given either).
    #[arg(long)]
    seconds: Option<f64>,
    /// PRNG seed, decimal or 0x-hex (default: from the clock; printed either way).
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Runs this one input (hex, as printed on a failure) instead of fuzzing.
    #[arg(long)]
    replay: Option<String>,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let chosen = if args.target == "all" {
        targets()
    } else {
        match find(&args.target) {
            Some(t) => vec![t],
            None => {
                let names: Vec<_> = targets().iter().map(|t| t.name).collect();
                eprintln!(
                    "unknown target {:?}; targets: {}, all",
                    args.target,
                    names.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    };
    if let Some(hex) = &args.replay {
        let Some(input) = unhex(hex) else {
            eprintln!("--replay: not hex");
            return ExitCode::from(2);
        };
        let mut failed = false;
        for t in &chosen {
            match run_one(t, &input) {
                Ok(_) => println!("{}: ok", t.name),
                Err(message) => {
                    failed = true;
                    println!("{}: FAILED\n{message}", t.name);
                }
            }
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let budget = Budget {
        iterations: args.iterations,
        time: match (args.seconds, args.iterations) {
            (Some(s), _) => Some(Duration::from_secs_f64(s.max(0.0))),
            (None, None) => Some(Duration::from_secs(10)),
            (None, Some(_)) => None,
        },
    };
    println!("seed {seed:#x}");
    let mut reports = Vec::new();
    for t in &chosen {
        match fuzz(t, seed, budget) {
            Ok(r) => {
                println!(
                    "{:<8} {:>10} iterations in {:>6.1} s  {:>9.0}/s  corpus {:>4}  slowest {:?}",
                    r.target,
                    r.iterations,
                    r.elapsed.as_secs_f64(),
                    r.per_second(),
                    r.corpus,
                    r.slowest.0
                );
                let stats = (t.stats)();
                if !stats.is_empty() {
                    println!("         {stats}");
                }
                reports.push(r);
            }
            Err(f) => {
                println!("{f}");
                return ExitCode::FAILURE;
            }
        }
    }
    let total: u64 = reports.iter().map(|r| r.iterations).sum();
    println!("all targets passed: {total} inputs");
    ExitCode::SUCCESS
}
