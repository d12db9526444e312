//! A feed document → what to prefetch for it: its items, newest first, each with the media
//! it links (thumbnails, images, enclosures), URLs resolved against the feed's URL.
//! RSS 2.0, Atom and JSON Feed, with Media RSS (`media:content`, `media:thumbnail`) and
//! enclosures, parsed by `feed-rs`. A document that does not parse is an error that says
//! why; a media URL that does not resolve to `http`/`https` is left out.
//!
//! feed-rs 3.0 takes an item's `enclosure` and its `media:content` for the same media and
//! keeps the latter. Known gap: a `media:thumbnail` with no `media:content` in its scope
//! is dropped by the parser, so such an item's thumbnail is not prefetched.

use std::time::{Duration, SystemTime};

use feed_rs::model::{Entry, MediaObject};

/// What kind of media a URL is, in prefetch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Thumbnail,
    Image,
    /// Audio, video or anything else an item encloses.
    Enclosure,
}

/// One media URL of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub url: String,
    pub kind: Kind,
    /// The size the feed declares (often missing or wrong: a budget check, not a fact).
    pub declared: Option<u64>,
}

/// One item of a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The feed's id for it; when the feed gives none, `meshcache:` and a hash of the
    /// item's links and title (the same on every device).
    pub id: String,
    pub published: Option<SystemTime>,
    pub media: Vec<Media>,
}

/// Why a feed document was skipped.
#[derive(Debug, thiserror::Error)]
#[error("{url}: not a feed ({why})")]
pub struct FeedError {
    pub url: String,
    pub why: String,
}

/// Parses a feed document fetched from `url`. Items come newest first (published, else
/// updated; undated items last, in document order).
pub fn parse(url: &str, body: &[u8]) -> Result<Vec<Item>, FeedError> {
    let base = url::Url::parse(url).map_err(|e| FeedError {
        url: url.to_string(),
        why: format!("bad feed URL: {e}"),
    })?;
    let feed = feed_rs::parser::Builder::new()
        .base_uri(Some(url))
        // Deterministic ids for items that have none (feed-rs would make up random ones):
        // the same document gives the same items, on every device.
        .id_generator(|links, title, uri| {
            let mut h = blake3::Hasher::new();
            for l in links {
                h.update(l.href.as_bytes());
                h.update(b"\0");
            }
            if let Some(t) = title {
                h.update(t.content.as_bytes());
            }
            h.update(b"\0");
            h.update(uri.unwrap_or("").as_bytes());
            format!("meshcache:{}", &h.finalize().to_hex()[..32])
        })
        .build()
        .parse(body)
        .map_err(|e| FeedError {
            url: url.to_string(),
            why: e.to_string(),
        })?;
    let mut items: Vec<Item> = feed.entries.iter().map(|e| item(&base, e)).collect();
    // Stable: undated items keep their order, after the dated ones.
    items.sort_by_key(|i| std::cmp::Reverse((i.published.is_some(), i.published)));
    Ok(items)
}

fn item(base: &url::Url, e: &Entry) -> Item {
    let mut media: Vec<Media> = Vec::new();
    let mut push = |href: &str, kind: Kind, declared: Option<u64>| {
        let Some(u) = resolve(base, href) else { return };
        if let Some(m) = media.iter_mut().find(|m| m.url == u) {
            // The same URL as thumbnail and content: the earlier kind wins.
            m.kind = m.kind.min(kind);
            m.declared = m.declared.or(declared);
        } else {
            media.push(Media {
                url: u,
                kind,
                declared: declared.filter(|n| *n > 0),
            });
        }
    };
    for m in &e.media {
        media_object(m, &mut push);
    }
    // Atom enclosures, and JSON Feed attachments (links with a media type).
    for l in &e.links {
        let enclosure = match l.rel.as_deref() {
            Some("enclosure") => true,
            None => l.media_type.is_some(),
            _ => false,
        };
        if enclosure {
            push(&l.href, kind_of(l.media_type.as_deref()), l.length);
        }
    }
    let published = e
        .published
        .or(e.updated)
        .and_then(|t| u64::try_from(t.timestamp()).ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    Item {
        id: e.id.clone(),
        published,
        media,
    }
}

fn media_object(m: &MediaObject, push: &mut impl FnMut(&str, Kind, Option<u64>)) {
    for t in &m.thumbnails {
        push(&t.image.uri, Kind::Thumbnail, None);
    }
    for c in &m.content {
        if let Some(u) = &c.url {
            let mime = c.content_type.as_ref().map(|t| t.to_string());
            push(u.as_str(), kind_of(mime.as_deref()), c.size);
        }
    }
}

fn kind_of(mime: Option<&str>) -> Kind {
    match mime {
        Some(m) if m.starts_with("image/") => Kind::Image,
        _ => Kind::Enclosure,
    }
}

fn resolve(base: &url::Url, href: &str) -> Option<String> {
    let u = base.join(href.trim()).ok()?;
    matches!(u.scheme(), "http" | "https").then(|| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: &str = r#"<?xml version="1.0"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/">
<channel><title>News</title><link>https://example.org/</link><description>d</description>
<item><guid>a</guid><title>Older</title><pubDate>Mon, 01 Dec 2026 10:00:00 GMT</pubDate>
  <enclosure url="/media/a.mp4" length="5000000" type="video/mp4"/>
</item>
<item><guid>c</guid><title>Undated</title>
  <media:group><media:content url="/media/c-hd.mp4" type="video/mp4"/><media:thumbnail url="thumbs/c.jpg"/></media:group>
</item>
<item><guid>b</guid><title>Newer</title><pubDate>Tue, 02 Dec 2026 10:00:00 GMT</pubDate>
  <media:content url="https://cdn.example.org/b.jpg" type="image/jpeg" fileSize="40000"/>
  <media:thumbnail url="https://cdn.example.org/b-small.jpg"/>
  <enclosure url="javascript:alert(1)" length="1" type="video/mp4"/>
</item>
</channel></rss>"#;

    #[test]
    fn rss_with_media_rss_and_enclosures_newest_first_relative_links_resolved() {
        let items = parse("https://example.org/news/feed.xml", RSS.as_bytes()).unwrap();
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"], "newest first, undated last");
        let b = &items[0].media;
        assert!(b.contains(&Media {
            url: "https://cdn.example.org/b.jpg".into(),
            kind: Kind::Image,
            declared: Some(40000)
        }));
        assert!(b
            .iter()
            .any(|m| m.kind == Kind::Thumbnail && m.url.ends_with("b-small.jpg")));
        assert!(
            b.iter().all(|m| m.url.starts_with("https://")),
            "a javascript: URL is left out: {b:?}"
        );
        let a = &items[1].media;
        assert!(a.contains(&Media {
            url: "https://example.org/media/a.mp4".into(),
            kind: Kind::Enclosure,
            declared: Some(5_000_000)
        }));
        let c = &items[2].media;
        assert_eq!(
            c,
            &vec![
                Media {
                    url: "https://example.org/news/thumbs/c.jpg".into(),
                    kind: Kind::Thumbnail,
                    declared: None
                },
                Media {
                    url: "https://example.org/media/c-hd.mp4".into(),
                    kind: Kind::Enclosure,
                    declared: None
                }
            ]
        );
    }

    #[test]
    fn atom_enclosures() {
        let atom = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>T</title><id>urn:t</id><updated>2026-12-02T10:00:00Z</updated>
<entry><id>urn:1</id><title>One</title><updated>2026-12-02T10:00:00Z</updated>
  <link rel="alternate" href="https://example.org/1"/>
  <link rel="enclosure" type="audio/mpeg" length="123" href="ep1.mp3"/>
</entry></feed>"#;
        let items = parse("https://example.org/podcast/atom", atom.as_bytes()).unwrap();
        assert_eq!(
            items[0].media,
            vec![Media {
                url: "https://example.org/podcast/ep1.mp3".into(),
                kind: Kind::Enclosure,
                declared: Some(123)
            }],
            "the alternate link is not media"
        );
    }

    #[test]
    fn json_feed_attachments() {
        let json = r#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[
          {"id":"1","date_published":"2026-12-01T00:00:00Z","content_text":"x","url":"https://example.org/1",
           "attachments":[{"url":"pics/1.png","mime_type":"image/png","size_in_bytes":777}]}]}"#;
        let items = parse("https://example.org/feed.json", json.as_bytes()).unwrap();
        assert_eq!(
            items[0].media,
            vec![Media {
                url: "https://example.org/pics/1.png".into(),
                kind: Kind::Image,
                declared: Some(777)
            }]
        );
    }

    /// Regression (found by the `feed` fuzz target): feed-rs makes up a random id for an
    /// item without one, so the same document parsed twice gave different items.
    #[test]
    fn items_without_an_id_get_the_same_id_every_time() {
        let rss = r#"<rss version="2.0"><channel><title>N</title><link>https://e/</link><description>d</description>
<item><title>no guid</title><link>https://e/1</link></item></channel></rss>"#;
        let a = parse("https://e/feed", rss.as_bytes()).unwrap();
        let b = parse("https://e/feed", rss.as_bytes()).unwrap();
        assert_eq!(a, b);
        assert!(a[0].id.starts_with("meshcache:"), "{}", a[0].id);
    }

    #[test]
    fn a_document_that_is_not_a_feed_says_why() {
        for bad in [
            "<html><body>hi</body></html>",
            "",
            "{\"not\": \"a feed\"}",
            "\u{0}\u{1}",
        ] {
            let err = parse("https://example.org/f", bad.as_bytes()).unwrap_err();
            assert!(
                err.to_string()
                    .contains("https://example.org/f: not a feed"),
                "{err}"
            );
        }
    }
}
