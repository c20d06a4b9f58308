//! Endpoint strings as the MAVLink ecosystem writes them (mavlink-router, MAVProxy, pymavlink).
//!
//! `serial:/dev/ttyAMA0:921600`, `udpin:0.0.0.0:14550`, `udpout:HOST:PORT`,
//! `tcpout:HOST:PORT`, `tcpin:ADDR:PORT`. Pure parsing: nothing is opened here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Baud rates a serial endpoint accepts; anything else is a typo, not a wish.
pub const SERIAL_BAUDS: &[u32] = &[
    1200, 2400, 4800, 9600, 19200, 38400, 57600, 115_200, 230_400, 460_800, 500_000, 576_000,
    921_600, 1_000_000, 1_500_000, 2_000_000, 3_000_000,
];

/// Where the autopilot (or, for the simulator, the ground side) is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A serial device at a baud rate, 8N1, no flow control.
    Serial { path: String, baud: u32 },
    /// Listen for UDP datagrams on a local address; reply to whoever sent last.
    UdpIn { addr: String },
    /// Send UDP datagrams to a remote address (and receive the replies).
    UdpOut { addr: String },
    /// Connect to a TCP server.
    TcpOut { addr: String },
    /// Listen for TCP connections on a local address.
    TcpIn { addr: String },
}

impl Endpoint {
    /// The daemon's default: the built-in simulator on loopback, like ArduPilot SITL's TCP port.
    pub fn default_vehicle() -> Self {
        Endpoint::TcpOut {
            addr: "127.0.0.1:5760".into(),
        }
    }

    /// The simulator's default: listen where the daemon's default connects.
    pub fn default_sim() -> Self {
        Endpoint::TcpIn {
            addr: "127.0.0.1:5760".into(),
        }
    }
}

/// An endpoint string that could not be understood, with what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint `{input}`: {reason}")]
pub struct EndpointError {
    pub input: String,
    pub reason: String,
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| EndpointError {
            input: input.to_owned(),
            reason,
        };
        let (scheme, rest) = input.split_once(':').ok_or_else(|| {
            fail("expected SCHEME:..., one of serial:PATH:BAUD, udpin:ADDR:PORT, udpout:HOST:PORT, tcpin:ADDR:PORT, tcpout:HOST:PORT".into())
        })?;
        match scheme {
            "serial" => {
                let (path, baud) = rest.rsplit_once(':').ok_or_else(|| {
                    fail("expected serial:PATH:BAUD, e.g. serial:/dev/ttyAMA0:921600".into())
                })?;
                if path.is_empty() {
                    return Err(fail("the serial device path is empty".into()));
                }
                let baud: u32 = baud
                    .parse()
                    .map_err(|_| fail(format!("baud rate `{baud}` is not a number")))?;
                if !SERIAL_BAUDS.contains(&baud) {
                    return Err(fail(format!(
                        "baud rate {baud} is not supported; use one of {SERIAL_BAUDS:?}"
                    )));
                }
                Ok(Endpoint::Serial {
                    path: path.to_owned(),
                    baud,
                })
            }
            "udpin" | "udpout" | "tcpin" | "tcpout" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| fail(format!("expected {scheme}:HOST:PORT")))?;
                if host.is_empty() {
                    return Err(fail("the host is empty".into()));
                }
                let port: u16 = port
                    .parse()
                    .map_err(|_| fail(format!("port `{port}` is not a number in 0..=65535")))?;
                let outgoing = scheme.ends_with("out");
                if outgoing && port == 0 {
                    return Err(fail(
                        "port 0 can only be used to listen (udpin/tcpin)".into(),
                    ));
                }
                let addr = format!("{host}:{port}");
                Ok(match scheme {
                    "udpin" => Endpoint::UdpIn { addr },
                    "udpout" => Endpoint::UdpOut { addr },
                    "tcpin" => Endpoint::TcpIn { addr },
                    _ => Endpoint::TcpOut { addr },
                })
            }
            other => Err(fail(format!(
                "unknown scheme `{other}`; use serial, udpin, udpout, tcpin or tcpout"
            ))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Serial { path, baud } => write!(f, "serial:{path}:{baud}"),
            Endpoint::UdpIn { addr } => write!(f, "udpin:{addr}"),
            Endpoint::UdpOut { addr } => write!(f, "udpout:{addr}"),
            Endpoint::TcpOut { addr } => write!(f, "tcpout:{addr}"),
            Endpoint::TcpIn { addr } => write!(f, "tcpin:{addr}"),
        }
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ecosystem_forms() {
        let cases = [
            (
                "serial:/dev/ttyAMA0:921600",
                Endpoint::Serial {
                    path: "/dev/ttyAMA0".into(),
                    baud: 921_600,
                },
            ),
            (
                "udpin:0.0.0.0:14550",
                Endpoint::UdpIn {
                    addr: "0.0.0.0:14550".into(),
                },
            ),
            (
                "udpout:10.0.0.2:14550",
                Endpoint::UdpOut {
                    addr: "10.0.0.2:14550".into(),
                },
            ),
            (
                "tcpout:localhost:5760",
                Endpoint::TcpOut {
                    addr: "localhost:5760".into(),
                },
            ),
            (
                "tcpin:127.0.0.1:0",
                Endpoint::TcpIn {
                    addr: "127.0.0.1:0".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            let parsed: Endpoint = text.parse().unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string(), text, "round trip of {text}");
        }
    }

    #[test]
    fn refuses_bad_forms_with_a_reason() {
        let cases = [
            ("", "expected SCHEME"),
            ("serial:/dev/ttyUSB0", "expected serial:PATH:BAUD"),
            ("serial:/dev/ttyUSB0:12345", "not supported"),
            ("serial:/dev/ttyUSB0:fast", "not a number"),
            ("serial::57600", "path is empty"),
            ("udp:1.2.3.4:5", "unknown scheme"),
            ("tcpout:host:99999", "not a number"),
            ("tcpout:host:0", "only be used to listen"),
            ("udpin::14550", "host is empty"),
        ];
        for (text, needle) in cases {
            let error = text.parse::<Endpoint>().unwrap_err();
            assert!(error.to_string().contains(needle), "{text}: {error}");
        }
    }
}
