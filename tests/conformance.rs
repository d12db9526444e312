//! Behaviours the public HTTP caching test suite (http-tests/cache-tests, run by
//! `benches/conformance/run.sh`) found missing or wrong, each checked here end to end:
//! the real proxy over real sockets against an in-process origin.

use std::time::Duration;

use crate::caching::settle;
use crate::support::{get, Origin, Reply, TestProxy};

/// RFC 9111 3.2: a 304 updates the stored header fields, but not those that describe the
/// stored body's bytes — the body is not resent, so a new digest would be a lie about it.
#[tokio::test]
async fn a_304_does_not_replace_the_stored_bodys_digests() {
    let body = "digested";
    let md5 = "rL0Y20zC+Fzt72VPzMSk2A==";
    let digest = crate::support::digest::digest_field(body.as_bytes());
    let first = digest.clone();
    let origin = Origin::builder()
        .route("/d", move |s| {
            if s.headers
                .get("if-none-match")
                .is_some_and(|v| v == "\"v1\"")
            {
                Reply::status(304)
                    .header("cache-control", "max-age=10")
                    .header("etag", "\"v1\"")
                    .header("content-md5", "N7UdGUp1E+RbVvZSTy1R8g==")
                    .header(
                        "content-digest",
                        "sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:",
                    )
                    .header("x-updated", "yes")
            } else {
                Reply::ok(body)
                    .header("cache-control", "max-age=10")
                    .header("etag", "\"v1\"")
                    .header("content-md5", md5)
                    .header("content-digest", &first)
            }
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.shared = true).await;
    get(p.addr(), &origin.url("/d"), &[]).await;
    settle(&p).await;
    p.clock.advance(Duration::from_secs(11));
    let r = get(p.addr(), &origin.url("/d"), &[]).await;
    assert!(
        r.cache_status().contains("fwd-status=304"),
        "{}",
        r.cache_status()
    );
    assert_eq!(
        r.header("x-updated"),
        Some("yes"),
        "other fields are updated"
    );
    assert_eq!(r.header("content-md5"), Some(md5));
    assert_eq!(r.header("content-digest"), Some(digest.as_str()));
    // And so they stay in the entry.
    let r = get(p.addr(), &origin.url("/d"), &[]).await;
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(r.header("content-md5"), Some(md5));
    assert_eq!(r.header("content-digest"), Some(digest.as_str()));
    assert_eq!(r.text(), body);
}

/// RFC 9111 3: a response with any final status may be stored when it states its
/// freshness (RFC 7234's "status understood by the cache" is gone); heuristic freshness
/// stays for the heuristically cacheable statuses (and `public`), so an error that states
/// nothing is still not reused.
#[tokio::test]
async fn a_response_with_any_final_status_and_explicit_freshness_is_reused() {
    let mut builder = Origin::builder();
    for status in [299u16, 400, 500, 503, 599] {
        builder = builder
            .route(&format!("/fresh/{status}"), move |_| {
                let mut r = Reply::ok("error").header("cache-control", "max-age=60");
                r.status = status;
                r
            })
            .route(&format!("/bare/{status}"), move |_| {
                Reply::status(status).header("last-modified", "Tue, 01 Jan 2019 00:00:00 GMT")
            });
    }
    let origin = builder.run().await;
    let p = TestProxy::start_with(|s| s.cache.shared = true).await;
    for status in [299u16, 400, 500, 503, 599] {
        let fresh = origin.url(&format!("/fresh/{status}"));
        let r = get(p.addr(), &fresh, &[]).await;
        assert_eq!(r.status.as_u16(), status);
        settle(&p).await;
        let r = get(p.addr(), &fresh, &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.cache_status(), r.text().as_str()),
            (status, "meshcache; hit", "error"),
            "{status}"
        );
        let bare = origin.url(&format!("/bare/{status}"));
        get(p.addr(), &bare, &[]).await;
        settle(&p).await;
        let r = get(p.addr(), &bare, &[]).await;
        assert!(
            r.cache_status().contains("fwd=miss"),
            "{status}: {}",
            r.cache_status()
        );
        assert_eq!(origin.hits(&format!("/bare/{status}")), 2, "{status}");
    }
}

/// RFC 9111 4.1: the headers a response varies on match when they differ only in
/// whitespace, in how they are split into field lines, or in the case of values defined
/// as case-insensitive (language tags); a different order is still another variant.
#[tokio::test]
async fn vary_matches_values_that_differ_only_in_whitespace_field_lines_or_tag_case() {
    let origin = Origin::builder()
        .route("/v", |s| {
            let lang = s
                .headers
                .get("accept-language")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            Reply::ok(format!("for {lang}"))
                .header("cache-control", "max-age=600")
                .header("vary", "Accept-Language, Foo")
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.shared = true).await;
    let url = origin.url("/v");
    get(
        p.addr(),
        &url,
        &[("accept-language", "en, de"), ("foo", "1, 2")],
    )
    .await;
    settle(&p).await;
    for same in [
        [("accept-language", " en ,   de"), ("foo", "1,2")],
        [("accept-language", "eN, De"), ("foo", " 1 , 2 ")],
    ] {
        let r = get(p.addr(), &url, &same).await;
        assert_eq!(
            (r.cache_status(), r.text().as_str()),
            ("meshcache; hit", "for en, de"),
            "{same:?}"
        );
    }
    // Two field lines are one list (RFC 9110 5.3).
    let r = crate::support::request(
        p.addr(),
        http::Method::GET,
        &url,
        &[("accept-language", "en, de"), ("foo", "1"), ("foo", "2")],
        None,
    )
    .await;
    assert_eq!(r.cache_status(), "meshcache; hit");
    let r = get(
        p.addr(),
        &url,
        &[("accept-language", "de, en"), ("foo", "1, 2")],
    )
    .await;
    assert!(r.cache_status().contains("miss"), "{}", r.cache_status());
    assert_eq!(origin.hits("/v"), 2);
}

/// RFC 9110 9.3.3: a POST's response that names the URL as its `Content-Location` and
/// states its freshness is the URL's response for a later GET; without either, it is not.
#[tokio::test]
async fn a_post_response_naming_its_own_url_with_explicit_freshness_answers_a_later_get() {
    let origin = Origin::builder()
        .route("/form", |s| {
            let reply = Reply::ok(format!("{} {}", s.method, String::from_utf8_lossy(&s.body)));
            if s.method == http::Method::POST {
                reply
                    .header("cache-control", "max-age=600")
                    .header("content-location", "/form")
            } else {
                reply
            }
        })
        .route("/elsewhere", |s| {
            Reply::ok(format!("{}", s.method))
                .header("cache-control", "max-age=600")
                .header("content-location", "/form")
        })
        .route("/no-freshness", |s| {
            Reply::ok(format!("{}", s.method)).header("content-location", "/no-freshness")
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.shared = true).await;
    let addr = p.addr();
    let post = |url: String| async move {
        crate::support::request(
            addr,
            http::Method::POST,
            &url,
            &[("content-type", "text/plain")],
            Some(bytes::Bytes::from_static(b"12345")),
        )
        .await
    };
    let r = post(origin.url("/form")).await;
    assert_eq!(r.text(), "POST 12345");
    assert!(
        r.cache_status().contains("stored; detail=post"),
        "{}",
        r.cache_status()
    );
    let url = origin.url("/form");
    settle(&p).await;
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(
        r.text(),
        "POST 12345",
        "the POST's response answers the GET"
    );
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(origin.hits("/form"), 1);
    // The stored entry is this device's only: never offered to peers.
    let key = cache::key::primary_key(&url.parse().unwrap()).unwrap();
    let e = p
        .cache()
        .lookup(&key, &http::HeaderMap::new())
        .unwrap()
        .unwrap();
    assert!(!e.shareable);

    // Content-Location names another URL, or the freshness is not explicit: not stored
    // (and /elsewhere's successful POST invalidates /form, which it names: RFC 9111 4.4).
    for path in ["/elsewhere", "/no-freshness"] {
        post(origin.url(path)).await;
        let r = get(p.addr(), &origin.url(path), &[]).await;
        assert_eq!(r.text(), "GET", "{path}");
    }
}
