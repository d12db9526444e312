//! Feed sync for the tests: objects an origin serves (distinct bodies, cacheable an hour),
//! feed documents over them (RSS 2.0 with Media RSS and enclosures, Atom, JSON Feed), the
//! `[sync]` settings of a subscriber, and `/status.json`'s sync figures read as JSON.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::client::Resp;
use super::mesh::Device;
use super::{Origin, Reply};

/// One object of the origin: a feed document or a media file.
#[derive(Clone)]
pub struct Object {
    pub path: String,
    pub content_type: String,
    pub body: Bytes,
}

impl Object {
    /// `len` bytes of content of its own (no two paths share a body, so no two objects
    /// share a BLAKE3 hash in a store).
    pub fn new(path: &str, content_type: &str, len: usize) -> Object {
        Object {
            path: path.to_string(),
            content_type: content_type.to_string(),
            body: content(path, len),
        }
    }

    pub fn text(path: &str, content_type: &str, text: impl Into<String>) -> Object {
        Object {
            path: path.to_string(),
            content_type: content_type.to_string(),
            body: Bytes::from(text.into()),
        }
    }

    pub fn len(&self) -> u64 {
        self.body.len() as u64
    }
}

/// `len` deterministic bytes that differ for every `seed` (xorshift64 from a hash of it).
pub fn content(seed: &str, len: usize) -> Bytes {
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    x |= 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// An origin that serves `objects` (`cache-control: max-age=3600`, their content types)
/// and answers every path of `gone` with a 404 that may not be stored; any other path is
/// the origin builder's 404. It counts requests per path (`Origin::hits`).
pub async fn serve(objects: &[Object], gone: &[&str]) -> Origin {
    let mut b = Origin::builder();
    for o in objects {
        let o = o.clone();
        let path = o.path.clone();
        b = b.route(&path, move |_| {
            Reply::ok(o.body.clone())
                .header("cache-control", "max-age=3600")
                .header("content-type", &o.content_type)
        });
    }
    for g in gone {
        b = b.route(g, |_| {
            let mut r = Reply::ok("gone\n")
                .header("cache-control", "no-store")
                .header("content-type", "text/plain");
            r.status = 404;
            r
        });
    }
    b.run().await
}

fn medium(content_type: &str) -> &'static str {
    match content_type.split('/').next() {
        Some("image") => "image",
        Some("video") => "video",
        Some("audio") => "audio",
        _ => "document",
    }
}

/// `<media:content>` for `o` (its size declared as `fileSize`).
pub fn media_content(o: &Object) -> String {
    format!(
        r#"<media:content url="{}" type="{}" fileSize="{}" medium="{}"/>"#,
        o.path,
        o.content_type,
        o.len(),
        medium(&o.content_type)
    )
}

/// `<media:thumbnail>` for `o` (kept by the parser only next to a `media:content` or in a
/// `media:group` with one).
pub fn thumbnail(o: &Object) -> String {
    format!(r#"<media:thumbnail url="{}"/>"#, o.path)
}

/// An RSS `<enclosure>` for `o`.
pub fn enclosure(o: &Object) -> String {
    format!(
        r#"<enclosure url="{}" length="{}" type="{}"/>"#,
        o.path,
        o.len(),
        o.content_type
    )
}

/// `<media:group>` around these elements.
pub fn group(inner: &[String]) -> String {
    format!("<media:group>{}</media:group>", inner.concat())
}

/// An RSS 2.0 document with Media RSS. `items[i]` is the inner XML of item `i + 1`, which
/// is published at 10:`i + 1` on 1 December 2026: the last item is the newest, and the
/// document lists them oldest first (the parser sorts them).
pub fn rss(items: &[String]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?>\n<rss version=\"2.0\" xmlns:media=\"http://search.yahoo.com/mrss/\">\n\
         <channel><title>Carriage news</title><link>http://example.org/</link>\
         <description>test feed</description>\n",
    );
    for (i, inner) in items.iter().enumerate() {
        let n = i + 1;
        s.push_str(&format!(
            "<item><title>Item {n}</title><guid>item-{n}</guid>\
             <pubDate>Tue, 01 Dec 2026 10:{n:02}:00 GMT</pubDate>\n  {inner}\n</item>\n"
        ));
    }
    s.push_str("</channel></rss>\n");
    s
}

/// An Atom document: entry `i + 1` (updated at 10:`i + 1`, 1 December 2026) encloses
/// `enclosures[i]` by `<link rel="enclosure">`.
pub fn atom(enclosures: &[&Object]) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\
         <title>Carriage podcast</title><id>urn:meshcache:test:podcast</id>\
         <updated>2026-12-01T10:{:02}:00Z</updated>\n",
        enclosures.len()
    );
    for (i, o) in enclosures.iter().enumerate() {
        let n = i + 1;
        s.push_str(&format!(
            "<entry><id>urn:meshcache:test:episode:{n}</id><title>Episode {n}</title>\
             <updated>2026-12-01T10:{n:02}:00Z</updated>\n  \
             <link rel=\"alternate\" href=\"/episodes/{n}\"/>\n  \
             <link rel=\"enclosure\" type=\"{}\" length=\"{}\" href=\"{}\"/>\n</entry>\n",
            o.content_type,
            o.len(),
            o.path
        ));
    }
    s.push_str("</feed>\n");
    s
}

/// A JSON Feed 1.1 document: item `i + 1` (published at 10:`i + 1`, 1 December 2026) has
/// `attachments[i]`.
pub fn json_feed(attachments: &[Vec<&Object>]) -> String {
    let items: Vec<Value> = attachments
        .iter()
        .enumerate()
        .map(|(i, objects)| {
            let n = i + 1;
            serde_json::json!({
                "id": format!("post-{n}"),
                "date_published": format!("2026-12-01T10:{n:02}:00Z"),
                "content_text": format!("post {n}"),
                "attachments": objects.iter().map(|o| serde_json::json!({
                    "url": o.path,
                    "mime_type": o.content_type,
                    "size_in_bytes": o.len(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Carriage photos",
        "items": items,
    })
    .to_string()
}

/// The `[sync]` settings of a subscriber, to append to a device's config
/// (`Device::start_with_args`): every feed with `media = "all"` and this `max_item`.
pub fn sync_toml(budget: &str, from_origin: bool, max_item: &str, feeds: &[&str]) -> String {
    let mut s = format!("\n[sync]\nbudget = \"{budget}\"\nfrom_origin = {from_origin}\n");
    for url in feeds {
        s.push_str(&format!(
            "\n[[sync.feed]]\nurl = \"{url}\"\nmedia = \"all\"\nmax_item = \"{max_item}\"\n"
        ));
    }
    s
}

/// `/status.json` of `d`, parsed, and as text (for messages).
pub async fn status(d: &Device) -> (Value, String) {
    let text = d.status().await;
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("/status.json does not parse ({e}): {text}"));
    (v, text)
}

/// A top-level number of the status.
pub fn num(v: &Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {name} in {v}"))
}

/// `sync_feeds[i]` of the status.
pub fn feed(v: &Value, i: usize) -> &Value {
    let f = &v["sync_feeds"][i];
    assert!(f.is_object(), "no sync_feeds[{i}] in {v}");
    f
}

/// A number of `sync_feeds[i]`.
pub fn feed_num(v: &Value, i: usize, name: &str) -> u64 {
    feed(v, i)[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no number sync_feeds[{i}].{name} in {v}"))
}

/// Feed `i` is up to date and holds every media object its settings admit.
pub fn synced(v: &Value, i: usize) -> bool {
    let f = &v["sync_feeds"][i];
    f["up_to_date"] == true && f["media_wanted"].is_u64() && f["media_held"] == f["media_wanted"]
}

/// Polls `d`'s status until `done` holds; panics after `secs` seconds with the status and
/// what was awaited. Returns the status that satisfied it.
pub async fn wait_status(
    d: &Device,
    what: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (v, text) = status(d).await;
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "after {secs} s, still not {what}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A response this device served from its own cache: a hit, not forwarded, not a peer's.
pub fn assert_local_hit(r: &Resp, what: &str) {
    let cs = r.cache_status();
    assert!(
        cs.contains("; hit") && !cs.contains("fwd=") && !cs.contains("peer="),
        "{what} is not a local hit: {cs}"
    );
}
