//! HTTPS interception: the client's TLS handshake is completed with a leaf certificate for
//! the name it asked for (SNI, else the tunnel's host), minted by `certs`; the decrypted
//! stream goes into the one server stack as HTTP/1.1 or h2 (by ALPN), each request under its
//! `https://` URL. The handshake has `header_read_timeout` to arrive and complete. A client
//! that rejects our certificate has the host learned for it ([`crate::tls`]).

use std::sync::Arc;

use http::uri::Authority;
use rustls::AlertDescription;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;

use super::stack::{self, Conn, Handler};
use crate::state::State;

/// Was the handshake failure the client refusing our certificate?
fn client_refused_certificate(e: &std::io::Error) -> bool {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return false;
    };
    matches!(
        inner,
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied
        )
    )
}

/// Completes the client's TLS handshake on a stream (an upgraded CONNECT, or a
/// redirected connection) and serves the decrypted requests for `authority`.
pub(crate) async fn intercept<IO>(
    state: &Arc<State>,
    io: IO,
    authority: Authority,
    conn: Conn,
    handler: Handler,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = state.tls.as_ref() else {
        return;
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let limit = conn.opts.header_read_timeout;
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
            .await
            .map_err(|e| format!("not a TLS ClientHello: {e}"))?;
        let name = start
            .client_hello()
            .server_name()
            .map(str::to_owned)
            .unwrap_or_else(|| host.clone());
        let config = tls
            .leaves
            .server_config(&name, &[b"h2", b"http/1.1"])
            .map_err(|e| format!("cannot mint a certificate for {name}: {e}"))?;
        match start.into_stream(config).await {
            Ok(s) => Ok(s),
            Err(e) if client_refused_certificate(&e) => {
                tls.learn(conn.client.ip(), &host);
                tracing::warn!(%host, client = %conn.client.addr, "the client refused our certificate (pinned app?): tunnelling {host} blindly for this client from now on");
                Err(String::new())
            }
            Err(e) => Err(format!("TLS handshake with the client failed: {e}")),
        }
    };
    let mut shutdown = conn.shutdown.clone();
    let handshake = async {
        tokio::select! {
            r = tokio::time::timeout(limit, handshake) => r,
            _ = stack::stopped(&mut shutdown) => Ok(Err("shutting down".to_string())),
        }
    };
    let stream = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(why)) => {
            if !why.is_empty() {
                tracing::debug!(%authority, "{why}");
            }
            return;
        }
        Err(_) => {
            tracing::debug!(%authority, "no TLS handshake within {limit:?}");
            return;
        }
    };
    // The first decrypted request head is due `header_read_timeout` after the handshake.
    let conn = Conn {
        accepted: tokio::time::Instant::now(),
        ..conn
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        stack::http2(stream, conn, handler).await
    } else {
        stack::http1(stream, conn, handler).await
    }
}
