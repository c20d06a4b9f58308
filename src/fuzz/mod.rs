//! Fuzzing on the stable toolchain (issue 21): every parser and deciding core that takes
//! input from outside (the autopilot, the ground, a GCS, the bridge, a configuration file)
//! fed generated and mutated inputs, with the core's own invariants re-checked after each.
//!
//! Why not `cargo fuzz`: it needs a nightly compiler (sanitizer coverage), which the build
//! machines and CI do not have. The harness here is plain Rust on stable, as the firmware
//! decoder's (`firmware-bridge/protocol/examples/fuzz_decoder.rs`): structured generators
//! build valid inputs (real MAVLink frames of random field values, JSON-RPC messages of
//! every kind the transport knows, the shipped configuration files), and byte-level
//! mutations (flips, overwrites, insertions, deletions, splices, truncation) break them.
//! What it gives up against coverage guidance, it makes up in invariants: each target
//! checks what its core promises after every input, not only "no panic".
//!
//! Every input is independent and derived from `(seed, index)`, so a failure is replayed
//! by its index alone: `examples/fuzz.rs TARGET --from INDEX --inputs 1 --seed SEED`.
//! CI runs [`CI_INPUTS`] of each target (`fuzz::tests`); the long runs are commands in
//! BENCHMARKS.md.

mod config;
mod estop;
mod ground;
mod mavlink;
mod mcp;

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Inputs of each target in CI (the unit tests of this module).
pub const CI_INPUTS: u64 = 100_000;

/// xorshift64*: deterministic for a seed, no dependency, fast.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of input `index` of a run seeded with `seed` (splitmix64 of both, so
    /// neighbouring indices are unrelated).
    pub fn for_input(seed: u64, index: u64) -> Rng {
        let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True once in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Up to `max` random bytes.
    pub fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        self.bytes(n)
    }

    /// Up to `max` random bytes as (lossy) text.
    pub fn text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(&self.some_bytes(max)).into_owned()
    }

    /// A step of time: usually below `usual_ms`, once in `rare_in` up to `rare_ms`.
    pub fn step(&mut self, usual_ms: usize, rare_in: usize, rare_ms: usize) -> std::time::Duration {
        let max = if self.one_in(rare_in) {
            rare_ms
        } else {
            usual_ms
        };
        std::time::Duration::from_millis(self.below(max) as u64)
    }

    /// A float that is often one a parser or a check must survive: NaN, infinities, zero,
    /// huge, tiny, negative, or an ordinary value.
    pub fn awkward_f64(&mut self) -> f64 {
        match self.below(10) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => 0.0,
            4 => -1e300,
            5 => 1e300,
            6 => f64::MIN_POSITIVE,
            _ => (self.next_u64() as i64 as f64) / 1e12,
        }
    }
}

/// Mutates `input` in place with one to four byte-level mutations; `others` are splice
/// donors (other inputs of the same kind).
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[&[u8]]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'"', b'\\', b'{', b'}', b'\n']);
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes = rng.bytes(n);
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                input.drain(at..end);
            }
            4 if len > 0 => {
                // Duplicate a range (repeated fields, repeated frames).
                let at = rng.below(len);
                let end = (at + 1 + rng.below(64)).min(len);
                let copy = input[at..end].to_vec();
                let to = rng.below(input.len() + 1);
                input.splice(to..to, copy);
            }
            5 if !others.is_empty() => {
                let donor = rng.pick(others);
                if !donor.is_empty() {
                    let from = rng.below(donor.len());
                    let end = (from + 1 + rng.below(128)).min(donor.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, donor[from..end].iter().copied());
                }
            }
            6 if len > 0 => input.truncate(rng.below(len)),
            7 if len > 0 => {
                // An ASCII digit or sign where a number may be.
                let i = rng.below(len);
                input[i] = *rng.pick(b"0123456789-+.eE");
            }
            _ => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next_u64() as u8);
            }
        }
    }
}

/// True when `FUZZ_TRACE` is set: the targets print each step and what came out, for
/// reading a replayed failure.
pub fn tracing() -> bool {
    std::env::var_os("FUZZ_TRACE").is_some()
}

/// A target: turns one random generator into one input and checks its core's invariants.
/// `Err` is a broken invariant, in words.
pub type TargetFn = fn(&mut Rng) -> Result<(), String>;

/// Every target by name, with what it covers.
pub const TARGETS: &[(&str, TargetFn, &str)] = &[
    (
        "mavlink",
        mavlink::run,
        "MAVLink frame decoder, then the vehicle state's message handling and its view",
    ),
    (
        "estop",
        estop::run,
        "the e-stop core under any order of triggers, resets, kills, vehicle states, links and time",
    ),
    (
        "mcp",
        mcp::run,
        "MCP-over-MQTT ingest: topic classification, JSON-RPC, the session lifecycle and pools",
    ),
    (
        "ground",
        ground::run,
        "the ground bridge core: its stdin lines and the drone's MQTT messages",
    ),
    (
        "config",
        config::run,
        "the daemon's and the ground bridge's configuration, the HIL scenarios",
    ),
    (
        "bridge",
        config::run_bridge_frames,
        "the firmware-bridge frame decoder, as the daemon uses it",
    ),
];

/// A broken invariant or a panic, with what replays it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub target: &'static str,
    pub seed: u64,
    pub index: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz target {} failed at input {} (seed {}): {}; replay: cargo run --release \
             --example fuzz -- {} --seed {} --from {} --inputs 1",
            self.target, self.index, self.seed, self.what, self.target, self.seed, self.index
        )
    }
}

/// Runs inputs `from..from + inputs` of `target`; the first failure stops the run.
pub fn run(target: &str, seed: u64, from: u64, inputs: u64) -> Result<(), Failure> {
    let Some(&(name, check, _)) = TARGETS.iter().find(|(n, _, _)| *n == target) else {
        return Err(Failure {
            target: "?",
            seed,
            index: from,
            what: format!(
                "no target {target:?}; the targets: {}",
                TARGETS.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
            ),
        });
    };
    for index in from..from.saturating_add(inputs) {
        let mut rng = Rng::for_input(seed, index);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&mut rng)));
        let what = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(what)) => what,
            Err(panic) => format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            ),
        };
        return Err(Failure {
            target: name,
            seed,
            index,
            what,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI's share of every target ([`CI_INPUTS`] inputs each), on a seed that changes
    /// nothing between runs (a failure must be replayable from the log alone).
    fn ci(target: &str) {
        if let Err(failure) = run(target, 21, 0, CI_INPUTS) {
            panic!("{failure}");
        }
    }

    #[test]
    fn fuzz_mavlink() {
        ci("mavlink");
    }

    #[test]
    fn fuzz_estop() {
        ci("estop");
    }

    #[test]
    fn fuzz_mcp() {
        ci("mcp");
    }

    #[test]
    fn fuzz_ground() {
        ci("ground");
    }

    #[test]
    fn fuzz_config() {
        ci("config");
    }

    #[test]
    fn fuzz_bridge() {
        ci("bridge");
    }

    #[test]
    fn a_broken_invariant_names_its_input_and_the_replay() {
        let failure = run("no-such-target", 1, 0, 1).unwrap_err();
        assert!(failure.what.contains("mavlink"), "{failure}");
    }

    #[test]
    fn mutations_stay_deterministic_for_an_index() {
        let mut a = Rng::for_input(7, 42);
        let mut b = Rng::for_input(7, 42);
        let (mut x, mut y) = (b"hello world".to_vec(), b"hello world".to_vec());
        mutate(&mut a, &mut x, &[b"donor"]);
        mutate(&mut b, &mut y, &[b"donor"]);
        assert_eq!(x, y);
        assert_ne!(
            Rng::for_input(7, 42).next_u64(),
            Rng::for_input(7, 43).next_u64()
        );
    }
}
