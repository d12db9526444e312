//! Test helpers: clients that trust only our CA, and real TLS handshakes in memory.

#[cfg(unix)]
mod ca;
mod leaf;
mod origin;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::ClientConnection;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ServerConnection;
use rustls::time_provider::TimeProvider;
use rustls::{CertificateError, ClientConfig, Connection, RootCertStore, ServerConfig};

use crate::crypto::provider;

pub(crate) const H2: &[u8] = b"h2";
pub(crate) const HTTP1: &[u8] = b"http/1.1";

pub(crate) const DAY: i64 = 24 * 60 * 60;

/// A clock stopped at a given time, to verify certificates as of another day.
#[derive(Debug)]
struct FixedTime(UnixTime);

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

/// A client that trusts `ca_der` and nothing else, offers `alpn`, and believes the time is
/// now plus `offset_secs`.
pub(crate) fn client_trusting(
    ca_der: &[u8],
    alpn: &[&[u8]],
    offset_secs: i64,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("the CA certificate is a valid trust anchor");
    let now = UnixTime::now().as_secs() as i64 + offset_secs;
    let time = FixedTime(UnixTime::since_unix_epoch(Duration::from_secs(now as u64)));
    let mut config = ClientConfig::builder_with_details(provider(), Arc::new(time))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What a successful handshake showed the client.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) alpn: Option<Vec<u8>>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
}

/// A TLS handshake between `client` (connecting to `name`) and `server`, bytes pumped
/// between the two in memory, then "ping" sent through it. On failure, the client's error
/// (or the server's, when the client saw none).
pub(crate) fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<Outcome, rustls::Error> {
    let server_name = ServerName::try_from(name.to_string()).expect("a valid server name");
    let mut client = Connection::Client(ClientConnection::new(client, server_name)?);
    let mut server = Connection::Server(ServerConnection::new(server)?);
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
        transfer(&mut client, &mut server);
        let server_result = server.process_new_packets();
        transfer(&mut server, &mut client);
        client.process_new_packets()?;
        server_result?;
    }
    assert!(
        !client.is_handshaking() && !server.is_handshaking(),
        "handshake stalled"
    );

    client.writer().write_all(b"ping").expect("buffered");
    transfer(&mut client, &mut server);
    server.process_new_packets()?;
    let mut received = [0u8; 4];
    server
        .reader()
        .read_exact(&mut received)
        .expect("the server got the data");
    assert_eq!(&received, b"ping");

    Ok(Outcome {
        alpn: client.alpn_protocol().map(<[u8]>::to_vec),
        chain: client
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
    })
}

/// Moves every TLS byte `from` wants to send into `to`.
fn transfer(from: &mut Connection, to: &mut Connection) {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).expect("writing to a Vec");
    }
    let mut rest = &buf[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("reading from a slice");
    }
}

/// Whether the client refused the certificate because it is for another name.
pub(crate) fn is_name_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

/// The serial number of a DER certificate: `Certificate ::= SEQUENCE { tbsCertificate
/// SEQUENCE { [0] EXPLICIT version, serialNumber INTEGER, ... } ... }`.
pub(crate) fn serial_of(der: &[u8]) -> Vec<u8> {
    fn header(der: &[u8]) -> (u8, usize, &[u8]) {
        let tag = der[0];
        let (len, skip) = match der[1] {
            n if n < 0x80 => (n as usize, 2),
            n => {
                let count = (n & 0x7f) as usize;
                let len = der[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                (len, 2 + count)
            }
        };
        (tag, len, &der[skip..])
    }
    let (_, _, tbs) = header(der); // Certificate
    let (_, _, fields) = header(tbs); // tbsCertificate
    let (tag, version_len, rest) = header(fields);
    assert_eq!(tag, 0xa0, "a v3 certificate starts with its version");
    let (tag, len, serial) = header(&rest[version_len..]);
    assert_eq!(tag, 0x02, "then its serial number");
    serial[..len].to_vec()
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
