//! What the link shell reports, as plain data: the one input every core that listens to the
//! autopilot takes (no IO here, so the cores need not import the tokio shell).

use std::time::Instant;

use mavlink::MavHeader;

use super::MavMessage;
use super::frame::Frame;
use super::trust::LinkRefusal;

/// What happened on the link, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// The link is open: serial port opened, TCP connected or accepted, UDP peer known.
    Connected { peer: String },
    /// The link was lost (or could not be opened); it is being reopened in the background.
    Disconnected { reason: String },
    /// A decoded frame the link trusts, in the box the decoder made it in
    /// (`FrameDecoder::poll_boxed`): a message is a few hundred bytes, and each move of it
    /// into and out of the link's batch was a copy (issue 17). The link decodes later frames
    /// into the same boxes once the owner has read them (`FrameDecoder::recycle`).
    Frame {
        frame: Box<Frame>,
        received_at: Instant,
    },
    /// Frames or connections the link refused (already counted in
    /// [`TrustCounters`](super::trust::TrustCounters)): the first of each reason at once, then
    /// at most one report per reason every 10 s.
    Refused(LinkRefusal),
}

impl LinkEvent {
    /// A frame event made from its parts rather than read from bytes (a simulator, a test):
    /// MAVLink 2, and no raw bytes to check a signature against.
    pub fn frame(header: MavHeader, message: MavMessage, received_at: Instant) -> LinkEvent {
        LinkEvent::Frame {
            frame: Box::new(Frame {
                version: mavlink::MavlinkVersion::V2,
                header,
                message,
                raw: Vec::new(),
            }),
            received_at,
        }
    }

    /// The header and message of a frame event.
    pub fn as_frame(&self) -> Option<(&MavHeader, &MavMessage)> {
        match self {
            LinkEvent::Frame { frame, .. } => Some((&frame.header, &frame.message)),
            _ => None,
        }
    }
}
