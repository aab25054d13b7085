//! `[cron]`: schedules and the cron service.

use oxbase_kit::Section;
use serde::{Deserialize, Serialize};

/// Schedules (`[cron]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CronConfig {
    /// Off, no cron process fires anything and the schedule routes answer
    /// that cron is off.
    pub enabled: bool,
    /// Schedules written to the schedule bucket when a cron process starts,
    /// by name (`[cron.schedules.<name>]`, the same fields as the HTTP API).
    pub schedules: std::collections::BTreeMap<String, oxbase_proto::cron::CronSchedule>,
    /// Runs kept per schedule.
    pub history: i64,
    /// How long a tick claimed by a process may stay unsettled before
    /// another process takes it over.
    pub lease_ms: u64,
    /// How long a tick's claim is remembered. It must exceed any clock
    /// skew between cron processes: a process whose clock is later by more
    /// would fire the tick again.
    pub slot_ttl_secs: u64,
    /// A tick first seen later than this after its time is a misfire, and
    /// its schedule's misfire policy decides it.
    pub misfire_grace_ms: u64,
    /// Missed ticks looked at per schedule on return; older ones are
    /// neither fired nor recorded.
    pub max_catch_up: usize,
    /// Servers holding a copy of the cron buckets and stream.
    pub replicas: usize,
}

impl Default for CronConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedules: Default::default(),
            history: 100,
            lease_ms: 5_000,
            slot_ttl_secs: 3_600,
            misfire_grace_ms: 1_000,
            max_catch_up: 1_000,
            replicas: 1,
        }
    }
}

impl Section for CronConfig {
    const KEY: &'static str = "cron";

    fn validate(&self) -> Result<(), String> {
        if self.lease_ms < 100 || self.slot_ttl_secs < 60 || self.history < 1 {
            return Err(
                "lease_ms must be at least 100, slot_ttl_secs at least 60 and history at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}
