//! The jobs service's status sink on Parse's object layer: each run of a
//! Parse job updates its `_JobStatus`.

use oxbase_objects::{JobStatusChange, ObjectLayer};

use crate::handlers::{JobStatusError, JobStatusSink, StatusUpdate};

#[async_trait::async_trait]
impl JobStatusSink for ObjectLayer {
    async fn update(&self, status_id: &str, update: StatusUpdate) -> Result<(), JobStatusError> {
        let change = JobStatusChange {
            status: update.status.map(str::to_owned),
            message: update.message,
            finished: update.finished,
        };
        self.update_job_status(status_id, change)
            .await
            .map_err(JobStatusError::new)
    }
}
