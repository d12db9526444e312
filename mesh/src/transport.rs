//! QUIC settings for a LAN (the carriage's Wi-Fi, a gateway's ports), not the internet
//! paths iroh's defaults are sized for.
//!
//! Flow control is what bounds a transfer: noq's stream window is 1.25 MB (12.5 MB/s ×
//! 100 ms of RTT), and with a few ms of RTT — a busy Wi-Fi, or two loaded cores — a stream
//! spends most of its time blocked on it. 8 MiB per stream (16 MiB per connection, which
//! also bounds what a peer can make this device buffer) took one 200 MiB transfer on
//! loopback from ~300 to ~990 MB/s (`cargo bench --bench mesh_transfer`, same run, iroh's
//! defaults via `MESHCACHE_QUIC_DEFAULTS=1`; 4 MiB gave ~800, 16 and 32 MiB no more).
//! Asking for fewer acknowledgements (one per ten packets, as iroh's own benchmark does)
//! was measured too and made it slower (~600 MB/s), so acknowledgements stay as they are.

use iroh::endpoint::{QuicTransportConfig, VarInt};

/// Bytes in flight per stream (its receive window).
const STREAM_WINDOW: u32 = 8 << 20;
/// Bytes in flight per connection, all streams together.
const CONNECTION_WINDOW: u32 = 16 << 20;

/// The transport every mesh endpoint (members' and the open mesh's) uses.
/// `MESHCACHE_QUIC_DEFAULTS` (any value) keeps iroh's defaults, to measure against them.
pub(crate) fn lan() -> QuicTransportConfig {
    let b = QuicTransportConfig::builder();
    if std::env::var_os("MESHCACHE_QUIC_DEFAULTS").is_some() {
        return b.build();
    }
    b.stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .build()
}
