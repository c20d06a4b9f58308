//! What a HIL run found, for people (a summary) and for CI (JUnit XML). Sans-IO: strings in,
//! strings out.

use std::fmt::Write as _;
use std::time::Duration;

/// How one scenario ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed {
        reason: String,
    },
    /// The target lacks something the scenario needs; never counted as passed.
    Skipped {
        reason: String,
    },
}

/// One line of what happened, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Since the scenario's epoch.
    pub at: Duration,
    pub text: String,
}

/// A check and its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub description: String,
    pub passed: bool,
    pub detail: String,
}

/// A measured figure: `e-stop (mcp) → MAV_CMD_DO_SET_MODE on the wire`, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioResult {
    pub name: String,
    pub file: String,
    pub outcome: Outcome,
    pub duration: Duration,
    pub seed: u64,
    pub lines: Vec<Line>,
    pub checks: Vec<CheckResult>,
    pub figures: Vec<Figure>,
    /// The wire log around the failure, when it failed.
    pub wire_excerpt: Option<String>,
    /// Where the logs of every process are.
    pub logs_dir: Option<String>,
}

/// Counts over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

pub fn totals(results: &[ScenarioResult]) -> Totals {
    let mut t = Totals::default();
    for r in results {
        match r.outcome {
            Outcome::Passed => t.passed += 1,
            Outcome::Failed { .. } => t.failed += 1,
            Outcome::Skipped { .. } => t.skipped += 1,
        }
    }
    t
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// The human summary: one line per scenario, then figures, then each failure in full with
/// how to reproduce it.
pub fn summary(target: &str, results: &[ScenarioResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "HIL run against {target}");
    for r in results {
        let (tag, why) = match &r.outcome {
            Outcome::Passed => ("PASS", String::new()),
            Outcome::Failed { reason } => ("FAIL", format!(": {reason}")),
            Outcome::Skipped { reason } => ("SKIP", format!(": {reason}")),
        };
        let _ = writeln!(
            s,
            "  {tag}  {:<48} {:>7} s{why}",
            r.name,
            format!("{:.1}", r.duration.as_secs_f64())
        );
    }
    let figures: Vec<_> = results
        .iter()
        .flat_map(|r| r.figures.iter().map(move |f| (r, f)))
        .collect();
    if !figures.is_empty() {
        let _ = writeln!(s, "Measured at the wire:");
        for (r, f) in figures {
            let _ = writeln!(s, "  {:>9.1} ms  {} ({})", f.value_ms, f.name, r.name);
        }
    }
    for r in results {
        if let Outcome::Failed { reason } = &r.outcome {
            let _ = writeln!(s, "\nFAILED: {} ({})\n  {reason}", r.name, r.file);
            let _ = writeln!(
                s,
                "  reproduce: flight-companion hil run --target {target} --seed {} {}",
                r.seed, r.file
            );
            for c in r.checks.iter().filter(|c| !c.passed) {
                let _ = writeln!(s, "  check failed: {}: {}", c.description, c.detail);
            }
            let _ = writeln!(s, "  what happened:");
            for l in &r.lines {
                let _ = writeln!(s, "    +{:>8} s  {}", secs(l.at), l.text);
            }
            if let Some(w) = &r.wire_excerpt {
                let _ = writeln!(s, "  wire log around the failure:");
                for l in w.lines() {
                    let _ = writeln!(s, "    {l}");
                }
            }
            if let Some(d) = &r.logs_dir {
                let _ = writeln!(s, "  logs of every process: {d}");
            }
        }
    }
    let t = totals(results);
    let _ = writeln!(
        s,
        "\n{} passed, {} failed, {} skipped",
        t.passed, t.failed, t.skipped
    );
    s
}

/// XML text and attribute escaping; control characters (not allowed in XML 1.0) are dropped.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML (the Ant/Jenkins schema every CI reads): one `testsuite` for the target, one
/// `testcase` per scenario, `failure` or `skipped` with the reason, the step log and the
/// figures in `system-out`.
pub fn junit(target: &str, results: &[ScenarioResult]) -> String {
    let t = totals(results);
    let total: Duration = results.iter().map(|r| r.duration).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"flight-companion hil\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{}\">",
        results.len(),
        t.failed,
        t.skipped,
        secs(total)
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"hil {}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
        xml(target),
        results.len(),
        t.failed,
        t.skipped,
        secs(total)
    );
    for r in results {
        let _ = writeln!(
            s,
            "    <testcase classname=\"hil.{}\" name=\"{}\" file=\"{}\" time=\"{}\">",
            xml(target.split(':').next().unwrap_or(target)),
            xml(&r.name),
            xml(&r.file),
            secs(r.duration)
        );
        match &r.outcome {
            Outcome::Passed => {}
            Outcome::Failed { reason } => {
                let mut body = format!("seed {}\n", r.seed);
                for c in r.checks.iter().filter(|c| !c.passed) {
                    let _ = writeln!(body, "check failed: {}: {}", c.description, c.detail);
                }
                if let Some(w) = &r.wire_excerpt {
                    let _ = writeln!(body, "wire log:\n{w}");
                }
                let _ = writeln!(
                    s,
                    "      <failure message=\"{}\">{}</failure>",
                    xml(reason),
                    xml(&body)
                );
            }
            Outcome::Skipped { reason } => {
                let _ = writeln!(s, "      <skipped message=\"{}\"/>", xml(reason));
            }
        }
        let mut out = String::new();
        for l in &r.lines {
            let _ = writeln!(out, "+{} s  {}", secs(l.at), l.text);
        }
        for c in &r.checks {
            let _ = writeln!(
                out,
                "check {}: {} {}",
                if c.passed { "ok" } else { "FAILED" },
                c.description,
                c.detail
            );
        }
        for f in &r.figures {
            let _ = writeln!(out, "figure: {} = {:.2} ms", f.name, f.value_ms);
        }
        let _ = writeln!(s, "      <system-out>{}</system-out>", xml(&out));
        let _ = writeln!(s, "    </testcase>");
    }
    let _ = writeln!(s, "  </testsuite>");
    let _ = writeln!(s, "</testsuites>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, outcome: Outcome) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            file: format!("hil/scenarios/{name}.toml"),
            outcome,
            duration: Duration::from_millis(1500),
            seed: 7,
            lines: vec![Line {
                at: Duration::from_millis(20),
                text: "call takeoff as operator: ok".into(),
            }],
            checks: vec![CheckResult {
                description: "mode BRAKE reached after stop within 1 s".into(),
                passed: false,
                detail: "never <reached>".into(),
            }],
            figures: vec![Figure {
                name: "e-stop → DO_SET_MODE".into(),
                value_ms: 4.25,
            }],
            wire_excerpt: Some("+1.000 s -> autopilot 1/191 HEARTBEAT".into()),
            logs_dir: None,
        }
    }

    #[test]
    fn the_summary_names_failures_with_their_seed_and_wire_log() {
        let results = [
            result("a", Outcome::Passed),
            result(
                "b",
                Outcome::Failed {
                    reason: "check failed".into(),
                },
            ),
            result(
                "c",
                Outcome::Skipped {
                    reason: "no simulator".into(),
                },
            ),
        ];
        let s = summary("sim", &results);
        assert!(s.contains("PASS  a"), "{s}");
        assert!(s.contains("SKIP  c"), "{s}");
        assert!(s.contains("--seed 7 hil/scenarios/b.toml"), "{s}");
        assert!(s.contains("+1.000 s -> autopilot"), "{s}");
        assert!(s.contains("1 passed, 1 failed, 1 skipped"), "{s}");
        assert!(s.contains("4.2 ms  e-stop"), "{s}");
    }

    #[test]
    fn junit_is_escaped_and_counts_right() {
        let results = [
            result("a&b", Outcome::Passed),
            result(
                "c",
                Outcome::Failed {
                    reason: "x < y \"quoted\"\u{1}".into(),
                },
            ),
            result(
                "d",
                Outcome::Skipped {
                    reason: "no bridge".into(),
                },
            ),
        ];
        let x = junit("sitl:tcp:127.0.0.1:5760", &results);
        assert!(
            x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("name=\"a&amp;b\""), "{x}");
        assert!(x.contains("message=\"x &lt; y &quot;quoted&quot;\""), "{x}");
        assert!(x.contains("<skipped message=\"no bridge\"/>"), "{x}");
        assert!(x.contains("never &lt;reached&gt;"), "{x}");
        assert!(x.contains("classname=\"hil.sitl\""), "{x}");
        // Every element opened is closed.
        assert_eq!(
            x.matches("<testcase ").count(),
            x.matches("</testcase>").count()
        );
    }
}
