//! A check of the code's shape (test only): no function in `src/` longer than
//! [`LINES_MAX`] lines, outside tests. A long function is split by meaning (its phases, its
//! cases), not at an arbitrary line.
//!
//! `cargo test --lib function_length` lists every offender with its place and length.
//! The scanner reads the text, not the syntax tree: it skips comments, strings (raw ones
//! too) and character literals, and matches braces from each `fn` item's body.

use std::path::{Path, PathBuf};

/// The longest function allowed, in lines from its `fn` line to its closing brace.
pub const LINES_MAX: usize = 150;

/// Functions allowed over the limit: `(path under src/, name)`. Empty since issue 16 split
/// the seven that were (the simulator's telemetry builder, the executor's step, the session
/// table's `rpc` and `control`, the whitelist's bounds, the audit walk's file and the writer's
/// `open`). The check fails on any other long function, and on an entry here that is no
/// longer long, so the list stays empty unless a table is argued into it.
pub const KNOWN_LONG: &[(&str, &str)] = &[];

/// One function: where it is and how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpan {
    pub path: PathBuf,
    pub name: String,
    /// 1-based.
    pub line: usize,
    pub lines: usize,
}

/// The source with comments, strings and character literals blanked (newlines kept), so
/// that braces can be counted.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"...", r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            let closes = |k: usize| {
                chars.get(k) == Some(&'"') && (1..=hashes).all(|h| chars.get(k + h) == Some(&'#'))
            };
            while j < chars.len() && !closes(j) {
                j += 1;
            }
            let end = (j + 1 + hashes).min(chars.len());
            out.extend(chars[i..end].iter().map(|c| blank(*c)));
            i = end;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('{', '\'', '\u{7b}'), not a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The name of the function an item line starts, if it does.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    loop {
        let before = rest;
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "async ",
            "const ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        if let Some(r) = rest.strip_prefix("extern ") {
            rest = r.trim_start_matches(|c: char| c != ' ').trim_start();
        }
        if rest == before {
            break;
        }
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    (end > 0).then(|| &rest[..end])
}

/// Every function with a body in `source`, before its `#[cfg(test)]` module.
pub fn functions(path: &Path, source: &str) -> Vec<FunctionSpan> {
    let code = code_only(source);
    let lines: Vec<&str> = code.lines().collect();
    let last = lines
        .iter()
        .position(|l| l.trim() == "#[cfg(test)]")
        .unwrap_or(lines.len());
    let mut found = Vec::new();
    let mut at = 0;
    while at < last {
        let Some(name) = fn_name(lines[at]) else {
            at += 1;
            continue;
        };
        // From the signature to its body's closing brace (a `;` first: no body).
        let mut depth = 0usize;
        let mut opened = false;
        let mut end = None;
        'scan: for (k, line) in lines.iter().enumerate().skip(at) {
            for c in line.chars() {
                match c {
                    ';' if !opened && depth == 0 => break 'scan,
                    '{' => {
                        opened = true;
                        depth += 1;
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if opened && depth == 0 {
                            end = Some(k);
                            break 'scan;
                        }
                    }
                    _ => {}
                }
            }
        }
        match end {
            Some(end) => {
                found.push(FunctionSpan {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    line: at + 1,
                    lines: end - at + 1,
                });
                // Functions nested in this one count as part of it.
                at = end + 1;
            }
            None => at += 1,
        }
    }
    found
}

/// Whether a file holds only tests (their tables may be long).
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The functions of `src/` (outside tests) longer than [`LINES_MAX`], longest first.
pub fn offenders(src: &Path) -> Vec<FunctionSpan> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut long: Vec<FunctionSpan> = files
        .iter()
        .filter(|p| !is_test_file(p.strip_prefix(src).unwrap_or(p)))
        .filter_map(|p| Some((p, std::fs::read_to_string(p).ok()?)))
        .flat_map(|(p, text)| functions(p.strip_prefix(src).unwrap_or(p), &text))
        .filter(|f| f.lines > LINES_MAX)
        .collect();
    long.sort_by_key(|f| std::cmp::Reverse(f.lines));
    long
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_function_in_src_is_longer_than_the_limit_but_the_known_ones() {
        // The workspace crates' files keep their paths under their own `src/` (issue 16's split).
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let long: Vec<FunctionSpan> = [
            "src",
            "crates/core/src",
            "crates/sim/src",
            "crates/mqtt/src",
            "crates/ground/src",
        ]
        .iter()
        .flat_map(|root| offenders(&manifest.join(root)))
        .collect();
        let is_known = |f: &FunctionSpan| {
            KNOWN_LONG
                .iter()
                .any(|(path, name)| f.path == Path::new(path) && f.name == *name)
        };
        let new: Vec<String> = long
            .iter()
            .filter(|f| !is_known(f))
            .map(|f| {
                let place = format!("{}:{}", f.path.display(), f.line);
                format!("{place} fn {} ({} lines)", f.name, f.lines)
            })
            .collect();
        assert!(
            new.is_empty(),
            "functions over {LINES_MAX} lines (split them by meaning):\n{}",
            new.join("\n")
        );
        let split: Vec<_> = (KNOWN_LONG.iter())
            .filter(|(path, name)| {
                !long
                    .iter()
                    .any(|f| f.path == Path::new(path) && f.name == *name)
            })
            .collect();
        assert!(
            split.is_empty(),
            "no longer over {LINES_MAX} lines: delete from KNOWN_LONG: {split:?}"
        );
    }

    #[test]
    fn the_scanner_counts_bodies_and_skips_braces_in_strings_comments_and_chars() {
        let source = r###"
pub fn short() -> u8 {
    let _ = "{ not a brace";
    let _ = '{';
    // } nor this
    /* { nor /* nested } */ this */
    let _ = r#"raw { "# ;
    1
}

trait T {
    fn declared(&self);
    fn provided<'a>(&'a self) -> &'a str {
        "}"
    }
}

pub(crate) async fn spans_four(
    x: u8,
) {
}
"###;
        let found = functions(Path::new("x.rs"), source);
        let spans: Vec<(&str, usize, usize)> = found
            .iter()
            .map(|f| (f.name.as_str(), f.line, f.lines))
            .collect();
        assert_eq!(
            spans,
            vec![("short", 2, 8), ("provided", 13, 3), ("spans_four", 18, 4)]
        );
    }
}
