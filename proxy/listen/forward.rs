//! The forward-proxy listener: absolute-form requests and `CONNECT`, from clients that set
//! their proxy to this address.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::edge;
use super::stack::{self, Conn, Target};
use super::{accept_loop, Front};
use crate::state::State;

/// Accepts forward-proxy connections until the proxy shuts down.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, front: Front) {
    let handler = edge::handler(state, Target::AsSent);
    let (opts, shutdown) = (front.opts.clone(), front.shutdown.clone());
    accept_loop(listener, front, true, move |stream, client| {
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            client,
            opts: opts.clone(),
            shutdown: shutdown.clone(),
            accepted: tokio::time::Instant::now(),
        };
        let handler = handler.clone();
        async move {
            // Until its first byte, a connection costs only its socket and this task
            // (hyper's buffers come with the first byte): silent connections are cheap,
            // and closed at the head deadline all the same.
            let limit = conn.opts.header_read_timeout;
            let mut shutdown = conn.shutdown.clone();
            let mut first = [0u8; 1];
            tokio::select! {
                // `peek`, not `readable`: readiness may be reported before any byte is
                // there (tokio says so), and then hyper would start on a silent socket.
                r = tokio::time::timeout(limit, stream.peek(&mut first)) => {
                    if matches!(r, Ok(Ok(n)) if n > 0) {
                        // Boxed: the waiting task stays small, hyper's state comes now.
                        Box::pin(stack::http1(stream, conn, handler)).await
                    }
                }
                _ = stack::stopped(&mut shutdown) => {}
            }
        }
    })
    .await
}
