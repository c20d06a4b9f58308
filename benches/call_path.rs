//! The in-process steps of one `tools/call get_status` that issue 17 changed, each against
//! the way it was done before, in the same run: the request into rmcp's types, the hex of the
//! arguments' digest, the audit record into its frame.
//! Run: `cargo bench --bench call_path`; figures in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flight_companion::audit::record::{self, Call, Event, Record};
use flight_companion::mcp::errors;
use rmcp::model::ClientJsonRpcMessage;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What the benchmark clients send (`hil::client`'s `tools/call`, with a progress token).
const REQUEST: &str = r#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"get_status","arguments":{},"_meta":{"progressToken":"p-41"}}}"#;

/// The hex of before: a `format!` per byte.
fn hex_per_byte_format(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The frame of before: the payload into a buffer of its own, then copied into the frame.
fn encode_with_copy(record: &Record) -> (Vec<u8>, [u8; 32]) {
    let payload = postcard::to_stdvec(record).unwrap();
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let mut frame = Vec::with_capacity(payload.len() + record::FRAME_OVERHEAD);
    frame.extend_from_slice(&len);
    frame.extend_from_slice(&payload);
    let mut check = Sha256::new();
    check.update(len);
    check.update(&payload);
    frame.extend_from_slice(&check.finalize()[..8]);
    (frame, record::hash(&payload))
}

fn call_record() -> Record {
    let (args_sha256, args) = Call::args_of("{}");
    Record {
        seq: 123_456,
        time_unix_ms: 1_796_000_000_000,
        prev: [7; 32],
        event: Event::Call(Call {
            session: "ground-client-0123456789".into(),
            subject: "operator-1".into(),
            role: "operator".into(),
            target: "tools/call:get_status".into(),
            request_id: "41".into(),
            args_sha256,
            args,
            decision: "allow".into(),
            reason: String::new(),
            outcome: "ok".into(),
            latency_us: 312,
        }),
    }
}

fn bench(c: &mut Criterion) {
    let record = call_record();
    let digest = Sha256::digest(b"{}");
    // The baselines must do the same work: the same bytes out.
    assert_eq!(hex_per_byte_format(&digest), record::hex(&digest));
    assert_eq!(encode_with_copy(&record), record::encode(&record).unwrap());
    let request: Value = serde_json::from_str(REQUEST).unwrap();
    let mut parse = c.benchmark_group("tools_call_into_rmcp");
    parse.bench_function(
        "check_value (tools/call straight to CallToolRequest)",
        |b| b.iter(|| black_box(errors::check_value(black_box(request.clone())))),
    );
    parse.bench_function("rmcp's untagged ClientJsonRpcMessage (before)", |b| {
        b.iter(|| {
            black_box(serde_json::from_value::<ClientJsonRpcMessage>(black_box(
                request.clone(),
            )))
        })
    });
    parse.finish();

    let mut hex = c.benchmark_group("hex_of_a_digest");
    hex.bench_function("table", |b| {
        b.iter(|| black_box(record::hex(black_box(&digest))))
    });
    hex.bench_function("format! per byte (before)", |b| {
        b.iter(|| black_box(hex_per_byte_format(black_box(&digest))))
    });
    hex.finish();

    let mut frame = c.benchmark_group("call_record_into_its_frame");
    frame.bench_function("encoded into the frame", |b| {
        b.iter(|| black_box(record::encode(black_box(&record)).unwrap()))
    });
    frame.bench_function("encoded, then copied (before)", |b| {
        b.iter(|| black_box(encode_with_copy(black_box(&record))))
    });
    frame.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
