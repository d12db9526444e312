//! Feed sync and catalogs, through the built binary: several `meshcache run` processes in one
//! group on loopback, an in-process origin that counts requests per path.
//!
//! A device subscribed to feeds (`[[sync.feed]]`) that meets a group peer holding a newer
//! copy of a feed document takes the document and the media of its items from that peer —
//! not from the origin (`from_origin = false`) — within its daily budget, so that the
//! owner's app later finds them as local hits, with the origin gone. Covered here: a full
//! sync (RSS with Media RSS thumbnails, images and enclosures), the budget (never exceeded,
//! newest first, the rest not stored), a feed that does not parse (its error reported, the
//! other feed still synced; JSON Feed), an item whose media is gone (Atom; not a failure when
//! merely not held nearby, a failure when the origin answers 404), a peer that leaves
//! mid-sync (the rest comes from another peer), and catalogs: a miss asks only the peer
//! whose catalog may hold the key, and asks no one when no catalog matches.
//!
//! Everything waits on `/status.json` figures with a deadline, never on a sleep.

use crate::support::feed::{
    self, assert_local_hit, enclosure, feed_num, group, media_content, num, status, sync_toml,
    synced, thumbnail, wait_status, Object,
};
use crate::support::mesh::{grouped, Device};
use crate::support::{get, Origin, Reply};

/// Every object read through `d`'s proxy (a reader's app): each a 200 with its body; then
/// waits until `d` has stored `stored` variants in all (an entry is committed after its
/// response ended).
async fn read_all(d: &Device, origin: &Origin, objects: &[&Object], stored: u64) {
    for o in objects {
        let r = get(d.addr(), &origin.url(&o.path), &[]).await;
        assert_eq!(r.status, 200, "{}: {}", o.path, r.text());
        assert_eq!(r.body, o.body, "{}", o.path);
    }
    d.wait_figure("stored_variants", stored).await;
}

/// The origin's request count for each object.
fn hits(origin: &Origin, objects: &[&Object]) -> Vec<(String, usize)> {
    objects
        .iter()
        .map(|o| (o.path.clone(), origin.hits(&o.path)))
        .collect()
}

/// `o` through `d` with `Cache-Control: only-if-cached`: held (a local hit, the right
/// bytes) or not (504, nobody asked).
async fn held(d: &Device, origin_url: &str, o: &Object) -> bool {
    let r = get(d.addr(), origin_url, &[("cache-control", "only-if-cached")]).await;
    match r.status.as_u16() {
        200 => {
            assert_local_hit(&r, &o.path);
            assert_eq!(r.body, o.body, "{}: the bytes held", o.path);
            true
        }
        504 => false,
        s => panic!("{}: only-if-cached answered {s}: {}", o.path, r.text()),
    }
}

fn peers_of(v: &serde_json::Value, i: usize) -> Vec<String> {
    feed::feed(v, i)["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("sync_feeds[{i}].peers is not an array: {v}"))
        .iter()
        .map(|p| p.as_str().expect("a peer id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_meeting_a_reader_holds_the_feed_and_its_media_as_local_hits() {
    let thumb = |n: usize| Object::new(&format!("/thumbs/{n}.jpg"), "image/jpeg", 3_000 + n);
    let image = |n: usize| Object::new(&format!("/media/{n}.jpg"), "image/jpeg", 30_000 + n);
    let audio = |n: usize| Object::new(&format!("/audio/{n}.mp3"), "audio/mpeg", 60_000 + n);
    let video = |n: usize| Object::new(&format!("/video/{n}.mp4"), "video/mp4", 80_000 + n);
    let (t1, i1, a2, t3, i3, a4) = (thumb(1), image(1), audio(2), thumb(3), image(3), audio(4));
    let (t5, v5, t6, v6) = (thumb(5), video(5), thumb(6), video(6));
    // Six items: an image with its thumbnail, an enclosure alone, a media:group of a video
    // and its thumbnail (an item's enclosure and media:content would be one medium to the
    // parser, so each item has one or the other): ten media in all.
    let doc = feed::rss(&[
        format!("{}{}", media_content(&i1), thumbnail(&t1)),
        enclosure(&a2),
        format!("{}{}", media_content(&i3), thumbnail(&t3)),
        enclosure(&a4),
        group(&[media_content(&v5), thumbnail(&t5)]),
        group(&[media_content(&v6), thumbnail(&t6)]),
    ]);
    let doc = Object::text("/feed.xml", "application/rss+xml", doc);
    let media = [&t1, &i1, &a2, &t3, &i3, &a4, &t5, &v5, &t6, &v6];
    let media_bytes: u64 = media.iter().map(|o| o.len()).sum();
    let mut all = vec![&doc];
    all.extend(media);
    let objects: Vec<Object> = all.iter().map(|o| (*o).clone()).collect();
    let origin = feed::serve(&objects, &[]).await;
    let feed_url = origin.url("/feed.xml");

    let (dirs, _) = grouped(2);
    // A: no subscription, a reader whose app fetched the feed and everything it shows.
    let a = Device::start(dirs[0].path(), &[]);
    read_all(&a, &origin, &all, all.len() as u64).await;
    let before = hits(&origin, &all);
    assert!(before.iter().all(|(_, n)| *n == 1), "{before:?}");

    // B subscribes, nearby devices only, and meets A.
    let b = Device::start_with_args(
        dirs[1].path(),
        &sync_toml("256MiB", false, "8MiB", &[&feed_url]),
        &["--peer", &a.ticket],
    );
    let v = wait_status(&b, "the feed synced from A", 45, |v| synced(v, 0)).await;
    let f = feed::feed(&v, 0);
    assert_eq!(f["url"], feed_url.as_str(), "{v}");
    assert_eq!(feed_num(&v, 0, "items_newest"), 6, "{v}");
    assert_eq!(feed_num(&v, 0, "media_wanted"), 10, "{v}");
    assert_eq!(feed_num(&v, 0, "media_held"), 10, "{v}");
    assert!(
        feed_num(&v, 0, "bytes") >= doc.len() + media_bytes,
        "the document and its media are held: {v}"
    );
    assert!(peers_of(&v, 0).contains(&a.id), "it came from A: {v}");
    assert!(f["synced_at_unix_ms"].is_u64(), "{v}");
    assert!(f["last_error"].is_null(), "{v}");
    // The document and the ten media.
    assert!(num(&v, "sync_fetched") >= 11, "{v}");
    assert_eq!(num(&v, "sync_failed"), 0, "{v}");
    assert_eq!(num(&v, "sync_budget"), 256 << 20, "{v}");
    let used = num(&v, "sync_used_today");
    assert!(
        (media_bytes..=256 << 20).contains(&used),
        "today's prefetch counts the media: {v}"
    );
    assert_eq!(
        hits(&origin, &all),
        before,
        "B asked the origin for nothing: it took everything from A"
    );

    // The owner opens the app with the internet gone: every object is a local hit.
    drop(origin);
    for o in &all {
        let url = feed_url.replace("/feed.xml", &o.path);
        let r = get(b.addr(), &url, &[]).await;
        assert_eq!(r.status, 200, "{}: {}", o.path, r.text());
        assert_eq!(r.body, o.body, "{}", o.path);
        assert_local_hit(&r, &o.path);
    }
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_prefetches_no_more_than_the_budget() {
    // Ten images of 100 kB (declared exactly); a budget of 350 kB a day has room for three,
    // whether or not the feed document (2 kB) is charged to it.
    const BUDGET: u64 = 350_000;
    let images: Vec<Object> = (1..=10)
        .map(|n| Object::new(&format!("/photos/{n}.jpg"), "image/jpeg", 100_000))
        .collect();
    let doc = feed::rss(&images.iter().map(media_content).collect::<Vec<_>>());
    let doc = Object::text("/photos.xml", "application/rss+xml", doc);
    let mut all = vec![&doc];
    all.extend(images.iter());
    let objects: Vec<Object> = all.iter().map(|o| (*o).clone()).collect();
    let origin = feed::serve(&objects, &[]).await;
    let feed_url = origin.url("/photos.xml");

    let (dirs, _) = grouped(2);
    let a = Device::start(dirs[0].path(), &[]);
    read_all(&a, &origin, &all, all.len() as u64).await;
    let before = hits(&origin, &all);

    let b = Device::start_with_args(
        dirs[1].path(),
        &sync_toml("350KB", false, "100KB", &[&feed_url]),
        &["--peer", &a.ticket],
    );
    let v = wait_status(&b, "three images prefetched", 45, |v| {
        v["sync_feeds"][0]["media_held"].as_u64() >= Some(3)
            && v["sync_used_today"].as_u64() >= Some(300_000)
    })
    .await;
    // With 300 kB charged, less than 100 kB is left: no further image can be reserved.
    assert_eq!(num(&v, "sync_budget"), BUDGET, "{v}");
    assert!(num(&v, "sync_used_today") <= BUDGET, "{v}");
    assert_eq!(feed_num(&v, 0, "media_wanted"), 10, "{v}");
    assert_eq!(feed_num(&v, 0, "media_held"), 3, "{v}");
    assert_eq!(
        feed::feed(&v, 0)["up_to_date"],
        false,
        "A holds media B does not: {v}"
    );

    // Newest first: items 10, 9 and 8 are held; the others are not stored at all.
    for (i, o) in images.iter().enumerate() {
        let n = i + 1;
        let is_held = held(&b, &origin.url(&o.path), o).await;
        assert_eq!(is_held, n >= 8, "item {n}: held {is_held}");
    }
    let (v, text) = status(&b).await;
    assert!(num(&v, "sync_used_today") <= BUDGET, "{text}");
    assert_eq!(feed_num(&v, 0, "media_held"), 3, "{text}");
    assert_eq!(hits(&origin, &all), before, "B never asked the origin");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_does_not_parse_is_logged_and_the_others_still_sync() {
    let bad = Object::text(
        "/broken.xml",
        "application/rss+xml",
        "<html><body>502 Bad Gateway, not a feed at all</body></html>",
    );
    let png = |n: usize| Object::new(&format!("/pics/{n}.png"), "image/png", 20_000 + n);
    let mp3 = |n: usize| Object::new(&format!("/clips/{n}.mp3"), "audio/mpeg", 50_000 + n);
    let media: Vec<Object> = (1..=3).flat_map(|n| [png(n), mp3(n)]).collect();
    // A JSON Feed: item n has pics/n.png and clips/n.mp3 as attachments.
    let good = feed::json_feed(
        &media
            .chunks(2)
            .map(|c| c.iter().collect::<Vec<_>>())
            .collect::<Vec<_>>(),
    );
    let good = Object::text("/photos.json", "application/feed+json", good);
    let mut all = vec![&bad, &good];
    all.extend(media.iter());
    let objects: Vec<Object> = all.iter().map(|o| (*o).clone()).collect();
    let origin = feed::serve(&objects, &[]).await;
    let (bad_url, good_url) = (origin.url(&bad.path), origin.url(&good.path));

    let (dirs, _) = grouped(2);
    // A read both (its app showed an error for the broken one), so a peer holds it.
    let a = Device::start(dirs[0].path(), &[]);
    read_all(&a, &origin, &all, all.len() as u64).await;
    let before = hits(&origin, &all);

    // The broken feed comes first in B's settings.
    let b = Device::start_with_args(
        dirs[1].path(),
        &sync_toml("256MiB", false, "8MiB", &[&bad_url, &good_url]),
        &["--peer", &a.ticket],
    );
    let v = wait_status(
        &b,
        "the good feed synced and the broken one's error reported",
        45,
        |v| synced(v, 1) && v["sync_feeds"][0]["last_error"].is_string(),
    )
    .await;
    assert_eq!(
        feed::feed(&v, 0)["url"],
        bad_url.as_str(),
        "config order: {v}"
    );
    assert_eq!(
        feed::feed(&v, 1)["url"],
        good_url.as_str(),
        "config order: {v}"
    );
    let error = feed::feed(&v, 0)["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("not a feed") || error.to_lowercase().contains("parse"),
        "the error says the document does not parse: {error}"
    );
    assert_eq!(feed_num(&v, 0, "media_held"), 0, "{v}");
    assert_eq!(feed_num(&v, 1, "items_newest"), 3, "{v}");
    assert_eq!(feed_num(&v, 1, "media_wanted"), 6, "{v}");
    assert!(feed::feed(&v, 1)["last_error"].is_null(), "{v}");
    assert!(peers_of(&v, 1).contains(&a.id), "{v}");
    assert!(
        num(&v, "sync_failed") >= 1,
        "a document that does not parse is a failure: {v}"
    );
    // The good document and its six media (the broken one may count as fetched or not).
    assert!(num(&v, "sync_fetched") >= 7, "{v}");
    for o in &media {
        assert!(
            held(&b, &origin.url(&o.path), o).await,
            "{} not held",
            o.path
        );
    }
    assert_eq!(hits(&origin, &all), before, "B never asked the origin");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_whose_media_is_gone_does_not_stop_the_rest() {
    // An Atom podcast of four episodes; the origin answers 404 for episode 2's audio.
    let episodes: Vec<Object> = (1..=4)
        .map(|n| Object::new(&format!("/episodes/{n}.mp3"), "audio/mpeg", 40_000 + n))
        .collect();
    let doc = feed::atom(&episodes.iter().collect::<Vec<_>>());
    let doc = Object::text("/podcast.atom", "application/atom+xml", doc);
    let gone = &episodes[1];
    let present: Vec<&Object> = episodes.iter().filter(|o| o.path != gone.path).collect();
    let mut served = vec![doc.clone()];
    served.extend(present.iter().map(|o| (*o).clone()));
    let origin = feed::serve(&served, &[&gone.path]).await;
    let feed_url = origin.url(&doc.path);

    let (dirs, _) = grouped(3);
    // A's app read the feed and tried every episode: episode 2 is a 404, never stored.
    let a = Device::start(dirs[0].path(), &[]);
    let mut readable = vec![&doc];
    readable.extend(present.iter().copied());
    read_all(&a, &origin, &readable, readable.len() as u64).await;
    let r = get(a.addr(), &origin.url(&gone.path), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(origin.hits(&gone.path), 1);

    // B: nearby devices only. Media no peer holds is not a failure, just not there.
    let b = Device::start_with_args(
        dirs[1].path(),
        &sync_toml("256MiB", false, "8MiB", &[&feed_url]),
        &["--peer", &a.ticket],
    );
    let v = wait_status(&b, "every episode A holds synced", 45, |v| {
        let f = &v["sync_feeds"][0];
        f["up_to_date"] == true && f["media_held"].as_u64() == Some(3)
    })
    .await;
    assert_eq!(feed_num(&v, 0, "items_newest"), 4, "{v}");
    assert_eq!(
        feed_num(&v, 0, "media_wanted"),
        4,
        "the gone episode is still wanted: {v}"
    );
    assert_eq!(
        num(&v, "sync_failed"),
        0,
        "not held nearby is no failure: {v}"
    );
    for o in &present {
        assert!(held(&b, &origin.url(&o.path), o).await, "{}", o.path);
    }
    assert!(!held(&b, &origin.url(&gone.path), gone).await);
    assert_eq!(
        origin.hits(&gone.path),
        1,
        "B did not go to the origin for it"
    );
    for o in &readable {
        assert_eq!(origin.hits(&o.path), 1, "{}: B asked the origin", o.path);
    }

    // D may also fetch from the internet: the 404 is a failure, and the rest still syncs.
    let d = Device::start_with_args(
        dirs[2].path(),
        &sync_toml("256MiB", true, "8MiB", &[&feed_url]),
        &["--peer", &a.ticket],
    );
    let v = wait_status(
        &d,
        "the feed synced and the gone episode's 404 counted as a failure",
        45,
        |v| {
            let f = &v["sync_feeds"][0];
            f["up_to_date"] == true
                && f["media_held"].as_u64() == Some(3)
                && v["sync_failed"].as_u64() >= Some(1)
        },
    )
    .await;
    assert_eq!(feed_num(&v, 0, "media_wanted"), 4, "{v}");
    assert!(
        origin.hits(&gone.path) >= 2,
        "D asked the origin for the episode nobody holds"
    );
    for o in &present {
        assert!(held(&d, &origin.url(&o.path), o).await, "{}", o.path);
    }
    assert!(!held(&d, &origin.url(&gone.path), gone).await);
    a.stop();
    b.stop();
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_leaves_mid_sync_does_not_stop_the_sync() {
    // Six items, each a 2 MB video and its thumbnail: 12 MB to move, so the sync is under
    // way for a while after the document arrived.
    const VIDEO: usize = 2_000_000;
    let thumbs: Vec<Object> = (1..=6)
        .map(|n| Object::new(&format!("/thumbs/{n}.jpg"), "image/jpeg", 5_000 + n))
        .collect();
    let videos: Vec<Object> = (1..=6)
        .map(|n| Object::new(&format!("/videos/{n}.mp4"), "video/mp4", VIDEO + n))
        .collect();
    let doc = feed::rss(
        &thumbs
            .iter()
            .zip(&videos)
            .map(|(t, v)| group(&[media_content(v), thumbnail(t)]))
            .collect::<Vec<_>>(),
    );
    let doc = Object::text("/videos.xml", "application/rss+xml", doc);
    let media: Vec<&Object> = thumbs.iter().chain(&videos).collect();
    let mut all = vec![&doc];
    all.extend(media.iter().copied());
    let objects: Vec<Object> = all.iter().map(|o| (*o).clone()).collect();
    let origin = feed::serve(&objects, &[]).await;
    let feed_url = origin.url(&doc.path);

    let (dirs, _) = grouped(3);
    // A and C each read everything from the origin, before they know each other.
    let a = Device::start(dirs[0].path(), &[]);
    read_all(&a, &origin, &all, all.len() as u64).await;
    let c = Device::start(dirs[2].path(), &[]);
    read_all(&c, &origin, &all, all.len() as u64).await;
    let before = hits(&origin, &all);
    assert!(before.iter().all(|(_, n)| *n == 2), "{before:?}");

    let b = Device::start_with_args(
        dirs[1].path(),
        &sync_toml("256MiB", false, "8MiB", &[&feed_url]),
        &["--peer", &a.ticket, "--peer", &c.ticket],
    );
    wait_status(&b, "the sync started", 45, |v| {
        v["sync_fetched"].as_u64() >= Some(1)
    })
    .await;
    // A leaves the carriage at once (no goodbye).
    a.run.kill9();
    // What had arrived at B when A was gone. With at most the document and four media
    // arrived, eight or more media were not here: even if a few had fully reached B and
    // were being stored, the rest can only come from C.
    let (v, _) = status(&b).await;
    let arrived = num(&v, "sync_fetched");
    let c_must_serve = arrived <= 5;
    eprintln!("A left with {arrived} objects (document and media) arrived at B");

    let v = wait_status(&b, "the feed synced from C after A left", 45, |v| {
        synced(v, 0)
    })
    .await;
    assert_eq!(feed_num(&v, 0, "items_newest"), 6, "{v}");
    assert_eq!(feed_num(&v, 0, "media_wanted"), 12, "{v}");
    for o in &media {
        assert!(
            held(&b, &origin.url(&o.path), o).await,
            "{} not held",
            o.path
        );
    }
    assert_eq!(hits(&origin, &all), before, "B never asked the origin");
    if c_must_serve {
        assert!(
            c.figure("mesh_bytes_to_peers").await > 0,
            "A left early, yet C sent B nothing"
        );
        assert!(peers_of(&v, 0).contains(&c.id), "media came from C: {v}");
    }

    // B still serves: its status, and a new object through it.
    let after = Origin::builder()
        .route("/after", |_| {
            Reply::ok("still here").header("cache-control", "max-age=60")
        })
        .run()
        .await;
    let r = get(b.addr(), &after.url("/after"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "still here");
    c.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_ask_only_the_peer_whose_catalog_matches() {
    let origin = Origin::builder()
        .route("/x", |_| {
            Reply::ok(feed::content("/x", 50_000)).header("cache-control", "max-age=3600")
        })
        .route("/y1", |_| {
            Reply::ok("nobody held y1").header("cache-control", "max-age=3600")
        })
        .route("/y2", |_| {
            Reply::ok("nobody held y2").header("cache-control", "max-age=3600")
        })
        .route("/y3", |_| {
            Reply::ok("nobody held y3").header("cache-control", "max-age=3600")
        })
        .run()
        .await;
    let (dirs, _) = grouped(3);
    let a = Device::start(dirs[0].path(), &[]);
    let b = Device::start(dirs[1].path(), &[&a.ticket]);
    let c = Device::start(dirs[2].path(), &[&a.ticket, &b.ticket]);
    for d in [&a, &b, &c] {
        d.wait_peers(2).await;
    }
    // C holds A's and B's catalogs (both empty so far).
    c.wait_figure("mesh_catalogs", 2).await;

    // A reads X; its catalog delta reaches C.
    let first = get(a.addr(), &origin.url("/x"), &[]).await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status().contains("fwd=miss"),
        "{}",
        first.cache_status()
    );
    a.wait_figure("stored_variants", 1).await;
    c.wait_figure("mesh_catalog_keys", 1).await;

    let (a0, b0) = (
        a.figure("mesh_lookups_answered").await,
        b.figure("mesh_lookups_answered").await,
    );
    let (sent0, skipped0) = (
        c.figure("mesh_lookups_sent").await,
        c.figure("mesh_lookups_skipped").await,
    );
    let r = get(c.addr(), &origin.url("/x"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, feed::content("/x", 50_000));
    assert!(
        r.cache_status().contains(&format!("peer=\"{}\"", a.id)),
        "X came from A: {}",
        r.cache_status()
    );
    assert_eq!(origin.hits("/x"), 1);
    a.wait_figure("mesh_lookups_answered", a0 + 1).await;
    assert_eq!(
        a.figure("mesh_lookups_answered").await,
        a0 + 1,
        "A answered one lookup"
    );
    assert_eq!(
        b.figure("mesh_lookups_answered").await,
        b0,
        "B, whose catalog is empty, was not asked"
    );
    assert_eq!(
        c.figure("mesh_lookups_sent").await,
        sent0 + 1,
        "C asked A only"
    );
    assert_eq!(c.figure("mesh_lookups_skipped").await, skipped0);

    // Now URLs nobody holds: no catalog matches, so no one is asked. A's catalog (one key)
    // matches a key it does not hold with probability 1/256; such a miss asks A alone, and
    // the next URL is tried.
    let mut skipped_one = false;
    for y in ["/y1", "/y2", "/y3"] {
        let (a0, b0) = (
            a.figure("mesh_lookups_answered").await,
            b.figure("mesh_lookups_answered").await,
        );
        let (sent0, skipped0) = (
            c.figure("mesh_lookups_sent").await,
            c.figure("mesh_lookups_skipped").await,
        );
        let r = get(c.addr(), &origin.url(y), &[]).await;
        assert_eq!(r.status, 200);
        assert!(
            r.cache_status().contains("fwd=miss"),
            "{y}: {}",
            r.cache_status()
        );
        assert_eq!(origin.hits(y), 1);
        let (sent, skipped) = (
            c.figure("mesh_lookups_sent").await,
            c.figure("mesh_lookups_skipped").await,
        );
        assert_eq!(
            b.figure("mesh_lookups_answered").await,
            b0,
            "{y}: B, whose catalog is empty, was asked"
        );
        if skipped == skipped0 + 1 {
            assert_eq!(sent, sent0, "{y}: skipped, yet C sent a lookup");
            assert_eq!(
                a.figure("mesh_lookups_answered").await,
                a0,
                "{y}: skipped, yet A answered a lookup"
            );
            skipped_one = true;
            break;
        }
        // A false match in A's catalog: A, and only A, was asked.
        assert_eq!(skipped, skipped0, "{y}");
        assert_eq!(sent, sent0 + 1, "{y}: neither skipped nor asked A alone");
        a.wait_figure("mesh_lookups_answered", a0 + 1).await;
    }
    assert!(skipped_one, "no miss was skipped");
    a.stop();
    b.stop();
    c.stop();
}

/// Strangers get no catalog and never send a feed document, but media whose URL names its
/// content's hash may come from them: a stranger cannot forge it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_certifying_media_come_from_a_stranger_and_nothing_else_does() {
    use crate::support::digest::by_hash;
    let body = |n: usize| feed::content(&format!("episode-{n}"), 20_000 + n);
    let certified: Vec<Object> = (1..=3)
        .map(|n| {
            let b = body(n);
            let path = by_hash("/pool", &b);
            Object {
                path,
                content_type: "audio/mpeg".into(),
                body: b,
            }
        })
        .collect();
    let plain = Object::new("/audio/plain.mp3", "audio/mpeg", 25_000);
    let mut items: Vec<String> = certified.iter().map(enclosure).collect();
    items.push(enclosure(&plain));
    let doc = Object::text("/feed.xml", "application/rss+xml", feed::rss(&items));
    let mut objects = certified.clone();
    objects.push(plain.clone());
    objects.push(doc.clone());
    let origin = feed::serve(&objects, &[]).await;
    let feed_url = origin.url("/feed.xml");

    let (dirs, _) = grouped(2);
    // A, a member, read only the feed document; S, a stranger, read every medium.
    let a = Device::start(dirs[0].path(), &[]);
    read_all(&a, &origin, &[&doc], 1).await;
    let sdir = tempfile::tempdir().unwrap();
    let s = Device::start_with_args(sdir.path(), "", &[]);
    let media: Vec<&Object> = certified.iter().chain([&plain]).collect();
    read_all(&s, &origin, &media, media.len() as u64).await;
    s.wait_figure("mesh_open_tags", media.len() as u64).await;
    let all: Vec<&Object> = objects.iter().collect();
    let before = hits(&origin, &all);

    let b = Device::start_with_args(
        dirs[1].path(),
        &sync_toml("256MiB", false, "8MiB", &[&feed_url]),
        &["--peer", &a.ticket, "--open-peer", &s.open_ticket()],
    );
    b.wait_strangers(1).await;
    let v = wait_status(&b, "the certified media from the stranger", 45, |v| {
        v["sync_feeds"][0]["media_held"].as_u64() == Some(3)
    })
    .await;
    assert_eq!(feed_num(&v, 0, "items_newest"), 4, "{v}");
    assert_eq!(feed_num(&v, 0, "media_wanted"), 4, "{v}");
    assert!(
        peers_of(&v, 0).contains(&a.id),
        "the document came from A: {v}"
    );
    let s_open = s.run.open.clone().expect("the open mesh runs").0;
    assert!(
        peers_of(&v, 0).contains(&s_open),
        "the media came from the stranger: {v}"
    );
    for o in &certified {
        assert!(
            held(&b, &origin.url(&o.path), o).await,
            "{} is held: {v}",
            o.path
        );
    }
    assert!(
        !held(&b, &origin.url(&plain.path), &plain).await,
        "an ordinary URL is never taken from a stranger"
    );
    assert_eq!(
        hits(&origin, &all),
        before,
        "B asked the origin for nothing"
    );
    for d in [a, b, s] {
        d.stop();
    }
}
