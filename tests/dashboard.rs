//! The status page as a live dashboard, in headless Chromium: its figures appear, and its
//! script follows traffic made while the page is open; a passenger's page runs on the
//! public summary alone; a device in a group shows what its peer gave it, and the page is
//! saved as a screenshot.
//!
//! "While the page is open" is made exact, not a matter of timing: Chromium reaches the
//! proxy through a [`Relay`] that holds each request for `/status.json` until the test has
//! made that step's traffic. The page polls one request at a time, and with
//! `--virtual-time-budget` Chromium's clock stands still while a request is pending, so the
//! test decides what happens between two polls, and the DOM Chromium dumps at the end is
//! what the script made of the last ones. Whatever the page shows that differs from what
//! the server rendered before the first poll was written by the script.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::support::client::tcp_from;
use crate::support::mesh::{grouped, Device};
use crate::support::{get, Origin, Reply, TestProxy};

use crate::browser::{chromium_missing, CHROMIUM};
const PAGE: &str = "http://meshcache.local/";

/// Loads the dashboard through `proxy` in a fresh profile, lets its script run for
/// `budget_ms` of virtual time (a poll every 2 s; time stands still while a poll is held),
/// and returns the DOM; with `screenshot`, also saves the window (1200×900) there.
fn load(proxy: SocketAddr, budget_ms: u32, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1200,900",
    ])
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--proxy-server=http://{proxy}"));
    if let Some(path) = screenshot {
        cmd.arg(format!("--screenshot={}", path.display()));
    }
    let out = cmd
        .arg("--dump-dom")
        .arg(PAGE)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs [`load`] off the test's runtime, so the relay and the traffic go on meanwhile.
fn spawn_load(
    proxy: SocketAddr,
    budget_ms: u32,
    screenshot: Option<PathBuf>,
) -> tokio::task::JoinHandle<String> {
    tokio::task::spawn_blocking(move || load(proxy, budget_ms, screenshot.as_deref()))
}

/// The text of the element with this id in a DOM Chromium dumped (up to its first child
/// element; the elements the script writes to hold text only).
fn text_of(dom: &str, id: &str) -> String {
    let key = format!(" id=\"{id}\"");
    let at = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no element #{id} in the page: {dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').expect("the element's tag ends") + 1;
    let end = rest[start..].find('<').unwrap_or(rest.len() - start);
    rest[start..start + end].to_string()
}

/// An attribute of the element with this id.
fn attr_of(dom: &str, id: &str, name: &str) -> String {
    let key = format!(" id=\"{id}\"");
    let at = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no element #{id} in the page: {dom}"));
    let tag = &dom[dom[..at].rfind('<').unwrap()..at + dom[at..].find('>').unwrap()];
    let key = format!(" {name}=\"");
    match tag.find(&key) {
        Some(i) => tag[i + key.len()..].split('"').next().unwrap().to_string(),
        None => String::new(),
    }
}

/// The polls the page's script made (the script counts them on `#live`).
fn polls(dom: &str) -> u64 {
    attr_of(dom, "live", "data-polls").parse().unwrap_or(0)
}

/// A TCP relay between Chromium and the proxy, from the address `from` (the proxy tells
/// admins from passengers by address), that holds every request for `/status.json` until
/// the test releases it: [`Relay::next_poll`] hands the test the held poll; dropping what
/// it returned lets the poll through. After [`Relay::release_all`], polls pass freely.
struct Relay {
    addr: SocketAddr,
    polls: mpsc::Receiver<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(proxy: SocketAddr, from: IpAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, polls) = mpsc::channel(4);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = tcp_from(proxy, from).await;
                tokio::spawn(relay(client, upstream, tx.clone()));
            }
        });
        Relay { addr, polls, task }
    }

    /// Waits for the page's next poll and holds it until the returned value is dropped.
    async fn next_poll(&mut self) -> oneshot::Sender<()> {
        tokio::time::timeout(Duration::from_secs(60), self.polls.recv())
            .await
            .expect("the page polls /status.json (is its script running?)")
            .expect("the relay runs")
    }

    /// From now on, polls pass without being held.
    fn release_all(&mut self) {
        self.polls.close();
        while let Ok(held) = self.polls.try_recv() {
            drop(held);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection. The answers flow freely; the requests go one head at a time (the page
/// sends only GETs, without bodies), each `/status.json` one held until the test lets it
/// through. Only requests for the proxy's own pages are carried: Chromium's own requests
/// (for its updates, its clock, …) end the connection, so that they never count as
/// traffic on the dashboard, with or without the internet.
async fn relay(client: TcpStream, upstream: TcpStream, polls: mpsc::Sender<oneshot::Sender<()>>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_proxy, mut to_proxy) = upstream.into_split();
    let answers = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_proxy, &mut to_client).await;
        let _ = to_client.shutdown().await;
    });
    let mut buf = vec![0u8; 16 << 10];
    let mut pending: Vec<u8> = Vec::new();
    'conn: loop {
        let n = match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            if !head.starts_with(b"GET http://meshcache.local/") {
                break 'conn;
            }
            if head.starts_with(b"GET http://meshcache.local/status.json ") {
                let (hold, held) = oneshot::channel();
                if polls.send(hold).await.is_ok() {
                    let _ = held.await;
                }
            }
            if to_proxy.write_all(&head).await.is_err() {
                break 'conn;
            }
        }
        if pending.len() > 64 << 10 {
            break;
        }
    }
    let _ = to_proxy.shutdown().await;
    answers.abort();
}

/// `/status.json` of the proxy at `addr` (as an admin), parsed.
async fn status(addr: SocketAddr) -> serde_json::Value {
    let text = get(addr, "http://meshcache.local/status.json", &[])
        .await
        .text();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits until the proxy's figure `name` is `n` (bytes are counted as a response body
/// ends, a moment after the client has it all); panics after 30 s.
async fn wait_figure(addr: SocketAddr, name: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = status(addr).await;
        if v[name].as_u64() == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never reached {n}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An origin with `/a.bin`…: [`BODY`] bytes each, fresh for an hour, each body its own (equal
/// bodies are stored once, and a peer would have nothing to send for the second).
async fn origin() -> Origin {
    let mut b = Origin::builder();
    for name in ["a", "b", "c", "d", "e"] {
        let body = bytes::Bytes::from(vec![name.as_bytes()[0]; (BODY) as usize]);
        b = b.route(&format!("/{name}.bin"), move |_| {
            Reply::ok(body.clone()).header("cache-control", "max-age=3600")
        });
    }
    b.run().await
}
/// Every body: 100 KiB.
const BODY: u64 = 100 << 10;

/// GETs `path` from `origin` through the proxy at `proxy`; returns its `Cache-Status`.
async fn fetch(proxy: SocketAddr, origin: &Origin, path: &str) -> String {
    let r = get(proxy, &origin.url(path), &[]).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert_eq!(r.body.len() as u64, BODY, "{path}");
    r.cache_status().to_string()
}

/// No figure the script wrote reads `NaN`, `undefined` or `null`.
fn assert_clean(dom: &str) {
    let body = &dom[..dom.find("<script>").unwrap_or(dom.len())];
    for bad in ["NaN", "undefined", "null", "Infinity"] {
        assert!(!body.contains(bad), "the page shows {bad}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_its_figures_and_follows_traffic_while_it_is_open() {
    if let Some(why) = chromium_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let origin = origin().await;
    let p = TestProxy::start().await;
    let mut relay = Relay::start(p.addr(), "127.0.0.1".parse().unwrap()).await;

    // Before any traffic: the figures are there, and the script keeps them current.
    relay.release_all();
    let dom = spawn_load(relay.addr, 5000, None).await.unwrap();
    assert!(polls(&dom) >= 1, "the script polled: {dom}");
    assert!(
        text_of(&dom, "live").starts_with("live · updated"),
        "{}",
        text_of(&dom, "live")
    );
    assert_eq!(text_of(&dom, "ratio"), "–", "nothing answered yet");
    assert_eq!(text_of(&dom, "saved"), "0 B");
    assert_eq!(text_of(&dom, "from-origin"), "0 B");
    assert_eq!(text_of(&dom, "stored"), "0 B");
    assert_eq!(text_of(&dom, "limit"), "10.0 GiB");
    assert_eq!(text_of(&dom, "nearby"), "off", "no mesh in this proxy");
    assert_eq!(attr_of(&dom, "area-origin", "d"), "", "no traffic, no area");
    assert!(dom.contains("id=\"connections\""), "an admin's page");
    assert_clean(&dom);

    // Traffic while the page is open: a miss before its first poll, three hits before the
    // second; later polls pass freely.
    let mut relay = Relay::start(p.addr(), "127.0.0.1".parse().unwrap()).await;
    let chromium = spawn_load(relay.addr, 9000, None);
    let first = relay.next_poll().await;
    assert!(fetch(p.addr(), &origin, "/a.bin")
        .await
        .contains("fwd=miss"));
    crate::caching::settle(&p).await;
    wait_figure(p.addr(), "bytes_from_origin", BODY).await;
    drop(first);
    let second = relay.next_poll().await;
    for _ in 0..3 {
        assert!(fetch(p.addr(), &origin, "/a.bin").await.contains("hit"));
    }
    wait_figure(p.addr(), "bytes_saved", 3 * BODY).await;
    drop(second);
    relay.release_all();
    let dom = chromium.await.unwrap();

    assert!(polls(&dom) >= 3, "{dom}");
    assert_eq!(text_of(&dom, "ratio"), "75%", "3 of 4 without the internet");
    assert_eq!(text_of(&dom, "answered"), "3");
    assert_eq!(text_of(&dom, "proxied"), "4");
    assert_eq!(text_of(&dom, "saved"), "300.0 KiB");
    assert_eq!(text_of(&dom, "internet"), "100.0 KiB");
    assert_eq!(text_of(&dom, "from-cache"), "300.0 KiB");
    assert_eq!(text_of(&dom, "pct-cache"), "75%");
    assert_eq!(text_of(&dom, "from-origin"), "100.0 KiB");
    assert_eq!(text_of(&dom, "pct-origin"), "25%");
    assert_eq!(text_of(&dom, "from-peers"), "0 B");
    assert_eq!(attr_of(&dom, "bar-cache", "style"), "width: 75%;");
    assert_eq!(attr_of(&dom, "bar-origin", "style"), "width: 25%;");
    assert_eq!(text_of(&dom, "stored"), "100.0 KiB");
    assert_eq!(text_of(&dom, "urls"), "1");
    assert_eq!(text_of(&dom, "f-hits"), "3");
    assert_eq!(text_of(&dom, "f-by-source"), "3 / 0 / 1");
    // The chart: the miss's bytes in one interval, the hits' in the next.
    for source in ["cache", "origin"] {
        assert!(
            attr_of(&dom, &format!("area-{source}"), "d").starts_with('M'),
            "an area for {source}: {dom}"
        );
    }
    // The highest step: 300 KiB of hits in one interval of 2 s (of virtual time).
    let peak = text_of(&dom, "chart-peak");
    let kib: f64 = peak
        .strip_prefix("peak ")
        .and_then(|p| p.strip_suffix(" KiB/s"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{peak}"));
    assert!((140.0..=160.0).contains(&kib), "{peak}");
    assert_clean(&dom);
    drop(relay);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passengers_dashboard_runs_on_the_public_summary_and_follows_traffic_too() {
    if let Some(why) = chromium_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let origin = origin().await;
    let p = TestProxy::start().await;
    // 127.0.0.2 is not in admin.allow: a passenger.
    let mut relay = Relay::start(p.addr(), "127.0.0.2".parse().unwrap()).await;
    let chromium = spawn_load(relay.addr, 7000, None);
    let first = relay.next_poll().await;
    fetch(p.addr(), &origin, "/b.bin").await;
    crate::caching::settle(&p).await;
    fetch(p.addr(), &origin, "/b.bin").await;
    wait_figure(p.addr(), "bytes_saved", BODY).await;
    drop(first);
    relay.release_all();
    let dom = chromium.await.unwrap();

    assert!(polls(&dom) >= 2, "the script polled: {dom}");
    assert_eq!(text_of(&dom, "ratio"), "50%");
    assert_eq!(text_of(&dom, "saved"), "100.0 KiB");
    assert_eq!(text_of(&dom, "from-origin"), "100.0 KiB");
    assert_eq!(text_of(&dom, "f-by-source"), "1 / 0 / 1");
    assert!(attr_of(&dom, "area-cache", "d").starts_with('M'), "{dom}");
    assert_clean(&dom);
    // None of an admin's sections, and none of their figures reached the page.
    for admin in [
        "id=\"connections\"",
        "id=\"peers\"",
        "This device",
        "mesh_id",
    ] {
        assert!(!dom.contains(admin), "a passenger sees {admin}: {dom}");
    }
    drop(relay);
    p.stop().await;
}

/// Where the screenshot goes: `target/tmp/dashboard.png`, and `docs/dashboard.png` (the one
/// the README shows) when `MESHCACHE_UPDATE_SCREENSHOT` is set, so that an ordinary run
/// leaves the working tree alone.
fn screenshot_paths() -> (PathBuf, Option<PathBuf>) {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let docs = std::env::var_os("MESHCACHE_UPDATE_SCREENSHOT")
        .map(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png"));
    (tmp, docs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_in_a_group_shows_its_peer_live_and_what_came_from_it() {
    if let Some(why) = chromium_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let origin = origin().await;
    let (dirs, _) = grouped(2);
    // B's page is opened before A is around; A arrives while it is open.
    let b = Device::start(dirs[1].path(), &[]);
    let mut relay = Relay::start(b.addr(), "127.0.0.1".parse().unwrap()).await;
    let (shot, docs) = screenshot_paths();
    let _ = std::fs::remove_file(&shot);
    // Eight held polls (one every 2 s of virtual time), then two more.
    let chromium = spawn_load(relay.addr, 21_000, Some(shot.clone()));
    let mut saved = 0;
    let mut from_origin = 0;

    // Each step happens between two polls of B's page.
    let hold = relay.next_poll().await;
    assert!(fetch(b.addr(), &origin, "/a.bin")
        .await
        .contains("fwd=miss"));
    from_origin += BODY;
    wait_figure(b.addr(), "bytes_from_origin", from_origin).await;
    drop(hold);

    let hold = relay.next_poll().await;
    let a = Device::start(dirs[0].path(), &[&b.ticket]);
    a.wait_peers(1).await;
    b.wait_peers(1).await;
    for path in ["/b.bin", "/c.bin", "/d.bin"] {
        assert!(fetch(a.addr(), &origin, path).await.contains("fwd=miss"));
    }
    // B asks A once A's catalog says it holds them.
    b.wait_figure("mesh_catalog_keys", 3).await;
    drop(hold);

    let hold = relay.next_poll().await;
    for path in ["/b.bin", "/c.bin"] {
        let cs = fetch(b.addr(), &origin, path).await;
        assert!(cs.contains(&format!("peer=\"{}\"", a.id)), "{path}: {cs}");
        saved += BODY;
    }
    wait_figure(b.addr(), "bytes_saved", saved).await;
    drop(hold);

    // Hits, a little more each time, and one more body from A.
    for (step, hits) in [(0, 2), (1, 4), (2, 1), (3, 6), (4, 3)] {
        let hold = relay.next_poll().await;
        for _ in 0..hits {
            assert!(fetch(b.addr(), &origin, "/a.bin").await.contains("hit"));
            saved += BODY;
        }
        if step == 2 {
            let cs = fetch(b.addr(), &origin, "/d.bin").await;
            assert!(cs.contains("peer="), "{cs}");
            saved += BODY;
            assert!(fetch(b.addr(), &origin, "/e.bin")
                .await
                .contains("fwd=miss"));
            from_origin += BODY;
        }
        wait_figure(b.addr(), "bytes_saved", saved).await;
        drop(hold);
    }
    relay.release_all();
    let dom = chromium.await.unwrap();

    let v = status(b.addr()).await;
    assert_eq!(v["bytes_from_origin"].as_u64(), Some(from_origin), "{v}");
    assert_eq!(text_of(&dom, "nearby"), "1", "A is connected: {dom}");
    assert_eq!(
        text_of(&dom, "from-peers"),
        "300.0 KiB",
        "three bodies from A"
    );
    assert_eq!(
        text_of(&dom, "saved"),
        "1.9 MiB",
        "16 hits and 3 bodies from A"
    );
    assert_eq!(text_of(&dom, "ratio"), "90%", "19 of 21");
    assert!(attr_of(&dom, "area-peers", "d").starts_with('M'), "{dom}");
    // The peer table, which had no row when the page was loaded, lists A now, with what it
    // gave in human units.
    let table = &dom[dom.find("id=\"peers\"").expect("the peer table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.contains(&a.id), "A in the peer table: {table}");
    assert!(table.contains("connected"), "{table}");
    assert!(
        table.contains("300.0 KiB"),
        "bytes taken from A: {table}\n{}",
        v["mesh_peer_table"]
    );
    assert_clean(&dom);

    let png = std::fs::read(&shot).expect("chromium saved the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(png.len() < 300 << 10, "{} bytes", png.len());
    // The PNG's width and height (IHDR): the window's.
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), (1200, 900));
    if let Some(docs) = docs {
        std::fs::copy(&shot, &docs).expect("copy the screenshot into docs/");
        eprintln!("saved {}", docs.display());
    }
    drop(relay);
    a.stop();
    b.stop();
}
