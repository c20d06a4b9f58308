//! The serial relay: the daemon's serial cable, with a hand on it.
//!
//! The daemon opens a pty made here (through a stable symlink, as `serial:PATH:921600`); the
//! relay connects the other end to the autopilot (the simulator or SITL over TCP/UDP, or a
//! real autopilot on a serial port) and passes bytes both ways. Every frame is stamped when
//! its last byte is read and recorded in the [`WireLog`], so the rig measures what crossed
//! the wire, not what the daemon says it sent.
//!
//! Bytes are forwarded unchanged, frame by frame: [`FrameSplitter`] only says where frames
//! begin and end, so a frame split over two reads is held until its last byte arrives and
//! then forwarded whole (noise between frames is forwarded as it is). That is what lets a
//! fault drop or corrupt whole frames and lets the rig's own injected frames slip in between
//! frames, never inside one.
//!
//! The fault decisions are the sans-IO [`LineShaper`] (bytes and `at` in, bytes to forward,
//! their delay and the stamped frames out); the tasks here only do the IO.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mavlink::Message;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::wire::{Direction, Fate, FrameSplitter, Piece, SplitCounters, WireFrame, WireLog};
use crate::backoff::Backoff;
use crate::link::MavMessage;
use crate::link::endpoint::Endpoint;
use crate::link::frame::FrameEncoder;

/// Read size on both sides: a few frames.
const READ_LEN: usize = 4096;
/// Chunks waiting in a delay line (per direction). Overflow policy: a chunk that does not
/// fit is dropped and counted as overrun, like bytes a UART cannot take; at the 10-50 frames
/// per chunk of a busy link this holds seconds of delayed traffic.
const DELAY_QUEUE_LEN: usize = 1024;
/// Chunks ready to be written to one side. Overflow policy: the delay line waits (the
/// writers never block for long: the pty write is non-blocking, a socket write is fast on
/// loopback and a serial write drains at the baud rate).
const WRITE_QUEUE_LEN: usize = 256;
/// Reconnection backoff of the autopilot side.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long `stop` waits for the tasks before aborting them.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A fault on the serial line. Probabilities are per frame, in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LineFault {
    /// No fault: restores the line (and replugs the device after `Unplug`).
    None,
    /// Every byte is dropped both ways; the device stays open.
    Cut,
    /// The pty is closed (the daemon's reads fail) and the symlink removed; any other
    /// fault afterwards makes a new pty at the same path.
    Unplug,
    /// Each frame is dropped with this probability (both ways).
    Drop { probability: f64 },
    /// Each frame gets one byte flipped with this probability (both ways).
    Corrupt { probability: f64 },
    /// Every byte is held this long (both ways).
    Delay { delay_ms: u64 },
}

impl LineFault {
    /// Refuses probabilities outside `0.0..=1.0` (and NaN).
    pub fn check(&self) -> Result<(), String> {
        match *self {
            LineFault::Drop { probability } | LineFault::Corrupt { probability }
                if !(0.0..=1.0).contains(&probability) =>
            {
                Err(format!(
                    "{self}: the probability must be within 0.0..=1.0, got {probability}"
                ))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for LineFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineFault::None => write!(f, "none (line restored)"),
            LineFault::Cut => write!(f, "cut"),
            LineFault::Unplug => write!(f, "unplugged"),
            LineFault::Drop { probability } => write!(f, "drop frames p={probability}"),
            LineFault::Corrupt { probability } => write!(f, "corrupt frames p={probability}"),
            LineFault::Delay { delay_ms } => write!(f, "delay {delay_ms} ms"),
        }
    }
}

/// What the shaper of one direction decided, since the relay started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShaperCounters {
    pub bytes_read: u64,
    /// Frames read (whatever their fate).
    pub frames: u64,
    /// Frames dropped by [`LineFault::Drop`].
    pub dropped_frames: u64,
    /// Frames forwarded with a byte flipped by [`LineFault::Corrupt`].
    pub corrupted_frames: u64,
    /// Frames held by [`LineFault::Delay`].
    pub delayed_frames: u64,
    /// Frames dropped because the line was cut or unplugged.
    pub cut_frames: u64,
    /// Bytes (framed or not) dropped because the line was cut or unplugged.
    pub cut_bytes: u64,
    /// What the splitter saw (frames, CRC errors, garbage).
    pub split: SplitCounters,
}

/// Bytes to forward for one chunk read, with their delay and the frames to log.
#[derive(Debug, Clone, PartialEq)]
pub struct Shaped {
    pub forward: Vec<u8>,
    pub delay: Duration,
    pub frames: Vec<WireFrame>,
}

/// Sans-IO fault decisions for one direction of the line. The random choices come from a
/// seeded generator and are drawn only under `Drop`/`Corrupt`, one per frame, so the same
/// seed and the same frames give the same decisions.
#[derive(Debug)]
pub struct LineShaper {
    direction: Direction,
    splitter: FrameSplitter,
    rng: fastrand::Rng,
    counters: ShaperCounters,
}

impl LineShaper {
    pub fn new(direction: Direction, seed: u64) -> Self {
        Self {
            direction,
            splitter: FrameSplitter::new(),
            rng: fastrand::Rng::with_seed(seed),
            counters: ShaperCounters::default(),
        }
    }

    pub fn counters(&self) -> ShaperCounters {
        ShaperCounters {
            split: self.splitter.counters(),
            ..self.counters
        }
    }

    /// Handles `bytes` read at `at` (since the rig's epoch) under `fault`.
    pub fn handle_bytes(&mut self, at: Duration, bytes: &[u8], fault: &LineFault) -> Shaped {
        self.counters.bytes_read += bytes.len() as u64;
        let cut = matches!(fault, LineFault::Cut | LineFault::Unplug);
        let delay_ms = match *fault {
            LineFault::Delay { delay_ms } => delay_ms,
            _ => 0,
        };
        let mut forward = Vec::with_capacity(bytes.len());
        let mut frames = Vec::new();
        for piece in self.splitter.push(bytes) {
            match piece {
                Piece::Unframed(unframed) if cut => {
                    self.counters.cut_bytes += unframed.len() as u64
                }
                Piece::Unframed(unframed) => forward.extend(unframed),
                Piece::Frame(mut frame) => {
                    self.counters.frames += 1;
                    let fate = if cut {
                        self.counters.cut_frames += 1;
                        self.counters.cut_bytes += frame.raw.len() as u64;
                        Fate::Dropped
                    } else {
                        match *fault {
                            LineFault::Drop { probability } if self.rng.f64() < probability => {
                                self.counters.dropped_frames += 1;
                                Fate::Dropped
                            }
                            LineFault::Corrupt { probability } if self.rng.f64() < probability => {
                                // Never the start marker: the receiver must see a broken
                                // frame (a checksum failure), not just noise.
                                let index = self.rng.usize(1..frame.raw.len().max(2));
                                if let Some(byte) = frame.raw.get_mut(index) {
                                    *byte ^= self.rng.u8(1..=u8::MAX);
                                }
                                self.counters.corrupted_frames += 1;
                                Fate::Corrupted
                            }
                            LineFault::Delay { delay_ms } if delay_ms > 0 => {
                                self.counters.delayed_frames += 1;
                                Fate::Delayed { delay_ms }
                            }
                            _ => Fate::Forwarded,
                        }
                    };
                    if fate != Fate::Dropped {
                        forward.extend(&frame.raw);
                    }
                    frames.push(WireFrame {
                        at,
                        direction: self.direction,
                        system_id: frame.system_id,
                        component_id: frame.component_id,
                        sequence: frame.sequence,
                        message_id: frame.message_id,
                        message: frame.message,
                        len: frame.raw.len(),
                        injected: false,
                        fate,
                    });
                }
            }
        }
        Shaped {
            forward,
            delay: Duration::from_millis(delay_ms),
            frames,
        }
    }
}

/// Counters of one direction: the shaper's decisions and what the writer could deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounters {
    pub shaped: ShaperCounters,
    /// Bytes written to the receiving side.
    pub bytes_forwarded: u64,
    /// Bytes the receiving side could not take: the pty's buffer was full (nobody reading),
    /// the autopilot side was not connected, or a queue was full.
    pub overrun_bytes: u64,
}

/// Counters of the whole relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounters {
    pub to_autopilot: LineCounters,
    pub to_companion: LineCounters,
    /// Times the autopilot side connected (or opened).
    pub autopilot_connects: u64,
    /// Times a pty was made for the daemon (1 + replugs).
    pub ptys_made: u64,
    /// Frames the rig injected towards the autopilot.
    pub injected_frames: u64,
}

impl RelayCounters {
    fn line(&mut self, direction: Direction) -> &mut LineCounters {
        match direction {
            Direction::ToAutopilot => &mut self.to_autopilot,
            Direction::ToCompanion => &mut self.to_companion,
        }
    }
}

/// State shared by the handle and the tasks.
struct Shared {
    epoch: Instant,
    wire: WireLog,
    counters: Mutex<RelayCounters>,
    autopilot_connected: AtomicBool,
    inject_sequence: AtomicU8,
}

impl Shared {
    fn counters(&self) -> MutexGuard<'_, RelayCounters> {
        // Counters stay consistent under a panic elsewhere (plain additions).
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn at(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn note(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(target: "hil::relay", "{text}");
        self.wire.record_note(self.at(), text);
    }
}

/// A chunk on its way, with the instant it may be delivered.
struct Timed {
    deliver_at: tokio::time::Instant,
    bytes: Vec<u8>,
}

/// The reading end of one direction: shapes what is read and queues it for delivery.
struct Inlet {
    shaper: LineShaper,
    fault: watch::Receiver<LineFault>,
    shared: Arc<Shared>,
    next: mpsc::Sender<Timed>,
}

impl Inlet {
    fn handle(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        let at = now.saturating_duration_since(self.shared.epoch);
        let fault = *self.fault.borrow();
        let direction = self.shaper.direction;
        let shaped = self.shaper.handle_bytes(at, bytes, &fault);
        for frame in shaped.frames {
            self.shared.wire.record_frame(frame);
        }
        let mut overrun = 0;
        if !shaped.forward.is_empty() {
            let timed = Timed {
                deliver_at: tokio::time::Instant::from_std(now + shaped.delay),
                bytes: shaped.forward,
            };
            if let Err(error) = self.next.try_send(timed) {
                overrun = match error {
                    mpsc::error::TrySendError::Full(t) | mpsc::error::TrySendError::Closed(t) => {
                        t.bytes.len() as u64
                    }
                };
            }
        }
        let mut counters = self.shared.counters();
        let line = counters.line(direction);
        line.shaped = self.shaper.counters();
        line.overrun_bytes += overrun;
    }
}

/// Holds each chunk until its delivery time, then hands it to the writer, in order.
async fn delay_line(
    mut queue: mpsc::Receiver<Timed>,
    writer: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
) {
    loop {
        let timed = tokio::select! {
            _ = cancel.cancelled() => return,
            timed = queue.recv() => match timed {
                Some(timed) => timed,
                None => return,
            },
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(timed.deliver_at) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            sent = writer.send(timed.bytes) => if sent.is_err() { return },
        }
    }
}

/// The serial relay. Dropping it stops its tasks and removes the symlink; `stop` does the
/// same and waits for them.
pub struct SerialRelay {
    device_path: PathBuf,
    shared: Arc<Shared>,
    fault: watch::Sender<LineFault>,
    /// Ready bytes to the autopilot side (injections skip the faults and the delay line).
    to_autopilot: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl SerialRelay {
    /// Starts the relay: makes the pty and its symlink at `device_path`, then connects the
    /// autopilot side in the background (retried with backoff; see
    /// [`autopilot_connected`](Self::autopilot_connected)).
    ///
    /// `autopilot` is `tcpout:HOST:PORT`, `udpout:HOST:PORT`, `udpin:ADDR:PORT` or
    /// `serial:DEVICE:BAUD`. `epoch` is the rig's time origin for the wire log; `seed`
    /// drives the `Drop`/`Corrupt` choices. Must be called within a tokio runtime.
    pub fn start(
        autopilot: &str,
        device_path: &Path,
        epoch: Instant,
        seed: u64,
    ) -> anyhow::Result<SerialRelay> {
        Self::start_with_log(autopilot, device_path, epoch, seed, WireLog::default())
    }

    /// Like [`start`](Self::start), recording into `wire` (e.g. a log shared with the rest
    /// of the rig).
    pub fn start_with_log(
        autopilot: &str,
        device_path: &Path,
        epoch: Instant,
        seed: u64,
        wire: WireLog,
    ) -> anyhow::Result<SerialRelay> {
        tokio::runtime::Handle::try_current()
            .context("the serial relay must be started within a tokio runtime")?;
        let endpoint: Endpoint = autopilot.parse()?;
        let side = AutopilotSide::prepare(&endpoint)?;
        if let Ok(meta) = std::fs::symlink_metadata(device_path)
            && !meta.file_type().is_symlink()
        {
            bail!(
                "{} exists and is not a symlink; the relay will not replace it",
                device_path.display()
            );
        }
        let shared = Arc::new(Shared {
            epoch,
            wire,
            counters: Mutex::new(RelayCounters::default()),
            autopilot_connected: AtomicBool::new(false),
            inject_sequence: AtomicU8::new(0),
        });
        let pty = Pty::open(device_path)
            .with_context(|| format!("cannot make the pty at {}", device_path.display()))?;
        shared.counters().ptys_made += 1;
        shared.note(format!(
            "serial relay: {} -> {} (autopilot {endpoint})",
            device_path.display(),
            pty.slave_path.display()
        ));

        let cancel = CancellationToken::new();
        let (fault_tx, fault_rx) = watch::channel(LineFault::None);
        let (to_autopilot_delayed_tx, to_autopilot_delayed_rx) = mpsc::channel(DELAY_QUEUE_LEN);
        let (to_companion_delayed_tx, to_companion_delayed_rx) = mpsc::channel(DELAY_QUEUE_LEN);
        let (to_autopilot_tx, to_autopilot_rx) = mpsc::channel(WRITE_QUEUE_LEN);
        let (to_companion_tx, to_companion_rx) = mpsc::channel(WRITE_QUEUE_LEN);
        // One generator per direction, so each direction's choices depend only on its own
        // frames; the constant separates the two streams of the same seed.
        let inlet_to_autopilot = Inlet {
            shaper: LineShaper::new(Direction::ToAutopilot, seed),
            fault: fault_rx.clone(),
            shared: shared.clone(),
            next: to_autopilot_delayed_tx,
        };
        let inlet_to_companion = Inlet {
            shaper: LineShaper::new(Direction::ToCompanion, seed ^ 0x9E37_79B9_7F4A_7C15),
            fault: fault_rx.clone(),
            shared: shared.clone(),
            next: to_companion_delayed_tx,
        };
        let tasks = vec![
            tokio::spawn(delay_line(
                to_autopilot_delayed_rx,
                to_autopilot_tx.clone(),
                cancel.clone(),
            )),
            tokio::spawn(delay_line(
                to_companion_delayed_rx,
                to_companion_tx,
                cancel.clone(),
            )),
            tokio::spawn(run_pty(PtyTask {
                device_path: device_path.to_owned(),
                pty: Some(pty),
                fault: fault_rx,
                inlet: inlet_to_autopilot,
                incoming: to_companion_rx,
                shared: shared.clone(),
                cancel: cancel.clone(),
            })),
            tokio::spawn(run_autopilot(
                side,
                inlet_to_companion,
                to_autopilot_rx,
                shared.clone(),
                cancel.clone(),
            )),
        ];
        Ok(SerialRelay {
            device_path: device_path.to_owned(),
            shared,
            fault: fault_tx,
            to_autopilot: to_autopilot_tx,
            cancel,
            tasks,
        })
    }

    /// Where the daemon opens the line (`serial:PATH:921600`).
    pub fn device_path(&self) -> &Path {
        &self.device_path
    }

    /// The wire log (shared; clones see the same entries).
    pub fn wire(&self) -> WireLog {
        self.shared.wire.clone()
    }

    /// The rig's epoch.
    pub fn epoch(&self) -> Instant {
        self.shared.epoch
    }

    pub fn counters(&self) -> RelayCounters {
        *self.shared.counters()
    }

    /// Whether the autopilot side is connected (or its serial port open) now.
    pub fn autopilot_connected(&self) -> bool {
        self.shared.autopilot_connected.load(Ordering::Acquire)
    }

    /// The fault in force.
    pub fn fault(&self) -> LineFault {
        *self.fault.borrow()
    }

    /// Sets the line's fault (`LineFault::None` restores it) and records the change in the
    /// wire log. Refuses a probability outside `0.0..=1.0`.
    pub fn set_fault(&self, fault: LineFault) -> anyhow::Result<()> {
        fault.check().map_err(anyhow::Error::msg)?;
        self.shared
            .wire
            .record_fault(self.shared.at(), format!("serial line: {fault}"));
        self.fault.send_replace(fault);
        Ok(())
    }

    /// Writes the rig's own frame towards the autopilot (e.g. a `SIM_*` PARAM_SET), logged
    /// with `injected: true`. It is not subject to the line's faults (the rig needs it to
    /// work while the line is cut) and goes between two frames, never inside one.
    /// Fails when the autopilot side is not connected or its queue is full.
    pub fn inject_to_autopilot(
        &self,
        message: &MavMessage,
        system_id: u8,
        component_id: u8,
    ) -> anyhow::Result<()> {
        let mut encoder = FrameEncoder::new(system_id, component_id);
        encoder.sequence = self.shared.inject_sequence.fetch_add(1, Ordering::Relaxed);
        let bytes = encoder.encode(message);
        let mut frame = WireFrame {
            at: self.shared.at(),
            direction: Direction::ToAutopilot,
            system_id,
            component_id,
            sequence: encoder.sequence.wrapping_sub(1),
            message_id: message.message_id(),
            message: Some(message.clone()),
            len: bytes.len(),
            injected: true,
            fate: Fate::Forwarded,
        };
        let refused = if !self.autopilot_connected() {
            Some("the autopilot side of the relay is not connected".to_owned())
        } else {
            self.to_autopilot
                .try_send(bytes)
                .err()
                .map(|e| format!("the relay's queue to the autopilot refused it: {e}"))
        };
        if refused.is_some() {
            frame.fate = Fate::Dropped;
        } else {
            self.shared.counters().injected_frames += 1;
        }
        self.shared.wire.record_frame(frame);
        match refused {
            Some(reason) => bail!("{} not injected: {reason}", message.message_name()),
            None => Ok(()),
        }
    }

    /// Stops every task, closes both sides and removes the symlink.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        for mut task in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
                task.abort();
            }
        }
        remove_link(&self.device_path);
    }
}

impl Drop for SerialRelay {
    fn drop(&mut self) {
        self.cancel.cancel();
        remove_link(&self.device_path);
    }
}

/// Removes the device symlink, never a file that is not a symlink.
fn remove_link(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        let _ = std::fs::remove_file(path);
    }
}

/// The daemon's end of the cable: a pty in raw mode, reached through a symlink.
struct Pty {
    master: AsyncFd<OwnedFd>,
    /// Kept open so the master never reads EIO while the daemon has the device closed
    /// (between its reconnection attempts); nothing ever reads it.
    _slave: OwnedFd,
    slave_path: PathBuf,
    link_path: PathBuf,
}

impl Pty {
    /// Makes a pty and points `link_path` at its slave (replacing an old symlink atomically).
    fn open(link_path: &Path) -> io::Result<Pty> {
        let mut master_fd: libc::c_int = -1;
        let mut slave_fd: libc::c_int = -1;
        // SAFETY: both out-pointers are valid for writes; a null name, termios and window
        // size are allowed (the name is read with ptsname_r below, which is bounded).
        let rc = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openpty succeeded, so both are open descriptors that we now own.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(master_fd),
                OwnedFd::from_raw_fd(slave_fd),
            )
        };
        // Close-on-exec: a process the rig starts later (the daemon) must not inherit the
        // master, or unplugging would not hang the line up.
        set_fd_flag(&master, libc::FD_CLOEXEC)?;
        set_fd_flag(&slave, libc::FD_CLOEXEC)?;
        set_nonblocking(&master)?;
        make_raw(&slave)?;
        let slave_path = slave_name(&master)?;
        let temporary = link_path.with_file_name(format!(
            ".{}.relay-new",
            link_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_file(&temporary);
        std::os::unix::fs::symlink(&slave_path, &temporary)?;
        std::fs::rename(&temporary, link_path)?;
        // SAFETY: the descriptor is owned by the `OwnedFd` moved into the `AsyncFd`; it is
        // neither replaced nor closed while registered (it closes when the `AsyncFd` drops).
        let master = unsafe { AsyncFd::register(master)? };
        Ok(Pty {
            master,
            _slave: slave,
            slave_path,
            link_path: link_path.to_owned(),
        })
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| {
                // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes without waiting; returns the bytes written. What the pty cannot take now
    /// (nobody reading and its buffer full) is the caller's overrun.
    fn write_now(&self, mut bytes: &[u8]) -> usize {
        let mut written = 0;
        while !bytes.is_empty() {
            // SAFETY: `bytes` is valid for `bytes.len()` bytes of reads.
            let n = unsafe {
                libc::write(
                    self.master.get_ref().as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                )
            };
            if n <= 0 {
                let error = io::Error::last_os_error();
                if n < 0 && error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            let n = n as usize;
            written += n;
            bytes = bytes.get(n..).unwrap_or_default();
        }
        written
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // A replug makes its new pty only after this one is dropped, so the link is ours.
        remove_link(&self.link_path);
    }
}

fn set_fd_flag(fd: &OwnedFd, flag: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | flag) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raw mode (no echo, no line editing, no CR/LF translation): binary bytes pass untouched
/// until the daemon sets its own serial settings.
fn make_raw(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: `termios` is plain data, filled by tcgetattr before use.
    unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd.as_raw_fd(), &mut termios) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut termios);
        if libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &termios) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn slave_name(master: &OwnedFd) -> io::Result<PathBuf> {
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes at most `name.len()` bytes, NUL-terminated on success.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: on success the buffer holds a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Ok(PathBuf::from(name.to_string_lossy().into_owned()))
}

struct PtyTask {
    device_path: PathBuf,
    pty: Option<Pty>,
    fault: watch::Receiver<LineFault>,
    inlet: Inlet,
    incoming: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

/// The daemon's side: reads the pty into the shaper, writes what comes from the autopilot,
/// unplugs and replugs.
async fn run_pty(mut task: PtyTask) {
    let mut buf = vec![0u8; READ_LEN];
    loop {
        let unplugged = *task.fault.borrow_and_update() == LineFault::Unplug;
        if unplugged && task.pty.take().is_some() {
            task.shared.note(format!(
                "serial relay: pty closed, {} removed",
                task.device_path.display()
            ));
        }
        if !unplugged && task.pty.is_none() {
            match Pty::open(&task.device_path) {
                Ok(pty) => {
                    task.shared.counters().ptys_made += 1;
                    task.shared.note(format!(
                        "serial relay: new pty {} at {}",
                        pty.slave_path.display(),
                        task.device_path.display()
                    ));
                    task.pty = Some(pty);
                }
                Err(error) => {
                    task.shared.note(format!(
                        "serial relay: cannot make a new pty: {error}; retrying"
                    ));
                    tokio::select! {
                        _ = task.cancel.cancelled() => break,
                        _ = tokio::time::sleep(BACKOFF_MAX) => continue,
                    }
                }
            }
        }
        let pty = task.pty.as_ref();
        tokio::select! {
            _ = task.cancel.cancelled() => break,
            changed = task.fault.changed() => if changed.is_err() { break },
            read = read_pty(pty, &mut buf) => match read {
                Ok(n) if n > 0 => task.inlet.handle(buf.get(..n).unwrap_or_default()),
                // With our own slave descriptor open the master should never hang up;
                // if it does, do not spin.
                Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            bytes = task.incoming.recv() => match bytes {
                None => break,
                Some(bytes) => {
                    let written = pty.map_or(0, |p| p.write_now(&bytes));
                    let mut counters = task.shared.counters();
                    counters.to_companion.bytes_forwarded += written as u64;
                    counters.to_companion.overrun_bytes += (bytes.len() - written) as u64;
                }
            },
        }
    }
    task.pty = None;
}

async fn read_pty(pty: Option<&Pty>, buf: &mut [u8]) -> io::Result<usize> {
    match pty {
        Some(pty) => pty.read(buf).await,
        None => std::future::pending().await,
    }
}

/// The autopilot's side, with what can never work already checked.
enum AutopilotSide {
    TcpOut { addr: String },
    UdpOut { peer: SocketAddr },
    UdpIn { addr: SocketAddr },
    Serial { path: String, baud: u32 },
}

impl AutopilotSide {
    fn prepare(endpoint: &Endpoint) -> anyhow::Result<AutopilotSide> {
        let resolve = |addr: &str| -> anyhow::Result<SocketAddr> {
            addr.to_socket_addrs()
                .with_context(|| format!("cannot resolve {addr}"))?
                .next()
                .with_context(|| format!("{addr} has no addresses"))
        };
        Ok(match endpoint {
            Endpoint::TcpOut { addr } => AutopilotSide::TcpOut { addr: addr.clone() },
            Endpoint::UdpOut { addr } => AutopilotSide::UdpOut {
                peer: resolve(addr)?,
            },
            Endpoint::UdpIn { addr } => AutopilotSide::UdpIn {
                addr: resolve(addr)?,
            },
            Endpoint::Serial { path, baud } => AutopilotSide::Serial {
                path: path.clone(),
                baud: *baud,
            },
            Endpoint::TcpIn { .. } => bail!(
                "the relay connects to the autopilot: use tcpout:HOST:PORT, udpout:HOST:PORT, udpin:ADDR:PORT or serial:DEVICE:BAUD, not {endpoint}"
            ),
        })
    }
}

/// How serving one connection ended.
enum End {
    Stopped,
    Lost(String),
}

/// The autopilot's side: connects (and reconnects with backoff), reads into the shaper,
/// writes what comes from the daemon and the rig's injections.
async fn run_autopilot(
    side: AutopilotSide,
    mut inlet: Inlet,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    // No jitter: the relay's faults have their own seeded randomness, and its reconnects
    // must not add any a run cannot reproduce.
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut failure_noted = false;
    loop {
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            opened = open_autopilot(&side) => opened,
        };
        let end = match opened {
            Ok((connection, peer)) => {
                backoff.reset();
                failure_noted = false;
                shared.autopilot_connected.store(true, Ordering::Release);
                shared.counters().autopilot_connects += 1;
                shared.note(format!("serial relay: autopilot side open ({peer})"));
                let end = match connection {
                    Connection::Stream(stream) => {
                        serve_stream(stream, &mut inlet, &mut outgoing, &shared, &cancel).await
                    }
                    Connection::Udp { socket, peer } => {
                        serve_udp(socket, peer, &mut inlet, &mut outgoing, &shared, &cancel).await
                    }
                };
                shared.autopilot_connected.store(false, Ordering::Release);
                end
            }
            Err(error) => {
                if !failure_noted {
                    shared.note(format!(
                        "serial relay: cannot open the autopilot side: {error}; retrying"
                    ));
                    failure_noted = true;
                }
                End::Lost(error.to_string())
            }
        };
        match end {
            End::Stopped => return,
            End::Lost(reason) => {
                if shared.counters().autopilot_connects > 0 && !failure_noted {
                    shared.note(format!("serial relay: autopilot side lost: {reason}"));
                    failure_noted = true;
                }
            }
        }
        // Wait out the backoff; what the daemon sends meanwhile has nowhere to go.
        let deadline = tokio::time::Instant::now() + backoff.next_delay();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                bytes = outgoing.recv() => match bytes {
                    Some(bytes) => shared.counters().to_autopilot.overrun_bytes += bytes.len() as u64,
                    None => return,
                },
            }
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Connection {
    Stream(Box<dyn Stream>),
    Udp {
        socket: UdpSocket,
        /// Where to send: fixed for `udpout`, learnt from the last sender for `udpin`.
        peer: Option<SocketAddr>,
    },
}

async fn open_autopilot(side: &AutopilotSide) -> anyhow::Result<(Connection, String)> {
    match side {
        AutopilotSide::TcpOut { addr } => {
            let stream = TcpStream::connect(addr.as_str())
                .await
                .with_context(|| format!("tcp connect to {addr}"))?;
            stream.set_nodelay(true)?;
            Ok((Connection::Stream(Box::new(stream)), format!("tcp {addr}")))
        }
        AutopilotSide::UdpOut { peer } => {
            let any: SocketAddr = if peer.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(any).await.context("udp bind")?;
            Ok((
                Connection::Udp {
                    socket,
                    peer: Some(*peer),
                },
                format!("udp to {peer}"),
            ))
        }
        AutopilotSide::UdpIn { addr } => {
            let socket = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("udp bind {addr}"))?;
            let local = socket
                .local_addr()
                .map_or(addr.to_string(), |a| a.to_string());
            Ok((
                Connection::Udp { socket, peer: None },
                format!("udp on {local}"),
            ))
        }
        AutopilotSide::Serial { path, baud } => {
            let builder = tokio_serial::new(path, *baud)
                .data_bits(tokio_serial::DataBits::Eight)
                .parity(tokio_serial::Parity::None)
                .stop_bits(tokio_serial::StopBits::One)
                .flow_control(tokio_serial::FlowControl::None);
            let port = tokio_serial::SerialStream::open(&builder)
                .with_context(|| format!("open serial {path}"))?;
            Ok((
                Connection::Stream(Box::new(port)),
                format!("serial {path} at {baud}"),
            ))
        }
    }
}

async fn serve_stream(
    stream: Box<dyn Stream>,
    inlet: &mut Inlet,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    shared: &Shared,
    cancel: &CancellationToken,
) -> End {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = vec![0u8; READ_LEN];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return End::Stopped,
            read = reader.read(&mut buf) => match read {
                Ok(0) => return End::Lost("closed by the autopilot".into()),
                Ok(n) => inlet.handle(buf.get(..n).unwrap_or_default()),
                Err(error) => return End::Lost(error.to_string()),
            },
            bytes = outgoing.recv() => match bytes {
                None => return End::Stopped,
                Some(bytes) => {
                    if let Err(error) = writer.write_all(&bytes).await {
                        shared.counters().to_autopilot.overrun_bytes += bytes.len() as u64;
                        return End::Lost(error.to_string());
                    }
                    shared.counters().to_autopilot.bytes_forwarded += bytes.len() as u64;
                }
            },
        }
    }
}

async fn serve_udp(
    socket: UdpSocket,
    mut peer: Option<SocketAddr>,
    inlet: &mut Inlet,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    shared: &Shared,
    cancel: &CancellationToken,
) -> End {
    let learn = peer.is_none();
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return End::Stopped,
            received = socket.recv_from(&mut buf) => {
                // An error here is ICMP "port unreachable" from a peer not up yet: keep going.
                if let Ok((n, from)) = received {
                    if learn {
                        peer = Some(from);
                    }
                    inlet.handle(buf.get(..n).unwrap_or_default());
                }
            },
            bytes = outgoing.recv() => match bytes {
                None => return End::Stopped,
                Some(bytes) => {
                    let sent = match peer {
                        Some(peer) => socket.send_to(&bytes, peer).await.is_ok(),
                        None => false,
                    };
                    let mut counters = shared.counters();
                    if sent {
                        counters.to_autopilot.bytes_forwarded += bytes.len() as u64;
                    } else {
                        counters.to_autopilot.overrun_bytes += bytes.len() as u64;
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::dialect::*;
    use crate::link::frame::{FrameDecoder, FrameEncoder};

    fn heartbeat() -> MavMessage {
        MavMessage::HEARTBEAT(HEARTBEAT_DATA {
            custom_mode: 4,
            mavtype: MavType::MAV_TYPE_QUADROTOR,
            autopilot: MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            base_mode: MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
            system_status: MavState::MAV_STATE_STANDBY,
            mavlink_version: 3,
        })
    }

    /// `count` heartbeats with noise between them.
    fn stream(count: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut encoder = FrameEncoder::new(1, 1);
        let mut bytes = Vec::new();
        let mut frames = Vec::new();
        for _ in 0..count {
            bytes.extend_from_slice(b"\x00noise\r\n");
            let frame = encoder.encode(&heartbeat());
            bytes.extend(&frame);
            frames.push(frame);
        }
        (bytes, frames)
    }

    const AT: Duration = Duration::from_millis(1234);

    #[test]
    fn no_fault_forwards_every_byte_unchanged_and_stamps_every_frame() {
        let (bytes, frames) = stream(20);
        let mut shaper = LineShaper::new(Direction::ToAutopilot, 1);
        let mut forwarded = Vec::new();
        let mut logged = Vec::new();
        // Odd chunk sizes: frames are split across reads.
        for chunk in bytes.chunks(7) {
            let shaped = shaper.handle_bytes(AT, chunk, &LineFault::None);
            assert_eq!(shaped.delay, Duration::ZERO);
            forwarded.extend(shaped.forward);
            logged.extend(shaped.frames);
        }
        assert_eq!(forwarded, bytes);
        assert_eq!(logged.len(), frames.len());
        assert!(logged.iter().all(|f| f.fate == Fate::Forwarded
            && f.at == AT
            && f.direction == Direction::ToAutopilot
            && f.message == Some(heartbeat())
            && !f.injected));
        let c = shaper.counters();
        assert_eq!((c.frames, c.bytes_read), (20, bytes.len() as u64));
    }

    #[test]
    fn a_cut_line_forwards_nothing_and_counts_everything() {
        let (bytes, _) = stream(5);
        for fault in [LineFault::Cut, LineFault::Unplug] {
            let mut shaper = LineShaper::new(Direction::ToCompanion, 1);
            let shaped = shaper.handle_bytes(AT, &bytes, &fault);
            assert!(shaped.forward.is_empty());
            assert_eq!(shaped.frames.len(), 5);
            assert!(shaped.frames.iter().all(|f| f.fate == Fate::Dropped));
            let c = shaper.counters();
            assert_eq!((c.cut_frames, c.cut_bytes), (5, bytes.len() as u64));
        }
    }

    #[test]
    fn drop_at_probability_one_drops_every_frame_but_passes_noise() {
        let (bytes, _) = stream(10);
        let mut shaper = LineShaper::new(Direction::ToAutopilot, 7);
        let shaped = shaper.handle_bytes(AT, &bytes, &LineFault::Drop { probability: 1.0 });
        assert_eq!(shaped.forward, b"\x00noise\r\n".repeat(10));
        assert_eq!(shaper.counters().dropped_frames, 10);
        let shaped = shaper.handle_bytes(AT, &bytes, &LineFault::Drop { probability: 0.0 });
        assert_eq!(shaped.forward, bytes);
    }

    #[test]
    fn corruption_flips_one_byte_of_chosen_frames_and_the_receiver_sees_it() {
        let (bytes, frames) = stream(200);
        let mut shaper = LineShaper::new(Direction::ToCompanion, 42);
        let shaped = shaper.handle_bytes(AT, &bytes, &LineFault::Corrupt { probability: 0.5 });
        assert_eq!(shaped.forward.len(), bytes.len());
        let differing = shaped
            .forward
            .iter()
            .zip(&bytes)
            .filter(|(a, b)| a != b)
            .count();
        let corrupted = shaper.counters().corrupted_frames;
        assert_eq!(differing as u64, corrupted, "one byte per corrupted frame");
        assert!(
            (60..=140).contains(&corrupted),
            "{corrupted} of 200 at p=0.5"
        );
        let marked = shaped
            .frames
            .iter()
            .filter(|f| f.fate == Fate::Corrupted)
            .count();
        assert_eq!(marked as u64, corrupted);
        // The daemon's own decoder receives exactly the frames left intact.
        let mut decoder = FrameDecoder::new();
        decoder.push(&shaped.forward);
        decoder.push(&[0u8; crate::link::frame::FRAME_LEN_MAX]);
        let mut received = 0;
        while let Some(item) = decoder.poll() {
            if let Ok(frame) = item {
                assert!(frames.contains(&frame.raw));
                received += 1;
            }
        }
        assert_eq!(received, 200 - corrupted);
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let (bytes, _) = stream(50);
        let fault = LineFault::Drop { probability: 0.3 };
        let run = |seed| {
            let mut shaper = LineShaper::new(Direction::ToAutopilot, seed);
            shaper.handle_bytes(AT, &bytes, &fault).forward
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn delay_holds_the_bytes_and_marks_the_frames() {
        let (bytes, _) = stream(3);
        let mut shaper = LineShaper::new(Direction::ToAutopilot, 1);
        let shaped = shaper.handle_bytes(AT, &bytes, &LineFault::Delay { delay_ms: 250 });
        assert_eq!(shaped.forward, bytes);
        assert_eq!(shaped.delay, Duration::from_millis(250));
        assert!(
            shaped
                .frames
                .iter()
                .all(|f| f.fate == Fate::Delayed { delay_ms: 250 })
        );
    }

    #[test]
    fn probabilities_outside_zero_to_one_are_refused() {
        assert!(LineFault::Drop { probability: 1.5 }.check().is_err());
        assert!(
            LineFault::Corrupt {
                probability: f64::NAN
            }
            .check()
            .is_err()
        );
        assert!(LineFault::Corrupt { probability: 0.0 }.check().is_ok());
    }
}
