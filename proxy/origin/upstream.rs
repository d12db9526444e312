//! An upstream proxy for origin traffic (`origin.proxy`, or the environment's `http_proxy`
//! / `https_proxy` as curl reads them): plain `http://` requests go to it in absolute form
//! (`GET http://origin/path HTTP/1.1`), `https://` origins and blind tunnels through its
//! `CONNECT host:port`, TLS to the origin still done — and verified — here, end to end: the
//! upstream only sees the tunnel. `origin.no_proxy` / `NO_PROXY` hosts are reached directly.
//!
//! Main types: [`UpstreamOptions`] (which upstream, if any, for a URL), [`Stream`] (a
//! connection towards an origin: direct, to the upstream for absolute-form requests, or a
//! tunnel through it), [`UpstreamError`] (the upstream failed, named: 502 / 504, fault
//! `upstream`).
//!
//! The destination policy and an upstream: DNS for a proxied origin is the upstream's (as
//! for curl: networks that require a proxy often resolve no outside names at all), so the
//! policy judges what it can without resolving — addresses written in the URL, and
//! `localhost` names — and leaves names to the upstream and its own policy. The upstream
//! itself is the operator's choice (the file or the environment): it is dialed whatever the
//! policy says about its address.
//!
//! hyper-util has a `Tunnel` connector (feature `client-proxy`); it is not used because its
//! error drops the upstream's status (a `502` from the upstream vs a `407` vs a `504`), which
//! is what the client's answer has to say.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

pub use config::NoProxyEntry;

/// An upstream proxy: where it is, and where that was set (for logs and errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// `origin.proxy`, or the environment variable it came from (`https_proxy`, …).
    pub from: String,
}

impl Upstream {
    /// `host:port` (an IPv6 address in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Set in the environment rather than in the configuration file.
    pub fn from_environment(&self) -> bool {
        self.from != CONFIGURED
    }
}

/// [`Upstream::from`] for the configuration file's `origin.proxy`.
pub const CONFIGURED: &str = "origin.proxy";

/// Which upstream proxy, if any, origin traffic goes through. The default: none.
#[derive(Debug, Clone, Default)]
pub struct UpstreamOptions {
    /// For `http://` origins: absolute-form requests.
    pub http: Option<Upstream>,
    /// For `https://` origins and blind `CONNECT` tunnels: its `CONNECT`.
    pub https: Option<Upstream>,
    /// Hosts reached directly (`origin.no_proxy`, and `NO_PROXY` with an environment proxy).
    pub no_proxy: Vec<NoProxyEntry>,
}

impl UpstreamOptions {
    /// The upstream for a request to `host` (`https`: an `https://` URL or a tunnel), or
    /// `None` to connect directly.
    pub fn route(&self, https: bool, host: &str) -> Option<&Upstream> {
        let up = if https { &self.https } else { &self.http };
        let up = up.as_ref()?;
        (!self.no_proxy.iter().any(|e| e.matches(host))).then_some(up)
    }

    /// Drops an upstream from the environment that is this proxy itself (a user who
    /// exported `http_proxy=http://127.0.0.1:3128` in the shell that runs it: every request
    /// would come back here), with a log line. One from the configuration file is an error.
    /// `listeners`: the bound listeners; `own`: this machine's addresses.
    pub async fn drop_loops(
        &mut self,
        listeners: &[SocketAddr],
        own: &[IpAddr],
    ) -> Result<(), String> {
        for slot in [&mut self.http, &mut self.https] {
            let Some(up) = slot.as_ref() else { continue };
            let Some(listener) = points_at(up, listeners, own).await else {
                continue;
            };
            if !up.from_environment() {
                return Err(format!(
                    "origin.proxy ({}) is this proxy's own listener {listener}: every request \
                     would come back to it",
                    up.authority()
                ));
            }
            tracing::warn!(
                "ignoring {}=http://{}: it points at this proxy's own listener {listener} \
                 (origin traffic would loop back here); origins are reached directly",
                up.from,
                up.authority()
            );
            *slot = None;
        }
        Ok(())
    }
}

/// The listener among `listeners` that `up` would reach, if any: same port, and an address
/// that lands on it (`localhost` and the loopback addresses, `0.0.0.0`, this machine's own
/// addresses for a listener on all interfaces; a name is resolved, briefly).
async fn points_at(up: &Upstream, listeners: &[SocketAddr], own: &[IpAddr]) -> Option<SocketAddr> {
    if !listeners.iter().any(|l| l.port() == up.port) {
        return None;
    }
    let host = up.host.trim_end_matches('.').to_ascii_lowercase();
    let ips: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![ip]
    } else if host == "localhost" || host.ends_with(".localhost") {
        vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ]
    } else {
        let lookup = tokio::net::lookup_host((host.as_str(), up.port));
        match tokio::time::timeout(Duration::from_secs(2), lookup).await {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            _ => Vec::new(),
        }
    };
    let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified() || own.contains(&ip);
    listeners.iter().copied().find(|l| {
        l.port() == up.port
            && ips.iter().map(|ip| ip.to_canonical()).any(|ip| {
                let bound = l.ip().to_canonical();
                if bound.is_unspecified() {
                    local(ip)
                } else if ip.is_unspecified() {
                    // Connecting to 0.0.0.0 reaches this machine's loopback.
                    bound.is_loopback()
                } else {
                    ip == bound
                }
            })
    })
}

/// What went wrong with the upstream proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Its name did not resolve.
    Resolve(String),
    /// Nothing listens there.
    Refused,
    /// Another connect failure (reset, unreachable network, …).
    Connect(String),
    ConnectTimeout(Duration),
    /// It answered `CONNECT` with something other than 2xx.
    Answer {
        target: String,
        status: u16,
        reason: String,
    },
    /// Its answer to `CONNECT` was not HTTP.
    Malformed {
        target: String,
        detail: String,
    },
    /// It closed the connection before answering `CONNECT`.
    Closed {
        target: String,
    },
    /// It did not answer `CONNECT` in time.
    AnswerTimeout {
        target: String,
        after: Duration,
    },
    /// No response head to an absolute-form request in time.
    NoResponse(Duration),
    /// The exchange broke off (an absolute-form request).
    Broken(String),
}

/// The upstream proxy failed: 502, or 504 for a timeout; the access log's fault is
/// `upstream`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct UpstreamError {
    /// The upstream's `host:port`.
    pub proxy: String,
    pub failure: Failure,
}

impl UpstreamError {
    pub fn new(up: &Upstream, failure: Failure) -> Self {
        Self {
            proxy: up.authority(),
            failure,
        }
    }

    pub fn message(&self) -> String {
        let p = &self.proxy;
        match &self.failure {
            Failure::Resolve(e) => format!("the upstream proxy {p} could not be found: {e}"),
            Failure::Refused => format!("the upstream proxy {p} refused the connection"),
            Failure::Connect(e) => format!("could not connect to the upstream proxy {p}: {e}"),
            Failure::ConnectTimeout(d) => {
                format!("connecting to the upstream proxy {p} timed out after {d:?}")
            }
            Failure::Answer {
                target,
                status,
                reason,
            } => {
                let mut s = format!(
                    "the upstream proxy {p} answered CONNECT {target} with {status} {reason}"
                );
                if *status == 407 {
                    s.push_str(" (it wants credentials, which meshcache does not send)");
                }
                s
            }
            Failure::Malformed { target, detail } => {
                format!(
                    "the upstream proxy {p} sent an invalid answer to CONNECT {target}: {detail}"
                )
            }
            Failure::Closed { target } => format!(
                "the upstream proxy {p} closed the connection before answering CONNECT {target}"
            ),
            Failure::AnswerTimeout { target, after } => {
                format!("the upstream proxy {p} did not answer CONNECT {target} within {after:?}")
            }
            Failure::NoResponse(d) => {
                format!("no response from the upstream proxy {p} within {d:?}")
            }
            Failure::Broken(e) => format!("the upstream proxy {p} broke off the exchange: {e}"),
        }
    }

    /// 504 for a timeout (the upstream's own `504` included), else 502.
    pub fn status(&self) -> http::StatusCode {
        match &self.failure {
            Failure::ConnectTimeout(_)
            | Failure::AnswerTimeout { .. }
            | Failure::NoResponse(_)
            | Failure::Answer { status: 504, .. } => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }
}

/// A connection towards an origin: straight to it, to the upstream proxy for absolute-form
/// requests (`proxied`: hyper-util's client then writes the request target in absolute
/// form), or a tunnel through the upstream's `CONNECT` (bytes the upstream sent after its
/// answer come first).
#[derive(Debug)]
pub struct Stream {
    tcp: TcpStream,
    early: Bytes,
    proxied: bool,
}

impl Stream {
    pub fn direct(tcp: TcpStream) -> Self {
        Self {
            tcp,
            early: Bytes::new(),
            proxied: false,
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Connects to the upstream proxy, for absolute-form requests.
pub async fn dial(up: &Upstream, timeout: Duration) -> Result<Stream, UpstreamError> {
    let fail = |f| UpstreamError::new(up, f);
    let host = up.host.as_str();
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, up.port)],
        Err(_) => {
            match tokio::time::timeout(timeout, tokio::net::lookup_host((host, up.port))).await {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => return Err(fail(Failure::Resolve(e.to_string()))),
                Err(_) => return Err(fail(Failure::ConnectTimeout(timeout))),
            }
        }
    };
    let mut last = Failure::Resolve("no addresses".into());
    for a in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(a)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(Stream {
                    tcp,
                    early: Bytes::new(),
                    proxied: true,
                });
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Failure::Refused
            }
            Ok(Err(e)) => last = Failure::Connect(e.to_string()),
            Err(_) => last = Failure::ConnectTimeout(timeout),
        }
    }
    Err(fail(last))
}

/// Largest answer head accepted from the upstream's `CONNECT`.
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// A tunnel to `host:port` through the upstream's `CONNECT`: connects to the upstream
/// within `timeout`, then waits for its 2xx answer within `timeout` again (connecting to
/// the origin, which is what the upstream does before it answers: `origin.connect_timeout`
/// covers both, and stays within the request's `response_header_timeout`).
pub async fn tunnel(
    up: &Upstream,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Stream, UpstreamError> {
    let answer_timeout = timeout;
    let mut stream = dial(up, timeout).await?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let fail = |f| UpstreamError::new(up, f);
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let exchange = async {
        stream
            .tcp
            .write_all(request.as_bytes())
            .await
            .map_err(|e| Failure::Broken(e.to_string()))?;
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 2048];
        loop {
            let n = stream
                .tcp
                .read(&mut buf)
                .await
                .map_err(|e| Failure::Broken(e.to_string()))?;
            if n == 0 {
                return Err(Failure::Closed {
                    target: target.clone(),
                });
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = head.split_off(end + 4);
                return Ok((head, rest));
            }
            if head.len() > MAX_ANSWER_HEAD {
                return Err(Failure::Malformed {
                    target: target.clone(),
                    detail: format!("an answer head over {MAX_ANSWER_HEAD} bytes"),
                });
            }
        }
    };
    let (head, rest) = match tokio::time::timeout(answer_timeout, exchange).await {
        Err(_) => {
            return Err(fail(Failure::AnswerTimeout {
                target,
                after: answer_timeout,
            }))
        }
        Ok(Err(f)) => return Err(fail(f)),
        Ok(Ok(r)) => r,
    };
    let (status, reason) = status_line(&head).ok_or_else(|| {
        let first = String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or(&[]))
            .trim()
            .chars()
            .take(80)
            .collect::<String>();
        fail(Failure::Malformed {
            target: target.clone(),
            detail: format!("{first:?} is not a status line"),
        })
    })?;
    if !(200..300).contains(&status) {
        return Err(fail(Failure::Answer {
            target,
            status,
            reason,
        }));
    }
    stream.early = Bytes::from(rest);
    stream.proxied = false;
    Ok(stream)
}

/// `HTTP/1.x NNN reason` → (NNN, reason).
fn status_line(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 {
        return None;
    }
    let status = code.parse().ok()?;
    Some((status, reason.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn up(host: &str, port: u16, from: &str) -> Upstream {
        Upstream {
            host: host.into(),
            port,
            from: from.into(),
        }
    }

    #[test]
    fn no_proxy_hosts_go_direct() {
        let o = UpstreamOptions {
            http: Some(up("proxy", 3128, CONFIGURED)),
            https: None,
            no_proxy: vec![
                NoProxyEntry::parse("corp.example").unwrap(),
                NoProxyEntry::parse("10.0.0.0/8").unwrap(),
            ],
        };
        assert!(o.route(false, "example.org").is_some());
        assert!(o.route(false, "www.corp.example").is_none());
        assert!(o.route(false, "10.2.3.4").is_none());
        assert!(o.route(true, "example.org").is_none(), "no https upstream");
    }

    #[tokio::test]
    async fn an_environment_proxy_pointing_here_is_dropped_a_configured_one_refused() {
        let listeners: Vec<SocketAddr> = vec!["127.0.0.1:3128".parse().unwrap()];
        let own: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "192.0.2.7".parse().unwrap()];
        for host in ["127.0.0.1", "localhost", "0.0.0.0", "LOCALHOST."] {
            let mut o = UpstreamOptions {
                http: Some(up(host, 3128, "http_proxy")),
                https: Some(up("proxy.example", 3128, "https_proxy")),
                no_proxy: vec![],
            };
            o.drop_loops(&listeners, &own).await.unwrap();
            assert!(o.http.is_none(), "{host}");
            assert!(o.https.is_some(), "another host");
        }
        for (host, port) in [
            ("127.0.0.1", 3129),
            ("127.0.0.2", 3128),
            ("192.0.2.7", 3128),
        ] {
            let mut o = UpstreamOptions {
                http: Some(up(host, port, "http_proxy")),
                ..Default::default()
            };
            o.drop_loops(&listeners, &own).await.unwrap();
            assert!(o.http.is_some(), "{host}:{port} is not this proxy");
        }
        // A listener on every interface is reached by this machine's addresses too.
        let any: Vec<SocketAddr> = vec!["0.0.0.0:3128".parse().unwrap()];
        let mut o = UpstreamOptions {
            https: Some(up("192.0.2.7", 3128, "HTTPS_PROXY")),
            ..Default::default()
        };
        o.drop_loops(&any, &own).await.unwrap();
        assert!(o.https.is_none());
        let mut o = UpstreamOptions {
            http: Some(up("127.0.0.1", 3128, CONFIGURED)),
            ..Default::default()
        };
        let e = o.drop_loops(&listeners, &own).await.unwrap_err();
        assert!(e.contains("own listener 127.0.0.1:3128"), "{e}");
    }

    /// A one-shot upstream that answers CONNECT with `answer` and then echoes.
    async fn fake_upstream(answer: &'static [u8]) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"CONNECT origin.example:443 HTTP/1.1\r\n"));
            s.write_all(answer).await.unwrap();
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        up("127.0.0.1", port, CONFIGURED)
    }

    #[tokio::test]
    async fn connect_answers() {
        let t = Duration::from_secs(5);
        let u = fake_upstream(b"HTTP/1.1 200 Connection established\r\n\r\nearly").await;
        let mut s = tunnel(&u, "origin.example", 443, t).await.unwrap();
        let mut early = [0u8; 5];
        s.read_exact(&mut early).await.unwrap();
        assert_eq!(&early, b"early", "bytes after the answer are kept");
        s.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
        assert!(!s.connected().is_proxied());

        let u = fake_upstream(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
        let e = tunnel(&u, "origin.example", 443, t).await.unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_GATEWAY);
        assert!(
            e.to_string()
                .ends_with("answered CONNECT origin.example:443 with 502 Bad Gateway"),
            "{e}"
        );
        let u = fake_upstream(b"HTTP/1.1 504 Gateway Timeout\r\n\r\n").await;
        let e = tunnel(&u, "origin.example", 443, t).await.unwrap_err();
        assert_eq!(e.status(), http::StatusCode::GATEWAY_TIMEOUT);
        let u = fake_upstream(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        let e = tunnel(&u, "origin.example", 443, t).await.unwrap_err();
        assert!(matches!(e.failure, Failure::Malformed { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_by_name() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = dial(&up("127.0.0.1", port, CONFIGURED), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the upstream proxy 127.0.0.1:{port} refused the connection")
        );
        assert_eq!(e.status(), http::StatusCode::BAD_GATEWAY);
    }
}
