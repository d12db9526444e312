use std::sync::Arc;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};

use super::{client_trusting, contains, handshake, is_name_error, serial_of, DAY, H2, HTTP1};
use crate::{Ca, CertError, Leaves};

fn setup(capacity: usize) -> (tempfile::TempDir, Arc<Ca>, Leaves) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(dir.path()).unwrap());
    let leaves = Leaves::new(ca.clone(), capacity);
    (dir, ca, leaves)
}

const BOTH: &[&[u8]] = &[H2, HTTP1];

/// The DER of extendedKeyUsage serverAuth (1.3.6.1.5.5.7.3.1).
const SERVER_AUTH_OID: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

#[test]
fn a_dns_leaf_verifies_for_its_name_only() {
    let (_dir, ca, leaves) = setup(8);
    let server = leaves.server_config("example.test", BOTH).unwrap();
    let client = client_trusting(ca.cert_der(), BOTH, 0);

    let outcome = handshake(client.clone(), server.clone(), "example.test").unwrap();
    assert_eq!(outcome.chain.len(), 2, "the leaf, then the CA");
    assert_eq!(outcome.chain[1].as_ref(), ca.cert_der());
    assert!(contains(&outcome.chain[0], SERVER_AUTH_OID));
    assert!(contains(&outcome.chain[0], b"example.test"));

    let e = handshake(client, server, "other.test").unwrap_err();
    assert!(is_name_error(&e), "{e:?}");
}

#[test]
fn ip_leaves_verify_for_their_address_only() {
    let (_dir, ca, leaves) = setup(8);
    let client = client_trusting(ca.cert_der(), BOTH, 0);
    for (host, other) in [("127.0.0.1", "127.0.0.2"), ("::1", "::2")] {
        let server = leaves.server_config(host, BOTH).unwrap();
        handshake(client.clone(), server.clone(), host).unwrap();
        let e = handshake(client.clone(), server.clone(), other).unwrap_err();
        assert!(is_name_error(&e), "{host}: {e:?}");
        // A DNS name that reads like the address does not match an IP leaf either.
        let e = handshake(client.clone(), server, "example.test").unwrap_err();
        assert!(is_name_error(&e), "{host}: {e:?}");
    }
    // Brackets are accepted and mean the same host.
    let plain = leaves.server_config("::1", BOTH).unwrap();
    assert!(Arc::ptr_eq(
        &plain,
        &leaves.server_config("[::1]", BOTH).unwrap()
    ));
}

#[test]
fn a_leaf_is_valid_from_a_day_ago_for_thirty_days() {
    let (_dir, ca, leaves) = setup(8);
    let server = leaves.server_config("example.test", BOTH).unwrap();
    let at = |offset| client_trusting(ca.cert_der(), BOTH, offset);

    for offset in [-DAY + 600, 29 * DAY] {
        handshake(at(offset), server.clone(), "example.test").unwrap();
    }
    let e = handshake(at(-DAY - 600), server.clone(), "example.test").unwrap_err();
    assert!(
        matches!(
            e,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            )
        ),
        "{e:?}"
    );
    let e = handshake(at(31 * DAY), server, "example.test").unwrap_err();
    assert!(
        matches!(
            e,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{e:?}"
    );
}

#[test]
fn alpn_is_the_first_of_the_servers_protocols_that_the_client_offers() {
    let (_dir, ca, leaves) = setup(8);
    let server = leaves.server_config("example.test", BOTH).unwrap();
    let negotiated = |offer: &[&[u8]]| {
        let client = client_trusting(ca.cert_der(), offer, 0);
        handshake(client, server.clone(), "example.test").map(|o| o.alpn)
    };
    assert_eq!(negotiated(&[H2, HTTP1]).unwrap().as_deref(), Some(H2));
    assert_eq!(negotiated(&[HTTP1, H2]).unwrap().as_deref(), Some(H2));
    assert_eq!(negotiated(&[HTTP1]).unwrap().as_deref(), Some(HTTP1));
    assert_eq!(
        negotiated(&[b"spdy/3", HTTP1]).unwrap().as_deref(),
        Some(HTTP1)
    );
    assert_eq!(negotiated(&[]).unwrap(), None);
    let e = negotiated(&[b"h3"]).unwrap_err();
    assert_eq!(
        e,
        rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol)
    );

    let http1_only = leaves.server_config("example.test", &[HTTP1]).unwrap();
    let client = client_trusting(ca.cert_der(), BOTH, 0);
    let outcome = handshake(client, http1_only, "example.test").unwrap();
    assert_eq!(outcome.alpn.as_deref(), Some(HTTP1));
}

#[test]
fn the_second_call_for_a_host_reuses_its_config() {
    let (_dir, _ca, leaves) = setup(8);
    assert!(leaves.is_empty());
    let first = leaves.server_config("example.test", BOTH).unwrap();
    let again = leaves.server_config("example.test", BOTH).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    // Case and a trailing dot do not make another host.
    let upper = leaves.server_config("EXAMPLE.test.", BOTH).unwrap();
    assert!(Arc::ptr_eq(&first, &upper));
    // A clone shares the cache.
    let clone = leaves.clone();
    assert!(Arc::ptr_eq(
        &first,
        &clone.server_config("example.test", BOTH).unwrap()
    ));
    assert_eq!(leaves.len(), 1);
    // Other protocols are another configuration.
    let http1 = leaves.server_config("example.test", &[HTTP1]).unwrap();
    assert!(!Arc::ptr_eq(&first, &http1));
    assert_eq!(leaves.len(), 2);
}

#[test]
fn the_cache_holds_at_most_capacity_hosts_least_recently_used_out() {
    let capacity = 4;
    let (_dir, _ca, leaves) = setup(capacity);
    let host = |i: usize| format!("host{i}.example.test");
    let mut configs = Vec::new();
    for i in 0..capacity {
        configs.push(leaves.server_config(&host(i), BOTH).unwrap());
    }
    // Touch host0: host1 is now the least recently used.
    leaves.server_config(&host(0), BOTH).unwrap();
    leaves.server_config(&host(capacity), BOTH).unwrap();
    assert_eq!(leaves.len(), capacity);
    assert!(Arc::ptr_eq(
        &configs[0],
        &leaves.server_config(&host(0), BOTH).unwrap()
    ));
    assert!(!Arc::ptr_eq(
        &configs[1],
        &leaves.server_config(&host(1), BOTH).unwrap()
    ));

    for i in 0..capacity + 5 {
        leaves.server_config(&host(100 + i), BOTH).unwrap();
    }
    assert_eq!(leaves.len(), capacity);
}

#[test]
fn an_old_config_is_minted_again_with_a_new_serial() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(dir.path()).unwrap());
    let leaves = Leaves::with_reuse(ca.clone(), 8, Duration::ZERO);
    let client = client_trusting(ca.cert_der(), BOTH, 0);
    let first = leaves.server_config("example.test", BOTH).unwrap();
    let second = leaves.server_config("example.test", BOTH).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(leaves.len(), 1);

    let a = handshake(client.clone(), first, "example.test").unwrap();
    let b = handshake(client, second, "example.test").unwrap();
    // Same host, same key: only a random serial tells the two apart, as browsers require.
    assert_ne!(serial_of(&a.chain[0]), serial_of(&b.chain[0]));
}

#[test]
fn leaves_of_different_hosts_have_different_serials() {
    let (_dir, ca, leaves) = setup(8);
    let client = client_trusting(ca.cert_der(), BOTH, 0);
    let mut serials = Vec::new();
    for host in ["a.test", "b.test", "c.test"] {
        let server = leaves.server_config(host, BOTH).unwrap();
        let outcome = handshake(client.clone(), server, host).unwrap();
        serials.push(serial_of(&outcome.chain[0]));
    }
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 3);
}

#[test]
fn a_bad_host_is_an_error() {
    let (_dir, _ca, leaves) = setup(8);
    for host in [
        "",
        ".",
        "exa mple.test",
        "a..b",
        "[example.test]",
        "[127.0.0.1]",
        "fe80::1%eth0",
    ] {
        match leaves.server_config(host, BOTH) {
            Err(CertError::Generate(message)) => assert!(message.contains(host), "{message}"),
            Err(e) => panic!("{host:?}: {e:?}"),
            Ok(_) => panic!("{host:?} was accepted"),
        }
    }
    assert!(leaves.is_empty());
}

#[test]
fn leaves_are_shareable_between_threads() {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
    assert_shareable::<Leaves>();

    let (_dir, _ca, leaves) = setup(8);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let leaves = leaves.clone();
            std::thread::spawn(move || leaves.server_config("example.test", BOTH).unwrap())
        })
        .collect();
    let configs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(leaves.len(), 1);
    // Whoever minted first, everyone ends with the cached one from now on.
    let cached = leaves.server_config("example.test", BOTH).unwrap();
    assert!(configs.iter().any(|c| Arc::ptr_eq(c, &cached)));
}
