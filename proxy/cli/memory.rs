//! The process's heap, held close to what it uses (glibc's allocator; elsewhere nothing is
//! done).
//!
//! Measured on the hit path (`cargo bench --bench hit_path`): the heap in use settles at
//! about 14 MB (10 of them the memory cache's hot bodies), but glibc kept the process at
//! 45–50 MiB resident. Bursts — misses waiting for their commits, 64 connections under
//! load, a 200 MiB hit read on blocking threads — leave free memory in the middle of its
//! heaps, which `free` never gives back (it only shrinks a heap from its top), and every
//! thread that allocates may get an arena (a heap) of its own, up to 8 per core. So:
//! - [`tune`]: at most [`ARENAS`] arena, so the blocking threads that read bodies share the
//!   workers' heap instead of each keeping one with its own free space;
//! - [`Trimmer`]: a thread that compares, every [`TRIM_EVERY`], the anonymous memory
//!   resident with what the heap has in use, and when the difference (free memory the
//!   allocator keeps) has grown by [`TRIM_GROWTH`] since the last trim, has glibc return the
//!   free pages of every arena (`malloc_trim(0)`). A steady proxy never trims.
//!
//! `MALLOC_ARENA_MAX` in the environment wins over [`ARENAS`].

use std::time::Duration;

/// Arenas glibc may create (its default is 8 per core).
pub(crate) const ARENAS: i32 = 1;
/// How often the heap is looked at.
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Growth of the free memory kept resident since the last trim that makes the next one.
pub(crate) const TRIM_GROWTH: u64 = 1 << 20;

/// Sets the allocator up for a long-running proxy. Call it first thing, before any thread
/// is started.
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// Resident memory of this process, in bytes (`/proc/self/statm`): all of it, and the
/// anonymous part (what is not file pages: heap, stacks, relocated data).
pub(crate) fn resident() -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut f = statm.split_whitespace().skip(1);
    let resident: u64 = f.next()?.parse().ok()?;
    let file: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)?;
    Some((resident * page, resident.saturating_sub(file) * page))
}

/// Bytes the heap has handed out and not had back (`mallinfo2`), where that is known.
pub(crate) fn in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions; it takes each arena's lock itself.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Free memory the allocator keeps resident, give or take what else is anonymous (thread
/// stacks, relocated data: about constant).
pub(crate) fn slack() -> Option<u64> {
    let (_, anon) = resident()?;
    Some(anon.saturating_sub(in_use()?))
}

/// Has glibc hand back the free pages of every arena. Returns false where that does not
/// exist (another libc, another system).
pub(crate) fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions; it takes each arena's lock itself.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// When to trim: the slack after the last trim (or the lowest seen since).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trimmer {
    floor: Option<u64>,
}

impl Trimmer {
    pub(crate) fn new() -> Self {
        Trimmer { floor: None }
    }

    /// Should a process whose allocator keeps `slack` free bytes resident trim now?
    pub(crate) fn due(&mut self, slack: u64) -> bool {
        match self.floor {
            Some(floor) if slack >= floor.saturating_add(TRIM_GROWTH) => true,
            Some(floor) if slack >= floor => false,
            // The first look, or the slack shrank by itself: the new reference.
            _ => {
                self.floor = Some(slack);
                false
            }
        }
    }

    /// A trim was made; `slack` is what it left.
    pub(crate) fn trimmed(&mut self, slack: u64) {
        self.floor = Some(slack);
    }

    /// Starts the thread that trims when due, for the life of the process. Nothing where
    /// the heap cannot be looked at.
    pub(crate) fn spawn() {
        if slack().is_none() {
            return;
        }
        let started = std::thread::Builder::new()
            .name("meshcache-trim".into())
            .stack_size(64 << 10)
            .spawn(|| {
                let mut t = Trimmer::new();
                loop {
                    std::thread::sleep(TRIM_EVERY);
                    let Some(before) = slack() else { return };
                    if !t.due(before) {
                        continue;
                    }
                    let at = std::time::Instant::now();
                    trim();
                    let took = at.elapsed();
                    let after = slack().unwrap_or(before);
                    t.trimmed(after);
                    tracing::debug!(
                        before_kib = before >> 10,
                        after_kib = after >> 10,
                        took_us = took.as_micros() as u64,
                        "heap trimmed"
                    );
                }
            });
        if let Err(e) = started {
            tracing::warn!("no heap trimming thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_growth_since_the_last_trim() {
        let mut t = Trimmer::new();
        assert!(!t.due(2 << 20), "the first look only sets the reference");
        assert!(!t.due((2 << 20) + TRIM_GROWTH - 1));
        assert!(t.due((2 << 20) + TRIM_GROWTH));
        // The trim could not give that back (fragments): that is the new reference.
        t.trimmed((2 << 20) + TRIM_GROWTH);
        assert!(!t.due((2 << 20) + TRIM_GROWTH));
        assert!(t.due((2 << 20) + 2 * TRIM_GROWTH));
        // The slack shrank by itself (a heap's top given back): growth counts from there.
        t.trimmed(3 << 20);
        assert!(!t.due(1 << 20));
        assert!(t.due((1 << 20) + TRIM_GROWTH));
    }

    /// Free memory in the middle of a heap stays resident until [`trim`]: blocks freed
    /// between blocks still in use, as a burst of requests leaves them.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trim_returns_free_memory_in_the_middle_of_the_heap() {
        const BLOCKS: usize = 512;
        const BLOCK: usize = 64 << 10; // below glibc's mmap threshold: from the heap
        let mut big: Vec<Vec<u8>> = Vec::with_capacity(BLOCKS);
        let mut kept: Vec<Box<[u8; 64]>> = Vec::with_capacity(BLOCKS);
        for i in 0..BLOCKS {
            big.push(vec![i as u8 | 1; BLOCK]);
            kept.push(Box::new([i as u8; 64]));
        }
        let full = slack().expect("slack");
        drop(big);
        let freed = slack().expect("slack");
        assert!(trim());
        let trimmed = slack().expect("slack");
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprintln!(
            "free memory kept resident: {:.1} MiB with the blocks, {:.1} MiB once freed, {:.1} MiB trimmed",
            mib(full),
            mib(freed),
            mib(trimmed)
        );
        // 32 MiB were freed: it is slack until trimmed, and then at least half of it is gone.
        assert!(
            freed >= full + (16 << 20),
            "freeing gave back memory by itself"
        );
        assert!(
            trimmed + (16 << 20) <= freed,
            "trim gave back {:.1} MiB of 32",
            mib(freed.saturating_sub(trimmed))
        );
        std::hint::black_box(&kept);
    }
}
