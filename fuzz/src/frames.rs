//! Target `frames`: bytes → the `meshcache/1` messages (`mesh::proto`) and the open
//! mesh's `meshcache-open/1` messages (`mesh::open::proto`, what strangers send), decoded
//! with postcard as `read_msg` does.
//!
//! Input: one selector byte (low 3 bits: `Hello`, `HelloAck`, `Proofs`, `Welcome`,
//! `Request`, `Answer`, `OpenRequest`, `OpenAnswer`; high bit: build a message from the
//! bytes with `arbitrary` instead of decoding them — the first six kinds), then the body.
//!
//! Invariants: decoding never panics; a decoded message re-encodes to bytes that decode to
//! an equal message and re-encode to the same bytes (the encoding of a value is canonical,
//! a fixed point); a message built from parts round-trips to the same value and bytes.
//! Offers in an `Answer` go through the attestation checks.
//!
//! postcard is not strict: `from_bytes` ignores bytes after the message and accepts
//! over-long varints (`[0x80, 0x00]` for 0), so the same message has many encodings. The
//! counts are in the report (`stats`); see the unit tests. An IPv6 address's scope id and
//! flow info are not encoded at all (`[fe80::1%2]:1` arrives as `[fe80::1]:1`).

use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::{Result as ArbResult, Unstructured};
use mesh::open::proto::{OpenAnswer, OpenRequest};
use mesh::proto::{Answer, Hello, HelloAck, PeerInfo, Proof, Proofs, Request, Welcome};
use serde::{de::DeserializeOwned, Serialize};

use crate::mutate::Shape;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "frames",
    run,
    seeds,
    shape: Shape {
        dictionary: &[],
        text: false,
        max_len: 4096,
    },
    stats,
};

static DECODED: AtomicU64 = AtomicU64::new(0);
static NON_CANONICAL: AtomicU64 = AtomicU64::new(0);
static TRAILING: AtomicU64 = AtomicU64::new(0);

fn stats() -> String {
    format!(
        "decoded {}, of which {} not in canonical form and {} with trailing bytes (accepted by postcard)",
        DECODED.load(Ordering::Relaxed),
        NON_CANONICAL.load(Ordering::Relaxed),
        TRAILING.load(Ordering::Relaxed)
    )
}

/// Example messages, one of each kind.
pub fn examples() -> Vec<(u8, Vec<u8>)> {
    let addrs: Vec<SocketAddr> = vec![
        "127.0.0.1:4919".parse().unwrap(),
        "[::1]:5000".parse().unwrap(),
        "[fe80::1%2]:65535".parse().unwrap(),
    ];
    let peer = PeerInfo {
        id: [9; 32],
        addrs: addrs.clone(),
    };
    let proof = Proof {
        group: [2; 16],
        mac: [3; 32],
    };
    let offers: Vec<Vec<u8>> = crate::attest::seeds()
        .into_iter()
        .filter(|s| s.first() == Some(&0))
        .map(|s| s[1..].to_vec())
        .collect();
    vec![
        (
            0,
            enc(&Hello {
                version: mesh::proto::VERSION,
                nonce: [1; 32],
                groups: vec![[2; 16], [4; 16]],
                addrs: addrs.clone(),
            }),
        ),
        (
            1,
            enc(&HelloAck {
                version: u16::MAX,
                nonce: [5; 32],
                proofs: vec![proof.clone()],
            }),
        ),
        (
            2,
            enc(&Proofs {
                proofs: vec![proof.clone(), proof],
            }),
        ),
        (
            3,
            enc(&Welcome {
                groups: vec![[2; 16]],
                peers: vec![peer.clone()],
            }),
        ),
        (
            4,
            enc(&Request::Lookup {
                key: "http://example.com/a?b".into(),
                wait_ms: u32::MAX,
            }),
        ),
        (4, enc(&Request::Peers)),
        (5, enc(&Answer::Offers(offers.clone()))),
        (
            6,
            enc(&OpenRequest::Content {
                tag: [7; 32],
                wait_ms: 100,
            }),
        ),
        (7, enc(&OpenAnswer::Fetching)),
        (6, enc(&OpenRequest::Signed { tag: [8; 32] })),
        (7, enc(&OpenAnswer::NotFound)),
        (
            7,
            enc(&OpenAnswer::Content {
                hash: [1; 32],
                size: u64::MAX,
            }),
        ),
        (7, enc(&OpenAnswer::Signed(offers))),
        (5, enc(&Answer::Fetching)),
        (5, enc(&Answer::NotFound)),
        (5, enc(&Answer::Peers(vec![peer]))),
    ]
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("encodes")
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = examples()
        .into_iter()
        .map(|(kind, body)| {
            let mut v = vec![kind];
            v.extend(body);
            v
        })
        .collect();
    for kind in 0..6u8 {
        let mut v = vec![0x80 | kind];
        v.extend((0..64u8).map(|i| i.wrapping_mul(37)));
        out.push(v);
    }
    out
}

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = selector & 7;
    if selector & 0x80 != 0 {
        let mut u = Unstructured::new(body);
        let _ = match kind {
            0 => build_hello(&mut u).map(|m| exact(&m)),
            1 => build_hello_ack(&mut u).map(|m| exact(&m)),
            2 => build_proofs(&mut u).map(|m| exact(&Proofs { proofs: m })),
            3 => build_welcome(&mut u).map(|m| exact(&m)),
            4 => build_request(&mut u).map(|m| exact(&m)),
            5 => build_answer(&mut u).map(|m| exact(&m)),
            _ => Ok(()),
        };
        return;
    }
    match kind {
        0 => _ = decode::<Hello>(body, 0),
        1 => _ = decode::<HelloAck>(body, 1),
        2 => _ = decode::<Proofs>(body, 2),
        3 => _ = decode::<Welcome>(body, 3),
        4 => _ = decode::<Request>(body, 4),
        5 => {
            if let Some(Answer::Offers(offers)) = decode::<Answer>(body, 5) {
                for o in offers.iter().take(4) {
                    crate::attest::check_bytes(o);
                }
            }
        }
        6 => _ = decode::<OpenRequest>(body, 6),
        _ => {
            if let Some(OpenAnswer::Signed(list)) = decode::<OpenAnswer>(body, 7) {
                for o in list.iter().take(4) {
                    crate::attest::check_bytes(o);
                }
            }
        }
    }
}

/// Decodes `bytes` as `read_msg` would and checks the round trip.
fn decode<T>(bytes: &[u8], kind: u64) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let Ok((value, rest)) = postcard::take_from_bytes::<T>(bytes) else {
        note(kind * 10);
        return None;
    };
    // What read_msg gets: the same value (from_bytes ignores what follows).
    let whole: T = postcard::from_bytes(bytes).expect("take_from_bytes decoded it");
    assert_eq!(whole, value);
    DECODED.fetch_add(1, Ordering::Relaxed);
    let used = &bytes[..bytes.len() - rest.len()];
    let encoded = postcard::to_stdvec(&value).expect("a decoded message encodes");
    let again: T = postcard::from_bytes(&encoded).expect("a re-encoded message decodes");
    assert_eq!(again, value, "re-encoding changed the message");
    assert_eq!(
        postcard::to_stdvec(&again).unwrap(),
        encoded,
        "encoding is not a fixed point"
    );
    if encoded != used {
        NON_CANONICAL.fetch_add(1, Ordering::Relaxed);
        note(kind * 10 + 1);
    } else {
        note(kind * 10 + 2);
    }
    if !rest.is_empty() {
        TRAILING.fetch_add(1, Ordering::Relaxed);
        note(kind * 10 + 3);
    }
    Some(value)
}

/// A message built from parts encodes and decodes to itself, byte for byte.
fn exact<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = postcard::to_stdvec(value).expect("encodes");
    let (back, rest) = postcard::take_from_bytes::<T>(&bytes).expect("decodes");
    assert!(rest.is_empty(), "bytes left over");
    assert_eq!(&back, value);
    assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes);
    note(100 + (bytes.len() as u64).min(64));
}

fn addr(u: &mut Unstructured) -> ArbResult<SocketAddr> {
    let ip: IpAddr = if u.arbitrary()? {
        IpAddr::from(u.arbitrary::<[u8; 4]>()?)
    } else {
        IpAddr::from(u.arbitrary::<[u8; 16]>()?)
    };
    // No IPv6 scope id or flow info: serde's encoding of a `SocketAddr` leaves them out
    // (link-local addresses are not gossiped for that reason, see `interface_addrs`).
    Ok(SocketAddr::new(ip, u.arbitrary()?))
}

fn addrs(u: &mut Unstructured) -> ArbResult<Vec<SocketAddr>> {
    let n = u.int_in_range(0..=8)?;
    (0..n).map(|_| addr(u)).collect()
}

fn build_hello(u: &mut Unstructured) -> ArbResult<Hello> {
    Ok(Hello {
        version: u.arbitrary()?,
        nonce: u.arbitrary()?,
        groups: u.arbitrary()?,
        addrs: addrs(u)?,
    })
}

fn build_proofs(u: &mut Unstructured) -> ArbResult<Vec<Proof>> {
    let n = u.int_in_range(0..=8)?;
    (0..n)
        .map(|_| {
            Ok(Proof {
                group: u.arbitrary()?,
                mac: u.arbitrary()?,
            })
        })
        .collect()
}

fn build_hello_ack(u: &mut Unstructured) -> ArbResult<HelloAck> {
    Ok(HelloAck {
        version: u.arbitrary()?,
        nonce: u.arbitrary()?,
        proofs: build_proofs(u)?,
    })
}

fn build_peers(u: &mut Unstructured) -> ArbResult<Vec<PeerInfo>> {
    let n = u.int_in_range(0..=4)?;
    (0..n)
        .map(|_| {
            Ok(PeerInfo {
                id: u.arbitrary()?,
                addrs: addrs(u)?,
            })
        })
        .collect()
}

fn build_welcome(u: &mut Unstructured) -> ArbResult<Welcome> {
    Ok(Welcome {
        groups: u.arbitrary()?,
        peers: build_peers(u)?,
    })
}

fn build_request(u: &mut Unstructured) -> ArbResult<Request> {
    Ok(if u.arbitrary()? {
        Request::Lookup {
            key: u.arbitrary()?,
            wait_ms: u.arbitrary()?,
        }
    } else {
        Request::Peers
    })
}

fn build_answer(u: &mut Unstructured) -> ArbResult<Answer> {
    Ok(match u.int_in_range(0..=3)? {
        0 => Answer::Offers(u.arbitrary()?),
        1 => Answer::Fetching,
        2 => Answer::NotFound,
        _ => Answer::Peers(build_peers(u)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `stats` line reports, pinned down: postcard accepts more than one encoding.
    #[test]
    fn postcard_accepts_non_canonical_encodings() {
        let peers = postcard::to_stdvec(&Request::Peers).unwrap();
        assert_eq!(peers, [1]);
        // Trailing bytes are ignored by from_bytes (read_msg's decoder).
        let r: Request = postcard::from_bytes(&[1, 0xff, 0xff]).unwrap();
        assert_eq!(r, Request::Peers);
        // An over-long varint for the variant index.
        let r: Result<Request, _> = postcard::from_bytes(&[0x81, 0x00]);
        assert_eq!(r.ok(), Some(Request::Peers));
    }

    #[test]
    fn examples_round_trip() {
        for (kind, body) in examples() {
            let mut d = vec![kind];
            d.extend(&body);
            run(&d);
        }
    }
}
