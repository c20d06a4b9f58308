//! `flight-companion ground --fleet`: three simulators, three daemons with their own server
//! names, certificates and ACL entries on one mTLS Mosquitto, and one fleet bridge driven by
//! the official MCP Python SDK (`tests/peers/fleet_sdk_client.py`).

use std::process::Command;
use std::time::Duration;

use crate::ground_bridge::WAIT;
use crate::support::broker::{Broker, s};
use crate::support::{Proc, binary, flight_companion, peer, python};

/// The fleet's drones: (server name, server id = certificate CN).
pub(crate) const DRONES: [(&str, &str); 3] = [
    ("fleet/alpha", "drone-alpha"),
    ("fleet/bravo", "drone-bravo"),
    ("fleet/charlie", "drone-charlie"),
];

/// dev-setup's ACL block of its drone, repeated for every fleet drone (identity, server
/// name), appended to the broker's ACL file; the broker is restarted to read it.
pub(crate) fn add_drones_to_acl(broker: &mut Broker) {
    let path = broker.dev.path("acl");
    let acl = std::fs::read_to_string(&path).unwrap();
    let block: Vec<&str> = acl
        .lines()
        .skip_while(|l| *l != "user drone-1")
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(
        block.len() > 3,
        "no drone block in the dev-setup ACL:\n{acl}"
    );
    let mut text = acl.clone();
    for (name, id) in DRONES {
        text.push('\n');
        for line in &block {
            text.push_str(
                &line
                    .replace("drone-1", id)
                    .replace("flight-companion/drone", name),
            );
            text.push('\n');
        }
        text.push_str(&format!("pattern write $mcp-server/{id}/{name}\n"));
    }
    std::fs::write(&path, text).unwrap();
    broker.restart();
}

/// dev-setup's drone.toml for one fleet drone: its simulator, certificate, server id and
/// name, the fleet audience, and its own state files (same directory, so relative paths hold).
pub(crate) fn drone_config(broker: &Broker, (name, id): (&str, &str), port: u16) -> String {
    let (cert, key) = broker.dev.identity(id);
    let text = std::fs::read_to_string(broker.dev.path("drone.toml")).unwrap();
    let tail = id.trim_start_matches("drone-");
    let mut out = String::new();
    for line in text.lines() {
        let line = match line {
            l if l.starts_with("link = ") => format!("link = \"tcpout:127.0.0.1:{port}\""),
            l if l.starts_with("client_cert_path") => format!("client_cert_path = \"{cert}\""),
            l if l.starts_with("client_key_path") => format!("client_key_path = \"{key}\""),
            l if l.starts_with("server_id") => {
                format!("server_id = \"{id}\"\nserver_name = \"{name}\"")
            }
            "[auth]" => "[auth]\nfleet = \"fleet\"".to_owned(),
            l if l.contains("\"state/") => l.replace("\"state/", &format!("\"state/{tail}-")),
            l => l.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let path = broker.dev.path(&format!("drone-{tail}.toml"));
    std::fs::write(&path, out).unwrap();
    s(&path).to_owned()
}

/// An OPERATOR token for the whole fleet (`aud` = the daemons' `auth.fleet`).
/// A simulator at 5× on an ephemeral TCP port with its EKF ready after a second (plus
/// `extra` arguments), and the port it serves; the fleet tests start one per drone.
pub fn start_sim(extra: &[&str]) -> (Proc, u16) {
    let mut args = vec![
        "sim",
        "--speedup",
        "5",
        "--link",
        "tcpin:127.0.0.1:0",
        "--ekf-ready-s",
        "1",
    ];
    args.extend_from_slice(extra);
    let mut sim = flight_companion("sim", &args);
    let line = sim.wait_for_line("sim: serving tcpin:127.0.0.1:", WAIT);
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    (sim, port)
}

fn fleet_token(broker: &Broker) -> String {
    fleet_token_as(broker, "OPERATOR", "fleet-operator")
}

/// A token of `role` for the whole fleet, for `subject`.
pub(crate) fn fleet_token_as(broker: &Broker, role: &str, subject: &str) -> String {
    let output = Command::new(binary())
        .args(["token", "issue", "--key"])
        .arg(broker.dev.path("keys/ground-key.key"))
        .args(["--role", role, "--subject", subject])
        .args(["--audience", "fleet", "--ttl", "1h"])
        .output()
        .expect("token issue");
    assert!(output.status.success(), "{output:?}");
    let path = broker.dev.path(&format!("tokens/fleet-{subject}.jwt"));
    std::fs::write(&path, &output.stdout).unwrap();
    s(&path).to_owned()
}

#[test]
fn ground_fleet_three_drones_two_flown_at_once_all_stopped_one_killed() {
    let mut broker = Broker::start("fleet");
    add_drones_to_acl(&mut broker);
    let mut sims = Vec::new();
    let mut daemons = Vec::new();
    for drone in DRONES {
        let (sim, port) = start_sim(&[]);
        let config = drone_config(&broker, drone, port);
        let mut daemon = flight_companion("daemon", &["run", "--config", &config]);
        daemon.wait_for_line("flight-companion ready", WAIT);
        sims.push(sim);
        daemons.push(daemon);
    }
    let token = fleet_token(&broker);
    let ground = broker.dev.path("ground.toml");
    let text = std::fs::read_to_string(&ground)
        .unwrap()
        .replace("tokens/operator.jwt", &token);
    let config = broker.dev.path("ground-fleet.toml");
    std::fs::write(&config, text).unwrap();

    let victim = daemons[2].child.id();
    let mut command = Command::new(python());
    command
        .arg(peer("fleet_sdk_client.py"))
        .args([s(&binary()), s(&config), "--fleet", "fleet/#"])
        .args(DRONES.iter().flat_map(|(name, _)| ["--drone", name]))
        .args(["--fly", DRONES[0].0, "--fly", DRONES[1].0])
        .arg("--kill")
        .arg(format!("{}={victim}", DRONES[2].0));
    let mut client = Proc::spawn("fleet client", command);
    let code = client.wait_exit(Duration::from_secs(90));
    let output = client.output();
    if code != Some(0) {
        for (d, (name, _)) in daemons.iter_mut().zip(DRONES) {
            eprintln!("--- daemon {name}:\n{}", d.output());
        }
    }
    assert_eq!(code, Some(0), "fleet client failed:\n{output}");
    for check in [
        "ok: list_drones -> fleet/alpha, fleet/bravo, fleet/charlie, all online",
        "ok: tools/list: the drones' tools with a required `drone` argument",
        "ok: a call to an unknown drone is refused",
        "ok: flew fleet/alpha and fleet/bravo at once, progress from both",
        "ok: list_drones names each flown drone's lease holder",
        "ok: emergency_stop_all latched all 3 within",
        "ok: fleet/charlie killed with SIGKILL -> offline in list_drones",
        "ok: notifications/tools/list_changed when it went",
        "ok: fleet/charlie's tools report it offline",
        "ok: all checks passed",
    ] {
        assert!(output.contains(check), "missing {check:?} in:\n{output}");
    }
}
