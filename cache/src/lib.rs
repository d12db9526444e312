//! meshcache's store: what is kept, and when it may be reused.
//!
//! - [`Cache`] (`store.rs`): the handle the proxy uses — lookup, fills, freshen,
//!   invalidate, eviction, stats.
//! - [`Index`](index::Index): redb tables, URL → variants ([`Entry`]), body hash → size and
//!   reference count.
//! - [`Bodies`](bodies::Bodies): bodies content-addressed by BLAKE3 in an iroh-blobs file
//!   store, so the mesh can later fetch them verified, by range.
//! - [`partial`]: partial objects — byte ranges held without the whole (206 responses),
//!   completed into an entry when every byte has arrived.
//! - [`fill`]: single-flight fills that stream to every waiter from a spool file.
//! - [`policy`]: RFC 9111 storability and freshness on top of `http-cache-semantics`, plus
//!   the `stale-while-revalidate` / `stale-if-error` rules the library leaves to us.
//! - [`key`]: the cache key, written once and tested hard.
//! - [`certify`]: URLs that name their content's hash (apt by-hash, OCI, PyPI, IPFS, by-digest).
//! - [`Clock`]: time is an argument, so tests move it.
//! - [`Cache::check`] (`check.rs`): the data directory's fsck — index and body store agree.
//! - [`failpoint`]: named crash points for the crash tests (debug builds only).

mod adopt;
pub mod bodies;
pub mod certify;
mod check;
pub mod clock;
mod disk;
pub mod entry;
pub mod error;
pub mod failpoint;
pub mod fill;
pub mod index;
pub mod key;
mod memory;
pub mod partial;
pub mod policy;
mod store;

pub use check::CheckReport;
pub use clock::{Clock, ManualClock, SystemClock};
pub use entry::Entry;
pub use error::StoreError;
pub use fill::{Fill, Head, Join, Leader};
pub use partial::Partial;
pub use store::{Attester, Cache, Options, Pending, Stats};
