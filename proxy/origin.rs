//! The origin client: pooled keep-alive connections, connect / response-header / body-idle
//! timeouts, and errors that say who failed and how (502 vs 504).

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::Body;

/// Timeouts and pool sizes of the origin client. Every field documents its default.
#[derive(Debug, Clone)]
pub struct OriginOptions {
    /// TCP connect (after DNS). Default 10 s.
    pub connect_timeout: Duration,
    /// From sending the request to the response head. Default 30 s.
    pub response_header_timeout: Duration,
    /// Longest silence between body chunks. Default 60 s.
    pub body_idle_timeout: Duration,
    /// Idle pooled connections kept per host. Default 32.
    pub max_idle_per_host: usize,
    /// How long an idle pooled connection is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// PEM files of extra CAs trusted for origins (on top of the built-in roots).
    /// Default none. Verification is always on.
    pub extra_roots: Vec<std::path::PathBuf>,
}

impl Default for OriginOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            response_header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            max_idle_per_host: 32,
            pool_idle_timeout: Duration::from_secs(90),
            extra_roots: Vec::new(),
        }
    }
}

/// Why the origin gave no usable response. Always the origin's (or the network's) fault.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("could not connect to the origin: {0}")]
    Connect(String),
    #[error("the origin did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the origin sent an invalid response: {0}")]
    Protocol(String),
    #[error("the origin's TLS certificate did not verify: {0}")]
    Certificate(String),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl OriginError {
    pub fn status(&self) -> StatusCode {
        match self {
            OriginError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            OriginError::Connect(m) if m.contains("timed out") => StatusCode::GATEWAY_TIMEOUT,
            OriginError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// True when the origin could not be reached at all (offline, refused, DNS).
    pub fn unreachable(&self) -> bool {
        matches!(self, OriginError::Connect(_) | OriginError::Timeout(_))
    }
}

/// A failure while streaming the origin's body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("origin body stalled for {0:?}")]
    Idle(Duration),
    #[error("origin body: {0}")]
    Read(String),
}

#[derive(Clone)]
pub struct Origin {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    opts: OriginOptions,
}

impl Origin {
    /// Builds the client; fails only if an extra root file cannot be read.
    pub fn new(opts: OriginOptions) -> Result<Self, certs::CertError> {
        let tls = certs::origin_client_config(&opts.extra_roots)?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(opts.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config({
                // hyper-rustls sets ALPN itself from the enabled protocols.
                let mut c = (*tls).clone();
                c.alpn_protocols.clear();
                c
            })
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(opts.pool_idle_timeout)
            .pool_max_idle_per_host(opts.max_idle_per_host)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        Ok(Self { client, opts })
    }

    pub fn options(&self) -> &OriginOptions {
        &self.opts
    }

    /// Sends a request with an absolute `http://` or `https://` URI and waits for the
    /// response head.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, OriginError> {
        if !matches!(req.uri().scheme_str(), Some("http" | "https")) {
            return Err(OriginError::Unsupported(
                "only http:// and https:// URLs can be fetched",
            ));
        }
        let fut = self.client.request(req);
        match tokio::time::timeout(self.opts.response_header_timeout, fut).await {
            Err(_) => Err(OriginError::Timeout(self.opts.response_header_timeout)),
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) => {
                let detail = error_chain(&e);
                if detail.contains("certificate") {
                    Err(OriginError::Certificate(detail))
                } else if e.is_connect() {
                    Err(OriginError::Connect(detail))
                } else {
                    Err(OriginError::Protocol(detail))
                }
            }
        }
    }

    /// The response body as a stream of chunks, failing if the origin goes silent for
    /// longer than `body_idle_timeout`. Trailers are dropped.
    pub fn body_stream(
        &self,
        body: Incoming,
    ) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
        let idle = self.opts.body_idle_timeout;
        futures_util::stream::unfold(Some(body), move |state| async move {
            let mut body = state?;
            loop {
                match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => return Some((Err(BodyError::Idle(idle)), None)),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => return Some((Err(BodyError::Read(error_chain(&e))), None)),
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            if !data.is_empty() {
                                return Some((Ok(data), Some(body)));
                            }
                        }
                    }
                }
            }
        })
    }
}

/// An error and its sources, joined: hyper's top-level messages alone are vague.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}
