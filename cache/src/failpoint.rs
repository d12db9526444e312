//! Crash points: named places in the store's write paths where a test can have the process
//! killed, to prove that a `kill -9` at that moment loses nothing committed and leaves
//! nothing inconsistent (the crash tests in `tests/crashpoints.rs`; redb's crash tests are
//! the model).
//!
//! Compiled in only with debug assertions (test and dev builds): a release build has no
//! failpoints at all, and [`point`] is an empty function there. In a debug build the
//! environment variable `MESHCACHE_FAILPOINT=<name>` arms one point; when the process
//! reaches it, it says so on stderr and sends itself `SIGKILL` — no destructor, no flush,
//! exactly a crash.

/// Every crash point, in the order a fill passes them.
pub const POINTS: &[&str] = &[
    // The origin's body is complete in the spool file, nothing imported yet.
    "spool-complete",
    // The spool file is linked into the body store's adopted files, not yet imported.
    "spool-adopted",
    // The body is in the body store (protected only by an in-memory temp tag).
    "body-imported",
    // A peer's body is in the body store, before its attested hash is checked and tagged.
    "peer-body-imported",
    // The body's tag is set, not yet synced.
    "body-tagged",
    // The tag is synced; the index entry is not yet written.
    "body-synced",
    // The index entry is committed; bodies it replaced are not yet released.
    "index-committed",
    // Eviction removed one entry from the index, its body not yet released.
    "eviction-midway",
    // A 304 is being recorded: the index transaction is open, not committed.
    "refresh-midway",
    // A range's bytes are written to a partial object and readable, its meta file not
    // yet replaced (they are not durable).
    "partial-marked",
    // A partial object's meta file lists the new bytes (they are durable).
    "partial-persisted",
];

/// Kills the process here if `name` is the armed crash point (debug builds only).
#[inline]
pub fn point(name: &'static str) {
    #[cfg(debug_assertions)]
    armed::check(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::OnceLock;

    static ARMED: OnceLock<Option<String>> = OnceLock::new();

    pub(super) fn check(name: &'static str) {
        debug_assert!(super::POINTS.contains(&name), "unknown failpoint {name}");
        let armed = ARMED.get_or_init(|| std::env::var("MESHCACHE_FAILPOINT").ok());
        if armed.as_deref() == Some(name) {
            eprintln!("meshcache: failpoint {name} reached: killing the process");
            // SAFETY: getpid and kill have no preconditions; SIGKILL ends the process here.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            // SIGKILL is delivered before kill() returns to a single-threaded caller; with
            // other threads it may take a moment: never go on.
            loop {
                std::thread::park();
            }
        }
    }
}
