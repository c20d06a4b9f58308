//! A stable-toolchain fuzz driver for the frame decoder (cargo fuzz needs nightly).
//!
//! `cargo run --release -p fwbridge-protocol --example fuzz_decoder -- [INPUTS] [SEED]`
//!
//! Each input is built from valid frames by a random mix of mutations (bit flips, byte
//! overwrites, insertions, deletions, truncation, gluing, duplicated or dropped delimiters,
//! pure random bytes) and fed to a fresh decoder. Checked on every input: no panic; the
//! counters agree with what was returned; every decoded message re-encodes to a frame that
//! decodes to itself. Prints the totals; exits non-zero on the first violation.

use fwbridge_protocol::*;

/// xorshift64*: deterministic for a seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn random_message(rng: &mut Rng) -> Message {
    let source = if rng.next() & 1 == 0 {
        EstopSource::Switch
    } else {
        EstopSource::CompanionSilent
    };
    let seq = rng.next() as u32;
    match rng.below(7) {
        0 => Message::Hello(Hello {
            role: if rng.next() & 1 == 0 {
                Role::Companion
            } else {
                Role::Mcu
            },
            protocol_version: rng.next() as u16,
            schema_hash: rng.next() as u32,
            software_version: [rng.next() as u16, rng.next() as u16, rng.next() as u16],
            watchdog_ms: rng.next() as u32,
        }),
        1 => Message::CompanionHeartbeat(CompanionHeartbeat {
            seq,
            uptime_ms: rng.next() as u32,
            armed: rng.next() & 1 == 0,
        }),
        2 => Message::McuHeartbeat(McuHeartbeat {
            seq,
            uptime_ms: rng.next() as u32,
            switch: [SwitchState::Unknown, SwitchState::Closed, SwitchState::Open][rng.below(3)],
            output: [OutputState::Released, OutputState::Asserted][rng.below(2)],
            latched: [None, Some(source)][rng.below(2)],
            companion: [
                CompanionLink::NotYetHeard,
                CompanionLink::Healthy,
                CompanionLink::Lost,
            ][rng.below(3)],
        }),
        3 => Message::EstopAsserted { seq, source },
        4 => Message::EstopReleased { seq, source },
        5 => Message::ReleaseRequest { seq },
        _ => Message::Ack(Ack {
            seq,
            kind: AckedKind::ReleaseRequest,
            result: AckResult::Refused(RefuseReason::CompanionNotHealthy),
        }),
    }
}

fn make_input(rng: &mut Rng, out: &mut Vec<u8>) {
    out.clear();
    if rng.below(8) == 0 {
        let n = rng.below(300);
        out.extend((0..n).map(|_| rng.next() as u8));
        return;
    }
    for _ in 0..1 + rng.below(6) {
        let frame = encode(&random_message(rng)).expect("every message encodes");
        out.extend_from_slice(&frame);
    }
    for _ in 0..rng.below(5) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(7) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = rng.next() as u8,
            2 => out.insert(at, rng.next() as u8),
            3 => {
                out.remove(at);
            }
            4 => out.truncate(at),
            5 => out.insert(at, 0),
            _ => {
                let n = rng.below(100);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, junk);
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let inputs: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0x5eed);
    let mut rng = Rng(seed | 1);
    let mut input = Vec::new();
    let mut total = DecoderStats::default();
    let mut bytes: u64 = 0;
    let started = std::time::Instant::now();
    for i in 0..inputs {
        make_input(&mut rng, &mut input);
        bytes += input.len() as u64;
        let mut decoder = FrameDecoder::new();
        let mut ok = 0u32;
        let mut errors = 0u32;
        for result in decoder.feed(&input) {
            match result {
                Ok(message) => {
                    ok += 1;
                    let again = encode(&message).expect("a decoded message re-encodes");
                    let mut check = FrameDecoder::new();
                    let back: Vec<_> = check.feed(&again).collect();
                    if back != [Ok(message)] {
                        eprintln!("input {i} (seed {seed}): {message:?} does not round-trip");
                        std::process::exit(1);
                    }
                }
                Err(_) => errors += 1,
            }
        }
        let stats = decoder.stats();
        if stats.frames_ok != ok || stats.errors() != errors {
            eprintln!(
                "input {i} (seed {seed}): counters disagree: {stats:?} vs {ok} ok, {errors} errors"
            );
            std::process::exit(1);
        }
        total.frames_ok += stats.frames_ok;
        total.oversize += stats.oversize;
        total.cobs_errors += stats.cobs_errors;
        total.too_short += stats.too_short;
        total.crc_errors += stats.crc_errors;
        total.malformed += stats.malformed;
    }
    println!(
        "fuzz_decoder: {inputs} inputs, {bytes} bytes, seed {seed}, {:.1} s: no panic, no violation; \
         frames ok {}, crc errors {}, cobs errors {}, too short {}, malformed {}, oversize {}",
        started.elapsed().as_secs_f64(),
        total.frames_ok,
        total.crc_errors,
        total.cobs_errors,
        total.too_short,
        total.malformed,
        total.oversize
    );
}
