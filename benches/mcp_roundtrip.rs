//! Benchmark (not a test): the MCP `tools/call get_status` round trip through the broker with
//! the raw Rust client (`hil::client`, on the product's own MQTT connection `mcp::mqtt`:
//! rumqttc, mTLS, TCP_NODELAY), with 1 and 10 concurrent clients, next to a bare MQTT
//! publish -> echo -> reply round trip on the same broker, identities and topics.
//!
//! Needs a running broker and daemon (BENCHMARKS.md has the commands), then:
//! `cargo bench --bench mcp_roundtrip -- --config DIR/ground.toml [--calls 2000]`.
//! Every connection has its own certificate, issued by the dev CA beside `ground.toml` on
//! first use (`hil::bench::identity`); the echo is `bench-echo`, which dev-setup's ACL
//! lets answer on the drone's RPC topics' `bench-ping`/`bench-pong` leaves only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flight_companion::ground::config::GroundConfig;
use flight_companion::hil::bench::{
    ECHO_IDENTITY, discover, echo_base, identity, percentiles, serve_echo, session, tool_result,
};
use flight_companion::hil::client::{MqttConn, TIMEOUT};
use flight_companion::mcp::transport::ComponentType;
use serde_json::json;
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

/// The ground token named by `ground.token_path`, if any (the daemon refuses sessions
/// without one when `[auth]` has keys, as dev-setup's configuration does).
fn token_of(ground: &GroundConfig) -> anyhow::Result<Option<String>> {
    ground
        .ground
        .token_path
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|t| t.trim().to_owned())
                .with_context(|| format!("ground.token_path {}", p.display()))
        })
        .transpose()
}

const WARMUP_CALLS: usize = 20;

/// One initialized MCP session calling `get_status` sequentially.
async fn mcp_worker(
    ground: GroundConfig,
    who: String,
    sid: String,
    name: String,
    calls: usize,
    start: Arc<Barrier>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let token = token_of(&ground)?;
    let mut client = session(&ground, &who, &sid, &name, token.as_deref(), &stop).await?;
    let mut samples = Vec::with_capacity(calls + WARMUP_CALLS);
    for i in 0..calls + WARMUP_CALLS {
        if i == WARMUP_CALLS {
            start.wait().await;
        }
        let (id, call) =
            client.request_message("tools/call", json!({"name": "get_status", "arguments": {}}));
        let started = Instant::now();
        client.send(&call).await?;
        let result = client.answer(id, "get_status", &mut |_| {}).await?;
        samples.push(started.elapsed());
        tool_result("get_status", result)?;
    }
    Ok(samples.split_off(WARMUP_CALLS))
}

/// Bare MQTT on the same topics: publish `.../bench-ping`, the echo answers `.../bench-pong`.
async fn echo_worker(
    ground: GroundConfig,
    who: String,
    sid: String,
    calls: usize,
    start: Arc<Barrier>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let mqtt = identity(&ground.mqtt, &who)?;
    let mut conn = MqttConn::open(&mqtt, ComponentType::Client, "bench ping", &stop).await?;
    let base = echo_base(&ground, &conn.id, &sid);
    conn.subscribe(format!("{base}/bench-pong"), true).await?;
    let mut samples = Vec::with_capacity(calls + WARMUP_CALLS);
    for i in 0..calls + WARMUP_CALLS {
        if i == WARMUP_CALLS {
            start.wait().await;
        }
        let started = Instant::now();
        conn.publish(
            format!("{base}/bench-ping"),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec(),
        )
        .await?;
        conn.receive(|t, _| t.ends_with("/bench-pong")).await?;
        samples.push(started.elapsed());
    }
    Ok(samples.split_off(WARMUP_CALLS))
}

fn row(name: &str, clients: usize, samples: &mut [Duration], wall: Duration) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let Some((p50, p99, max)) = percentiles(samples) else {
        return;
    };
    println!(
        "{name:<34} {clients:>7} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>11.0}",
        samples.len(),
        ms(p50),
        ms(p99),
        ms(max),
        samples.len() as f64 / wall.as_secs_f64()
    );
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; without --config there is nothing to measure.
    let Some(config) = arg(&args, "--config") else {
        eprintln!(
            "mcp_roundtrip: pass `-- --config DIR/ground.toml` (see BENCHMARKS.md); nothing measured"
        );
        return Ok(());
    };
    let calls: usize = arg(&args, "--calls")
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(2000);
    let config = PathBuf::from(config);
    let ground = GroundConfig::load(&config)?;
    let echo_identity = identity(&ground.mqtt, ECHO_IDENTITY)?;
    let stop = CancellationToken::new();
    let (sid, name) = discover(&ground, &stop).await?;
    println!(
        "# drone {name} (server id {sid}) at {}:{}; Rust clients (hil::client, rumqttc via mcp::mqtt)",
        ground.mqtt.host, ground.mqtt.port
    );
    println!(
        "{:<34} {:>7} {:>6} {:>8} {:>8} {:>8} {:>11}",
        "scenario", "clients", "calls", "p50_ms", "p99_ms", "max_ms", "calls_per_s"
    );
    let echo = tokio::spawn(serve_echo(
        echo_identity,
        ground.ground.rpc_topic_root.clone(),
        sid.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for clients in [1usize, 10] {
        let each = (calls / clients).max(1);
        for bare in [false, true] {
            // Every client connects and warms up, then all start timing together.
            let start = Arc::new(Barrier::new(clients + 1));
            // The scenario's connections close when it ends: one left open would be taken
            // over by the next scenario's client of the same name, and take it back.
            let scenario = stop.child_token();
            // One identity per connection (the broker takes the CN as client id), and per
            // scenario; issued here, one after the other: the dev CA's index is one file.
            let names = (0..clients)
                .map(|i| {
                    let who = format!("bench-{}-{clients}-{i}", if bare { "ping" } else { "mcp" });
                    identity(&ground.mqtt, &who).map(|_| who)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let tasks: Vec<_> = names
                .into_iter()
                .map(|who| {
                    let (g, s, n, b, st) = (
                        ground.clone(),
                        sid.clone(),
                        name.clone(),
                        start.clone(),
                        scenario.clone(),
                    );
                    tokio::spawn(async move {
                        if bare {
                            echo_worker(g, who, s, each, b, st).await
                        } else {
                            mcp_worker(g, who, s, n, each, b, st).await
                        }
                    })
                })
                .collect();
            if tokio::time::timeout(TIMEOUT, start.wait()).await.is_err() {
                // A client that failed before the barrier never reaches it: say why, not
                // only that the barrier timed out.
                for t in tasks.into_iter().filter(|t| t.is_finished()) {
                    t.await?.context("a client failed while getting ready")?;
                }
                anyhow::bail!("clients did not get ready within {TIMEOUT:?}");
            }
            let started = Instant::now();
            let mut samples = Vec::new();
            for t in tasks {
                samples.extend(t.await??);
            }
            let wall = started.elapsed();
            scenario.cancel();
            let label = if bare {
                "bare mqtt publish->echo->reply"
            } else {
                "mcp tools/call get_status"
            };
            row(label, clients, &mut samples, wall);
        }
    }
    stop.cancel();
    let _ = echo.await;
    Ok(())
}
