//! Hostile peers: a member of the group that lies. It runs in this process on a real iroh
//! endpoint, speaking the real handshake (it knows the group secret), and answers every
//! lookup with an attestation that is forged, or true but backed by corrupted bytes. The
//! victim is a `meshcache run` process: it must ban the liar and still hand its client
//! the right body, from the origin.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, SecretKey};
use mesh::attest::{Attestation, Claim};
use mesh::proto::{self, Answer, Hello, HelloAck, Proofs, Request, Welcome};

use crate::support::get;
use crate::support::mesh::{create_group, Device};
use crate::support::{pattern, Origin, Reply};

const LEN: u64 = 1 << 20;

#[derive(Debug, Clone, Copy)]
enum Lie {
    /// A valid attestation with one byte of its signature flipped.
    ForgedSignature,
    /// A valid attestation of the true hash, but the bytes served do not match it.
    CorruptBytes,
    /// Not a lie: an honest member that stops sending half-way (it left the carriage).
    WalksAway,
}

#[derive(Debug, Clone)]
struct Liar {
    key: SecretKey,
    group: mesh::Group,
    attestation: Vec<u8>,
}

/// The acceptor's side of the real handshake, as a member of `group` (it knows the
/// secret), welcoming with `peers`. It says it speaks minor version 1 (lookups only, no
/// catalogs): the victim asks it everything, as it asks any peer whose catalog it lacks.
async fn accept_as_member(
    conn: &Connection,
    key: &SecretKey,
    group: &mesh::Group,
    peers: Vec<proto::PeerInfo>,
) -> Result<(), AcceptError> {
    accept_as_member_v(conn, key, group, peers, 1).await
}

/// [`accept_as_member`], saying minor version `version`.
async fn accept_as_member_v(
    conn: &Connection,
    key: &SecretKey,
    group: &mesh::Group,
    peers: Vec<proto::PeerInfo>,
    version: u16,
) -> Result<(), AcceptError> {
    let me = *key.public().as_bytes();
    let them = *conn.remote_id().as_bytes();
    let (mut send, mut recv) = conn.accept_bi().await.map_err(AcceptError::from_err)?;
    let hello: Hello = proto::read_msg(&mut recv)
        .await
        .map_err(AcceptError::from_err)?;
    let ack = HelloAck {
        version,
        nonce: [5; 32],
        proofs: vec![proto::Proof {
            group: group.id(),
            mac: group.membership_mac(b"acceptor", &me, &them, &hello.nonce),
        }],
    };
    proto::write_msg(&mut send, &ack)
        .await
        .map_err(AcceptError::from_err)?;
    let _: Proofs = proto::read_msg(&mut recv)
        .await
        .map_err(AcceptError::from_err)?;
    let welcome = Welcome {
        groups: vec![group.id()],
        peers,
    };
    proto::write_msg(&mut send, &welcome)
        .await
        .map_err(AcceptError::from_err)?;
    let _ = send.finish();
    Ok(())
}

impl ProtocolHandler for Liar {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        accept_as_member(&conn, &self.key, &self.group, vec![]).await?;
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let Ok(Request::Lookup { .. }) = proto::read_msg::<Request>(&mut recv).await else {
                break;
            };
            let answer = Answer::Offers(vec![self.attestation.clone()]);
            if proto::write_msg(&mut send, &answer).await.is_err() {
                break;
            }
            let _ = send.finish();
        }
        Ok(())
    }
}

/// A blobs provider that answers any request with the whole blob, bao-encoded as iroh-blobs
/// does, and (with `flip`) one byte changed in the middle of the stream.
#[derive(Debug, Clone)]
pub(crate) struct LyingBlobs {
    pub store: iroh_blobs::api::Store,
    pub flip: bool,
    /// Send only the first half of the stream, then end it.
    pub half: bool,
}

impl LyingBlobs {
    /// An honest provider with nothing in it (for members whose lies are elsewhere).
    fn empty() -> LyingBlobs {
        LyingBlobs {
            store: (*iroh_blobs::store::mem::MemStore::new()).clone(),
            flip: false,
            half: false,
        }
    }
}

impl ProtocolHandler for LyingBlobs {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let req = recv
                .read_to_end(64 * 1024)
                .await
                .map_err(AcceptError::from_err)?;
            let Ok(iroh_blobs::protocol::Request::Get(get)) = postcard::from_bytes(&req) else {
                break;
            };
            let mut encoded = self
                .store
                .export_bao(get.hash, iroh_blobs::protocol::ChunkRanges::all())
                .bao_to_vec()
                .await
                .map_err(AcceptError::from_err)?;
            if self.flip {
                let mid = encoded.len() / 2;
                encoded[mid] ^= 0x55;
            }
            if self.half {
                encoded.truncate(encoded.len() / 2);
            }
            send.write_all(&encoded)
                .await
                .map_err(AcceptError::from_err)?;
            let _ = send.finish();
        }
        Ok(())
    }
}

/// A claim by `signer` that `key` is a 200 with `headers` and body `hash` of `LEN` bytes,
/// fetched now.
fn claim(
    signer: &SecretKey,
    key: &str,
    hash: iroh_blobs::Hash,
    headers: Vec<(String, Vec<u8>)>,
) -> Claim {
    Claim {
        version: 1,
        signer: *signer.public().as_bytes(),
        key: key.to_string(),
        vary: vec![],
        variant: String::new(),
        status: 200,
        headers,
        hash: hash.into(),
        size: LEN,
        fetched_at_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    }
}

/// A real iroh endpoint on loopback with key `secret`, serving `lookup` and `blobs`;
/// returns it, its router and its ticket.
async fn hostile_endpoint(
    secret: SecretKey,
    lookup: impl ProtocolHandler,
    blobs: impl ProtocolHandler,
) -> (Endpoint, Router, String) {
    let ep = crate::support::mesh::loopback_endpoint(secret).await;
    let router = Router::builder(ep.clone())
        .accept(proto::ALPN, lookup)
        .accept(iroh_blobs::ALPN, blobs)
        .spawn();
    let ticket = {
        use iroh_tickets::Ticket;
        iroh_tickets::endpoint::EndpointTicket::new(ep.addr()).encode_string()
    };
    (ep, router, ticket)
}

async fn liar_run(lie: Lie) {
    let origin = Origin::builder()
        .route("/video.mp4", |_| {
            Reply::generated(LEN).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let url = origin.url("/video.mp4");
    let key = url.clone(); // the normalized key of an http://127.0.0.1:PORT/ URL is the URL itself
    let dir = tempfile::tempdir().unwrap();
    let group_ticket = create_group(dir.path());
    let group = mesh::Group::from_ticket(&group_ticket).unwrap();

    // The liar's store holds the true body (for CorruptBytes, it flips a byte on the wire).
    let body: Vec<u8> = (0..LEN).map(pattern).collect();
    let store_dir = tempfile::tempdir().unwrap();
    let store = iroh_blobs::store::fs::FsStore::load(store_dir.path())
        .await
        .unwrap();
    let tag = store.blobs().add_bytes(body.clone()).await.unwrap();
    let hash = tag.hash;
    let secret = SecretKey::generate();
    let headers = vec![
        ("cache-control".to_string(), b"max-age=600".to_vec()),
        ("content-length".to_string(), LEN.to_string().into_bytes()),
    ];
    let claim = claim(&secret, &key, hash, headers);
    let mut attestation = Attestation::sign(&secret, &claim, std::slice::from_ref(&group));
    if let Lie::ForgedSignature = lie {
        let mut a: Attestation = postcard::from_bytes(&attestation).unwrap();
        a.signature[10] ^= 1;
        attestation = postcard::to_stdvec(&a).unwrap();
    }
    let liar = Liar {
        key: secret.clone(),
        group,
        attestation,
    };
    let blobs = LyingBlobs {
        store: (*store).clone(),
        flip: matches!(lie, Lie::CorruptBytes),
        half: matches!(lie, Lie::WalksAway),
    };
    let (_ep, router, liar_ticket) = hostile_endpoint(secret, liar, blobs).await;

    let victim = Device::start(dir.path(), &[&liar_ticket]);
    victim.wait_peers(1).await;
    let r = get(victim.addr(), &url, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == body, "{lie:?}: the client got the wrong bytes");
    if let Lie::CorruptBytes | Lie::WalksAway = lie {
        // The body had started to stream from the liar: its verified bytes were kept, the
        // origin sent the rest (`Range`), and the whole was checked against the attested
        // hash before the last byte went out.
        let seen = origin.seen("/video.mp4");
        assert_eq!(seen.len(), 1, "the origin filled in once");
        let range = seen[0]
            .headers
            .get("range")
            .map(|v| v.to_str().unwrap().to_string());
        assert!(
            range
                .as_deref()
                .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"),
            "the origin was asked for the rest only: {range:?}"
        );
    } else {
        assert!(
            !r.cache_status().contains("peer="),
            "{lie:?}: {}",
            r.cache_status()
        );
        assert_eq!(
            origin.hits("/video.mp4"),
            1,
            "{lie:?}: the origin filled in"
        );
    }
    let status = victim.status().await;
    if let Lie::WalksAway = lie {
        // Stopping is not lying: no ban, still connected.
        assert_eq!(
            crate::support::mesh::figure(&status, "mesh_bans"),
            0,
            "{status}"
        );
        assert_eq!(
            crate::support::mesh::figure(&status, "mesh_peers_connected"),
            1,
            "{status}"
        );
        victim.stop();
        router.shutdown().await.unwrap();
        return;
    }
    assert!(
        crate::support::mesh::figure(&status, "mesh_bans") >= 1,
        "{lie:?}: not banned: {status}"
    );
    // The status page says why.
    let page = get(victim.addr(), "http://meshcache.local/", &[])
        .await
        .text();
    let why = match lie {
        Lie::ForgedSignature => "attestation that does not check",
        Lie::CorruptBytes => "bytes that do not match the hash",
        Lie::WalksAway => unreachable!(),
    };
    assert!(
        page.contains(why),
        "{lie:?}: the status page does not say {why:?}: {page}"
    );
    // Banned: it is disconnected, and no longer asked.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while victim.figure("mesh_peers_connected").await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the liar is still connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    victim.stop();
    router.shutdown().await.unwrap();
}

/// A member that stops half-way is not banned; the origin sends the rest (`Range`), and the
/// client gets the whole, checked body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_half_way_is_not_banned_and_the_origin_sends_the_rest() {
    liar_run(Lie::WalksAway).await;
}

/// Regression (issue 10, rung 3): a member relaying an entry signed by a stranger, whose
/// attested headers carry a `Content-Digest`, had it accepted when the digest matched the
/// bytes — but whoever signs the claim writes the digest too, so it proves nothing. The
/// offer is ignored (matching digest or not), the origin serves, and nobody is banned:
/// relaying a stranger's offer is no lie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_self_made_digest_is_not_trusted() {
    for matching in [true, false] {
        stranger_offer_with_digest(matching).await;
    }
}

async fn stranger_offer_with_digest(matching: bool) {
    let origin = Origin::builder()
        .route("/doc.pdf", |_| {
            Reply::generated(LEN).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let url = origin.url("/doc.pdf");
    let dir = tempfile::tempdir().unwrap();
    let group = mesh::Group::from_ticket(&create_group(dir.path())).unwrap();
    let body: Vec<u8> = (0..LEN).map(pattern).collect();
    let store_dir = tempfile::tempdir().unwrap();
    let store = iroh_blobs::store::fs::FsStore::load(store_dir.path())
        .await
        .unwrap();
    let hash = store.blobs().add_bytes(body.clone()).await.unwrap().hash;
    let stranger = SecretKey::generate();
    let digest = if matching {
        crate::support::digest::digest_field(&body)
    } else {
        crate::support::digest::digest_field(b"other bytes")
    };
    let headers = vec![
        ("cache-control".into(), b"max-age=600".to_vec()),
        ("content-digest".into(), digest.into_bytes()),
    ];
    let claim = claim(&stranger, &url, hash, headers);
    let secret = SecretKey::generate();
    let relay = Liar {
        key: secret.clone(),
        group,
        attestation: Attestation::sign(&stranger, &claim, &[]),
    };
    let blobs = iroh_blobs::BlobsProtocol::new(&store, None);
    let (_ep, router, ticket) = hostile_endpoint(secret, relay, blobs).await;
    let victim = Device::start(dir.path(), &[&ticket]);
    victim.wait_peers(1).await;
    let r = get(victim.addr(), &url, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == body);
    assert!(
        !r.cache_status().contains("peer="),
        "matching={matching}: taken from the relay: {}",
        r.cache_status()
    );
    assert_eq!(origin.hits("/doc.pdf"), 1, "the origin served it");
    assert_eq!(victim.figure("mesh_bans").await, 0);
    victim.stop();
    router.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_forged_attestation_is_banned_and_the_client_gets_the_right_body() {
    liar_run(Lie::ForgedSignature).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_bytes_that_do_not_match_is_banned_and_the_client_gets_the_right_body() {
    liar_run(Lie::CorruptBytes).await;
}

/// A member that gossips made-up peers: every peer list it gives (at the handshake and each
/// time it is asked) names `proto::MAX_GOSSIP` ids never seen before.
#[derive(Debug, Clone)]
struct Flooder {
    key: SecretKey,
    group: mesh::Group,
    named: Arc<AtomicUsize>,
}

impl Flooder {
    fn made_up(&self) -> Vec<proto::PeerInfo> {
        (0..proto::MAX_GOSSIP)
            .map(|_| {
                self.named.fetch_add(1, Ordering::Relaxed);
                proto::PeerInfo {
                    id: *SecretKey::generate().public().as_bytes(),
                    // Nothing listens there: every dial fails.
                    addrs: vec!["127.0.0.1:9".parse().unwrap()],
                }
            })
            .collect()
    }
}

impl ProtocolHandler for Flooder {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        accept_as_member(&conn, &self.key, &self.group, self.made_up()).await?;
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let answer = match proto::read_msg::<Request>(&mut recv).await {
                Ok(Request::Peers) => Answer::Peers(self.made_up()),
                Ok(_) => Answer::NotFound,
                Err(_) => break,
            };
            if proto::write_msg(&mut send, &answer).await.is_err() {
                break;
            }
            let _ = send.finish();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gossiping_endless_made_up_peers_fills_the_table_only_to_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let group = mesh::Group::from_ticket(&create_group(dir.path())).unwrap();
    let key = SecretKey::generate();
    let named = Arc::new(AtomicUsize::new(0));
    let flooder = Flooder {
        key: key.clone(),
        group,
        named: named.clone(),
    };
    let (_ep, router, ticket) = hostile_endpoint(key, flooder, LyingBlobs::empty()).await;
    let victim = Device::start(dir.path(), &[&ticket]);
    victim.wait_peers(1).await;
    // The victim asks for the peer list every few seconds; wait until the flooder has
    // named more peers than the table holds, plus one more round for the victim to take in.
    let limit = 256; // mesh's peers::MAX_PEERS
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while named.load(Ordering::Relaxed) < limit + 2 * proto::MAX_GOSSIP {
        assert!(
            std::time::Instant::now() < deadline,
            "the victim stopped asking"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = victim.status().await;
    let known = crate::support::mesh::figure(&status, "mesh_peers_known");
    assert!(
        known <= limit as u64 && known >= limit as u64 - proto::MAX_GOSSIP as u64,
        "the table is full but not beyond: {known} peers known after {} named",
        named.load(Ordering::Relaxed)
    );
    assert_eq!(
        crate::support::mesh::figure(&status, "mesh_peers_connected"),
        1,
        "the flooder itself (added by ticket, connected) stays"
    );
    victim.stop();
    router.shutdown().await.unwrap();
}

/// How a member lies in its catalog.
#[derive(Debug, Clone, Copy)]
enum CatalogLie {
    /// A whole catalog whose bits do not decode.
    Garbage,
    /// Fetch times of feed documents nobody asked about.
    UnaskedHeads,
    /// A delta before any whole catalog.
    DeltaFirst,
}

#[derive(Debug, Clone)]
struct CatalogLiar {
    key: SecretKey,
    group: mesh::Group,
    lie: CatalogLie,
    asked: Arc<AtomicUsize>,
}

impl ProtocolHandler for CatalogLiar {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        accept_as_member_v(
            &conn,
            &self.key,
            &self.group,
            vec![],
            proto::CATALOG_VERSION,
        )
        .await?;
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let answer = match proto::read_msg::<Request>(&mut recv).await {
                Ok(Request::Catalog { .. }) => {
                    self.asked.fetch_add(1, Ordering::Relaxed);
                    let mut u = proto::CatalogUpdate {
                        epoch: 7,
                        gen: 3,
                        full: Some(mesh::catalog::Filter::build(["http://a.example/"]).encode()),
                        ..Default::default()
                    };
                    match self.lie {
                        CatalogLie::Garbage => u.full = Some(vec![0xff; 64]),
                        CatalogLie::UnaskedHeads => {
                            u.heads = vec![("http://unasked.example/feed.xml".into(), 1)]
                        }
                        CatalogLie::DeltaFirst => {
                            u.full = None;
                            u.added = vec![1, 2, 3];
                        }
                    }
                    Answer::Catalog(u)
                }
                Ok(_) => Answer::NotFound,
                Err(_) => break,
            };
            if proto::write_msg(&mut send, &answer).await.is_err() {
                break;
            }
            let _ = send.finish();
        }
        Ok(())
    }
}

/// A member whose catalog lies is banned (each lie in turn), and the victim goes on
/// serving from the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_catalog_lies_is_banned_and_the_victim_keeps_serving() {
    let origin = Origin::builder()
        .route("/page", |_| {
            Reply::ok("page").header("cache-control", "max-age=600")
        })
        .run()
        .await;
    for lie in [
        CatalogLie::Garbage,
        CatalogLie::UnaskedHeads,
        CatalogLie::DeltaFirst,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let group = mesh::Group::from_ticket(&create_group(dir.path())).unwrap();
        let key = SecretKey::generate();
        let asked = Arc::new(AtomicUsize::new(0));
        let liar = CatalogLiar {
            key: key.clone(),
            group,
            lie,
            asked: asked.clone(),
        };
        let (_ep, router, ticket) = hostile_endpoint(key, liar, LyingBlobs::empty()).await;
        let victim = Device::start(dir.path(), &[&ticket]);
        victim.wait_figure("mesh_bans", 1).await;
        assert!(
            asked.load(Ordering::Relaxed) >= 1,
            "{lie:?}: the victim asked for the catalog"
        );
        let status = victim.status().await;
        assert_eq!(
            crate::support::mesh::figure(&status, "mesh_catalogs"),
            0,
            "{lie:?}: no catalog kept from a liar: {status}"
        );
        let r = get(victim.addr(), &origin.url("/page"), &[]).await;
        assert_eq!(r.status, 200, "{lie:?}");
        assert_eq!(r.text(), "page");
        victim.stop();
        router.shutdown().await.unwrap();
    }
}

/// A member that speaks version 3 and sends, with a true attestation of a small body, other
/// bytes inline: they are checked against the attested hash before any is used.
#[derive(Debug, Clone)]
struct InlineLiar {
    key: SecretKey,
    group: mesh::Group,
    attestation: Vec<u8>,
    body: Vec<u8>,
}

impl ProtocolHandler for InlineLiar {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        accept_as_member_v(&conn, &self.key, &self.group, vec![], proto::INLINE_VERSION).await?;
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let answer = match proto::read_msg::<Request>(&mut recv).await {
                Ok(Request::LookupInline { .. }) => Answer::OffersInline(vec![proto::Offer {
                    attestation: self.attestation.clone(),
                    body: Some(self.body.clone()),
                }]),
                Ok(Request::Catalog { .. }) => continue,
                _ => break,
            };
            if proto::write_msg(&mut send, &answer).await.is_err() {
                break;
            }
            let _ = send.finish();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_an_inline_body_that_is_not_the_attested_one_is_banned() {
    const SMALL: u64 = 1024;
    let origin = Origin::builder()
        .route("/avatar.png", |_| {
            Reply::generated(SMALL).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let url = origin.url("/avatar.png");
    let dir = tempfile::tempdir().unwrap();
    let group = mesh::Group::from_ticket(&create_group(dir.path())).unwrap();
    let body: Vec<u8> = (0..SMALL).map(pattern).collect();
    let secret = SecretKey::generate();
    let mut claim = claim(
        &secret,
        &url,
        iroh_blobs::Hash::new(&body),
        vec![("cache-control".to_string(), b"max-age=600".to_vec())],
    );
    claim.size = SMALL;
    let attestation = Attestation::sign(&secret, &claim, std::slice::from_ref(&group));
    // The attestation is true; the bytes sent with it are not the attested ones.
    let mut lie = body.clone();
    lie[100] ^= 0x55;
    let liar = InlineLiar {
        key: secret.clone(),
        group,
        attestation,
        body: lie,
    };
    let (_ep, router, ticket) = hostile_endpoint(secret, liar, LyingBlobs::empty()).await;
    let victim = Device::start(dir.path(), &[&ticket]);
    victim.wait_peers(1).await;
    let r = get(victim.addr(), &url, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the client got the liar's bytes");
    assert!(!r.cache_status().contains("peer="), "{}", r.cache_status());
    assert_eq!(origin.hits("/avatar.png"), 1, "the origin filled in");
    let status = victim.status().await;
    assert!(
        crate::support::mesh::figure(&status, "mesh_bans") >= 1,
        "not banned: {status}"
    );
    let page = get(victim.addr(), "http://meshcache.local/", &[])
        .await
        .text();
    assert!(
        page.contains("inline body that is not the attested one"),
        "the status page does not say why: {page}"
    );
    victim.stop();
    router.shutdown().await.unwrap();
}
