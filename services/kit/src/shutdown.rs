//! Graceful shutdown: one token that SIGINT and SIGTERM cancel, which every
//! long-running loop watches.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown that fires on SIGINT or SIGTERM.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            trigger.trigger();
        });
        shutdown
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has been requested.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// A shutdown that fires `delay` after this one does (or when triggered
    /// itself): the second step of a stop that first announces itself.
    pub fn delayed(&self, delay: Duration) -> Self {
        // Not a child: a child fires with its parent.
        let later = Self::new();
        let first = self.clone();
        let trigger = later.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = first.wait() => tokio::time::sleep(delay).await,
                () = trigger.wait() => return,
            }
            trigger.trigger();
        });
        later
    }

    /// A shutdown that also fires when this one does, but can be triggered
    /// on its own (one service stopping without stopping the others).
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Runs `work` to completion, but once `shutdown` fires gives it at most
/// `grace` more before giving up on it. Returns `None` when it was cut off.
pub async fn drain_within<F: Future>(
    shutdown: &Shutdown,
    grace: Duration,
    work: F,
) -> Option<F::Output> {
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => return Some(out),
        _ = shutdown.wait() => {}
    }
    match tokio::time::timeout(grace, work).await {
        Ok(out) => Some(out),
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                "in-flight work did not finish in time"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_quick_work_and_cuts_off_slow_work() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let quick = drain_within(&shutdown, Duration::from_secs(5), async { 7 }).await;
        assert_eq!(quick, Some(7));
        let slow = drain_within(
            &shutdown,
            Duration::from_millis(20),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(slow, None);
    }

    #[tokio::test]
    async fn a_delayed_shutdown_fires_its_delay_after_the_first() {
        let first = Shutdown::new();
        let delay = Duration::from_millis(200);
        let later = first.delayed(delay);
        tokio::time::sleep(delay * 2).await;
        assert!(!later.is_triggered(), "nothing before the first fires");
        let started = tokio::time::Instant::now();
        first.trigger();
        tokio::time::timeout(Duration::from_secs(5), later.wait())
            .await
            .expect("it fires");
        assert!(started.elapsed() >= delay);
    }

    #[tokio::test]
    async fn children_follow_their_parent() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(!parent.is_triggered());
        let other = parent.child();
        parent.trigger();
        other.wait().await;
    }
}
