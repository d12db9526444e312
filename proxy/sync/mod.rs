//! Feed sync: a device keeps the feeds its owner follows (`[[sync.feed]]`) up to date from
//! the devices nearby, before the owner opens the app. [`feed`] turns a feed document into
//! what to prefetch; [`plan`] orders the queue (thumbnails, then the rest; newest first;
//! fair across feeds) and keeps the daily budget (reserve before fetching, never exceed);
//! [`engine`] runs the rounds when a neighbour's catalog changes. The catalogs themselves
//! (which neighbour holds what, and which feed version) are the mesh's (`mesh::catalog`,
//! `mesh/src/exchange.rs`). Design: docs/sync.md.

pub mod engine;
pub mod feed;
pub mod plan;
