//! Parse's job classes: `_JobStatus`, one per run of a Parse job, and
//! `_JobSchedule`, the schedules Parse Dashboard edits. The API opens a
//! status when a job is started; the jobs service updates it as the run
//! goes; the cron service reads the schedules and records their runs.

use serde_json::{Map, Value, json};

use crate::ObjectLayer;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};
use crate::query::FindOptions;

/// `_JobSchedule` objects read at most.
const MAX_PARSE_SCHEDULES: u64 = 10_000;

/// A change to a run's `_JobStatus`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobStatusChange {
    /// `running`, `succeeded` or `failed`.
    pub status: Option<String>,
    pub message: Option<String>,
    /// Sets `finishedAt` to now.
    pub finished: bool,
}

impl ObjectLayer {
    /// A `_JobStatus` in `running` for a run of Parse job `name`; its
    /// objectId. `source` is how it started (`api`, `schedule`).
    pub async fn open_job_status(
        &self,
        name: &str,
        params: &Value,
        source: &str,
    ) -> ParseResult<String> {
        let mut status = Map::new();
        status.insert("jobName".into(), json!(name));
        status.insert("source".into(), json!(source));
        status.insert("status".into(), json!("running"));
        status.insert("params".into(), params.clone());
        status.insert("ACL".into(), json!({}));
        let write = self
            .prepare_create(&Auth::master(), "_JobStatus", &status)
            .await?;
        let status_id = write.object_id().unwrap_or_default().to_owned();
        self.commit_one(write).await?;
        Ok(status_id)
    }

    pub async fn update_job_status(&self, id: &str, change: JobStatusChange) -> ParseResult<()> {
        let mut body = Map::new();
        if let Some(status) = change.status {
            body.insert("status".into(), json!(status));
        }
        if let Some(message) = change.message {
            body.insert("message".into(), json!(message));
        }
        if change.finished {
            body.insert(
                "finishedAt".into(),
                json!({"__type": "Date", "iso": crate::values::now()}),
            );
        }
        let attempt = || async {
            let write = self
                .prepare_update(&Auth::master(), "_JobStatus", id, &body)
                .await?;
            self.commit_one(write).await
        };
        match attempt().await {
            // The jobs process's schemas may predate the class, which the
            // API created when the job started: look again, once.
            Err(ParseError::Parse {
                code: code::OBJECT_NOT_FOUND,
                ..
            }) => {
                self.schema_cache().reload().await?;
                attempt().await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }

    /// Every `_JobSchedule` (none while the class does not exist).
    pub async fn job_schedules(&self) -> ParseResult<Vec<Map<String, Value>>> {
        let mut params = Map::new();
        params.insert("limit".into(), json!(MAX_PARSE_SCHEDULES));
        let mut limits = self.limits().clone();
        limits.max_limit = MAX_PARSE_SCHEDULES as usize;
        let options = FindOptions::for_find(&params, &limits)?;
        match self.find(&Auth::master(), "_JobSchedule", &options).await {
            Ok((objects, _)) => Ok(objects),
            Err(ParseError::Parse {
                code: code::OBJECT_NOT_FOUND | code::INVALID_CLASS_NAME,
                ..
            }) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    /// Records a schedule's run at `tick_ms` as its `lastRun`.
    pub async fn job_schedule_ran(&self, id: &str, tick_ms: i64) -> ParseResult<()> {
        let mut body = Map::new();
        body.insert("lastRun".into(), json!(tick_ms.div_euclid(1000)));
        let write = self
            .prepare_update(&Auth::master(), "_JobSchedule", id, &body)
            .await?;
        self.commit_one(write).await.map(drop)
    }
}
