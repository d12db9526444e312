//! `meshcache share` and `meshcache get`: the command-line side of handing a file over.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;

/// Sends the file to the running proxy at `proxy` (`POST /share`); returns the ticket.
pub async fn upload(proxy: SocketAddr, file: &Path, name: &str) -> Result<String> {
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let len = f.metadata().await?.len();
    let stream = tcp(proxy).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let chunks = futures_util::stream::unfold(f, |mut f| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let query: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let req = http::Request::post(format!("/share?name={query}"))
        .header(http::header::HOST, proxy.to_string())
        .header(http::header::CONTENT_LENGTH, len)
        .body(http_body_util::StreamBody::new(
            futures_util::StreamExt::map(chunks, |r| r.map(hyper::body::Frame::data)),
        ))?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if !status.is_success() {
        bail!("the proxy refused: {text}");
    }
    Ok(text)
}

async fn tcp(proxy: SocketAddr) -> Result<tokio::net::TcpStream> {
    tokio::net::TcpStream::connect(proxy).await.with_context(|| {
        format!("no meshcache proxy at {proxy}: start `meshcache run` first (it serves the shared file)")
    })
}

/// Fetches a shared file with a progress bar on stderr.
pub async fn download(t: &mesh::share::ShareTicket, out: &Path) -> Result<()> {
    if out.exists() {
        bail!(
            "{} exists already; choose another name with -o",
            out.display()
        );
    }
    let start = Instant::now();
    let mut last = Instant::now() - Duration::from_secs(1);
    let total = t.size.max(1);
    let result = mesh::share::download(t, out, |n, size| {
        if last.elapsed() >= Duration::from_millis(200) || n == size {
            last = Instant::now();
            let done = (n * 30 / total) as usize;
            let secs = start.elapsed().as_secs_f64().max(0.001);
            eprint!(
                "\r[{}{}] {:>3}% {:.1} MB/s ",
                "#".repeat(done.min(30)),
                " ".repeat(30 - done.min(30)),
                n * 100 / total,
                n as f64 / secs / 1e6
            );
            let _ = std::io::stderr().flush();
        }
    })
    .await;
    eprintln!();
    result.with_context(|| format!("fetching {}", t.name))
}
