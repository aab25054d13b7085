//! What a background service (triggers, jobs, cron, push) is to the
//! process that runs it, and running several of them together.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::error::BoxError;
use crate::{Readiness, Shutdown};

/// Renders Prometheus text; callable from any thread, any number of times.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// Why a service stopped before it was asked to: its own error, boxed.
pub type ServiceError = BoxError;

/// One background service of a process.
#[async_trait::async_trait]
pub trait Service: Send + 'static {
    /// Short name, for logs and errors (`"triggers"`).
    fn name(&self) -> &'static str;

    /// This service's Prometheus text. The source stays valid after
    /// [`run`](Self::run) takes the service, and counts what it does.
    fn metrics(&self) -> MetricsSource;

    /// Runs until `shutdown` fires (then finishes or hands back what it
    /// holds), or until it fails.
    async fn run(
        self: Box<Self>,
        readiness: Readiness,
        shutdown: Shutdown,
    ) -> Result<(), ServiceError>;
}

/// A service that stopped with an error: its name, and the error as the
/// source.
#[derive(Debug, thiserror::Error)]
#[error("the {name} service failed")]
pub struct ServiceFailed {
    pub name: &'static str,
    #[source]
    pub source: ServiceError,
}

/// Runs `services` together until each has stopped. One that fails
/// triggers `shutdown`, so the others stop too; one that stops without an
/// error leaves the others running. Returns the first failure (the first
/// to happen, which the others' may follow from); any later one is logged.
///
/// It does not bound how long the services take to stop once `shutdown`
/// fires: wrap it in [`drain_within`](crate::shutdown::drain_within).
pub async fn run_services(
    services: Vec<Box<dyn Service>>,
    readiness: Readiness,
    shutdown: Shutdown,
) -> Result<(), ServiceFailed> {
    let mut running: FuturesUnordered<_> = services
        .into_iter()
        .map(|service| {
            let name = service.name();
            let ran = service.run(readiness.clone(), shutdown.clone());
            async move { (name, ran.await) }
        })
        .collect();
    let mut first = None;
    while let Some((name, ran)) = running.next().await {
        let Err(source) = ran else {
            tracing::debug!(service = name, "service stopped");
            continue;
        };
        shutdown.trigger();
        if first.is_none() {
            first = Some(ServiceFailed { name, source });
        } else {
            tracing::error!(service = name, error = %source, "the {name} service failed too");
        }
    }
    match first {
        Some(failed) => Err(failed),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// Runs until shutdown; fails then if `fail_on_stop` is set.
    struct Steady {
        name: &'static str,
        stopped: Arc<AtomicBool>,
        fail_on_stop: bool,
        served: Arc<AtomicU64>,
    }

    #[async_trait::async_trait]
    impl Service for Steady {
        fn name(&self) -> &'static str {
            self.name
        }

        fn metrics(&self) -> MetricsSource {
            let served = Arc::clone(&self.served);
            Arc::new(move || format!("served {}\n", served.load(Ordering::Relaxed)))
        }

        async fn run(
            self: Box<Self>,
            readiness: Readiness,
            shutdown: Shutdown,
        ) -> Result<(), ServiceError> {
            readiness.register(self.name);
            readiness.set(self.name, true);
            self.served.fetch_add(1, Ordering::Relaxed);
            shutdown.wait().await;
            self.stopped.store(true, Ordering::SeqCst);
            if self.fail_on_stop {
                return Err(format!("{} gave up", self.name).into());
            }
            Ok(())
        }
    }

    /// Fails soon after it starts, with a cause.
    struct Failing;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the stream")]
    struct Cause(#[source] std::io::Error);

    #[async_trait::async_trait]
    impl Service for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }

        fn metrics(&self) -> MetricsSource {
            Arc::new(String::new)
        }

        async fn run(self: Box<Self>, _: Readiness, _: Shutdown) -> Result<(), ServiceError> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(Box::new(Cause(std::io::Error::other("refused"))))
        }
    }

    fn steady(name: &'static str, fail_on_stop: bool) -> (Box<dyn Service>, Arc<AtomicBool>) {
        let stopped = Arc::new(AtomicBool::new(false));
        let service = Steady {
            name,
            stopped: Arc::clone(&stopped),
            fail_on_stop,
            served: Arc::default(),
        };
        (Box::new(service), stopped)
    }

    #[tokio::test]
    async fn a_failure_stops_the_others_and_is_returned_with_the_service_name() {
        let (a, a_stopped) = steady("a", false);
        // Fails too, but only because the first failure stopped it.
        let (b, b_stopped) = steady("b", true);
        let shutdown = Shutdown::new();
        let ran = tokio::time::timeout(
            Duration::from_secs(5),
            run_services(
                vec![a, Box::new(Failing), b],
                Readiness::new(),
                shutdown.clone(),
            ),
        )
        .await
        .expect("every service stops once one fails");
        let failed = ran.expect_err("the failure is returned");
        assert!(shutdown.is_triggered());
        assert!(a_stopped.load(Ordering::SeqCst) && b_stopped.load(Ordering::SeqCst));
        assert_eq!(failed.name, "failing");
        assert_eq!(failed.to_string(), "the failing service failed");
        let cause = failed.source().expect("the service's error");
        assert_eq!(cause.to_string(), "cannot open the stream");
        assert_eq!(cause.source().unwrap().to_string(), "refused");
    }

    #[tokio::test]
    async fn services_stopped_by_shutdown_end_without_error() {
        let (a, a_stopped) = steady("a", false);
        let (b, b_stopped) = steady("b", false);
        let metrics = [a.metrics(), b.metrics()];
        let readiness = Readiness::new();
        let shutdown = Shutdown::new();
        let running = tokio::spawn(run_services(
            vec![a, b],
            readiness.clone(),
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metrics.iter().any(|render| render() != "served 1\n") {
            assert!(tokio::time::Instant::now() < deadline, "the services ran");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(readiness.is_ready());
        assert!(!a_stopped.load(Ordering::SeqCst));
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("they stop on shutdown")
            .unwrap()
            .unwrap();
        assert!(a_stopped.load(Ordering::SeqCst) && b_stopped.load(Ordering::SeqCst));
    }
}
