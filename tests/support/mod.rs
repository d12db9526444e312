//! Test support: a real origin server (in-process hyper on port 0), a real proxy on port
//! 0 with its own data directory and a hand-moved clock, and a client that speaks to the
//! proxy over real sockets.

pub mod binary;
pub mod client;
pub mod mesh;
pub mod origin;
pub mod proxy;

pub use client::{check_pattern, get, open, request, Resp};
pub use origin::{pattern, Origin, Reply};
pub use proxy::TestProxy;
