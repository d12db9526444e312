//! The edge of the stack: puts the request's target in absolute form (intercepted and
//! redirected requests arrive in origin form), routes it, turns every failure (a panic
//! included) into a response — hyper drops the connection when a service fails — adds
//! `Cache-Status` and `Via`, and writes one access-log line when the response body ends.
//!
//! DESIGN.md sketches these as tower layers; with one service and a few steps, a plain
//! async function does the same with less machinery.

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

use super::stack::{Handler, Target};
use crate::client::Client;
use crate::flow::{self, local_error, Outcome, RuleApplied};
use crate::http::{Body, BoxError};
use crate::state::State;

/// The handler a connection's stack calls for each request.
pub(crate) fn handler(state: Arc<State>, target: Target) -> Handler {
    Arc::new(move |mut req: Request<Incoming>| {
        absolute(&target, &mut req);
        Box::pin(handle(state.clone(), req))
    })
}

/// Rewrites the request target to absolute form for its connection's [`Target`].
fn absolute<B>(target: &Target, req: &mut Request<B>) {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri = match target {
        Target::AsSent => return,
        // Inside the tunnel requests are origin-form (HTTP/1.1) or carry :authority
        // (HTTP/2); the tunnel's target is where they go, under https.
        Target::Https(authority) => format!("https://{authority}{pq}"),
        Target::Redirected(dst) => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| dst.to_string());
            format!("http://{host}{pq}")
        }
    };
    if let Ok(uri) = uri.parse() {
        *req.uri_mut() = uri;
    }
}

/// Serves one request: route, rescue, `Cache-Status`, `Via`, access log.
pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let Some(client) = req.extensions().get::<Client>().cloned() else {
        // Every listener inserts the client; a request without one is a bug, not a client's.
        tracing::error!("request without a client");
        return crate::http::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "meshcache: internal error\n".into(),
        );
    };
    let peer = client.addr;
    let start = Instant::now();
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let outcome = std::panic::AssertUnwindSafe(route(&state, &client, req))
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
    state.counters.outcomes.add(phase.as_str());
    if response.status().is_server_error() {
        state.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    if method != Method::CONNECT {
        let rule = response.extensions().get::<RuleApplied>().copied();
        let mut status = phase.cache_status(fwd_status, rule);
        if phase.relays_upstream() {
            // Caches upstream (a parent meshcache) come first, ours last (RFC 9211).
            let upstream: Vec<&str> = response
                .headers()
                .get_all("cache-status")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if !upstream.is_empty() {
                status = format!("{}, {status}", upstream.join(", "));
            }
        }
        if let Ok(v) = HeaderValue::from_str(&status) {
            response.headers_mut().insert("cache-status", v);
        }
        state.via.append(response.headers_mut());
    }
    let expected = http_body::Body::size_hint(response.body())
        .exact()
        .or_else(|| {
            let cl = response.headers().get(http::header::CONTENT_LENGTH)?;
            cl.to_str().ok()?.parse().ok()
        });
    let log = AccessLog {
        state: state.clone(),
        peer,
        method,
        uri,
        status: response.status().as_u16(),
        phase: phase.as_str(),
        fault: phase.fault(),
        start,
        bytes: 0,
        expected,
        ended: false,
        held: response
            .extensions()
            .get::<flow::HeldBytes>()
            .map_or(0, |h| h.0),
    };
    response.map(|b| http_body_util::BodyExt::boxed_unsync(Logged { inner: b, log }))
}

async fn route(state: &Arc<State>, client: &Client, req: Request<Incoming>) -> Outcome {
    if req.method() == Method::CONNECT {
        // The handler maker is passed in, so that `connect` needs no import of this module.
        return super::connect::handle(state, client, req, handler).await;
    }
    if crate::admin::is_for_us(&req) {
        return crate::admin::handle(state, client, req).await;
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
    /// Who is at fault (see `Phase::fault`); a body that broke off adds its own.
    fault: Option<&'static str>,
    start: Instant,
    bytes: u64,
    /// The body's length when known in advance: a body that yielded all of it is complete
    /// even if hyper never polled it to its end.
    expected: Option<u64>,
    /// The body reached its end (a body dropped before it was aborted by the client).
    ended: bool,
    /// Bytes of it that came from the cache although the phase names another source.
    held: u64,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let c = &self.state.counters;
        c.bytes_to_clients.fetch_add(self.bytes, Ordering::Relaxed);
        let by_source = match self.phase {
            "hit" | "collapsed" | "stale-swr" | "stale-error" | "revalidated" => {
                Some(&c.bytes_from_cache)
            }
            // Strangers are peers too: their bytes did not cross the internet.
            "peer" | "stranger" => Some(&c.bytes_from_peers),
            "miss" | "stale-miss" | "bypass" => Some(&c.bytes_from_origin),
            _ => None,
        };
        // Held runs of a partial object around filled holes were the cache's (the first
        // bytes sent are counted as those, an approximation for a body cut short).
        let held = self.held.min(self.bytes);
        c.bytes_from_cache.fetch_add(held, Ordering::Relaxed);
        if let Some(counter) = by_source {
            counter.fetch_add(self.bytes - held, Ordering::Relaxed);
        }
        // A body dropped before its end, without an error of its own: the client left.
        let fault = match (self.fault, self.ended) {
            (Some(f), _) => f,
            (None, false) => "client-aborted",
            (None, true) => "-",
        };
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
                fault,
            );
        }
    }
}

/// Who broke a response body off, from the error's types: the source of a fill
/// ([`cache::fill::SourceBroke`], the origin's or a peer's by the phase), the origin's
/// connection (a `hyper::Error` of a body relayed directly), else meshcache itself (its
/// store).
fn body_fault(e: &(dyn std::error::Error + 'static), phase: &str) -> &'static str {
    let mut src = Some(e);
    while let Some(err) = src {
        if err.is::<cache::fill::SourceBroke>() {
            return if phase == "peer" { "peer" } else { "origin" };
        }
        if err.is::<hyper::Error>() {
            return "origin";
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if inner.is::<cache::fill::SourceBroke>() {
                    return if phase == "peer" { "peer" } else { "origin" };
                }
            }
        }
        src = err.source();
    }
    "proxy"
}

impl Drop for Logged {
    fn drop(&mut self) {
        // A body whose end hyper learned from `is_end_stream` is never polled to `None`.
        if http_body::Body::is_end_stream(&self.inner) || self.log.expected == Some(self.log.bytes)
        {
            self.log.ended = true;
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
                let fault = body_fault(e.as_ref(), this.log.phase);
                this.log.fault.get_or_insert(fault);
                this.log.ended = true;
                tracing::info!(url = %this.log.uri, fault, "response body failed: {e}")
            }
            Poll::Ready(None) => this.log.ended = true,
            Poll::Pending => {}
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
