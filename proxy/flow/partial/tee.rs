//! A body passing to the client while its bytes are written into a partial object.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::HeaderMap;

use cache::partial::Writer;
use cache::Partial;

use crate::http::BoxError;
use crate::state::State;

/// Bytes written to a partial object are made durable (and held) at least this often.
const COMMIT_EVERY: u64 = 8 << 20;

/// Writes to the partial object's file are batched up to this size.
const WRITE_BATCH: u64 = 1 << 20;

/// Passes `body` (bytes `span` of the representation) to the client while writing it to
/// the partial object; makes what arrived durable and held, and completes the object when
/// it holds every byte. Bytes beyond `span` or a body cut short end the client's body with
/// an error (never a short clean one); a client that leaves stops the download unless
/// little remains. `writer` (the right to add bytes) is shared by every hole a response
/// fills; it is let go when the last of them has its last byte marked.
pub(super) fn tee(
    state: &Arc<State>,
    p: Arc<Partial>,
    writer: Arc<Writer>,
    span: Range<u64>,
    body: BoxStream<'static, Result<Bytes, BoxError>>,
    head: HeaderMap,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(16);
    let cache = state.cache.clone();
    let background_max = cache.options().background_fill_max;
    // Shutdown waits for this task (its bytes are made durable, the object completed).
    let busy = cache.partial_task();
    let work = async move {
        let mut writer = Some(writer);
        let mut body = body;
        let mut client = Some(tx);
        let mut pos = span.start;
        let mut written = span.start;
        let mut persisted = span.start;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0u64;
        let mut store_failed = false;
        let mut failure: Option<String> = None;
        loop {
            let chunk = match body.next().await {
                None => {
                    if pos != span.end {
                        failure = Some(format!(
                            "the origin closed after {} of {} bytes",
                            pos - span.start,
                            span.end - span.start
                        ));
                    }
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(format!("origin body: {e}"));
                    break;
                }
                Some(Ok(chunk)) => chunk,
            };
            let n = chunk.len() as u64;
            if pos + n > span.end {
                failure = Some("the origin sent more than its Content-Range".into());
                break;
            }
            pos += n;
            // After a failed write nothing more is kept (nor held in memory for later).
            if !store_failed {
                batch_len += n;
                batch.push(chunk.clone());
            }
            let last = pos == span.end;
            // The last chunk goes to the client only once every byte is written and held:
            // a client that asks again as soon as its body ends finds them.
            if !store_failed && (batch_len >= WRITE_BATCH || last) {
                batch_len = 0;
                match p.write_at(written, std::mem::take(&mut batch)).await {
                    Ok(()) => {
                        p.mark(written..pos);
                        written = pos;
                    }
                    Err(e) => {
                        tracing::warn!("partial object write: {e}");
                        store_failed = true;
                    }
                }
                if last {
                    writer = None;
                }
                if written - persisted >= COMMIT_EVERY {
                    if let Err(e) = p.persist(None).await {
                        tracing::warn!("partial object: {e}");
                        store_failed = true;
                    }
                    persisted = written;
                }
            }
            if let Some(c) = &client {
                if c.send(Ok(chunk)).await.is_err() {
                    client = None;
                }
            }
            if client.is_none() && span.end - pos > background_max {
                tracing::debug!(key = %p.key(), "the client left; partial fill stopped");
                break;
            }
        }
        if let Some(why) = &failure {
            if let Some(c) = client.take() {
                let _ = c.send(Err(why.clone().into())).await;
            }
        }
        drop(client);
        if !batch.is_empty() && !store_failed && p.write_at(written, batch).await.is_ok() {
            p.mark(written..pos);
            written = pos;
        }
        drop(writer);
        cache::failpoint::point("partial-marked");
        let whole = failure.is_none() && !store_failed && written == span.end;
        if let Err(e) = p.persist(whole.then_some(head)).await {
            tracing::warn!("partial object: {e}");
            return;
        }
        cache::failpoint::point("partial-persisted");
        if p.meta().complete() {
            match cache.complete_partial(&p).await {
                Ok(_) => tracing::debug!(key = %p.key(), "partial object completed"),
                Err(e) => tracing::warn!(key = %p.key(), "partial object not completed: {e}"),
            }
        }
    };
    tokio::spawn(async move {
        // `work` owns its handle on the cache: gone before `busy` says the task is done.
        work.await;
        drop(busy);
    });
    tokio_stream_of(rx)
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
