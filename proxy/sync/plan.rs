//! What to prefetch, in which order, within which budget.
//!
//! Order (issue 11): every feed document first, then thumbnails, then images and
//! enclosures; within a tier newest first, and fair across feeds — one item of each feed in
//! turn, so a feed with a thousand items does not starve one with three. Media a feed's
//! settings leave out (`media = "none" | "thumbnails"`, larger than `max_item` by its
//! declared size) are not queued.
//!
//! [`Budget`]: the bytes prefetched per day, all feeds together. A fetch first reserves
//! the size it expects (the declared size; without one, what is left of `max_item`) and
//! is never let through if that would exceed the day's budget; when it ends, the bytes it
//! really took are charged. So the budget is never exceeded by more than what a fetch
//! takes beyond its reservation — and a fetch is cut off at its reservation (see
//! [`Reservation::limit`]), so not at all.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::feed::{Item, Kind, Media};

/// What a feed's settings let through (`config::Media`, mirrored so this module stays free
/// of the config crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    None,
    Thumbnails,
    All,
}

/// One feed's part of the plan.
pub struct FeedPlan<'a> {
    pub items: &'a [Item],
    pub wanted: Wanted,
    pub max_item: u64,
}

/// One fetch of the queue: the feed it is for (index in the plan) and the media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub feed: usize,
    pub media: Media,
}

/// The media to fetch for `feeds`, in order (the feed documents themselves come first and
/// are not part of this queue).
pub fn queue(feeds: &[FeedPlan<'_>]) -> Vec<Fetch> {
    let mut out = Vec::new();
    for tier in [Tier::Thumbnails, Tier::Rest] {
        let mut per_feed: Vec<VecDeque<Fetch>> = feeds
            .iter()
            .enumerate()
            .map(|(i, f)| {
                f.items
                    .iter()
                    .flat_map(|item| item.media.iter())
                    .filter(|m| tier.holds(m.kind) && allowed(f, m))
                    .map(|m| Fetch {
                        feed: i,
                        media: m.clone(),
                    })
                    .collect()
            })
            .collect();
        // One from each feed in turn.
        loop {
            let mut any = false;
            for q in per_feed.iter_mut() {
                if let Some(f) = q.pop_front() {
                    if !out.iter().any(|o: &Fetch| o.media.url == f.media.url) {
                        out.push(f);
                    }
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Tier {
    Thumbnails,
    Rest,
}

impl Tier {
    fn holds(self, k: Kind) -> bool {
        matches!(
            (self, k),
            (Tier::Thumbnails, Kind::Thumbnail) | (Tier::Rest, Kind::Image | Kind::Enclosure)
        )
    }
}

fn allowed(f: &FeedPlan<'_>, m: &Media) -> bool {
    let kind_ok = match f.wanted {
        Wanted::None => false,
        Wanted::Thumbnails => m.kind == Kind::Thumbnail,
        Wanted::All => true,
    };
    kind_ok && m.declared.is_none_or(|n| n <= f.max_item)
}

/// The day's prefetch budget. Days are UTC days of the clock given to each call.
pub struct Budget {
    limit: u64,
    state: Mutex<Day>,
}

#[derive(Debug, Default)]
struct Day {
    day: u64,
    /// Charged (fetches that ended) plus reserved (fetches under way).
    used: u64,
    reserved: u64,
}

/// Bytes reserved for one fetch: charged with what it really took by [`Budget::settle`].
#[derive(Debug)]
#[must_use = "settle it with the bytes the fetch took"]
pub struct Reservation {
    day: u64,
    bytes: u64,
}

impl Reservation {
    /// The most bytes the fetch may take: cut it off beyond this.
    pub fn limit(&self) -> u64 {
        self.bytes
    }
}

fn day_of(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget {
            limit,
            state: Mutex::new(Day::default()),
        }
    }

    fn today(&self, now: SystemTime) -> std::sync::MutexGuard<'_, Day> {
        let mut d = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let today = day_of(now);
        if d.day != today {
            // A new day: what is under way still counts (it was reserved yesterday, and is
            // settled against yesterday; see `settle`).
            *d = Day {
                day: today,
                used: 0,
                reserved: 0,
            };
        }
        d
    }

    /// Reserves `bytes` for a fetch, if the day's budget has room for them.
    pub fn reserve(&self, bytes: u64, now: SystemTime) -> Option<Reservation> {
        let mut d = self.today(now);
        let after = d.used.checked_add(d.reserved)?.checked_add(bytes)?;
        if after > self.limit {
            return None;
        }
        d.reserved += bytes;
        Some(Reservation { day: d.day, bytes })
    }

    /// A fetch ended, having taken `took` bytes (at most its reservation: the fetch is cut
    /// off there). Its reservation is released and `took` charged to the day it was made.
    pub fn settle(&self, r: Reservation, took: u64, now: SystemTime) {
        let mut d = self.today(now);
        if d.day == r.day {
            d.reserved = d.reserved.saturating_sub(r.bytes);
            d.used += took.min(r.bytes);
        }
    }

    /// Bytes charged today, and the limit.
    pub fn used(&self, now: SystemTime) -> (u64, u64) {
        let d = self.today(now);
        (d.used, self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, media: &[(&str, Kind, Option<u64>)]) -> Item {
        Item {
            id: id.into(),
            published: None,
            media: media
                .iter()
                .map(|(u, k, d)| Media {
                    url: u.to_string(),
                    kind: *k,
                    declared: *d,
                })
                .collect(),
        }
    }

    #[test]
    fn thumbnails_first_then_the_rest_newest_first_and_fair_across_feeds() {
        let a = vec![
            item(
                "a2",
                &[
                    ("a2.jpg", Kind::Thumbnail, None),
                    ("a2.mp4", Kind::Enclosure, Some(10)),
                ],
            ),
            item(
                "a1",
                &[
                    ("a1.jpg", Kind::Thumbnail, None),
                    ("a1.png", Kind::Image, Some(10)),
                ],
            ),
            item("a0", &[("a0.jpg", Kind::Thumbnail, None)]),
        ];
        let b = vec![item(
            "b1",
            &[
                ("b1.jpg", Kind::Thumbnail, None),
                ("b1.mp4", Kind::Enclosure, None),
            ],
        )];
        let plan = [
            FeedPlan {
                items: &a,
                wanted: Wanted::All,
                max_item: 100,
            },
            FeedPlan {
                items: &b,
                wanted: Wanted::All,
                max_item: 100,
            },
        ];
        let urls: Vec<String> = queue(&plan).into_iter().map(|f| f.media.url).collect();
        assert_eq!(
            urls,
            ["a2.jpg", "b1.jpg", "a1.jpg", "a0.jpg", "a2.mp4", "b1.mp4", "a1.png"]
        );
    }

    #[test]
    fn a_feeds_settings_leave_media_out() {
        let a = vec![item(
            "a",
            &[
                ("t.jpg", Kind::Thumbnail, None),
                ("big.mp4", Kind::Enclosure, Some(101)),
                ("small.mp4", Kind::Enclosure, Some(100)),
                ("unknown.mp4", Kind::Enclosure, None),
            ],
        )];
        let urls = |wanted| -> Vec<String> {
            queue(&[FeedPlan {
                items: &a,
                wanted,
                max_item: 100,
            }])
            .into_iter()
            .map(|f| f.media.url)
            .collect()
        };
        assert_eq!(urls(Wanted::None), Vec::<String>::new());
        assert_eq!(urls(Wanted::Thumbnails), ["t.jpg"]);
        assert_eq!(
            urls(Wanted::All),
            ["t.jpg", "small.mp4", "unknown.mp4"],
            "larger than max_item by its declared size: left for the user"
        );
    }

    #[test]
    fn the_budget_is_never_exceeded_and_starts_again_each_day() {
        let b = Budget::new(1000);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + 10);
        let r1 = b.reserve(600, t0).unwrap();
        assert!(b.reserve(401, t0).is_none(), "reserved bytes count");
        let r2 = b.reserve(400, t0).unwrap();
        b.settle(r1, 300, t0);
        assert_eq!(b.used(t0), (300, 1000));
        assert!(b.reserve(301, t0).is_none());
        let r3 = b.reserve(300, t0).unwrap();
        assert_eq!(r3.limit(), 300);
        b.settle(r2, 10_000, t0);
        assert_eq!(b.used(t0).0, 700, "charged at most its reservation");
        b.settle(r3, 300, t0);
        assert_eq!(b.used(t0).0, 1000);
        assert!(b.reserve(1, t0).is_none());
        let t1 = t0 + Duration::from_secs(86_400);
        assert_eq!(b.used(t1).0, 0, "a new day");
        assert!(b.reserve(1000, t1).is_some());
        assert!(b.reserve(u64::MAX, t1).is_none(), "no overflow");
    }
}
