//! NATS subject names.

use crate::event::EventKind;
use crate::hooks::TriggerName;

/// The default prefix of every NATS subject and stream oxbase uses.
pub const DEFAULT_PREFIX: &str = "oxbase";

/// A prefix that cannot start a NATS subject or a stream name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid subject prefix {0:?}: use one or more dot-separated tokens of ASCII letters, digits, '_' and '-'"
)]
pub struct InvalidPrefix(pub String);

/// The subjects of one deployment, all under one prefix.
///
/// Object events go to `<prefix>.events.<className>.<created|updated|deleted>`.
/// Parse class names match `[A-Za-z_][A-Za-z0-9_]*`, so a class name is always
/// exactly one subject token and needs no escaping; `<prefix>.events.<className>.>`
/// selects every event of one class.
///
/// Hooks:
///
/// - `<prefix>.functions.<name>`: a cloud function's NATS handler;
/// - `<prefix>.triggers.<triggerName>.<className>`: a trigger's NATS handler;
/// - `<prefix>.webhooks.>`: the triggers service's proxy to webhooks;
/// - `<prefix>.deliveries.<partition>`: after-hooks waiting for delivery;
/// - `<prefix>.dead.<className>.<triggerName>`: after-hooks that failed every
///   attempt.
///
/// Background jobs ([`crate::jobs`]):
///
/// - `<prefix>.jobs.submit`: submissions, as NATS requests;
/// - `<prefix>.jobs.run.<queue>.<name>`: where NATS workers take runs;
/// - `<prefix>.jobs.progress.<process>.<jobId>`: workers' progress reports;
/// - `<prefix>.jobs.ready.<queue>.<priority>.<jobId>` and
///   `<prefix>.jobs.delayed.<queue>.<jobId>`: the jobs service's own queues,
///   and `<prefix>.jobs.wake.<queue>` its nudges to idle dispatchers.
///
/// Schedules ([`crate::cron`]): `<prefix>.cron.runs.<schedule>`, the
/// outcome of each tick.
///
/// Push ([`crate::push`]): `<prefix>.push.requests` and
/// `<prefix>.push.batches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Checks the prefix once here, so that a bad `prefix` setting fails at
    /// startup rather than as a publish error on the first write.
    pub fn new(prefix: impl Into<String>) -> Result<Self, InvalidPrefix> {
        let prefix = prefix.into();
        if prefix.split('.').all(valid_token) {
            Ok(Self { prefix })
        } else {
            Err(InvalidPrefix(prefix))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.events.<className>.<kind>`, where an object event is published.
    pub fn event(&self, class_name: &str, kind: EventKind) -> String {
        format!(
            "{}.events.{class_name}.{}",
            self.prefix,
            kind.subject_token()
        )
    }

    /// `<prefix>.events.<className>.>`: every event of one class.
    pub fn class_events_wildcard(&self, class_name: &str) -> String {
        format!("{}.events.{class_name}.>", self.prefix)
    }

    /// `<prefix>.events.>`: every object event of the deployment.
    pub fn events_wildcard(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// `<prefix>.functions.<name>`: where a cloud function's NATS handler
    /// listens. `name` must be a [`valid_token`].
    pub fn function(&self, name: &str) -> String {
        format!("{}.functions.{name}", self.prefix)
    }

    /// `<prefix>.triggers.<triggerName>.<className>`: where a trigger's NATS
    /// handler listens.
    pub fn trigger(&self, trigger: TriggerName, class_name: &str) -> String {
        format!("{}.triggers.{trigger}.{class_name}", self.prefix)
    }

    /// `<prefix>.webhooks.functions.<name>`: the webhook proxy, for a
    /// function.
    pub fn webhook_function(&self, name: &str) -> String {
        format!("{}.webhooks.functions.{name}", self.prefix)
    }

    /// `<prefix>.webhooks.triggers.<triggerName>.<className>`: the webhook
    /// proxy, for a trigger.
    pub fn webhook_trigger(&self, trigger: TriggerName, class_name: &str) -> String {
        format!("{}.webhooks.triggers.{trigger}.{class_name}", self.prefix)
    }

    pub fn webhooks_wildcard(&self) -> String {
        format!("{}.webhooks.>", self.prefix)
    }

    /// The hook a subject of the webhook proxy names, the inverse of
    /// [`Subjects::webhook_function`] and [`Subjects::webhook_trigger`].
    /// The proxy calls only the URL the registry holds for that hook, so
    /// whoever may publish to the proxy cannot choose where the webhook
    /// key goes.
    pub fn webhook_target(&self, subject: &str) -> Option<WebhookTarget> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".webhooks.")?;
        let tokens: Vec<&str> = rest.split('.').collect();
        match tokens.as_slice() {
            ["functions", name] if valid_token(name) => {
                Some(WebhookTarget::Function((*name).to_owned()))
            }
            ["triggers", trigger, class_name] if valid_token(class_name) => Some(
                WebhookTarget::Trigger(TriggerName::parse(trigger)?, (*class_name).to_owned()),
            ),
            _ => None,
        }
    }

    /// `<prefix>.deliveries.<partition>`: the after-hook deliveries of one
    /// partition, in order.
    pub fn delivery(&self, partition: u32) -> String {
        format!("{}.deliveries.{partition}", self.prefix)
    }

    pub fn deliveries_wildcard(&self) -> String {
        format!("{}.deliveries.>", self.prefix)
    }

    /// `<prefix>.dead.<className>.<triggerName>`: a delivery that failed
    /// every attempt.
    pub fn dead_letter(&self, class_name: &str, trigger: TriggerName) -> String {
        format!("{}.dead.{class_name}.{trigger}", self.prefix)
    }

    pub fn dead_letters_wildcard(&self) -> String {
        format!("{}.dead.>", self.prefix)
    }

    /// `<prefix>.jobs.submit`: where jobs are submitted over NATS.
    pub fn jobs_submit(&self) -> String {
        format!("{}.jobs.submit", self.prefix)
    }

    /// `<prefix>.jobs.run.<queue>.<name>`: where a NATS worker for the job
    /// `name` of `queue` listens.
    pub fn job_run(&self, queue: &str, name: &str) -> String {
        format!("{}.jobs.run.{queue}.{name}", self.prefix)
    }

    /// `<prefix>.jobs.progress.<process>.<jobId>`: a run's progress reports,
    /// to the jobs process running it.
    pub fn job_progress(&self, process: &str, job_id: &str) -> String {
        format!("{}.jobs.progress.{process}.{job_id}", self.prefix)
    }

    pub fn job_progress_wildcard(&self, process: &str) -> String {
        format!("{}.jobs.progress.{process}.*", self.prefix)
    }

    /// `<prefix>.jobs.ready.<queue>.<priority>.<jobId>`: a job ready to
    /// run. The message is the job's record.
    pub fn job_ready(&self, queue: &str, priority: u8, job_id: &str) -> String {
        format!("{}.jobs.ready.{queue}.{priority}.{job_id}", self.prefix)
    }

    /// `<prefix>.jobs.ready.<queue>.<priority>.*`: one priority's jobs.
    pub fn job_ready_priority(&self, queue: &str, priority: u8) -> String {
        format!("{}.jobs.ready.{queue}.{priority}.*", self.prefix)
    }

    /// `<prefix>.jobs.delayed.<queue>.<jobId>`: a job waiting for its
    /// time, as a JetStream message schedule.
    pub fn job_delayed(&self, queue: &str, job_id: &str) -> String {
        format!("{}.jobs.delayed.{queue}.{job_id}", self.prefix)
    }

    /// `<prefix>.jobs.delayed.<queue>.*`.
    pub fn job_delayed_queue(&self, queue: &str) -> String {
        format!("{}.jobs.delayed.{queue}.*", self.prefix)
    }

    /// `<prefix>.jobs.wake.<queue>` (core NATS, not stored): a submitter's
    /// nudge to idle dispatchers; the body is the priority.
    pub fn job_wake(&self, queue: &str) -> String {
        format!("{}.jobs.wake.{queue}", self.prefix)
    }

    /// The subjects of the jobs stream.
    pub fn jobs_stream_subjects(&self) -> Vec<String> {
        vec![
            format!("{}.jobs.ready.>", self.prefix),
            format!("{}.jobs.delayed.>", self.prefix),
        ]
    }

    /// `<prefix>.cron.runs.<schedule>`: what became of each tick of a
    /// schedule ([`crate::cron::CronRun`]).
    pub fn cron_runs(&self, schedule: &str) -> String {
        format!("{}.cron.runs.{schedule}", self.prefix)
    }

    pub fn cron_runs_wildcard(&self) -> String {
        format!("{}.cron.runs.*", self.prefix)
    }

    /// `<prefix>.push.requests`: pushes to resolve
    /// ([`crate::push::PushRequest`]).
    pub fn push_requests(&self) -> String {
        format!("{}.push.requests", self.prefix)
    }

    /// `<prefix>.push.batches`: pages of an audience to send
    /// ([`crate::push::PushBatch`]).
    pub fn push_batches(&self) -> String {
        format!("{}.push.batches", self.prefix)
    }
}

/// The hook a request to the webhook proxy is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    Function(String),
    /// A trigger, on a class.
    Trigger(TriggerName, String),
}

impl WebhookTarget {
    /// The hook's key in the registry.
    pub fn registry_key(&self) -> String {
        match self {
            Self::Function(name) => crate::HookEntry::function_key(name),
            Self::Trigger(trigger, class_name) => {
                crate::HookEntry::trigger_key(class_name, *trigger)
            }
        }
    }
}

impl std::fmt::Display for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Function(name) => write!(f, "the function {name:?}"),
            Self::Trigger(trigger, class_name) => write!(f, "{trigger} on {class_name}"),
        }
    }
}

/// Whether `name` can be one subject token: ASCII letters, digits, `_` and
/// `-`. Function names must be, so that each has its own subject.
pub fn valid_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_subjects_are_prefix_events_class_kind() {
        let subjects = Subjects::default();
        assert_eq!(
            subjects.event("GameScore", EventKind::Created),
            "oxbase.events.GameScore.created"
        );
        assert_eq!(
            subjects.event("_User", EventKind::Updated),
            "oxbase.events._User.updated"
        );
        assert_eq!(
            subjects.event("_Installation", EventKind::Deleted),
            "oxbase.events._Installation.deleted"
        );
        assert_eq!(subjects.events_wildcard(), "oxbase.events.>");
    }

    #[test]
    fn a_custom_prefix_may_have_several_tokens() {
        let subjects = Subjects::new("acme.prod-eu").unwrap();
        assert_eq!(subjects.prefix(), "acme.prod-eu");
        assert_eq!(
            subjects.event("Post", EventKind::Updated),
            "acme.prod-eu.events.Post.updated"
        );
        assert_eq!(subjects.events_wildcard(), "acme.prod-eu.events.>");
    }

    #[test]
    fn webhook_subjects_name_their_hook() {
        let subjects = Subjects::new("acme.prod").unwrap();
        let function = subjects.webhook_function("hello");
        assert_eq!(
            subjects.webhook_target(&function),
            Some(WebhookTarget::Function("hello".into()))
        );
        let trigger = subjects.webhook_trigger(TriggerName::BeforeSave, "_User");
        let target = subjects.webhook_target(&trigger).unwrap();
        assert_eq!(
            target,
            WebhookTarget::Trigger(TriggerName::BeforeSave, "_User".into())
        );
        assert_eq!(target.registry_key(), "trigger._User.beforeSave");
        assert_eq!(target.to_string(), "beforeSave on _User");
        for other in [
            "oxbase.webhooks.functions.hello",
            "acme.prod.webhooks.functions.a.b",
            "acme.prod.webhooks.functions",
            "acme.prod.webhooks.triggers.beforeSav.Item",
            "acme.prod.webhooks.triggers.beforeSave",
            "acme.prod.webhooks.jobs.nightly",
            "acme.prodx.webhooks.functions.hello",
        ] {
            assert_eq!(subjects.webhook_target(other), None, "{other}");
        }
    }

    #[test]
    fn prefixes_that_break_subjects_or_stream_names_are_rejected() {
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a.*", "a.>", "a/b", "ü"] {
            assert_eq!(
                Subjects::new(bad),
                Err(InvalidPrefix(bad.to_owned())),
                "{bad:?}"
            );
        }
    }
}
