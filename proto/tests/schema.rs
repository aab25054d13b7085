//! Subscribers in other languages build against the JSON Schemas checked in
//! under `proto/schema/`, so they must never drift from the Rust types.

use std::path::Path;

use schemars::{Schema, schema_for};
use serde_json::{Map, Value};

const UPDATE_VAR: &str = "OXBASE_UPDATE_SCHEMAS";

fn schemas() -> Vec<(&'static str, Schema)> {
    vec![
        ("event.schema.json", schema_for!(oxbase_proto::Event)),
        (
            "hook-entry.schema.json",
            schema_for!(oxbase_proto::HookEntry),
        ),
        (
            "function-request.schema.json",
            schema_for!(oxbase_proto::FunctionRequest),
        ),
        (
            "trigger-request.schema.json",
            schema_for!(oxbase_proto::TriggerRequest),
        ),
        (
            "find-trigger-request.schema.json",
            schema_for!(oxbase_proto::FindTriggerRequest),
        ),
        (
            "file-trigger-request.schema.json",
            schema_for!(oxbase_proto::FileTriggerRequest),
        ),
        (
            "live-query-trigger-request.schema.json",
            schema_for!(oxbase_proto::LiveQueryTriggerRequest),
        ),
        (
            "hook-reply.schema.json",
            schema_for!(oxbase_proto::HookReply),
        ),
        (
            "job-spec.schema.json",
            schema_for!(oxbase_proto::jobs::JobSpec),
        ),
        (
            "job-record.schema.json",
            schema_for!(oxbase_proto::jobs::JobRecord),
        ),
        (
            "job-submitted.schema.json",
            schema_for!(oxbase_proto::jobs::Submitted),
        ),
        (
            "job-run.schema.json",
            schema_for!(oxbase_proto::jobs::JobRun),
        ),
        (
            "job-progress.schema.json",
            schema_for!(oxbase_proto::jobs::JobProgress),
        ),
        (
            "cron-schedule.schema.json",
            schema_for!(oxbase_proto::cron::CronSchedule),
        ),
        (
            "cron-run.schema.json",
            schema_for!(oxbase_proto::cron::CronRun),
        ),
        (
            "push-request.schema.json",
            schema_for!(oxbase_proto::push::PushRequest),
        ),
        (
            "push-batch.schema.json",
            schema_for!(oxbase_proto::push::PushBatch),
        ),
    ]
}

/// Keys sorted at every level, so the file's bytes do not depend on whether
/// some other crate in the build turned on serde_json's `preserve_order`.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted(value)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn render(schema: Schema) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(schema.to_value())).unwrap();
    text.push('\n');
    text
}

#[test]
fn checked_in_schemas_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let update = std::env::var(UPDATE_VAR).is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (file, schema) in schemas() {
        let path = dir.join(file);
        let generated = render(schema);
        if update {
            std::fs::write(&path, &generated).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "JSON Schemas in proto/schema/ are missing or stale: {stale:?}. \
         Regenerate them with `{UPDATE_VAR}=1 cargo test -p oxbase-proto --test schema` \
         and commit the result."
    );
}

#[test]
fn event_schema_names_every_cloud_events_member() {
    let schema = schema_for!(oxbase_proto::Event).to_value();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for member in [
        "specversion",
        "type",
        "source",
        "id",
        "time",
        "datacontenttype",
        "subject",
        "data",
    ] {
        assert!(
            required.contains(&member),
            "{member} not required: {schema:#}"
        );
    }
}
