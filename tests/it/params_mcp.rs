//! The parameter tools over MCP through Mosquitto (mTLS) against the simulator: the daemon's
//! cached download of the whole table, and `set_parameter` allowed, out of bounds, not
//! allowlisted, never-write, and from a READ_ONLY caller — each a test. Writes are checked
//! on the simulator's own side through the harness's ground-station link.

use std::time::Duration;

use serde_json::{Value, json};

use crate::flight_rig::{Rig, RigSetup};
use crate::mcp_client::{TestClient, wait_online};

/// `LOIT_SPEED` (ArduCopter, cm/s) and `MPC_XY_CRUISE` (PX4, m/s) writable within bounds.
const ALLOW: &str = "[[parameters.allow]]\n\
                     name = \"LOIT_SPEED\"\n\
                     min = 200.0\n\
                     max = 1500.0\n\
                     \n\
                     [[parameters.allow]]\n\
                     name = \"MPC_XY_CRUISE\"\n\
                     min = 1.0\n\
                     max = 8.0\n";

async fn rig(tag: &str, px4: bool) -> Rig {
    let mut rig = Rig::start_setup(
        tag,
        RigSetup {
            px4,
            sections: ALLOW,
            ..RigSetup::default()
        },
    )
    .await;
    // The whole table is downloaded at link-up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (r, _) = rig.tool("list_parameters", json!({"prefix": "ZZZ"})).await;
        let download = &r["structuredContent"]["download"];
        if download["state"] == "complete" {
            assert_eq!(download["received"], download["count"], "{r}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig
}

async fn call(client: &mut TestClient, name: &str, arguments: Value) -> Value {
    let (r, _) = client
        .call("tools/call", json!({"name": name, "arguments": arguments}))
        .await;
    r
}

fn text(r: &Value) -> String {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn read_only_client(rig: &Rig, tag: &str) -> TestClient {
    let mut client = TestClient::connect(rig.broker(), &format!("reader-{tag}")).await;
    client.token = std::fs::read_to_string(rig.broker().dev.path("tokens/read_only.jwt"))
        .ok()
        .map(|t| t.trim().to_owned());
    wait_online(&mut client).await;
    client.initialize("2025-11-25").await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_set_parameter_allowed_is_confirmed_and_audited() {
    let mut rig = rig("params-allowed", false).await;
    let mut admin = rig.admin_client("params-allowed").await;
    let r = call(
        &mut admin,
        "set_parameter",
        json!({"name": "LOIT_SPEED", "value": 800}),
    )
    .await;
    let result = &r["result"]["structuredContent"];
    assert_eq!(
        (result["old_value"].as_f64(), result["new_value"].as_f64()),
        (Some(1250.0), Some(800.0)),
        "{r}"
    );
    // The table follows the autopilot's echo.
    let (got, _) = rig
        .tool("get_parameter", json!({"name": "LOIT_SPEED"}))
        .await;
    assert_eq!(
        got["structuredContent"]["parameter"]["value"], 800.0,
        "{got}"
    );
    let dir = rig.broker().dev.path("state/audit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let records: Vec<Value> = flight_companion::audit::tail_command(&dir, usize::MAX, true)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let audited = records.iter().any(|r| {
            r["event"]["Safety"]["kind"] == "parameter_set"
                && r["event"]["Safety"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("LOIT_SPEED: 1250 -> 800"))
        });
        if audited {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no parameter_set record: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_set_parameter_px4_allowed_within_the_envelope() {
    let mut rig = rig("params-px4", true).await;
    let mut admin = rig.admin_client("params-px4").await;
    let r = call(
        &mut admin,
        "set_parameter",
        json!({"name": "MPC_XY_CRUISE", "value": 4.0}),
    )
    .await;
    assert_eq!(r["result"]["structuredContent"]["new_value"], 4.0, "{r}");
    let (got, _) = rig
        .tool("get_parameter", json!({"name": "MPC_XY_CRUISE"}))
        .await;
    assert_eq!(got["structuredContent"]["parameter"]["value"], 4.0, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_set_parameter_out_of_bounds_is_refused_with_the_bounds() {
    let mut rig = rig("params-bounds", false).await;
    let mut admin = rig.admin_client("params-bounds").await;
    let r = call(
        &mut admin,
        "set_parameter",
        json!({"name": "LOIT_SPEED", "value": 2000}),
    )
    .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let why = text(&r);
    assert!(
        why.contains("200..1500") && why.contains("nothing was sent"),
        "{why}"
    );
    let (got, _) = rig
        .tool("get_parameter", json!({"name": "LOIT_SPEED"}))
        .await;
    assert_eq!(
        got["structuredContent"]["parameter"]["value"], 1250.0,
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_set_parameter_not_allowlisted_names_what_is() {
    let rig = rig("params-unlisted", false).await;
    let mut admin = rig.admin_client("params-unlisted").await;
    let r = call(
        &mut admin,
        "set_parameter",
        json!({"name": "RTL_CONE_SLOPE", "value": 2.0}),
    )
    .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let why = text(&r);
    assert!(
        why.contains("not in the parameter allowlist") && why.contains("LOIT_SPEED 200..1500"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_set_parameter_never_write_stays_closed() {
    let rig = rig("params-never", false).await;
    let mut admin = rig.admin_client("params-never").await;
    for name in ["FENCE_ENABLE", "ARMING_CHECK", "FS_GCS_ENABLE"] {
        let r = call(
            &mut admin,
            "set_parameter",
            json!({"name": name, "value": 0}),
        )
        .await;
        assert_eq!(r["result"]["isError"], true, "{r}");
        assert!(text(&r).contains("never writable"), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_read_only_caller_reads_but_may_not_write() {
    let rig = rig("params-reader", false).await;
    let mut reader = read_only_client(&rig, "params-reader").await;
    let r = call(
        &mut reader,
        "list_parameters",
        json!({"prefix": "WPNAV_", "limit": 2}),
    )
    .await;
    let listed = &r["result"]["structuredContent"];
    assert_eq!(
        listed["parameters"].as_array().map(Vec::len),
        Some(2),
        "{r}"
    );
    assert!(listed["matched"].as_u64().unwrap_or(0) >= 4, "{r}");
    assert!(
        listed["writable"]
            .as_array()
            .is_some_and(|w| w.iter().any(|a| a["name"] == "LOIT_SPEED")),
        "{r}"
    );
    let r = call(&mut reader, "get_parameter", json!({"name": "RTL_ALT"})).await;
    assert_eq!(
        r["result"]["structuredContent"]["parameter"]["value"], 1500.0,
        "{r}"
    );
    let r = call(
        &mut reader,
        "set_parameter",
        json!({"name": "LOIT_SPEED", "value": 800}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32003, "READ_ONLY may not: {r}");
}
