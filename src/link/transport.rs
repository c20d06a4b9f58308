//! The async shell of the link: opens serial, TCP or UDP, turns bytes into decoded frames
//! with [`FrameDecoder`], writes what [`LinkHandle::send`] encodes, and reopens a lost
//! serial port or TCP connection with capped exponential backoff, forever.
//!
//! One IO task per link. Everything outside `link` sees [`LinkEvent`]s and [`LinkHandle`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mavlink::MavHeader;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::MavMessage;
use super::endpoint::Endpoint;
use super::frame::{FrameCounters, FrameDecoder, FrameEncoder};
use crate::backoff::Backoff;
use crate::config::VehicleConfig;

/// Events from the link to its owner, bounded. Overflow policy: the IO task awaits capacity
/// before reading more, so a slow owner pushes back on the kernel's socket or tty buffer
/// (and, for UDP, the kernel drops datagrams, which shows as sequence gaps). No frame is
/// dropped by the link itself.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;
/// Encoded frames waiting for the writer, bounded. Overflow policy: `send` refuses with
/// [`SendError::Full`]; the caller decides (a command is reported as not sent).
pub const SEND_CHANNEL_CAPACITY: usize = 64;
/// A TCP connect that has not completed by then is abandoned and retried after backoff.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer; larger than one frame so a burst is decoded per wake-up.
const READ_BUFFER_LEN: usize = 4096;

/// How the link identifies itself and how patiently it reopens.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// MAVLink system id of frames the daemon sends.
    pub system_id: u8,
    /// MAVLink component id of frames the daemon sends.
    pub component_id: u8,
    /// First delay before reopening a lost serial port or TCP connection.
    pub reconnect_backoff_min: Duration,
    /// Cap of the doubling reopen delay.
    pub reconnect_backoff_max: Duration,
}

impl LinkOptions {
    pub fn from_config(vehicle: &VehicleConfig) -> Self {
        Self {
            system_id: vehicle.system_id,
            component_id: vehicle.component_id,
            reconnect_backoff_min: Duration::from_millis(vehicle.reconnect_backoff_ms_min),
            reconnect_backoff_max: Duration::from_millis(vehicle.reconnect_backoff_ms_max),
        }
    }
}

/// What happened on the link, in order.
// Almost every event is a `Frame`, so boxing the message would only add an allocation
// per frame to make the rare connection events smaller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// The link is open: serial port opened, TCP connected or accepted, UDP peer known.
    Connected { peer: String },
    /// The link was lost (or could not be opened); it is being reopened in the background.
    Disconnected { reason: String },
    /// A decoded frame.
    Frame {
        header: MavHeader,
        message: MavMessage,
        received_at: Instant,
    },
}

/// A link that can never work as configured.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot listen on {endpoint}: {source} (is the address local and the port free?)")]
    Bind {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot resolve the host of {endpoint}: {reason}")]
    Resolve { endpoint: String, reason: String },
}

/// Why a frame was not handed to the writer. Nothing is queued for later: a command must
/// not fly minutes after it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the autopilot link is down; nothing was sent (retry once it reconnects)")]
    NotConnected,
    #[error(
        "the autopilot link's send queue is full ({SEND_CHANNEL_CAPACITY} frames); nothing was sent (retry shortly)"
    )]
    Full,
}

/// State shared between handles and the IO task.
struct Shared {
    encoder: Mutex<FrameEncoder>,
    outgoing: mpsc::Sender<Vec<u8>>,
    connected: AtomicBool,
    frames: AtomicU64,
    crc_errors: AtomicU64,
    parse_errors: AtomicU64,
    unknown_messages: AtomicU64,
    garbage_bytes: AtomicU64,
    reconnects: AtomicU64,
    local_addr: Option<SocketAddr>,
}

impl Shared {
    fn store_counters(&self, c: FrameCounters) {
        self.frames.store(c.frames, Ordering::Relaxed);
        self.crc_errors.store(c.crc_errors, Ordering::Relaxed);
        self.parse_errors.store(c.parse_errors, Ordering::Relaxed);
        self.unknown_messages
            .store(c.unknown_messages, Ordering::Relaxed);
        self.garbage_bytes.store(c.garbage_bytes, Ordering::Relaxed);
    }
}

/// The sending side of an open link, cheap to clone.
#[derive(Clone)]
pub struct LinkHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("connected", &self.is_connected())
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}

impl LinkHandle {
    /// Encodes `message` with the link's identity and next sequence number and hands it to
    /// the writer. Never blocks.
    pub fn send(&self, message: &MavMessage) -> Result<(), SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        // A poisoned lock only means another sender panicked mid-encode; the encoder is
        // three integers and stays valid.
        let mut encoder = self
            .shared
            .encoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let bytes = encoder.encode(message);
        match self.shared.outgoing.try_send(bytes) {
            Ok(()) => Ok(()),
            Err(error) => {
                // Not sent: give the sequence number back so the receiver sees no gap.
                encoder.sequence = encoder.sequence.wrapping_sub(1);
                Err(match error {
                    mpsc::error::TrySendError::Full(_) => SendError::Full,
                    mpsc::error::TrySendError::Closed(_) => SendError::NotConnected,
                })
            }
        }
    }

    /// True while the link is open.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The decoder's counters and the number of reconnects since the link was opened.
    pub fn counters(&self) -> (FrameCounters, u64) {
        let s = &self.shared;
        (
            FrameCounters {
                frames: s.frames.load(Ordering::Relaxed),
                crc_errors: s.crc_errors.load(Ordering::Relaxed),
                parse_errors: s.parse_errors.load(Ordering::Relaxed),
                unknown_messages: s.unknown_messages.load(Ordering::Relaxed),
                garbage_bytes: s.garbage_bytes.load(Ordering::Relaxed),
            },
            s.reconnects.load(Ordering::Relaxed),
        )
    }

    /// The local address of a `tcpin`/`udpin` listener or a `udpout` socket (so a test can
    /// listen on port 0); `None` for serial and `tcpout`.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.local_addr
    }
}

/// Opens links.
pub struct Link;

/// What the IO task drives, with everything that can never work already checked.
enum Kind {
    Serial { path: String, baud: u32 },
    TcpOut { addr: String },
    TcpIn { listener: TcpListener },
    UdpIn { socket: UdpSocket },
    UdpOut { socket: UdpSocket, peer: SocketAddr },
}

impl Link {
    /// Opens `endpoint` and spawns its IO task on the current tokio runtime.
    ///
    /// Fails only for what can never work: a `tcpin`/`udpin` address that cannot be bound,
    /// or a host that does not resolve. An absent serial device or a refusing TCP peer is
    /// retried in the background and reported as [`LinkEvent::Disconnected`]. The event
    /// receiver ends (returns `None`) after `shutdown` is cancelled.
    pub async fn open(
        endpoint: &Endpoint,
        options: LinkOptions,
        shutdown: CancellationToken,
    ) -> Result<(LinkHandle, mpsc::Receiver<LinkEvent>), LinkError> {
        let name = endpoint.to_string();
        let bind_error = |source| LinkError::Bind {
            endpoint: name.clone(),
            source,
        };
        let (kind, local_addr) = match endpoint {
            Endpoint::Serial { path, baud } => (
                Kind::Serial {
                    path: path.clone(),
                    baud: *baud,
                },
                None,
            ),
            Endpoint::TcpOut { addr } => {
                resolve(&name, addr).await?;
                (Kind::TcpOut { addr: addr.clone() }, None)
            }
            Endpoint::TcpIn { addr } => {
                let listener = TcpListener::bind(addr.as_str()).await.map_err(bind_error)?;
                let local = listener.local_addr().ok();
                (Kind::TcpIn { listener }, local)
            }
            Endpoint::UdpIn { addr } => {
                let socket = UdpSocket::bind(addr.as_str()).await.map_err(bind_error)?;
                let local = socket.local_addr().ok();
                (Kind::UdpIn { socket }, local)
            }
            Endpoint::UdpOut { addr } => {
                let peer = resolve(&name, addr).await?;
                let any: SocketAddr = if peer.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = UdpSocket::bind(any).await.map_err(bind_error)?;
                let local = socket.local_addr().ok();
                (Kind::UdpOut { socket, peer }, local)
            }
        };
        let (outgoing_tx, outgoing_rx) = mpsc::channel(SEND_CHANNEL_CAPACITY);
        let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let shared = Arc::new(Shared {
            encoder: Mutex::new(FrameEncoder::new(options.system_id, options.component_id)),
            outgoing: outgoing_tx,
            connected: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            crc_errors: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            unknown_messages: AtomicU64::new(0),
            garbage_bytes: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            local_addr,
        });
        let mut io = Io {
            name,
            shared: shared.clone(),
            events: events_tx,
            outgoing: outgoing_rx,
            decoder: FrameDecoder::new(),
            options,
            shutdown,
            ever_connected: false,
            down_reported: false,
        };
        tokio::spawn(async move {
            let _ = io.run(kind).await;
            io.shared.connected.store(false, Ordering::Release);
            tracing::debug!(link = %io.name, "link task ended");
        });
        Ok((LinkHandle { shared }, events_rx))
    }
}

async fn resolve(endpoint: &str, addr: &str) -> Result<SocketAddr, LinkError> {
    let fail = |reason: String| LinkError::Resolve {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| fail(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| fail("the name has no addresses".into()))
}

/// The IO task is over: shutdown was requested or the event receiver was dropped.
struct Stop;

/// How serving one open stream ended.
enum StreamEnd {
    Lost(String),
    /// `tcpin` accepted a new client, which replaces the current one.
    Replaced(TcpStream, SocketAddr),
}

struct Io {
    name: String,
    shared: Arc<Shared>,
    events: mpsc::Sender<LinkEvent>,
    outgoing: mpsc::Receiver<Vec<u8>>,
    decoder: FrameDecoder,
    options: LinkOptions,
    shutdown: CancellationToken,
    ever_connected: bool,
    /// A `Disconnected` was sent since the last `Connected`; retries are only logged.
    down_reported: bool,
}

impl Io {
    async fn run(&mut self, kind: Kind) -> Result<(), Stop> {
        match kind {
            Kind::Serial { path, baud } => self.run_serial(&path, baud).await,
            Kind::TcpOut { addr } => self.run_tcp_out(&addr).await,
            Kind::TcpIn { listener } => self.run_tcp_in(listener).await,
            Kind::UdpIn { socket } => self.run_udp(socket, None).await,
            Kind::UdpOut { socket, peer } => self.run_udp(socket, Some(peer)).await,
        }
    }

    async fn run_serial(&mut self, path: &str, baud: u32) -> Result<(), Stop> {
        let mut backoff = reopen_backoff(&self.options);
        loop {
            let builder = tokio_serial::new(path, baud)
                .data_bits(tokio_serial::DataBits::Eight)
                .parity(tokio_serial::Parity::None)
                .stop_bits(tokio_serial::StopBits::One)
                .flow_control(tokio_serial::FlowControl::None);
            match tokio_serial::SerialStream::open(&builder) {
                Ok(stream) => {
                    self.up(format!("{path} at {baud} baud")).await?;
                    let up_since = tokio::time::Instant::now();
                    let reason = match self.serve(stream, None).await? {
                        StreamEnd::Lost(reason) => reason,
                        // Only `tcpin` passes a listener, so nothing can replace this stream.
                        StreamEnd::Replaced(..) => "replaced by a new connection".into(),
                    };
                    self.down(format!("serial {path}: {reason}")).await?;
                    backoff.connection_lasted(up_since.elapsed());
                }
                Err(error) => {
                    self.open_failed(format!("cannot open serial {path}: {error}"))
                        .await?;
                }
            }
            self.sleep(backoff.next_delay()).await?;
        }
    }

    async fn run_tcp_out(&mut self, addr: &str) -> Result<(), Stop> {
        let mut backoff = reopen_backoff(&self.options);
        loop {
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr));
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop),
                result = connect => result,
            };
            match result {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let peer = stream
                        .peer_addr()
                        .map_or_else(|_| addr.to_owned(), |a| a.to_string());
                    self.up(peer).await?;
                    let up_since = tokio::time::Instant::now();
                    let reason = match self.serve(stream, None).await? {
                        StreamEnd::Lost(reason) => reason,
                        // Only `tcpin` passes a listener, so nothing can replace this stream.
                        StreamEnd::Replaced(..) => "replaced by a new connection".into(),
                    };
                    self.down(format!("tcp {addr}: {reason}")).await?;
                    backoff.connection_lasted(up_since.elapsed());
                }
                Ok(Err(error)) => {
                    self.open_failed(format!("cannot connect to tcp {addr}: {error}"))
                        .await?
                }
                Err(_) => {
                    self.open_failed(format!(
                        "cannot connect to tcp {addr}: no answer within {CONNECT_TIMEOUT:?}"
                    ))
                    .await?
                }
            }
            self.sleep(backoff.next_delay()).await?;
        }
    }

    async fn run_tcp_in(&mut self, listener: TcpListener) -> Result<(), Stop> {
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop),
                accepted = listener.accept() => accepted,
            };
            let (mut stream, mut peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // E.g. out of file descriptors: wait instead of spinning.
                    tracing::warn!(link = %self.name, %error, "accept failed");
                    self.sleep(self.options.reconnect_backoff_min).await?;
                    continue;
                }
            };
            self.up(peer.to_string()).await?;
            loop {
                let _ = stream.set_nodelay(true);
                match self.serve(stream, Some(&listener)).await? {
                    StreamEnd::Lost(reason) => {
                        self.down(format!("tcp client {peer}: {reason}")).await?;
                        break;
                    }
                    StreamEnd::Replaced(new_stream, new_peer) => {
                        // Like SITL: the newest client wins.
                        self.down(format!("tcp client {peer} replaced by {new_peer}"))
                            .await?;
                        (stream, peer) = (new_stream, new_peer);
                        self.up(peer.to_string()).await?;
                    }
                }
            }
        }
    }

    /// UDP has no connection: the link is up once a peer is known (`udpout`: at once;
    /// `udpin`: when the first datagram arrives) and stays up while the peer is silent.
    async fn run_udp(
        &mut self,
        socket: UdpSocket,
        mut peer: Option<SocketAddr>,
    ) -> Result<(), Stop> {
        if let Some(peer) = peer {
            self.up(peer.to_string()).await?;
        }
        let listening = peer.is_none();
        let mut buf = vec![0u8; 65_536];
        loop {
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop),
                received = socket.recv_from(&mut buf) => UdpStep::Received(received),
                Some(bytes) = self.outgoing.recv() => UdpStep::Send(bytes),
            };
            match step {
                UdpStep::Received(Ok((len, from))) => {
                    if listening && peer != Some(from) {
                        // `udpin` replies to whoever sent last.
                        if peer.is_none() {
                            self.up(from.to_string()).await?;
                        } else {
                            tracing::info!(link = %self.name, %from, "udp peer changed");
                        }
                        peer = Some(from);
                    }
                    self.deliver(buf.get(..len).unwrap_or_default()).await?;
                }
                // An ICMP "port unreachable" from a silent peer and similar errors are not
                // a lost link: UDP keeps listening.
                UdpStep::Received(Err(error)) => {
                    tracing::debug!(link = %self.name, %error, "udp receive error ignored");
                }
                UdpStep::Send(bytes) => {
                    if let Some(peer) = peer
                        && let Err(error) = socket.send_to(&bytes, peer).await
                    {
                        tracing::debug!(link = %self.name, %error, %peer, "udp send failed");
                    }
                }
            }
        }
    }

    /// Reads and writes one open stream until it fails, is replaced, or the task stops.
    ///
    /// Decoded frames are delivered before anything else is read or written, so the
    /// event channel's backpressure reaches the stream; a frame is never half-delivered
    /// when a new `tcpin` client arrives, because accepting is only polled in between.
    async fn serve<S: AsyncRead + AsyncWrite>(
        &mut self,
        stream: S,
        listener: Option<&TcpListener>,
    ) -> Result<StreamEnd, Stop> {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = [0u8; READ_BUFFER_LEN];
        loop {
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop),
                read = reader.read(&mut buf) => StreamStep::Read(read),
                Some(bytes) = self.outgoing.recv() => StreamStep::Write(bytes),
                accepted = accept_if(listener) => StreamStep::Accepted(accepted),
            };
            match step {
                StreamStep::Read(Ok(0)) => return Ok(StreamEnd::Lost("end of stream".into())),
                StreamStep::Read(Ok(len)) => {
                    self.deliver(buf.get(..len).unwrap_or_default()).await?
                }
                StreamStep::Read(Err(error)) => {
                    return Ok(StreamEnd::Lost(format!("read failed: {error}")));
                }
                StreamStep::Write(bytes) => {
                    let written = tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(Stop),
                        written = writer.write_all(&bytes) => written,
                    };
                    if let Err(error) = written {
                        return Ok(StreamEnd::Lost(format!("write failed: {error}")));
                    }
                }
                StreamStep::Accepted(Ok((stream, peer))) => {
                    return Ok(StreamEnd::Replaced(stream, peer));
                }
                StreamStep::Accepted(Err(error)) => {
                    tracing::warn!(link = %self.name, %error, "accept failed");
                }
            }
        }
    }

    /// Decodes bytes and delivers every frame, waiting for channel capacity.
    async fn deliver(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let received_at = Instant::now();
        self.decoder.push(bytes);
        while let Some(item) = self.decoder.poll() {
            match item {
                Ok(frame) => {
                    let event = LinkEvent::Frame {
                        header: frame.header,
                        message: frame.message,
                        received_at,
                    };
                    // Keep counters current before waiting, so they match what was read.
                    self.shared.store_counters(self.decoder.counters());
                    self.emit(event).await?;
                }
                // Counted by the decoder; noise on a serial line would flood the log.
                Err(error) => tracing::debug!(link = %self.name, %error, "frame rejected"),
            }
        }
        self.shared.store_counters(self.decoder.counters());
        Ok(())
    }

    async fn up(&mut self, peer: String) -> Result<(), Stop> {
        // The old stream's partial frame must not be glued to the new stream's bytes.
        self.decoder.reset();
        self.shared.store_counters(self.decoder.counters());
        self.drop_stale_outgoing();
        if self.ever_connected {
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.ever_connected = true;
        self.down_reported = false;
        self.shared.connected.store(true, Ordering::Release);
        tracing::info!(link = %self.name, %peer, "link connected");
        self.emit(LinkEvent::Connected { peer }).await
    }

    async fn down(&mut self, reason: String) -> Result<(), Stop> {
        self.shared.connected.store(false, Ordering::Release);
        self.drop_stale_outgoing();
        self.down_reported = true;
        tracing::warn!(link = %self.name, %reason, "link lost; reopening");
        self.emit(LinkEvent::Disconnected { reason }).await
    }

    /// An open attempt failed: reported once per outage, then only logged.
    async fn open_failed(&mut self, reason: String) -> Result<(), Stop> {
        if self.down_reported {
            tracing::debug!(link = %self.name, %reason, "still down");
            return Ok(());
        }
        self.down(reason).await
    }

    /// Frames handed over while the link was going down would otherwise be written to the
    /// next connection, possibly much later: a command must not fly late.
    fn drop_stale_outgoing(&mut self) {
        let mut dropped = 0usize;
        while self.outgoing.try_recv().is_ok() {
            dropped += 1;
        }
        if dropped > 0 {
            tracing::warn!(link = %self.name, dropped, "dropped frames queued while the link went down");
        }
    }

    async fn emit(&mut self, event: LinkEvent) -> Result<(), Stop> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Stop),
            sent = self.events.send(event) => sent.map_err(|_| Stop),
        }
    }

    async fn sleep(&self, delay: Duration) -> Result<(), Stop> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Stop),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// The reopen delay of serial and TCP links: `reconnect_backoff_min` doubling up to
/// `reconnect_backoff_max`, no jitter (one autopilot per link); reset only by a connection
/// that stayed up at least the cap (`Backoff::connection_lasted`).
fn reopen_backoff(options: &LinkOptions) -> Backoff {
    Backoff::new(options.reconnect_backoff_min, options.reconnect_backoff_max)
}

enum StreamStep {
    Read(io::Result<usize>),
    Write(Vec<u8>),
    Accepted(io::Result<(TcpStream, SocketAddr)>),
}

enum UdpStep {
    Received(io::Result<(usize, SocketAddr)>),
    Send(Vec<u8>),
}

/// Accepts on `listener` if there is one, otherwise never completes.
async fn accept_if(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The link keeps its limits and its reset rule through the shared type (the type's own
    /// tests cover the arithmetic).
    #[test]
    fn reopen_backoff_doubles_to_the_cap_and_resets_only_after_a_lasting_connection() {
        let mut b = reopen_backoff(&LinkOptions {
            system_id: 1,
            component_id: 1,
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_millis(1000),
        });
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        b.connection_lasted(Duration::from_millis(10));
        assert_eq!(b.next_delay(), Duration::from_millis(1000));
        b.connection_lasted(Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
