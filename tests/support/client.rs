//! A client that sends absolute-form requests to the proxy over a real TCP connection.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A complete response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A TCP connection to the proxy from a given loopback source address (`127.0.0.2`,
/// `127.0.0.3`, … are distinct clients to the proxy).
pub async fn tcp_from(proxy: SocketAddr, source: IpAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    socket.connect(proxy).await.expect("connect to proxy")
}

/// A new HTTP/1.1 connection to the proxy, driven in the background.
async fn connect<B>(proxy: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    connect_from(proxy, None).await
}

async fn connect_from<B>(
    proxy: SocketAddr,
    source: Option<IpAddr>,
) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = match source {
        Some(ip) => tcp_from(proxy, ip).await,
        None => TcpStream::connect(proxy).await.expect("connect to proxy"),
    };
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

/// GET `url` through the proxy with extra headers.
pub async fn get(proxy: SocketAddr, url: &str, headers: &[(&str, &str)]) -> Resp {
    request(proxy, Method::GET, url, headers, None).await
}

/// GET `url` through the proxy from the loopback address `source`.
pub async fn get_from(proxy: SocketAddr, source: &str, url: &str) -> Resp {
    let ip = source.parse().expect("source address");
    request_from(proxy, Some(ip), Method::GET, url, &[], None).await
}

/// Any request through the proxy, on a new connection.
pub async fn request(
    proxy: SocketAddr,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> Resp {
    request_from(proxy, None, method, url, headers, body).await
}

/// Any request through the proxy, on a new connection from `source` (default 127.0.0.1).
pub async fn request_from(
    proxy: SocketAddr,
    source: Option<IpAddr>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> Resp {
    let mut send = connect_from(proxy, source).await;
    let uri: http::Uri = url.parse().expect("url");
    let mut b = Request::builder().method(method).uri(&uri);
    if let Some(a) = uri.authority() {
        b = b.header("host", a.as_str());
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = match body {
        Some(bytes) => b
            .body(
                Full::new(bytes)
                    .map_err(|n| -> std::io::Error { match n {} })
                    .boxed(),
            )
            .unwrap(),
        None => b
            .body(
                Empty::<Bytes>::new()
                    .map_err(|n| -> std::io::Error { match n {} })
                    .boxed(),
            )
            .unwrap(),
    };
    let res = send.send_request(req).await.expect("response head");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("complete body").to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET through the proxy, returning as soon as the response head arrives, with the body
/// still streaming.
pub async fn open(proxy: SocketAddr, url: &str) -> (http::response::Parts, hyper::body::Incoming) {
    open_with(proxy, url, &[]).await
}

/// [`open`] with extra request headers.
pub async fn open_with(
    proxy: SocketAddr,
    url: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, hyper::body::Incoming) {
    let mut send = connect(proxy).await;
    let uri: http::Uri = url.parse().expect("url");
    let mut b = Request::get(&uri).header("host", uri.authority().unwrap().as_str());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Empty::<Bytes>::new()).unwrap();
    let res = send.send_request(req).await.expect("response head");
    res.into_parts()
}

/// Reads a body to its end, checking it against the generated pattern from `offset`;
/// returns the byte count, or the error that ended it.
pub async fn check_pattern(mut body: hyper::body::Incoming, offset: u64) -> Result<u64, String> {
    let mut pos = offset;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body error after {} bytes: {e}", pos - offset))?;
        if let Ok(data) = frame.into_data() {
            for (i, b) in data.iter().enumerate() {
                if *b != crate::support::pattern(pos + i as u64) {
                    return Err(format!("wrong byte at {}", pos + i as u64));
                }
            }
            pos += data.len() as u64;
        }
    }
    Ok(pos - offset)
}
