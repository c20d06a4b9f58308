//! `flight-companion signing`: make a MAVLink 2 signing key and install it on the autopilot.
//!
//! `keygen --out FILE` writes 32 random bytes as 64 hex digits (mode 0600, never
//! overwriting). `install --link ENDPOINT --key FILE` connects like a ground station
//! (system 255, component 190), waits for the autopilot's heartbeat, refuses while it is
//! armed, sends `SETUP_SIGNING` (the key and the current timestamp), and then proves the
//! installation instead of assuming it:
//!
//! 1. the autopilot's own heartbeats arrive signed with the new key (the link now refuses
//!    everything else);
//! 2. a signed `REQUEST_MESSAGE` is answered (the autopilot accepts the key's signatures);
//! 3. an unsigned `REQUEST_MESSAGE` is sent too: if it is answered, this port accepts unsigned
//!    commands (ArduPilot's channel 0 — USB, SITL's first port — always does), which is said,
//!    because the daemon must then be connected to another port.
//!
//! `SETUP_SIGNING` carries the key in clear: run this only over a link nobody else can hear
//! (USB, or the companion's own serial port with the daemon stopped). The daemon itself never
//! sends `SETUP_SIGNING` (it is in the whitelist's `NEVER_MESSAGES`); this tool is a separate
//! command a person runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::link::dialect::{
    COMMAND_ACK_DATA, COMMAND_LONG_DATA, HEARTBEAT_DATA, MavAutopilot, MavCmd, MavModeFlag,
    MavResult, MavState, MavType, SETUP_SIGNING_DATA,
};
use crate::link::endpoint::Endpoint;
use crate::link::keys;
use crate::link::pin::{PeerPolicy, PinRule};
use crate::link::signing::{Acceptance, LinkSigning, SigningKey, SigningMode, timestamp_at};
use crate::link::transport::{Link, LinkEvent, LinkEvents, LinkHandle, LinkOptions, SigningSetup};
use crate::link::{MavMessage, is_autopilot_heartbeat};

/// The tool's own identity on the link: a ground station.
const SYSTEM_ID: u8 = 255;
const COMPONENT_ID: u8 = 190;
/// AUTOPILOT_VERSION: the message asked for to prove a signed command is accepted.
const AUTOPILOT_VERSION_ID: f32 = 148.0;
/// HEARTBEAT: whose interval an unsigned command asks, to see whether the port takes it.
const HEARTBEAT_ID: f32 = 0.0;
/// How long each proof waits for its answer.
const PROOF_WAIT: Duration = Duration::from_secs(4);
/// `SETUP_SIGNING` has no answer: it is sent again if no signed heartbeat follows.
const SETUP_TRIES: usize = 3;

#[derive(Debug, clap::Subcommand)]
pub enum SigningCommand {
    /// Write a new random key: 64 hex digits, mode 0600 (refuses to overwrite). Prints the
    /// file and the key's fingerprint (never the key).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Install a key on the autopilot with SETUP_SIGNING over a trusted link (USB, or the
    /// companion's serial port with the daemon stopped), then prove that it signs with it
    /// and accepts it. The autopilot must be disarmed.
    Install(InstallArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// Autopilot endpoint, e.g. `serial:/dev/ttyACM0:115200`.
    #[arg(long)]
    pub link: Endpoint,
    /// The key to install (`signing keygen` writes one).
    #[arg(long)]
    pub key: PathBuf,
    /// The key the autopilot uses now, if any: on a port that requires signatures the
    /// SETUP_SIGNING itself must be signed with it.
    #[arg(long)]
    pub current_key: Option<PathBuf>,
    /// The autopilot's system id; default: the first autopilot heard.
    #[arg(long)]
    pub target_system: Option<u8>,
    /// The autopilot's component id; default: the first autopilot heard.
    #[arg(long)]
    pub target_component: Option<u8>,
    /// How long to wait for the autopilot's first heartbeat.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
}

pub fn keygen(out: &std::path::Path) -> Result<Vec<String>, String> {
    let key = keys::generate_key(out)?;
    Ok(vec![
        format!("{} (key {})", out.display(), key.fingerprint()),
        format!(
            "install it: flight-companion signing install --link ENDPOINT --key {}",
            out.display()
        ),
        format!(
            "then in the daemon's configuration: [vehicle.signing] mode = \"required\", \
             key_path = \"{}\" (or a systemd credential: key_path = \"credential:NAME\")",
            out.display()
        ),
    ])
}

/// The wall clock as a signing timestamp.
fn now_timestamp() -> u64 {
    timestamp_at(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn say(line: &str) {
    println!("signing: {line}");
}

/// The link and its events, with the autopilot it talks to.
struct Session {
    link: LinkHandle,
    events: LinkEvents,
    target: (u8, u8),
    next_heartbeat: Instant,
    /// What the link refused while waiting (why a proof did not come).
    refused: std::collections::BTreeSet<&'static str>,
}

impl Session {
    /// The tool's own heartbeat, about once a second (ground stations are expected to send
    /// one; nothing depends on it).
    fn heartbeat(&mut self) {
        if Instant::now() < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = Instant::now() + Duration::from_secs(1);
        let _ = self.link.send(&MavMessage::HEARTBEAT(HEARTBEAT_DATA {
            custom_mode: 0,
            mavtype: MavType::MAV_TYPE_GCS,
            autopilot: MavAutopilot::MAV_AUTOPILOT_INVALID,
            base_mode: MavModeFlag::empty(),
            system_status: MavState::MAV_STATE_ACTIVE,
            mavlink_version: 3,
        }));
    }

    /// The next frame from the autopilot received after `since`, for which `want` says
    /// yes, within `wait`.
    async fn wait_for<T>(
        &mut self,
        since: Instant,
        wait: Duration,
        mut want: impl FnMut(&MavMessage) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.heartbeat();
            let event = tokio::select! {
                event = self.events.recv() => event?,
                () = tokio::time::sleep_until(deadline) => return None,
                () = tokio::time::sleep(Duration::from_millis(250)) => continue,
            };
            if let LinkEvent::Refused(refusal) = &event {
                self.refused.insert(refusal.reason.as_str());
            }
            if let LinkEvent::Frame { frame, received_at } = event
                && received_at >= since
                && u8::try_from(frame.header.system_id) == Ok(self.target.0)
                && frame.header.component_id == self.target.1
                && let Some(found) = want(&frame.message)
            {
                return Some(found);
            }
        }
    }

    /// Sends `command` (asking about `param1`); true when the autopilot accepted it. The
    /// two proofs use different commands, so a late answer to one is never taken for the
    /// other's.
    // GET_MESSAGE_INTERVAL is superseded in the dialect, and still answered by ArduPilot
    // (`GCS_Common.cpp`) and PX4: a harmless question with an ACK of its own.
    #[allow(deprecated)]
    async fn command_answered(&mut self, command: MavCmd, param1: f32) -> bool {
        let since = Instant::now();
        let request = MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
            target_system: self.target.0,
            target_component: self.target.1,
            command,
            confirmation: 0,
            param1,
            ..Default::default()
        });
        if self.link.send(&request).is_err() {
            return false;
        }
        self.wait_for(since, PROOF_WAIT, |m| match m {
            MavMessage::COMMAND_ACK(COMMAND_ACK_DATA {
                command: acked,
                result,
                ..
            }) if *acked == command => Some(*result == MavResult::MAV_RESULT_ACCEPTED),
            _ => None,
        })
        .await
        .unwrap_or(false)
    }

    fn use_key(&self, key: &SigningKey) {
        self.link.set_signing(
            Some(LinkSigning::new(
                key.clone(),
                0,
                Acceptance::SignedOnly,
                now_timestamp(),
            )),
            SigningMode::Required,
        );
    }
}

pub async fn install(args: InstallArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        bail!("--seconds must be in (0, 3600], got {}", args.seconds);
    }
    let key = keys::load_key(&args.key).map_err(anyhow::Error::msg)?;
    let current = match &args.current_key {
        Some(path) => Some(keys::load_key(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let link_stopped = shutdown.child_token();
    let (link, events) = Link::open(
        &args.link,
        LinkOptions {
            system_id: SYSTEM_ID,
            component_id: COMPONENT_ID,
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_millis(1000),
            // With the current key, sign with it and accept the autopilot's frames signed or
            // not; without one, sign nothing and check nothing until the new key is in.
            signing: current.as_ref().map(|current| SigningSetup {
                key: current.clone(),
                mode: SigningMode::Sign,
                acceptance: Acceptance::SignedOrUnsigned,
                link_id: 0,
                initial_timestamp: now_timestamp(),
                wall_clock: true,
                timestamp_store: None,
            }),
            peer: PeerPolicy {
                rule: PinRule::FirstAutopilot,
                release_after: Duration::from_secs(3),
            },
        },
        link_stopped.clone(),
    )
    .await
    .with_context(|| format!("cannot open {}", args.link))?;
    let result = tokio::select! {
        result = run_install(&args, key, link, events) => result,
        _ = shutdown.cancelled() => Ok(ExitCode::from(130)),
    };
    link_stopped.cancel();
    result
}

/// The first autopilot heartbeat (from `wanted`, when given) within `seconds`: its ids and
/// whether it is armed; the link's refusals are said as they come.
async fn find_autopilot(
    session: &mut Session,
    wanted: (Option<u8>, Option<u8>),
    seconds: f64,
) -> Option<((u8, u8), bool)> {
    let mut found: Option<((u8, u8), bool)> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    while found.is_none() {
        let event = tokio::select! {
            event = session.events.recv() => event,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let Some(event) = event else { break };
        if let Some((header, MavMessage::HEARTBEAT(hb))) = event.as_frame()
            && is_autopilot_heartbeat(hb)
            && let Ok(system) = u8::try_from(header.system_id)
            && wanted.0.is_none_or(|s| s == system)
            && wanted.1.is_none_or(|c| c == header.component_id)
        {
            let armed = hb
                .base_mode
                .contains(MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED);
            found = Some(((system, header.component_id), armed));
        }
        if let LinkEvent::Refused(refusal) = &event {
            say(&format!(
                "refused {}: {}",
                refusal.reason.as_str(),
                refusal.detail
            ));
        }
    }
    found
}

async fn run_install(
    args: &InstallArgs,
    key: SigningKey,
    link: LinkHandle,
    events: LinkEvents,
) -> anyhow::Result<ExitCode> {
    let mut session = Session {
        link,
        events,
        target: (0, 0),
        next_heartbeat: Instant::now(),
        refused: Default::default(),
    };
    // 1. The autopilot, disarmed.
    let wanted = (args.target_system, args.target_component);
    let found = find_autopilot(&mut session, wanted, args.seconds).await;
    let Some((target, armed)) = found else {
        eprintln!(
            "error: no autopilot heartbeat on {} within {:.0} s{}; check the link, or pass \
             --current-key if the autopilot already requires signed frames here",
            args.link,
            args.seconds,
            match wanted {
                (None, None) => String::new(),
                _ => " from the given --target-system/--target-component".into(),
            }
        );
        return Ok(ExitCode::from(1));
    };
    session.target = target;
    say(&format!(
        "autopilot found: system {} component {}",
        target.0, target.1
    ));
    if armed {
        eprintln!(
            "error: the autopilot is armed; ArduPilot refuses SETUP_SIGNING while armed \
             (\"Won't setup signing when armed\"). Disarm it and run this again."
        );
        return Ok(ExitCode::from(1));
    }

    // 2. SETUP_SIGNING, until the autopilot's heartbeats come signed with the new key.
    let mut signed = false;
    for attempt in 1..=SETUP_TRIES {
        let initial_timestamp = now_timestamp();
        let setup = MavMessage::SETUP_SIGNING(SETUP_SIGNING_DATA {
            initial_timestamp,
            target_system: target.0,
            target_component: target.1,
            secret_key: *key.bytes(),
        });
        if let Err(error) = session.link.send(&setup) {
            eprintln!("error: SETUP_SIGNING not sent: {error}");
            return Ok(ExitCode::from(1));
        }
        say(&format!(
            "SETUP_SIGNING sent (key {}, attempt {attempt} of {SETUP_TRIES})",
            key.fingerprint()
        ));
        // From now on only frames signed with the new key reach us.
        session.use_key(&key);
        let since = Instant::now();
        signed = session
            .wait_for(since, PROOF_WAIT, |m| {
                matches!(m, MavMessage::HEARTBEAT(hb) if is_autopilot_heartbeat(hb)).then_some(())
            })
            .await
            .is_some();
        if signed {
            break;
        }
        // Not taken: back to how the link was, to send it again.
        match &args.current_key {
            Some(path) => {
                let current = keys::load_key(path).map_err(anyhow::Error::msg)?;
                session.use_key(&current);
            }
            None => session.link.set_signing(None, SigningMode::Off),
        }
    }
    if !signed {
        let why = if session.refused.contains("bad_signature") {
            "its frames are signed with another key: the autopilot already has a key and did \
             not take this one; if this port requires signatures, pass that key as \
             --current-key"
        } else if session.refused.contains("unsigned") {
            "its frames still come unsigned: it ignored SETUP_SIGNING (a PX4 without signing, \
             a MAVLink 1 port, or signing disabled by MAVn_OPTIONS)"
        } else {
            "nothing came back from it"
        };
        eprintln!(
            "error: the autopilot's heartbeats did not come signed with the new key after \
             {SETUP_TRIES} SETUP_SIGNING: {why}"
        );
        return Ok(ExitCode::from(1));
    }
    say("the autopilot signs with the new key");

    // 3. A signed command is accepted.
    if !session
        .command_answered(MavCmd::MAV_CMD_REQUEST_MESSAGE, AUTOPILOT_VERSION_ID)
        .await
    {
        eprintln!(
            "error: the autopilot signs with the new key but did not answer a request signed \
             with it"
        );
        return Ok(ExitCode::from(1));
    }
    say("a command signed with the new key is accepted");

    // 4. Does this port still take unsigned commands?
    session.link.set_signing(None, SigningMode::Off);
    #[allow(deprecated)]
    let unsigned_answered = session
        .command_answered(MavCmd::MAV_CMD_GET_MESSAGE_INTERVAL, HEARTBEAT_ID)
        .await;
    session.use_key(&key);
    if unsigned_answered {
        say(
            "warning: this port still accepts UNSIGNED commands (ArduPilot's first port, USB or \
             SITL's SERIAL0, always does): keep it for installing keys and connect the daemon \
             to another MAVLink 2 port",
        );
    } else {
        say("an unsigned command is refused on this port");
    }
    say(
        "installed: ArduPilot keeps the key in its storage (not a parameter: a parameter \
         reset or SITL's -w keeps it) across reboots, on every MAVLink 2 port \
         (SERIALn_PROTOCOL = 2) whose MAVn_OPTIONS bit 0 is clear; the all-zero key turns \
         signing off. Set the daemon's [vehicle.signing] mode = \"required\" with this key.",
    );
    Ok(ExitCode::SUCCESS)
}
