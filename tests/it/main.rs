//! Integration tests: real processes and real peers on loopback, one test binary so one
//! build serves them all. Every process is started on ephemeral ports and killed on drop.

mod auth;
mod autopilot_peer;
mod bridge_e2e;
mod camera;
mod cli;
mod clock_step;
mod daemon_sim;
mod demo;
mod deploy_alerts;
mod deploy_metrics;
mod deploy_systemd;
mod estop;
mod flight_mcp;
mod flight_rig;
mod gcs_share;
mod ground_bridge;
mod hil_inject;
mod hil_runner;
mod hostile;
mod link_flow;
mod link_interop;
mod link_net;
mod link_pinning;
mod link_pty;
mod link_signing;
mod mcp_broker;
mod mcp_client;
mod mcp_interop;
mod mcp_server;
mod sim_pymavlink;
mod storage;
mod support;
