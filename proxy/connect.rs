//! `CONNECT`: intercepted (see `tls.rs`) unless the host is on a passthrough list, in
//! which case it is a blind TCP tunnel. For a tunnel the proxy connects first and answers
//! 200 only once the origin accepted, so a failure is a proper 502/504, not a dropped
//! connection.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::flow::{local_error, Outcome};
use crate::headers::Phase;
use crate::state::State;

pub async fn handle(
    state: &Arc<State>,
    peer: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Outcome {
    let Some(authority) = req.uri().authority().cloned() else {
        return local_error(
            StatusCode::BAD_REQUEST,
            "bad-connect",
            "meshcache: CONNECT needs host:port\n".into(),
        );
    };
    let Some(port) = authority.port_u16() else {
        return local_error(
            StatusCode::BAD_REQUEST,
            "bad-connect",
            "meshcache: CONNECT needs host:port\n".into(),
        );
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if state.tls.as_ref().is_some_and(|t| !t.is_passthrough(&host)) {
        let upgrade = hyper::upgrade::on(req);
        let state = state.clone();
        tokio::spawn(async move {
            match upgrade.await {
                Ok(io) => crate::tls::intercept(state, peer, TokioIo::new(io), authority).await,
                Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
            }
        });
        let mut res = Response::new(crate::empty());
        *res.status_mut() = StatusCode::OK;
        return Outcome {
            response: res,
            phase: Phase::Local("intercept"),
            fwd_status: None,
        };
    }
    let timeout: Duration = state.origin.options().connect_timeout;
    let upstream =
        match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await {
            Err(_) => {
                return local_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "connect-timeout",
                    format!("meshcache: connecting to {authority} timed out after {timeout:?}\n"),
                )
            }
            Ok(Err(e)) => {
                return local_error(
                    StatusCode::BAD_GATEWAY,
                    "connect-failed",
                    format!("meshcache: could not connect to {authority}: {e}\n"),
                )
            }
            Ok(Ok(s)) => s,
        };
    let _ = upstream.set_nodelay(true);
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(client) => {
                let mut client = TokioIo::new(client);
                let mut upstream = upstream;
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => tracing::debug!(%authority, up, down, "tunnel closed"),
                    Err(e) => tracing::debug!(%authority, "tunnel: {e}"),
                }
            }
            Err(e) => tracing::debug!(%authority, "CONNECT upgrade failed: {e}"),
        }
    });
    let mut res = Response::new(crate::empty());
    *res.status_mut() = StatusCode::OK;
    Outcome {
        response: res,
        phase: Phase::Bypass("connect"),
        fwd_status: None,
    }
}
