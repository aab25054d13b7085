//! The cron service's view of Parse's `_JobSchedule`, on the object layer:
//! the schedules to fire, the `_JobStatus` of each scheduled run, and each
//! schedule's `lastRun`.

use oxbase_objects::ObjectLayer;
use serde_json::{Map, Value};

use crate::service::{ParseSchedules, ParseSchedulesError};

#[async_trait::async_trait]
impl ParseSchedules for ObjectLayer {
    async fn load(&self) -> Result<Vec<Map<String, Value>>, ParseSchedulesError> {
        self.job_schedules().await.map_err(ParseSchedulesError::new)
    }

    async fn open_status(
        &self,
        job_name: &str,
        params: &Value,
    ) -> Result<String, ParseSchedulesError> {
        self.open_job_status(job_name, params, "schedule")
            .await
            .map_err(ParseSchedulesError::new)
    }

    async fn ran(&self, schedule: &str, tick_ms: i64) -> Result<(), ParseSchedulesError> {
        // Only the schedules that come from `_JobSchedule` have one.
        let Some(id) = schedule.strip_prefix("_parse_") else {
            return Ok(());
        };
        self.job_schedule_ran(id, tick_ms)
            .await
            .map_err(ParseSchedulesError::new)
    }
}
