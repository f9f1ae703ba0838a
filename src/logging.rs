//! Log output: the human format (default) or `LOG_FORMAT=json`, one JSON object per line
//! with the instance id on every line, and the fields of every open span (a task's
//! `task_id`, `entry_node`, `processed_by`) both as a `spans` list and merged at the top
//! level, so a log query can filter on `task_id` directly.

use std::fmt;
use std::io;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// tracing's readable format.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init(format: LogFormat, instance: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match format {
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .init(),
        LogFormat::Json => json_subscriber(filter, instance, io::stderr).init(),
    }
}

/// The JSON subscriber, writing to `writer` (tests capture it).
pub fn json_subscriber<W>(
    filter: EnvFilter,
    instance: &str,
    writer: W,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines {
            instance: instance.to_owned(),
        })
        .finish()
}

/// The event format of `LOG_FORMAT=json`.
#[derive(Debug, Clone)]
struct JsonLines {
    instance: String,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            humantime::format_rfc3339_micros(SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("instance".into(), self.instance.clone().into());
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let mut entry = Map::new();
                entry.insert("name".into(), span.name().into());
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                        for (key, value) in fields {
                            line.insert(key.clone(), value.clone());
                            entry.insert(key, value);
                        }
                    }
                }
                spans.push(Value::Object(entry));
            }
        }
        let mut visitor = FieldsToJson(&mut line);
        event.record(&mut visitor);
        if !spans.is_empty() {
            line.insert("spans".into(), Value::Array(spans));
        }
        // The instance id is the node's, whatever a field of the same name said.
        line.insert("instance".into(), self.instance.clone().into());
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct FieldsToJson<'a>(&'a mut Map<String, Value>);

impl Visit for FieldsToJson<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_json_with_the_instance_and_the_task_span() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = json_subscriber(EnvFilter::new("info"), "node-7", move || sink.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(answer = 42, "outside any span");
            let span = tracing::info_span!(
                "task",
                task_id = "t-1",
                entry_node = "node-7",
                processed_by = tracing::field::Empty
            );
            let _entered = span.enter();
            span.record("processed_by", "node-9");
            tracing::warn!(instance = "spoofed", "inside");
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            assert_eq!(line["instance"], "node-7", "{line}");
        }
        assert_eq!(lines[0]["message"], "outside any span");
        assert_eq!(lines[0]["answer"], 42);
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["task_id"], "t-1");
        assert_eq!(lines[1]["processed_by"], "node-9");
        assert_eq!(lines[1]["spans"][0]["name"], "task");
    }
}
