//! The bridge's health as shown in `get_status` (`StatusReport.bridge`).

use schemars::JsonSchema;
use serde::Serialize;

/// Where the bridge link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BridgeState {
    /// `bridge.enabled = false`.
    Disabled,
    /// The serial port is not open (absent device, unplugged); retried with backoff.
    NotConnected,
    /// The port is open; waiting for the MCU's hello.
    AwaitingHello,
    /// Hello exchanged and heartbeats arriving.
    Healthy,
    /// The port is open but the MCU stopped talking.
    Lost,
    /// The MCU speaks another protocol version or schema: refused (see `message`).
    VersionMismatch,
}

/// Health of the safety microcontroller link.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BridgeStatus {
    /// Whether a bridge is configured at all.
    pub enabled: bool,
    /// Whether the configuration requires it (`bridge.required`).
    pub required: bool,
    /// Where the link stands.
    pub state: BridgeState,
    /// Why it is not healthy, in words (e.g. both protocol versions on a mismatch).
    pub message: Option<String>,
    /// The daemon's bridge protocol version.
    pub protocol_version: u16,
    /// The MCU firmware's version, once it said hello.
    pub mcu_version: Option<String>,
    /// The MCU's companion watchdog (ms), from its hello.
    pub mcu_watchdog_ms: Option<u32>,
    /// Age of the MCU's last heartbeat (ms).
    pub heartbeat_age_ms: Option<u64>,
    /// The e-stop circuit as the MCU reports it: `unknown`, `closed` or `open`.
    pub switch: Option<String>,
    /// Whether the MCU's safety output is asserted.
    pub output_asserted: Option<bool>,
    /// The MCU's latched e-stop: `switch` or `companion-silent`.
    pub latched: Option<String>,
    /// E-stop events received from the bridge since start.
    pub estop_events: u64,
    /// Frames decoded.
    pub frames_ok: u64,
    /// Frames dropped as corrupt (CRC, COBS, size, schema).
    pub frame_errors: u64,
    /// Times the serial port was opened.
    pub connects: u64,
    /// Messages not sent because the queue was full.
    pub tx_dropped: u64,
}

impl BridgeStatus {
    /// The report when no bridge is configured.
    pub fn disabled() -> BridgeStatus {
        BridgeStatus {
            enabled: false,
            required: false,
            state: BridgeState::Disabled,
            message: None,
            protocol_version: fwbridge_protocol::PROTOCOL_VERSION,
            mcu_version: None,
            mcu_watchdog_ms: None,
            heartbeat_age_ms: None,
            switch: None,
            output_asserted: None,
            latched: None,
            estop_events: 0,
            frames_ok: 0,
            frame_errors: 0,
            connects: 0,
            tx_dropped: 0,
        }
    }
}
