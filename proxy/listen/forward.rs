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
        };
        stack::http1(stream, conn, handler.clone())
    })
    .await
}
