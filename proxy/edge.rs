//! The edge of the stack: routes a request, turns every failure (a panic included) into a
//! response — hyper drops the connection when a service fails — adds `Cache-Status` and
//! `Via`, and writes one access-log line when the response body ends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::flow::{self, local_error, Outcome};
use crate::state::State;
use crate::{Body, BoxError};

pub async fn handle(state: Arc<State>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let outcome = std::panic::AssertUnwindSafe(route(&state, peer, req))
        .catch_unwind()
        .await;
    let Outcome {
        mut response,
        phase,
        fwd_status,
    } = outcome.unwrap_or_else(|_| {
        tracing::error!(%uri, "request handler panicked");
        local_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "meshcache: internal error\n".into(),
        )
    });
    if response.status().is_server_error() {
        state.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    if method != Method::CONNECT {
        if let Ok(v) = HeaderValue::from_str(&phase.cache_status(fwd_status)) {
            response.headers_mut().insert("cache-status", v);
        }
        state.via.append(response.headers_mut());
    }
    let log = AccessLog {
        state: state.clone(),
        peer,
        method,
        uri,
        status: response.status().as_u16(),
        phase: phase.as_str(),
        start,
        bytes: 0,
    };
    response.map(|b| http_body_util::BodyExt::boxed_unsync(Logged { inner: b, log }))
}

/// [`handle`] behind a boxed future: interception serves requests from inside a task
/// that `handle` itself spawned (CONNECT), and the box breaks that type cycle.
pub fn handle_boxed(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> futures_util::future::BoxFuture<'static, Response<Body>> {
    Box::pin(handle(state, peer, req))
}

async fn route(state: &Arc<State>, peer: SocketAddr, req: Request<Incoming>) -> Outcome {
    if req.method() == Method::CONNECT {
        return crate::connect::handle(state, peer, req).await;
    }
    if crate::local::is_for_us(state, &req) {
        return crate::local::handle(state, req).await;
    }
    if state.via.is_loop(req.headers()) {
        return local_error(
            StatusCode::LOOP_DETECTED,
            "loop",
            format!("meshcache: forwarding loop detected for {}\n", req.uri()),
        );
    }
    flow::proxy(state, req).await
}

struct AccessLog {
    state: Arc<State>,
    peer: SocketAddr,
    method: Method,
    uri: String,
    status: u16,
    phase: &'static str,
    start: Instant,
    bytes: u64,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let c = &self.state.counters;
        c.bytes_to_clients.fetch_add(self.bytes, Ordering::Relaxed);
        let by_source = match self.phase {
            "hit" | "collapsed" | "stale-swr" | "stale-error" | "revalidated" => {
                Some(&c.bytes_from_cache)
            }
            "peer" => Some(&c.bytes_from_peers),
            "miss" | "stale-miss" | "bypass" => Some(&c.bytes_from_origin),
            _ => None,
        };
        if let Some(counter) = by_source {
            counter.fetch_add(self.bytes, Ordering::Relaxed);
        }
        if self.state.access_log {
            tracing::info!(
                target: "meshcache::access",
                peer = %self.peer,
                method = %self.method,
                url = %self.uri,
                status = self.status,
                cache = self.phase,
                bytes = self.bytes,
                ms = self.start.elapsed().as_secs_f64() * 1000.0,
            );
        }
    }
}

/// A body that counts what it yields and logs the request when it is dropped.
struct Logged {
    inner: Body,
    log: AccessLog,
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.log.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::info!(url = %this.log.uri, "response body failed: {e}")
            }
            Poll::Ready(None) | Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
