//! Operator freshness rules (`[[cache.rule]]`): a lifetime for responses that state none,
//! only where RFC 9111 lets a cache choose one, and `Cache-Status` naming the rule.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderMap;

use crate::caching::{settle, wait_for_hit};
use crate::support::binary::run;
use crate::support::{get, Origin, Reply, TestProxy};

/// The rules of a configuration file's `[[cache.rule]]` entries, as the proxy gets them.
fn rules(toml: &str) -> cache::policy::Rules {
    let cfg = config::Config::from_toml_str(toml, Path::new("rules.toml")).expect("valid rules");
    meshcache::Settings::from_config(&cfg, PathBuf::from("/nowhere"))
        .cache
        .rules
}

const POOL_RULE: &str = r#"
[[cache.rule]]
url = '^http://[^/]+/debian/pool/'
fresh_for = "1h"
"#;

const HOUR: Duration = Duration::from_secs(3600);

/// The entry stored for `url`, if any.
fn stored(p: &TestProxy, url: &str) -> Option<std::sync::Arc<cache::Entry>> {
    let key = cache::key::primary_key(&url.parse().unwrap()).unwrap();
    p.cache().lookup(&key, &HeaderMap::new()).unwrap()
}

#[tokio::test]
async fn a_matching_rule_stores_a_response_that_states_nothing_and_hits_until_fresh_for() {
    let origin = Origin::builder()
        .route("/debian/pool/main/h/hello.deb", |_| Reply::ok("package"))
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.rules = rules(POOL_RULE)).await;
    let url = origin.url("/debian/pool/main/h/hello.deb");
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.text(), "package");
    assert_eq!(
        r.cache_status(),
        "meshcache; fwd=miss; stored; detail=rule-1; fwd-status=200"
    );
    settle(&p).await;
    let entry = stored(&p, &url).expect("stored under the rule");
    assert!(
        !entry.shareable && entry.attestation.is_none(),
        "fresh only by this device's rule: not offered to peers"
    );
    assert!(
        entry.header_map().get("cache-control").is_none(),
        "the stored headers stay the origin's"
    );

    p.clock.advance(HOUR - Duration::from_secs(2));
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.text(), "package");
    assert_eq!(r.cache_status(), "meshcache; hit; detail=rule-1");
    assert!(r.header("cache-control").is_none(), "{:?}", r.headers);
    let age: u64 = r.header("age").unwrap().parse().unwrap();
    assert!((3598..=3599).contains(&age), "age {age}");
    assert_eq!(origin.hits("/debian/pool/main/h/hello.deb"), 1);

    // Past fresh_for: stale; nothing to revalidate with, so fetched and stored again.
    p.clock.advance(Duration::from_secs(3));
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(
        r.cache_status(),
        "meshcache; fwd=stale; stored; detail=rule-1; fwd-status=200"
    );
    assert_eq!(origin.hits("/debian/pool/main/h/hello.deb"), 2);
    settle(&p).await;
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.cache_status(), "meshcache; hit; detail=rule-1");
    assert_eq!(origin.hits("/debian/pool/main/h/hello.deb"), 2);
}

#[tokio::test]
async fn an_unmatched_url_is_unchanged_by_the_rules() {
    let old =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100 * 86400));
    let origin = Origin::builder()
        .route("/ubuntu/pool/a.deb", |_| Reply::ok("bare"))
        .route("/ubuntu/pool/old.deb", move |_| {
            Reply::ok("old").header("last-modified", &old)
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.rules = rules(POOL_RULE)).await;
    let url = origin.url("/ubuntu/pool/a.deb");
    for _ in 0..2 {
        let r = get(p.addr(), &url, &[]).await;
        assert_eq!(
            r.cache_status(),
            "meshcache; fwd=miss; detail=not-reusable; fwd-status=200"
        );
        settle(&p).await;
    }
    assert_eq!(origin.hits("/ubuntu/pool/a.deb"), 2);
    // The Last-Modified heuristic, as without rules (10% of 100 days).
    get(p.addr(), &origin.url("/ubuntu/pool/old.deb"), &[]).await;
    settle(&p).await;
    p.clock.advance(Duration::from_secs(9 * 86400));
    let r = wait_for_hit(&p, &origin.url("/ubuntu/pool/old.deb")).await;
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(origin.hits("/ubuntu/pool/old.deb"), 1);
}

#[tokio::test]
async fn a_matching_rule_never_overrides_what_the_response_states() {
    let soon = || httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
    let origin = Origin::builder()
        .route("/debian/pool/no-store", |_| {
            Reply::ok("x").header("cache-control", "no-store")
        })
        .route("/debian/pool/private", |_| {
            Reply::ok("x").header("cache-control", "private")
        })
        .route("/debian/pool/no-cache", |_| {
            Reply::ok("x").header("cache-control", "no-cache")
        })
        .route("/debian/pool/pragma", |_| {
            Reply::ok("x").header("pragma", "no-cache")
        })
        .route("/debian/pool/max-age-0", |_| {
            Reply::ok("x").header("cache-control", "max-age=0")
        })
        .route("/debian/pool/expired", |_| {
            Reply::ok("x").header("expires", "Thu, 01 Jan 1970 00:00:00 GMT")
        })
        .route("/debian/pool/max-age-30", |_| {
            Reply::ok("x").header("cache-control", "max-age=30")
        })
        .route("/debian/pool/s-maxage-30", |_| {
            Reply::ok("x").header("cache-control", "s-maxage=30")
        })
        .route("/debian/pool/expires-30", move |_| {
            Reply::ok("x").header("expires", soon())
        })
        .route("/debian/pool/bare", |_| Reply::ok("x"))
        .run()
        .await;
    // A gateway (shared-cache rules: `private` is not stored, `s-maxage` counts).
    let p = TestProxy::start_with(|s| {
        s.cache.shared = true;
        s.cache.rules = rules(POOL_RULE);
    })
    .await;
    // The rule is in force here: a response that states nothing is stored under it.
    let r = get(p.addr(), &origin.url("/debian/pool/bare"), &[]).await;
    assert!(
        r.cache_status().contains("stored; detail=rule-1"),
        "{}",
        r.cache_status()
    );
    settle(&p).await;
    // Never reused: each request goes to the origin, and no rule is named.
    for path in [
        "no-store",
        "private",
        "no-cache",
        "pragma",
        "max-age-0",
        "expired",
    ] {
        let path = format!("/debian/pool/{path}");
        for _ in 0..2 {
            let r = get(p.addr(), &origin.url(&path), &[]).await;
            assert!(
                !r.cache_status().contains("rule"),
                "{path}: {}",
                r.cache_status()
            );
            assert!(
                !r.cache_status().contains("hit"),
                "{path}: {}",
                r.cache_status()
            );
            settle(&p).await;
        }
        assert_eq!(origin.hits(&path), 2, "{path}");
    }
    // An explicit lifetime is the lifetime: fresh for its 30 s, not the rule's hour.
    let explicit = ["max-age-30", "s-maxage-30", "expires-30"].map(|p| format!("/debian/pool/{p}"));
    for path in &explicit {
        let r = get(p.addr(), &origin.url(path), &[]).await;
        assert_eq!(
            r.cache_status(),
            "meshcache; fwd=miss; stored; fwd-status=200",
            "{path}"
        );
        settle(&p).await;
        let r = get(p.addr(), &origin.url(path), &[]).await;
        assert_eq!(r.cache_status(), "meshcache; hit", "{path}");
    }
    p.clock.advance(Duration::from_secs(60));
    for path in &explicit {
        let r = get(p.addr(), &origin.url(path), &[]).await;
        assert!(
            !r.cache_status().contains("hit") && !r.cache_status().contains("rule"),
            "{path}: {}",
            r.cache_status()
        );
        assert_eq!(origin.hits(path), 2, "{path}");
        settle(&p).await;
    }
}

#[tokio::test]
async fn the_first_matching_rule_wins() {
    let origin = Origin::builder()
        .route("/debian/pool/a.deb", |_| Reply::ok("a"))
        .run()
        .await;
    let p = TestProxy::start_with(|s| {
        s.cache.rules = rules(
            r#"
[[cache.rule]]
url = '^https://'
fresh_for = "1d"
[[cache.rule]]
url = '/debian/'
fresh_for = "1m"
[[cache.rule]]
url = '/pool/'
fresh_for = "1h"
"#,
        )
    })
    .await;
    let url = origin.url("/debian/pool/a.deb");
    let r = get(p.addr(), &url, &[]).await;
    assert!(
        r.cache_status().contains("detail=rule-2"),
        "{}",
        r.cache_status()
    );
    settle(&p).await;
    p.clock.advance(Duration::from_secs(58));
    assert_eq!(
        get(p.addr(), &url, &[]).await.cache_status(),
        "meshcache; hit; detail=rule-2"
    );
    p.clock.advance(Duration::from_secs(3));
    let r = get(p.addr(), &url, &[]).await;
    assert!(
        r.cache_status().contains("fwd=stale"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits("/debian/pool/a.deb"), 2);
}

/// The lifetime a rule gave is the stored entry's own: it survives a restart, and the
/// rule is not needed for it — but once stale, the response is judged again without it.
#[tokio::test]
async fn a_lifetime_a_rule_gave_survives_a_restart_even_without_the_rule() {
    let origin = Origin::builder()
        .route("/debian/pool/a.deb", |_| Reply::ok("a"))
        .run()
        .await;
    let mut p = TestProxy::start_with(|s| s.cache.rules = rules(POOL_RULE)).await;
    let url = origin.url("/debian/pool/a.deb");
    get(p.addr(), &url, &[]).await;
    settle(&p).await;
    p.restart().await;
    p.clock.advance(HOUR / 2);
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(
        r.cache_status(),
        "meshcache; hit; detail=rule-1",
        "after a restart"
    );

    p.settings.cache.rules = rules("");
    p.restart().await;
    p.clock.advance(HOUR / 2 - Duration::from_secs(2));
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(
        r.cache_status(),
        "meshcache; hit",
        "fresh until its fresh_until"
    );
    assert_eq!(origin.hits("/debian/pool/a.deb"), 1);

    p.clock.advance(Duration::from_secs(3));
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.cache_status(), "meshcache; fwd=stale; fwd-status=200");
    settle(&p).await;
    get(p.addr(), &url, &[]).await;
    assert_eq!(
        origin.hits("/debian/pool/a.deb"),
        3,
        "not stored without the rule"
    );
}

#[tokio::test]
async fn a_304_applies_the_rule_again() {
    let revalidated = |s: &crate::support::origin::Seen, extra: Option<&str>| {
        if s.headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            let r = Reply::status(304).header("etag", "\"v1\"");
            match extra {
                Some(cc) => r.header("cache-control", cc),
                None => r,
            }
        } else {
            Reply::ok("v1").header("etag", "\"v1\"")
        }
    };
    let origin = Origin::builder()
        .route("/debian/pool/a.deb", move |s| revalidated(s, None))
        .route("/debian/pool/b.deb", move |s| {
            revalidated(s, Some("max-age=10"))
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.rules = rules(POOL_RULE)).await;
    let (a, b) = (
        origin.url("/debian/pool/a.deb"),
        origin.url("/debian/pool/b.deb"),
    );
    for url in [&a, &b] {
        let r = get(p.addr(), url, &[]).await;
        assert_eq!(
            r.cache_status(),
            "meshcache; fwd=miss; stored; detail=rule-1; fwd-status=200"
        );
        settle(&p).await;
    }
    assert!(
        stored(&p, &a).expect("stored").shareable,
        "stored without the rule too (it has a validator): shared as before"
    );
    p.clock.advance(HOUR + Duration::from_secs(1));
    for url in [&a, &b] {
        let r = get(p.addr(), url, &[]).await;
        assert_eq!(r.text(), "v1");
        let expected = if url == &a {
            "meshcache; fwd=stale; detail=rule-1; fwd-status=304"
        } else {
            // The 304 states a lifetime: no rule applies any more.
            "meshcache; fwd=stale; fwd-status=304"
        };
        assert_eq!(r.cache_status(), expected, "{url}");
    }
    p.clock.advance(Duration::from_secs(30));
    assert_eq!(
        get(p.addr(), &a, &[]).await.cache_status(),
        "meshcache; hit; detail=rule-1",
        "fresh for the rule's hour again"
    );
    assert_eq!(origin.hits("/debian/pool/a.deb"), 2);
    let r = get(p.addr(), &b, &[]).await;
    assert!(
        r.cache_status().contains("fwd-status=304"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits("/debian/pool/b.deb"), 3, "stale after its 10 s");
    let seen = origin.seen("/debian/pool/a.deb");
    assert_eq!(seen[1].headers.get("if-none-match").unwrap(), "\"v1\"");
}

#[test]
fn config_check_reports_a_bad_rule_regex_with_its_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let good = "[cache]\nshared = true\n\n[[cache.rule]]\nurl = '^https?://[^/]+/debian/pool/'\nfresh_for = \"30d\"\n";
    fs::write(&path, good).unwrap();
    let out = run(&["config", "check", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    fs::write(
        &path,
        format!("{good}\n[[cache.rule]]\nfresh_for = \"1d\"\nurl = '^https?://(pypi|files\\.pythonhosted\\.org/'\n"),
    )
    .unwrap();
    let out = run(&["config", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:10:7: cache.rule[1].url: invalid regular expression \"^https?://(pypi|files\\\\.pythonhosted\\\\.org/\": unclosed group",
        path.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    fs::write(&path, "[[cache.rule]]\nurl = 'x'\nfresh_for = \"0s\"\n").unwrap();
    let out = run(&["config", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cache.rule[0].fresh_for: must be at least 1s"),
        "{err}"
    );
}
