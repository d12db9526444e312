//! The one body type of every response and origin request, and its constructors.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

/// Errors crossing the body boundary.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response and origin request.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Bytes as a body.
pub fn full(b: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streamed from chunks.
pub fn stream_body<S, E>(s: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError>,
{
    BodyExt::boxed_unsync(http_body_util::StreamBody::new(
        s.map(|r| r.map(hyper::body::Frame::data).map_err(Into::into)),
    ))
}

/// A plain-text response.
pub fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut res = Response::new(full(msg));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
