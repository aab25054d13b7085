//! Tracing setup: readable lines on a terminal, JSON lines for log shippers,
//! and the most recent lines kept in memory for Parse's `/scriptlog`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `filter`.
/// Calling it twice is harmless (tests start many services in one process).
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = match format {
        LogFormat::Text => fmt::layer().boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(RecentLogsLayer)
        .try_init();
}

/// How many lines `/scriptlog` can look back over. Parse Server reads its
/// log files; a process here keeps its last lines instead, so a restart
/// forgets them.
const RECENT_LOG_LINES: usize = 1000;

/// One logged line, as `/scriptlog` answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// The process's most recent info, warn and error lines, oldest first.
#[derive(Debug, Default)]
pub struct RecentLogs {
    lines: Mutex<VecDeque<LogLine>>,
}

impl RecentLogs {
    fn push(&self, line: LogLine) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == RECENT_LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect()
    }
}

/// The lines this process logged last.
pub fn recent_logs() -> &'static RecentLogs {
    static RECENT: OnceLock<RecentLogs> = OnceLock::new();
    RECENT.get_or_init(RecentLogs::default)
}

struct RecentLogsLayer;

impl<S: Subscriber> Layer<S> for RecentLogsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::INFO {
            return;
        }
        let mut text = MessageText::default();
        event.record(&mut text);
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        recent_logs().push(LogLine {
            level,
            message: text.finish(),
            timestamp_ms,
        });
    }
}

/// The event's message followed by its other fields as `key=value`.
#[derive(Default)]
struct MessageText {
    message: String,
    fields: String,
}

impl MessageText {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_logs_keep_info_and_above_with_their_fields() {
        let subscriber = tracing_subscriber::registry().with(RecentLogsLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(class = "GameScore", "purged");
            tracing::debug!("too chatty to keep");
            tracing::error!("store unreachable");
        });
        let lines = recent_logs().snapshot();
        let kept: Vec<(Level, &str)> = lines
            .iter()
            .map(|l| (l.level, l.message.as_str()))
            .collect();
        assert!(kept.contains(&(Level::INFO, "purged class=\"GameScore\"")));
        assert!(kept.contains(&(Level::ERROR, "store unreachable")));
        assert!(!lines.iter().any(|l| l.message.contains("too chatty")));
    }
}
