//! `/metrics`: every scrape parsed strictly as the Prometheus text format (0.0.4), figures
//! that follow real traffic (a miss, a hit, a peer's body), admin clients only.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::binary::{curl, Running};
use crate::support::client::{get_from, tcp_from};
use crate::support::feed::sync_toml;
use crate::support::mesh::{grouped, Device};
use crate::support::{get, Origin, Reply, TestProxy};

/// Labels, sorted by name.
type Labels = Vec<(String, String)>;

/// A sample's name and labels.
type Series = (String, Labels);

/// A scrape, parsed.
#[derive(Debug)]
struct Metrics {
    /// Family name → type, from the `# TYPE` lines.
    types: BTreeMap<String, String>,
    samples: BTreeMap<Series, f64>,
    text: String,
}

impl Metrics {
    /// The value of the sample `name` with exactly these labels, if there is one.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut l: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        self.samples.get(&(name.to_string(), l)).copied()
    }

    /// [`Metrics::get`], 0 when absent (a label value not seen yet).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// [`Metrics::get`] for a sample that must be there.
    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", self.text))
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest of `s`.
fn labels(s: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((Vec::new(), s));
    };
    let mut out = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !valid_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        out.push((name.to_string(), value));
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn number(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("not a number: {s:?}")),
    }
}

/// Parses `text` as the Prometheus text format (0.0.4), strictly: every line is a
/// `# HELP`, a `# TYPE` or a sample; a family's `# HELP` and `# TYPE` come once, before its
/// samples, which follow together; a counter's samples are its name, a histogram's are
/// `_bucket` (with `le`), `_sum` and `_count`; no series twice; counters are not negative; a
/// histogram's buckets grow with `le` and its `+Inf` bucket is its count.
fn parse(text: &str) -> Result<Metrics, String> {
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut samples: BTreeMap<Series, f64> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_name(name) || !helped.insert(name.to_string()) {
                return Err(at("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (name, kind) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if !valid_name(name) || words.next().is_some() {
                return Err(at("bad TYPE".into()));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(at("TYPE repeated".into()));
            }
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..end];
        if !valid_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (mut l, rest) = labels(&line[end..]).map_err(at)?;
        let mut words = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?
            .split(' ');
        let value = number(words.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = words.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        let Some((family, kind)) = &current else {
            return Err(at("a sample before any TYPE".into()));
        };
        let ok = match kind.as_str() {
            "histogram" => {
                name == format!("{family}_bucket") && l.iter().any(|(k, _)| k == "le")
                    || name == format!("{family}_sum")
                    || name == format!("{family}_count")
            }
            "summary" => {
                name == family
                    || name == format!("{family}_sum")
                    || name == format!("{family}_count")
            }
            _ => name == family,
        };
        if !ok {
            return Err(at(format!("not a sample of the {kind} {family}")));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a negative counter".into()));
        }
        l.sort();
        let names: HashSet<&String> = l.iter().map(|(k, _)| k).collect();
        if names.len() != l.len() {
            return Err(at("a label twice".into()));
        }
        if samples.insert((name.to_string(), l), value).is_some() {
            return Err(at("a series twice".into()));
        }
    }
    // Histograms: per label set, buckets that grow, the last one (+Inf) equal to the count.
    for (family, _) in types.iter().filter(|(_, k)| *k == "histogram") {
        let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for ((name, l), v) in &samples {
            if *name == format!("{family}_bucket") {
                let le = l.iter().find(|(k, _)| k == "le").map(|(_, v)| v.as_str());
                let le = number(le.unwrap_or("")).map_err(|e| format!("{family}: le {e}"))?;
                let rest: Vec<_> = l.iter().filter(|(k, _)| k != "le").cloned().collect();
                buckets.entry(rest).or_default().push((le, *v));
            }
        }
        for (l, mut b) in buckets {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            if b.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family}{l:?}: buckets do not grow: {b:?}"));
            }
            let count = samples.get(&(format!("{family}_count"), l.clone()));
            let last = b.last().copied();
            if last.map(|x| x.0) != Some(f64::INFINITY) || count != last.map(|x| x.1).as_ref() {
                return Err(format!("{family}{l:?}: no +Inf bucket equal to the count"));
            }
        }
    }
    Ok(Metrics {
        types,
        samples,
        text: text.to_string(),
    })
}

/// `GET /metrics` from this machine (an admin client), parsed; panics with the text if it
/// does not parse.
async fn scrape(proxy: SocketAddr) -> Metrics {
    let r = get(proxy, "http://meshcache.local/metrics", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

/// Scrapes until `done` holds (bytes are counted when a response body is dropped, just
/// after the client read its end); panics after 10 s with the last scrape.
async fn scrape_until(proxy: SocketAddr, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(proxy).await;
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never reached:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n";
    assert_eq!(
        parse(good).unwrap().get("a_total", &[("x", "q\"\\\n")]),
        Some(1.0)
    );
    for bad in [
        "a_total 1\n",                                    // no TYPE
        "# TYPE a_total counter\nb_total 1\n",            // another family
        "# TYPE a_total counter\na_total -1\n",           // a negative counter
        "# TYPE a_total counter\na_total 1\na_total 2\n", // a series twice
        "# TYPE a_total counter\na_total{x=y} 1\n",       // unquoted
        "# TYPE a_total counter\na_total one\n",          // not a number
        "# TYPE a_total counter\na_total 1",              // no final newline
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_sum 0\n", // no +Inf
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test]
async fn metrics_follow_a_miss_and_a_hit() {
    const LEN: usize = 50_000;
    let origin = Origin::builder()
        .route("/m", |_| {
            Reply::ok(vec![b'm'; LEN]).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let before = scrape(p.addr()).await;
    for family in [
        "meshcache_served_bytes_total",
        "meshcache_origin_response_seconds",
        "meshcache_peer_lookup_seconds",
        "meshcache_store_bytes",
        "meshcache_store_entries",
        "meshcache_fills_in_progress",
        "meshcache_evictions_total",
    ] {
        assert!(
            before.types.contains_key(family),
            "{family}:\n{}",
            before.text
        );
    }
    assert_eq!(before.types["meshcache_served_bytes_total"], "counter");
    assert_eq!(
        before.types["meshcache_origin_response_seconds"],
        "histogram"
    );
    assert_eq!(before.must("meshcache_store_entries", &[]), 0.0);
    // The mesh is off: no mesh metrics.
    assert!(!before.text.contains("meshcache_mesh_"), "{}", before.text);

    let miss = get(p.addr(), &origin.url("/m"), &[]).await;
    assert!(
        miss.cache_status().contains("fwd=miss"),
        "{}",
        miss.cache_status()
    );
    assert_eq!(miss.body.len(), LEN);
    let stored = scrape_until(p.addr(), |m| {
        m.value("meshcache_store_entries", &[]) == 1.0
            && m.value("meshcache_fills_in_progress", &[]) == 0.0
            && m.value("meshcache_served_bytes_total", &[("source", "origin")]) >= LEN as f64
    })
    .await;
    assert!(stored.must("meshcache_store_bytes", &[]) >= LEN as f64);
    assert_eq!(stored.must("meshcache_store_urls", &[]), 1.0);
    assert_eq!(
        stored.value("meshcache_requests_total", &[("outcome", "miss")]),
        1.0
    );
    assert_eq!(
        stored.must("meshcache_origin_response_seconds_count", &[]),
        1.0,
        "one request to the origin, timed"
    );

    let hit = get(p.addr(), &origin.url("/m"), &[]).await;
    assert_eq!(hit.cache_status(), "meshcache; hit");
    let after = scrape_until(p.addr(), |m| {
        m.value("meshcache_served_bytes_total", &[("source", "cache")]) >= LEN as f64
    })
    .await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(
        delta("meshcache_requests_total", &[("outcome", "miss")]),
        1.0
    );
    assert_eq!(
        delta("meshcache_requests_total", &[("outcome", "hit")]),
        1.0
    );
    assert_eq!(
        delta("meshcache_served_bytes_total", &[("source", "origin")]),
        LEN as f64
    );
    assert_eq!(
        delta("meshcache_served_bytes_total", &[("source", "cache")]),
        LEN as f64
    );
    assert_eq!(
        delta("meshcache_served_bytes_total", &[("source", "peers")]),
        0.0
    );
    assert_eq!(delta("meshcache_origin_response_seconds_count", &[]), 1.0);
    assert!(after.must("meshcache_origin_response_seconds_sum", &[]) > 0.0);
    // The scrapes themselves are the proxy's own answers.
    assert!(after.value("meshcache_requests_total", &[("outcome", "local")]) >= 2.0);
    assert_eq!(origin.hits("/m"), 1);
}

#[tokio::test]
async fn metrics_are_for_admin_clients_only() {
    let p = TestProxy::start().await;
    let r = get_from(p.addr(), "127.0.0.2", "http://meshcache.local/metrics").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("admin.allow"), "{}", r.text());
    assert!(!r.text().contains("meshcache_"), "{}", r.text());
    // In origin form, as a scraper pointed at the proxy's address asks.
    let passenger = origin_form(p.addr(), "127.0.0.2").await;
    assert!(passenger.starts_with("HTTP/1.1 403"), "{passenger}");
    assert!(!passenger.contains("meshcache_"), "{passenger}");
    let admin = origin_form(p.addr(), "127.0.0.1").await;
    assert!(admin.starts_with("HTTP/1.1 200"), "{admin}");
    let (_, body) = admin.split_once("\r\n\r\n").expect("a head and a body");
    parse(body).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{body}"));
    // The same request from this machine (an admin) is answered.
    scrape(p.addr()).await;
}

/// `GET /metrics` in origin form (`curl http://PROXY/metrics`) from `source`: the raw
/// response.
async fn origin_form(proxy: SocketAddr, source: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tcp_from(proxy, source.parse().unwrap()).await;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: scraper\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answers and closes")
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Through the built binary with curl, as an operator's scraper would ask: the mesh and
/// feed sync's figures are there too.
#[test]
fn metrics_through_the_binary_show_the_mesh_and_feed_sync() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync.toml");
    let feed = "http://feeds.invalid/news.xml";
    std::fs::write(&config, sync_toml("10MiB", false, "1MiB", &[feed])).unwrap();
    let run = Running::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let out = curl(run.addr, &["http://meshcache.local/metrics"]);
    let (head, body) = out.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let m = parse(body).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{body}"));
    assert_eq!(m.must("meshcache_mesh_peers_connected", &[]), 0.0);
    assert_eq!(m.must("meshcache_mesh_sent_bytes_total", &[]), 0.0);
    assert_eq!(m.must("meshcache_mesh_bans_total", &[]), 0.0);
    assert_eq!(
        m.must("meshcache_sync_budget_bytes", &[]),
        (10u64 << 20) as f64
    );
    assert_eq!(
        m.must("meshcache_sync_feed_up_to_date", &[("feed", feed)]),
        0.0,
        "one series per feed, by its URL"
    );
    run.stop();
}

/// A body from a peer: the receiver counts it as a peer outcome and peer bytes, its lookup
/// found; the giver counts the bytes it gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_body_from_a_peer() {
    const LEN: u64 = 200_000;
    let origin = Origin::builder()
        .route("/p", |_| {
            Reply::generated(LEN).header("cache-control", "max-age=3600")
        })
        .run()
        .await;
    let url = origin.url("/p");
    let (dirs, _) = grouped(2);
    let a = Device::start(dirs[0].path(), &[]);
    let b = Device::start(dirs[1].path(), &[&a.ticket]);
    a.wait_peers(1).await;
    b.wait_peers(1).await;

    let first = get(a.addr(), &url, &[]).await;
    assert!(
        first.cache_status().contains("fwd=miss"),
        "{}",
        first.cache_status()
    );
    let from_a = get(b.addr(), &url, &[]).await;
    assert!(
        from_a
            .cache_status()
            .contains(&format!("peer=\"{}\"", a.id)),
        "{}",
        from_a.cache_status()
    );
    assert_eq!(from_a.body.len() as u64, LEN);

    let mb = scrape_until(b.addr(), |m| {
        m.value("meshcache_served_bytes_total", &[("source", "peers")]) >= LEN as f64
    })
    .await;
    assert_eq!(
        mb.value("meshcache_served_bytes_total", &[("source", "peers")]),
        LEN as f64
    );
    assert_eq!(
        mb.value("meshcache_requests_total", &[("outcome", "peer")]),
        1.0
    );
    assert_eq!(
        mb.must(
            "meshcache_peer_lookup_seconds_count",
            &[("result", "found")]
        ),
        1.0
    );
    assert_eq!(mb.must("meshcache_mesh_peers_connected", &[]), 1.0);
    assert!(mb.must("meshcache_mesh_received_bytes_total", &[]) >= LEN as f64);
    assert_eq!(
        mb.must("meshcache_origin_response_seconds_count", &[]),
        0.0,
        "B never asked the origin"
    );

    let ma = scrape(a.addr()).await;
    assert!(ma.must("meshcache_mesh_sent_bytes_total", &[]) >= LEN as f64);
    assert_eq!(
        ma.value("meshcache_requests_total", &[("outcome", "miss")]),
        1.0
    );
    assert_eq!(
        ma.must("meshcache_peer_lookup_seconds_count", &[("result", "none")]),
        1.0,
        "A asked B first, which did not have it"
    );
    assert_eq!(ma.must("meshcache_origin_response_seconds_count", &[]), 1.0);
    assert_eq!(origin.hits("/p"), 1);
    a.stop();
    b.stop();
}
