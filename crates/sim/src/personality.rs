//! Which firmware the simulator pretends to be: the one fact the autopilot model and its
//! mission server (`mission`) both branch on.

/// Which firmware the simulator pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    ArduPilot,
    Px4,
}
