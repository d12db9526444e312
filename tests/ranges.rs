use crate::caching::wait_for_hit;
use crate::support::{get, pattern, Origin, Reply, TestProxy};

fn expected(r: std::ops::Range<u64>) -> Vec<u8> {
    r.map(pattern).collect()
}

#[tokio::test]
async fn ranges_are_served_from_a_stored_body() {
    let origin = Origin::builder()
        .route("/m", |_| {
            Reply::generated(100_000)
                .header("cache-control", "max-age=600")
                .header("etag", "\"m1\"")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let url = origin.url("/m");
    get(p.addr(), &url, &[]).await;
    wait_for_hit(&p, &url).await;

    let r = get(p.addr(), &url, &[("range", "bytes=0-99")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 0-99/100000"));
    assert_eq!(r.body.as_ref(), expected(0..100).as_slice());

    let r = get(p.addr(), &url, &[("range", "bytes=-10")]).await;
    assert_eq!(r.body.as_ref(), expected(99_990..100_000).as_slice());

    let r = get(p.addr(), &url, &[("range", "bytes=50000-")]).await;
    assert_eq!(r.body.as_ref(), expected(50_000..100_000).as_slice());

    let r = get(p.addr(), &url, &[("range", "bytes=200000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */100000"));

    // If-Range with the current validator: the range; with another: the whole body.
    let r = get(
        p.addr(),
        &url,
        &[("range", "bytes=10-19"), ("if-range", "\"m1\"")],
    )
    .await;
    assert_eq!((r.status.as_u16(), r.body.len()), (206, 10));
    let r = get(
        p.addr(),
        &url,
        &[("range", "bytes=10-19"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 100_000));
    assert_eq!(origin.hits("/m"), 1);
}

#[tokio::test]
async fn multiple_ranges_are_a_multipart_byteranges_body() {
    let origin = Origin::builder()
        .route("/mp", |_| {
            Reply::generated(10_000)
                .header("cache-control", "max-age=600")
                .header("content-type", "video/mp4")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let url = origin.url("/mp");
    get(p.addr(), &url, &[]).await;
    wait_for_hit(&p, &url).await;
    let r = get(p.addr(), &url, &[("range", "bytes=0-9, 100-109")]).await;
    assert_eq!(r.status, 206);
    let ctype = r.header("content-type").unwrap();
    let boundary = ctype
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(ctype)
        .to_string();
    assert_eq!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        r.body.len()
    );
    let body = r.body.to_vec();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("Content-Range: bytes 0-9/10000"));
    assert!(text.contains("Content-Range: bytes 100-109/10000"));
    assert!(text.contains("Content-Type: video/mp4"));
    assert!(text.trim_end().ends_with(&format!("--{boundary}--")));
    let first = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&body[first..first + 10], expected(0..10).as_slice());
}

#[tokio::test]
async fn a_range_miss_fills_the_whole_object_with_one_download() {
    let origin = Origin::builder()
        .route("/video", |_| {
            Reply::generated(3 << 20).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let url = origin.url("/video");
    let r = get(p.addr(), &url, &[("range", "bytes=1000-1999")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body.as_ref(), expected(1000..2000).as_slice());
    assert!(
        origin.seen("/video")[0].headers.get("range").is_none(),
        "the fill asks for the whole object"
    );
    // The fill goes on after the client has its range; then every range is a hit.
    let full = wait_for_hit(&p, &url).await;
    assert_eq!(full.body.len(), 3 << 20);
    let r = get(p.addr(), &url, &[("range", "bytes=2000000-2000099")]).await;
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert_eq!(r.body.as_ref(), expected(2_000_000..2_000_100).as_slice());
    assert_eq!(origin.hits("/video"), 1, "one download in all");
}

#[tokio::test]
async fn a_range_far_beyond_the_offset_limit_is_forwarded() {
    let origin = Origin::builder()
        .route("/far", |_| {
            Reply::generated(1 << 20).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.cache.range_offset_limit = 1000).await;
    let r = get(
        p.addr(),
        &origin.url("/far"),
        &[("range", "bytes=500000-500009")],
    )
    .await;
    assert!(
        r.cache_status().contains("range-forwarded"),
        "{}",
        r.cache_status()
    );
    assert_eq!(
        origin.seen("/far")[0].headers.get("range").unwrap(),
        "bytes=500000-500009"
    );
    assert_eq!(p.cache().stats().await.unwrap().variants, 0);
}

/// Regression: several ranges of a response that passes through uncached were answered
/// with an empty body under the origin's Content-Length.
#[tokio::test]
async fn multiple_ranges_of_an_uncached_response_get_the_whole_body() {
    let origin = Origin::builder()
        .route("/ns", |_| {
            Reply::generated(5000).header("cache-control", "no-store")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let r = get(
        p.addr(),
        &origin.url("/ns"),
        &[("range", "bytes=0-9, 100-109")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), expected(0..5000).as_slice());
    let r = get(p.addr(), &origin.url("/ns"), &[("range", "bytes=10-19")]).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_ref()),
        (206, expected(10..20).as_slice())
    );
}
