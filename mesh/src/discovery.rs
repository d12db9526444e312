//! Finding peers on the LAN by mDNS (iroh-mdns-address-lookup, service `meshcache`).
//!
//! mDNS sends on the interface of the default route, over IPv4. A LAN without a default
//! route (an offline hotspot, a carriage network) needs a route for multicast on the
//! right interface — `ip route add 224.0.0.0/4 dev <interface>` — or discovery silently
//! finds nobody; this is checked at start and said in a log line. Peers can always be
//! added by ticket instead.

use std::sync::Arc;

use futures_util::StreamExt;
use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};

use crate::{peers, Inner};

pub(crate) async fn start(inner: &Arc<Inner>) {
    if !multicast_route() {
        tracing::warn!(
            "mDNS discovery cannot work here: there is no default route and no multicast \
             route (224.0.0.0/4). Add one on the LAN interface (ip route add 224.0.0.0/4 dev \
             <interface>) or add peers by ticket (mesh.peers, --peer)"
        );
    }
    let weak = Arc::downgrade(inner);
    watch(
        &inner.endpoint,
        "meshcache",
        inner.shutdown.subscribe(),
        Box::new(move |addr| {
            if let Some(inner) = weak.upgrade() {
                peers::add(&inner, addr, "mdns");
            }
        }),
    )
    .await;
}

/// Announces `endpoint` under mDNS service `service` and hands every endpoint found to
/// `found`, until `stop` turns true. (The open mesh uses its own service, `meshcache-open`, so
/// its announcements carry nothing of the group identity.)
pub(crate) async fn watch(
    endpoint: &iroh::Endpoint,
    service: &'static str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    found: Box<dyn Fn(iroh::EndpointAddr) + Send + Sync>,
) {
    let mdns = match MdnsAddressLookup::builder()
        .service_name(service)
        .build(endpoint.id())
    {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("mDNS discovery ({service}) is off: {e}");
            return;
        }
    };
    match endpoint.address_lookup() {
        Ok(l) => l.add(mdns.clone()),
        Err(e) => {
            tracing::warn!("mDNS discovery ({service}) is off: {e}");
            return;
        }
    }
    let mut events = mdns.subscribe().await;
    tracing::info!("mDNS discovery on (service '{service}')");
    tokio::spawn(async move {
        let _keep = mdns;
        loop {
            let ev = tokio::select! {
                ev = events.next() => ev,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Some(ev) = ev else { return };
            if let DiscoveryEvent::Discovered { endpoint_info, .. } = ev {
                let addr = endpoint_info.into_endpoint_addr();
                tracing::debug!(peer = %addr.id, service, "found by mDNS");
                found(addr);
            }
        }
    });
}

/// True when the routing table has a default route or a route for 224.0.0.0/4 (Linux;
/// elsewhere assumed true).
fn multicast_route() -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/route") else {
        return true;
    };
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Destination and mask are little-endian hex: 224.0.0.0 is 000000E0.
        f.len() > 7 && (f[1] == "00000000" || (f[1] == "000000E0" && f[7] == "000000F0"))
    })
}
