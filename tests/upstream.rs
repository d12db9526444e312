//! An upstream proxy for origin traffic (issue 14): a child meshcache whose `origin.proxy`
//! is a parent meshcache on loopback. Plain misses go through the parent in absolute form
//! and both cache them; HTTPS goes through the parent's `CONNECT` with the origin's
//! certificate verified by the child; `no_proxy` hosts are reached directly; an environment
//! proxy that is the child itself is ignored; the parent down or silent is a 502 / 504 that
//! names it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meshcache::{NoProxyEntry, Upstream, UpstreamOptions};

use crate::https::proxy_ca;
use crate::support::binary::{Running, BIN};
use crate::support::{get, Origin, Reply, TestProxy};

/// The upstream options of a child whose parent listens on `parent`.
fn through(parent: SocketAddr, no_proxy: &[&str]) -> UpstreamOptions {
    let up = Upstream {
        host: parent.ip().to_string(),
        port: parent.port(),
        from: "origin.proxy".into(),
    };
    UpstreamOptions {
        http: Some(up.clone()),
        https: Some(up),
        no_proxy: no_proxy
            .iter()
            .map(|e| NoProxyEntry::parse(e).unwrap())
            .collect(),
    }
}

/// Requests a proxy has counted (its `/status.json`; this request for it included).
async fn requests(proxy: SocketAddr) -> u64 {
    let r = get(proxy, "http://meshcache.local/status.json", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("status.json");
    v["requests"].as_u64().expect("requests")
}

fn via(r: &crate::support::Resp) -> Vec<String> {
    r.headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The environment variables that would send curl (or meshcache) elsewhere.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// `curl -s -D - -x PROXY [--cacert CA] URL` without any proxy variable of the test's
/// environment; the proxy's answer to `CONNECT` is dropped. (ok, head and body, stderr)
async fn curl(proxy: SocketAddr, ca: Option<&Path>, url: &str) -> (bool, String, String) {
    let mut cmd = Command::new("curl");
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    cmd.args(["-s", "-S", "--max-time", "30", "-D", "-", "-x"])
        .arg(format!("http://{proxy}"));
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("curl is installed"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stdout = match stdout.find("\r\n\r\nHTTP/") {
        Some(i) if stdout.starts_with("HTTP/1.1 200") && url.starts_with("https:") => {
            stdout[i + 4..].to_string()
        }
        _ => stdout,
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stdout, stderr)
}

/// The values of a header in a curl response head, in order.
fn header_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// A curl response served from the cache alone (a stored entry, or the fill that has just
/// stored it: `detail=collapsed`).
fn hit(out: &str) -> bool {
    header_values(out, "cache-status")
        .first()
        .is_some_and(|v| v.starts_with("meshcache; hit") && !v.contains(','))
}

#[tokio::test]
async fn a_miss_goes_through_the_parent_and_both_cache_it() {
    let origin = Origin::builder()
        .route("/a", |_| {
            Reply::ok("from the origin").header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let parent = TestProxy::start().await;
    let child = TestProxy::start_with(|s| s.origin.upstream = through(parent.addr(), &[])).await;
    let url = origin.url("/a");

    let first = get(child.addr(), &url, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.text(), "from the origin");
    // RFC 9211: the cache closest to the origin first, then the child.
    assert_eq!(
        first.cache_status(),
        "meshcache; fwd=miss; stored; fwd-status=200, meshcache; fwd=miss; stored; fwd-status=200"
    );
    // Each instance has a Via token of its own: the parent's hop, then the child's.
    let hops = via(&first);
    assert_eq!(hops.len(), 2, "{hops:?}");
    assert!(hops.iter().all(|h| h.starts_with("1.1 meshcache-")));
    assert_ne!(hops[0], hops[1]);
    assert_eq!(origin.hits("/a"), 1);
    // The origin saw the request after both: the child's Via, then the parent's.
    let seen = &origin.seen("/a")[0];
    let seen_via: Vec<&str> = seen
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(seen_via, [hops[1].as_str(), hops[0].as_str()]);

    // The child answers from its cache: the parent is not asked.
    let before = requests(parent.addr()).await;
    let second = get(child.addr(), &url, &[]).await;
    assert!(
        second.cache_status().starts_with("meshcache; hit"),
        "{second:?}"
    );
    assert_eq!(second.text(), "from the origin");
    assert_eq!(
        requests(parent.addr()).await,
        before + 1,
        "only the status request"
    );

    // The parent holds it too: a client of the parent gets a hit.
    let direct = get(parent.addr(), &url, &[]).await;
    assert!(
        direct.cache_status().starts_with("meshcache; hit"),
        "{direct:?}"
    );
    assert_eq!(direct.text(), "from the origin");
    assert_eq!(origin.hits("/a"), 1, "the origin saw exactly one request");
    child.stop().await;
    parent.stop().await;
}

#[tokio::test]
async fn https_goes_through_the_parents_connect_verified_by_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let sub = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let origin_ca = dir.path().join("origin-ca.pem");
    let origin = Origin::builder()
        .route("/x", |_| {
            Reply::ok("secret").header("cache-control", "max-age=600")
        })
        .run_tls(&origin_ca)
        .await;
    let url = origin.https_url("/x");

    // A parent that only tunnels (as a company's proxy does): the child does TLS with the
    // origin, through the tunnel, and verifies it with the origin's CA.
    let tunnel = TestProxy::start_with(|s| s.tls.intercept = false).await;
    let child = TestProxy::start_with(|s| {
        s.origin.extra_roots = vec![origin_ca.clone()];
        s.origin.upstream = through(tunnel.addr(), &[]);
    })
    .await;
    let child_ca = proxy_ca(&child, &sub("child")).await;
    let before = requests(tunnel.addr()).await;
    let (ok, out, err) = curl(child.addr(), Some(&child_ca), &url).await;
    assert!(ok, "{err}");
    assert!(out.ends_with("secret"), "{out}");
    assert_eq!(
        header_values(&out, "cache-status"),
        ["meshcache; fwd=miss; stored; fwd-status=200"],
        "a blind tunnel adds nothing"
    );
    assert_eq!(origin.hits("/x"), 1);
    assert!(
        requests(tunnel.addr()).await >= before + 2,
        "the CONNECT went through the parent"
    );
    let (_, out, _) = curl(child.addr(), Some(&child_ca), &url).await;
    assert!(hit(&out), "{out}");
    assert_eq!(origin.hits("/x"), 1);

    // A child that does not trust the origin's CA refuses it through the tunnel too.
    let untrusting =
        TestProxy::start_with(|s| s.origin.upstream = through(tunnel.addr(), &[])).await;
    let untrusting_ca = proxy_ca(&untrusting, &sub("untrusting")).await;
    let (_, out, _) = curl(untrusting.addr(), Some(&untrusting_ca), &url).await;
    assert!(out.starts_with("HTTP/2 502"), "{out}");
    assert!(out.contains("certificate"), "{out}");

    // A parent that intercepts with a CA the child does not trust is a wrong certificate:
    // the child sees it (end to end verification), the origin sees nothing.
    let intercepting = TestProxy::start().await;
    let fooled = TestProxy::start_with(|s| {
        s.origin.extra_roots = vec![origin_ca.clone()];
        s.origin.upstream = through(intercepting.addr(), &[]);
    })
    .await;
    let fooled_ca = proxy_ca(&fooled, &sub("fooled")).await;
    let (_, out, _) = curl(fooled.addr(), Some(&fooled_ca), &origin.https_url("/y")).await;
    assert!(out.starts_with("HTTP/2 502"), "{out}");
    assert!(out.contains("certificate did not verify"), "{out}");
    assert_eq!(origin.hits("/y"), 0);

    // (That parent has now learned to tunnel localhost blindly for the child, as for any
    // client that refuses its certificate: a fresh parent below.)

    // A child that trusts its parent's CA as well: each caches HTTPS, the parent
    // intercepting (and verifying the origin itself).
    let caching = TestProxy::start_with(|s| s.origin.extra_roots = vec![origin_ca.clone()]).await;
    let parent_ca = proxy_ca(&caching, &sub("parent")).await;
    let trusting = TestProxy::start_with(|s| {
        s.origin.extra_roots = vec![origin_ca.clone(), parent_ca.clone()];
        s.origin.upstream = through(caching.addr(), &[]);
    })
    .await;
    let trusting_ca = proxy_ca(&trusting, &sub("trusting")).await;
    let (ok, out, err) = curl(trusting.addr(), Some(&trusting_ca), &url).await;
    assert!(ok, "{err}");
    assert!(out.ends_with("secret"), "{out}");
    assert_eq!(
        header_values(&out, "cache-status"),
        ["meshcache; fwd=miss; stored; fwd-status=200, meshcache; fwd=miss; stored; fwd-status=200"]
    );
    assert_eq!(origin.hits("/x"), 2);
    let (_, out, _) = curl(caching.addr(), Some(&parent_ca), &url).await;
    assert!(hit(&out), "{out}");
    assert_eq!(origin.hits("/x"), 2);
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly() {
    let origin = Origin::builder()
        .route("/d", |_| Reply::ok("direct"))
        .run()
        .await;
    let parent = TestProxy::start().await;
    for no_proxy in ["127.0.0.0/8", "127.0.0.1", "*"] {
        let child = TestProxy::start_with(|s| {
            s.origin.upstream = through(parent.addr(), &["example.org", no_proxy])
        })
        .await;
        let before = requests(parent.addr()).await;
        let r = get(child.addr(), &origin.url("/d"), &[]).await;
        assert_eq!(r.status, 200, "{no_proxy}: {}", r.text());
        assert_eq!(r.text(), "direct");
        assert_eq!(via(&r).len(), 1, "{no_proxy}: only the child's hop");
        assert_eq!(
            requests(parent.addr()).await,
            before + 1,
            "{no_proxy}: the parent saw nothing but the status request"
        );
        child.stop().await;
    }
    assert_eq!(origin.hits("/d"), 3);
}

#[tokio::test]
async fn the_parent_down_is_a_502_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let origin = Origin::builder()
        .route("/x", |_| Reply::ok("x"))
        .run_tls(&origin_ca)
        .await;
    let plain = Origin::builder()
        .route("/p", |_| Reply::ok("p"))
        .run()
        .await;
    // A port nothing listens on any more.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = TestProxy::start_with(|s| {
        s.origin.extra_roots = vec![origin_ca.clone()];
        s.origin.upstream = through(gone, &[]);
    })
    .await;
    let named = format!("the upstream proxy {gone} refused the connection");
    let r = get(child.addr(), &plain.url("/p"), &[]).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains(&named), "{}", r.text());
    let child_ca = proxy_ca(&child, dir.path()).await;
    let (_, out, _) = curl(child.addr(), Some(&child_ca), &origin.https_url("/x")).await;
    assert!(out.starts_with("HTTP/2 502"), "{out}");
    assert!(out.contains(&named), "{out}");
    assert_eq!((plain.hits("/p"), origin.hits("/x")), (0, 0));
}

#[tokio::test]
async fn a_silent_parent_is_a_504_that_names_it() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let child = TestProxy::start_with(|s| {
        s.origin.connect_timeout = Duration::from_millis(500);
        s.origin.response_header_timeout = Duration::from_secs(1);
        s.origin.upstream = through(at, &[]);
    })
    .await;
    let r = get(child.addr(), "http://origin.example/slow", &[]).await;
    assert_eq!(r.status, 504);
    assert!(
        r.text().contains(&format!(
            "no response from the upstream proxy {at} within 1s"
        )),
        "{}",
        r.text()
    );
    let ca = proxy_ca(&child, dir.path()).await;
    let (_, out, _) = curl(child.addr(), Some(&ca), "https://origin.example/slow").await;
    assert!(out.starts_with("HTTP/2 504"), "{out}");
    assert!(
        out.contains(&format!(
            "the upstream proxy {at} did not answer CONNECT origin.example:443 within 500ms"
        )),
        "{out}"
    );
    held.abort();
}

/// `meshcache run --listen 127.0.0.1:PORT --no-mesh` with `env` (and no other proxy
/// variable), its whole stderr collected.
fn run_binary(dir: &Path, listen: &str, extra: &[&str], env: &[(&str, String)]) -> Running {
    let mut cmd = Command::new(BIN);
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    cmd.env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["run", "--no-mesh", "--listen", listen, "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshcache");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("meshcache exited before listening: {log:#?}"))
            .unwrap();
        log.push(line.clone());
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let log = std::sync::Arc::new(std::sync::Mutex::new(log));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Running {
        child,
        addr,
        mesh: None,
        open: None,
        log,
    }
}

fn logged(r: &Running, needle: &str) -> bool {
    r.log.lock().unwrap().iter().any(|l| l.contains(needle))
}

/// Waits (a few seconds at most) for a log line containing `needle`.
async fn log_line(r: &Running, needle: &str) -> String {
    for _ in 0..300 {
        if let Some(l) = r.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no log line with {needle:?}: {:#?}", r.log.lock().unwrap());
}

#[tokio::test]
async fn an_environment_proxy_that_is_the_binary_itself_is_ignored() {
    let origin = Origin::builder()
        .route("/e", |_| Reply::ok("reached"))
        .run()
        .await;
    let dir = tempfile::tempdir().unwrap();
    // A port the OS picked, freed for the binary: it must know its address in advance.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own = format!("http://localhost:{port}");
    let p = run_binary(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &[],
        &[
            ("http_proxy", own.clone()),
            ("HTTPS_PROXY", format!("0.0.0.0:{port}")),
        ],
    );
    let (ok, out, err) = curl(p.addr, None, &origin.url("/e")).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("reached"));
    assert_eq!(origin.hits("/e"), 1);
    for ignored in [
        format!("ignoring http_proxy={own}: it points at this proxy's own listener"),
        format!("ignoring HTTPS_PROXY=http://0.0.0.0:{port}: it points at this proxy's own"),
    ] {
        assert!(logged(&p, &ignored), "{:#?}", p.log.lock().unwrap());
    }
    assert!(!logged(&p, "through the upstream proxy"));
    p.stop();
}

#[tokio::test]
async fn the_binary_behind_a_parent_binary_with_curl() {
    let origin = Origin::builder()
        .route("/c", |_| {
            Reply::ok("chained").header("cache-control", "max-age=600")
        })
        .route("/d", |_| Reply::ok("d"))
        .run()
        .await;
    let (pdir, cdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let parent = run_binary(pdir.path(), "127.0.0.1:0", &[], &[]);
    let config: PathBuf = cdir.path().join("child.toml");
    std::fs::write(
        &config,
        format!(
            "[origin]\nproxy = \"http://{}\"\nno_proxy = \"direct.example\"\n",
            parent.addr
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let child = run_binary(
        cdir.path(),
        "127.0.0.1:0",
        &["--config", config],
        // The file's origin.proxy wins over the environment.
        &[("http_proxy", "http://127.0.0.1:9".to_string())],
    );
    log_line(
        &child,
        &format!(
            "http:// origins through the upstream proxy {} (origin.proxy)",
            parent.addr
        ),
    )
    .await;

    let (ok, first, err) = curl(child.addr, None, &origin.url("/c")).await;
    assert!(ok, "{err}");
    println!("child -> parent, first:\n{first}");
    assert_eq!(
        header_values(&first, "cache-status"),
        ["meshcache; fwd=miss; stored; fwd-status=200, meshcache; fwd=miss; stored; fwd-status=200"]
    );
    assert_eq!(header_values(&first, "via").len(), 2, "{first}");
    let (_, second, _) = curl(child.addr, None, &origin.url("/c")).await;
    println!("child -> parent, second:\n{second}");
    assert!(hit(&second), "{second}");
    let (_, direct, _) = curl(parent.addr, None, &origin.url("/c")).await;
    assert!(hit(&direct), "{direct}");
    assert_eq!(origin.hits("/c"), 1);
    let line = log_line(&parent, &format!("url={}", origin.url("/c"))).await;
    assert!(
        line.contains("cache=\"miss\"") || line.contains("cache=miss"),
        "{line}"
    );

    // The parent stops: a 502 that names it, and the access log blames the upstream.
    let parent_addr = parent.addr;
    parent.stop();
    let (_, down, _) = curl(child.addr, None, &origin.url("/d")).await;
    assert!(down.starts_with("HTTP/1.1 502"), "{down}");
    assert!(
        down.contains(&format!(
            "the upstream proxy {parent_addr} refused the connection"
        )),
        "{down}"
    );
    let line = log_line(&child, &format!("url={}", origin.url("/d"))).await;
    assert!(
        line.contains("fault=\"upstream\"") || line.contains("fault=upstream"),
        "{line}"
    );
    assert_eq!(origin.hits("/d"), 0);
    child.stop();
}

#[test]
fn config_check_names_a_bad_upstream_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[origin]\nproxy = \"https://proxy.corp:3128\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:9: origin.proxy: \"https://proxy.corp:3128\" is not a proxy URL: only http:// upstream proxies are supported",
            file.display()
        )),
        "{err}"
    );
    std::fs::write(&file, "[origin]\nproxy = \"http://proxy.corp:3128\"\nno_proxy = \"localhost, .corp, 10.0.0.0/8\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
