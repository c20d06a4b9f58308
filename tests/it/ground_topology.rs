//! The three-drone fleet through a drone-side Mosquitto bridged to a ground Mosquitto (the
//! edge pattern: a broker on each vehicle, bridged over the radio link), both with mutual
//! TLS, and the round trips of `get_status` and `emergency_stop` through it next to the
//! single broker in the same run (`tests/peers/fleet_bench.py`, figures in BENCHMARKS.md).
//!
//! The bridge is Mosquitto's own (`connection`, `bridge_protocol_version mqttv50`, a client
//! certificate of the dev CA on the ground broker, `topic ... both 1` for the transport's
//! namespaces); the official SDK's fleet checks (`fleet_sdk_client.py`) then exercise
//! presence (retained), the daemons' Wills (SIGKILL), user properties and No Local across it.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::ground_bridge::WAIT;
use crate::ground_fleet::{DRONES, add_drones_to_acl, drone_config, fleet_token_as, start_sim};
use crate::support::broker::{Broker, s};
use crate::support::{Proc, binary, flight_companion, free_tcp_port, peer, python};

/// Calls per phase of the bench in CI (enough to see it work in a few seconds);
/// BENCHMARKS.md's figures are of `FC_TOPOLOGY_BENCH_CALLS=100` or more.
const BENCH_CALLS: usize = 30;

fn bench_calls() -> usize {
    std::env::var("FC_TOPOLOGY_BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(BENCH_CALLS)
}

struct Stack {
    broker: Broker,
    /// The drone-side broker, bridged to `broker`.
    edge: Option<Proc>,
    sims: Vec<Proc>,
    daemons: Vec<Proc>,
}

/// The drone-side Mosquitto: dev-setup's configuration on another port, plus a bridge to the
/// ground broker with a certificate of its own (which the ground broker's ACL lets carry the
/// transport's topics).
fn start_edge(broker: &mut Broker) -> (Proc, u16) {
    let (cert, key) = broker.dev.identity("edge-bridge");
    let acl = broker.dev.path("acl");
    let mut text = std::fs::read_to_string(&acl).unwrap();
    text.push_str(
        "\n# The drone-side broker's bridge carries the transport's topics both ways.\n\
         user edge-bridge\n\
         topic readwrite $mcp-server/#\ntopic readwrite $mcp-client/#\n\
         topic readwrite $mcp-rpc/#\ntopic readwrite flight-companion/#\n",
    );
    std::fs::write(&acl, text).unwrap();
    broker.restart();
    let port = free_tcp_port();
    let conf = std::fs::read_to_string(broker.dev.path("mosquitto.conf"))
        .unwrap()
        .replace(
            &format!("listener {} 127.0.0.1", broker.port()),
            &format!("listener {port} 127.0.0.1"),
        );
    let bridge = format!(
        "\nconnection ground-link\n\
         address localhost:{ground}\n\
         bridge_protocol_version mqttv50\n\
         bridge_cafile {ca}\nbridge_certfile {cert}\nbridge_keyfile {key}\n\
         bridge_tls_version tlsv1.2\n\
         remote_clientid edge-bridge\n\
         cleansession true\ntry_private true\nnotifications false\n\
         restart_timeout 1\n\
         topic $mcp-server/# both 1\ntopic $mcp-client/# both 1\n\
         topic $mcp-rpc/# both 1\ntopic flight-companion/# both 1\n",
        ground = broker.port(),
        ca = broker.dev.certs("ca.pem"),
    );
    let path = broker.dev.path("mosquitto-edge.conf");
    std::fs::write(&path, conf + &bridge).unwrap();
    let mut command = Command::new(flight_companion_testkit::mosquitto_path());
    command.arg("-c").arg(&path);
    let mut edge = Proc::spawn("edge mosquitto", command);
    edge.wait_for_line("Connecting bridge", WAIT);
    (edge, port)
}

fn start_stack(tag: &str, bridged: bool) -> Stack {
    let mut broker = Broker::start(tag);
    add_drones_to_acl(&mut broker);
    let (edge, drone_port) = if bridged {
        let (edge, port) = start_edge(&mut broker);
        (Some(edge), port)
    } else {
        (None, broker.port())
    };
    let mut sims = Vec::new();
    let mut daemons = Vec::new();
    for drone in DRONES {
        let (sim, port) = start_sim(&[]);
        let config = drone_config(&broker, drone, port);
        let text = std::fs::read_to_string(&config).unwrap().replace(
            &format!("port = {}\n", broker.port()),
            &format!("port = {drone_port}\n"),
        );
        std::fs::write(&config, text).unwrap();
        let mut daemon = flight_companion("daemon", &["run", "--config", &config]);
        daemon.wait_for_line("flight-companion ready", WAIT);
        sims.push(sim);
        daemons.push(daemon);
    }
    Stack {
        broker,
        edge,
        sims,
        daemons,
    }
}

/// A ground.toml with a fleet token of `role`.
fn ground_config(stack: &Stack, role: &str) -> String {
    let subject = format!("fleet-{}", role.to_lowercase());
    let token = fleet_token_as(&stack.broker, role, &subject);
    let text = std::fs::read_to_string(stack.broker.dev.path("ground.toml"))
        .unwrap()
        .replace("tokens/operator.jwt", &token);
    let path = stack.broker.dev.path(&format!("ground-{subject}.toml"));
    std::fs::write(&path, text).unwrap();
    s(&path).to_owned()
}

/// The bench through `stack`'s ground bridge to the first drone; its JSON.
fn bench(stack: &Stack) -> Value {
    let config = ground_config(stack, "ADMIN");
    let mut command = Command::new(python());
    command
        .arg(peer("fleet_bench.py"))
        .args([
            s(&binary()),
            &config,
            "--fleet",
            "fleet/#",
            "--drone",
            DRONES[0].0,
        ])
        .args(["-n", &bench_calls().to_string()])
        .arg("--pid")
        .arg(format!("daemon={}", stack.daemons[0].child.id()));
    if let Some(p) = stack.broker.proc.as_ref() {
        command
            .arg("--pid")
            .arg(format!("ground_broker={}", p.child.id()));
    }
    if let Some(edge) = &stack.edge {
        command
            .arg("--pid")
            .arg(format!("edge_broker={}", edge.child.id()));
    }
    let mut client = Proc::spawn("fleet bench", command);
    let code = client.wait_exit(Duration::from_secs(120));
    let output = client.output();
    assert_eq!(code, Some(0), "fleet bench failed:\n{output}");
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("bench: "))
        .unwrap_or_else(|| panic!("no bench line in:\n{output}"));
    serde_json::from_str(line).unwrap()
}

/// The official SDK's fleet checks (`ground_fleet`'s) through `stack`.
fn fleet_checks(stack: &mut Stack) {
    let config = ground_config(stack, "OPERATOR");
    let victim = stack.daemons[2].child.id();
    let mut command = Command::new(python());
    command
        .arg(peer("fleet_sdk_client.py"))
        .args([s(&binary()), &config, "--fleet", "fleet/#"])
        .args(DRONES.iter().flat_map(|(name, _)| ["--drone", name]))
        .args(["--fly", DRONES[0].0, "--fly", DRONES[1].0])
        .arg("--kill")
        .arg(format!("{}={victim}", DRONES[2].0));
    let mut client = Proc::spawn("fleet client", command);
    let code = client.wait_exit(Duration::from_secs(90));
    let output = client.output();
    if code != Some(0) {
        if let Some(edge) = stack.edge.as_mut() {
            eprintln!("--- edge broker:\n{}", edge.output());
        }
        for d in &mut stack.daemons {
            eprintln!("--- daemon:\n{}", d.output());
        }
    }
    assert_eq!(code, Some(0), "fleet client failed:\n{output}");
    assert!(output.contains("ok: all checks passed"), "{output}");
    for line in output.lines().filter(|l| l.starts_with("ok: ")) {
        eprintln!("bridged: {line}");
    }
}

#[test]
fn ground_topology_fleet_through_bridged_mosquittos_and_round_trips_against_one_broker() {
    let single = {
        let stack = start_stack("topo-single", false);
        let figures = bench(&stack);
        drop(stack);
        figures
    };
    let mut bridged = start_stack("topo-bridged", true);
    let figures = bench(&bridged);
    fleet_checks(&mut bridged);
    // The simulators and the edge broker live until here (dropped with the stack).
    let _ = (&bridged.sims, &bridged.edge);
    for phase in ["get_status", "emergency_stop"] {
        let p50 = |v: &Value| v[phase]["p50_ms"].as_f64().unwrap();
        let p99 = |v: &Value| v[phase]["p99_ms"].as_f64().unwrap();
        eprintln!(
            "topology {phase}: single p50 {:.2} ms p99 {:.2} ms; bridged p50 {:.2} ms p99 {:.2} ms; ratio p50 {:.2} p99 {:.2}",
            p50(&single),
            p99(&single),
            p50(&figures),
            p99(&figures),
            p50(&figures) / p50(&single),
            p99(&figures) / p99(&single),
        );
    }
    eprintln!("topology single: {single}");
    eprintln!("topology bridged: {figures}");
}
