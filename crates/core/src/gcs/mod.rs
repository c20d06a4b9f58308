//! Ground stations beside the daemon: the sans-IO router (the shell is the daemon's).

pub mod router;

pub use router::{Decision, EndpointCounters, Facts, Reply, Router};

/// At most this many `[[gcs_endpoint]]`s.
pub const ENDPOINTS_MAX: usize = 8;
