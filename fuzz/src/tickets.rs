//! Target `tickets`: text → group tickets (`mesh::group::Group::from_ticket`), share
//! tickets (`mesh::share::ShareTicket::decode`) and endpoint tickets as `mesh.peers` and
//! `--peer` are read (`mesh::parse_peer`).
//!
//! Input: a mode byte, then the ticket text (lossy UTF-8); mode 3 builds a share ticket
//! and an endpoint address from the bytes with `arbitrary` instead.
//!
//! Invariants: decode(encode(x)) == x for anything that decodes; a group ticket that
//! decodes is, lower-cased, the ticket of its group (one spelling per group, up to case);
//! a share ticket's name is safe (no directory, control character or quote, ≤ 200 bytes).

use arbitrary::{Result as ArbResult, Unstructured};
use iroh::{EndpointAddr, SecretKey};
use iroh_tickets::{endpoint::EndpointTicket, Ticket};
use mesh::group::Group;
use mesh::share::ShareTicket;

use crate::mutate::Shape;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "tickets",
    run,
    seeds,
    shape: Shape {
        dictionary: &[
            "meshgroup",
            "meshshare",
            "endpoint",
            "MESHGROUP",
            "a",
            "aa",
            "aaaaaaa",
            "7",
            "=",
            " ",
            "\u{a0}",
        ],
        text: true,
        max_len: 16384,
    },
    stats: crate::no_stats,
};

/// The group with this secret (built through its ticket, the only way in).
pub fn group_from_secret(secret: &[u8; 32]) -> Group {
    let mut raw = secret.to_vec();
    raw.extend_from_slice(&blake3::hash(secret).as_bytes()[..4]);
    let ticket = format!(
        "meshgroup{}",
        data_encoding::BASE32_NOPAD
            .encode(&raw)
            .to_ascii_lowercase()
    );
    Group::from_ticket(&ticket).expect("a well-formed group ticket")
}

pub fn example_addr() -> EndpointAddr {
    EndpointAddr::new(SecretKey::from_bytes(&[5; 32]).public())
        .with_ip_addr("127.0.0.1:5000".parse().unwrap())
        .with_ip_addr("[::1]:4919".parse().unwrap())
}

pub fn seeds() -> Vec<Vec<u8>> {
    let with = |mode: u8, s: &str| {
        let mut v = vec![mode];
        v.extend_from_slice(s.as_bytes());
        v
    };
    let g = group_from_secret(&[3; 32]).ticket();
    let share = ShareTicket {
        addr: example_addr(),
        hash: [9; 32],
        size: 42,
        name: "notes.txt".into(),
    }
    .encode();
    let relay: iroh::RelayUrl = "https://relay.example.org/".parse().unwrap();
    let endpoint = EndpointTicket::new(example_addr()).encode_string();
    let relayed = EndpointTicket::new(example_addr().with_relay_url(relay)).encode_string();
    vec![
        with(0, &g),
        with(
            0,
            &format!(
                "  {}\n",
                g.to_ascii_uppercase().replace("MESHGROUP", "meshgroup")
            ),
        ),
        with(0, "meshgroupaaaa"),
        with(1, &share),
        with(1, "meshshareAAAA"),
        with(2, &endpoint),
        with(2, &relayed),
        with(2, "endpointabc"),
        {
            let mut v = vec![3];
            v.extend((0..120u32).map(|i| (i * 151 % 256) as u8));
            v
        },
    ]
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        0 => check_group(&text),
        1 => check_share(&text),
        2 => check_endpoint(&text),
        _ => {
            let _ = built(&mut Unstructured::new(rest));
        }
    }
}

fn check_group(text: &str) {
    let Ok(g) = Group::from_ticket(text) else {
        note(1);
        return;
    };
    note(2);
    let ticket = g.ticket();
    assert_eq!(Group::from_ticket(&ticket).expect("its own ticket"), g);
    let rest = text.trim().strip_prefix("meshgroup").unwrap();
    assert_eq!(
        ticket,
        format!("meshgroup{}", rest.to_ascii_lowercase()),
        "two spellings of one group ticket"
    );
}

fn check_share(text: &str) {
    let Ok(t) = ShareTicket::decode(text) else {
        note(10);
        return;
    };
    note(11);
    check_name(&t.name);
    let again = ShareTicket::decode(&t.encode()).expect("a decoded share ticket re-encodes");
    assert_eq!(again, t);
}

fn check_name(name: &str) {
    assert!(!name.is_empty() && name != "." && name != "..", "{name:?}");
    assert!(name.len() <= 200, "{name:?}");
    assert!(
        !name.contains(['/', '\\', '"']) && !name.chars().any(char::is_control),
        "{name:?}"
    );
    assert_eq!(
        mesh::share::safe_name(name),
        name,
        "safe_name is not idempotent"
    );
}

fn check_endpoint(text: &str) {
    let Ok(addr) = mesh::parse_peer(text) else {
        note(20);
        return;
    };
    note(21 + addr.addrs.len().min(8) as u64);
    let ticket = EndpointTicket::new(addr.clone()).encode_string();
    let again = mesh::parse_peer(&ticket).expect("a re-encoded endpoint ticket parses");
    assert_eq!(again, addr);
}

fn built(u: &mut Unstructured) -> ArbResult<()> {
    let mut addr = EndpointAddr::new(SecretKey::from_bytes(&u.arbitrary()?).public());
    for _ in 0..u.int_in_range(0..=4)? {
        let ip: std::net::IpAddr = if u.arbitrary()? {
            std::net::IpAddr::from(u.arbitrary::<[u8; 4]>()?)
        } else {
            std::net::IpAddr::from(u.arbitrary::<[u8; 16]>()?)
        };
        addr = addr.with_ip_addr(std::net::SocketAddr::new(ip, u.arbitrary()?));
    }
    if u.arbitrary()? {
        let host: String = u.arbitrary()?;
        if let Ok(url) = format!("https://{host}/").parse::<iroh::RelayUrl>() {
            addr = addr.with_relay_url(url);
        }
    }
    let endpoint = EndpointTicket::new(addr.clone()).encode_string();
    assert_eq!(
        mesh::parse_peer(&endpoint).expect("an endpoint ticket parses"),
        addr
    );
    let t = ShareTicket {
        addr,
        hash: u.arbitrary()?,
        size: u.arbitrary()?,
        name: u.arbitrary()?,
    };
    let encoded = t.encode();
    match ShareTicket::decode(&encoded) {
        Ok(back) => {
            note(30);
            check_name(&back.name);
            assert_eq!(
                back,
                ShareTicket {
                    name: mesh::share::safe_name(&t.name),
                    ..t
                }
            );
        }
        Err(e) => {
            note(31);
            assert!(encoded.len() > 8192 + "meshshare".len(), "{e}");
        }
    }
    Ok(())
}
