//! `flight-companion bridge-sim`: the safety MCU's own logic (`fwbridge-logic`) on the host,
//! speaking the bridge protocol over a serial device or a pty, for tests, the demo and
//! hardware-in-the-loop rigs.
//!
//! Commands on stdin, one per line: `press` / `release` (the e-stop switch: the circuit
//! opens / closes), `cut` (same as `press`: a cut wire opens the circuit), `silence` /
//! `resume` (stop / restart sending anything). Events are printed on stdout as
//! `bridge-sim: ...` lines. With `--stamp-monotonic`, every e-stop frame written is followed
//! by `bridge-sim: sent estop-asserted seq=N mono_ns=T`, `T` being the `CLOCK_MONOTONIC`
//! nanoseconds just before the write (for latency benchmarks across processes).

use std::time::Duration;

use fwbridge_logic::{Config, Mcu};
use fwbridge_protocol::{FrameDecoder, Message, OutputState};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// `bridge-sim` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BridgeSimArgs {
    /// Serial device or pty to speak on (e.g. one end of `socat pty,link=A pty,link=B`).
    #[arg(long)]
    pub serial: String,
    /// Baud rate (ignored by ptys).
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// Companion heartbeat loss (while armed) that latches and asserts the output.
    #[arg(long, default_value_t = 500)]
    pub watchdog_ms: u32,
    /// E-stop input debounce.
    #[arg(long, default_value_t = 20)]
    pub debounce_ms: u32,
    /// Assert the output as soon as the switch opens (motor-power relay wiring).
    #[arg(long)]
    pub switch_asserts_output: bool,
    /// Pretend to be a firmware of this protocol version (to test the daemon's refusal).
    #[arg(long)]
    pub protocol_version: Option<u16>,
    /// Print the `CLOCK_MONOTONIC` time at which each e-stop frame was written.
    #[arg(long)]
    pub stamp_monotonic: bool,
}

/// How often the simulated MCU samples its input and runs its logic (the firmware: 1 ms).
const TICK: Duration = Duration::from_millis(2);

/// Runs until `shutdown` (stdin closing only ends the commands) or the port fails.
pub async fn run(
    args: BridgeSimArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<std::process::ExitCode> {
    let builder = tokio_serial::new(&args.serial, args.baud);
    let port = tokio_serial::SerialStream::open(&builder)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", args.serial))?;
    let (mut reader, mut writer) = tokio::io::split(port);
    let config = Config {
        debounce_ms: args.debounce_ms,
        watchdog_ms: args.watchdog_ms,
        switch_asserts_output: args.switch_asserts_output,
        ..Config::default()
    };
    let start = tokio::time::Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let mut mcu = Mcu::new(config, now_ms());
    let mut decoder = FrameDecoder::new();
    let mut circuit_closed = true;
    let mut silent = false;
    let mut last_output = OutputState::Released;
    let mut last_armed = false;
    let mut last_latched = None;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut buf = [0u8; 256];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    say(&format!(
        "ready on {} (protocol v{}, watchdog {} ms)",
        args.serial,
        args.protocol_version
            .unwrap_or(fwbridge_protocol::PROTOCOL_VERSION),
        args.watchdog_ms
    ));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => match line.trim() {
                    "press" | "cut" => { circuit_closed = false; say("switch pressed (circuit open)"); }
                    "release" => { circuit_closed = true; say("switch released (circuit closed)"); }
                    "silence" => { silent = true; say("silent: sending nothing"); }
                    "resume" => { silent = false; say("resumed sending"); }
                    "" => {}
                    other => say(&format!("unknown command {other:?}: use press, release, cut, silence or resume")),
                },
                _ => stdin_open = false,
            },
            read = reader.read(&mut buf) => match read {
                Ok(0) => anyhow::bail!("{}: closed", args.serial),
                Ok(n) => {
                    for result in decoder.feed(buf.get(..n).unwrap_or_default()) {
                        match result {
                            Ok(message) => {
                                if let Message::Hello(hello) = message {
                                    say(&format!(
                                        "companion hello: protocol v{} (schema {:#010x}){}",
                                        hello.protocol_version,
                                        hello.schema_hash,
                                        if hello.is_compatible() { "" } else { ": mismatch, refused" }
                                    ));
                                }
                                mcu.handle_message(now_ms(), &message);
                            }
                            Err(_) => mcu.handle_frame_error(),
                        }
                    }
                }
                Err(e) => anyhow::bail!("{}: read failed: {e}", args.serial),
            },
            _ = tick.tick() => {}
        }
        let now = now_ms();
        mcu.handle_switch(now, circuit_closed);
        while let Some(mut message) = mcu.poll_transmit(now) {
            if silent {
                continue;
            }
            if let (Message::Hello(hello), Some(version)) = (&mut message, args.protocol_version) {
                hello.protocol_version = version;
            }
            if let Message::EstopAsserted { seq, source } = message {
                say(&format!("sending estop-asserted source={source} seq={seq}"));
            }
            let frame = fwbridge_protocol::encode(&message)
                .map_err(|_| anyhow::anyhow!("cannot encode {message:?}"))?;
            let written_ns = crate::clock::monotonic_ns();
            writer.write_all(&frame).await?;
            if let (Message::EstopAsserted { seq, .. }, true) = (&message, args.stamp_monotonic) {
                say(&format!(
                    "sent estop-asserted seq={seq} mono_ns={written_ns}"
                ));
            }
        }
        if mcu.latched() != last_latched {
            last_latched = mcu.latched();
            match last_latched {
                Some(source) => say(&format!("latched ({source})")),
                None => say("latch released"),
            }
        }
        let armed = mcu_armed(&mcu);
        if armed != last_armed {
            say(if armed {
                "companion says armed"
            } else {
                "companion says disarmed"
            });
            last_armed = armed;
        }
        if mcu.output() != last_output {
            last_output = mcu.output();
            match last_output {
                OutputState::Asserted => say(&format!(
                    "output asserted ({}) after {} ms",
                    mcu.latched().map(|s| s.to_string()).unwrap_or_default(),
                    now
                )),
                OutputState::Released => say("output released"),
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn mcu_armed(mcu: &Mcu) -> bool {
    mcu.companion_armed()
}

fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "bridge-sim: {text}");
    let _ = out.flush();
}
