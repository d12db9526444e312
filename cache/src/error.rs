//! Errors of the cache crate. redb and iroh types stay inside: callers see what failed and
//! where, as text, and whether the disk is full.

use std::path::PathBuf;

/// A storage operation failed. Always the cache's own fault (internal), never the client's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("index: {0}")]
    Index(String),
    #[error("body store: {0}")]
    Body(String),
    #[error("the data directory is in use by another process ({0})")]
    Locked(PathBuf),
}

impl StoreError {
    /// True when the failure means the disk (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        let text = match self {
            StoreError::Io(_, e) => {
                return e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
            }
            StoreError::Index(t) | StoreError::Body(t) => t,
            StoreError::Locked(_) => return false,
        };
        text.contains("No space left")
            || text.contains("os error 28")
            || text.contains("StorageFull")
    }
}

macro_rules! index_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Index(e.to_string()) }
        }
    )*};
}
index_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    postcard::Error
);
