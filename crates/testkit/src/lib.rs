//! The one test kit for starting processes of ours (the daemon, the simulator, Mosquitto, the
//! ground bridge, socat) and waiting for what they print: used by the integration tests
//! (`tests/it/support`), the benches and, for [`free_port`] and [`mosquitto_path`], the rig
//! and the demo.
//!
//! Two forms of the same process, for two kinds of caller:
//! - [`Proc`] is blocking: [`Proc::wait_for_line`] blocks the thread (a test; inside a tokio
//!   runtime wrap it in `block_in_place`). It keeps every line so [`Proc::output`] can show
//!   all of it, and [`Proc::wait_exit`] waits for the exit and for the last lines.
//! - [`AsyncProc`] (feature `tokio`) delivers the lines on a tokio channel and
//!   [`AsyncProc::wait_for_line`] is awaited, so a bench's other tasks keep running while it
//!   waits; it keeps only the last lines (for errors), since a bench reads for minutes.
//!
//! Both pipe stdout and stderr into one stream of lines, optionally also written to
//! `DIR/NAME.log`; stdin is what the caller set on the `Command` (so a test can give a child
//! `Stdio::null()` and a bench a pipe to [`Proc::tell`] into). Both kill the child on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod cpu;

/// How many of the last lines a failed wait quotes.
const TAIL_LINES: usize = 60;

/// A free TCP port on loopback (bound, read, released: good enough on one machine).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Mosquitto's path: Debian installs the broker in /usr/sbin, which is not on an ordinary
/// user's PATH; elsewhere it is found on the PATH.
pub fn mosquitto_path() -> PathBuf {
    let in_sbin = PathBuf::from("/usr/sbin/mosquitto");
    if in_sbin.exists() {
        in_sbin
    } else {
        PathBuf::from("mosquitto")
    }
}

/// The output streams being read: how many, and how many reached their end (every line of
/// an ended stream has been delivered).
struct Streams {
    count: usize,
    ended: Arc<AtomicUsize>,
}

impl Streams {
    fn all_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst) >= self.count
    }
}

/// Starts `command` with stdout and stderr piped, one reader thread per stream handing each
/// line to `deliver` and, with `log_dir`, appending it to `DIR/NAME.log`. Readers go on
/// reading after `deliver` has no one listening, so the log stays complete and the child
/// never blocks on a full pipe.
fn start(
    name: &str,
    log_dir: Option<&Path>,
    mut command: Command,
    deliver: impl Fn(String) + Clone + Send + 'static,
) -> anyhow::Result<(Child, Streams, Option<PathBuf>)> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let log_path = log_dir.map(|dir| dir.join(format!("{name}.log")));
    let log = match &log_path {
        Some(path) => Some(Arc::new(Mutex::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ))),
        None => None,
    };
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let ended = Arc::new(AtomicUsize::new(0));
    let mut count = 0;
    let out = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    for stream in [out, err].into_iter().flatten() {
        let (deliver, log, ended) = (deliver.clone(), log.clone(), ended.clone());
        count += 1;
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(log) = &log
                    && let Ok(mut log) = log.lock()
                {
                    let _ = writeln!(log, "{line}");
                }
                deliver(line);
            }
            ended.fetch_add(1, Ordering::SeqCst);
        });
    }
    Ok((child, Streams { count, ended }, log_path))
}

/// The error of a wait that found no line: what was awaited, why it stopped, the last lines.
fn no_line(
    name: &str,
    needle: &str,
    timeout: Duration,
    exited: bool,
    tail: impl Iterator<Item = impl AsRef<str>>,
    log: Option<&Path>,
) -> anyhow::Error {
    let why = if exited {
        "its output ended (it exited)".to_owned()
    } else {
        format!("not within {timeout:?}")
    };
    let tail: Vec<String> = tail.map(|l| l.as_ref().to_owned()).collect();
    let log = log.map_or(String::new(), |p| {
        format!(" (all of it in {})", p.display())
    });
    anyhow::anyhow!(
        "{name}: no line containing {needle:?}: {why}; its last {} lines{log}:\n{}",
        tail.len(),
        tail.join("\n")
    )
}

fn tell_child(name: &str, child: &mut Child, line: &str) -> anyhow::Result<()> {
    let stdin = child
        .stdin
        .as_mut()
        .with_context(|| format!("{name}: stdin is not piped"))?;
    writeln!(stdin, "{line}")?;
    stdin.flush()?;
    Ok(())
}

/// A child process of ours, killed when dropped, whose output lines a test waits for
/// (blocking; see the crate's documentation for [`AsyncProc`]).
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    streams: Streams,
    /// Every line received so far.
    seen: Vec<String>,
    log: Option<PathBuf>,
}

impl Proc {
    /// Starts `command` (its stdin as the caller set it) with its output collected line by
    /// line, and with `log_dir` also kept in `DIR/NAME.log`.
    pub fn spawn(name: &str, log_dir: Option<&Path>, command: Command) -> anyhow::Result<Proc> {
        let (tx, lines) = std::sync::mpsc::channel();
        let deliver = move |line| {
            let _ = tx.send(line);
        };
        let (child, streams, log) = start(name, log_dir, command, deliver)?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            lines,
            streams,
            seen: Vec::new(),
            log,
        })
    }

    /// The next line containing `needle`, skipping the others; an error with the last lines
    /// if none came within `timeout` or the output ended first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(e) => {
                    let exited = e == std::sync::mpsc::RecvTimeoutError::Disconnected;
                    let from = self.seen.len().saturating_sub(TAIL_LINES);
                    return Err(no_line(
                        &self.name,
                        needle,
                        timeout,
                        exited,
                        self.seen[from..].iter(),
                        self.log.as_deref(),
                    ));
                }
            }
        }
    }

    /// Everything printed so far (takes in what is pending).
    pub fn output(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Waits for the process to exit within `timeout` and returns its exit code (`None`:
    /// killed by a signal); an error with its output if it did not exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                // A process that exits at once can be gone before its output was read: wait
                // (bounded: a grandchild may hold the pipes) until both streams ended, so
                // `output()` has everything it printed.
                let read_by = Instant::now() + Duration::from_secs(2);
                while !self.streams.all_ended() && Instant::now() < read_by {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = self.output();
        bail!(
            "{} did not exit within {timeout:?}; output:\n{output}",
            self.name
        )
    }

    /// Writes `line` to the child's stdin (the caller piped it).
    pub fn tell(&mut self, line: &str) -> anyhow::Result<()> {
        tell_child(&self.name, &mut self.child, line)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`Proc`] for a caller inside a tokio runtime: lines arrive on a tokio channel and the wait
/// is awaited; only the last lines are kept (for errors).
#[cfg(feature = "tokio")]
pub struct AsyncProc {
    pub name: String,
    pub child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    tail: std::collections::VecDeque<String>,
    log: Option<PathBuf>,
}

#[cfg(feature = "tokio")]
impl AsyncProc {
    /// Starts `command` (its stdin as the caller set it) with its output delivered line by
    /// line, and with `log_dir` also kept in `DIR/NAME.log`.
    pub fn spawn(
        name: &str,
        log_dir: Option<&Path>,
        command: Command,
    ) -> anyhow::Result<AsyncProc> {
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        // The caller may have stopped listening; the log still has the line.
        let deliver = move |line| {
            let _ = tx.send(line);
        };
        let (child, _streams, log) = start(name, log_dir, command, deliver)?;
        Ok(AsyncProc {
            name: name.to_owned(),
            child,
            lines,
            tail: std::collections::VecDeque::with_capacity(TAIL_LINES),
            log,
        })
    }

    /// The next line containing `needle`, skipping the others; an error with the last lines
    /// if none came within `timeout` or the output ended first.
    pub async fn wait_for_line(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let found = line.contains(needle);
                    self.keep(line.clone());
                    if found {
                        return Ok(line);
                    }
                }
                result => {
                    return Err(no_line(
                        &self.name,
                        needle,
                        timeout,
                        result.is_ok(),
                        self.tail.iter(),
                        self.log.as_deref(),
                    ));
                }
            }
        }
    }

    fn keep(&mut self, line: String) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// Forgets every line received so far (a bench's next trial waits for new lines only).
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.keep(line);
        }
    }

    /// Writes `line` to the child's stdin (the caller piped it).
    pub fn tell(&mut self, line: &str) -> anyhow::Result<()> {
        tell_child(&self.name, &mut self.child, line)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

#[cfg(feature = "tokio")]
impl Drop for AsyncProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]).stdin(Stdio::null());
        command
    }

    #[test]
    fn waits_for_a_line_of_either_stream_and_logs_both() {
        let dir = std::env::temp_dir().join(format!("fc-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut proc = Proc::spawn("both", Some(&dir), sh("echo one; echo two >&2")).unwrap();
        assert_eq!(
            proc.wait_for_line("two", Duration::from_secs(10)).unwrap(),
            "two"
        );
        assert_eq!(proc.wait_exit(Duration::from_secs(10)).unwrap(), Some(0));
        let output = proc.output();
        assert!(output.contains("one") && output.contains("two"), "{output}");
        let log = std::fs::read_to_string(dir.join("both.log")).unwrap();
        assert!(log.contains("one\n") && log.contains("two\n"), "{log}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wait_past_the_end_of_the_output_says_so_with_the_last_lines() {
        let mut proc = Proc::spawn("short", None, sh("echo only")).unwrap();
        let error = proc
            .wait_for_line("never", Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("short: no line containing \"never\""),
            "{error}"
        );
        assert!(
            error.contains("it exited") && error.ends_with("only"),
            "{error}"
        );
    }

    #[test]
    fn a_wait_that_times_out_says_so() {
        let mut proc = Proc::spawn("quiet", None, sh("sleep 10")).unwrap();
        let error = proc
            .wait_for_line("never", Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not within 100ms"), "{error}");
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn the_async_form_waits_drains_and_hears_stdin() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut command = Command::new("sh");
            command
                .args(["-c", "echo ready; read line; echo got $line"])
                .stdin(Stdio::piped());
            let mut proc = AsyncProc::spawn("echo", None, command).unwrap();
            proc.wait_for_line("ready", Duration::from_secs(10))
                .await
                .unwrap();
            proc.tell("hello").unwrap();
            assert_eq!(
                proc.wait_for_line("got", Duration::from_secs(10))
                    .await
                    .unwrap(),
                "got hello"
            );
            proc.drain();
            let error = proc
                .wait_for_line("never", Duration::from_secs(10))
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("it exited"), "{error}");
        });
    }
}
