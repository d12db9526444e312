//! Crash points: the built binary is killed (SIGKILL, by itself) at each named point of the
//! store's write paths (`cache::failpoint`), then restarted on the same data directory.
//! After each crash: `meshcache cache check` finds the index and the body store in
//! agreement (every entry's body complete and hashing to its name, size accounting exact,
//! orphan bodies collected); the restarted proxy opens and serves every URL complete and
//! byte-correct; what was committed before the crash is still there, what was not is
//! fetched again. redb's crash tests are the model.
//!
//! Failpoints exist only in debug builds (a release build has none): under
//! `cargo test --release` these tests skip, saying so.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::support::binary::{run, Running};
use crate::support::mesh::{grouped, Device};
use crate::support::{check_pattern, Origin, Reply};

/// Bodies larger than the memory cache's objects (256 KiB): they go through the spool.
const BIG: u64 = 1 << 20;
/// Bodies small enough to be filled in memory.
const SMALL: u64 = 4 << 10;

fn skip_in_release() -> bool {
    if cfg!(debug_assertions) {
        return false;
    }
    eprintln!(
        "skipped: failpoints are compiled into debug builds only (cargo test without --release)"
    );
    true
}

/// The length a test URL names: `/obj/<len>`, `/reval/<len>`.
fn len_of(path: &str) -> u64 {
    path.rsplit('/').next().unwrap().parse().unwrap()
}

/// An origin serving `paths`: `/obj/<len>` answers `len` bytes of the pattern, fresh for
/// 10 minutes (distinct lengths make distinct bodies); `/reval/<len>` is stale at once and
/// answers `If-None-Match: "v1"` with a 304.
async fn origin(paths: &[String]) -> Origin {
    let mut b = Origin::builder();
    for p in paths {
        let len = len_of(p);
        b = if p.starts_with("/reval/") {
            b.route(p, move |seen| {
                if seen
                    .headers
                    .get("if-none-match")
                    .is_some_and(|v| v == "\"v1\"")
                {
                    return Reply::status(304)
                        .header("etag", "\"v1\"")
                        .header("cache-control", "max-age=0");
                }
                Reply::generated(len)
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=0")
            })
        } else {
            b.route(p, move |_| {
                Reply::generated(len).header("cache-control", "max-age=600")
            })
        };
    }
    b.run().await
}

/// A GET through the proxy: `Ok((cache-status, body length))` when the whole body arrived
/// and every byte is right, `Err` for anything else (the proxy dying mid-way included).
async fn fetch(proxy: SocketAddr, url: &str) -> Result<(String, u64), String> {
    let stream = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let uri: http::Uri = url.parse().unwrap();
    let req = http::Request::get(&uri)
        .header("host", uri.authority().unwrap().as_str())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if res.status() != 200 {
        return Err(format!("status {}", res.status()));
    }
    let status = res
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let len = check_pattern(res.into_body(), 0).await?;
    Ok((status, len))
}

/// Waits (up to 60 s) for the process to end; it must have been killed by SIGKILL after
/// saying it reached `point`.
async fn died_at(mut running: Running, point: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // The process ends by itself (SIGKILL from the failpoint); there is no event to wait
    // on across processes but its exit, polled here.
    let status: ExitStatus = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never reached failpoint {point}: {:?}",
            running.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = running.log.clone();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed, not exited: {status}"
    );
    // The drain thread may still be reading the last line: it ends with the pipe.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let said = format!("failpoint {point} reached");
    while !log.lock().unwrap().iter().any(|l| l.contains(&said)) {
        assert!(
            std::time::Instant::now() < deadline,
            "killed, but not at {point}: {:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `meshcache cache check` on the data directory: it must find it consistent; returns the
/// number of entries.
async fn check(dir: &Path, config: &Path) -> u64 {
    let (dir, config) = (dir.to_owned(), config.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "cache",
            "check",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cache check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("consistent"), "{stdout}");
    assert!(stdout.contains("orphans:    0"), "{stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("entries:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no entry count in {stdout}"))
}

/// What a crash at one point must leave behind.
struct Case {
    point: &'static str,
    /// `cache.max_size`, to have eviction run.
    max_size: &'static str,
    /// Fetched (and stored) before, by a run without the crash point.
    before: Vec<String>,
    /// The fetch that reaches the point.
    trigger: String,
    /// Whether the trigger's entry survives the crash (committed before the point).
    trigger_kept: bool,
    /// URLs of `before` that the crash's work removed (eviction).
    removed: Vec<String>,
}

async fn crash(case: Case) {
    if skip_in_release() {
        return;
    }
    let mut paths = case.before.clone();
    paths.push(case.trigger.clone());
    let origin = origin(&paths).await;
    let url = |p: &str| origin.url(p);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("crash.toml");
    let write_config = |max_size: &str| {
        let text = format!("[cache]\nmax_size = \"{max_size}\"\nmax_object_size = \"2MiB\"\n");
        std::fs::write(&config, text).unwrap();
    };
    write_config(case.max_size);
    let conf = ["--config", config.to_str().unwrap()];
    let point = case.point;

    // What is stored before: by a run without the crash point (the same write paths).
    let calm = Running::start(&data, &conf);
    for u in &case.before {
        let (_, len) = fetch(calm.addr, &url(u))
            .await
            .expect("fetched before the crash");
        assert_eq!(len, len_of(u));
    }
    calm.stop();

    let armed = Running::start_with_env(&data, &conf, &[("MESHCACHE_FAILPOINT", Path::new(point))]);
    // The fetch that crashes the proxy: it may end early, but never with a short clean
    // body (fetch checks every byte and the length against the declared one below).
    let want = len_of(&case.trigger);
    if let Ok((_, len)) = fetch(armed.addr, &url(&case.trigger)).await {
        assert_eq!(len, want, "a body that ends cleanly is complete");
    }
    died_at(armed, point).await;

    // Reopened after the crash: consistent, orphans collected.
    let after_crash = check(&data, &config).await;
    let before_kept = (case.before.len() - case.removed.len()) as u64;
    assert_eq!(
        after_crash,
        before_kept + u64::from(case.trigger_kept),
        "entries after a crash at {point}"
    );

    // Restarted: every URL complete and correct; kept entries are hits, lost ones misses.
    // (With room enough that refilling what was lost evicts nothing under the test.)
    write_config("1GiB");
    let again = Running::start(&data, &conf);
    for u in &paths {
        let want = len_of(u);
        let (status, len) = fetch(again.addr, &url(u))
            .await
            .unwrap_or_else(|e| panic!("{u} after a crash at {point}: {e}"));
        assert_eq!(len, want, "{u}: the whole body");
        let kept = if *u == case.trigger {
            case.trigger_kept
        } else {
            !case.removed.contains(u)
        };
        if u.starts_with("/obj/") {
            assert_eq!(
                status.contains("hit"),
                kept,
                "{u} after a crash at {point}: {status}"
            );
        }
    }
    again.stop();
    check(&data, &config).await;
}

fn one(point: &'static str, len: u64, kept: bool) -> Case {
    Case {
        point,
        max_size: "1GiB",
        before: vec![format!("/obj/{}", len + 1)],
        trigger: format!("/obj/{len}"),
        trigger_kept: kept,
        removed: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_spool_is_complete() {
    crash(one("spool-complete", BIG, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_spool_is_linked_for_adoption() {
    crash(one("spool-adopted", BIG, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_body_import() {
    crash(one("body-imported", BIG, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_import_of_a_body_filled_in_memory() {
    crash(one("body-imported", SMALL, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_tagging() {
    crash(one("body-tagged", BIG, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_sync() {
    crash(one("body-synced", BIG, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_index_commit() {
    crash(one("index-committed", BIG, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_index_commit_of_a_body_filled_in_memory() {
    crash(one("index-committed", SMALL, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_eviction() {
    // Three bodies of just over 1 MiB fit in 3.5 MiB; the fourth sends the store over,
    // and eviction (down to 90 %) removes the least recently used first — then dies.
    let before: Vec<String> = (1..=3)
        .map(|i| format!("/obj/{}", BIG + i * 4096))
        .collect();
    crash(Case {
        point: "eviction-midway",
        max_size: "3584KiB",
        removed: vec![before[0].clone()],
        before,
        trigger: format!("/obj/{}", BIG + 4 * 4096),
        trigger_kept: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_a_304_refresh() {
    // The first fetch stores the entry (stale at once); the second revalidates, the origin
    // answers 304, and the proxy dies while recording it: the old entry stays.
    let u = format!("/reval/{BIG}");
    crash(Case {
        point: "refresh-midway",
        max_size: "1GiB",
        before: vec![u.clone()],
        trigger: u,
        trigger_kept: false,
        removed: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_committing_a_peers_body() {
    if skip_in_release() {
        return;
    }
    let path = format!("/obj/{BIG}");
    let origin = origin(std::slice::from_ref(&path)).await;
    let url = origin.url(&path);
    let (dirs, _group) = grouped(2);
    let a = Device::start(dirs[0].path(), &[]);
    let (_, len) = fetch(a.addr(), &url)
        .await
        .expect("a fetches from the origin");
    assert_eq!(len, BIG);

    // b gets the body from a, and dies after importing it, before checking and tagging it.
    let b = Device::start_with_env(
        dirs[1].path(),
        &[&a.ticket],
        &[("MESHCACHE_FAILPOINT", Path::new("peer-body-imported"))],
    );
    b.wait_peers(1).await;
    if let Ok((_, len)) = fetch(b.addr(), &url).await {
        assert_eq!(len, BIG, "a body that ends cleanly is complete");
    }
    died_at(b.run, "peer-body-imported").await;
    let config = dirs[1].path().join("test-mesh.toml");
    assert_eq!(check(dirs[1].path(), &config).await, 0, "nothing committed");

    // Restarted, b gets the whole body again, correct, and keeps it.
    let b = Device::start(dirs[1].path(), &[&a.ticket]);
    b.wait_peers(1).await;
    let (status, len) = fetch(b.addr(), &url).await.expect("b after the crash");
    assert_eq!(len, BIG);
    assert!(status.contains("fwd=miss"), "{status}");
    let (status, _) = fetch(b.addr(), &url).await.unwrap();
    assert!(status.contains("hit"), "stored after the restart: {status}");
    b.stop();
    assert_eq!(check(dirs[1].path(), &config).await, 1);
    a.stop();
    assert_eq!(
        origin.hits(&path),
        1,
        "only a fetched from the origin; b from a"
    );
}

/// A partial object (a seek far into a video) killed at `point` while its bytes arrive:
/// after the restart the directory is consistent, the seek again gets every byte right,
/// and it is a hit exactly when the bytes were durable before the crash.
async fn crash_partial(point: &'static str, durable: bool) {
    if skip_in_release() {
        return;
    }
    const LEN: u64 = 4 << 20;
    let origin = Origin::builder()
        .route("/seek.mp4", |seen| {
            crate::partial::ranged(seen, LEN, "\"s1\"", "max-age=600")
        })
        .run()
        .await;
    let url = origin.url("/seek.mp4");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("crash.toml");
    std::fs::write(&config, "[cache]\nrange_offset_limit = \"64KiB\"\n").unwrap();
    let conf = ["--config", config.to_str().unwrap()];
    let seek = |proxy: SocketAddr| {
        let url = url.clone();
        async move {
            let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let uri: http::Uri = url.parse().unwrap();
            let req = http::Request::get(&uri)
                .header("host", uri.authority().unwrap().as_str())
                .header("range", "bytes=3000000-")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let res = send.send_request(req).await.map_err(|e| e.to_string())?;
            let status = res
                .headers()
                .get("cache-status")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            check_pattern(res.into_body(), 3_000_000)
                .await
                .map(|n| (status, n))
        }
    };

    let armed = Running::start_with_env(&data, &conf, &[("MESHCACHE_FAILPOINT", Path::new(point))]);
    if let Ok((_, n)) = seek(armed.addr).await {
        assert_eq!(n, LEN - 3_000_000, "a body that ends cleanly is complete");
    }
    died_at(armed, point).await;
    assert_eq!(
        check(&data, &config).await,
        0,
        "a partial object is not an entry"
    );

    let again = Running::start(&data, &conf);
    let (status, n) = seek(again.addr).await.expect("the seek after the crash");
    assert_eq!(n, LEN - 3_000_000);
    assert_eq!(
        status.contains("hit"),
        durable,
        "after a crash at {point}: {status}"
    );
    assert_eq!(origin.hits("/seek.mp4"), if durable { 1 } else { 2 });
    again.stop();
    check(&data, &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_partial_objects_bytes_are_written_but_not_durable() {
    crash_partial("partial-marked", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_partial_objects_bytes_are_durable() {
    crash_partial("partial-persisted", true).await;
}
