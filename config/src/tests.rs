use super::*;

const FILE: &str = "meshcache.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new(FILE))
}

/// Parses `text`, expecting a [`ConfigError::Parse`]; returns (line, column,
/// field, message) and checks the Display form.
fn parse_error(text: &str) -> (usize, usize, Option<String>, String) {
    match parse(text) {
        Err(error @ ConfigError::Parse { .. }) => {
            let shown = error.to_string();
            let ConfigError::Parse {
                path,
                line,
                column,
                field,
                message,
            } = error
            else {
                unreachable!()
            };
            assert_eq!(path, Path::new(FILE));
            let field_part = field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default();
            assert_eq!(
                shown,
                format!("{FILE}:{line}:{column}: {field_part}{message}")
            );
            (line, column, field, message)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

/// Parses `text`, expecting a [`ConfigError::Invalid`]; returns (field,
/// Display form).
fn invalid(text: &str) -> (String, String) {
    match parse(text) {
        Err(error @ ConfigError::Invalid { .. }) => {
            let shown = error.to_string();
            let ConfigError::Invalid { path, field, .. } = error else {
                unreachable!()
            };
            assert_eq!(path, Path::new(FILE));
            (field, shown)
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

const FULL: &str = r#"
# every field, none at its default
[listen]
forward = "0.0.0.0:8080"
max_connections = 10
max_header_bytes = "32KiB"
header_read_timeout = "5s"
idle_timeout = 120
allow = ["10.0.0.0/8", "192.168.1.7"]
transparent = "0.0.0.0:3129"
max_connections_per_client = 4
h2_max_concurrent_streams = 8

[data]
dir = "/var/lib/meshcache"

[cache]
max_size = "1GB"
max_object_size = 1000000
shared = true
heuristic_fraction = 0.25
range_offset_limit = "1 MiB"
background_fill_max = "1.5MiB"
memory_cache_size = "8MiB"
memory_object_max = "8MiB"
min_free_space = "1GiB"

[[cache.rule]]
url = '^https?://[^/]+/debian/pool/'
fresh_for = "30d"

[[cache.rule]]
url = '\.deb$'
fresh_for = 3600

[origin]
connect_timeout = "500ms"
response_header_timeout = "1m"
body_idle_timeout = "1h"
max_idle_per_host = 0
pool_idle_timeout = "1m30s"
allow = ["10.9.0.0/16"]
deny = ["10.9.9.0/24"]
connect_ports = [443, 8443]
proxy = "http://proxy.corp.example:3128"
no_proxy = "localhost, .corp.example,10.0.0.0/8"

[admin]
allow = ["10.0.0.1"]

[log]
level = "warn,meshcache=debug"
access = false

[tls]
intercept = false
passthrough = ["bank.example", "*.pinned.example"]
extra_roots = ["/etc/meshcache/private-ca.pem"]
learned_passthrough_ttl = "1d"

[mesh]
enabled = false
listen = "192.168.1.7:5000"
relay = "https://relay.example"
peers = ["endpointabc"]
friends = ["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]
open = false
open_listen = "192.168.1.7:5001"
open_peers = ["endpointdef"]
operators = ["fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"]
operator = true
open_rotate = "1h"
mdns = false
catalogs = false
lookup_timeout = "20ms"
peer_fill_wait = "5s"
fetch_idle_timeout = "3s"
ban_duration = "1h"
share_max_file = "1MiB"
share_max_size = "10MiB"

[sync]
budget = "1GiB"
from_origin = true

[[sync.feed]]
url = "https://example.org/news/feed.xml"
media = "none"
max_item = "1MiB"
"#;

fn full_expected() -> Config {
    Config {
        listen: Listen {
            forward: "0.0.0.0:8080".parse().expect("address"),
            max_connections: 10,
            max_connections_per_client: 4,
            h2_max_concurrent_streams: 8,
            max_header_bytes: ByteSize(32 * 1024),
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            allow: vec!["10.0.0.0/8".into(), "192.168.1.7".into()],
            transparent: Some("0.0.0.0:3129".parse().expect("address")),
        },
        data: Data {
            dir: Some(PathBuf::from("/var/lib/meshcache")),
        },
        cache: Cache {
            max_size: ByteSize(1_000_000_000),
            max_object_size: ByteSize(1_000_000),
            shared: true,
            heuristic_fraction: 0.25,
            range_offset_limit: ByteSize(1 << 20),
            background_fill_max: ByteSize(3 << 19),
            memory_cache_size: ByteSize(8 << 20),
            memory_object_max: ByteSize(8 << 20),
            min_free_space: ByteSize(1 << 30),
            rule: vec![
                Rule {
                    url: UrlPattern::new("^https?://[^/]+/debian/pool/").expect("pattern"),
                    fresh_for: Duration::from_secs(30 * 86400),
                },
                Rule {
                    url: UrlPattern::new(r"\.deb$").expect("pattern"),
                    fresh_for: Duration::from_secs(3600),
                },
            ],
        },
        origin: Origin {
            connect_timeout: Duration::from_millis(500),
            response_header_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(3600),
            max_idle_per_host: 0,
            pool_idle_timeout: Duration::from_secs(90),
            allow: vec!["10.9.0.0/16".into()],
            deny: vec!["10.9.9.0/24".into()],
            connect_ports: vec![443, 8443],
            proxy: Some(ProxyUrl {
                host: "proxy.corp.example".into(),
                port: 3128,
            }),
            no_proxy: NoProxy(vec![
                "localhost".into(),
                ".corp.example".into(),
                "10.0.0.0/8".into(),
            ]),
        },
        admin: Admin {
            allow: vec!["10.0.0.1".into()],
        },
        log: Log {
            level: "warn,meshcache=debug".to_owned(),
            access: false,
        },
        tls: Tls {
            intercept: false,
            passthrough: vec!["bank.example".into(), "*.pinned.example".into()],
            extra_roots: vec![PathBuf::from("/etc/meshcache/private-ca.pem")],
            learned_passthrough_ttl: Duration::from_secs(86400),
        },
        mesh: Mesh {
            enabled: false,
            listen: "192.168.1.7:5000".parse().expect("address"),
            relay: Some("https://relay.example".into()),
            peers: vec!["endpointabc".into()],
            friends: vec![
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            ],
            open: false,
            open_listen: "192.168.1.7:5001".parse().expect("address"),
            open_peers: vec!["endpointdef".into()],
            operators: vec![
                "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210".into(),
            ],
            operator: true,
            open_rotate: Duration::from_secs(3600),
            mdns: false,
            catalogs: false,
            lookup_timeout: Duration::from_millis(20),
            peer_fill_wait: Duration::from_secs(5),
            fetch_idle_timeout: Duration::from_secs(3),
            ban_duration: Duration::from_secs(3600),
            share_max_file: ByteSize(1 << 20),
            share_max_size: ByteSize(10 << 20),
        },
        sync: crate::Sync {
            budget: ByteSize(1 << 30),
            from_origin: true,
            feed: vec![crate::Feed {
                url: "https://example.org/news/feed.xml".into(),
                media: crate::Media::None,
                max_item: ByteSize(1 << 20),
            }],
        },
    }
}

#[test]
fn bad_allow_network_and_passthrough_pattern_name_the_field() {
    let err = Config::from_toml_str("[listen]\nallow = [\"10.0.0.0/33\"]\n", Path::new("g.toml"))
        .unwrap_err();
    assert!(err.to_string().contains("listen.allow[0]"), "{err}");
    let err =
        Config::from_toml_str("[tls]\npassthrough = [\"a b\"]\n", Path::new("g.toml")).unwrap_err();
    assert!(err.to_string().contains("tls.passthrough[0]"), "{err}");
    assert_eq!(parse_cidr("10.1.2.3"), Some("10.1.2.3/32".parse().unwrap()));
    assert_eq!(
        parse_cidr("10.1.2.3/8"),
        Some("10.0.0.0/8".parse().unwrap())
    );
    assert_eq!(parse_cidr("::1/128"), Some("::1/128".parse().unwrap()));
    assert_eq!(parse_cidr("nope/8"), None);
    for field in ["admin.allow", "origin.allow", "origin.deny"] {
        let (table, key) = field.split_once('.').unwrap();
        let text = format!("[{table}]\n{key} = [\"10.0.0.1\", \"300.0.0.0/8\"]\n");
        let err = Config::from_toml_str(&text, Path::new("g.toml")).unwrap_err();
        assert!(err.to_string().contains(&format!("{field}[1]")), "{err}");
    }
}

#[test]
fn admin_is_this_machine_only_and_connect_is_443_by_default() {
    let c = Config::default();
    assert_eq!(c.admin.allow, vec!["127.0.0.1/32", "::1/128"]);
    assert_eq!(c.origin.connect_ports, vec![443]);
    assert!(c.listen.max_connections_per_client < c.listen.max_connections);
    let err = Config::from_toml_str(
        "[listen]\nmax_connections_per_client = 0\n",
        Path::new("g.toml"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("listen.max_connections_per_client"),
        "{err}"
    );
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.listen.forward, "127.0.0.1:3128".parse().expect("address"));
    assert_eq!(c.listen.max_connections, 1024);
    assert_eq!(c.listen.max_header_bytes.bytes(), 65536);
    assert_eq!(c.listen.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.listen.idle_timeout, Duration::from_secs(75));
    assert_eq!(c.data.dir, None);
    assert_eq!(c.cache.max_size.bytes(), 10 * 1024 * 1024 * 1024);
    assert_eq!(c.cache.max_object_size.bytes(), 4 * 1024 * 1024 * 1024);
    assert!(!c.cache.shared);
    assert_eq!(c.cache.heuristic_fraction, 0.1);
    assert_eq!(c.cache.range_offset_limit.bytes(), 16 * 1024 * 1024);
    assert_eq!(c.cache.background_fill_max.bytes(), 256 * 1024 * 1024);
    assert_eq!(c.cache.memory_cache_size.bytes(), 64 * 1024 * 1024);
    assert_eq!(c.cache.memory_object_max.bytes(), 256 * 1024);
    assert_eq!(c.origin.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.origin.response_header_timeout, Duration::from_secs(30));
    assert_eq!(c.origin.body_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.origin.max_idle_per_host, 32);
    assert_eq!(c.origin.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(c.log.level, "info");
    assert!(c.log.access);
    c.validate().expect("defaults are valid");
}

#[test]
fn empty_file_is_defaults() {
    assert_eq!(parse("").expect("empty file"), Config::default());
    assert_eq!(
        parse("# nothing\n\n[cache]\n").expect("comments"),
        Config::default()
    );
}

#[test]
fn partial_file_keeps_other_defaults() {
    let c = parse("[cache]\nshared = true\n").expect("valid");
    assert_eq!(
        c,
        Config {
            cache: Cache {
                shared: true,
                ..Cache::default()
            },
            ..Config::default()
        }
    );
}

#[test]
fn full_file() {
    assert_eq!(parse(FULL).expect("full file"), full_expected());
}

#[test]
fn round_trip() {
    for config in [Config::default(), full_expected()] {
        let text = config.to_toml_string();
        assert_eq!(parse(&text).expect("re-parse"), config, "{text}");
    }
    let text = Config::default().to_toml_string();
    for field in [
        "forward",
        "max_size = \"10GiB\"",
        "idle_timeout = \"75s\"",
        "# dir",
        "[log]",
    ] {
        assert!(text.contains(field), "{field} missing from\n{text}");
    }
}

#[test]
fn unknown_field_names_line_and_field() {
    let text = "[listen]\nmax_connections = 5\n\n[cache]\nmax_size = \"1GiB\"\nmax_sise = 1\n";
    let (line, column, field, message) = parse_error(text);
    assert_eq!((line, column), (6, 1));
    assert_eq!(field.as_deref(), Some("cache.max_sise"));
    assert!(message.contains("max_sise"), "{message}");
    let shown = parse(text).expect_err("unknown field").to_string();
    assert!(
        shown.starts_with("meshcache.toml:6:1: cache.max_sise: unknown field `max_sise`"),
        "{shown}"
    );
}

#[test]
fn unknown_table_and_nested_forms() {
    let (line, _, field, _) = parse_error("[listen]\n\n[cach]\nmax_size = 1\n");
    assert_eq!((line, field.as_deref()), (3, Some("cach")));
    let (line, _, field, _) = parse_error("log.levl = \"debug\"\n");
    assert_eq!((line, field.as_deref()), (1, Some("log.levl")));
    let (line, column, field, _) = parse_error("\ncache = { shared = true, max_sise = 1 }\n");
    assert_eq!(
        (line, column, field.as_deref()),
        (2, 26, Some("cache.max_sise"))
    );
}

#[test]
fn bad_size_string() {
    let (line, column, field, message) = parse_error("[cache]\n\nmax_size = \"10 XB\"\n");
    assert_eq!((line, column), (3, 12));
    assert_eq!(field.as_deref(), Some("cache.max_size"));
    assert!(message.contains("invalid size \"10 XB\""), "{message}");
    let (_, _, field, message) = parse_error("[cache]\nmemory_cache_size = -5\n");
    assert_eq!(field.as_deref(), Some("cache.memory_cache_size"));
    assert!(message.contains("negative"), "{message}");
}

#[test]
fn bad_duration() {
    let (line, _, field, message) = parse_error("[origin]\nconnect_timeout = \"10 parsecs\"\n");
    assert_eq!(line, 2);
    assert_eq!(field.as_deref(), Some("origin.connect_timeout"));
    assert!(
        message.contains("invalid duration \"10 parsecs\""),
        "{message}"
    );
    let (_, _, field, _) = parse_error("[listen]\nidle_timeout = 1.5\n");
    assert_eq!(field.as_deref(), Some("listen.idle_timeout"));
}

#[test]
fn wrong_types_and_syntax() {
    let (_, _, field, _) = parse_error("[cache]\nshared = \"yes\"\n");
    assert_eq!(field.as_deref(), Some("cache.shared"));
    let (_, _, field, _) = parse_error("[listen]\nforward = \"localhost\"\n");
    assert_eq!(field.as_deref(), Some("listen.forward"));
    let (line, _, _, _) = parse_error("[log]\naccess = true\nlevel = \n");
    assert_eq!(line, 3);
}

#[test]
fn object_larger_than_cache_is_invalid() {
    let (field, shown) = invalid("[cache]\nmax_size = \"1GiB\"\nmax_object_size = \"2GiB\"\n");
    assert_eq!(field, "cache.max_object_size");
    assert_eq!(
        shown,
        "meshcache.toml: cache.max_object_size: 2GiB is larger than cache.max_size (1GiB)"
    );
}

#[test]
fn other_invalid_values() {
    let cases = [
        ("[listen]\nmax_connections = 0\n", "listen.max_connections"),
        (
            "[listen]\nmax_header_bytes = 0\n",
            "listen.max_header_bytes",
        ),
        ("[listen]\nidle_timeout = \"0s\"\n", "listen.idle_timeout"),
        (
            "[origin]\nresponse_header_timeout = 0\n",
            "origin.response_header_timeout",
        ),
        (
            "[cache]\nheuristic_fraction = 1.5\n",
            "cache.heuristic_fraction",
        ),
        (
            "[cache]\nheuristic_fraction = nan\n",
            "cache.heuristic_fraction",
        ),
        (
            "[cache]\nmemory_object_max = \"65MiB\"\n",
            "cache.memory_object_max",
        ),
        ("[log]\nlevel = \" \"\n", "log.level"),
        ("[mesh]\npeers = [\"nope\"]\n", "mesh.peers[0]"),
        ("[mesh]\nfriends = [\"abc\"]\n", "mesh.friends[0]"),
        ("[mesh]\noperators = [\"abc\"]\n", "mesh.operators[0]"),
        ("[mesh]\nopen_peers = [\"abc\"]\n", "mesh.open_peers[0]"),
        ("[mesh]\nlookup_timeout = \"0s\"\n", "mesh.lookup_timeout"),
        ("[mesh]\nopen_rotate = \"0s\"\n", "mesh.open_rotate"),
    ];
    for (text, expected) in cases {
        assert_eq!(invalid(text).0, expected, "{text}");
    }
    let config = Config {
        log: Log {
            level: String::new(),
            access: true,
        },
        ..Config::default()
    };
    let shown = config.validate().expect_err("blank level").to_string();
    assert_eq!(shown, "log.level: must not be empty");
}

#[test]
fn load_reads_file_and_names_unreadable_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("meshcache.toml");
    std::fs::write(&path, FULL).expect("write");
    assert_eq!(Config::load(&path).expect("load"), full_expected());

    std::fs::write(&path, "[cache]\nmax_sise = 1\n").expect("write");
    let shown = Config::load(&path).expect_err("unknown field").to_string();
    assert!(
        shown.starts_with(&format!("{}:2:1: cache.max_sise: ", path.display())),
        "{shown}"
    );

    let missing = dir.path().join("missing.toml");
    let error = Config::load(&missing).expect_err("missing file");
    assert!(matches!(&error, ConfigError::Read { path, .. } if *path == missing));
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{error}"
    );
}

#[test]
fn sync_feeds_parse_with_their_defaults() {
    let text = r#"
[sync]
budget = "256MiB"
from_origin = false

[[sync.feed]]
url = "https://example.org/news/feed.xml"
media = "all"
max_item = "8MiB"

[[sync.feed]]
url = "http://example.org/thumbs.json"
media = "thumbnails"
"#;
    let c = Config::from_toml_str(text, Path::new("s.toml")).unwrap();
    assert_eq!(c.sync.budget, ByteSize(256 << 20));
    assert!(!c.sync.from_origin);
    assert_eq!(c.sync.feed.len(), 2);
    assert_eq!(c.sync.feed[1].media, crate::Media::Thumbnails);
    assert_eq!(c.sync.feed[1].max_item, ByteSize(8 << 20), "the default");
    assert_eq!(Config::default().sync.budget, ByteSize(256 << 20));
    assert!(Config::default().sync.feed.is_empty());
    let again = Config::from_toml_str(&c.to_toml_string(), Path::new("s.toml")).unwrap();
    assert_eq!(again, c, "written back and read again");
}

#[test]
fn bad_sync_feeds_name_the_field() {
    for (text, field) in [
        (
            "[[sync.feed]]\nurl = \"ftp://x/feed\"\n",
            "sync.feed[0].url",
        ),
        ("[[sync.feed]]\nurl = \"not a url\"\n", "sync.feed[0].url"),
        (
            "[[sync.feed]]\nurl = \"http://a/f\"\n[[sync.feed]]\nurl = \"http://a/f\"\n",
            "sync.feed[1].url",
        ),
        (
            "[[sync.feed]]\nurl = \"http://a/f\"\nmax_item = 0\n",
            "sync.feed[0].max_item",
        ),
        (
            "[[sync.feed]]\nurl = \"http://a/f\"\nmedia = \"some\"\n",
            "media",
        ),
        ("[[sync.feed]]\nmedia = \"all\"\n", "url"),
    ] {
        let err = Config::from_toml_str(text, Path::new("s.toml")).unwrap_err();
        assert!(err.to_string().contains(field), "{text:?}: {err}");
    }
}

#[test]
fn cache_rules_are_read_in_order_and_match_urls() {
    let c = parse(FULL).expect("full file");
    let rules = &c.cache.rule;
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].url.as_str(), "^https?://[^/]+/debian/pool/");
    assert!(rules[0]
        .url
        .regex()
        .is_match("http://deb.debian.org/debian/pool/main/h/hello_2.10.deb"));
    assert!(!rules[0]
        .url
        .regex()
        .is_match("http://deb.debian.org/ubuntu/pool/x"));
    assert_eq!(rules[1].fresh_for, Duration::from_secs(3600));
    assert!(Config::default().cache.rule.is_empty());
    let text = full_expected().to_toml_string();
    assert!(text.contains("[[cache.rule]]"), "{text}");
    assert!(text.contains("fresh_for = \"30d\""), "{text}");
}

#[test]
fn a_bad_rule_regex_names_the_line_column_and_field() {
    let text = "[cache]\nshared = true\n\n[[cache.rule]]\nurl = \"^https?://a/\"\nfresh_for = \"1d\"\n\n[[cache.rule]]\nfresh_for = \"1h\"\nurl = \"^https?://(debian/pool/\"\n";
    let (line, column, field, message) = parse_error(text);
    assert_eq!((line, column), (10, 7));
    assert_eq!(field.as_deref(), Some("cache.rule[1].url"));
    assert_eq!(
        message,
        "invalid regular expression \"^https?://(debian/pool/\": unclosed group"
    );
    let shown = parse(text).expect_err("bad regex").to_string();
    assert_eq!(
        shown,
        "meshcache.toml:10:7: cache.rule[1].url: invalid regular expression \"^https?://(debian/pool/\": unclosed group"
    );
    // Other faults the regex crate finds, each on one line.
    for (pattern, why) in [
        (r"\p{Nope}", "Unicode property not found"),
        ("a{2,1}", "invalid repetition count range"),
        ("*", "repetition operator missing expression"),
    ] {
        let text = format!("[[cache.rule]]\nurl = '{pattern}'\nfresh_for = \"1d\"\n");
        let (line, _, field, message) = parse_error(&text);
        assert_eq!(
            (line, field.as_deref()),
            (2, Some("cache.rule[0].url")),
            "{text}"
        );
        assert!(
            message.contains(why) && !message.contains('\n'),
            "{pattern}: {message}"
        );
    }
}

#[test]
fn a_rule_needs_a_url_and_at_least_a_second_of_freshness() {
    let (field, shown) = invalid("[[cache.rule]]\nurl = \"x\"\nfresh_for = \"500ms\"\n");
    assert_eq!(field, "cache.rule[0].fresh_for");
    assert_eq!(
        shown,
        "meshcache.toml: cache.rule[0].fresh_for: must be at least 1s"
    );
    let (line, _, field, message) = parse_error("[[cache.rule]]\nfresh_for = \"1d\"\n");
    assert_eq!((line, field.as_deref()), (1, Some("cache.rule[0]")));
    assert!(message.contains("missing field `url`"), "{message}");
    let (_, _, field, _) =
        parse_error("[[cache.rule]]\nurl = \"x\"\nfresh_for = \"1d\"\nttl = 1\n");
    assert_eq!(field.as_deref(), Some("cache.rule[0].ttl"));
}

#[test]
fn a_bad_upstream_proxy_names_the_line_column_and_field() {
    let text = "[origin]\nconnect_timeout = \"5s\"\nproxy = \"https://proxy.corp:3128\"\n";
    let (line, column, field, message) = parse_error(text);
    assert_eq!(
        (line, column, field.as_deref()),
        (3, 9, Some("origin.proxy"))
    );
    assert_eq!(
        message,
        "\"https://proxy.corp:3128\" is not a proxy URL: only http:// upstream proxies are supported, not https://"
    );
    let (_, _, field, message) = parse_error("[origin]\nproxy = \"http://proxy.corp\"\n");
    assert_eq!(field.as_deref(), Some("origin.proxy"));
    assert!(
        message.ends_with("it needs a port: http://host:port"),
        "{message}"
    );
}

#[test]
fn no_proxy_is_a_list_or_a_comma_string_checked_entry_by_entry() {
    let c = parse("[origin]\nno_proxy = [\"example.com\", \"10.0.0.0/8\", \"*\"]\n").unwrap();
    assert_eq!(c.origin.no_proxy.entries().len(), 3);
    let c = parse("[origin]\nno_proxy = \"example.com,.corp, ::1\"\n").unwrap();
    assert_eq!(
        c.origin.no_proxy.0,
        vec!["example.com".to_string(), ".corp".into(), "::1".into()]
    );
    let (line, _, field, message) =
        parse_error("[origin]\n\nno_proxy = \"ok.example, host:8080\"\n");
    assert_eq!((line, field.as_deref()), (3, Some("origin.no_proxy")));
    assert!(message.contains("ports are not supported"), "{message}");
    let (_, _, field, _) = parse_error("[origin]\nno_proxy = 3\n");
    assert_eq!(field.as_deref(), Some("origin.no_proxy"));
    // Written back as a list, read back the same.
    let c = parse("[origin]\nproxy = \"http://[::1]:3128\"\nno_proxy = \"a.example\"\n").unwrap();
    let again = parse(&c.to_toml_string()).unwrap();
    assert_eq!(again, c);
}
