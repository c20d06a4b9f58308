//! The async shell of the link: opens serial, TCP or UDP, turns bytes into decoded frames
//! with [`FrameDecoder`], writes what [`LinkHandle::send`] encodes, and reopens a lost
//! serial port or TCP connection with capped exponential backoff, forever.
//!
//! Trust is decided here, before a frame leaves the link: every frame goes through the
//! link's [`LinkSigning`] when it has a key (signed outgoing, checked incoming), and a
//! listening link (`udpin`, `tcpin`) talks only to the peer its [`PeerPin`] chose. What is
//! refused is counted at once ([`TrustCounters`]) and reported as [`LinkEvent::Refused`]
//! within the budget of [`RefusalReporter`]; it is never delivered.
//!
//! One IO task per link. Everything outside `link` sees [`LinkEvent`]s and [`LinkHandle`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use mavlink::MavHeader;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::MavMessage;
use super::endpoint::Endpoint;
use super::frame::{Frame, FrameCounters, FrameDecoder, FrameEncoder};
use super::keys::TimestampStore;
use super::pin::{Admission, PeerPin, PeerPolicy, PinRule};
use super::signing::{
    Acceptance, LinkSigning, PERSIST_INTERVAL, SignatureRefusal, SigningKey, SigningMode,
};
use super::trust::{Refusal, RefusalReporter, TrustCounters};
use crate::backoff::Backoff;
use crate::config::VehicleConfig;

/// Batches of events from the link to its owner, bounded: one batch per read (every frame
/// of that read) or per connection event, so the owner is woken once per read rather than
/// once per frame. Overflow policy: the IO task awaits capacity before reading more, so a
/// slow owner pushes back on the kernel's socket or tty buffer (and, for UDP, the kernel
/// drops datagrams, which shows as sequence gaps). No frame is dropped by the link itself.
/// At most this many batches wait, and the task holds one more: each is at most one read of
/// [`READ_BUFFER_LEN`] bytes (or one datagram).
pub const EVENT_CHANNEL_CAPACITY: usize = 16;
/// Emptied batches kept for reuse, so a read costs no allocation once the link is warm.
const SPARE_BATCHES_MAX: usize = 4;
/// Encoded frames waiting for the writer, bounded. Overflow policy: `send` refuses with
/// [`SendError::Full`]; the caller decides (a command is reported as not sent).
pub const SEND_CHANNEL_CAPACITY: usize = 64;
/// A TCP connect that has not completed by then is abandoned and retried after backoff.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer; larger than one frame so a burst is decoded per wake-up.
pub const READ_BUFFER_LEN: usize = 4096;

/// How the link identifies itself, how patiently it reopens, and whom it trusts.
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
    /// MAVLink 2 signing; `None`: nothing signed, nothing checked.
    pub signing: Option<SigningSetup>,
    /// Which peer a `udpin`/`tcpin` link talks to (ignored by the other endpoints).
    pub peer: PeerPolicy,
}

/// A link's signing, as it starts.
#[derive(Debug, Clone)]
pub struct SigningSetup {
    pub key: SigningKey,
    /// `sign` or `required` (a link without signing has no setup).
    pub mode: SigningMode,
    /// Which unsigned frames are accepted; follows `mode` for the daemon, ArduPilot's
    /// channel rule for the simulator.
    pub acceptance: Acceptance,
    /// This link's id in the signature trailer (the daemon's autopilot link is 0; each
    /// further link of one system takes its own).
    pub link_id: u8,
    /// Where the link's timestamp starts ([`TimestampStore::start_timestamp`]).
    pub initial_timestamp: u64,
    /// Read the wall clock for timestamps (the daemon, tools); false for a system that keeps
    /// its own, as an autopilot without GPS time does (the simulator).
    pub wall_clock: bool,
    /// Where the timestamp is persisted (every 30 s and at shutdown); `None`: not persisted.
    pub timestamp_store: Option<PathBuf>,
}

impl SigningSetup {
    /// The signing state this setup starts with.
    pub fn start(&self) -> LinkSigning {
        LinkSigning::new(
            self.key.clone(),
            self.link_id,
            self.acceptance,
            self.initial_timestamp,
        )
    }
}

impl LinkOptions {
    /// The daemon's autopilot link from `[vehicle]`: reads the signing key and the persisted
    /// timestamp, so a missing or unreadable key stops the start with its reason.
    pub fn for_vehicle(vehicle: &VehicleConfig) -> Result<Self, String> {
        let signing = match vehicle.signing.mode {
            SigningMode::Off => None,
            mode => {
                let key_path = vehicle.signing.key_path.as_deref().ok_or_else(|| {
                    format!(
                        "vehicle.signing.mode is `{mode}` but vehicle.signing.key_path is not set"
                    )
                })?;
                let key = super::keys::load_key(key_path)?;
                let store = TimestampStore::new(vehicle.signing.resolved_timestamp_path());
                Some(SigningSetup {
                    key,
                    mode,
                    acceptance: match mode {
                        SigningMode::Sign => Acceptance::SignedOrUnsigned,
                        _ => Acceptance::SignedOnly,
                    },
                    link_id: 0,
                    initial_timestamp: store.start_timestamp()?,
                    wall_clock: true,
                    timestamp_store: Some(store.path),
                })
            }
        };
        let heartbeat_timeout = Duration::from_millis(vehicle.heartbeat_timeout_ms);
        Ok(Self {
            system_id: vehicle.system_id,
            component_id: vehicle.component_id,
            reconnect_backoff_min: Duration::from_millis(vehicle.reconnect_backoff_ms_min),
            reconnect_backoff_max: Duration::from_millis(vehicle.reconnect_backoff_ms_max),
            signing,
            peer: PeerPolicy {
                rule: match vehicle.pinned_peer {
                    Some(address) => PinRule::Address(address),
                    None => PinRule::FirstAutopilot,
                },
                release_after: heartbeat_timeout,
            },
        })
    }
}

pub use super::event::LinkEvent;

/// Batches the owner has read, handed back with their events for the IO task to fill again:
/// their frames go back to the decoder (`FrameDecoder::recycle`), so the link decodes
/// without allocating.
#[derive(Default)]
struct SpareBatches(Mutex<Vec<Vec<LinkEvent>>>);

impl SpareBatches {
    fn take(&self) -> Vec<LinkEvent> {
        let mut spare = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        spare.pop().unwrap_or_default()
    }

    fn give_back(&self, batch: Vec<LinkEvent>) {
        if batch.capacity() == 0 {
            return;
        }
        let mut spare = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_BATCHES_MAX {
            spare.push(batch);
        }
    }
}

/// The owner's side of a link's events, in order, though the IO task hands them over one
/// batch per read (one channel send and one wake-up per read). The decision loop reads a
/// batch in place ([`ready`](Self::ready), [`buffered`](Self::buffered),
/// [`consume`](Self::consume)): a frame is a few hundred bytes, and moving each out and on
/// again was a sixth of the daemon's instructions per frame (issue 17).
pub struct LinkEvents {
    batches: mpsc::Receiver<Vec<LinkEvent>>,
    /// The batch being read, in order; `next` is the first event not yet read.
    current: Vec<LinkEvent>,
    next: usize,
    spare: Arc<SpareBatches>,
}

impl LinkEvents {
    /// The next event; `None` once the IO task ended and every event was read.
    /// Cancel-safe: a batch received is kept before this returns.
    pub async fn recv(&mut self) -> Option<LinkEvent> {
        if !self.ready().await {
            return None;
        }
        // Taken out of the batch, leaving an event that owns nothing in its read place.
        let read = LinkEvent::Disconnected {
            reason: String::new(),
        };
        let event = std::mem::replace(&mut self.current[self.next], read);
        self.next += 1;
        Some(event)
    }

    /// Waits until an event is buffered; false once the IO task ended and every event was
    /// read. Cancel-safe: a batch received is kept before this returns.
    pub async fn ready(&mut self) -> bool {
        while self.buffered().is_empty() {
            match self.batches.recv().await {
                Some(batch) => self.take_batch(batch),
                None => return false,
            }
        }
        true
    }

    /// Takes the next batch if nothing is buffered and one is already here, without waiting;
    /// true when events are buffered.
    pub fn try_fill(&mut self) -> bool {
        while self.buffered().is_empty() {
            match self.batches.try_recv() {
                Ok(batch) => self.take_batch(batch),
                Err(_) => return false,
            }
        }
        true
    }

    /// The events received and not yet read, in order.
    pub fn buffered(&self) -> &[LinkEvent] {
        &self.current[self.next..]
    }

    /// Marks the first `count` buffered events as read.
    pub fn consume(&mut self, count: usize) {
        self.next = self.current.len().min(self.next + count);
    }

    fn take_batch(&mut self, batch: Vec<LinkEvent>) {
        let emptied = std::mem::replace(&mut self.current, batch);
        self.next = 0;
        self.spare.give_back(emptied);
    }
}

impl std::fmt::Debug for LinkEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEvents")
            .field("buffered", &self.buffered().len())
            .finish_non_exhaustive()
    }
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

/// What encodes outgoing frames and checks incoming ones: one lock, because both move the
/// signing timestamp.
struct Codec {
    encoder: FrameEncoder,
    signing: Option<LinkSigning>,
    mode: SigningMode,
    wall_clock: bool,
}

impl Codec {
    fn clock(&self) -> Option<u64> {
        self.wall_clock.then(wall_clock_timestamp)
    }
}

/// The signing timestamp of the wall clock now.
fn wall_clock_timestamp() -> u64 {
    super::signing::timestamp_at(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// State shared between handles and the IO task.
struct Shared {
    codec: Mutex<Codec>,
    outgoing: mpsc::Sender<Vec<u8>>,
    connected: AtomicBool,
    frames: AtomicU64,
    crc_errors: AtomicU64,
    parse_errors: AtomicU64,
    unknown_messages: AtomicU64,
    garbage_bytes: AtomicU64,
    reconnects: AtomicU64,
    foreign_peer: AtomicU64,
    connections_refused: AtomicU64,
    local_addr: Option<SocketAddr>,
    /// The task that saves the signing timestamp: awaited at shutdown for its last save.
    persist_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
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

    /// A poisoned lock only means another user panicked mid-call; the codec stays valid.
    fn codec(&self) -> std::sync::MutexGuard<'_, Codec> {
        self.codec.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// After the link's shutdown was cancelled: waits (at most `grace`) for the signing
    /// timestamp's last save, so a process that exits right after does not lose it (a
    /// runtime dropped mid-save kept only the previous one). Nothing to wait for without
    /// a timestamp file.
    pub async fn persisted(&self, grace: Duration) {
        let task = (self.shared.persist_task.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(grace, task).await;
        }
    }

    /// Encodes `message` with the link's identity and next sequence number (signed when the
    /// link has a key) and hands it to the writer. Never blocks.
    pub fn send(&self, message: &MavMessage) -> Result<(), SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let mut codec = self.shared.codec();
        let clock = codec.clock();
        let Codec {
            encoder, signing, ..
        } = &mut *codec;
        let bytes = match signing {
            Some(signing) => {
                let timestamp = signing.next_timestamp(clock);
                encoder.encode_signed(message, signing.key(), signing.link_id(), timestamp)
            }
            None => encoder.encode(message),
        };
        match self.shared.outgoing.try_send(bytes) {
            Ok(()) => Ok(()),
            Err(error) => {
                // Not sent: give the sequence number back so the receiver sees no gap. (A
                // signing timestamp is never given back: it only has to increase.)
                encoder.sequence = encoder.sequence.wrapping_sub(1);
                Err(match error {
                    mpsc::error::TrySendError::Full(_) => SendError::Full,
                    mpsc::error::TrySendError::Closed(_) => SendError::NotConnected,
                })
            }
        }
    }

    /// Hands over a frame of another sender with that sender's header (system, component,
    /// sequence) kept: the daemon routing the vehicle's frames to a ground station, which
    /// must see them as the vehicle sent them. Unsigned; the link's own sequence is not
    /// touched. Returns the encoded frame (for the telemetry log). Never blocks.
    pub fn send_as(&self, header: &MavHeader, message: &MavMessage) -> Result<Vec<u8>, SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let bytes = FrameEncoder::encode_as(header, message);
        match self.shared.outgoing.try_send(bytes.clone()) {
            Ok(()) => Ok(bytes),
            Err(mpsc::error::TrySendError::Full(_)) => Err(SendError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::NotConnected),
        }
    }

    /// True while the link is open.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The decoder's and the trust's counters and the number of reconnects since the link
    /// was opened.
    pub fn counters(&self) -> (FrameCounters, u64) {
        let s = &self.shared;
        let trust = {
            let codec = s.codec();
            let signing = codec.signing.as_ref().map(LinkSigning::counters);
            TrustCounters {
                foreign_peer: s.foreign_peer.load(Ordering::Relaxed),
                connections_refused: s.connections_refused.load(Ordering::Relaxed),
                ..TrustCounters::default()
            }
            .with_signing(codec.mode, signing.unwrap_or_default())
        };
        (
            FrameCounters {
                frames: s.frames.load(Ordering::Relaxed),
                crc_errors: s.crc_errors.load(Ordering::Relaxed),
                parse_errors: s.parse_errors.load(Ordering::Relaxed),
                unknown_messages: s.unknown_messages.load(Ordering::Relaxed),
                garbage_bytes: s.garbage_bytes.load(Ordering::Relaxed),
                trust,
            },
            s.reconnects.load(Ordering::Relaxed),
        )
    }

    /// Replaces the link's signing (`None`: signing off) from the next frame on: a key
    /// installed by SETUP_SIGNING (the simulator), or the installer switching to the key it
    /// just installed. Streams seen under the old key are forgotten.
    pub fn set_signing(&self, signing: Option<LinkSigning>, mode: SigningMode) {
        let mut codec = self.shared.codec();
        codec.mode = if signing.is_some() {
            mode
        } else {
            SigningMode::Off
        };
        codec.signing = signing;
    }

    /// The link's signing timestamp (what to persist); `None` without signing.
    pub fn signing_timestamp(&self) -> Option<u64> {
        self.shared
            .codec()
            .signing
            .as_ref()
            .map(LinkSigning::timestamp)
    }

    /// The time became known (e.g. the simulated GPS): the signing timestamp moves up to it.
    pub fn advance_signing_timestamp(&self, clock: u64) {
        if let Some(signing) = self.shared.codec().signing.as_mut() {
            signing.advance_to(clock);
        }
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
    ) -> Result<(LinkHandle, LinkEvents), LinkError> {
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
        crate::metrics::global().watch_channel(format!("link_outgoing {name}"), &outgoing_tx);
        crate::metrics::global().watch_channel(format!("link_events {name}"), &events_tx);
        let spare = Arc::new(SpareBatches::default());
        let codec = Codec {
            encoder: FrameEncoder::new(options.system_id, options.component_id),
            signing: options.signing.as_ref().map(SigningSetup::start),
            mode: options
                .signing
                .as_ref()
                .map_or(SigningMode::Off, |s| s.mode),
            wall_clock: options.signing.as_ref().is_some_and(|s| s.wall_clock),
        };
        let shared = Arc::new(Shared {
            codec: Mutex::new(codec),
            outgoing: outgoing_tx,
            connected: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            crc_errors: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            unknown_messages: AtomicU64::new(0),
            garbage_bytes: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            foreign_peer: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            local_addr,
            persist_task: Mutex::new(None),
        });
        if let Some(path) = options
            .signing
            .as_ref()
            .and_then(|s| s.timestamp_store.clone())
        {
            let task = tokio::spawn(persist_timestamp(
                TimestampStore::new(path),
                shared.clone(),
                shutdown.clone(),
            ));
            *shared
                .persist_task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task);
        }
        let pin = PeerPin::new(match &kind {
            Kind::TcpIn { .. } | Kind::UdpIn { .. } => options.peer,
            // Nothing to choose: the other end is fixed by the endpoint itself.
            _ => PeerPolicy::OPEN,
        });
        let mut io = Io {
            name,
            shared: shared.clone(),
            events: events_tx,
            batch: Vec::new(),
            spare: spare.clone(),
            outgoing: outgoing_rx,
            decoder: FrameDecoder::new(),
            candidate_decoder: FrameDecoder::new(),
            options,
            stopping: stopping_flag(&shutdown),
            shutdown,
            ever_connected: false,
            down_reported: false,
            pin,
            reporter: RefusalReporter::new(),
            peer: None,
        };
        tokio::spawn(async move {
            let _ = io.run(kind).await;
            io.shared.connected.store(false, Ordering::Release);
            tracing::debug!(link = %io.name, "link task ended");
        });
        let events = LinkEvents {
            batches: events_rx,
            current: Vec::new(),
            next: 0,
            spare,
        };
        Ok((LinkHandle { shared }, events))
    }
}

/// The flag of `Io::stopping`.
const STOPPING: u8 = 1;

/// `STOPPING`, raised by a task of the link's runtime once `shutdown` is cancelled.
fn stopping_flag(shutdown: &CancellationToken) -> crate::wake::Flags {
    let (flags, raiser) = crate::wake::flags();
    tokio::spawn(raiser.on_cancel(shutdown.clone(), STOPPING));
    flags
}

/// Persists the link's signing timestamp every [`PERSIST_INTERVAL`] and once more at
/// shutdown, off the IO task (a write that stalls must not stall the link).
async fn persist_timestamp(
    store: TimestampStore,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut saved: Option<u64> = None;
    let mut ticker = tokio::time::interval(PERSIST_INTERVAL);
    loop {
        let last = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let timestamp = shared.codec().signing.as_ref().map(LinkSigning::timestamp);
        if let Some(timestamp) = timestamp.filter(|t| saved != Some(*t)) {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.save(timestamp)).await {
                Ok(Ok(())) => saved = Some(timestamp),
                Ok(Err(error)) => tracing::error!(%error, "cannot persist the signing timestamp"),
                Err(error) => tracing::error!(%error, "the signing timestamp writer failed"),
            }
        }
        if last {
            return;
        }
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
    events: mpsc::Sender<Vec<LinkEvent>>,
    /// Events not yet handed over: the frames of the read being decoded.
    batch: Vec<LinkEvent>,
    spare: Arc<SpareBatches>,
    outgoing: mpsc::Receiver<Vec<u8>>,
    /// The peer's byte stream.
    decoder: FrameDecoder,
    /// Datagrams from a `udpin` candidate, decoded apart so a stranger's partial frame is
    /// never glued to the peer's next datagram; reset after each one.
    candidate_decoder: FrameDecoder,
    options: LinkOptions,
    shutdown: CancellationToken,
    /// `STOPPING` once `shutdown` is cancelled, for the read loops, which wait again after
    /// every read: cheaper to poll than a `cancelled()` future (`crate::wake`).
    stopping: crate::wake::Flags,
    ever_connected: bool,
    /// A `Disconnected` was sent since the last `Connected`; retries are only logged.
    down_reported: bool,
    pin: PeerPin,
    reporter: RefusalReporter,
    /// The address of the stream being served (`tcpin`, `udpin`), for pinning and reports.
    peer: Option<SocketAddr>,
}

/// What decoding a read stopped for: a step only the IO task's async side can take.
enum Pause {
    /// A frame's signature was refused: reported within the budget, the frame dropped.
    Refused {
        reason: Refusal,
        from: Option<SocketAddr>,
        detail: String,
    },
    /// A `udpin` candidate's autopilot heartbeat: the candidate becomes the peer, then its
    /// frame is delivered.
    TakePeer { from: SocketAddr, event: LinkEvent },
}

/// Where a frame came from, for the trust decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The peer (or the only other end: serial, `tcpout`, `udpout`).
    Peer,
    /// A `udpin` address that may become the peer with an accepted autopilot heartbeat.
    Candidate(SocketAddr),
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
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop),
                accepted = listener.accept() => Some(accepted),
                () = report_due(self.reporter.poll_timeout()) => None,
            };
            let (mut stream, mut peer) = match step {
                None => {
                    self.flush_reports().await?;
                    continue;
                }
                Some(Ok(pair)) => pair,
                Some(Err(error)) => {
                    // E.g. out of file descriptors: wait instead of spinning.
                    tracing::warn!(link = %self.name, %error, "accept failed");
                    self.sleep(self.options.reconnect_backoff_min).await?;
                    continue;
                }
            };
            if !self.pin.admit_connection(Instant::now(), peer, false) {
                self.refuse_connection(peer).await?;
                continue;
            }
            self.serve_client(peer).await?;
            loop {
                let _ = stream.set_nodelay(true);
                match self.serve(stream, Some(&listener)).await? {
                    StreamEnd::Lost(reason) => {
                        self.peer = None;
                        self.down(format!("tcp client {peer}: {reason}")).await?;
                        break;
                    }
                    StreamEnd::Replaced(new_stream, new_peer) => {
                        // The pin allowed it: the old client went silent (or, unpinned,
                        // the newest client wins, as SITL does).
                        self.down(format!("tcp client {peer} replaced by {new_peer}"))
                            .await?;
                        (stream, peer) = (new_stream, new_peer);
                        self.serve_client(peer).await?;
                    }
                }
            }
        }
    }

    async fn serve_client(&mut self, peer: SocketAddr) -> Result<(), Stop> {
        self.pin.connected(Instant::now(), peer);
        self.peer = Some(peer);
        self.up(peer.to_string()).await
    }

    /// A `tcpin` client the pin does not allow: closed at once (dropping the stream),
    /// counted and reported.
    async fn refuse_connection(&mut self, from: SocketAddr) -> Result<(), Stop> {
        self.shared
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
        let serving = match self.peer {
            Some(peer) => format!("the link serves {peer}"),
            None => match self.pin.pinned() {
                Some(pinned) => format!("the link is pinned to {}", pinned.ip()),
                None => "the link is pinned".to_owned(),
            },
        };
        let detail = format!("tcp client {from} closed at once: {serving}");
        tracing::debug!(link = %self.name, %detail, "connection refused");
        self.refused(Refusal::ConnectionRefused, Some(from), detail)
            .await
    }

    /// UDP has no connection: the link is up once a peer is known (`udpout`: at once;
    /// `udpin`: when the pin takes one) and stays up while the peer is silent.
    async fn run_udp(&mut self, socket: UdpSocket, peer: Option<SocketAddr>) -> Result<(), Stop> {
        if let Some(peer) = peer {
            self.peer = Some(peer);
            self.up(peer.to_string()).await?;
        }
        let listening = peer.is_none();
        let mut buf = vec![0u8; 65_536];
        loop {
            let step = tokio::select! {
                _ = self.stopping.take(STOPPING) => return Err(Stop),
                received = socket.recv_from(&mut buf) => UdpStep::Received(received),
                Some(bytes) = self.outgoing.recv() => UdpStep::Send(bytes),
                () = report_due(self.reporter.poll_timeout()) => UdpStep::Report,
            };
            match step {
                UdpStep::Received(Ok((len, from))) => {
                    let bytes = buf.get(..len).unwrap_or_default();
                    if !listening {
                        self.deliver(bytes, Source::Peer).await?;
                        continue;
                    }
                    match self.pin.admit(Instant::now(), from) {
                        Admission::Peer => {
                            self.deliver(bytes, Source::Peer).await?;
                        }
                        Admission::NewPeer => {
                            self.take_udp_peer(from).await?;
                            self.deliver(bytes, Source::Peer).await?;
                        }
                        Admission::Candidate => {
                            self.deliver(bytes, Source::Candidate(from)).await?;
                        }
                        Admission::Foreign => {
                            self.shared.foreign_peer.fetch_add(1, Ordering::Relaxed);
                            let pinned =
                                self.peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
                            let detail = format!(
                                "datagram of {len} bytes from {from} ignored: the link is pinned to {pinned}"
                            );
                            self.refused(Refusal::ForeignPeer, Some(from), detail)
                                .await?;
                        }
                    }
                }
                // An ICMP "port unreachable" from a silent peer and similar errors are not
                // a lost link: UDP keeps listening.
                UdpStep::Received(Err(error)) => {
                    tracing::debug!(link = %self.name, %error, "udp receive error ignored");
                }
                UdpStep::Send(bytes) => {
                    if let Some(peer) = self.peer
                        && let Err(error) = socket.send_to(&bytes, peer).await
                    {
                        tracing::debug!(link = %self.name, %error, %peer, "udp send failed");
                    }
                }
                UdpStep::Report => self.flush_reports().await?,
            }
        }
    }

    /// `from` is the `udpin` peer from now on: the link is up (again) with it.
    async fn take_udp_peer(&mut self, from: SocketAddr) -> Result<(), Stop> {
        let replaced = self.pin.pin(Instant::now(), from).or(self.peer);
        self.peer = Some(from);
        match replaced.filter(|old| *old != from) {
            None => self.up(from.to_string()).await,
            // Unpinned, `udpin` answers whoever sent last, as before.
            Some(old) if self.pin.policy().rule == PinRule::Open => {
                tracing::info!(link = %self.name, %old, %from, "udp peer changed");
                Ok(())
            }
            // A new peer is a new link: what was pending for the old one must end.
            Some(old) => {
                self.down(format!("udp peer {old} silent; {from} took its place"))
                    .await?;
                self.up(from.to_string()).await
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
        // Reads and writes never overlap (a write is its own step, after the `select!` has
        // dropped the read), so the stream is used whole: `tokio::io::split` would lock a
        // mutex on every poll of either half (issue 17's ingest profile).
        tokio::pin!(stream);
        let mut buf = [0u8; READ_BUFFER_LEN];
        loop {
            let step = tokio::select! {
                _ = self.stopping.take(STOPPING) => return Err(Stop),
                read = stream.read(&mut buf) => StreamStep::Read(read),
                Some(bytes) = self.outgoing.recv() => StreamStep::Write(bytes),
                accepted = accept_if(listener) => StreamStep::Accepted(accepted),
                () = report_due(self.reporter.poll_timeout()) => StreamStep::Report,
            };
            match step {
                StreamStep::Read(Ok(0)) => return Ok(StreamEnd::Lost("end of stream".into())),
                StreamStep::Read(Ok(len)) => {
                    self.deliver(buf.get(..len).unwrap_or_default(), Source::Peer)
                        .await?;
                }
                StreamStep::Read(Err(error)) => {
                    return Ok(StreamEnd::Lost(format!("read failed: {error}")));
                }
                StreamStep::Write(bytes) => {
                    let written = tokio::select! {
                        _ = self.stopping.take(STOPPING) => return Err(Stop),
                        written = stream.write_all(&bytes) => written,
                    };
                    if let Err(error) = written {
                        return Ok(StreamEnd::Lost(format!("write failed: {error}")));
                    }
                }
                StreamStep::Accepted(Ok((stream, peer))) => {
                    if self.pin.admit_connection(Instant::now(), peer, true) {
                        return Ok(StreamEnd::Replaced(stream, peer));
                    }
                    drop(stream);
                    self.refuse_connection(peer).await?;
                }
                StreamStep::Accepted(Err(error)) => {
                    tracing::warn!(link = %self.name, %error, "accept failed");
                }
                StreamStep::Report => self.flush_reports().await?,
            }
        }
    }

    /// Decodes bytes and delivers every frame the link trusts, as one batch, waiting for
    /// channel capacity. A `udpin` candidate becomes the peer at its first autopilot heartbeat the
    /// signing accepted (the link comes up before that frame is delivered); before that, its
    /// frames are delivered only while the link has never had a peer (nothing depends on them
    /// yet: the vehicle state ignores everything until an autopilot's heartbeat), and dropped
    /// when a silent peer is being replaced.
    async fn deliver(&mut self, bytes: &[u8], source: Source) -> Result<(), Stop> {
        let received_at = Instant::now();
        match source {
            Source::Peer => self.decoder.push(bytes),
            Source::Candidate(_) => {
                self.candidate_decoder.reset();
                self.candidate_decoder.push(bytes);
            }
        }
        while let Some(pause) = self.decode(source, received_at) {
            match pause {
                Pause::Refused {
                    reason,
                    from,
                    detail,
                } => {
                    self.refused(reason, from, detail).await?;
                }
                Pause::TakePeer { from, event } => {
                    tracing::info!(link = %self.name, %from, "autopilot peer pinned");
                    self.take_udp_peer(from).await?;
                    self.batch.push(event);
                }
            }
        }
        // Keep counters current before waiting, so they match what was read.
        self.store_counters();
        self.flush().await
    }

    /// Decodes what was pushed into the batch until it is all decoded (`None`) or something
    /// only the task's async side can do comes up. Never awaits, so no frame is moved into
    /// the task's future on its way to the batch (issue 17).
    fn decode(&mut self, source: Source, received_at: Instant) -> Option<Pause> {
        // The codec (signing state) is locked once per read rather than per frame (a lock
        // per frame was a percent of the daemon's instructions per message, issue 17); a
        // sender waits at most for one read's frames.
        let shared = Arc::clone(&self.shared);
        let mut codec = shared.codec();
        loop {
            let item = match source {
                Source::Peer => self.decoder.poll_boxed(),
                Source::Candidate(_) => self.candidate_decoder.poll_boxed(),
            }?;
            let frame = match item {
                Ok(frame) => frame,
                // Counted by the decoder; noise on a serial line would flood the log.
                Err(error) => {
                    tracing::debug!(link = %self.name, %error, "frame rejected");
                    continue;
                }
            };
            if let Some(refusal) = self.check_signature(&mut codec, &frame, source) {
                return Some(refusal);
            }
            let autopilot_heartbeat = matches!(
                &frame.message,
                MavMessage::HEARTBEAT(hb) if super::is_autopilot_heartbeat(hb)
            );
            // A candidate's autopilot heartbeat makes it the peer before its frame goes.
            let takes_peer = match source {
                Source::Peer => {
                    self.pin.heard(received_at);
                    // `tcpin`: the first autopilot heartbeat on a connection pins its host.
                    if autopilot_heartbeat
                        && self.pin.policy().rule == PinRule::FirstAutopilot
                        && let Some(peer) = self.peer
                        && self.pin.pinned() != Some(peer)
                    {
                        self.pin.pin(received_at, peer);
                        tracing::info!(link = %self.name, %peer, "autopilot peer pinned");
                    }
                    None
                }
                // Pinned by an earlier frame of this datagram (which is still decoded by
                // the candidate decoder).
                Source::Candidate(from) if self.pin.pinned() == Some(from) => {
                    self.pin.heard(received_at);
                    None
                }
                Source::Candidate(from) if autopilot_heartbeat => Some(from),
                Source::Candidate(_) if self.pin.pinned().is_some() => continue,
                Source::Candidate(_) => None,
            };
            // The frame stays in the decoder's box: never copied on its way to the loop.
            let event = LinkEvent::Frame { frame, received_at };
            match takes_peer {
                Some(from) => return Some(Pause::TakePeer { from, event }),
                None => self.batch.push(event),
            }
        }
    }

    fn store_counters(&self) {
        let mut c = self.decoder.counters();
        let k = self.candidate_decoder.counters();
        c.frames += k.frames;
        c.crc_errors += k.crc_errors;
        c.parse_errors += k.parse_errors;
        c.unknown_messages += k.unknown_messages;
        c.garbage_bytes += k.garbage_bytes;
        self.shared.store_counters(c);
    }

    /// The signing verdict on one frame: `None` when it may be delivered, else its refusal
    /// (counted by the signing state) to report.
    fn check_signature(&self, codec: &mut Codec, frame: &Frame, source: Source) -> Option<Pause> {
        let clock = codec.clock();
        let signing = codec.signing.as_mut()?;
        let (Err(reason), local) = (signing.check(frame.view(), clock), signing.timestamp()) else {
            return None;
        };
        let from = match source {
            Source::Candidate(from) => Some(from),
            Source::Peer => self.peer,
        };
        Some(Pause::Refused {
            reason: Refusal::Signature(reason),
            from,
            detail: describe_refused(frame, reason, local),
        })
    }

    /// Reports a refusal within the budget (already counted by the caller).
    async fn refused(
        &mut self,
        reason: Refusal,
        from: Option<SocketAddr>,
        detail: String,
    ) -> Result<(), Stop> {
        let peer = from.map(|a| a.to_string());
        match self.reporter.refused(Instant::now(), reason, peer, detail) {
            Some(report) => self.emit(LinkEvent::Refused(report)).await,
            None => Ok(()),
        }
    }

    async fn flush_reports(&mut self) -> Result<(), Stop> {
        while let Some(report) = self.reporter.poll(Instant::now()) {
            self.emit(LinkEvent::Refused(report)).await?;
        }
        Ok(())
    }

    async fn up(&mut self, peer: String) -> Result<(), Stop> {
        // The old stream's partial frame must not be glued to the new stream's bytes.
        self.decoder.reset();
        self.store_counters();
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

    /// Hands `event` over after the frames already decoded, in order.
    async fn emit(&mut self, event: LinkEvent) -> Result<(), Stop> {
        self.batch.push(event);
        self.flush().await
    }

    /// Hands the events decoded so far over as one batch (nothing when there are none).
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut next = self.spare.take();
        for event in next.drain(..) {
            if let LinkEvent::Frame { frame, .. } = event {
                self.decoder.recycle(frame);
            }
        }
        let batch = std::mem::replace(&mut self.batch, next);
        // Almost always there is room: handed over without a future for the channel's
        // capacity or for the shutdown (a new `cancelled()` locks the token's tree when it
        // is polled and when it is dropped, once per read; issue 17's ingest profile).
        let batch = match self.events.try_send(batch) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop),
            Err(mpsc::error::TrySendError::Full(batch)) => batch,
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Stop),
            sent = self.events.send(batch) => sent.map_err(|_| Stop),
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

/// A refused frame in words: what it was, who it claimed to be, and why it was refused.
fn describe_refused(frame: &Frame, reason: SignatureRefusal, local: u64) -> String {
    use mavlink::Message as _;
    let what = format!(
        "{} from system {} component {}",
        frame.message.message_name(),
        frame.header.system_id,
        frame.header.component_id
    );
    let block = super::signing::SignatureBlock::of(&frame.raw).filter(|_| frame.is_signed());
    match (reason, block) {
        (SignatureRefusal::Unsigned, _) => {
            format!("unsigned {what} refused: this link requires MAVLink 2 signatures")
        }
        (SignatureRefusal::BadSignature, Some(b)) => format!(
            "{what} (link id {}) refused: its signature does not verify with this link's key \
             (another key, or the frame was changed)",
            b.link_id
        ),
        (SignatureRefusal::Replayed, Some(b)) => format!(
            "{what} (link id {}) refused: timestamp {} is not newer than the last of its \
             stream (a replay)",
            b.link_id, b.timestamp
        ),
        (SignatureRefusal::OldTimestamp, Some(b)) => format!(
            "{what} (link id {}) refused: a new stream {:.1} s behind this link's timestamp \
             (at most 60 s); an autopilot restarted without the time catches up at the \
             first signed frame it receives",
            b.link_id,
            local.saturating_sub(b.timestamp) as f64 / super::signing::TIMESTAMP_UNITS_PER_S as f64
        ),
        (SignatureRefusal::StreamsFull, Some(b)) => format!(
            "{what} (link id {}) refused: {} signed streams are already known",
            b.link_id,
            super::signing::STREAMS_MAX
        ),
        (_, None) => format!("{what} refused: {}", reason.as_str()),
    }
}

/// Completes when a held-back refusal report is due; never when none waits.
async fn report_due(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

enum StreamStep {
    Read(io::Result<usize>),
    Write(Vec<u8>),
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    Report,
}

enum UdpStep {
    Received(io::Result<(usize, SocketAddr)>),
    Send(Vec<u8>),
    Report,
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
            signing: None,
            peer: PeerPolicy::OPEN,
        });
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        b.connection_lasted(Duration::from_millis(10));
        assert_eq!(b.next_delay(), Duration::from_millis(1000));
        b.connection_lasted(Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
