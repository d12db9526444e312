//! `CONNECT`: intercepted (see [`super::intercept`]) unless the host is tunnelled
//! blindly ([`crate::tls`]). The destination is checked first, against the address
//! the tunnel will really connect to (`origin::destination`): a client that is not an admin
//! reaches only the allowed ports, and no local or (on a gateway) private address.
//!
//! A tunnel connects first and answers 200 only once the origin accepted, so a failure is a
//! proper 403/502/504, not a dropped connection. Either way the tunnel keeps the client's
//! connection permits (the [`Client`] moves into it) until it closes, and closes on shutdown.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::stack::{self, Conn, Handler, Target};
use crate::client::Client;
use crate::flow::{local_error, Outcome, Phase};
use crate::origin::destination::ConnectError;
use crate::state::State;

pub(crate) async fn handle(
    state: &Arc<State>,
    client: &Client,
    req: Request<Incoming>,
    make_handler: fn(Arc<State>, Target) -> Handler,
) -> Outcome {
    let Some(authority) = req.uri().authority().cloned() else {
        return bad_connect();
    };
    let Some(port) = authority.port_u16() else {
        return bad_connect();
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let policy = state.destinations.for_client(client.admin);
    if let Err(refused) = policy.check_port(port) {
        return crate::flow::refused(&refused, authority.as_str());
    }
    let intercept = state
        .tls
        .as_ref()
        .is_some_and(|t| !t.is_passthrough(&host, client.ip()));
    if intercept {
        // The destination is checked now, by name, so that a refusal is a 403 here and not
        // a failed handshake later; the origin client checks again when it connects
        // (through an upstream proxy, without DNS: see `origin/upstream.rs`).
        if let Err(e) = state.origin.check(policy, true, &host, port).await {
            return connect_error(&e, authority.as_str());
        }
        let upgrade = hyper::upgrade::on(req);
        let state = state.clone();
        let conn = Conn {
            client: client.inner(),
            opts: state.server.clone(),
            shutdown: state.shutdown.clone(),
            accepted: tokio::time::Instant::now(),
        };
        client.end_head_deadline();
        tokio::spawn(async move {
            match upgrade.await {
                Ok(io) => {
                    let handler = make_handler(state.clone(), Target::Https(authority.clone()));
                    super::intercept::intercept(&state, TokioIo::new(io), authority, conn, handler)
                        .await
                }
                Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
            }
        });
        let mut res = Response::new(crate::http::empty());
        *res.status_mut() = StatusCode::OK;
        return Outcome {
            response: res,
            phase: Phase::Local("intercept"),
            fwd_status: None,
        };
    }
    let upstream = match state.origin.tunnel(policy, &host, port).await {
        Ok(s) => s,
        Err(e) => return connect_error(&e, authority.as_str()),
    };
    let upgrade = hyper::upgrade::on(req);
    let (idle, shutdown) = (state.server.idle_timeout, state.shutdown.clone());
    let hold = client.hold();
    client.end_head_deadline();
    tokio::spawn(async move {
        let _hold = hold;
        match upgrade.await {
            Ok(io) => match stack::tunnel(TokioIo::new(io), upstream, idle, shutdown).await {
                Ok((up, down)) => tracing::debug!(%authority, up, down, "tunnel closed"),
                Err(e) => tracing::debug!(%authority, "tunnel: {e}"),
            },
            Err(e) => tracing::debug!(%authority, "CONNECT upgrade failed: {e}"),
        }
    });
    let mut res = Response::new(crate::http::empty());
    *res.status_mut() = StatusCode::OK;
    Outcome {
        response: res,
        phase: Phase::Bypass("connect"),
        fwd_status: None,
    }
}

fn bad_connect() -> Outcome {
    local_error(
        StatusCode::BAD_REQUEST,
        "bad-connect",
        "meshcache: CONNECT needs host:port\n".into(),
    )
}

fn connect_error(e: &ConnectError, authority: &str) -> Outcome {
    match e {
        ConnectError::Refused(r) => crate::flow::refused(r, authority),
        ConnectError::Timeout(d) => local_error(
            StatusCode::GATEWAY_TIMEOUT,
            "connect-timeout",
            format!("meshcache: connecting to {authority} timed out after {d:?}\n"),
        ),
        ConnectError::Upstream(u) => local_error(
            u.status(),
            "upstream-error",
            format!("meshcache: could not open a tunnel to {authority}: {u}\n"),
        ),
        ConnectError::Resolve(_) | ConnectError::Io(_) => local_error(
            StatusCode::BAD_GATEWAY,
            "connect-failed",
            format!("meshcache: could not connect to {authority}: {e}\n"),
        ),
    }
}
