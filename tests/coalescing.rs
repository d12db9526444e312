use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::caching::wait_for_hit;
use crate::support::origin::ReplyBody;
use crate::support::{check_pattern, open, pattern, Origin, Reply, TestProxy};

#[tokio::test]
async fn twenty_concurrent_misses_make_one_origin_request_and_all_bodies_are_complete() {
    const LEN: u64 = 10 << 20;
    let origin = Origin::builder()
        .route("/big", |_| {
            Reply::generated(LEN)
                .header("cache-control", "max-age=600")
                // Slow enough that all twenty arrive while the fill is under way.
                .body(ReplyBody::Generated {
                    len: LEN,
                    chunk: 256 << 10,
                    delay: Some(Duration::from_millis(5)),
                    declared: true,
                })
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let url = origin.url("/big");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (addr, url) = (p.addr(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (head, body) = open(addr, &url).await;
            assert_eq!(head.status, 200);
            check_pattern(body, 0).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(LEN));
    }
    assert_eq!(origin.hits("/big"), 1);
}

#[tokio::test]
async fn waiters_stream_the_body_while_it_arrives() {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let origin = Origin::builder()
        .route("/slow", move |_| {
            Reply::generated(1 << 20)
                .header("cache-control", "max-age=600")
                .body(ReplyBody::Gated {
                    len: 1 << 20,
                    chunk: 64 << 10,
                    gate: g.clone(),
                })
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let url = origin.url("/slow");
    let (h1, mut b1) = open(p.addr(), &url).await;
    let (h2, mut b2) = open(p.addr(), &url).await;
    assert_eq!((h1.status.as_u16(), h2.status.as_u16()), (200, 200));
    // Only the first 64 KiB chunk has left the origin: both clients get bytes now.
    for b in [&mut b1, &mut b2] {
        let f = tokio::time::timeout(Duration::from_secs(10), b.frame())
            .await
            .expect("bytes before the origin finished");
        let data = f.unwrap().unwrap().into_data().unwrap();
        assert!(!data.is_empty());
        assert_eq!(data[0], pattern(0));
    }
    assert_eq!(origin.hits("/slow"), 1);
    gate.add_permits(1000);
    let mut rest = Vec::new();
    for b in [b1, b2] {
        rest.push(b.collect().await.unwrap().to_bytes().len());
    }
    assert!(rest.iter().all(|n| *n > 0));
    assert!(h2
        .headers
        .get("cache-status")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("collapsed"));
}

#[tokio::test]
async fn a_client_that_leaves_does_not_abort_the_fill_others_wait_for() {
    const LEN: u64 = 2 << 20;
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let origin = Origin::builder()
        .route("/shared", move |_| {
            Reply::generated(LEN)
                .header("cache-control", "max-age=600")
                .body(ReplyBody::Gated {
                    len: LEN,
                    chunk: 64 << 10,
                    gate: g.clone(),
                })
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let url = origin.url("/shared");
    let (_, mut leader_body) = open(p.addr(), &url).await;
    let (_, follower_body) = open(p.addr(), &url).await;
    leader_body.frame().await.unwrap().unwrap();
    drop(leader_body); // the client that started the fill goes away
    gate.add_permits(10_000);
    assert_eq!(check_pattern(follower_body, 0).await, Ok(LEN));
    let r = wait_for_hit(&p, &url).await;
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(r.body.len() as u64, LEN);
    assert_eq!(origin.hits("/shared"), 1);
}

#[tokio::test]
async fn a_truncated_origin_body_fails_the_response_and_is_not_stored() {
    let origin = Origin::builder()
        .route("/cut", |_| {
            Reply::generated(0)
                .header("cache-control", "max-age=600")
                .body(ReplyBody::Truncated {
                    declared: 1 << 20,
                    sent: 300_000,
                })
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let (head, body) = open(p.addr(), &origin.url("/cut")).await;
    assert_eq!(head.status, 200);
    assert!(
        check_pattern(body, 0).await.is_err(),
        "a partial body must not end cleanly"
    );
    let (_, body) = open(p.addr(), &origin.url("/cut")).await;
    assert!(check_pattern(body, 0).await.is_err());
    assert_eq!(origin.hits("/cut"), 2, "the partial body was not stored");
    assert_eq!(p.cache().stats().await.unwrap().variants, 0);
}

#[tokio::test]
async fn objects_above_max_object_size_stream_through_uncached() {
    let origin = Origin::builder()
        .route("/huge", |_| {
            Reply::generated(3 << 20).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.max_object_size = 1 << 20).await;
    for _ in 0..2 {
        let (head, body) = open(p.addr(), &origin.url("/huge")).await;
        assert!(head.headers["cache-status"]
            .to_str()
            .unwrap()
            .contains("too-large"));
        assert_eq!(check_pattern(body, 0).await, Ok(3 << 20));
    }
    assert_eq!(origin.hits("/huge"), 2);
}
