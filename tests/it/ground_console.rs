//! The web console of `flight-companion ground --fleet ... --console`: the three-drone stack
//! of `ground_fleet` (three simulators at homes 50 m apart, three daemons, one mTLS
//! Mosquitto), the ground process with an ADMIN token and no stdio client, and Debian's
//! headless Chromium driven over the DevTools protocol (`tests/peers/console_browser.py`):
//! the map, a STOP press, the two-step reset, STOP ALL, each checked in the page and in the
//! daemons' own status. Screenshots go to the test's directory, and to `docs/console/` with
//! `FC_CONSOLE_SCREENSHOTS=docs/console`.

use std::process::Command;
use std::time::Duration;

use crate::ground_bridge::WAIT;
use crate::ground_fleet::{DRONES, add_drones_to_acl, drone_config, fleet_token_as, start_sim};
use crate::support::broker::{Broker, s};
use crate::support::{Proc, binary, flight_companion, flight_companion_env, peer, python};

/// Simulator homes (north, east metres from the dev home): apart, inside the dev field, clear
/// of its keep-out 60 m east.
const OFFSETS_M: [(f64, f64); 3] = [(0.0, 0.0), (50.0, 0.0), (-40.0, -50.0)];
const HOME: (f64, f64, f64) = (47.397742, 8.545594, 488.0);

#[test]
fn ground_console_in_headless_chromium_map_stop_reset_stop_all() {
    let chromium = which("chromium").expect("Debian's chromium (tests/setup installs it)");
    let mut broker = Broker::start("console");
    add_drones_to_acl(&mut broker);
    let runtime = tempfile::tempdir().unwrap();
    let mut sims = Vec::new();
    let mut daemons = Vec::new();
    let mut statuses = Vec::new();
    for (drone, (north, east)) in DRONES.into_iter().zip(OFFSETS_M) {
        let lat = HOME.0 + north / 111_195.0;
        let lon = HOME.1 + east / (111_195.0 * HOME.0.to_radians().cos());
        let home = format!("{lat:.7},{lon:.7},{}", HOME.2);
        let (sim, port) = start_sim(&["--home", &home]);
        let config = drone_config(&broker, drone, port);
        if drone.0 == DRONES[0].0 {
            // One drone with the synthetic camera: the console shows its last picture.
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str(
                "\n[camera]\nenabled = true\nwidth_px = 320\nheight_px = 240\nframe_rate_hz = 1.0\n\
                 image_width_px_default = 320\ncaptures_dir = \"captures-alpha\"\n",
            );
            std::fs::write(&config, text).unwrap();
        }
        let dir = runtime.path().join(drone.1);
        std::fs::create_dir_all(&dir).unwrap();
        let env = [("XDG_RUNTIME_DIR", s(&dir))];
        let mut daemon = flight_companion_env("daemon", &["run", "--config", &config], &env);
        daemon.wait_for_line("flight-companion ready", WAIT);
        statuses.push(format!("{}={}:{config}", drone.0, s(&dir)));
        sims.push(sim);
        daemons.push(daemon);
    }
    let token = fleet_token_as(&broker, "ADMIN", "console-admin");
    let text = std::fs::read_to_string(broker.dev.path("ground.toml"))
        .unwrap()
        .replace("tokens/operator.jwt", &token);
    let config = broker.dev.path("ground-console.toml");
    std::fs::write(&config, text).unwrap();
    let mut ground = flight_companion(
        "ground",
        &[
            "ground",
            "--config",
            s(&config),
            "--fleet",
            "fleet/#",
            "--console",
            "127.0.0.1:0",
        ],
    );
    let line = ground.wait_for_line("console: serving http://", WAIT);
    let url = line[line.find("http://").unwrap()..].trim().to_owned();

    let out = match std::env::var("FC_CONSOLE_SCREENSHOTS") {
        Ok(dir) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        Err(_) => broker.dev.path("screenshots"),
    };
    std::fs::create_dir_all(&out).unwrap();
    let mut command = Command::new(python());
    command
        .arg(peer("console_browser.py"))
        .args([
            "--url",
            &url,
            "--chromium",
            s(&chromium),
            "--binary",
            s(&binary()),
        ])
        .args([
            "--out",
            s(&out),
            "--stop",
            DRONES[1].0,
            "--camera",
            DRONES[0].0,
        ])
        .args(DRONES.iter().flat_map(|(name, _)| ["--drone", name]))
        .args(statuses.iter().flat_map(|st| ["--status", st.as_str()]));
    let mut client = Proc::spawn("console browser", command);
    let code = client.wait_exit(Duration::from_secs(120));
    let output = client.output();
    if code != Some(0) {
        eprintln!("--- ground:\n{}", ground.output());
    }
    assert_eq!(code, Some(0), "console browser failed:\n{output}");
    for check in [
        "ok: the map shows 3 vehicles inside their keep-in zones",
        "ok: each vehicle at its own place",
        "ok: every card shows its battery, link, lease and recent audit records",
        "ok: fleet/alpha's last camera picture shown",
        "ok: STOP fleet/bravo pressed -> its card and marker show the latched stop",
        "ok: fleet/bravo's daemon status latched; the others not",
        "ok: two-step reset (ADMIN) cleared fleet/bravo",
        "ok: STOP ALL -> 3 drones shown latched",
        "ok: all checks passed",
    ] {
        assert!(output.contains(check), "missing {check:?} in:\n{output}");
    }
    for shot in ["fleet.png", "stopped.png", "all-stopped.png"] {
        let bytes = std::fs::read(out.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is not a PNG");
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}
