use std::time::Duration;

use http::Method;

use crate::support::{get, request, Origin, Reply, TestProxy};

#[tokio::test]
async fn second_get_is_a_hit_and_the_origin_sees_one_request() {
    let origin = Origin::builder()
        .route("/a", |_| {
            Reply::ok("hello").header("cache-control", "max-age=60")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let r1 = get(p.addr(), &origin.url("/a"), &[]).await;
    settle(&p).await;
    assert_eq!(r1.status, 200);
    assert_eq!(r1.text(), "hello");
    assert!(
        r1.cache_status().contains("fwd=miss; stored"),
        "{}",
        r1.cache_status()
    );
    p.clock.advance(Duration::from_secs(5));
    let r2 = get(p.addr(), &origin.url("/a"), &[]).await;
    assert_eq!(r2.text(), "hello");
    assert_eq!(r2.cache_status(), "meshcache; hit");
    let age: u64 = r2.header("age").unwrap().parse().unwrap();
    assert!((5..=6).contains(&age), "age {age}");
    assert!(r2.header("via").unwrap().contains("meshcache"));
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test]
async fn a_hit_survives_a_restart() {
    let origin = Origin::builder()
        .route("/r", |_| {
            Reply::ok("persisted").header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let mut p = TestProxy::start().await;
    get(p.addr(), &origin.url("/r"), &[]).await;
    settle(&p).await;
    p.restart().await;
    let r = get(p.addr(), &origin.url("/r"), &[]).await;
    assert_eq!(r.text(), "persisted");
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(origin.hits("/r"), 1);
}

#[tokio::test]
async fn stale_entry_is_revalidated_and_a_304_freshens_it() {
    let origin = Origin::builder()
        .route("/e", |s| {
            if s.headers
                .get("if-none-match")
                .is_some_and(|v| v == "\"v1\"")
            {
                Reply::status(304)
                    .header("cache-control", "max-age=10")
                    .header("x-extra", "new")
            } else {
                Reply::ok("body-v1")
                    .header("cache-control", "max-age=10")
                    .header("etag", "\"v1\"")
            }
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    get(p.addr(), &origin.url("/e"), &[]).await;
    settle(&p).await;
    p.clock.advance(Duration::from_secs(11));
    let r = get(p.addr(), &origin.url("/e"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body-v1");
    assert!(
        r.cache_status().contains("fwd=stale") && r.cache_status().contains("fwd-status=304"),
        "{}",
        r.cache_status()
    );
    assert_eq!(
        r.header("x-extra"),
        Some("new"),
        "304 headers update the stored ones"
    );
    let seen = origin.seen("/e");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers.get("if-none-match").unwrap(), "\"v1\"");
    // Freshened: a hit again, with the updated header.
    let r = get(p.addr(), &origin.url("/e"), &[]).await;
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(r.header("x-extra"), Some("new"));
    assert_eq!(origin.hits("/e"), 2);
}

#[tokio::test]
async fn a_changed_resource_replaces_the_stale_entry() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = std::sync::Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let origin = Origin::builder()
        .route("/c", move |_| {
            let i = n2.fetch_add(1, Ordering::SeqCst);
            Reply::ok(format!("version-{i}"))
                .header("cache-control", "max-age=10")
                .header("etag", format!("\"{i}\""))
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    assert_eq!(
        get(p.addr(), &origin.url("/c"), &[]).await.text(),
        "version-0"
    );
    settle(&p).await;
    p.clock.advance(Duration::from_secs(11));
    let r = get(p.addr(), &origin.url("/c"), &[]).await;
    assert_eq!(r.text(), "version-1");
    assert!(
        r.cache_status().contains("fwd=stale; stored"),
        "{}",
        r.cache_status()
    );
    let r = wait_for_hit(&p, &origin.url("/c")).await;
    assert_eq!(r.text(), "version-1");
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

/// A fill commits just after its body is sent: wait (bounded) until no fill is under way.
pub async fn settle(p: &TestProxy) {
    for _ in 0..3000 {
        if p.cache().stats().await.unwrap().fills_in_progress == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fills never finished");
}

/// Waits (bounded) until `url` is stored, then GETs it.
pub async fn wait_for_hit(p: &TestProxy, url: &str) -> crate::support::Resp {
    for _ in 0..3000 {
        let key = cache::key::primary_key(&url.parse().unwrap()).unwrap();
        if p.cache().lookup_any(&key) {
            return get(p.addr(), url, &[]).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{url} was never stored");
}

#[tokio::test]
async fn no_store_is_never_stored() {
    let origin = Origin::builder()
        .route("/n", |_| {
            Reply::ok("x").header("cache-control", "no-store, max-age=60")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let r = get(p.addr(), &origin.url("/n"), &[]).await;
    assert!(
        r.cache_status().contains("detail=no-store"),
        "{}",
        r.cache_status()
    );
    get(p.addr(), &origin.url("/n"), &[]).await;
    settle(&p).await;
    assert_eq!(origin.hits("/n"), 2);
    assert_eq!(p.cache().stats().await.unwrap().variants, 0);
}

#[tokio::test]
async fn private_is_kept_for_the_device_user_but_never_marked_shareable() {
    let origin = Origin::builder()
        .route("/p", |_| {
            Reply::ok("mine").header("cache-control", "private, max-age=60")
        })
        .route("/auth", |_| {
            Reply::ok("secret").header("cache-control", "max-age=60")
        })
        .route("/pub", |_| {
            Reply::ok("public").header("cache-control", "max-age=60")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    get(p.addr(), &origin.url("/p"), &[]).await;
    settle(&p).await;
    assert_eq!(
        get(p.addr(), &origin.url("/p"), &[]).await.cache_status(),
        "meshcache; hit"
    );
    settle(&p).await;
    get(
        p.addr(),
        &origin.url("/auth"),
        &[("authorization", "Bearer t")],
    )
    .await;
    settle(&p).await;
    get(p.addr(), &origin.url("/pub"), &[]).await;
    settle(&p).await;
    wait_for_hit(&p, &origin.url("/pub")).await;
    let list = p.cache().list().await.unwrap();
    let shareable = |path: &str| {
        list.iter()
            .find(|(k, _)| k.ends_with(path))
            .map(|(_, e)| e.shareable)
    };
    assert_eq!(shareable("/p"), Some(false));
    assert_eq!(shareable("/auth"), Some(false));
    assert_eq!(shareable("/pub"), Some(true));
    // Credentials never reach the index.
    let stored = format!("{:?}", list);
    assert!(
        !stored.contains("Bearer"),
        "authorization stored in the index"
    );
}

#[tokio::test]
async fn a_shared_cache_refuses_private_authorization_and_set_cookie() {
    let origin = Origin::builder()
        .route("/p", |_| {
            Reply::ok("mine").header("cache-control", "private, max-age=60")
        })
        .route("/a", |_| {
            Reply::ok("secret").header("cache-control", "max-age=60")
        })
        .route("/c", |_| {
            Reply::ok("cookie")
                .header("cache-control", "max-age=60")
                .header("set-cookie", "s=1")
        })
        .route("/s", |_| {
            Reply::ok("shared").header("cache-control", "max-age=0, s-maxage=60")
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.shared = true).await;
    for _ in 0..2 {
        get(p.addr(), &origin.url("/p"), &[]).await;
        settle(&p).await;
        get(
            p.addr(),
            &origin.url("/a"),
            &[("authorization", "Basic eDp5")],
        )
        .await;
        settle(&p).await;
        get(p.addr(), &origin.url("/c"), &[]).await;
        settle(&p).await;
    }
    assert_eq!(origin.hits("/p"), 2);
    assert_eq!(origin.hits("/a"), 2);
    assert_eq!(origin.hits("/c"), 2);
    get(p.addr(), &origin.url("/s"), &[]).await;
    settle(&p).await;
    let r = wait_for_hit(&p, &origin.url("/s")).await;
    assert_eq!(
        r.cache_status(),
        "meshcache; hit",
        "s-maxage applies to a shared cache"
    );
}

#[tokio::test]
async fn vary_keeps_one_variant_per_header_value_and_vary_star_is_never_reused() {
    let origin = Origin::builder()
        .route("/v", |s| {
            let enc = s
                .headers
                .get("accept-language")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            Reply::ok(format!("lang={enc}"))
                .header("cache-control", "max-age=60")
                .header("vary", "Accept-Language")
        })
        .route("/star", |_| {
            Reply::ok("*")
                .header("cache-control", "max-age=60")
                .header("vary", "*")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(
        get(p.addr(), &origin.url("/v"), &en).await.text(),
        "lang=en"
    );
    settle(&p).await;
    assert_eq!(
        get(p.addr(), &origin.url("/v"), &fr).await.text(),
        "lang=fr"
    );
    settle(&p).await;
    let r = get(p.addr(), &origin.url("/v"), &en).await;
    assert_eq!(
        (r.text().as_str(), r.cache_status()),
        ("lang=en", "meshcache; hit")
    );
    let r = get(p.addr(), &origin.url("/v"), &fr).await;
    assert_eq!(
        (r.text().as_str(), r.cache_status()),
        ("lang=fr", "meshcache; hit")
    );
    let r = get(p.addr(), &origin.url("/v"), &[("accept-language", "de")]).await;
    assert!(
        r.cache_status().contains("fwd=vary-miss"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits("/v"), 3);
    get(p.addr(), &origin.url("/star"), &[]).await;
    settle(&p).await;
    get(p.addr(), &origin.url("/star"), &[]).await;
    settle(&p).await;
    assert_eq!(origin.hits("/star"), 2);
}

#[tokio::test]
async fn request_directives_no_cache_max_age_and_only_if_cached() {
    let origin = Origin::builder()
        .route("/d", |_| {
            Reply::ok("d")
                .header("cache-control", "max-age=60")
                .header("etag", "\"d\"")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let r = get(
        p.addr(),
        &origin.url("/d"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(origin.hits("/d"), 0);
    get(p.addr(), &origin.url("/d"), &[]).await;
    settle(&p).await;
    wait_for_hit(&p, &origin.url("/d")).await;
    let r = get(
        p.addr(),
        &origin.url("/d"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.cache_status()),
        (200, "meshcache; hit")
    );
    get(
        p.addr(),
        &origin.url("/d"),
        &[("cache-control", "no-cache")],
    )
    .await;
    settle(&p).await;
    assert_eq!(origin.hits("/d"), 2, "no-cache goes to the origin");
    assert_eq!(
        origin.seen("/d")[1].headers.get("if-none-match").unwrap(),
        "\"d\"",
        "…as a revalidation"
    );
    p.clock.advance(Duration::from_secs(20));
    get(
        p.addr(),
        &origin.url("/d"),
        &[("cache-control", "max-age=5")],
    )
    .await;
    settle(&p).await;
    assert_eq!(
        origin.hits("/d"),
        3,
        "max-age=5 refuses a 20 s old response"
    );
    get(p.addr(), &origin.url("/d"), &[("pragma", "no-cache")]).await;
    settle(&p).await;
    assert_eq!(origin.hits("/d"), 4, "Pragma: no-cache is honoured");
}

#[tokio::test]
async fn max_stale_and_min_fresh() {
    let origin = Origin::builder()
        .route("/m", |_| {
            Reply::ok("m")
                .header("cache-control", "max-age=10")
                .header("etag", "\"m\"")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    get(p.addr(), &origin.url("/m"), &[]).await;
    settle(&p).await;
    wait_for_hit(&p, &origin.url("/m")).await;
    let r = get(
        p.addr(),
        &origin.url("/m"),
        &[("cache-control", "min-fresh=30")],
    )
    .await;
    assert_ne!(r.cache_status(), "meshcache; hit");
    p.clock.advance(Duration::from_secs(15));
    let r = get(
        p.addr(),
        &origin.url("/m"),
        &[("cache-control", "max-stale=60")],
    )
    .await;
    assert_eq!(
        r.cache_status(),
        "meshcache; hit",
        "max-stale accepts a stale response"
    );
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_url_and_its_location() {
    let origin = Origin::builder()
        .route("/doc", |s| {
            Reply::ok(format!("doc-{}", s.method)).header("cache-control", "max-age=600")
        })
        .route("/other", |_| {
            Reply::ok("other").header("cache-control", "max-age=600")
        })
        .route("/form", |_| Reply::status(201).header("location", "/other"))
        .run()
        .await;
    let p = TestProxy::start().await;
    for path in ["/doc", "/other"] {
        get(p.addr(), &origin.url(path), &[]).await;
        settle(&p).await;
        wait_for_hit(&p, &origin.url(path)).await;
    }
    let r = request(
        p.addr(),
        Method::POST,
        &origin.url("/doc"),
        &[],
        Some("payload".into()),
    )
    .await;
    assert_eq!(r.text(), "doc-POST");
    assert_eq!(
        origin.seen("/doc").last().unwrap().body,
        "payload",
        "request body forwarded"
    );
    let r = get(p.addr(), &origin.url("/doc"), &[]).await;
    assert!(
        r.cache_status().contains("fwd=miss"),
        "POST invalidated /doc: {}",
        r.cache_status()
    );
    request(
        p.addr(),
        Method::POST,
        &origin.url("/form"),
        &[],
        Some("x".into()),
    )
    .await;
    let r = get(p.addr(), &origin.url("/other"), &[]).await;
    assert!(
        r.cache_status().contains("fwd=miss"),
        "Location invalidated: {}",
        r.cache_status()
    );
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let origin = Origin::builder()
        .route("/h", |_| {
            Reply::ok("0123456789").header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    get(p.addr(), &origin.url("/h"), &[]).await;
    settle(&p).await;
    wait_for_hit(&p, &origin.url("/h")).await;
    let r = request(p.addr(), Method::HEAD, &origin.url("/h"), &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(r.header("content-length"), Some("10"));
    assert!(r.body.is_empty());
    assert_eq!(origin.hits("/h"), 1);
}

#[tokio::test]
async fn client_validators_are_answered_locally_with_304() {
    let origin = Origin::builder()
        .route("/v", |_| {
            Reply::ok("validated")
                .header("cache-control", "max-age=600")
                .header("etag", "\"abc\"")
                .header("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    // On a miss too: the fill fetches the whole body, the client gets its 304.
    let r = get(p.addr(), &origin.url("/v"), &[("if-none-match", "\"abc\"")]).await;
    assert_eq!(r.status, 304);
    assert!(origin.seen("/v")[0].headers.get("if-none-match").is_none());
    wait_for_hit(&p, &origin.url("/v")).await;
    let r = get(
        p.addr(),
        &origin.url("/v"),
        &[("if-none-match", "W/\"abc\"")],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.header("etag")),
        (304, Some("\"abc\""))
    );
    let r = get(
        p.addr(),
        &origin.url("/v"),
        &[("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status, 304);
    let r = get(p.addr(), &origin.url("/v"), &[("if-none-match", "\"zzz\"")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "validated"));
    assert_eq!(origin.hits("/v"), 1);
}

#[tokio::test]
async fn heuristic_freshness_from_last_modified_and_past_expires() {
    let old =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100 * 86400));
    let origin = Origin::builder()
        .route("/lm", move |_| {
            Reply::ok("old").header("last-modified", &old)
        })
        .route("/exp", |_| {
            Reply::ok("exp")
                .header("expires", "Thu, 01 Jan 1970 00:00:00 GMT")
                .header("etag", "\"e\"")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    get(p.addr(), &origin.url("/lm"), &[]).await;
    settle(&p).await;
    let r = wait_for_hit(&p, &origin.url("/lm")).await;
    assert_eq!(
        r.cache_status(),
        "meshcache; hit",
        "10% of 100 days is fresh"
    );
    get(p.addr(), &origin.url("/exp"), &[]).await;
    settle(&p).await;
    get(p.addr(), &origin.url("/exp"), &[]).await;
    settle(&p).await;
    assert_eq!(
        origin.hits("/exp"),
        2,
        "an Expires in the past is stale at once"
    );
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let origin = Origin::builder()
        .route("/s", |_| {
            Reply::ok("swr")
                .header("cache-control", "max-age=1, stale-while-revalidate=60")
                .header("etag", "\"s\"")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    get(p.addr(), &origin.url("/s"), &[]).await;
    settle(&p).await;
    wait_for_hit(&p, &origin.url("/s")).await;
    p.clock.advance(Duration::from_secs(5));
    let r = get(p.addr(), &origin.url("/s"), &[]).await;
    assert_eq!(r.text(), "swr");
    assert!(
        r.cache_status().contains("stale-while-revalidate"),
        "{}",
        r.cache_status()
    );
    for _ in 0..3000 {
        if origin.hits("/s") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        origin.hits("/s"),
        2,
        "background revalidation reached the origin"
    );
    p.clock.advance(Duration::from_secs(120));
    let r = get(p.addr(), &origin.url("/s"), &[]).await;
    assert!(
        !r.cache_status().contains("stale-while-revalidate"),
        "beyond the window: {}",
        r.cache_status()
    );
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_fails() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let broken = std::sync::Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let origin = Origin::builder()
        .route("/f", move |_| {
            if b.load(Ordering::SeqCst) {
                Reply::status(503)
            } else {
                Reply::ok("good").header("cache-control", "max-age=1, stale-if-error=600")
            }
        })
        .route("/plain", {
            let b = broken.clone();
            move |_| {
                if b.load(Ordering::SeqCst) {
                    Reply::status(503)
                } else {
                    Reply::ok("plain").header("cache-control", "max-age=1")
                }
            }
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    for path in ["/f", "/plain"] {
        get(p.addr(), &origin.url(path), &[]).await;
        settle(&p).await;
        wait_for_hit(&p, &origin.url(path)).await;
    }
    broken.store(true, Ordering::SeqCst);
    p.clock.advance(Duration::from_secs(10));
    let r = get(p.addr(), &origin.url("/f"), &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "good"));
    assert!(
        r.cache_status().contains("detail=stale-if-error"),
        "{}",
        r.cache_status()
    );
    // Without stale-if-error, the origin's error is passed on.
    let r = get(p.addr(), &origin.url("/plain"), &[]).await;
    assert_eq!(r.status, 503);
    // …unless the client asks for it.
    let r = get(
        p.addr(),
        &origin.url("/plain"),
        &[("cache-control", "stale-if-error=600")],
    )
    .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "plain"));
}

#[tokio::test]
async fn an_unreachable_origin_gets_stale_content_unless_it_forbade_it() {
    let origin = Origin::builder()
        .route("/o", |_| {
            Reply::ok("offline-copy").header("cache-control", "max-age=1")
        })
        .route("/mr", |_| {
            Reply::ok("must").header("cache-control", "max-age=1, must-revalidate")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let (o_url, mr_url) = (origin.url("/o"), origin.url("/mr"));
    get(p.addr(), &o_url, &[]).await;
    settle(&p).await;
    get(p.addr(), &mr_url, &[]).await;
    settle(&p).await;
    wait_for_hit(&p, &o_url).await;
    wait_for_hit(&p, &mr_url).await;
    drop(origin);
    p.clock.advance(Duration::from_secs(60));
    let r = get(p.addr(), &o_url, &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "offline-copy")
    );
    assert!(
        r.cache_status().contains("detail=origin-unreachable"),
        "{}",
        r.cache_status()
    );
    let r = get(p.addr(), &mr_url, &[]).await;
    assert_eq!(r.status, 502, "must-revalidate forbids serving stale");
}

#[tokio::test]
async fn hop_by_hop_fields_are_stripped_both_ways() {
    let origin = Origin::builder()
        .route("/hop", |_| {
            Reply::ok("hop")
                .header("cache-control", "max-age=60")
                .header("connection", "x-origin-private")
                .header("x-origin-private", "1")
                .header("x-end-to-end", "1")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let r = get(
        p.addr(),
        &origin.url("/hop"),
        &[
            ("connection", "x-client-private"),
            ("x-client-private", "1"),
            ("proxy-authorization", "x"),
        ],
    )
    .await;
    assert!(r.header("x-origin-private").is_none());
    assert_eq!(r.header("x-end-to-end"), Some("1"));
    let seen = &origin.seen("/hop")[0];
    assert!(seen.headers.get("x-client-private").is_none());
    assert!(seen.headers.get("proxy-authorization").is_none());
    assert!(seen
        .headers
        .get("via")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("meshcache"));
    let r = wait_for_hit(&p, &origin.url("/hop")).await;
    assert!(r.header("x-origin-private").is_none(), "not stored either");
}

#[tokio::test]
async fn eviction_keeps_the_store_under_its_limit_least_recently_used_first() {
    let origin = Origin::builder()
        .route("/1", |_| {
            Reply::generated(400_000).header("cache-control", "max-age=600")
        })
        .route("/2", |_| {
            Reply::generated(400_001).header("cache-control", "max-age=600")
        })
        .route("/3", |_| {
            Reply::generated(400_002).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.max_size = 1_000_000).await;
    for path in ["/1", "/2"] {
        get(p.addr(), &origin.url(path), &[]).await;
        settle(&p).await;
        wait_for_hit(&p, &origin.url(path)).await;
        p.clock.advance(Duration::from_secs(1));
    }
    // Use /1 again so /2 is the least recently used.
    get(p.addr(), &origin.url("/1"), &[]).await;
    settle(&p).await;
    p.clock.advance(Duration::from_secs(1));
    get(p.addr(), &origin.url("/3"), &[]).await;
    settle(&p).await;
    wait_for_hit(&p, &origin.url("/3")).await;
    let mut stats = p.cache().stats().await.unwrap();
    for _ in 0..3000 {
        if stats.bytes <= 1_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = p.cache().stats().await.unwrap();
    }
    assert!(stats.bytes <= 1_000_000, "{stats:?}");
    let keys: Vec<String> = p
        .cache()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        keys.iter().any(|k| k.ends_with("/1")) && keys.iter().any(|k| k.ends_with("/3")),
        "{keys:?}"
    );
    assert!(!keys.iter().any(|k| k.ends_with("/2")), "{keys:?}");
}

#[tokio::test]
async fn origin_form_requests_get_the_status_page_and_loops_are_refused() {
    let p = TestProxy::start().await;
    let r = raw_origin_form(p.addr()).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("meshcache"));
    let r = get(p.addr(), "http://meshcache.local/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("meshcache"));
    let via = r.header("via").unwrap().to_string();
    let origin = Origin::builder()
        .route("/x", |_| Reply::ok("x"))
        .run()
        .await;
    let r = get(p.addr(), &origin.url("/x"), &[("via", &via)]).await;
    assert_eq!(
        r.status, 508,
        "a request that already passed through us is a loop"
    );
    assert_eq!(origin.hits("/x"), 0);
}

async fn raw_origin_form(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Regression: a clean shutdown right after a large miss closed the body store while the
/// body was still being imported, and the object was lost ("import body: Error::Io").
#[tokio::test]
async fn shutdown_during_an_import_keeps_the_object() {
    let origin = Origin::builder()
        .route("/late", |_| {
            Reply::generated(20 << 20).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let mut p = TestProxy::start().await;
    let r = get(p.addr(), &origin.url("/late"), &[]).await;
    assert_eq!(r.body.len(), 20 << 20);
    p.restart().await; // no waiting: the import may still be running
    let r = get(p.addr(), &origin.url("/late"), &[]).await;
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(r.body.len(), 20 << 20);
    assert_eq!(origin.hits("/late"), 1);
}

#[tokio::test]
async fn small_bodies_filled_in_memory_are_shared_with_waiters_and_stored() {
    use crate::support::origin::ReplyBody;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let origin = Origin::builder()
        .route("/small", move |_| {
            Reply::generated(100_000)
                .header("cache-control", "max-age=600")
                .body(ReplyBody::Gated {
                    len: 100_000,
                    chunk: 10_000,
                    gate: g.clone(),
                })
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let (addr, url) = (p.addr(), origin.url("/small"));
    let a = tokio::spawn({
        let url = url.clone();
        async move { get(addr, &url, &[]).await }
    });
    let b = tokio::spawn({
        let url = url.clone();
        async move { get(addr, &url, &[]).await }
    });
    // Both requests are in before the origin finishes; then let it finish.
    for _ in 0..500 {
        if p.cache().stats().await.unwrap().fills_in_progress == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.add_permits(100);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let expected: Vec<u8> = (0..100_000u64).map(crate::support::pattern).collect();
    assert_eq!(a.body.as_ref(), expected.as_slice());
    assert_eq!(b.body.as_ref(), expected.as_slice());
    let r = wait_for_hit(&p, &url).await;
    assert_eq!(r.body.as_ref(), expected.as_slice());
    assert_eq!(origin.hits("/small"), 1);
}

#[tokio::test]
async fn a_head_during_a_fill_is_answered_from_the_fill() {
    use crate::support::open;
    use crate::support::origin::ReplyBody;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let origin = Origin::builder()
        .route("/filling", move |_| {
            Reply::generated(1 << 20)
                .header("cache-control", "max-age=600")
                .header("etag", "\"f\"")
                .body(ReplyBody::Gated {
                    len: 1 << 20,
                    chunk: 64 << 10,
                    gate: g.clone(),
                })
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let (_, body) = open(p.addr(), &origin.url("/filling")).await;
    let r = request(p.addr(), Method::HEAD, &origin.url("/filling"), &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_status(), "meshcache; hit; detail=collapsed");
    assert_eq!(
        (r.header("content-length"), r.header("etag")),
        (Some("1048576"), Some("\"f\""))
    );
    assert_eq!(
        origin.hits("/filling"),
        1,
        "the HEAD did not reach the origin"
    );
    gate.add_permits(1000);
    assert_eq!(crate::support::check_pattern(body, 0).await, Ok(1 << 20));
}

// Regressions found by the public cache test suite (http-tests/cache-tests).

#[tokio::test]
async fn a_request_with_no_cache_does_not_join_a_finished_download() {
    let origin = Origin::builder()
        .route("/j", |_| {
            Reply::ok("j").header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    get(p.addr(), &origin.url("/j"), &[]).await;
    // Right away: the download may still be committing; no-cache must reach the origin.
    let r = get(
        p.addr(),
        &origin.url("/j"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert!(!r.cache_status().contains("hit"), "{}", r.cache_status());
    assert_eq!(origin.hits("/j"), 2);
    let r = get(
        p.addr(),
        &origin.url("/j"),
        &[("cache-control", "min-fresh=3600")],
    )
    .await;
    assert!(!r.cache_status().contains("hit"), "{}", r.cache_status());
    assert_eq!(origin.hits("/j"), 3);
}

#[tokio::test]
async fn directive_names_are_case_insensitive() {
    let origin = Origin::builder()
        .route("/nc", |_| {
            Reply::ok("x")
                .header("cache-control", "max-age=10000, No-CaChE")
                .header("etag", "\"x\"")
        })
        .route("/ma", |_| {
            Reply::ok("y").header("cache-control", "MaX-AgE=10000")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    get(p.addr(), &origin.url("/nc"), &[]).await;
    settle(&p).await;
    get(p.addr(), &origin.url("/nc"), &[]).await;
    assert_eq!(origin.hits("/nc"), 2, "No-CaChE means no-cache");
    get(p.addr(), &origin.url("/ma"), &[]).await;
    settle(&p).await;
    let r = get(p.addr(), &origin.url("/ma"), &[]).await;
    assert_eq!(r.cache_status(), "meshcache; hit", "MaX-AgE means max-age");
}

#[tokio::test]
async fn an_invalid_age_or_expires_is_not_read_as_fresh() {
    let origin = Origin::builder()
        .route("/age", |_| {
            Reply::ok("a")
                .header("cache-control", "max-age=3600")
                .header("age", "7200, 0")
        })
        .route("/exp", |_| {
            Reply::ok("e")
                .header("expires", "Thu, 18  Aug  2050 02:01:18 GMT")
                .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        })
        .route("/rfc850", |_| {
            Reply::ok("r").header("expires", "Thursday, 18-Aug-50 02:01:18 GMT")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    for path in ["/age", "/exp", "/rfc850"] {
        get(p.addr(), &origin.url(path), &[]).await;
        settle(&p).await;
        get(p.addr(), &origin.url(path), &[]).await;
    }
    assert_eq!(origin.hits("/age"), 2, "Age: 7200, 0 is older than max-age");
    assert_eq!(
        origin.hits("/exp"),
        2,
        "a malformed Expires is already expired"
    );
    assert_eq!(
        origin.hits("/rfc850"),
        1,
        "an RFC 850 Expires is a valid date"
    );
}

#[tokio::test]
async fn a_shared_cache_stores_authorized_responses_that_say_public() {
    let origin = Origin::builder()
        .route("/pub", |_| {
            Reply::ok("p").header("cache-control", "public, max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.shared = true).await;
    get(
        p.addr(),
        &origin.url("/pub"),
        &[("authorization", "Basic eDp5")],
    )
    .await;
    settle(&p).await;
    let r = get(
        p.addr(),
        &origin.url("/pub"),
        &[("authorization", "Basic eDp5")],
    )
    .await;
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(origin.hits("/pub"), 1);
}

#[tokio::test]
async fn stale_is_served_when_the_origin_closes_without_answering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            if first {
                first = false;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
                    .await;
            }
            // later connections are closed without a response
        }
    });
    let p = TestProxy::start().await;
    let url = format!("http://{addr}/c");
    assert_eq!(get(p.addr(), &url, &[]).await.text(), "hello");
    settle(&p).await;
    p.clock.advance(Duration::from_secs(10));
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello"));
    assert!(
        r.cache_status().contains("fwd=stale"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test]
async fn a_no_cache_response_asked_for_again_at_once_is_revalidated_conditionally() {
    let origin = Origin::builder()
        .route("/nc", |s| {
            if s.headers.get("if-none-match").is_some() {
                Reply::status(304).header("etag", "\"n\"")
            } else {
                Reply::ok("n")
                    .header("cache-control", "no-cache")
                    .header("etag", "\"n\"")
            }
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    get(p.addr(), &origin.url("/nc"), &[]).await;
    // No settling: the first download may still be committing.
    let r = get(p.addr(), &origin.url("/nc"), &[]).await;
    assert_eq!(r.text(), "n");
    let seen = origin.seen("/nc");
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1]
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap()),
        Some("\"n\"")
    );
    assert!(
        r.cache_status().contains("fwd-status=304"),
        "{}",
        r.cache_status()
    );
}

/// Regression (issue 9): `max-age=18446744073709551615` made every request for the URL a
/// 500 (`now + ttl` overflowed and panicked). Lifetimes are clamped: the response is stored
/// and served.
#[tokio::test]
async fn a_huge_max_age_is_clamped_and_served_not_a_500() {
    let huge = [
        ("/u64", "max-age=18446744073709551615"),
        ("/i64", "max-age=9223372036854775807"),
        ("/shared", "public, s-maxage=18446744073709551615"),
        (
            "/stale",
            "max-age=18446744073709551615, stale-while-revalidate=18446744073709551615, stale-if-error=18446744073709551615",
        ),
    ];
    let mut builder = Origin::builder();
    for (path, cc) in huge {
        builder = builder.route(path, move |_| {
            Reply::ok("forever")
                .header("cache-control", cc)
                .header("expires", "Fri, 31 Dec 9999 23:59:59 GMT")
        });
    }
    // An Age beyond any lifetime: already stale, so not stored — but answered.
    builder = builder.route("/old", |_| {
        Reply::ok("old")
            .header("cache-control", "max-age=60")
            .header("age", "18446744073709551615")
    });
    let origin = builder.run().await;
    for shared in [false, true] {
        let p = TestProxy::start_with(|s| s.cache.shared = shared).await;
        for (path, _) in huge {
            let url = origin.url(path);
            let first = get(p.addr(), &url, &[]).await;
            assert_eq!(first.status, 200, "{path}: {}", first.text());
            assert_eq!(first.text(), "forever");
            let hit = wait_for_hit(&p, &url).await;
            assert_eq!(hit.status, 200, "{path}");
            assert_eq!(hit.cache_status(), "meshcache; hit", "{path}");
            // Far in the future by the proxy's clock too: still fresh, no arithmetic panic.
            p.clock.advance(Duration::from_secs(50 * 365 * 86_400));
            let later = get(p.addr(), &url, &[]).await;
            assert_eq!(later.status, 200, "{path}: {}", later.text());
        }
        for _ in 0..2 {
            let old = get(p.addr(), &origin.url("/old"), &[]).await;
            assert_eq!((old.status.as_u16(), old.text().as_str()), (200, "old"));
        }
        p.stop().await;
    }
}

/// Regression: many URLs whose bodies are the same bytes, committed at once, all reach
/// the store. The body store handles each content hash in one actor with a bounded inbox;
/// a burst of imports of one hash overflowed it ("Entity actor inbox is full") and those
/// entries were silently not stored (found by the hit_path bench's warm-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_bodies_at_many_urls_committed_at_once_are_all_stored() {
    const N: usize = 200;
    let body = bytes::Bytes::from(vec![7u8; 256 << 10]);
    let mut b = Origin::builder();
    for i in 0..N {
        let body = body.clone();
        b = b.route(&format!("/same/{i}"), move |_| {
            Reply::ok(body.clone()).header("cache-control", "max-age=3600")
        });
    }
    let origin = b.run().await;
    let p = TestProxy::start().await;
    let gets = (0..N).map(|i| {
        let url = origin.url(&format!("/same/{i}"));
        let addr = p.addr();
        async move { get(addr, &url, &[]).await }
    });
    for r in futures_util::future::join_all(gets).await {
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 256 << 10);
    }
    // Every commit runs after its response: wait until the store holds them all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let stats = p.cache().stats().await.unwrap();
        if stats.variants as usize == N {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {N} identical bodies stored",
            stats.variants
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for i in 0..N {
        let r = get(p.addr(), &origin.url(&format!("/same/{i}")), &[]).await;
        assert!(
            r.cache_status().contains("hit"),
            "{i}: {}",
            r.cache_status()
        );
    }
}
