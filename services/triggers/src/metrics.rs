//! Counters for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// What one triggers process has done since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events handed to the deliveries stream.
    pub routed: AtomicU64,
    /// After-hooks delivered (the handler succeeded).
    pub delivered: AtomicU64,
    /// Delivery attempts that failed (each retry counts).
    pub failed_attempts: AtomicU64,
    /// Deliveries moved to the dead letters.
    pub dead_letters: AtomicU64,
    /// Deliveries dropped because their hook was removed meanwhile.
    pub skipped: AtomicU64,
    /// Webhook calls made for functions and before-hooks.
    pub proxied: AtomicU64,
    /// Of those, the ones with no usable answer.
    pub proxy_failures: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let counters = [
            (
                "oxbase_triggers_routed_total",
                "Events with an after-hook queued for delivery.",
                &self.routed,
            ),
            (
                "oxbase_triggers_delivered_total",
                "After-hook deliveries the handler accepted.",
                &self.delivered,
            ),
            (
                "oxbase_triggers_failed_attempts_total",
                "After-hook delivery attempts that failed.",
                &self.failed_attempts,
            ),
            (
                "oxbase_triggers_dead_letters_total",
                "After-hook deliveries moved to the dead letters.",
                &self.dead_letters,
            ),
            (
                "oxbase_triggers_skipped_total",
                "After-hook deliveries dropped because the hook was removed.",
                &self.skipped,
            ),
            (
                "oxbase_webhook_calls_total",
                "Webhook calls for functions and before-hooks.",
                &self.proxied,
            ),
            (
                "oxbase_webhook_failures_total",
                "Webhook calls for functions and before-hooks with no usable answer.",
                &self.proxy_failures,
            ),
        ];
        oxbase_kit::health::counters(&counters)
    }
}
