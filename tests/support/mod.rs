//! Test support: a real origin server (in-process hyper on port 0), a real proxy on port
//! 0 with its own data directory and a hand-moved clock, and a client that speaks to the
//! proxy over real sockets.

pub mod binary;
pub mod client;
pub mod digest;
pub mod feed;
pub mod mesh;
pub mod origin;
pub mod proxy;
pub mod qr;

pub use client::{check_pattern, get, open, open_with, request, Resp};
pub use origin::{pattern, Origin, Reply};
pub use proxy::TestProxy;

/// Runs a command (`args[0]` with the rest as arguments); its stderr is the error.
pub fn sh(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
