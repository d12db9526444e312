//! The integration tests: one binary (it links once). Every test drives real sockets: an
//! in-process origin on port 0, the proxy on port 0, and for the command line the built
//! binary through curl.

mod support;

// Storing, reusing, revalidating and refusing to store (RFC 9111).
mod caching;
// What the public HTTP caching test suite found (benches/conformance), end to end.
mod conformance;
// Operator freshness rules ([[cache.rule]]): only where RFC 9111 allows, named in Cache-Status.
mod rules;
// Partial objects: ranges kept without the whole, holes filled, completed into an entry.
mod partial;
// One origin fetch per object, streamed to every waiter.
mod coalescing;
// Range requests from stored and arriving bodies.
mod ranges;
// URLs that name their content's hash: checked, then immutable.
mod certified;
// Requests that state their body's hash (Meshcache-Integrity): only a matching body.
mod integrity;
// Bad clients, bad origins, limits.
mod robustness;
// The front door against a hostile passenger: limits, admin pages, destinations.
mod frontdoor;
// /metrics: the Prometheus text format, figures that follow traffic, admin clients only.
mod metrics;
// The code's layout: no import cycle between modules or folders.
mod layout;
// Restarts and kill -9 during a fill (through the binary).
mod durability;
// The binary killed at each crash point of the store's write paths, then checked.
mod crashpoints;
// The command line, as a user runs it, with curl.
mod cli;
// HTTPS interception with the local CA, passthrough, origin verification (curl).
mod https;
// An upstream proxy for origin traffic: a child meshcache behind a parent, each caching.
mod upstream;
// Headless Chromium through the proxy (skipped, saying why, where it is not installed).
mod browser;
// The status page as a live dashboard in headless Chromium, and its screenshot.
mod dashboard;
// Transparent mode in network namespaces (root; skipped, saying why, elsewhere).
mod gateway;
// Nearby devices: peers, groups, privacy, one download per carriage, shared files.
mod mesh;
// The mesh's UDP port: a second instance on one host binds another, says so, advertises it.
mod mesh_port;
// Members that lie: forged attestations, corrupted bytes.
mod hostile;
// Strangers (no shared group): what they cannot forge, through the binary.
mod strangers;
// Hostile strangers: the forgery matrix, and a hostile asker.
mod open_hostile;
// mDNS discovery between namespaces (root; skipped, saying why, elsewhere).
mod mdns;
// Feed sync: subscribers prefetch from group peers within a budget; catalogs steer lookups.
mod sync;
