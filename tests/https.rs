use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{get, Origin, Reply, TestProxy};

/// Fetches the proxy's CA from its admin page, as a user would, into `dir/meshcache-ca.pem`.
pub async fn proxy_ca(p: &TestProxy, dir: &Path) -> PathBuf {
    let r = get(p.addr(), "http://meshcache.local/ca.pem", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("-----BEGIN CERTIFICATE-----"));
    let path = dir.join("meshcache-ca.pem");
    std::fs::write(&path, &r.body).unwrap();
    path
}

struct Curl {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `curl -v -x PROXY --cacert CA [args] URL` in a blocking task.
async fn curl(proxy: SocketAddr, ca: &Path, args: &[&str], url: &str) -> Curl {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-v", "--max-time", "30", "-D", "-", "-x"])
        .arg(format!("http://{proxy}"))
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("curl is installed"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Drop the proxy's answer to CONNECT: keep the final response only.
    let stdout = match stdout.rfind("\r\n\r\nHTTP/") {
        Some(i) if stdout.starts_with("HTTP/1.1 200") && !stdout[..i].contains("cache-status") => {
            stdout[i + 4..].to_string()
        }
        _ => stdout,
    };
    Curl {
        ok: out.status.success(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn cache_status(resp: &str) -> Option<String> {
    resp.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("cache-status"))
            .map(|(_, v)| v.trim().to_string())
    })
}

#[tokio::test]
async fn https_through_the_proxy_is_intercepted_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let origin = Origin::builder()
        .route("/x", |_| {
            Reply::ok("secret sauce").header("cache-control", "max-age=600")
        })
        .run_tls(&origin_ca)
        .await;
    let p = TestProxy::start_with(|s| s.origin.extra_roots = vec![origin_ca.clone()]).await;
    let ca = proxy_ca(&p, dir.path()).await;
    let url = origin.https_url("/x");

    let first = curl(p.addr(), &ca, &["--http1.1"], &url).await;
    assert!(first.ok, "{}", first.stderr);
    assert!(first.stdout.starts_with("HTTP/1.1 200"), "{}", first.stdout);
    assert!(first.stdout.ends_with("secret sauce"), "{}", first.stdout);
    assert!(
        cache_status(&first.stdout).unwrap().contains("fwd=miss"),
        "{}",
        first.stdout
    );
    // The certificate the client saw was issued by the meshcache CA.
    assert!(
        first.stderr.contains("issuer: ") && first.stderr.contains("meshcache"),
        "{}",
        first.stderr
    );
    crate::caching::settle(&p).await;

    let second = curl(p.addr(), &ca, &[], &url).await;
    assert_eq!(
        cache_status(&second.stdout).as_deref(),
        Some("meshcache; hit"),
        "{}",
        second.stdout
    );
    let h2 = curl(p.addr(), &ca, &["--http2"], &url).await;
    assert!(h2.ok, "{}", h2.stderr);
    assert!(h2.stdout.starts_with("HTTP/2 200"), "{}", h2.stdout);
    assert_eq!(cache_status(&h2.stdout).as_deref(), Some("meshcache; hit"));
    assert_eq!(origin.hits("/x"), 1);
    let key = cache::key::primary_key(&url.parse().unwrap()).unwrap();
    assert!(key.starts_with("https://localhost:"), "{key}");
}

#[tokio::test]
async fn an_origin_certificate_that_does_not_verify_is_a_502_that_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::builder()
        .route("/x", |_| Reply::ok("untrusted"))
        .run_tls(&dir.path().join("not-given-to-the-proxy.pem"))
        .await;
    let p = TestProxy::start().await;
    let ca = proxy_ca(&p, dir.path()).await;
    let r = curl(p.addr(), &ca, &[], &origin.https_url("/x")).await;
    assert!(r.stdout.starts_with("HTTP/2 502"), "{}", r.stdout);
    assert!(r.stdout.contains("certificate"), "{}", r.stdout);
    assert_eq!(origin.hits("/x"), 0);
}

#[tokio::test]
async fn passthrough_hosts_are_tunnelled_and_the_client_sees_the_origin_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let origin = Origin::builder()
        .route("/x", |_| Reply::ok("direct"))
        .run_tls(&origin_ca)
        .await;
    let p = TestProxy::start_with(|s| s.tls.passthrough = vec!["localhost".into()]).await;
    let r = curl(p.addr(), &origin_ca, &[], &origin.https_url("/x")).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.ends_with("direct"));
    assert!(r.stderr.contains("test origin CA"), "{}", r.stderr);
    assert_eq!(
        cache_status(&r.stdout),
        None,
        "nothing of ours inside a blind tunnel"
    );
}

#[tokio::test]
async fn a_client_that_refuses_our_certificate_is_tunnelled_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let origin = Origin::builder()
        .route("/x", |_| Reply::ok("pinned"))
        .run_tls(&origin_ca)
        .await;
    let p = TestProxy::start().await;
    // A "pinned" client: trusts only the origin's CA, so it rejects our leaf.
    let first = curl(p.addr(), &origin_ca, &[], &origin.https_url("/x")).await;
    assert!(
        !first.ok,
        "the client must refuse the interception certificate"
    );
    // The proxy learns the host only after the refusal reaches it: poll the status page.
    let mut learned = false;
    for _ in 0..3000 {
        if get(p.addr(), "http://meshcache.local/", &[])
            .await
            .text()
            .contains("<code>localhost</code>")
        {
            learned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(learned, "the status page lists the learned host");
    let second = curl(p.addr(), &origin_ca, &[], &origin.https_url("/x")).await;
    assert!(second.ok, "{}", second.stderr);
    assert!(second.stdout.ends_with("pinned"));
}
