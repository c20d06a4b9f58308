//! The fuzz targets of `flight_companion::fuzz`, for long runs (issue 21; CI runs 10⁵ of
//! each through the unit tests).
//!
//! `cargo run --release --example fuzz -- TARGET|all [--inputs N] [--seed S] [--from I]`
//!
//! Prints, per target, the inputs run, the CPU time per input and the peak resident memory
//! (`VmHWM`, which stays flat when nothing grows without bound); exits non-zero with the
//! replay command at the first broken invariant or panic.

use std::time::Instant;

use flight_companion::fuzz::{TARGETS, run};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
        })
        .unwrap_or(default)
}

/// This thread's CPU time (the run is single-threaded).
fn cpu_s() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(which) = args.first().cloned() else {
        eprintln!("usage: fuzz TARGET|all [--inputs N] [--seed S] [--from I]; targets:");
        for (name, _, what) in TARGETS {
            eprintln!("  {name:<8} {what}");
        }
        std::process::exit(2);
    };
    let inputs = arg(&args, "--inputs", 10_000_000);
    let seed = arg(&args, "--seed", 21);
    let from = arg(&args, "--from", 0);
    // The panics the harness catches are reported as failures; keep stderr for those.
    std::panic::set_hook(Box::new(|_| {}));
    let names: Vec<&str> = if which == "all" {
        TARGETS.iter().map(|t| t.0).collect()
    } else {
        vec![which.as_str()]
    };
    for name in names {
        let (cpu0, wall0) = (cpu_s(), Instant::now());
        // In slices, to show the peak memory as the run goes.
        let slice = (inputs / 10).max(1);
        let mut done = 0;
        let mut hwm = Vec::new();
        while done < inputs {
            let n = slice.min(inputs - done);
            if let Err(failure) = run(name, seed, from + done, n) {
                eprintln!("{failure}");
                std::process::exit(1);
            }
            done += n;
            hwm.push(vm_hwm_kib());
        }
        let cpu = cpu_s() - cpu0;
        println!(
            "{name:<8} {done} inputs (seed {seed}, from {from}): {:.2} µs CPU per input, {:.0} s; \
             peak RSS after each tenth (KiB): {hwm:?}",
            cpu * 1e6 / done.max(1) as f64,
            wall0.elapsed().as_secs_f64()
        );
    }
}
