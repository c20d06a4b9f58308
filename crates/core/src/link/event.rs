//! What the link shell reports, as plain data: the one input every core that listens to the
//! autopilot takes (no IO here, so the cores need not import the tokio shell).

use std::time::Instant;

use mavlink::MavHeader;

use super::MavMessage;
use super::trust::LinkRefusal;

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
    /// A decoded frame the link trusts.
    Frame {
        header: MavHeader,
        message: MavMessage,
        received_at: Instant,
    },
    /// Frames or connections the link refused (already counted in
    /// [`TrustCounters`](super::trust::TrustCounters)): the first of each reason at once, then
    /// at most one report per reason every 10 s.
    Refused(LinkRefusal),
}
