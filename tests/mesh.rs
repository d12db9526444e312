//! The mesh, tried as a new user would: several `meshcache run` processes on loopback that
//! share a group and know each other by ticket, an in-process origin that counts requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::binary::run;
use crate::support::mesh::{create_group, figure, grouped, Device};
use crate::support::{check_pattern, get, open, pattern, Origin, Reply};

fn expected(len: u64) -> Vec<u8> {
    (0..len).map(pattern).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serves_what_another_fetched_and_keeps_serving_with_the_origin_gone() {
    let origin = Origin::builder()
        .route("/photo.jpg", |_| {
            Reply::generated(300_000)
                .header("cache-control", "max-age=3600")
                .header("content-type", "image/jpeg")
        })
        .run()
        .await;
    let url = origin.url("/photo.jpg");
    let (dirs, _) = grouped(3);
    let a = Device::start(dirs[0].path(), &[]);
    let b = Device::start(dirs[1].path(), &[&a.ticket]);
    // C knows only A; it learns B from A.
    let c = Device::start(dirs[2].path(), &[&a.ticket]);
    a.wait_peers(2).await;
    b.wait_peers(2).await;
    c.wait_peers(2).await;

    let first = get(a.addr(), &url, &[]).await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status().contains("fwd=miss"),
        "{}",
        first.cache_status()
    );
    assert_eq!(first.body, expected(300_000));
    assert_eq!(origin.hits("/photo.jpg"), 1);

    let from_a = get(b.addr(), &url, &[]).await;
    assert_eq!(from_a.status, 200);
    assert!(
        from_a
            .cache_status()
            .contains(&format!("peer=\"{}\"", a.id)),
        "B's answer names A: {}",
        from_a.cache_status()
    );
    assert_eq!(from_a.body, expected(300_000));
    assert_eq!(
        origin.hits("/photo.jpg"),
        1,
        "the origin still saw one request"
    );
    // B stored it: the next one is a plain hit.
    let again = get(b.addr(), &url, &[]).await;
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );

    drop(origin);
    let offline = get(c.addr(), &url, &[]).await;
    assert_eq!(offline.status, 200);
    let cs = offline.cache_status().to_string();
    assert!(
        cs.contains(&format!("peer=\"{}\"", a.id)) || cs.contains(&format!("peer=\"{}\"", b.id)),
        "with the origin gone, C's answer comes from A or B: {cs}"
    );
    assert_eq!(offline.body, expected(300_000));
    assert!(b.figure("bytes_from_peers").await >= 300_000);
    assert!(a.figure("mesh_bytes_to_peers").await >= 300_000);
    for d in [a, b, c] {
        d.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_authorized_responses_are_never_served_by_a_peer() {
    let origin = Origin::builder()
        .route("/private", |_| {
            Reply::ok(vec![b'p'; 40_000]).header("cache-control", "private, max-age=600")
        })
        .route("/account", |_| {
            Reply::ok(vec![b'a'; 40_000]).header("cache-control", "max-age=600")
        })
        .route("/set-cookie", |_| {
            Reply::ok(vec![b'c'; 40_000])
                .header("cache-control", "max-age=600")
                .header("set-cookie", "session=secret")
        })
        .run()
        .await;
    let (dirs, _) = grouped(2);
    let a = Device::start(dirs[0].path(), &[]);
    let b = Device::start(dirs[1].path(), &[&a.ticket]);
    a.wait_peers(1).await;
    b.wait_peers(1).await;

    // A's user fetches all three; A keeps the private ones for its own user.
    let private = get(a.addr(), &origin.url("/private"), &[]).await;
    assert!(
        private.cache_status().contains("stored"),
        "{}",
        private.cache_status()
    );
    let auth = [("authorization", "Bearer alice")];
    get(a.addr(), &origin.url("/account"), &auth).await;
    get(a.addr(), &origin.url("/set-cookie"), &[]).await;
    // Each is stored once its response has ended (the commit follows the last byte).
    a.wait_figure("stored_variants", 2).await;
    let again = get(a.addr(), &origin.url("/private"), &[]).await;
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
    let again = get(a.addr(), &origin.url("/account"), &auth).await;
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );

    for path in ["/private", "/account", "/set-cookie"] {
        let r = get(b.addr(), &origin.url(path), &[]).await;
        assert!(
            !r.cache_status().contains("peer="),
            "{path} must not come from a peer: {}",
            r.cache_status()
        );
        assert_eq!(origin.hits(path), 2, "{path}: B went to the origin");
    }
    assert_eq!(figure(&b.status().await, "peer_hits"), 0);
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_outside_the_group_gets_neither_lookups_nor_bodies() {
    let body_len = 100_000;
    let origin = Origin::builder()
        .route("/doc", move |_| {
            Reply::generated(body_len).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    create_group(dirs[0].path());
    // The outsider is in a group of its own and knows A's ticket.
    create_group(dirs[1].path());
    let a = Device::start(dirs[0].path(), &[]);
    get(a.addr(), &origin.url("/doc"), &[]).await;
    let outsider = Device::start(dirs[1].path(), &[&a.ticket]);
    let r = get(outsider.addr(), &origin.url("/doc"), &[]).await;
    assert!(!r.cache_status().contains("peer="), "{}", r.cache_status());
    assert_eq!(origin.hits("/doc"), 2);
    assert_eq!(outsider.figure("mesh_peers_connected").await, 0);
    assert!(
        a.figure("mesh_refused").await >= 1,
        "A refused the outsider"
    );

    // A stranger that knows the body's hash cannot fetch it over the blobs protocol.
    let hash = iroh_blobs::Hash::new(expected(body_len));
    let store = iroh_blobs::store::mem::MemStore::new();
    let ep = crate::support::mesh::loopback_endpoint(iroh::SecretKey::generate()).await;
    let addr = mesh::parse_peer(&a.ticket).unwrap();
    let conn = ep.connect(addr, iroh_blobs::ALPN).await.unwrap();
    let fetched = store.remote().fetch(conn, hash).await;
    assert!(fetched.is_err(), "a stranger fetched a body: {fetched:?}");
    assert!(!matches!(
        store.blobs().status(hash).await,
        Ok(iroh_blobs::api::proto::BlobStatus::Complete { .. })
    ));
    ep.close().await;
    a.stop();
    outsider.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_devices_asking_at_once_cost_the_origin_one_request() {
    carriage(std::time::Duration::ZERO).await;
}

/// Requests a few milliseconds apart: each device may ask another before that one has
/// started looking (regression: both then went to the origin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_devices_asking_a_few_milliseconds_apart_cost_the_origin_one_request() {
    carriage(std::time::Duration::from_millis(3)).await;
}

/// N devices whose clients ask for the same new 5 MiB object, the k-th `stagger * k`
/// after the first; the origin must see one request.
async fn carriage(stagger: std::time::Duration) {
    const N: usize = 10;
    const LEN: u64 = 5 << 20;
    let origin = Origin::builder()
        .route("/new-video", |_| {
            Reply::generated(LEN).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let (dirs, _) = grouped(N);
    let first = Device::start(dirs[0].path(), &[]);
    let mut devices = vec![first];
    for d in &dirs[1..] {
        let t = devices[0].ticket.clone();
        devices.push(Device::start(d.path(), &[&t]));
    }
    for d in &devices {
        d.wait_peers(N as u64 - 1).await;
    }
    let url = origin.url("/new-video");
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let start = tokio::time::Instant::now();
    for (k, d) in devices.iter().enumerate() {
        let (addr, url, done) = (d.addr(), url.clone(), done.clone());
        let at = start + stagger * k as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let (parts, body) = open(addr, &url).await;
            assert_eq!(parts.status, 200);
            let n = check_pattern(body, 0).await.expect("right bytes");
            assert_eq!(n, LEN);
            done.fetch_add(1, Ordering::Relaxed);
            parts
                .headers
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(done.load(Ordering::Relaxed), N);
    assert_eq!(
        origin.hits("/new-video"),
        1,
        "ten devices, one download: {statuses:#?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| s.contains("peer=")).count(),
        N - 1,
        "{statuses:#?}"
    );
    for d in devices {
        d.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_file_reaches_a_friend_by_ticket_and_through_a_proxy() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let sharer = Device::start(dirs[0].path(), &[]);
    let file = dirs[0].path().join("report.pdf");
    let content: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let proxy_addr = sharer.addr().to_string();
    let out = run(&["share", file.to_str().unwrap(), "--proxy", &proxy_addr]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ticket = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(ticket.starts_with("meshshare"), "{ticket}");
    // The QR code it printed (on stderr: stdout is the ticket alone) reads as the ticket.
    let notes = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        crate::support::qr::decode_terminal(&notes),
        ticket,
        "{notes}"
    );

    // The friend's command line, with no proxy of its own.
    let target = dirs[1].path().join("got.pdf");
    let got = run(&["get", &ticket, "-o", target.to_str().unwrap()]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(std::fs::read(&target).unwrap(), content);
    // The same with the share URL in place of the ticket, in both its forms.
    for (i, url) in [
        format!("http://{proxy_addr}/share/{ticket}"),
        format!("meshcache.local/share/{ticket}"),
    ]
    .iter()
    .enumerate()
    {
        let target = dirs[1].path().join(format!("by-url-{i}.pdf"));
        let got = run(&["get", url, "-o", target.to_str().unwrap()]);
        assert!(
            got.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(std::fs::read(&target).unwrap(), content, "{url}");
    }

    // The friend's proxy (in no group at all) opens the ticket as a URL.
    let friend = Device::start(dirs[1].path(), &[]);
    let r = get(
        friend.addr(),
        &format!("http://meshcache.local/share/{ticket}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/pdf"));
    assert!(r
        .header("content-disposition")
        .unwrap()
        .contains("report.pdf"));
    assert_eq!(r.body, content);
    // A browser gets the ticket's page: the file's name, a download link, and the ticket
    // as a QR code that reads back as the ticket.
    let html = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    let page = get(
        sharer.addr(),
        &format!("http://meshcache.local/share/{ticket}"),
        &html,
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let text = page.text();
    assert!(
        text.contains("report.pdf") && text.contains("href=\"?download\""),
        "{text}"
    );
    assert!(!text.contains("<script"), "{text}");
    assert_eq!(crate::support::qr::decode_svg(&text), ticket);
    // ... whose link is the file.
    let r = get(
        friend.addr(),
        &format!("http://meshcache.local/share/{ticket}?download"),
        &html,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, content);
    // A ticket that is not one is a clear 400.
    let bad = get(
        friend.addr(),
        "http://meshcache.local/share/meshsharexyz",
        &[],
    )
    .await;
    assert_eq!(bad.status, 400);
    sharer.stop();
    friend.stop();
}

/// `d` fetches `url` (`len` bytes of the pattern, checked) and has stored it: the body
/// reaches the client as the store commits, so this waits (bounded) until `d` answers it
/// `only-if-cached`.
async fn fetched_and_stored(d: &Device, url: &str, len: u64) {
    let (parts, body) = open(d.addr(), url).await;
    assert_eq!(parts.status, 200);
    assert_eq!(check_pattern(body, 0).await.unwrap(), len);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !get(d.addr(), url, &[("cache-control", "only-if-cached")])
        .await
        .status
        .is_success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{url} was never stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_far_into_a_peers_video_moves_only_those_bytes() {
    const LEN: u64 = 40 << 20;
    let origin = Origin::builder()
        .route("/film.mp4", |_| {
            Reply::generated(LEN).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let url = origin.url("/film.mp4");
    let (dirs, _) = grouped(2);
    let a = Device::start(dirs[0].path(), &[]);
    let b = Device::start(dirs[1].path(), &[&a.ticket]);
    a.wait_peers(1).await;
    b.wait_peers(1).await;
    fetched_and_stored(&a, &url, LEN).await;

    // B's player seeks to 30 MB: beyond range_offset_limit, so only the range is wanted.
    let r = get(b.addr(), &url, &[("range", "bytes=30000000-30000999")]).await;
    assert_eq!(r.status, 206, "{}", r.cache_status());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 30000000-30000999/{LEN}").as_str())
    );
    let want: Vec<u8> = (30_000_000..30_001_000).map(pattern).collect();
    assert_eq!(r.body, want);
    assert!(
        r.cache_status().contains("peer-range") && r.cache_status().contains(&a.id),
        "{}",
        r.cache_status()
    );
    assert_eq!(
        origin.hits("/film.mp4"),
        1,
        "the origin was not asked again"
    );
    let sent = a.figure("mesh_bytes_to_peers").await;
    assert!(
        (1000..1 << 20).contains(&sent),
        "A sent {sent} bytes for a 1000-byte range"
    );
    a.stop();
    b.stop();
}

/// A seek a peer answers is kept as a partial object (the next seek inside it is a hit),
/// and a hole next to it is filled from the same peer: the origin is asked once in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_from_a_peer_is_kept_and_its_hole_filled_from_the_peer() {
    const LEN: u64 = 24 << 20;
    let origin = Origin::builder()
        .route("/clip.mp4", |_| {
            Reply::generated(LEN)
                .header("cache-control", "max-age=600")
                .header("etag", "\"clip-1\"")
        })
        .run()
        .await;
    let url = origin.url("/clip.mp4");
    let (dirs, _) = grouped(2);
    let a = Device::start(dirs[0].path(), &[]);
    let b = Device::start(dirs[1].path(), &[&a.ticket]);
    a.wait_peers(1).await;
    b.wait_peers(1).await;
    fetched_and_stored(&a, &url, LEN).await;
    let expected = |r: std::ops::Range<u64>| r.map(pattern).collect::<Vec<u8>>();

    // B seeks to 20 MB (beyond range_offset_limit): A sends the bytes, B keeps them.
    let r = get(b.addr(), &url, &[("range", "bytes=20000000-20999999")]).await;
    assert_eq!(r.status, 206, "{}", r.cache_status());
    assert_eq!(r.body, expected(20_000_000..21_000_000));
    assert!(
        r.cache_status()
            .contains("fwd=partial; stored; detail=peer-range")
            && r.cache_status().contains(&a.id),
        "{}",
        r.cache_status()
    );
    // Seek again inside it: B's own copy.
    let r = get(b.addr(), &url, &[("range", "bytes=20500000-20500999")]).await;
    assert_eq!(r.cache_status(), "meshcache; hit; detail=partial");
    assert_eq!(r.body, expected(20_500_000..20_501_000));
    // Back a little: the hole before what B holds comes from A, the rest from B's copy.
    let r = get(b.addr(), &url, &[("range", "bytes=19500000-20099999")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, expected(19_500_000..20_100_000));
    assert!(
        r.cache_status().contains("peer-range"),
        "{}",
        r.cache_status()
    );
    assert_eq!(
        origin.hits("/clip.mp4"),
        1,
        "the origin was asked once in all"
    );
    a.stop();
    b.stop();
}

/// Regression (issue 9): `max-age=18446744073709551615` in an attested entry overflowed the
/// time arithmetic when a peer's copy was judged, and the request through the mesh failed.
/// Now the lifetime is clamped (a century) and the body comes from the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_max_age_from_a_peer_is_clamped_not_a_failure() {
    let origin = Origin::builder()
        .route("/forever", |_| {
            Reply::generated(50_000).header("cache-control", "max-age=18446744073709551615")
        })
        .run()
        .await;
    let url = origin.url("/forever");
    let (dirs, _) = grouped(2);
    let a = Device::start(dirs[0].path(), &[]);
    let b = Device::start(dirs[1].path(), &[&a.ticket]);
    b.wait_peers(1).await;
    let first = get(a.addr(), &url, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, expected(50_000));
    let again = get(a.addr(), &url, &[]).await;
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );

    let from_a = get(b.addr(), &url, &[]).await;
    assert_eq!(from_a.status, 200, "{}", from_a.text());
    assert!(
        from_a
            .cache_status()
            .contains(&format!("peer=\"{}\"", a.id)),
        "{}",
        from_a.cache_status()
    );
    assert_eq!(from_a.body, expected(50_000));
    let stored = get(b.addr(), &url, &[]).await;
    assert!(
        stored.cache_status().contains("hit"),
        "{}",
        stored.cache_status()
    );
    assert_eq!(origin.hits("/forever"), 1);
    a.stop();
    b.stop();
}
