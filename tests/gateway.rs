//! Transparent mode as a gateway runs it, in network namespaces the test creates: a
//! client, a gateway and an origin, joined by veth links, with an iptables `REDIRECT` on
//! the gateway. The client has no proxy setting at all.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{sh, Origin, Reply, TestProxy};

/// Three namespaces, deleted on drop.
struct Net {
    client: String,
    gateway: String,
    origin: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.client, &self.gateway, &self.origin] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Net {
    fn setup() -> Result<Net, String> {
        let tag = format!("{:x}", std::process::id() & 0xffffff);
        let net = Net {
            client: format!("mcc{tag}"),
            gateway: format!("mcg{tag}"),
            origin: format!("mco{tag}"),
        };
        for ns in [&net.client, &net.gateway, &net.origin] {
            sh(&["ip", "netns", "add", ns])?;
        }
        let (vc, vg, vo, vh) = (
            format!("vc{tag}"),
            format!("vg{tag}"),
            format!("vo{tag}"),
            format!("vh{tag}"),
        );
        sh(&[
            "ip", "link", "add", &vc, "type", "veth", "peer", "name", &vg,
        ])?;
        sh(&["ip", "link", "set", &vc, "netns", &net.client])?;
        sh(&["ip", "link", "set", &vg, "netns", &net.gateway])?;
        sh(&[
            "ip", "link", "add", &vo, "type", "veth", "peer", "name", &vh,
        ])?;
        sh(&["ip", "link", "set", &vo, "netns", &net.origin])?;
        sh(&["ip", "link", "set", &vh, "netns", &net.gateway])?;
        let ns = |n: &str, args: &[&str]| -> Result<(), String> {
            let mut v = vec!["ip", "netns", "exec", n];
            v.extend_from_slice(args);
            sh(&v)
        };
        let (c, g, o) = (
            net.client.as_str(),
            net.gateway.as_str(),
            net.origin.as_str(),
        );
        ns(c, &["ip", "addr", "add", "10.77.1.2/24", "dev", &vc])?;
        ns(c, &["ip", "addr", "add", "10.77.1.3/24", "dev", &vc])?;
        ns(g, &["ip", "addr", "add", "10.77.1.1/24", "dev", &vg])?;
        ns(g, &["ip", "addr", "add", "10.77.2.1/24", "dev", &vh])?;
        ns(o, &["ip", "addr", "add", "10.77.2.2/24", "dev", &vo])?;
        for (n, dev) in [(c, &vc), (g, &vg), (g, &vh), (o, &vo)] {
            ns(n, &["ip", "link", "set", dev, "up"])?;
        }
        for n in [c, g, o] {
            ns(n, &["ip", "link", "set", "lo", "up"])?;
        }
        ns(c, &["ip", "route", "add", "default", "via", "10.77.1.1"])?;
        ns(o, &["ip", "route", "add", "default", "via", "10.77.2.1"])?;
        ns(g, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        ns(
            g,
            &[
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                &vg,
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--dports",
                "80,443",
                "-j",
                "REDIRECT",
                "--to-ports",
                "3129",
            ],
        )?;
        Ok(net)
    }
}

/// Runs `f` on a thread inside namespace `ns` (sockets it opens belong there), with its
/// own runtime, until `stop` fires.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(
            mpsc::Sender<T>,
            tokio::sync::oneshot::Receiver<()>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        + Send
        + 'static,
) -> Result<
    (
        T,
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    ),
    String,
> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let handle = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only, with a valid namespace fd held open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f(tx, stop_rx));
    });
    let value = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|e| format!("{ns}: {e}"))?;
    Ok((value, stop_tx, handle))
}

fn curl_in(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "-S",
            "--max-time",
            "20",
            "-D",
            "-",
        ])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn cache_status(resp: &str) -> String {
    resp.lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("cache-status"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn a_gateway_caches_redirected_http_and_https_for_clients_without_proxy_settings() {
    let net = match Net::setup() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("skipped: cannot create network namespaces with a REDIRECT rule (needs root, iproute2, iptables): {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");

    let oca = origin_ca.clone();
    let (_, stop_origin, origin_thread) =
        in_netns(&net.origin.clone(), move |tx: mpsc::Sender<()>, stop| {
            Box::pin(async move {
                let route = |_: &crate::support::origin::Seen| {
                    Reply::ok("carriage content").header("cache-control", "max-age=600")
                };
                let _plain = Origin::builder()
                    .route("/x", route)
                    .run_at("10.77.2.2:80".parse().unwrap())
                    .await;
                let _tls = Origin::builder()
                    .route("/x", route)
                    .run_tls_at("10.77.2.2:443".parse().unwrap(), &oca)
                    .await;
                tx.send(()).unwrap();
                let _ = stop.await;
            })
        })
        .expect("origin namespace");

    let data = dir.path().join("gateway");
    let oca = origin_ca.clone();
    let (proxy_ca, stop_gateway, gateway_thread) = in_netns(
        &net.gateway.clone(),
        move |tx: mpsc::Sender<std::path::PathBuf>, stop| {
            Box::pin(async move {
                let p = TestProxy::start_in(data.clone(), |s| {
                    s.transparent = Some("0.0.0.0:3129".parse().unwrap());
                    s.server.allow = vec!["10.77.1.2/32".parse().unwrap()];
                    // The origin is on a private range, refused to passengers in shared mode.
                    s.destinations.allow = vec!["10.77.2.2/32".parse().unwrap()];
                    s.origin.extra_roots = vec![oca];
                    s.cache.shared = true;
                })
                .await;
                tx.send(data.join("ca").join("ca.pem")).unwrap();
                let _ = stop.await;
                p.stop().await;
            })
        },
    )
    .expect("gateway namespace");

    let c = net.client.clone();
    let (ok, first) = curl_in(&c, &["http://10.77.2.2/x"]);
    assert!(ok, "{first}");
    assert!(
        first.contains("carriage content") && cache_status(&first).contains("fwd=miss"),
        "{first}"
    );
    let mut second = String::new();
    for _ in 0..300 {
        std::thread::sleep(Duration::from_millis(10));
        second = curl_in(&c, &["http://10.77.2.2/x"]).1;
        if cache_status(&second) == "meshcache; hit" {
            break;
        }
    }
    assert_eq!(cache_status(&second), "meshcache; hit", "{second}");

    let ca = proxy_ca.to_str().unwrap().to_string();
    let (ok, first) = curl_in(&c, &["--cacert", &ca, "https://10.77.2.2/x"]);
    assert!(ok, "{first}");
    assert!(first.contains("carriage content"), "{first}");
    let mut second = String::new();
    for _ in 0..300 {
        std::thread::sleep(Duration::from_millis(10));
        second = curl_in(&c, &["--cacert", &ca, "https://10.77.2.2/x"]).1;
        if cache_status(&second) == "meshcache; hit" {
            break;
        }
    }
    assert_eq!(cache_status(&second), "meshcache; hit", "{second}");

    // The gateway's own side is out of a passenger's reach: its own address, redirected,
    // is closed at once; a Host naming it (the connection went to the allowed origin) is
    // checked where the proxy would connect, and refused with the reason.
    let (ok, own) = curl_in(&c, &["http://10.77.1.1/x"]);
    assert!(!ok, "{own}");
    let (ok, host) = curl_in(&c, &["-H", "Host: 10.77.2.1", "http://10.77.2.2/x"]);
    assert!(ok, "{host}");
    assert!(host.starts_with("HTTP/1.1 403"), "{host}");
    assert!(host.contains("10.77.2.1"), "{host}");

    // A client address outside listen.allow gets nothing.
    let (ok, refused) = curl_in(&c, &["--interface", "10.77.1.3", "http://10.77.2.2/x"]);
    assert!(!ok, "{refused}");
    assert!(!refused.contains("carriage content"));

    let _ = stop_gateway.send(());
    let _ = stop_origin.send(());
    gateway_thread.join().unwrap();
    origin_thread.join().unwrap();
}
