//! Self-certifying URLs (`cache::certify`; issue 10, rung 1): a URL that names its content's
//! hash is stored even when the origin states no freshness, but only after its body
//! matched; a body that does not match is never stored, and no client receives it whole.

use crate::support::{check_pattern, get, open, pattern, Origin, Reply};

const LEN: u64 = 300_000;

fn sha256_hex(body: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_by_hash_url_without_freshness_is_stored_as_immutable_after_its_body_matched() {
    let body: Vec<u8> = (0..LEN).map(pattern).collect();
    let path = format!(
        "/debian/dists/stable/main/by-hash/SHA256/{}",
        sha256_hex(&body)
    );
    // Like many mirrors: no Cache-Control, no Expires, no validators.
    let origin = Origin::builder()
        .route(&path, |_| Reply::generated(LEN))
        .route("/plain", |_| Reply::generated(LEN))
        .run()
        .await;
    let p = crate::support::TestProxy::start().await;
    let first = get(p.addr(), &origin.url(&path), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, body);
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    assert_eq!(
        first.header("cache-control"),
        Some("max-age=31536000, immutable"),
        "the freshness its URL gives it"
    );
    let again = get(p.addr(), &origin.url(&path), &[]).await;
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
    assert_eq!(again.body, body);
    assert_eq!(origin.hits(&path), 1);

    // The same response for an ordinary URL is not reusable: nothing vouches for it.
    for _ in 0..2 {
        let r = get(p.addr(), &origin.url("/plain"), &[]).await;
        assert_eq!(r.body, body);
    }
    assert_eq!(origin.hits("/plain"), 2);
    p.stop().await;
}

#[tokio::test]
async fn a_by_hash_body_that_does_not_match_is_never_stored_nor_received_whole() {
    for len in [LEN, 1000] {
        let path = format!(
            "/v2/library/app/blobs/sha256:{}",
            sha256_hex(b"other bytes")
        );
        let origin = Origin::builder()
            .route(&path, move |_| Reply::generated(len))
            .run()
            .await;
        let p = crate::support::TestProxy::start().await;
        for round in 0..2 {
            let (head, body) = open(p.addr(), &origin.url(&path)).await;
            assert_eq!(head.status, 200);
            let got = check_pattern(body, 0).await;
            assert!(
                got.is_err(),
                "len {len}, round {round}: a body that does not match its URL ends in an error: {got:?}"
            );
        }
        assert_eq!(origin.hits(&path), 2, "len {len}: nothing was stored");
        assert_eq!(p.cache().stats().await.unwrap().variants, 0);
        p.stop().await;
    }
}
