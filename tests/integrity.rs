//! The client states the hash (`Meshcache-Integrity`, SRI syntax; issue 10, rung 2): only a
//! body that matches is served, from the origin too; a mismatch is a `502` that says so (or,
//! for a body too large to check before the response starts, a response cut off before its
//! last bytes), and nothing is stored for it. A request that states a hash is a cache key of
//! its own: a body accepted because one client named its hash never reaches a client that
//! did not.

use base64::Engine;

use crate::support::digest::{digest_field, generated};
use crate::support::{check_pattern, get, open_with, Origin, Reply};

const LEN: u64 = 300_000;

fn sri(alg: &'static ring::digest::Algorithm, body: &[u8]) -> String {
    let name = if alg == &ring::digest::SHA256 {
        "sha256"
    } else if alg == &ring::digest::SHA384 {
        "sha384"
    } else {
        "sha512"
    };
    let d = ring::digest::digest(alg, body);
    format!(
        "{name}-{}",
        base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    )
}

#[tokio::test]
async fn a_matching_body_is_served_and_reused_only_by_requests_that_state_its_hash() {
    let body = generated(LEN);
    let origin = Origin::builder()
        .route("/photo.jpg", |_| Reply::generated(LEN))
        .run()
        .await;
    let p = crate::support::TestProxy::start().await;
    let url = origin.url("/photo.jpg");
    let stated = sri(&ring::digest::SHA256, &body);
    let first = get(p.addr(), &url, &[("meshcache-integrity", &stated)]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, body);
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let again = get(p.addr(), &url, &[("meshcache-integrity", &stated)]).await;
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
    assert_eq!(again.body, body);
    assert_eq!(origin.hits("/photo.jpg"), 1);

    // A request that does not state the hash is not served what the stated hash let in:
    // the origin sends no freshness, so it goes to the origin each time.
    let plain = get(p.addr(), &url, &[]).await;
    assert_eq!(plain.body, body);
    assert!(
        !plain.cache_status().contains("hit"),
        "{}",
        plain.cache_status()
    );
    assert_eq!(origin.hits("/photo.jpg"), 2);
    p.stop().await;
}

#[tokio::test]
async fn an_origin_body_that_does_not_match_the_stated_hash_is_a_502_and_nothing_is_stored() {
    let origin = Origin::builder()
        .route("/photo.jpg", |_| {
            Reply::generated(LEN).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = crate::support::TestProxy::start().await;
    let url = origin.url("/photo.jpg");
    let wrong = sri(&ring::digest::SHA256, b"some other photo");
    for round in 0..2 {
        let r = get(p.addr(), &url, &[("meshcache-integrity", &wrong)]).await;
        assert_eq!(r.status, 502, "round {round}: {}", r.text());
        assert!(
            r.text().contains("Meshcache-Integrity") && r.text().contains("nothing was stored"),
            "the 502 says why: {}",
            r.text()
        );
        assert!(
            r.body.len() < 1000,
            "no part of the body is in the error: {} bytes",
            r.body.len()
        );
    }
    assert_eq!(origin.hits("/photo.jpg"), 2, "nothing was stored");
    assert_eq!(p.cache().stats().await.unwrap().variants, 0);
    p.stop().await;
}

#[tokio::test]
async fn a_large_body_that_does_not_match_is_cut_off_before_its_end() {
    // Larger than what is checked before the response starts (16 MiB): it streams, its
    // last 64 KiB held back until it matched, so the client never has all of it.
    let len: u64 = (16 << 20) + 300_000;
    let origin = Origin::builder()
        .route("/video.mp4", move |_| Reply::generated(len))
        .run()
        .await;
    let p = crate::support::TestProxy::start().await;
    let wrong = sri(&ring::digest::SHA256, b"another video");
    let (head, body) = open_with(
        p.addr(),
        &origin.url("/video.mp4"),
        &[("meshcache-integrity", &wrong)],
    )
    .await;
    assert_eq!(head.status, 200);
    let got = check_pattern(body, 0).await;
    let err = got.expect_err("a body that does not match ends in an error");
    assert!(err.contains("body error"), "{err}");
    assert_eq!(p.cache().stats().await.unwrap().variants, 0);
    p.stop().await;
}

#[tokio::test]
async fn several_stated_values_the_strongest_algorithm_counts() {
    let body = generated(1000);
    let origin = Origin::builder()
        .route("/doc.pdf", |_| Reply::generated(1000))
        .run()
        .await;
    let p = crate::support::TestProxy::start().await;
    let url = origin.url("/doc.pdf");
    // A wrong sha256 beside a right sha512: the sha512 is what counts.
    let good = format!(
        "{} {}",
        sri(&ring::digest::SHA256, b"wrong"),
        sri(&ring::digest::SHA512, &body)
    );
    let r = get(p.addr(), &url, &[("meshcache-integrity", &good)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, body);
    // A right sha256 beside a wrong sha384: the sha384 counts, and fails.
    let bad = format!(
        "{} {}",
        sri(&ring::digest::SHA256, &body),
        sri(&ring::digest::SHA384, b"wrong")
    );
    let r = get(p.addr(), &url, &[("meshcache-integrity", &bad)]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    // Two values of the strongest algorithm: either may match (SRI).
    let either = format!(
        "{} {}",
        sri(&ring::digest::SHA384, b"wrong"),
        sri(&ring::digest::SHA384, &body)
    );
    let r = get(p.addr(), &url, &[("meshcache-integrity", &either)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    p.stop().await;
}

#[tokio::test]
async fn an_integrity_value_that_cannot_be_checked_is_a_400() {
    let origin = Origin::builder()
        .route("/doc.pdf", |_| Reply::generated(1000))
        .run()
        .await;
    let p = crate::support::TestProxy::start().await;
    let url = origin.url("/doc.pdf");
    for bad in [
        "md5-1B2M2Y8AsgTpgAmY7PhCfg==",
        "sha256-not*base64",
        "sha256-AAAA",
    ] {
        let r = get(p.addr(), &url, &[("meshcache-integrity", bad)]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.text().contains("Meshcache-Integrity"), "{}", r.text());
    }
    assert_eq!(origin.hits("/doc.pdf"), 0, "the origin was not asked");
    p.stop().await;
}

#[tokio::test]
async fn a_non_200_where_a_matching_body_was_asked_for_is_a_502() {
    let origin = Origin::builder()
        .route("/gone.jpg", |_| Reply::status(404))
        .run()
        .await;
    let p = crate::support::TestProxy::start().await;
    let stated = sri(&ring::digest::SHA256, b"photo");
    let r = get(
        p.addr(),
        &origin.url("/gone.jpg"),
        &[("meshcache-integrity", &stated)],
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("404"), "{}", r.text());
    p.stop().await;
}

#[tokio::test]
async fn an_origin_body_that_does_not_match_its_own_content_digest_is_not_stored() {
    // Rung 3's other side: a digest the origin states to this device is checked too.
    let body = generated(LEN);
    let right = digest_field(&body);
    let wrong = digest_field(b"x");
    let origin = Origin::builder()
        .route("/right", move |_| {
            Reply::generated(LEN)
                .header("cache-control", "max-age=600")
                .header("content-digest", &right)
        })
        .route("/wrong", move |_| {
            Reply::generated(LEN)
                .header("cache-control", "max-age=600")
                .header("content-digest", &wrong)
        })
        .run()
        .await;
    let p = crate::support::TestProxy::start().await;
    for _ in 0..2 {
        let r = get(p.addr(), &origin.url("/right"), &[]).await;
        assert_eq!(r.body, body);
    }
    assert_eq!(origin.hits("/right"), 1, "a matching body is stored");
    for _ in 0..2 {
        let (head, b) = open_with(p.addr(), &origin.url("/wrong"), &[]).await;
        assert_eq!(head.status, 200);
        assert!(check_pattern(b, 0).await.is_err(), "never received whole");
    }
    assert_eq!(
        origin.hits("/wrong"),
        2,
        "a body its digest denies is not stored"
    );
    p.stop().await;
}
