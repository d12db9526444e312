//! Target `config`: TOML text → `config::Config::from_toml_str`.
//!
//! Invariants: no panic, whatever the text (an error is an error: its message renders,
//! a parse error has a line and column inside the text); a configuration that parses is
//! valid, and [`Config::to_toml_string`] reads back as the same configuration, which
//! writes the same text again. Sizes (`ByteSize`) that parse print back to themselves.

use std::path::Path;

use config::{ByteSize, Config, ConfigError};

use crate::mutate::Shape;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "config",
    run,
    seeds,
    shape: Shape {
        dictionary: DICTIONARY,
        text: true,
        max_len: 4096,
    },
    stats: crate::no_stats,
};

const DICTIONARY: &[&str] = &[
    "[listen]\n",
    "[cache]\n",
    "[origin]\n",
    "[mesh]\n",
    "[tls]\n",
    "[log]\n",
    "[admin]\n",
    "[data]\n",
    "[[cache]]\n",
    " = ",
    "=",
    "\"",
    "'",
    "\"\"\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "#",
    "\\u0000",
    "\\",
    "forward",
    "max_size",
    "max_object_size",
    "heuristic_fraction",
    "memory_object_max",
    "header_read_timeout",
    "lookup_timeout",
    "peers",
    "friends",
    "allow",
    "deny",
    "passthrough",
    "dir",
    "level",
    "connect_ports",
    "share_max_file",
    "true",
    "false",
    "nan",
    "-inf",
    "1e400",
    "0.5",
    "\"10GiB\"",
    "\"1.5GiB\"",
    "\"16383PiB\"",
    "\"16384PiB\"",
    "\"0B\"",
    "\"10s\"",
    "\"1h 30m\"",
    "\"0s\"",
    "\"500ms\"",
    "\"99999999999999999999999d\"",
    "\"127.0.0.1:3128\"",
    "\"[::1]:0\"",
    "\"10.0.0.0/8\"",
    "\"::1/128\"",
    "\"*.bank.example\"",
    "\"endpointabc\"",
    "1979-05-27T07:32:00Z",
    "\u{feff}",
    "\u{e9}",
];

pub fn seeds() -> Vec<Vec<u8>> {
    let full = Config::default().to_toml_string();
    let readme = r#"[listen]
forward = "127.0.0.1:3128"      # the proxy's address
allow = ["127.0.0.0/8", "::1/128"]  # client networks served
max_connections = 1024
max_connections_per_client = 256
max_header_bytes = "64KiB"
header_read_timeout = "10s"
idle_timeout = "75s"
h2_max_concurrent_streams = 100

[admin]
allow = ["127.0.0.1/32", "::1/128"]

[cache]
max_size = "10GiB"
max_object_size = "4GiB"
shared = false
heuristic_fraction = 0.1
range_offset_limit = "16MiB"
background_fill_max = "256MiB"
memory_cache_size = "64MiB"
"#;
    let bad = [
        "[cache]\nmax_size = \"1GiB\"\nmax_object_size = \"2GiB\"\n",
        "[listen]\nforward = \"nowhere\"\n",
        "[mesh]\npeers = [\"endpointabc\", \"nope\"]\nfriends = [\"00\"]\nlookup_timeout = 0\n",
        "cache.max_size = 18446744073709551615\nlisten.max_connections = -1\n",
        "[origin]\nconnect_timeout = \"1h 30m\"\nallow = [\"10.1.2.3/8\"]\nconnect_ports = [443, 65536]\n",
        "[tls]\npassthrough = [\".bank.example\", \"*.x\", \"a b\"]\nlearned_passthrough_ttl = \"7d\"\n[data]\ndir = \"/var/lib/meshcache\"\n",
        "[log]\nlevel = \"\"\"\nwarn\n[data]\n\"\"\"\n",
        "x = { y = { z = 1 } }\n[cache]\nunknown = 1\n",
        "[cache]\nheuristic_fraction = nan\n",
        "\u{e9}\u{e9} = \"\u{e9}\n",
    ];
    let mut out = vec![full.into_bytes(), readme.as_bytes().to_vec(), Vec::new()];
    out.extend(bad.iter().map(|s| s.as_bytes().to_vec()));
    out
}

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check(&text);
    // Every quoted string is also tried as a size.
    for piece in text.split('"').skip(1).step_by(2).take(8) {
        if let Ok(size) = piece.parse::<ByteSize>() {
            note(90);
            let again: ByteSize = size
                .to_string()
                .parse()
                .unwrap_or_else(|e| panic!("{size} (from {piece:?}) does not parse back: {e}"));
            assert_eq!(again, size, "{piece:?}");
        }
    }
}

/// Checks one configuration text.
pub fn check(text: &str) {
    let path = Path::new("fuzz.toml");
    match Config::from_toml_str(text, path) {
        Ok(config) => {
            note(1);
            config.validate().expect("a parsed configuration is valid");
            let written = config.to_toml_string();
            let again = Config::from_toml_str(&written, path).unwrap_or_else(|e| {
                panic!("the written configuration does not read back: {e}\n{written}")
            });
            assert_eq!(again, config, "read back differently:\n{written}");
            assert_eq!(again.to_toml_string(), written, "written differently");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz.toml"), "{message}");
            match e {
                ConfigError::Parse { line, column, .. } => {
                    note(2);
                    let lines = text.split('\n').count();
                    assert!((1..=lines).contains(&line), "line {line} of {lines}");
                    assert!(column >= 1);
                }
                ConfigError::Invalid { field, .. } => {
                    note(3 + crate::input::hash(field.as_bytes()) % 64);
                }
                ConfigError::Read { .. } => panic!("a read error without reading"),
            }
        }
    }
}
