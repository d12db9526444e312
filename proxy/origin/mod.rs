//! The origin client: pooled keep-alive connections, connect / response-header / body-idle
//! timeouts, connections only where the destination policy ([`destination`]) allows,
//! through an upstream proxy when one is set ([`upstream`]), and errors that say who failed
//! and how (403 vs 502 vs 504; the origin or the upstream).

pub(crate) mod destination;
pub(crate) mod upstream;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream as ChunkStream;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::http::Body;
use destination::{ConnectError, Destinations, Policy, Refused};
use upstream::{Failure, Stream, UpstreamError, UpstreamOptions};

/// Timeouts and pool sizes of the origin client. The defaults are those of `config::Origin`.
#[derive(Debug, Clone)]
pub struct OriginOptions {
    /// TCP connect (after DNS); through an upstream proxy, to it, and then its answer to
    /// `CONNECT` (it connects to the origin before it answers).
    pub connect_timeout: Duration,
    /// From sending the request to the response head.
    pub response_header_timeout: Duration,
    /// Longest silence between body chunks.
    pub body_idle_timeout: Duration,
    /// Idle pooled connections kept per host.
    pub max_idle_per_host: usize,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// PEM files of extra CAs trusted for origins (on top of the OS trust store).
    /// Verification is always on.
    pub extra_roots: Vec<std::path::PathBuf>,
    /// The upstream proxy origin traffic goes through, if any (default: none).
    pub upstream: UpstreamOptions,
}

/// Why the origin gave no usable response, and whose fault that is.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The destination policy refused the address (the client's fault: 403).
    #[error("{0}")]
    Refused(Refused),
    #[error("could not connect to the origin: {0}")]
    Connect(String),
    #[error("connecting to the origin timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("the origin did not answer within {0:?}")]
    Timeout(Duration),
    /// `dead_connection`: a reused connection turned out to be closed already (the origin
    /// timed it out sooner than we did); a GET or HEAD may be sent again.
    #[error("the origin sent an invalid response: {detail}")]
    Protocol {
        detail: String,
        dead_connection: bool,
    },
    #[error("the origin's TLS certificate did not verify: {0}")]
    Certificate(String),
    #[error("{0}")]
    Unsupported(&'static str),
    /// The client's body broke while it was being sent on (the client's fault: 400).
    #[error("{0}")]
    ClientBody(String),
    /// The upstream proxy failed (502, 504 for a timeout; its fault).
    #[error("{0}")]
    Upstream(UpstreamError),
}

/// The client's request body could not be read (malformed chunking, a reset): wrapped
/// around the client body's errors so that the origin request failing on it is a 400.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// Who is at fault for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Origin,
    /// The upstream proxy (`origin.proxy`, or the environment's).
    Upstream,
}

impl OriginError {
    pub fn status(&self) -> StatusCode {
        match self {
            OriginError::Refused(_) => StatusCode::FORBIDDEN,
            OriginError::ClientBody(_) => StatusCode::BAD_REQUEST,
            OriginError::Timeout(_) | OriginError::ConnectTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            OriginError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            OriginError::Upstream(u) => u.status(),
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            OriginError::Refused(_) | OriginError::Unsupported(_) | OriginError::ClientBody(_) => {
                Fault::Client
            }
            OriginError::Upstream(_) => Fault::Upstream,
            _ => Fault::Origin,
        }
    }

    /// True when the origin could not be reached at all (offline, refused, DNS, or the
    /// upstream proxy in the way failed).
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            OriginError::Connect(_)
                | OriginError::ConnectTimeout(_)
                | OriginError::Timeout(_)
                | OriginError::Upstream(_)
        )
    }

    /// Classifies a client error by the types in its source chain (never by its text).
    fn classify(e: &hyper_util::client::legacy::Error) -> Self {
        let detail = error_chain(e);
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut dead_connection = false;
        while let Some(err) = src {
            if let Some(b) = err.downcast_ref::<ClientBodyError>() {
                return OriginError::ClientBody(b.to_string());
            }
            if let Some(c) = err.downcast_ref::<ConnectError>() {
                return match c {
                    ConnectError::Refused(r) => OriginError::Refused(r.clone()),
                    ConnectError::Timeout(d) => OriginError::ConnectTimeout(*d),
                    ConnectError::Upstream(u) => OriginError::Upstream(u.clone()),
                    _ => OriginError::Connect(detail),
                };
            }
            if let Some(tls) = err.downcast_ref::<rustls::Error>() {
                if matches!(
                    tls,
                    rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
                ) {
                    return OriginError::Certificate(detail);
                }
            }
            if let Some(h) = err.downcast_ref::<hyper::Error>() {
                dead_connection |= h.is_incomplete_message() || h.is_canceled();
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                // A failed handshake is a rustls::Error inside io::Errors (tokio-rustls
                // wraps it, hyper-rustls wraps that), whose `source()` skips it: look inside.
                let mut inner = io.get_ref();
                while let Some(io) = inner.and_then(|i| i.downcast_ref::<std::io::Error>()) {
                    inner = io.get_ref();
                }
                let tls = inner.and_then(|i| i.downcast_ref::<rustls::Error>());
                if matches!(
                    tls,
                    Some(
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                ) {
                    return OriginError::Certificate(detail);
                }
                dead_connection |= matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                );
            }
            src = err.source();
        }
        if e.is_connect() {
            OriginError::Connect(detail)
        } else {
            OriginError::Protocol {
                detail,
                dead_connection,
            }
        }
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

type Pool = Client<HttpsConnector<Connector>, Body>;

/// The origin client: one pool for admin clients, one for everyone else, each dialing only
/// what its destination policy allows.
#[derive(Clone)]
pub struct Origin {
    admin: Pool,
    others: Pool,
    opts: OriginOptions,
}

/// Dials origins through a destination [`Policy`] (the checked address is the one
/// dialed), or through the upstream proxy: a connection to it for an `http://` origin
/// (marked proxied: the request goes in absolute form), a tunnel through its `CONNECT` for
/// an `https://` one (hyper-rustls then does TLS with the origin over it).
#[derive(Clone)]
struct Connector {
    policy: Arc<Policy>,
    upstream: Arc<UpstreamOptions>,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = BoxFuture<'static, Result<TokioIo<Stream>, ConnectError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_string();
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let stream = match this.upstream.route(https, &host) {
                None => Stream::direct(this.policy.connect(&host, port, this.timeout).await?),
                Some(up) => {
                    this.policy
                        .check_name(&host)
                        .map_err(ConnectError::Refused)?;
                    if https {
                        upstream::tunnel(up, &host, port, this.timeout).await
                    } else {
                        upstream::dial(up, this.timeout).await
                    }
                    .map_err(ConnectError::Upstream)?
                }
            };
            Ok(TokioIo::new(stream))
        })
    }
}

impl Origin {
    /// Builds the client; fails only if the trust roots cannot be loaded.
    pub fn new(opts: OriginOptions, destinations: &Destinations) -> Result<Self, certs::CertError> {
        let tls = certs::origin_client_config(&opts.extra_roots)?;
        let upstream = Arc::new(opts.upstream.clone());
        let pool = |policy: &Arc<Policy>| {
            let connector = Connector {
                policy: policy.clone(),
                upstream: upstream.clone(),
                timeout: opts.connect_timeout,
            };
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
                .wrap_connector(connector);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(opts.pool_idle_timeout)
                .pool_max_idle_per_host(opts.max_idle_per_host)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(https)
        };
        Ok(Self {
            admin: pool(destinations.for_client(true)),
            others: pool(destinations.for_client(false)),
            opts,
        })
    }

    /// Checks a destination before anything is sent to it (a `CONNECT` about to be
    /// intercepted), as the connection to it will be checked: after DNS when it is reached
    /// directly, by what can be judged without DNS when an upstream proxy resolves it.
    pub async fn check(
        &self,
        policy: &Policy,
        https: bool,
        host: &str,
        port: u16,
    ) -> Result<(), ConnectError> {
        if self.opts.upstream.route(https, host).is_some() {
            policy.check_name(host).map_err(ConnectError::Refused)
        } else {
            policy.resolve(host, port).await.map(|_| ())
        }
    }

    /// A connection for a blind tunnel to `host:port` (`CONNECT` passthrough, a gateway's
    /// redirected TLS): through the upstream's `CONNECT` when one applies, else directly,
    /// under `policy` either way.
    pub async fn tunnel(
        &self,
        policy: &Policy,
        host: &str,
        port: u16,
    ) -> Result<Stream, ConnectError> {
        let timeout = self.opts.connect_timeout;
        match self.opts.upstream.route(true, host) {
            None => policy
                .connect(host, port, timeout)
                .await
                .map(Stream::direct),
            Some(up) => {
                policy.check_name(host).map_err(ConnectError::Refused)?;
                upstream::tunnel(up, host, port, timeout)
                    .await
                    .map_err(ConnectError::Upstream)
            }
        }
    }

    /// Sends a request with an absolute `http://` or `https://` URI and waits for the
    /// response head; `admin`: on behalf of an admin client (its destination policy).
    pub async fn send(
        &self,
        req: Request<Body>,
        admin: bool,
    ) -> Result<Response<Incoming>, OriginError> {
        if !matches!(req.uri().scheme_str(), Some("http" | "https")) {
            return Err(OriginError::Unsupported(
                "only http:// and https:// URLs can be fetched",
            ));
        }
        let pool = if admin { &self.admin } else { &self.others };
        // A plain request through an upstream proxy: what goes wrong after it was connected
        // to is the upstream's to answer for (through a tunnel, it is the origin's).
        let via = (req.uri().scheme_str() == Some("http"))
            .then(|| {
                let host = req.uri().host().unwrap_or_default();
                self.opts.upstream.route(false, host)
            })
            .flatten();
        let fut = pool.request(req);
        let wait = self.opts.response_header_timeout;
        let result = match tokio::time::timeout(wait, fut).await {
            Err(_) => Err(OriginError::Timeout(wait)),
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) => Err(OriginError::classify(&e)),
        };
        match (result, via) {
            (Err(OriginError::Timeout(d)), Some(up)) => Err(OriginError::Upstream(
                UpstreamError::new(up, Failure::NoResponse(d)),
            )),
            (
                Err(OriginError::Protocol {
                    detail,
                    dead_connection: false,
                }),
                Some(up),
            ) => Err(OriginError::Upstream(UpstreamError::new(
                up,
                Failure::Broken(detail),
            ))),
            (other, _) => other,
        }
    }

    /// The response body as a stream of chunks, failing if the origin goes silent for
    /// longer than `body_idle_timeout`. Trailers are dropped.
    pub fn body_stream(
        &self,
        body: Incoming,
    ) -> impl ChunkStream<Item = Result<Bytes, BodyError>> + Send + 'static {
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
