//! The MQTT proxy: a TCP relay between the daemon and the broker that can fade the ground
//! link out.
//!
//! It never looks inside the stream (mutual TLS passes through untouched), so its faults
//! are the ones a radio link has at the transport: a partition holds every byte both ways
//! while the connections stay open (a fade: TCP would retransmit, so nothing is lost, only
//! late), a delay holds each chunk for a while, and a drop resets every connection and
//! refuses new ones (the listener is shut down by `set_fault` itself, so a connection made
//! after it returns is refused, closed by the accept loop and bound again at the same
//! address on restore).

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::wire::WireLog;

/// Chunks read but not yet written, per direction of a connection. Overflow policy: the
/// reader waits (TCP back-pressure reaches the sender), so nothing is ever dropped.
const CHUNKS_IN_FLIGHT: usize = 64;
const READ_LEN: usize = 16 * 1024;
/// Between attempts to bind the listener again after a drop.
const REBIND_RETRY: Duration = Duration::from_millis(100);
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A fault on the ground link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFault {
    /// No fault: bytes pass, new connections are accepted.
    None,
    /// Connections stay open, nothing passes either way until `None` (held, then delivered).
    Partition,
    /// Every chunk is held this long, both ways.
    Delay { delay_ms: u64 },
    /// Every connection is reset and new ones are refused until `None`.
    Drop,
}

impl fmt::Display for NetFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetFault::None => write!(f, "none (link restored)"),
            NetFault::Partition => write!(f, "partition"),
            NetFault::Delay { delay_ms } => write!(f, "delay {delay_ms} ms"),
            NetFault::Drop => write!(f, "drop (connections reset, new ones refused)"),
        }
    }
}

/// What the proxy has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    pub connections_accepted: u64,
    /// Connections reset by [`NetFault::Drop`].
    pub connections_reset: u64,
    /// Connections accepted whose upstream connection failed (closed at once).
    pub upstream_failures: u64,
    pub bytes_to_upstream: u64,
    pub bytes_to_client: u64,
}

#[derive(Default)]
struct Counters {
    connections_accepted: AtomicU64,
    connections_reset: AtomicU64,
    upstream_failures: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
}

struct Shared {
    epoch: Instant,
    upstream: SocketAddr,
    faults: Mutex<Vec<(Duration, String)>>,
    wire: Option<WireLog>,
    counters: Counters,
    /// A duplicate of the listening socket while there is one, for `set_fault` to shut it
    /// down at once on a drop. Its lock also orders a drop against a rebind: the accept
    /// loop binds again only under it, after reading that the fault is no longer a drop.
    listening: Mutex<Option<std::net::TcpListener>>,
}

/// The proxy. Dropping it stops it; `stop` also waits for its tasks.
pub struct MqttProxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    fault: watch::Sender<NetFault>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl MqttProxy {
    /// Listens on `listen` (e.g. `127.0.0.1:0`) and relays every connection to `upstream`.
    /// Must be called within a tokio runtime.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        epoch: Instant,
    ) -> anyhow::Result<MqttProxy> {
        Self::start_inner(listen, upstream, epoch, None)
    }

    /// Like [`start`](Self::start), also recording fault changes in `wire`.
    pub fn start_with_log(
        listen: SocketAddr,
        upstream: SocketAddr,
        epoch: Instant,
        wire: WireLog,
    ) -> anyhow::Result<MqttProxy> {
        Self::start_inner(listen, upstream, epoch, Some(wire))
    }

    fn start_inner(
        listen: SocketAddr,
        upstream: SocketAddr,
        epoch: Instant,
        wire: Option<WireLog>,
    ) -> anyhow::Result<MqttProxy> {
        tokio::runtime::Handle::try_current()
            .context("the MQTT proxy must be started within a tokio runtime")?;
        let listener = bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            epoch,
            upstream,
            faults: Mutex::new(Vec::new()),
            wire,
            counters: Counters::default(),
            listening: Mutex::new(Some(duplicate(&listener)?)),
        });
        let (fault_tx, fault_rx) = watch::channel(NetFault::None);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(
            listener,
            local_addr,
            shared.clone(),
            fault_rx,
            cancel.clone(),
        ));
        Ok(MqttProxy {
            local_addr,
            shared,
            fault: fault_tx,
            cancel,
            task: Some(task),
        })
    }

    /// Where the daemon connects instead of the broker.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    pub fn fault(&self) -> NetFault {
        *self.fault.borrow()
    }

    /// Sets the fault (`NetFault::None` restores the link) and records the change.
    pub fn set_fault(&self, fault: NetFault) {
        let at = self.shared.epoch.elapsed();
        let description = format!("mqtt link: {fault}");
        if let Some(wire) = &self.shared.wire {
            wire.record_fault(at, description.clone());
        }
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((at, description));
        let mut listening = self
            .shared
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.fault.send_replace(fault);
        if fault == NetFault::Drop
            && let Some(listener) = listening.take()
        {
            // Shutting a listening socket down takes it out of listening at once: new
            // connections are refused, those still in its backlog are reset. The accept
            // loop, woken by the fault, closes its own handle of it.
            // SAFETY: `listener` owns this descriptor for the whole call.
            unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    /// Every fault change, with its time since the epoch.
    pub fn faults(&self) -> Vec<(Duration, String)> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn counters(&self) -> ProxyCounters {
        let c = &self.shared.counters;
        ProxyCounters {
            connections_accepted: c.connections_accepted.load(Ordering::Relaxed),
            connections_reset: c.connections_reset.load(Ordering::Relaxed),
            upstream_failures: c.upstream_failures.load(Ordering::Relaxed),
            bytes_to_upstream: c.bytes_to_upstream.load(Ordering::Relaxed),
            bytes_to_client: c.bytes_to_client.load(Ordering::Relaxed),
        }
    }

    /// Closes the listener and every connection.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for MqttProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    // std sets SO_REUSEADDR on Unix, so the address is free again at once after a drop.
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Another handle of the same listening socket (`dup`).
fn duplicate(listener: &TcpListener) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::AsFd;
    Ok(std::net::TcpListener::from(
        listener.as_fd().try_clone_to_owned()?,
    ))
}

/// Binds the listener again unless a drop came first, and leaves its duplicate for
/// `set_fault`. `None` when a drop came first.
fn rebind(
    addr: SocketAddr,
    shared: &Shared,
    fault: &watch::Receiver<NetFault>,
) -> std::io::Result<Option<TcpListener>> {
    let mut listening = shared.listening.lock().unwrap_or_else(|e| e.into_inner());
    if *fault.borrow() == NetFault::Drop {
        return Ok(None);
    }
    let listener = bind(addr)?;
    *listening = Some(duplicate(&listener)?);
    Ok(Some(listener))
}

async fn accept_loop(
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    mut fault: watch::Receiver<NetFault>,
    cancel: CancellationToken,
) {
    let mut listener = Some(listener);
    let mut connections = JoinSet::new();
    loop {
        let dropped = *fault.borrow_and_update() == NetFault::Drop;
        if dropped {
            // `set_fault` has shut it down already; this closes our handle, which frees
            // the address for the rebind.
            listener = None;
        } else if listener.is_none() {
            match rebind(local_addr, &shared, &fault) {
                Ok(bound) => listener = bound,
                Err(error) => {
                    tracing::warn!(target: "hil::proxy", "cannot listen on {local_addr} again: {error}; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(REBIND_RETRY) => continue,
                    }
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = fault.changed() => if changed.is_err() { break },
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((client, _)) => {
                    shared.counters.connections_accepted.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve(client, shared.clone(), fault.clone(), cancel.clone()));
                }
                // Shut down by a drop (which a restore may already have followed before this
                // loop saw it): closed here, and bound again at the top unless still dropped.
                Err(_) => listener = None,
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {},
        }
    }
    // Dropping the set aborts what is left.
    connections.shutdown().await;
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// How a connection ended.
enum End {
    Closed,
    Reset,
}

async fn serve(
    mut client: TcpStream,
    shared: Arc<Shared>,
    mut fault: watch::Receiver<NetFault>,
    cancel: CancellationToken,
) {
    let mut server = match TcpStream::connect(shared.upstream).await {
        Ok(server) => server,
        Err(error) => {
            tracing::warn!(target: "hil::proxy", "cannot reach {}: {error}", shared.upstream);
            shared
                .counters
                .upstream_failures
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (upstream_fault, client_fault) = (fault.clone(), fault.clone());
    let end = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let counters = &shared.counters;
        let pumps = async {
            tokio::join!(
                pump(
                    client_read,
                    server_write,
                    upstream_fault,
                    &counters.bytes_to_upstream
                ),
                pump(
                    server_read,
                    client_write,
                    client_fault,
                    &counters.bytes_to_client
                ),
            )
        };
        tokio::select! {
            _ = pumps => End::Closed,
            _ = cancel.cancelled() => End::Closed,
            _ = fault.wait_for(|f| *f == NetFault::Drop) => End::Reset,
        }
    };
    if let End::Reset = end {
        // Zero linger: closing sends RST, so both peers see "connection reset" at once.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
        shared
            .counters
            .connections_reset
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// A chunk with the instant it may be written.
struct Timed {
    deliver_at: tokio::time::Instant,
    bytes: Vec<u8>,
}

/// One direction of a connection: read, hold for the delay and any partition, write in order.
/// Ends after forwarding the peer's end of stream (shutdown of the write side).
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    fault: watch::Receiver<NetFault>,
    forwarded: &AtomicU64,
) {
    let (queue_tx, mut queue_rx) = mpsc::channel::<Timed>(CHUNKS_IN_FLIGHT);
    let read_fault = fault.clone();
    let read_side = async move {
        let mut buf = vec![0u8; READ_LEN];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay_ms = match *read_fault.borrow() {
                NetFault::Delay { delay_ms } => delay_ms,
                _ => 0,
            };
            let timed = Timed {
                deliver_at: tokio::time::Instant::now() + Duration::from_millis(delay_ms),
                bytes: buf.get(..n).unwrap_or_default().to_vec(),
            };
            if queue_tx.send(timed).await.is_err() {
                break;
            }
        }
    };
    let mut write_fault = fault;
    let write_side = async move {
        while let Some(timed) = queue_rx.recv().await {
            tokio::time::sleep_until(timed.deliver_at).await;
            // Held while partitioned; a drop ends the connection from `serve`.
            if write_fault
                .wait_for(|f| *f != NetFault::Partition)
                .await
                .is_err()
            {
                return;
            }
            if to.write_all(&timed.bytes).await.is_err() {
                return;
            }
            forwarded.fetch_add(timed.bytes.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read_side, write_side);
}
