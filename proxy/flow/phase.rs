//! How a response was produced: the decision the flow took, as data (pingora's phase enum is
//! the model). It names the access-log phase and builds the `Cache-Status` value (RFC 9211).

/// The operator's freshness rule (`[[cache.rule]]`, numbered from 1) that made a response
/// fresh: stored under it, or served because of it. The flow puts it in the response's
/// extensions; the edge adds it to `Cache-Status` as `detail=rule-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleApplied(pub usize);

/// Bytes of a response that came from this device's cache although its phase names
/// another source: the held runs of a partial object around the holes a peer or the
/// origin filled. The edge counts them as from the cache (the dashboard's bytes saved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBytes(pub u64);

/// How a response was produced, for `Cache-Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Served from the cache without contacting the origin.
    Hit,
    /// Served from a fill another request started (collapsed forwarding).
    Collapsed,
    /// Stale entry served while revalidating in the background.
    StaleWhileRevalidate,
    /// Stale entry served because the origin failed.
    StaleOnError(String),
    /// Stale entry revalidated with the origin (304).
    Revalidated,
    /// Fetched from the origin. `stored` when it is being stored.
    Miss {
        vary_miss: bool,
        stored: bool,
        detail: Option<&'static str>,
    },
    /// Stale entry replaced by a new response from the origin.
    StaleReplaced { stored: bool },
    /// Fetched from a peer (and now stored); `stale` when served because the origin is
    /// unreachable.
    Peer { peer: String, stale: bool },
    /// Byte ranges fetched from a peer for this request only (nothing stored).
    PeerRange { peer: String },
    /// Served from a partial object (every byte asked for was held).
    PartialHit,
    /// A partial object's holes asked of the origin; the client got held bytes and new
    /// ones, which were stored (RFC 9211 `fwd=partial`).
    PartialFill,
    /// A partial object's holes (or a seek) filled from a peer holding the same
    /// representation; the bytes were stored.
    PartialPeer { peer: String },
    /// Fetched from a stranger (the open mesh), verified against a digest this device got
    /// from `by` (`url`, `client` or `origin`), with headers built here.
    Stranger { peer: String, by: &'static str },
    /// Not cacheable by method; forwarded.
    Bypass(&'static str),
    /// Answered by the proxy itself (status page, errors).
    Local(&'static str),
}

impl Phase {
    /// Short name for the access log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Hit | Phase::PartialHit => "hit",
            Phase::PartialFill => "miss",
            Phase::Collapsed => "collapsed",
            Phase::StaleWhileRevalidate => "stale-swr",
            Phase::StaleOnError(_) => "stale-error",
            Phase::Revalidated => "revalidated",
            Phase::Miss { .. } => "miss",
            Phase::StaleReplaced { .. } => "stale-miss",
            Phase::Peer { .. } | Phase::PeerRange { .. } | Phase::PartialPeer { .. } => "peer",
            Phase::Stranger { .. } => "stranger",
            Phase::Bypass(_) => "bypass",
            Phase::Local(_) => "local",
        }
    }

    /// The response head was just received from upstream (the origin, or a proxy in
    /// between, such as a parent meshcache) for this very request: its own `Cache-Status`
    /// entries describe this exchange and are kept before ours (RFC 9211: the cache
    /// closest to the origin first). Otherwise the response is ours (stored, or our own
    /// error) and a `Cache-Status` stored with it describes an exchange long past.
    pub fn relays_upstream(&self) -> bool {
        matches!(
            self,
            Phase::Miss { .. }
                | Phase::StaleReplaced { .. }
                | Phase::Bypass(_)
                | Phase::PartialFill
        )
    }

    /// Who is at fault when the proxy answered with an error of its own (the access
    /// log's `fault`): `client` (a request it must not make, a bad body or target),
    /// `origin` (unreachable, broken, refused), `upstream` (the upstream proxy in the way:
    /// refused, timed out, a bad `CONNECT` answer), `proxy` (meshcache itself). `None` for
    /// everything else, error statuses the origin sent included (relayed, not ours).
    pub fn fault(&self) -> Option<&'static str> {
        let Phase::Local(why) = self else { return None };
        Some(match *why {
            "admin-only"
            | "bad-connect"
            | "bad-ticket"
            | "bad-url"
            | "destination-refused"
            | "loop"
            | "client-error"
            | "share-too-large" => "client",
            "origin-error" | "connect-failed" | "connect-timeout" => "origin",
            "upstream-error" => "upstream",
            "internal-error" | "share-failed" | "mesh-off" => "proxy",
            _ => return None,
        })
    }

    /// The `Cache-Status` field value (RFC 9211); `rule`, the freshness rule that applied,
    /// is its `detail` where the phase has none of its own.
    pub fn cache_status(&self, fwd_status: Option<u16>, rule: Option<RuleApplied>) -> String {
        let mut s = String::from("meshcache");
        match self {
            Phase::Hit => s.push_str("; hit"),
            Phase::Collapsed => s.push_str("; hit; detail=collapsed"),
            Phase::PartialHit => s.push_str("; hit; detail=partial"),
            Phase::PartialFill => s.push_str("; fwd=partial; stored"),
            Phase::PartialPeer { peer } => {
                s.push_str("; fwd=partial; stored; detail=peer-range; peer=\"");
                s.push_str(peer);
                s.push('"');
            }
            Phase::StaleWhileRevalidate => {
                s.push_str("; hit; fwd=stale; detail=stale-while-revalidate")
            }
            Phase::StaleOnError(why) => {
                s.push_str("; fwd=stale; detail=");
                s.push_str(why);
            }
            Phase::Revalidated => s.push_str("; fwd=stale"),
            Phase::Miss {
                vary_miss,
                stored,
                detail,
            } => {
                s.push_str(if *vary_miss {
                    "; fwd=vary-miss"
                } else {
                    "; fwd=miss"
                });
                if *stored {
                    s.push_str("; stored");
                }
                if let Some(d) = detail {
                    s.push_str("; detail=");
                    s.push_str(d);
                }
            }
            Phase::StaleReplaced { stored } => {
                s.push_str("; fwd=stale");
                if *stored {
                    s.push_str("; stored");
                }
            }
            Phase::Peer { peer, stale } => {
                s.push_str(if *stale {
                    "; fwd=stale; stored; detail=origin-unreachable"
                } else {
                    "; fwd=miss; stored"
                });
                s.push_str("; peer=\"");
                s.push_str(peer);
                s.push('"');
            }
            Phase::Stranger { peer, by } => {
                s.push_str("; fwd=miss; stored; detail=stranger-");
                s.push_str(by);
                s.push_str("; peer=\"");
                s.push_str(peer);
                s.push('"');
            }
            Phase::PeerRange { peer } => {
                s.push_str("; fwd=miss; detail=peer-range; peer=\"");
                s.push_str(peer);
                s.push('"');
            }
            Phase::Bypass(why) => {
                s.push_str("; fwd=bypass; detail=");
                s.push_str(why);
            }
            Phase::Local(why) => {
                s.push_str("; detail=");
                s.push_str(why);
            }
        }
        let no_detail = matches!(
            self,
            Phase::Hit
                | Phase::Revalidated
                | Phase::StaleReplaced { .. }
                | Phase::Miss { detail: None, .. }
        );
        if let (Some(RuleApplied(n)), true) = (rule, no_detail) {
            s.push_str(&format!("; detail=rule-{n}"));
        }
        if let Some(code) = fwd_status {
            if !matches!(
                self,
                Phase::Hit | Phase::Collapsed | Phase::PartialHit | Phase::Local(_)
            ) {
                s.push_str(&format!("; fwd-status={code}"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_values() {
        assert_eq!(Phase::Hit.cache_status(None, None), "meshcache; hit");
        let miss = Phase::Miss {
            vary_miss: false,
            stored: true,
            detail: None,
        };
        assert_eq!(
            miss.cache_status(Some(200), None),
            "meshcache; fwd=miss; stored; fwd-status=200"
        );
    }

    #[test]
    fn the_rule_that_applied_is_the_detail() {
        let rule = Some(RuleApplied(2));
        assert_eq!(
            Phase::Hit.cache_status(None, rule),
            "meshcache; hit; detail=rule-2"
        );
        let miss = Phase::Miss {
            vary_miss: false,
            stored: true,
            detail: None,
        };
        assert_eq!(
            miss.cache_status(Some(200), rule),
            "meshcache; fwd=miss; stored; detail=rule-2; fwd-status=200"
        );
        assert_eq!(
            Phase::StaleReplaced { stored: true }.cache_status(Some(200), rule),
            "meshcache; fwd=stale; stored; detail=rule-2; fwd-status=200"
        );
        assert_eq!(
            Phase::Revalidated.cache_status(Some(304), rule),
            "meshcache; fwd=stale; detail=rule-2; fwd-status=304"
        );
        // A phase with a detail of its own keeps it.
        assert_eq!(
            Phase::Collapsed.cache_status(None, rule),
            "meshcache; hit; detail=collapsed"
        );
    }
}
