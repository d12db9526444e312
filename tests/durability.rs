use http_body_util::BodyExt;

use crate::support::binary::Running;
use crate::support::origin::ReplyBody;
use crate::support::{check_pattern, open, Origin, Reply};

#[tokio::test]
async fn kill_9_during_a_fill_never_leaves_a_partial_body_behind() {
    const LEN: u64 = 200 << 20;
    let origin = Origin::builder()
        .route("/movie", |_| {
            Reply::generated(LEN)
                .header("cache-control", "max-age=600")
                .body(ReplyBody::Generated {
                    len: LEN,
                    chunk: 256 << 10,
                    delay: Some(std::time::Duration::from_millis(2)),
                    declared: true,
                })
        })
        .run()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url = origin.url("/movie");

    let first = Running::start(dir.path(), &[]);
    let (head, mut body) = open(first.addr, &url).await;
    assert_eq!(head.status, 200);
    // Let a few megabytes through, so the fill is well under way, then crash.
    let mut got = 0usize;
    while got < 8 << 20 {
        let f = body
            .frame()
            .await
            .expect("body continues")
            .expect("no error yet");
        got += f.into_data().map(|d| d.len()).unwrap_or(0);
    }
    first.kill9();
    assert!(
        check_pattern(body, got as u64).await.is_err(),
        "the client saw the crash as an error, not an end"
    );

    let second = Running::start(dir.path(), &[]);
    let (head, body) = open(second.addr, &url).await;
    assert_eq!(head.status, 200);
    let status = head.headers["cache-status"].to_str().unwrap().to_string();
    assert!(
        status.contains("fwd=miss"),
        "nothing of the crashed fill may be served: {status}"
    );
    assert_eq!(
        check_pattern(body, 0).await,
        Ok(LEN),
        "the whole, correct body"
    );
    second.stop();
}
