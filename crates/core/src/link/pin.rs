//! Which peer a listening link (`udpin`, `tcpin`) talks to, sans-IO.
//!
//! A listening socket hears anyone on the network. Without a rule, `udpin` would answer
//! whoever sent last and `tcpin` would serve the newest client: a second machine claiming the
//! autopilot's ids could then feed the daemon its own mode, arming and position, receive the
//! daemon's heartbeats and commands, answer them with forged `COMMAND_ACK`s, or push the
//! autopilot off a `tcpin` link. So the daemon pins its peer:
//!
//! - [`PinRule::FirstAutopilot`] (the default): the first peer that sends an autopilot's
//!   heartbeat the link accepts (signed and verified when signing is required) becomes the
//!   peer. Anyone else is refused (counted, logged, alerted) while the peer is heard; only a
//!   peer silent for longer than `release_after` (the heartbeat timeout: the link is lost
//!   anyway) can be replaced, by the next autopilot heartbeat. On `tcpin` the pin is the
//!   peer's host: the same host reconnects at once (its port changes), another host only
//!   after the silence; while a connection is open and heard, every other connection is
//!   closed at once.
//! - [`PinRule::Address`] (`vehicle.pinned_peer`): only that address (or any port of that
//!   host) is ever a peer; nothing else, not even after a silence.
//! - [`PinRule::Open`]: the old behaviour, for the simulator (an autopilot serves whoever
//!   connects, as SITL does) and test tools.
//!
//! Signing is the real answer (a forger cannot produce an accepted heartbeat at all);
//! pinning closes the door for links without a key, and keeps a flood of foreign frames
//! off the daemon's decisions either way.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// An address a link is pinned to: a host, and a port unless any port of it will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedAddress {
    pub ip: IpAddr,
    /// `None`: any port (a TCP client's port changes at every connection).
    pub port: Option<u16>,
}

impl PinnedAddress {
    pub fn matches(&self, addr: SocketAddr) -> bool {
        canonical(addr.ip()) == canonical(self.ip) && self.port.is_none_or(|p| p == addr.port())
    }
}

impl std::str::FromStr for PinnedAddress {
    type Err = String;

    /// `192.168.1.10:14550`, `[fd00::2]:5760`, or a host alone (`192.168.1.10`, `fd00::2`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(PinnedAddress {
                ip: addr.ip(),
                port: (addr.port() != 0).then_some(addr.port()),
            });
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(PinnedAddress { ip, port: None });
        }
        Err(format!(
            "`{text}` is not an IP address with or without a port (e.g. 192.168.1.10:14550 or \
             192.168.1.10); names are not accepted: a pin must not depend on DNS"
        ))
    }
}

impl<'de> serde::Deserialize<'de> for PinnedAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for PinnedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}", SocketAddr::new(self.ip, port)),
            None => write!(f, "{} (any port)", self.ip),
        }
    }
}

/// An IPv4 address seen through an IPv6 socket is the same host.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Who may be the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinRule {
    /// No pinning: `udpin` answers whoever sent last, `tcpin` serves the newest client.
    Open,
    /// The first peer whose autopilot heartbeat the link accepts.
    FirstAutopilot,
    /// Only this address.
    Address(PinnedAddress),
}

/// The pinning rule and how long a silent peer keeps its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPolicy {
    pub rule: PinRule,
    /// A peer heard from less recently than this may be replaced (`FirstAutopilot`), or a new
    /// connection from the pinned address may replace its silent one (`Address`).
    pub release_after: Duration,
}

impl PeerPolicy {
    /// No pinning (the simulator, test tools).
    pub const OPEN: PeerPolicy = PeerPolicy {
        rule: PinRule::Open,
        release_after: Duration::ZERO,
    };
}

/// What to do with a datagram from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// From the peer: decode and deliver.
    Peer,
    /// Becomes the peer now (no pin yet, and the rule needs no heartbeat).
    NewPeer,
    /// Not the peer, but may become it with an accepted autopilot heartbeat: decode, and
    /// deliver only from the frame that pins it.
    Candidate,
    /// Refused: counted, reported, not decoded.
    Foreign,
}

/// The pin of one listening link. See the module doc.
///
/// Call order (UDP): [`admit`](Self::admit) for every datagram; [`pin`](Self::pin) when a
/// `NewPeer`, or a `Candidate` with an accepted autopilot heartbeat, becomes the peer;
/// [`heard`](Self::heard) for every frame accepted from the peer.
/// (TCP): [`admit_connection`](Self::admit_connection) for every accepted connection;
/// [`connected`](Self::connected) when one is served; [`pin`](Self::pin) at its first
/// accepted autopilot heartbeat; [`heard`](Self::heard) per accepted frame.
#[derive(Debug, Clone)]
pub struct PeerPin {
    policy: PeerPolicy,
    pinned: Option<SocketAddr>,
    /// The last frame accepted from the peer (or when it was pinned or connected).
    heard_at: Option<Instant>,
}

impl PeerPin {
    pub fn new(policy: PeerPolicy) -> PeerPin {
        PeerPin {
            policy,
            pinned: None,
            heard_at: None,
        }
    }

    pub fn policy(&self) -> PeerPolicy {
        self.policy
    }

    /// The pinned peer, if any.
    pub fn pinned(&self) -> Option<SocketAddr> {
        self.pinned
    }

    fn silent(&self, now: Instant) -> bool {
        self.heard_at
            .is_none_or(|at| now.saturating_duration_since(at) > self.policy.release_after)
    }

    /// A datagram from `from` (`udpin`).
    pub fn admit(&self, now: Instant, from: SocketAddr) -> Admission {
        match self.policy.rule {
            PinRule::Open if self.pinned == Some(from) => Admission::Peer,
            PinRule::Open => Admission::NewPeer,
            PinRule::Address(allowed) if !allowed.matches(from) => Admission::Foreign,
            PinRule::Address(_) if self.pinned == Some(from) => Admission::Peer,
            // Another port of a host pinned without one: the newest is the peer.
            PinRule::Address(_) => Admission::NewPeer,
            PinRule::FirstAutopilot => match self.pinned {
                Some(peer) if peer == from => Admission::Peer,
                Some(_) if self.silent(now) => Admission::Candidate,
                Some(_) => Admission::Foreign,
                None => Admission::Candidate,
            },
        }
    }

    /// A new connection from `from` (`tcpin`); `serving` says whether another one is open.
    /// True: serve it (replacing the open one); false: close it at once.
    pub fn admit_connection(&self, now: Instant, from: SocketAddr, serving: bool) -> bool {
        match self.policy.rule {
            PinRule::Open => true,
            PinRule::Address(allowed) => allowed.matches(from) && (!serving || self.silent(now)),
            PinRule::FirstAutopilot => {
                if serving && !self.silent(now) {
                    return false;
                }
                match self.pinned {
                    Some(peer) => canonical(peer.ip()) == canonical(from.ip()) || self.silent(now),
                    None => true,
                }
            }
        }
    }

    /// A connection is being served (`tcpin`): it has `release_after` to be heard before
    /// another may replace it. Under `Open` and `Address` it is the peer at once.
    pub fn connected(&mut self, now: Instant, from: SocketAddr) {
        self.heard_at = Some(now);
        if self.policy.rule != PinRule::FirstAutopilot {
            self.pinned = Some(from);
        }
    }

    /// `from` is the peer from now on; returns the peer it replaces, if another.
    pub fn pin(&mut self, now: Instant, from: SocketAddr) -> Option<SocketAddr> {
        self.heard_at = Some(now);
        let previous = self.pinned.replace(from);
        previous.filter(|p| *p != from)
    }

    /// A frame from the peer was accepted.
    pub fn heard(&mut self, now: Instant) {
        self.heard_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: Duration = Duration::from_secs(3);

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn first() -> PeerPin {
        PeerPin::new(PeerPolicy {
            rule: PinRule::FirstAutopilot,
            release_after: RELEASE,
        })
    }

    #[test]
    fn udp_first_autopilot_then_nobody_else_while_it_is_heard() {
        let t0 = Instant::now();
        let autopilot = addr("10.0.0.2:14550");
        let intruder = addr("10.0.0.9:14550");
        let mut pin = first();
        // Before the pin, anyone is a candidate (the shell pins at an accepted heartbeat).
        assert_eq!(pin.admit(t0, intruder), Admission::Candidate);
        assert_eq!(pin.admit(t0, autopilot), Admission::Candidate);
        assert_eq!(pin.pin(t0, autopilot), None);
        assert_eq!(pin.admit(t0, autopilot), Admission::Peer);
        // Same host, another port: a different peer.
        assert_eq!(pin.admit(t0, addr("10.0.0.2:14551")), Admission::Foreign);
        assert_eq!(pin.admit(t0 + RELEASE, intruder), Admission::Foreign);
        pin.heard(t0 + RELEASE);
        assert_eq!(pin.admit(t0 + 2 * RELEASE, intruder), Admission::Foreign);
        // Silent for longer than the heartbeat timeout: the next autopilot may take over.
        let later = t0 + 2 * RELEASE + Duration::from_millis(1);
        assert_eq!(pin.admit(later, intruder), Admission::Candidate);
        assert_eq!(pin.pin(later, intruder), Some(autopilot));
        assert_eq!(pin.admit(later, autopilot), Admission::Foreign);
    }

    #[test]
    fn udp_pinned_address_is_the_only_peer_ever() {
        let t0 = Instant::now();
        let allowed: PinnedAddress = "10.0.0.2:14550".parse().unwrap();
        let mut pin = PeerPin::new(PeerPolicy {
            rule: PinRule::Address(allowed),
            release_after: RELEASE,
        });
        assert_eq!(pin.admit(t0, addr("10.0.0.9:14550")), Admission::Foreign);
        assert_eq!(pin.admit(t0, addr("10.0.0.2:14550")), Admission::NewPeer);
        pin.pin(t0, addr("10.0.0.2:14550"));
        assert_eq!(pin.admit(t0, addr("10.0.0.2:14550")), Admission::Peer);
        assert_eq!(pin.admit(t0, addr("10.0.0.2:14551")), Admission::Foreign);
        // Even after an hour of silence.
        let hour = t0 + Duration::from_secs(3600);
        assert_eq!(pin.admit(hour, addr("10.0.0.9:14550")), Admission::Foreign);
        // A host alone pins any of its ports, also seen through an IPv6 socket.
        let host: PinnedAddress = "10.0.0.2".parse().unwrap();
        assert!(host.matches(addr("10.0.0.2:1234")));
        assert!(host.matches(addr("[::ffff:10.0.0.2]:1234")));
        assert!(!host.matches(addr("10.0.0.3:1234")));
    }

    #[test]
    fn open_answers_whoever_sent_last() {
        let t0 = Instant::now();
        let mut pin = PeerPin::new(PeerPolicy::OPEN);
        assert_eq!(pin.admit(t0, addr("10.0.0.2:1")), Admission::NewPeer);
        pin.pin(t0, addr("10.0.0.2:1"));
        assert_eq!(pin.admit(t0, addr("10.0.0.2:1")), Admission::Peer);
        assert_eq!(pin.admit(t0, addr("10.0.0.3:1")), Admission::NewPeer);
        assert!(pin.admit_connection(t0, addr("10.0.0.3:1"), true));
    }

    #[test]
    fn tcp_first_autopilot_keeps_its_connection() {
        let t0 = Instant::now();
        let mut pin = first();
        let autopilot = addr("10.0.0.2:40001");
        assert!(pin.admit_connection(t0, autopilot, false));
        pin.connected(t0, autopilot);
        // Another client while the first is fresh: refused, even before its heartbeat.
        assert!(!pin.admit_connection(t0, addr("10.0.0.9:40002"), true));
        pin.pin(t0, autopilot);
        pin.heard(t0 + RELEASE);
        assert!(!pin.admit_connection(t0 + RELEASE, addr("10.0.0.9:40003"), true));
        // The same host reconnecting while its old connection is open and heard: refused
        // too (a half-open old connection is replaced once it has been silent).
        assert!(!pin.admit_connection(t0 + RELEASE, addr("10.0.0.2:40004"), true));
        // Its connection closed: the same host comes back at once, another host does not.
        assert!(pin.admit_connection(t0 + RELEASE, addr("10.0.0.2:40005"), false));
        assert!(!pin.admit_connection(t0 + RELEASE, addr("10.0.0.9:40006"), false));
        // After the silence, anyone may try (and must bring an accepted heartbeat).
        let later = t0 + 2 * RELEASE + Duration::from_millis(1);
        assert!(pin.admit_connection(later, addr("10.0.0.9:40007"), false));
        assert!(pin.admit_connection(later, addr("10.0.0.9:40008"), true));
    }

    #[test]
    fn tcp_a_silent_first_client_cannot_hold_the_link() {
        let t0 = Instant::now();
        let mut pin = first();
        pin.connected(t0, addr("10.0.0.9:40001"));
        assert!(!pin.admit_connection(t0 + RELEASE, addr("10.0.0.2:40002"), true));
        let later = t0 + RELEASE + Duration::from_millis(1);
        assert!(pin.admit_connection(later, addr("10.0.0.2:40002"), true));
    }

    #[test]
    fn tcp_pinned_host_only() {
        let t0 = Instant::now();
        let mut pin = PeerPin::new(PeerPolicy {
            rule: PinRule::Address("10.0.0.2".parse().unwrap()),
            release_after: RELEASE,
        });
        assert!(!pin.admit_connection(t0, addr("10.0.0.9:1"), false));
        assert!(pin.admit_connection(t0, addr("10.0.0.2:1"), false));
        pin.connected(t0, addr("10.0.0.2:1"));
        assert!(!pin.admit_connection(t0, addr("10.0.0.2:2"), true));
        let later = t0 + RELEASE + Duration::from_millis(1);
        assert!(pin.admit_connection(later, addr("10.0.0.2:2"), true));
        assert!(!pin.admit_connection(later, addr("10.0.0.9:2"), false));
    }

    #[test]
    fn pinned_addresses_parse_and_say_what_is_wrong() {
        let p: PinnedAddress = "192.168.1.10:14550".parse().unwrap();
        assert_eq!(p.to_string(), "192.168.1.10:14550");
        let p: PinnedAddress = "192.168.1.10".parse().unwrap();
        assert_eq!(p.to_string(), "192.168.1.10 (any port)");
        let p: PinnedAddress = "[fd00::2]:5760".parse().unwrap();
        assert_eq!(p.port, Some(5760));
        let error = "autopilot.local:5760".parse::<PinnedAddress>().unwrap_err();
        assert!(error.contains("not an IP address"), "{error}");
    }
}
