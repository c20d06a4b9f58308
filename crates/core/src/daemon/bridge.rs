//! The Core's bridge side: the sans-IO [`BridgeLink`], its events acted on in the turn they
//! appear (a press stops the vehicle at once), and the conditions that stop the daemon.

use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::{BridgeOptions, Core, Event};
use crate::bridge::{BridgeEvent, BridgeInput, BridgeLink, BridgeState};
use crate::estop::{Source, StopAsk, Trigger};

/// The bridge's state in the Core.
pub(super) struct BridgeSide {
    pub(super) link: BridgeLink,
    required: bool,
    /// With `required`, no healthy bridge by then stops the daemon.
    deadline: Instant,
    serial: String,
    startup_timeout_ms: u128,
    seen_healthy: bool,
    /// Why the daemon must stop, reported once by `poll_event`.
    pub(super) fatal: Option<Event>,
    fatal_reported: bool,
}

impl BridgeSide {
    pub(super) fn new(options: BridgeOptions, now: Instant) -> BridgeSide {
        BridgeSide {
            required: options.link.required,
            link: BridgeLink::new(options.link, now),
            deadline: now + options.startup_timeout,
            serial: options.serial,
            startup_timeout_ms: options.startup_timeout.as_millis(),
            seen_healthy: false,
            fatal: None,
            fatal_reported: false,
        }
    }

    fn fail(&mut self, reason: String, flush_bridge: bool) {
        if !self.fatal_reported {
            self.fatal_reported = true;
            self.fatal = Some(Event::Fatal {
                reason,
                flush_bridge,
            });
        }
    }
}

impl Core {
    pub(super) fn handle_bridge(&mut self, now: Instant, input: BridgeInput) {
        let Some(bridge) = &mut self.bridge else {
            return;
        };
        match input {
            BridgeInput::Connected => {
                info!("bridge port open; waiting for the bridge's hello");
                bridge.link.handle_connected(now);
            }
            BridgeInput::Disconnected(reason) => {
                warn!("bridge not connected: {reason}");
                bridge.link.handle_disconnected(now, &reason);
            }
            BridgeInput::Message(message) => bridge.link.handle_message(now, &message),
            BridgeInput::FrameError(error) => {
                debug!("bridge frame dropped: {error}");
                bridge.link.handle_frame_error(error);
            }
        }
        if bridge.link.status(now).state == BridgeState::Healthy {
            bridge.seen_healthy = true;
        }
        // A press stops the vehicle in this very turn: no queue, no task.
        self.bridge_events(now);
    }

    /// Acts on the bridge's events; true when there were any.
    pub(super) fn bridge_events(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(event) = self.bridge.as_mut().and_then(|b| b.link.poll_event()) {
            any = true;
            if let Some(record) = crate::audit::events::bridge(&event) {
                self.events.push_back(Event::Audit(record));
            }
            if let BridgeEvent::EstopAsserted { source, seq } = &event {
                let trigger = Trigger {
                    source: Source::Hardware,
                    identity: "bridge".into(),
                    reason: format!("hardware e-stop ({source}, press {seq})"),
                };
                self.handle_stop(now, StopAsk::Stop(trigger));
            }
            let bridge = self.bridge.as_mut().expect("events come from the bridge");
            if let Some(fatal) = log_bridge_event(&event, bridge.required) {
                bridge.fail(fatal, true);
            }
        }
        self.check_bridge_start(now);
        any
    }

    /// `bridge.required` and no healthy bridge within the start-up timeout: the daemon stops.
    fn check_bridge_start(&mut self, now: Instant) {
        let Some(bridge) = &mut self.bridge else {
            return;
        };
        if bridge.required
            && !bridge.seen_healthy
            && now >= bridge.deadline
            && bridge.link.status(now).state != BridgeState::Healthy
        {
            let why = bridge
                .link
                .status(now)
                .message
                .unwrap_or_else(|| "no hello from it".into());
            let reason = format!(
                "bridge.required = true but no compatible bridge on {} within {} ms: {why}",
                bridge.serial, bridge.startup_timeout_ms
            );
            bridge.fail(reason, false);
        }
    }
}

/// Logs a bridge event; returns a reason to stop the daemon when it must.
fn log_bridge_event(event: &BridgeEvent, required: bool) -> Option<String> {
    match event {
        BridgeEvent::EstopAsserted { source, seq } => {
            warn!("bridge e-stop asserted: source={source} seq={seq}")
        }
        BridgeEvent::EstopReleased { source } => info!("bridge e-stop released (was {source})"),
        BridgeEvent::Connected {
            mcu_version,
            watchdog_ms,
        } => info!("bridge connected: firmware {mcu_version}, companion watchdog {watchdog_ms} ms"),
        BridgeEvent::VersionMismatch { message } => {
            error!("{message}");
            if required {
                return Some(format!("{message} (bridge.required = true)"));
            }
        }
        BridgeEvent::Lost { reason } => warn!("bridge lost: {reason}"),
        BridgeEvent::OutputChanged { asserted: true } => {
            warn!("bridge safety output asserted")
        }
        BridgeEvent::OutputChanged { asserted: false } => info!("bridge safety output released"),
        BridgeEvent::ReleaseAnswered { result } => info!("bridge release request: {result:?}"),
    }
    None
}
