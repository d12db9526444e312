//! Errors of the cache crate. redb and iroh types stay inside: callers see what failed and
//! where, as text, and whether the disk is full — decided here, from the typed error (an
//! `io::Error` of `ENOSPC` / `StorageFull` / `QuotaExceeded` found in it), never from its
//! text.

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
    /// The index or the body store could not write: the disk (or quota) is full.
    #[error("{0} (the disk is full)")]
    DiskFull(String),
}

/// `ENOSPC`, `EDQUOT` or their `ErrorKind`s.
fn io_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

/// True when an `io::Error` meaning a full disk is `e` or one of its sources.
pub(crate) fn chain_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<std::io::Error>().is_some_and(io_full) {
            return true;
        }
        cur = err.source();
    }
    false
}

impl StoreError {
    /// True when the failure means the disk (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io(_, e) => io_full(e),
            StoreError::DiskFull(_) => true,
            StoreError::Index(_) | StoreError::Body(_) | StoreError::Locked(_) => false,
        }
    }

    /// A body-store failure doing `what`, classified by the error's type.
    pub(crate) fn body(what: &str, e: &(dyn std::error::Error + 'static)) -> Self {
        if chain_full(e) {
            StoreError::DiskFull(format!("body store: {what}: {e}"))
        } else {
            StoreError::Body(format!("{what}: {e}"))
        }
    }
}

/// redb's storage errors carry their `io::Error` as a variant, not as a source.
fn redb_full(e: &redb::StorageError) -> bool {
    matches!(e, redb::StorageError::Io(io) if io_full(io))
}

fn index(e: impl std::fmt::Display, full: bool) -> StoreError {
    if full {
        StoreError::DiskFull(format!("index: {e}"))
    } else {
        StoreError::Index(e.to_string())
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        let full = redb_full(&e);
        index(e, full)
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        let full = matches!(&e, redb::Error::Io(io) if io_full(io));
        index(e, full)
    }
}

macro_rules! redb_wrapper_err {
    ($($t:ident),*) => {$(
        impl From<redb::$t> for StoreError {
            fn from(e: redb::$t) -> Self {
                let full = match &e {
                    redb::$t::Storage(s) => redb_full(s),
                    _ => false,
                };
                index(e, full)
            }
        }
    )*};
}
redb_wrapper_err!(DatabaseError, TransactionError, TableError, CommitError);

impl From<postcard::Error> for StoreError {
    fn from(e: postcard::Error) -> Self {
        StoreError::Index(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("import failed")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn a_full_disk_is_read_from_the_error_types_not_their_text() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        assert!(StoreError::body("import", &Wrapper(enospc())).is_disk_full());
        assert!(StoreError::from(redb::StorageError::Io(enospc())).is_disk_full());
        assert!(
            StoreError::from(redb::CommitError::Storage(redb::StorageError::Io(enospc())))
                .is_disk_full()
        );
        let quota = std::io::Error::from(std::io::ErrorKind::QuotaExceeded);
        assert!(StoreError::Io(PathBuf::from("/x"), quota).is_disk_full());
        // Words are not types: a message that merely says so is not a full disk.
        let said = std::io::Error::other("No space left on device (os error 28)");
        assert!(!StoreError::body("import", &Wrapper(said)).is_disk_full());
        assert!(!StoreError::from(redb::StorageError::Corrupted("x".into())).is_disk_full());
    }
}
