//! The jobs service's Prometheus counters.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) started: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead: AtomicU64,
    pub(crate) running: AtomicI64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = oxbase_kit::health::counters(&[
            (
                "oxbase_jobs_started_total",
                "Job runs started.",
                &self.started,
            ),
            (
                "oxbase_jobs_succeeded_total",
                "Jobs that succeeded.",
                &self.succeeded,
            ),
            (
                "oxbase_jobs_retried_total",
                "Failed runs queued again.",
                &self.retried,
            ),
            (
                "oxbase_jobs_dead_total",
                "Jobs that failed their last attempt.",
                &self.dead,
            ),
        ]);
        let _ = writeln!(
            out,
            "# HELP oxbase_jobs_running Jobs running in this process.\n# TYPE oxbase_jobs_running gauge\noxbase_jobs_running {}",
            self.running.load(Ordering::Relaxed)
        );
        out
    }
}
