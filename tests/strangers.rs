//! Strangers in the carriage (issue 10): several `meshcache run` processes that share no
//! group, each knowing the next only by its open-mesh ticket. A stranger serves what it
//! cannot forge — a URL that names its hash, a hash the client stated, a hash the origin
//! stated to the asker directly, an attestation by a signer the asker trusts — and nothing
//! else. The hostile strangers are in `open_hostile.rs`.

use crate::support::digest::{b64, by_hash, digest_field, generated, hex, sha256};
use crate::support::mesh::{figure, Device};
use crate::support::{get, pattern, Origin, Reply};

const LEN: u64 = 600_000;

fn body() -> Vec<u8> {
    generated(LEN)
}

/// Two devices in no group, B given A's open-mesh ticket, connected both ways (A dials
/// B back); their data directories live as long as the third value.
async fn two_strangers() -> (Device, Device, [tempfile::TempDir; 2]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = Device::start_with_args(dirs[0].path(), "", &[]);
    let b = Device::start_with_args(dirs[1].path(), "", &["--open-peer", &a.open_ticket()]);
    b.wait_strangers(1).await;
    a.wait_strangers(1).await;
    (a, b, dirs)
}

/// GETs the origin saw for `path` (a device asking strangers first sends a HEAD).
fn gets(origin: &Origin, path: &str) -> usize {
    origin
        .seen(path)
        .iter()
        .filter(|s| s.method == http::Method::GET)
        .count()
}

#[tokio::test]
async fn a_by_hash_url_is_served_by_a_stranger_and_an_ordinary_one_is_not() {
    let by_hash = format!(
        "/debian/dists/stable/by-hash/SHA256/{}",
        hex(&sha256(&body()))
    );
    let origin = Origin::builder()
        .route(&by_hash, |_| Reply::generated(LEN))
        .route("/news.jpg", |_| {
            Reply::generated(LEN).header("cache-control", "public, max-age=600")
        })
        .run()
        .await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Device::start_with_args(da.path(), "", &[]);
    for path in [&by_hash[..], "/news.jpg"] {
        let r = get(a.addr(), &origin.url(path), &[]).await;
        assert_eq!(r.body, body());
    }
    a.wait_figure("mesh_open_tags", 3).await;
    let b = Device::start_with_args(db.path(), "", &["--open-peer", &a.open_ticket()]);
    b.wait_strangers(1).await;

    let r = get(b.addr(), &origin.url(&by_hash), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == body(), "the right bytes");
    assert!(
        r.cache_status().contains("detail=stranger-url"),
        "{}",
        r.cache_status()
    );
    assert_eq!(
        gets(&origin, &by_hash),
        1,
        "the origin was asked once, by A"
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/octet-stream"),
        "headers are built here"
    );
    // Regression: a stranger's bytes were counted in no source, so "bytes saved" (what did
    // not cross the internet) missed them. They count as from peers.
    b.wait_figure("bytes_from_peers", LEN).await;
    assert_eq!(figure(&b.status().await, "bytes_from_origin"), 0);
    // Stored on B: a hit now.
    let again = get(b.addr(), &origin.url(&by_hash), &[]).await;
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );

    // An ordinary public URL A holds is not taken from a stranger: nothing binds it.
    let r = get(b.addr(), &origin.url("/news.jpg"), &[]).await;
    assert_eq!(r.body, body());
    assert!(!r.cache_status().contains("peer="), "{}", r.cache_status());
    assert_eq!(gets(&origin, "/news.jpg"), 2, "B went to the origin");
    assert_eq!(
        origin.seen("/news.jpg").len(),
        2,
        "and sent no HEAD first: this origin never stated a digest"
    );
    let status = a.status().await;
    assert!(figure(&status, "mesh_open_tags") >= 1, "{status}");
    a.stop();
    b.stop();
}

#[tokio::test]
async fn a_stated_integrity_is_served_by_a_stranger_and_a_wrong_one_never() {
    let origin = Origin::builder()
        .route("/media/photo.jpg", |_| Reply::generated(LEN))
        .run()
        .await;
    let url = origin.url("/media/photo.jpg");
    let right = format!("sha256-{}", b64(&sha256(&body())));
    let wrong = format!("sha256-{}", b64(&sha256(b"a forged photo")));
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Device::start_with_args(da.path(), "", &[]);
    // A's messenger knew the hash from the message: it stated it.
    let r = get(a.addr(), &url, &[("meshcache-integrity", &right)]).await;
    assert_eq!(r.body, body());
    a.wait_figure("mesh_open_tags", 1).await;
    let b = Device::start_with_args(db.path(), "", &["--open-peer", &a.open_ticket()]);
    b.wait_strangers(1).await;

    let r = get(b.addr(), &url, &[("meshcache-integrity", &right)]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == body());
    assert!(
        r.cache_status().contains("detail=stranger-client"),
        "{}",
        r.cache_status()
    );
    assert_eq!(gets(&origin, "/media/photo.jpg"), 1);

    // A wrong value: no stranger holds it, and the origin's body does not match it.
    let r = get(b.addr(), &url, &[("meshcache-integrity", &wrong)]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    // Without a stated hash, the stranger's copy is not taken (the URL binds nothing).
    let r = get(b.addr(), &url, &[]).await;
    assert!(!r.cache_status().contains("peer="), "{}", r.cache_status());
    a.stop();
    b.stop();
}

#[tokio::test]
async fn a_digest_the_origin_states_to_this_device_lets_a_stranger_send_the_body() {
    let digest = digest_field(&body());
    let origin = Origin::builder()
        .route("/v/earlier.mp4", {
            let digest = digest_field(&body());
            move |_| {
                Reply::generated(LEN)
                    .header("cache-control", "public, max-age=600")
                    .header("repr-digest", &digest)
            }
        })
        .route("/v/clip.mp4", move |_| {
            Reply::generated(LEN)
                .header("cache-control", "public, max-age=600")
                .header("content-type", "video/mp4")
                .header("etag", "\"clip-1\"")
                .header("repr-digest", &digest)
        })
        .run()
        .await;
    let url = origin.url("/v/clip.mp4");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Device::start_with_args(da.path(), "", &[]);
    assert_eq!(get(a.addr(), &url, &[]).await.body, body());
    a.wait_figure("mesh_open_tags", 1).await;
    let b = Device::start_with_args(db.path(), "", &["--open-peer", &a.open_ticket()]);
    b.wait_strangers(1).await;
    // B has seen this origin state a digest before (so it asks it for a HEAD first; an
    // origin that never did costs no extra round trip).
    let r = get(b.addr(), &origin.url("/v/earlier.mp4"), &[]).await;
    assert!(
        !r.cache_status().contains("stranger"),
        "{}",
        r.cache_status()
    );
    let r = get(b.addr(), &url, &[]).await;
    assert!(r.body == body());
    assert!(
        r.cache_status().contains("detail=stranger-origin"),
        "{}",
        r.cache_status()
    );
    // The headers are the origin's own (from B's HEAD), not the stranger's.
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    assert_eq!(r.header("etag"), Some("\"clip-1\""));
    let seen = origin.seen("/v/clip.mp4");
    let heads = seen
        .iter()
        .filter(|s| s.method == http::Method::HEAD)
        .count();
    assert_eq!(
        (gets(&origin, "/v/clip.mp4"), heads),
        (1, 1),
        "A's GET, B's HEAD"
    );
    a.stop();
    b.stop();
}

#[tokio::test]
async fn a_gateway_signed_object_is_relayed_by_a_stranger_to_a_device_that_trusts_the_gateway() {
    let origin = Origin::builder()
        .route("/channel/video.mp4", |_| {
            Reply::generated(LEN).header("cache-control", "public, max-age=600")
        })
        .route("/channel/own.mp4", |_| {
            Reply::generated(LEN).header("cache-control", "public, max-age=600")
        })
        .run()
        .await;
    let url = origin.url("/channel/video.mp4");
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // The gateway answers strangers with its own signature: its id is public.
    let gateway = Device::start_with_args(dirs[0].path(), "operator = true", &[]);
    let g_id = gateway.id.clone();
    assert_eq!(get(gateway.addr(), &url, &[]).await.body, body());
    gateway.wait_figure("mesh_open_tags", 1).await;
    // S trusts the gateway and gets the video from it.
    let s = Device::start_with_args(
        dirs[1].path(),
        "",
        &["--operator", &g_id, "--open-peer", &gateway.open_ticket()],
    );
    s.wait_strangers(1).await;
    let r = get(s.addr(), &url, &[]).await;
    assert!(r.body == body());
    assert!(r.cache_status().contains("peer="), "{}", r.cache_status());
    s.wait_figure("mesh_open_tags", 1).await;
    // D trusts the gateway too but knows only S, a stranger: S relays the gateway's
    // signature.
    let d = Device::start_with_args(
        dirs[2].path(),
        "",
        &["--operator", &g_id, "--open-peer", &s.open_ticket()],
    );
    d.wait_strangers(1).await;
    let r = get(d.addr(), &url, &[]).await;
    assert!(r.body == body());
    assert!(
        r.cache_status()
            .contains(&format!("peer=\"{}\"", s.run.open.clone().unwrap().0)),
        "served by the stranger S: {}",
        r.cache_status()
    );
    assert_eq!(
        gets(&origin, "/channel/video.mp4"),
        1,
        "only the gateway went to the origin"
    );
    // E trusts nobody: S's relay of the gateway's word counts for nothing there.
    let e = Device::start_with_args(dirs[3].path(), "", &["--open-peer", &s.open_ticket()]);
    e.wait_strangers(1).await;
    let r = get(e.addr(), &url, &[]).await;
    assert!(r.body == body());
    assert!(!r.cache_status().contains("peer="), "{}", r.cache_status());
    assert_eq!(gets(&origin, "/channel/video.mp4"), 2);
    // And S never relays its own signature (its group identity stays unlinked): what S
    // fetched from the origin itself is not offered to D.
    assert_eq!(
        get(s.addr(), &origin.url("/channel/own.mp4"), &[])
            .await
            .body,
        body()
    );
    let r = get(d.addr(), &origin.url("/channel/own.mp4"), &[]).await;
    assert!(!r.cache_status().contains("peer="), "{}", r.cache_status());
    assert_eq!(gets(&origin, "/channel/own.mp4"), 2);
    for dev in [gateway, s, d, e] {
        dev.stop();
    }
}

/// The open-mesh id of a device, from its `/status.json`.
async fn open_id(d: &Device) -> String {
    let s: serde_json::Value = serde_json::from_str(&d.status().await).unwrap();
    s["mesh_open_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_open_identity_is_made_anew_and_strangers_are_found_again() {
    // Three objects A holds: one try each after the rotations (a try that overlaps the
    // next rotation may go to the origin; the test needs one that does not).
    let lens = [LEN, LEN + 1, LEN + 2];
    let gen = |len: u64| (0..len).map(pattern).collect::<Vec<u8>>();
    let paths: Vec<String> = lens.iter().map(|l| by_hash("/pool", &gen(*l))).collect();
    let mut ob = Origin::builder();
    for (p, l) in paths.iter().zip(lens) {
        ob = ob.route(p, move |_| Reply::generated(l));
    }
    let origin = ob.run().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Device::start_with_args(da.path(), "", &[]);
    for (p, l) in paths.iter().zip(lens) {
        assert_eq!(get(a.addr(), &origin.url(p), &[]).await.body, gen(l));
    }
    a.wait_figure("mesh_open_tags", 6).await;
    let b = Device::start_with_args(
        db.path(),
        "open_rotate = \"2s\"",
        &["--open-peer", &a.open_ticket()],
    );
    let first = open_id(&b).await;
    assert_eq!(first, b.run.open.clone().unwrap().0);
    assert_ne!(first, b.id, "the open identity is not the group identity");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut ids = vec![first];
    while ids.len() < 3 {
        let now = open_id(&b).await;
        if ids.last() != Some(&now) {
            assert!(
                !ids.contains(&now),
                "a new identity every time: {ids:?} {now}"
            );
            ids.push(now);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never rotated: {ids:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The stranger by ticket is found again under the new identity.
    let mut served = Vec::new();
    for (p, l) in paths.iter().zip(lens) {
        b.wait_strangers(1).await;
        let r = get(b.addr(), &origin.url(p), &[]).await;
        assert!(r.body == gen(l));
        served.push(r.cache_status().to_string());
        if r.cache_status().contains("detail=stranger-url") {
            break;
        }
    }
    assert!(
        served
            .last()
            .is_some_and(|c| c.contains("detail=stranger-url")),
        "never served by the stranger after rotating: {served:?}"
    );
    a.stop();
    b.stop();
}

#[tokio::test]
async fn a_stranger_downloading_it_now_is_waited_for_one_download_per_carriage() {
    let path = by_hash("/slow", &body());
    let origin = Origin::builder()
        .route(&path, |_| {
            Reply::generated(LEN).delay(std::time::Duration::from_millis(1500))
        })
        .run()
        .await;
    let (a, b, _dirs) = two_strangers().await;
    let url = origin.url(&path);
    let first = tokio::spawn({
        let (addr, url) = (a.addr(), url.clone());
        async move { get(addr, &url, &[]).await }
    });
    // A is downloading it (the origin has its request, and answers after 1.5 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while origin.hits(&path) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "A never asked the origin"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = get(b.addr(), &url, &[]).await;
    assert!(r.body == body());
    assert!(
        r.cache_status().contains("detail=stranger-url"),
        "B waited for A's download: {}",
        r.cache_status()
    );
    assert!(first.await.unwrap().body == body());
    assert_eq!(gets(&origin, &path), 1, "one download for both");
    a.stop();
    b.stop();
}

#[tokio::test]
async fn two_strangers_missing_the_same_object_at_once_download_it_once() {
    let path = by_hash("/both", &body());
    let origin = Origin::builder()
        .route(&path, |_| {
            Reply::generated(LEN).delay(std::time::Duration::from_millis(500))
        })
        .run()
        .await;
    let (a, b, _dirs) = two_strangers().await;
    let url = origin.url(&path);
    // Both ask the other before either goes to the origin: the smaller open-mesh id
    // fetches, the other waits for it.
    let (ra, rb) = tokio::join!(get(a.addr(), &url, &[]), get(b.addr(), &url, &[]));
    assert!(ra.body == body() && rb.body == body());
    assert_eq!(
        gets(&origin, &path),
        1,
        "one download: {} / {}",
        ra.cache_status(),
        rb.cache_status()
    );
    a.stop();
    b.stop();
}

/// A `Content-Digest` on a `HEAD` response describes its (empty) content, not the body a
/// GET sends: it does not let a stranger send the body (only `Repr-Digest` does).
#[tokio::test]
async fn a_content_digest_on_a_head_is_not_taken_for_the_body() {
    let digest = digest_field(&body());
    let reply = move |_: &crate::support::origin::Seen| {
        Reply::generated(LEN)
            .header("cache-control", "public, max-age=600")
            .header("content-digest", &digest)
    };
    let origin = Origin::builder()
        .route("/v/cd.mp4", reply.clone())
        .route("/v/other.mp4", reply)
        .run()
        .await;
    let url = origin.url("/v/cd.mp4");
    let (a, b, _dirs) = two_strangers().await;
    assert!(get(a.addr(), &url, &[]).await.body == body());
    a.wait_figure("mesh_open_tags", 1).await;
    // B learns that this origin states digests (its own GET of another URL on it).
    let other = origin.url("/v/other.mp4");
    assert!(get(b.addr(), &other, &[]).await.body == body());
    let r = get(b.addr(), &url, &[]).await;
    assert!(r.body == body());
    assert!(
        !r.cache_status().contains("stranger"),
        "{}",
        r.cache_status()
    );
    let seen = origin.seen("/v/cd.mp4");
    assert!(
        seen.iter().any(|s| s.method == http::Method::HEAD),
        "B asked the origin for a HEAD first"
    );
    a.stop();
    b.stop();
}
