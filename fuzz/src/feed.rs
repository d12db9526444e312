//! Target `feed`: bytes → a feed document (`meshcache::parse_feed`: RSS 2.0, Atom, JSON
//! Feed with Media RSS, what feed sync reads from origins and peers).
//!
//! Input: the document's bytes; it is parsed as if fetched from
//! `https://example.org/news/feed.xml`.
//!
//! Invariants: no panic; the answer is deterministic; every media URL is absolute `http` or
//! `https`; items come newest first (dated items before undated ones); a URL appears at most
//! once per item.

use std::collections::HashSet;

use crate::mutate::Shape;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "feed",
    run,
    seeds,
    shape: Shape {
        dictionary: DICTIONARY,
        text: true,
        max_len: 8192,
    },
    stats: crate::no_stats,
};

const URL: &str = "https://example.org/news/feed.xml";

const DICTIONARY: &[&str] = &[
    "<item>",
    "</item>",
    "<entry>",
    "</entry>",
    "<enclosure url=\"",
    "\" length=\"",
    "\" type=\"video/mp4\"/>",
    "<media:content url=\"",
    "<media:thumbnail url=\"",
    "<media:group>",
    "</media:group>",
    "<link rel=\"enclosure\" href=\"",
    "<pubDate>Tue, 02 Dec 2026 10:00:00 GMT</pubDate>",
    "<updated>2026-12-02T10:00:00Z</updated>",
    "\"attachments\":[{\"url\":\"",
    "\"mime_type\":\"image/png\"",
    "../",
    "//",
    "javascript:",
    "data:",
    "https://cdn.example.org/",
];

pub fn seeds() -> Vec<Vec<u8>> {
    [
        r#"<?xml version="1.0"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>N</title><link>https://example.org/</link><description>d</description><item><guid>a</guid><pubDate>Mon, 01 Dec 2026 10:00:00 GMT</pubDate><enclosure url="/media/a.mp4" length="5000000" type="video/mp4"/></item><item><guid>b</guid><media:group><media:content url="b.jpg" type="image/jpeg" fileSize="40"/><media:thumbnail url="b-small.jpg"/></media:group></item></channel></rss>"#,
        r#"<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title><id>urn:t</id><updated>2026-12-02T10:00:00Z</updated><entry><id>urn:1</id><title>One</title><updated>2026-12-02T10:00:00Z</updated><link rel="enclosure" type="audio/mpeg" length="123" href="ep1.mp3"/></entry></feed>"#,
        r#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[{"id":"1","date_published":"2026-12-01T00:00:00Z","content_text":"x","attachments":[{"url":"pics/1.png","mime_type":"image/png","size_in_bytes":777}]}]}"#,
        "<html><body>not a feed</body></html>",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub fn run(data: &[u8]) {
    let got = meshcache::parse_feed(URL, data);
    let again = meshcache::parse_feed(URL, data);
    let Ok(items) = got else {
        assert!(again.is_err(), "deterministic");
        note(1);
        return;
    };
    assert_eq!(Ok(&items), again.as_ref().map_err(|_| ()), "deterministic");
    note(2 + items.len().min(8) as u64);
    let mut seen_undated = false;
    for w in items.windows(2) {
        if let (Some(a), Some(b)) = (w[0].published, w[1].published) {
            assert!(a >= b, "newest first");
        }
    }
    for item in &items {
        if item.published.is_none() {
            seen_undated = true;
        } else {
            assert!(!seen_undated, "dated items before undated ones");
        }
        let mut urls = HashSet::new();
        for m in &item.media {
            note(20 + m.kind as u64);
            let u = url::Url::parse(&m.url).expect("absolute");
            assert!(matches!(u.scheme(), "http" | "https"), "{}", m.url);
            assert!(urls.insert(m.url.clone()), "{} twice", m.url);
        }
    }
}
