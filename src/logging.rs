//! Logging: journald when started by systemd, stderr otherwise.
//!
//! Everything logs through `tracing`. Under systemd (`JOURNAL_STREAM` set and a journald
//! socket present) a [`JournalLayer`] writes each event as one structured journal entry
//! through `systemd-journal-logger`: `MESSAGE`, `PRIORITY`, and every field of the event
//! and of its enclosing spans as a journal field in upper case, plus `SUBSYSTEM` (the
//! module after the crate name: `mcp`, `link`, `daemon`...). So
//! `info_span!("tool", session = %id, tool = name, correlation_id = %rid)` makes
//! `journalctl -u flight-companion SESSION=... TOOL=takeoff` work.
//! Anywhere else (a terminal, CI, a container without a journald socket) a compact stderr
//! formatter is used. stdout is never written by logging: `ground` speaks MCP on it and
//! `probe --json` prints JSON on it.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Installs the logger once; `filter` is a `tracing` directive such as `info`.
pub fn init(filter: &str) {
    let env_filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(filter))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    if under_systemd {
        if let Ok(journal) = systemd_journal_logger::JournalLog::new() {
            let journal = journal.with_syslog_identifier("flight-companion".into());
            let layer = JournalLayer::new(move |entry: &Entry| {
                let kvs: Vec<(&str, &str)> = entry
                    .fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let _ = journal.journal_send(
                    &log::Record::builder()
                        .level(entry.level)
                        .target(&entry.target)
                        .args(format_args!("{}", entry.message))
                        .key_values(&kvs)
                        .build(),
                );
            });
            if tracing_subscriber::registry()
                .with(layer.with_filter(env_filter()))
                .try_init()
                .is_ok()
            {
                return;
            }
        }
        // No journald socket (containers): fall back to stderr below.
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_writer(|| EscapingWriter(std::io::stderr()))
        // No colour codes: every control character of a line is escaped (below), so a value
        // from the ground cannot forge or reorder log lines, and escape codes would be too.
        .with_ansi(false)
        .with_target(false)
        .compact()
        .try_init();
}

/// Writes each formatted event with its control and bidirectional characters escaped
/// (`audit::escape`), keeping only the newline that ends it. The fmt layer writes one event
/// per `write` call.
pub struct EscapingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, newline) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (text.as_ref(), ""),
        };
        let escaped = crate::audit::escape(body);
        self.0.write_all(escaped.as_bytes())?;
        self.0.write_all(newline.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// One log event, ready for the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub level: log::Level,
    pub target: String,
    pub message: String,
    /// Journal field names (upper case) and values: `SUBSYSTEM`, then span fields from the
    /// outermost span in, then the event's own fields.
    pub fields: Vec<(String, String)>,
}

/// A `tracing` layer that turns events into [`Entry`]s for a sink (the journal in the
/// daemon, a vector in tests).
pub struct JournalLayer<F> {
    sink: F,
}

impl<F: Fn(&Entry) + Send + Sync + 'static> JournalLayer<F> {
    pub fn new(sink: F) -> JournalLayer<F> {
        JournalLayer { sink }
    }
}

/// The fields of a span, kept in its extensions.
struct SpanFields(Vec<(String, String)>);

#[derive(Default)]
struct Collect {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .push((journal_name(field.name()), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((journal_name(field.name()), text));
        }
    }
}

/// A journal field name: upper case, `[A-Z0-9_]` only, not starting with `_` or a digit
/// (those are reserved for journald's trusted fields), at most 64 bytes.
pub fn journal_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(['_', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        out.insert(0, 'F');
    }
    out.truncate(64);
    out
}

/// `flight_companion::mcp::shell` → `mcp`; other crates keep their crate name.
pub fn subsystem(target: &str) -> &str {
    let mut parts = target.split("::");
    match (parts.next(), parts.next()) {
        (Some("flight_companion"), Some(module)) => module,
        (Some(krate), _) => krate,
        _ => target,
    }
}

impl<S, F> Layer<S> for JournalLayer<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    F: Fn(&Entry) + Send + Sync + 'static,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut collect = Collect::default();
        attrs.record(&mut collect);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(collect.fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let mut collect = Collect::default();
        values.record(&mut collect);
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(fields) = extensions.get_mut::<SpanFields>() {
                fields.0.extend(collect.fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let target = metadata.target();
        let mut fields = vec![("SUBSYSTEM".to_owned(), subsystem(target).to_owned())];
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    fields.extend(span_fields.0.iter().cloned());
                }
            }
        }
        let mut collect = Collect::default();
        event.record(&mut collect);
        fields.extend(collect.fields);
        let level = match *metadata.level() {
            tracing::Level::ERROR => log::Level::Error,
            tracing::Level::WARN => log::Level::Warn,
            tracing::Level::INFO => log::Level::Info,
            tracing::Level::DEBUG => log::Level::Debug,
            tracing::Level::TRACE => log::Level::Trace,
        };
        // A journal entry is one MESSAGE: a newline or a bidirectional control from the ground
        // must not show as a line of its own (or reorder one) in `journalctl`.
        let fields = fields
            .into_iter()
            .map(|(k, v)| (k, crate::audit::escape(&v).into_owned()))
            .collect();
        (self.sink)(&Entry {
            level,
            target: target.to_owned(),
            message: crate::audit::escape(&collect.message).into_owned(),
            fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn events_carry_subsystem_span_and_event_fields_as_journal_fields() {
        let entries = Arc::new(Mutex::new(Vec::new()));
        let sink = entries.clone();
        let subscriber =
            tracing_subscriber::registry().with(JournalLayer::new(move |e: &Entry| {
                sink.lock().unwrap().push(e.clone())
            }));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: "flight_companion::mcp::server", "tool", session = "ground-1", tool = "takeoff");
            let _entered = span.enter();
            tracing::warn!(target: "flight_companion::mcp::server", correlation_id = 42, "refused: ceiling is {} m", 120);
        });
        let entries = entries.lock().unwrap();
        let entry = &entries[0];
        assert_eq!(entry.level, log::Level::Warn);
        assert_eq!(entry.message, "refused: ceiling is 120 m");
        let field = |name: &str| {
            entry
                .fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field("SUBSYSTEM"), Some("mcp"));
        assert_eq!(field("SESSION"), Some("ground-1"));
        assert_eq!(field("TOOL"), Some("takeoff"));
        assert_eq!(field("CORRELATION_ID"), Some("42"));
    }

    #[test]
    fn journal_names_are_valid() {
        assert_eq!(journal_name("correlation_id"), "CORRELATION_ID");
        assert_eq!(journal_name("a.b-c"), "A_B_C");
        assert_eq!(journal_name("_secret"), "F_SECRET");
        assert_eq!(journal_name("9lives"), "F9LIVES");
        assert_eq!(journal_name(""), "F");
        assert_eq!(journal_name(&"x".repeat(100)).len(), 64);
        assert_eq!(subsystem("flight_companion::link::transport"), "link");
        assert_eq!(subsystem("rumqttc::eventloop"), "rumqttc");
    }
}
