//! A builder-style origin (after linkerd2-proxy's test fakes): routes answer with canned
//! replies, every request is recorded, bodies can be generated, slowed, gated or cut short.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// The deterministic content of generated bodies: byte `i` of every generated body.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub enum ReplyBody {
    Bytes(Bytes),
    /// `len` bytes of [`pattern`], in chunks of `chunk`, with `delay` between chunks.
    Generated {
        len: u64,
        chunk: usize,
        delay: Option<Duration>,
        declared: bool,
    },
    /// Declares `declared` bytes, sends `sent`, then closes the connection.
    Truncated {
        declared: u64,
        sent: u64,
    },
    /// Sends the first chunk, then waits for a permit on the gate before each next one.
    Gated {
        len: u64,
        chunk: usize,
        gate: Arc<Semaphore>,
    },
}

/// A canned reply.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self {
            status: 200,
            headers: vec![],
            body: ReplyBody::Bytes(body.into()),
            delay: None,
        }
    }
    pub fn status(code: u16) -> Self {
        Self {
            status: code,
            headers: vec![],
            body: ReplyBody::Bytes(Bytes::new()),
            delay: None,
        }
    }
    pub fn generated(len: u64) -> Self {
        Self {
            status: 200,
            headers: vec![],
            body: ReplyBody::Generated {
                len,
                chunk: 64 * 1024,
                delay: None,
                declared: true,
            },
            delay: None,
        }
    }
    /// The same reply with another status code.
    pub fn with_status(mut self, code: u16) -> Self {
        self.status = code;
        self
    }
    pub fn header(mut self, k: &str, v: impl ToString) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn body(mut self, b: ReplyBody) -> Self {
        self.body = b;
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

#[derive(Default)]
pub struct OriginBuilder {
    routes: Vec<(String, Handler)>,
}

impl OriginBuilder {
    /// Answers requests whose path (with query) is `path`.
    pub fn route(mut self, path: &str, f: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        self.routes.push((path.to_string(), Arc::new(f)));
        self
    }

    pub async fn run(self) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        Origin::serve(listener, self.routes, None).await
    }

    /// An HTTPS origin for `localhost` / 127.0.0.1 with a certificate from its own fresh
    /// test CA, whose PEM is written to `ca_file` (give it to the proxy as an extra root,
    /// or don't, to get an origin that does not verify).
    pub async fn run_tls(self, ca_file: &std::path::Path) -> Origin {
        self.run_tls_at("127.0.0.1:0".parse().unwrap(), ca_file)
            .await
    }

    /// A plain origin listening on `addr`.
    pub async fn run_at(self, addr: SocketAddr) -> Origin {
        let listener = TcpListener::bind(addr).await.expect("bind origin");
        Origin::serve(listener, self.routes, None).await
    }

    /// [`OriginBuilder::run_tls`] on `addr`; the certificate also names `addr`'s IP.
    pub async fn run_tls_at(self, addr: SocketAddr, ca_file: &std::path::Path) -> Origin {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test origin CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(ca_file, ca.pem()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !addr.ip().is_loopback() {
            names.push(addr.ip().to_string());
        }
        let leaf_params = CertificateParams::new(names).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = TcpListener::bind(addr).await.expect("bind origin");
        Origin::serve(
            listener,
            self.routes,
            Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))),
        )
        .await
    }
}

/// A running origin. Dropping it stops accepting.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

/// Dropping the origin stops it for real: the listener and every open connection.
impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Origin {
    pub fn builder() -> OriginBuilder {
        OriginBuilder::default()
    }

    async fn serve(
        listener: TcpListener,
        routes: Vec<(String, Handler)>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Origin {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let routes: Arc<HashMap<String, Handler>> = Arc::new(routes.into_iter().collect());
        let s = seen.clone();
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let c = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let routes = routes.clone();
                let seen = s.clone();
                let tls = tls.clone();
                let handle = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let routes = routes.clone();
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(answer(req, &routes, &seen).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
                c.lock().unwrap().push(handle.abort_handle());
            }
        });
        Origin {
            addr,
            seen,
            task,
            conns,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The URL of `path` on an HTTPS origin, by the name its certificate carries.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    /// How many requests reached `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    }

    /// Every request for `path`, in order.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

async fn answer(
    req: Request<Incoming>,
    routes: &HashMap<String, Handler>,
    seen: &Mutex<Vec<Seen>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let s = Seen {
        method: parts.method.clone(),
        path: path.clone(),
        headers: parts.headers.clone(),
        body,
    };
    seen.lock().unwrap().push(s.clone());
    let Some(h) = routes.get(&path) else {
        let mut r = Response::new(full(Bytes::from_static(b"no such route\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let reply = h(&s);
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut b = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        b = b.header(k, v);
    }
    let body = match reply.body {
        ReplyBody::Bytes(bytes) => {
            if parts.method != Method::HEAD {
                b = b.header("content-length", bytes.len());
            }
            full(bytes)
        }
        ReplyBody::Generated {
            len,
            chunk,
            delay,
            declared,
        } => {
            if declared {
                b = b.header("content-length", len);
            }
            generated(0, len, chunk, delay, None)
        }
        ReplyBody::Truncated { declared, sent } => {
            b = b.header("content-length", declared);
            generated(0, sent, 16 * 1024, None, None)
        }
        ReplyBody::Gated { len, chunk, gate } => {
            b = b.header("content-length", len);
            generated(0, len, chunk, None, Some(gate))
        }
    };
    b.body(body).unwrap()
}

fn full(b: Bytes) -> Body {
    http_body_util::Full::new(b)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn generated(
    start: u64,
    end: u64,
    chunk: usize,
    delay: Option<Duration>,
    gate: Option<Arc<Semaphore>>,
) -> Body {
    let s = futures_util::stream::unfold((start, true), move |(pos, first)| {
        let gate = gate.clone();
        async move {
            if pos >= end {
                return None;
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if let (Some(g), false) = (gate, first) {
                g.acquire().await.ok()?.forget();
            }
            let n = (end - pos).min(chunk as u64);
            let data: Vec<u8> = (pos..pos + n).map(pattern).collect();
            Some((
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(data))),
                (pos + n, false),
            ))
        }
    })
    .boxed();
    StreamBody::new(s).boxed_unsync()
}
