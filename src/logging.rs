//! Logging: journald when started by systemd, stderr otherwise.
//!
//! Everything logs through `tracing`. Under systemd (`JOURNAL_STREAM` set) no tracing
//! subscriber is installed and tracing's `log` feature forwards every event to
//! `systemd-journal-logger`, which writes structured journal entries. Anywhere else
//! (a terminal, CI, a container without a journald socket) a compact stderr formatter is
//! used. stdout is never written by logging: `ground` speaks MCP on it and `probe --json`
//! prints JSON on it.

use tracing_subscriber::EnvFilter;

/// Installs the logger once; `filter` is a `tracing` directive such as `info`.
pub fn init(filter: &str) {
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    if under_systemd {
        if let Ok(journal) = systemd_journal_logger::JournalLog::new() {
            let level = level_of(filter);
            if log::set_boxed_logger(Box::new(
                journal.with_syslog_identifier("flight-companion".into()),
            ))
            .is_ok()
            {
                log::set_max_level(level);
                return;
            }
        }
        // No journald socket (containers): fall back to stderr below.
    }
    let env_filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into pipes, files or tests.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .compact()
        .try_init();
}

/// The coarsest level named by a filter directive, for the `log` backend.
fn level_of(filter: &str) -> log::LevelFilter {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let word = directive.rsplit(['=', ',']).next().unwrap_or("info").trim();
    word.parse().unwrap_or(log::LevelFilter::Info)
}
