//! Where a request may go: the destination policy, checked against the address a
//! connection will really be made to — after DNS, so a name that resolves to `127.0.0.1` is
//! caught — and then that very address is dialed (no second lookup a rebinding DNS server
//! could answer differently).
//!
//! For clients that are not admins (`admin.allow`), refused by default: loopback,
//! link-local, unspecified, multicast, broadcast, and the proxy's own addresses (its
//! listeners and interfaces: a gateway's own services), and with `cache.shared` the private
//! ranges too (RFC 1918, CGNAT, ULA); `CONNECT` only to `origin.connect_ports`. Admin
//! clients may go anywhere and to any port. `origin.deny` refuses for everyone;
//! `origin.allow` lets through what the defaults would refuse. A refusal is a [`Refused`]
//! that names the rule and the setting that changes it.
//!
//! Through an upstream proxy (`super::upstream`) the origin's name is the upstream's to
//! resolve: [`Policy::check_name`] judges what can be judged without DNS (addresses,
//! `localhost` names) and leaves other names to the upstream's own rules.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpStream;

use super::upstream::UpstreamError;

/// The destination rules. The defaults are those of `config::Origin`.
#[derive(Debug, Clone, Default)]
pub struct DestinationOptions {
    /// Networks always allowed (overriding the built-in refusals, not `deny`).
    pub allow: Vec<IpNet>,
    /// Networks always refused, for admin clients too.
    pub deny: Vec<IpNet>,
    /// Ports a non-admin client may `CONNECT` to.
    pub connect_ports: Vec<u16>,
}

/// Which rule refused a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Loopback,
    LinkLocal,
    Unspecified,
    Multicast,
    Broadcast,
    /// One of the proxy's own addresses.
    Own,
    /// A private range, refused in shared mode.
    Private,
    /// In `origin.deny`.
    Denied(IpNet),
    /// A `CONNECT` port not in `origin.connect_ports`.
    Port(u16),
}

/// A refused destination: what, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Refused {
    /// The address (or, for a port rule, the port) that was refused.
    pub addr: Option<IpAddr>,
    pub rule: Rule,
}

impl Refused {
    /// A short name for logs and `Cache-Status`.
    pub fn rule_name(&self) -> &'static str {
        match self.rule {
            Rule::Loopback => "loopback",
            Rule::LinkLocal => "link-local",
            Rule::Unspecified => "unspecified",
            Rule::Multicast => "multicast",
            Rule::Broadcast => "broadcast",
            Rule::Own => "proxy-address",
            Rule::Private => "private-range",
            Rule::Denied(_) => "origin-deny",
            Rule::Port(_) => "connect-port",
        }
    }

    /// What refused it and which setting changes that.
    pub fn message(&self) -> String {
        let addr = self.addr.map(|a| a.to_string()).unwrap_or_default();
        let local = |what: &str| {
            format!(
                "{addr} is {what}: only admin clients (admin.allow) may reach it; \
                 to open it to every client add it to origin.allow"
            )
        };
        match &self.rule {
            Rule::Loopback => local("a loopback address"),
            Rule::LinkLocal => local("a link-local address"),
            Rule::Unspecified => local("the unspecified address"),
            Rule::Multicast => local("a multicast address"),
            Rule::Broadcast => local("a broadcast address"),
            Rule::Own => local("one of the proxy's own addresses"),
            Rule::Private => format!(
                "{addr} is in a private range, refused in shared mode (cache.shared = true) \
                 for clients that are not admins (admin.allow); to open it add it to origin.allow"
            ),
            Rule::Denied(net) => format!("{addr} is in origin.deny ({net})"),
            Rule::Port(p) => format!(
                "CONNECT to port {p} is not allowed: clients that are not admins \
                 (admin.allow) may CONNECT only to origin.connect_ports"
            ),
        }
    }
}

/// Why a connection to a destination was not made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The policy refused every address the name stands for (the client's fault).
    #[error("{0}")]
    Refused(Refused),
    /// The name did not resolve (the origin's, or the network's).
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connecting timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The upstream proxy failed (its fault, not the origin's).
    #[error("{0}")]
    Upstream(UpstreamError),
}

/// The rules for one kind of client, with the proxy's own addresses.
#[derive(Debug)]
pub struct Policy {
    admin: bool,
    opts: DestinationOptions,
    /// Private ranges are refused too (a gateway's shared mode).
    refuse_private: bool,
    own: Vec<IpAddr>,
}

/// The two policies: one for admin clients, one for everyone else.
#[derive(Debug, Clone)]
pub struct Destinations {
    admin: Arc<Policy>,
    others: Arc<Policy>,
}

impl Destinations {
    /// `shared`: the cache is a gateway's (private ranges are refused too); `own`: the
    /// proxy's addresses (its listeners, and its interfaces).
    pub fn new(opts: DestinationOptions, shared: bool, own: Vec<IpAddr>) -> Self {
        let mk = |admin| {
            Arc::new(Policy {
                admin,
                opts: opts.clone(),
                refuse_private: shared,
                own: own.clone(),
            })
        };
        Self {
            admin: mk(true),
            others: mk(false),
        }
    }

    pub fn for_client(&self, admin: bool) -> &Arc<Policy> {
        if admin {
            &self.admin
        } else {
            &self.others
        }
    }
}

/// True for RFC 1918, CGNAT (RFC 6598) and IPv6 unique-local addresses.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64),
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
    }
}

impl Policy {
    /// May a connection be made to `ip`?
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = ip.to_canonical();
        let refuse = |rule| {
            Err(Refused {
                addr: Some(ip),
                rule,
            })
        };
        if let Some(net) = self.opts.deny.iter().find(|n| n.contains(&ip)) {
            return refuse(Rule::Denied(*net));
        }
        if self.admin || self.opts.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        };
        if ip.is_loopback() {
            refuse(Rule::Loopback)
        } else if ip.is_unspecified() {
            refuse(Rule::Unspecified)
        } else if link_local {
            refuse(Rule::LinkLocal)
        } else if ip.is_multicast() {
            refuse(Rule::Multicast)
        } else if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
            refuse(Rule::Broadcast)
        } else if self.own.contains(&ip) {
            refuse(Rule::Own)
        } else if self.refuse_private && is_private(ip) {
            refuse(Rule::Private)
        } else {
            Ok(())
        }
    }

    /// May a `CONNECT` go to `port`?
    pub fn check_port(&self, port: u16) -> Result<(), Refused> {
        if self.admin || self.opts.connect_ports.contains(&port) {
            Ok(())
        } else {
            Err(Refused {
                addr: None,
                rule: Rule::Port(port),
            })
        }
    }

    /// May a connection be made to `host` through an upstream proxy, which resolves names
    /// itself? Judged without DNS: an address is checked as it is, a `localhost` name
    /// (RFC 6761) as loopback; any other name is the upstream's to resolve and judge.
    pub fn check_name(&self, host: &str) -> Result<(), Refused> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return self.check_ip(IpAddr::from([127, 0, 0, 1]));
        }
        Ok(())
    }

    /// The addresses `host:port` stands for that the policy allows (an IP literal is
    /// checked as it is). Fails with the first refusal when none is allowed.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let all: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| ConnectError::Resolve(format!("{host}: {e}")))?
                .collect(),
        };
        let mut first_refusal = None;
        let mut ok = Vec::with_capacity(all.len());
        for a in all {
            match self.check_ip(a.ip()) {
                Ok(()) => ok.push(a),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        match (ok.is_empty(), first_refusal) {
            (false, _) => Ok(ok),
            (true, Some(r)) => Err(ConnectError::Refused(r)),
            (true, None) => Err(ConnectError::Resolve(format!("{host}: no addresses"))),
        }
    }

    /// Resolves, checks, and connects to the first allowed address that answers.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStream, ConnectError> {
        let addrs = self.resolve(host, port).await?;
        let mut last = None;
        for a in addrs {
            match tokio::time::timeout(timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => last = Some(ConnectError::Io(e)),
                Err(_) => last = Some(ConnectError::Timeout(timeout)),
            }
        }
        Err(last.unwrap_or(ConnectError::Timeout(timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(admin: bool, shared: bool) -> Policy {
        Policy {
            admin,
            opts: DestinationOptions {
                allow: vec!["127.0.0.77/32".parse().unwrap()],
                deny: vec!["203.0.113.0/24".parse().unwrap()],
                connect_ports: vec![443],
            },
            refuse_private: shared,
            own: vec!["198.51.100.7".parse().unwrap()],
        }
    }

    fn rule(p: &Policy, ip: &str) -> Option<Rule> {
        p.check_ip(ip.parse().unwrap()).err().map(|r| r.rule)
    }

    #[test]
    fn local_destinations_are_refused_to_passengers() {
        let p = policy(false, false);
        assert_eq!(rule(&p, "127.0.0.1"), Some(Rule::Loopback));
        assert_eq!(rule(&p, "::1"), Some(Rule::Loopback));
        assert_eq!(rule(&p, "::ffff:127.0.0.1"), Some(Rule::Loopback));
        assert_eq!(rule(&p, "169.254.169.254"), Some(Rule::LinkLocal));
        assert_eq!(rule(&p, "fe80::1"), Some(Rule::LinkLocal));
        assert_eq!(rule(&p, "0.0.0.0"), Some(Rule::Unspecified));
        assert_eq!(rule(&p, "224.0.0.251"), Some(Rule::Multicast));
        assert_eq!(rule(&p, "255.255.255.255"), Some(Rule::Broadcast));
        assert_eq!(rule(&p, "198.51.100.7"), Some(Rule::Own));
        assert_eq!(
            rule(&p, "10.0.0.1"),
            None,
            "private is fine outside shared mode"
        );
        assert_eq!(rule(&p, "127.0.0.77"), None, "origin.allow");
        assert_eq!(rule(&p, "93.184.216.34"), None);
    }

    #[test]
    fn shared_mode_refuses_private_ranges() {
        let p = policy(false, true);
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
        ] {
            assert_eq!(rule(&p, ip), Some(Rule::Private), "{ip}");
        }
        assert_eq!(rule(&p, "100.128.0.1"), None);
    }

    #[test]
    fn admins_go_anywhere_but_deny_holds_for_all() {
        let a = policy(true, true);
        assert_eq!(rule(&a, "127.0.0.1"), None);
        assert_eq!(rule(&a, "10.0.0.1"), None);
        assert!(a.check_port(22).is_ok());
        assert!(matches!(rule(&a, "203.0.113.9"), Some(Rule::Denied(_))));
        let p = policy(false, false);
        assert!(p.check_port(443).is_ok());
        assert_eq!(p.check_port(22).unwrap_err().rule, Rule::Port(22));
    }

    #[test]
    fn without_dns_addresses_and_localhost_names_are_still_judged() {
        let p = policy(false, false);
        let name_rule = |h: &str| p.check_name(h).err().map(|r| r.rule);
        assert_eq!(name_rule("127.0.0.1"), Some(Rule::Loopback));
        assert_eq!(name_rule("[::1]"), Some(Rule::Loopback));
        assert_eq!(name_rule("localhost"), Some(Rule::Loopback));
        assert_eq!(name_rule("Foo.LOCALHOST."), Some(Rule::Loopback));
        assert_eq!(name_rule("169.254.169.254"), Some(Rule::LinkLocal));
        assert!(matches!(name_rule("203.0.113.1"), Some(Rule::Denied(_))));
        assert_eq!(
            name_rule("example.org"),
            None,
            "the upstream resolves names"
        );
        assert_eq!(policy(true, false).check_name("localhost"), Ok(()));
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused() {
        let p = policy(false, false);
        match p.resolve("localhost", 80).await {
            Err(ConnectError::Refused(r)) => assert_eq!(r.rule, Rule::Loopback),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(policy(true, false).resolve("localhost", 80).await.is_ok());
    }
}
