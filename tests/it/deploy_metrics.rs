//! The metrics endpoint of a daemon flying against the simulator, scraped over HTTP and
//! parsed by the Prometheus project's own text parser (prometheus_client, pinned).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon_sim::start_sim;
use crate::support::{flight_companion, free_tcp_port, peer, python};

/// `GET path` on loopback; returns the status code and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

fn parse_with_prometheus_client(text: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(peer("parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name}"))
}

fn value(family: &Value, sample: &str, label: Option<(&str, &str)>) -> f64 {
    family["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == sample && label.is_none_or(|(k, v)| s["labels"][k] == v))
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no sample {sample} {label:?} in {family}"))
}

#[test]
fn metrics_endpoint_parses_with_prometheus_client_and_follows_the_naming_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, endpoint) = start_sim(&["--link", "tcpin:127.0.0.1:0", "--speedup", "4"]);
    // A CPU above the hot threshold, through a fake thermal zone.
    let thermal = dir.path().join("temp");
    std::fs::write(&thermal, "81250\n").unwrap();
    let port = free_tcp_port();
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[vehicle]\nlink = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
             [health]\ncpu_temperature_path = \"{}\"\ncpu_temperature_interval_ms = 100\n",
            endpoint.replace("tcpin", "tcpout"),
            thermal.display()
        ),
    )
    .unwrap();
    let mut daemon = flight_companion("daemon", &["run", "--config", config.to_str().unwrap()]);
    daemon.wait_for_line(
        &format!("metrics on http://127.0.0.1:{port}/metrics"),
        Duration::from_secs(10),
    );
    daemon.wait_for_line("autopilot found", Duration::from_secs(10));

    // Telemetry flows at the requested rate: wait until the status shows frames.
    let deadline = Instant::now() + Duration::from_secs(10);
    let families = loop {
        let (code, text) = http_get(port, "/metrics");
        assert_eq!(code, 200, "{text}");
        let families = parse_with_prometheus_client(&text);
        let frames = value(
            family(&families, "flight_companion_mavlink_frames_received"),
            "flight_companion_mavlink_frames_received_total",
            None,
        );
        if frames > 20.0 || Instant::now() > deadline {
            break families;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    // Conventions: a prefix, counters end in _total, histograms in _seconds, units named.
    for f in &families {
        let name = f["name"].as_str().unwrap();
        assert!(
            name.starts_with("flight_companion_") || name.starts_with("process_"),
            "{name}"
        );
        assert!(
            !f["documentation"].as_str().unwrap().is_empty(),
            "{name} has HELP"
        );
        for s in f["samples"].as_array().unwrap() {
            let sample = s["name"].as_str().unwrap();
            match f["type"].as_str().unwrap() {
                "counter" => assert!(sample.ends_with("_total"), "counter sample {sample}"),
                "histogram" => assert!(name.ends_with("_seconds"), "histogram {name}"),
                "gauge" => assert!(!sample.ends_with("_total"), "gauge {sample}"),
                other => panic!("unexpected type {other} of {name}"),
            }
        }
    }
    let expect = [
        ("flight_companion_autopilot_link_up", "gauge"),
        ("flight_companion_mavlink_frames_lost", "counter"),
        ("flight_companion_mavlink_loss_ratio", "gauge"),
        ("flight_companion_mcp_tool_calls", "counter"),
        (
            "flight_companion_mcp_tool_call_duration_seconds",
            "histogram",
        ),
        ("flight_companion_envelope_refusals", "counter"),
        ("flight_companion_estops", "counter"),
        ("flight_companion_failsafes", "counter"),
        ("flight_companion_mqtt_reconnects", "counter"),
        ("flight_companion_security_events", "counter"),
        ("flight_companion_cpu_temperature_celsius", "gauge"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ];
    for (name, kind) in expect {
        assert_eq!(family(&families, name)["type"], kind, "{name}");
    }
    let up = family(&families, "flight_companion_autopilot_link_up");
    assert_eq!(value(up, "flight_companion_autopilot_link_up", None), 1.0);
    let frames = family(&families, "flight_companion_mavlink_frames_received");
    assert!(
        value(
            frames,
            "flight_companion_mavlink_frames_received_total",
            None
        ) > 20.0
    );
    let temperature = family(&families, "flight_companion_cpu_temperature_celsius");
    assert_eq!(
        value(
            temperature,
            "flight_companion_cpu_temperature_celsius",
            None
        ),
        81.25
    );
    let alerts = family(&families, "flight_companion_alert_active");
    assert_eq!(
        value(
            alerts,
            "flight_companion_alert_active",
            Some(("alert", "cpu_hot"))
        ),
        1.0
    );
    let memory = family(&families, "process_resident_memory_bytes");
    assert!(value(memory, "process_resident_memory_bytes", None) > 1e6);

    // /health: degraded (hot CPU), with the reason.
    let (code, body) = http_get(port, "/health");
    assert_eq!(code, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["state"], "degraded", "{health}");
    assert!(
        health["reasons"][0]
            .as_str()
            .unwrap()
            .contains("CPU at 81.2"),
        "{health}"
    );
    assert_eq!(http_get(port, "/nope").0, 404);

    // The CPU cools below the hysteresis band: the alert clears.
    std::fs::write(&thermal, "60000\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = http_get(port, "/health");
        let health: Value = serde_json::from_str(&body).unwrap();
        if health["state"] == "healthy" {
            assert_eq!(health["alerts"]["cpu_hot"], false);
            assert_eq!(health["recent_alerts"][0]["alert"], "cpu_hot");
            break;
        }
        assert!(Instant::now() < deadline, "still {health}");
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(3)), Some(0));
    let output = daemon.output();
    // Once in the journal, on the rising edge only.
    assert_eq!(
        output.matches("alert: CPU hot: 81.2 °C").count(),
        1,
        "{output}"
    );
}
