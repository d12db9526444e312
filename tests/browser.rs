//! A real browser through the proxy: headless Chromium loads an HTTPS page with images;
//! on a second load (a fresh browser profile, so nothing comes from the browser's own
//! cache) the images come from meshcache's cache and the origin sees no new request.

use std::path::Path;
use std::process::Command;

use base64::Engine;

use crate::support::{get, Origin, Reply, TestProxy};

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: how Chromium's
/// `--ignore-certificate-errors-spki-list` names a trusted key.
fn spki_hash(pem: &[u8]) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).expect("CA PEM");
    let cert = pem.parse_x509().expect("CA certificate");
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn load(proxy: std::net::SocketAddr, spki: &str, url: &str, profile: &Path) -> String {
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--proxy-server=http://{proxy}"))
        // Chromium never proxies loopback unless told to.
        .arg("--proxy-bypass-list=<-loopback>")
        .arg(format!("--ignore-certificate-errors-spki-list={spki}"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why Chromium cannot be tried here, if it cannot: no Chromium, or one that cannot
/// render a page on this machine (checked without the proxy, so a broken proxy can never
/// make a test skip).
pub(crate) fn chromium_missing() -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} is not installed (.ci/run installs Debian's chromium)"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let probe = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", dir.path().display()))
        .args(["--dump-dom", "data:text/html,<p>chromium-runs</p>"])
        .output();
    match probe {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("chromium-runs") => None,
        Ok(out) => Some(format!(
            "chromium cannot render a page on this machine: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => Some(format!("cannot start chromium: {e}")),
    }
}

#[tokio::test]
async fn chromium_loads_an_https_page_and_its_images_come_from_the_cache_the_second_time() {
    // Chromium must be able to run here at all (checked without the proxy).
    if let Some(why) = chromium_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let page = r#"<!doctype html><html><body><h1 id="marker">carriage news</h1>
        <img src="/img/1.png"><img src="/img/2.png"><img src="/img/3.png"></body></html>"#;
    let mut b = Origin::builder().route("/page.html", move |_| {
        Reply::ok(page)
            .header("content-type", "text/html")
            .header("cache-control", "no-cache")
    });
    for i in 1..=3 {
        b = b.route(&format!("/img/{i}.png"), |_| {
            Reply::generated(20_000)
                .header("content-type", "image/png")
                .header("cache-control", "max-age=3600")
        });
    }
    let origin = b.run_tls(&origin_ca).await;
    let p = TestProxy::start_with(|s| s.origin.extra_roots = vec![origin_ca.clone()]).await;
    let ca = get(p.addr(), "http://meshcache.local/ca.pem", &[]).await;
    let spki = spki_hash(&ca.body);
    let url = origin.https_url("/page.html");

    let addr = p.addr();
    let (s1, u1, d1) = (spki.clone(), url.clone(), dir.path().join("profile1"));
    let dom = tokio::task::spawn_blocking(move || load(addr, &s1, &u1, &d1))
        .await
        .unwrap();
    assert!(
        dom.contains("carriage news"),
        "the page loaded through the proxy: {dom}"
    );
    for i in 1..=3 {
        assert_eq!(
            origin.hits(&format!("/img/{i}.png")),
            1,
            "image {i} fetched once"
        );
    }
    crate::caching::settle(&p).await;

    let (s2, u2, d2) = (spki.clone(), url.clone(), dir.path().join("profile2"));
    let dom = tokio::task::spawn_blocking(move || load(addr, &s2, &u2, &d2))
        .await
        .unwrap();
    assert!(dom.contains("carriage news"), "{dom}");
    for i in 1..=3 {
        assert_eq!(
            origin.hits(&format!("/img/{i}.png")),
            1,
            "image {i} came from meshcache the second time"
        );
    }
    assert_eq!(
        origin.hits("/page.html"),
        2,
        "the no-cache page itself was revalidated"
    );
}
