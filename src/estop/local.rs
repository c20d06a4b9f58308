//! The local e-stop: a Unix stream socket on the companion (`flight-companion estop`).
//!
//! Protocol, one line each way (UTF-8, `\n`-terminated, at most [`LINE_BYTES_MAX`] bytes):
//! - `STOP <reason>` → `OK <what happened>` once the decision loop has acted on it, or
//!   `ERR <why>`;
//! - `STATUS` → `OK <status as one JSON object>`.
//!
//! Access is by file permissions: the socket is created with mode 0660 (owner and group of
//! the daemon), in the runtime directory. The caller's uid and pid (`SO_PEERCRED`) are its
//! identity in the log and in every client's notification.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{Source, StopAsk, StopClient, Trigger};

/// Longest request line; longer ones are refused.
pub const LINE_BYTES_MAX: usize = 1024;
/// A client that does not finish its line within this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more wait in the kernel's backlog.
const CONNECTIONS_MAX: usize = 16;

pub use super::local_status::{LocalEstopState, LocalEstopStatus};

pub use flight_companion_core::config::SOCKET_PATH_BYTES_MAX;

/// Binds the socket (replacing a stale one) with mode 0660. The error names the path.
///
/// Its directory is created (mode 0750) when missing, so the default path in the user's
/// runtime directory works without preparation; a directory others may write to (without
/// the sticky bit) is refused, since anyone could then replace the socket.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    let bytes = path.as_os_str().len();
    if bytes > SOCKET_PATH_BYTES_MAX {
        anyhow::bail!(
            "cannot bind the e-stop socket {}: the path is {bytes} bytes and a Unix socket path \
             holds at most {SOCKET_PATH_BYTES_MAX}; set estop.socket_path to a shorter one",
            path.display()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                anyhow::bail!("{} is not a directory", dir.display())
            }
            Ok(meta) => {
                let mode = meta.permissions().mode();
                if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                    anyhow::bail!(
                        "{} is writable by every user (mode {:o}): anyone could replace the \
                         e-stop socket there; use a directory only the daemon's user and group \
                         may write",
                        dir.display(),
                        mode & 0o7777
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o750)
                    .create(dir)
                    .with_context(|| {
                        format!(
                            "cannot create {} for the e-stop socket (set estop.socket_path to a \
                             directory this user may write, e.g. under $XDG_RUNTIME_DIR)",
                            dir.display()
                        )
                    })?;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot use {} for the e-stop socket",
                    dir.display()
                )));
            }
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only ever remove a socket: a mistyped path must not delete someone's file; and
        // never one that another process still listens on (a second daemon would otherwise
        // take the first one's e-stop away).
        if meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another process listens on the e-stop socket {} (a second flight-companion?); \
                 stop it, or give this daemon its own estop.socket_path",
                path.display()
            );
        }
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        } else {
            anyhow::bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind the e-stop socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set mode 0660 on {}", path.display()))?;
    Ok(listener)
}

/// Serves the socket until `shutdown`; removes it on the way out.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    client: StopClient,
    shutdown: CancellationToken,
) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("e-stop socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(stream, client).await {
                tracing::debug!("e-stop socket: {e}");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn handle(stream: UnixStream, client: StopClient) -> std::io::Result<()> {
    let identity = match stream.peer_cred() {
        Ok(cred) => format!(
            "local uid {} pid {}",
            cred.uid(),
            cred.pid().map_or("?".into(), |p| p.to_string())
        ),
        Err(_) => "local".into(),
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(LINE_BYTES_MAX as u64 + 1);
    let mut line = String::new();
    let reply = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => "ERR no request line within 2 s".to_string(),
        Ok(Err(e)) => format!("ERR unreadable request: {e}"),
        Ok(Ok(_)) if line.len() > LINE_BYTES_MAX => {
            format!("ERR request longer than {LINE_BYTES_MAX} bytes")
        }
        Ok(Ok(_)) => answer(line.trim_end_matches(['\r', '\n']), &identity, &client).await,
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

async fn answer(line: &str, identity: &str, client: &StopClient) -> String {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    match verb {
        "STOP" => {
            let ask = StopAsk::Stop(Trigger {
                source: Source::Local,
                identity: identity.to_owned(),
                reason: rest.to_owned(),
            });
            match client.request(ask).await {
                Ok(ack) if ack.ok => format!("OK {}", ack.message),
                Ok(ack) => format!("ERR {}", ack.message),
                Err(e) => format!("ERR {e}"),
            }
        }
        "STATUS" => {
            let status = client.status().borrow().clone();
            match serde_json::to_string(&status) {
                Ok(json) => format!("OK {json}"),
                Err(e) => format!("ERR cannot serialise the status: {e}"),
            }
        }
        _ => "ERR unknown request; send `STOP <reason>` or `STATUS`".to_string(),
    }
}

/// The client side: sends one line, returns the reply line.
pub async fn request(path: &Path, line: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.with_context(|| {
            format!(
                "cannot connect to the e-stop socket {} (is the daemon running, and may this \
                 user open it? it is mode 0660)",
                path.display()
            )
        })?;
        stream.write_all(line.as_bytes()).await?;
        stream.write_all(b"\n").await?;
        let mut reply = String::new();
        BufReader::new(stream)
            .take(64 * 1024)
            .read_line(&mut reply)
            .await?;
        anyhow::Ok(reply.trim_end().to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .context("the daemon did not answer on the e-stop socket within 3 s")?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estop::{EmergencyStop, StopAck, StopOptions};

    #[tokio::test]
    async fn stop_and_status_over_the_socket_with_mode_0660() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("estop.sock");
        // A stale socket from a previous run is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);

        let stop = EmergencyStop::new(StopOptions::default(), std::time::Instant::now(), true);
        let (client, mut loop_side) = crate::estop::channel(stop.status());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, path.clone(), client, shutdown.clone()));
        // A stand-in for the loop: acknowledges with the reason it got.
        tokio::spawn(async move {
            while let Some(request) = loop_side.requests.recv().await {
                if let (StopAsk::Stop(trigger), Some(reply)) = (request.ask, request.reply) {
                    assert_eq!(trigger.source, Source::Local);
                    assert!(
                        trigger.identity.starts_with("local uid "),
                        "{}",
                        trigger.identity
                    );
                    let _ = reply.send(StopAck {
                        ok: true,
                        message: format!("latched: {}", trigger.reason),
                        status: stop.status(),
                    });
                }
            }
        });
        let reply = request(&path, "STOP bird strike").await.unwrap();
        assert_eq!(reply, "OK latched: bird strike");
        let reply = request(&path, "STATUS").await.unwrap();
        assert!(reply.starts_with("OK {\"latched\":false"), "{reply}");
        let reply = request(&path, "JUMP").await.unwrap();
        assert!(reply.starts_with("ERR unknown request"), "{reply}");
        let long = format!("STOP {}", "x".repeat(2000));
        let reply = request(&path, &long).await.unwrap();
        assert!(reply.contains("longer than 1024"), "{reply}");

        // A socket another daemon still listens on is never taken over.
        let error = bind(&path).unwrap_err().to_string();
        assert!(error.contains("another process listens"), "{error}");

        // A regular file is never replaced.
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"keep").unwrap();
        assert!(bind(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");

        shutdown.cancel();
        server.await.unwrap();
        assert!(!path.exists(), "the socket is removed on shutdown");
    }

    #[tokio::test]
    async fn bind_makes_its_directory_and_refuses_paths_that_cannot_be_safe() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The default in a user's runtime directory: `flight-companion/` is created.
        let path = dir.path().join("flight-companion/estop.sock");
        let listener = bind(&path).unwrap();
        assert!(path.exists());
        drop(listener);
        // A directory anyone may write to (without the sticky bit) is refused.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = bind(&open.join("estop.sock")).unwrap_err().to_string();
        assert!(error.contains("writable by every user"), "{error}");
        // A path too long for sun_path is named with its length, not a bare EINVAL.
        let long = dir.path().join("x".repeat(120)).join("estop.sock");
        let error = bind(&long).unwrap_err().to_string();
        assert!(error.contains("at most 107"), "{error}");
        // A directory that cannot be made says what to set.
        let error = bind(Path::new("/proc/flight-companion-test/estop.sock"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("estop.socket_path"), "{error}");
    }
}
