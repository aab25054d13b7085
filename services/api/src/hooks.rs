//! Cloud functions, Parse's `/hooks` registry routes, and the synchronous
//! object triggers (beforeSave, beforeDelete); `triggers.rs` has the
//! others. Every call goes over NATS: to a NATS handler directly, or to a
//! webhook through the triggers service's proxy, so the API itself never
//! calls out over HTTP.

use std::sync::Arc;

use axum::http::Method;
use oxbase_hooks::{CallError, HookCaller, HookRegistry, RegistryError};
use oxbase_kit::Config;
use oxbase_objects::{
    Auth, ParseError, ParseResult,
    access::Operation,
    code,
    query::FindOptions,
    values::{WriteKind, parse_write, validate_class_name},
};
use oxbase_proto::hooks::{CONNECT_CLASS, FILE_CLASS};
use oxbase_proto::{
    Caller, FunctionRequest, HookEntry, HookReply, Subjects, TriggerName, TriggerRequest,
};
use oxbase_store::write::apply_update;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;
use oxbase_store::Object;

/// What the API needs to call hooks.
#[derive(Debug, Clone)]
pub struct Hooks {
    pub client: async_nats::Client,
    pub registry: Arc<HookRegistry>,
}

pub(crate) struct HookRunner {
    caller: HookCaller,
}

/// Members a beforeSave may not change.
const FIXED_FIELDS: &[&str] = &["objectId", "createdAt", "updatedAt", "className"];
/// Members hooks are not shown, and that a beforeSave therefore keeps as
/// the request wrote them.
const SECRET_FIELDS: &[&str] = &["password"];
/// Headers hooks are not shown: a webhook is someone else's server.
const HIDDEN_HEADERS: &[&str] = &[
    "x-parse-master-key",
    "x-parse-maintenance-key",
    "authorization",
];

impl HookRunner {
    pub(crate) fn new(config: &Config, hooks: Hooks) -> Self {
        let triggers = config.section::<oxbase_hooks::TriggersConfig>();
        let subjects = Subjects::new(config.events.prefix.as_str()).unwrap_or_default();
        Self {
            caller: HookCaller::new(
                hooks.client,
                hooks.registry,
                subjects,
                triggers.call_limits(),
            ),
        }
    }

    fn registry(&self) -> &HookRegistry {
        self.caller.registry()
    }

    /// The registered hooks with a `rateLimit`.
    pub(crate) fn rate_limited(&self) -> Arc<[HookEntry]> {
        self.registry().rate_limited()
    }
}

/// A hook's failure to answer, as the client sees it.
fn call_failed(what: &str, entry: Option<&HookEntry>, err: CallError) -> ParseError {
    let message = match (err, entry.and_then(|e| e.url.as_ref())) {
        (CallError::NoHandler, Some(_)) => {
            format!("{what} cannot reach its webhook: no triggers service is running")
        }
        (CallError::NoHandler, None) => format!("{what} has no handler listening"),
        (CallError::Timeout(ms), _) => format!("{what} did not answer within {ms} ms"),
        (err, _) => format!("{what} failed: {err}"),
    };
    ParseError::new(code::SCRIPT_FAILED, message)
}

/// A handler's error reply: its code when it gave a usable one.
fn rejected(err: &oxbase_proto::HookError, default: i32) -> ParseError {
    let code = err
        .code()
        .and_then(|c| i32::try_from(c).ok())
        .filter(|c| *c > 1)
        .unwrap_or(default);
    ParseError::new(code, err.message())
}

impl App {
    fn hook_runner(&self, what: &str) -> ParseResult<&HookRunner> {
        self.hooks.as_ref().ok_or_else(|| {
            ParseError::new(
                code::SCRIPT_FAILED,
                format!("{what} are turned off on this server (triggers.enabled is false)"),
            )
        })
    }

    /// Who is calling, as hooks are shown it.
    pub(crate) async fn caller(&self, auth: &Auth, req: &ParseRequest) -> Caller {
        let mut user = None;
        if let Some(session) = &auth.user
            && let Ok(options) = FindOptions::for_get(&Map::new(), self.objects.limits())
            && let Ok(mut object) = self
                .objects
                .get(&Auth::master(), "_User", &session.id, &options)
                .await
        {
            object.insert(
                "sessionToken".into(),
                Value::from(session.session_token.clone()),
            );
            user = Some(object);
        }
        let headers = req
            .headers
            .iter()
            .filter(|(name, _)| !HIDDEN_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), Value::from(value.to_str().ok()?)))
            })
            .collect();
        Caller {
            master: auth.has_master_key(),
            user,
            installation_id: auth.installation_id.clone(),
            headers,
            ip: Some(req.ip.to_string()),
            request_id: auth.request_id.clone(),
            context: req.context.clone(),
        }
    }

    /// `POST /functions/{name}`: the registered webhook, or the NATS
    /// handler on `<prefix>.functions.<name>`.
    pub(crate) async fn function_route(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        name: &str,
    ) -> ParseResult<Reply> {
        let invalid =
            || ParseError::new(code::SCRIPT_FAILED, format!("Invalid function: \"{name}\""));
        if !oxbase_proto::valid_token(name) {
            return Err(invalid());
        }
        let runner = self.hook_runner("Cloud functions")?;
        let entry = runner.registry().function(name);
        let request = FunctionRequest {
            function_name: name.to_owned(),
            params: req.params.clone(),
            caller: self.caller(auth, req).await,
        };
        let what = format!("The function {name}");
        let reply = runner
            .caller
            .call_function(entry.as_ref(), name, &request, auth.request_id.as_deref())
            .await
            .map_err(|err| match err {
                CallError::NoHandler if entry.is_none() => invalid(),
                err => call_failed(&what, entry.as_ref(), err),
            })?;
        if let Some(err) = reply.error {
            return Err(rejected(&err, code::SCRIPT_FAILED));
        }
        let mut body = Map::new();
        if let Some(result) = reply.success {
            body.insert("result".into(), result);
        }
        Ok(Reply::ok(Value::Object(body)))
    }

    /// Runs the class's beforeSave hook, if it has one. Answers the body to
    /// write instead of `body` and the fields the hook changed, or `None`
    /// when the write goes ahead as asked; `context` becomes the context
    /// the hook left.
    pub(crate) async fn before_save(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        class_name: &str,
        object_id: Option<&str>,
        body: &Map<String, Value>,
        context: &mut Map<String, Value>,
    ) -> ParseResult<Option<(Map<String, Value>, Vec<String>)>> {
        if self
            .registered(class_name, TriggerName::BeforeSave)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let caller = self.caller(auth, req).await;
        self.before_save_as(auth, caller, class_name, object_id, body, context)
            .await
    }

    /// [`App::before_save`] for a write the server makes itself, shown to
    /// the hook as `caller` (Parse's maintenance writes show no master
    /// key).
    pub(crate) async fn before_save_as(
        &self,
        auth: &Auth,
        caller: Caller,
        class_name: &str,
        object_id: Option<&str>,
        body: &Map<String, Value>,
        context: &mut Map<String, Value>,
    ) -> ParseResult<Option<(Map<String, Value>, Vec<String>)>> {
        let Some((runner, entry)) = self.registered(class_name, TriggerName::BeforeSave).await?
        else {
            return Ok(None);
        };
        let (original, kind) = match object_id {
            Some(id) => (
                Some(
                    self.objects
                        .object_for_hook(auth, class_name, id, Operation::Update)
                        .await?,
                ),
                WriteKind::Update { object_id: id },
            ),
            None => (
                None,
                WriteKind::Create {
                    allow_custom_id: true,
                },
            ),
        };
        let parsed = parse_write(body, kind)?;
        let mut object = original.clone().unwrap_or_default();
        apply_update(&mut object, &parsed.changes)?;
        for secret in SECRET_FIELDS {
            object.remove(*secret);
        }
        let request = TriggerRequest {
            trigger_name: TriggerName::BeforeSave,
            object: with_class(object.clone(), class_name),
            original: original.map(|o| with_class(o, class_name)),
            event_id: None,
            caller,
        };
        let reply = self
            .run_hook(
                runner,
                &entry,
                (class_name, TriggerName::BeforeSave),
                &request,
                auth,
                code::VALIDATION_ERROR,
            )
            .await?;
        if let Some(left) = reply.context {
            *context = left;
        }
        let Some(Value::Object(returned)) = reply.success else {
            return Ok(None);
        };
        Ok(Some(merge_returned(body, &object, returned)))
    }

    /// Runs the class's beforeDelete hook, if it has one; its error refuses
    /// the delete. `context` becomes the context the hook left.
    pub(crate) async fn before_delete(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        class_name: &str,
        object_id: &str,
        context: &mut Map<String, Value>,
    ) -> ParseResult<()> {
        let Some((runner, entry)) = self
            .registered(class_name, TriggerName::BeforeDelete)
            .await?
        else {
            return Ok(());
        };
        let object = self
            .objects
            .object_for_hook(auth, class_name, object_id, Operation::Delete)
            .await?;
        let request = TriggerRequest {
            trigger_name: TriggerName::BeforeDelete,
            object: with_class(object, class_name),
            original: None,
            event_id: None,
            caller: self.caller(auth, req).await,
        };
        let reply = self
            .run_hook(
                runner,
                &entry,
                (class_name, TriggerName::BeforeDelete),
                &request,
                auth,
                code::VALIDATION_ERROR,
            )
            .await?;
        if let Some(left) = reply.context {
            *context = left;
        }
        Ok(())
    }

    /// The hook registered for `trigger` on `class_name`, with the runner
    /// that calls it. Until the registry's first load `/ready` answers 503;
    /// a request that comes anyway waits for the load while NATS is
    /// connected, and without NATS is refused with 503: which hooks exist
    /// is unknown, and going ahead could skip one.
    pub(crate) async fn registered(
        &self,
        class_name: &str,
        trigger: TriggerName,
    ) -> ParseResult<Option<(&HookRunner, HookEntry)>> {
        let Some(runner) = self.hooks.as_ref() else {
            return Ok(None);
        };
        let entry = runner
            .caller
            .trigger(class_name, trigger)
            .await
            .map_err(|err| ParseError::Unavailable(err.to_string()))?;
        Ok(entry.map(|entry| (runner, entry)))
    }

    /// Calls a trigger's hook. Its error reply fails the request, with the
    /// code the handler gave, or `default_code`.
    pub(crate) async fn run_hook(
        &self,
        runner: &HookRunner,
        entry: &HookEntry,
        (class_name, trigger): (&str, TriggerName),
        request: &impl Serialize,
        auth: &Auth,
        default_code: i32,
    ) -> ParseResult<HookReply> {
        let reply = runner
            .caller
            .call_trigger(
                entry,
                class_name,
                trigger,
                request,
                auth.request_id.as_deref(),
            )
            .await
            .map_err(|err| {
                call_failed(
                    &format!("The {trigger} hook of {class_name}"),
                    Some(entry),
                    err,
                )
            })?;
        match &reply.error {
            Some(err) => Err(rejected(err, default_code)),
            None => Ok(reply),
        }
    }

    /// Parse's `/hooks` routes, master key only.
    pub(crate) async fn hooks_route(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        auth.require_master()?;
        let deleting = req.body.get("__op").and_then(Value::as_str) == Some("Delete");
        // The read-only master key only reads hooks.
        match req.method {
            Method::GET => {}
            Method::POST => auth.require_writable("create")?,
            Method::PUT if !deleting => auth.require_writable("update")?,
            _ => auth.require_writable("delete")?,
        }
        let runner = self.hook_runner("Hooks")?;
        let registry = runner.registry();
        let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let to_body = |entry: HookEntry| serde_json::to_value(entry).unwrap_or_default();
        match (&req.method, &s[1..]) {
            (&Method::GET, ["functions"]) => Ok(Reply::ok(Value::Array(
                registry.functions().into_iter().map(to_body).collect(),
            ))),
            (&Method::GET, ["triggers"]) => Ok(Reply::ok(Value::Array(
                registry.triggers().into_iter().map(to_body).collect(),
            ))),
            (&Method::GET, ["jobs"]) => Ok(Reply::ok(Value::Array(
                registry.jobs().into_iter().map(to_body).collect(),
            ))),
            (&Method::GET, ["jobs", name]) => registry
                .job(name)
                .map(|e| Reply::ok(to_body(e)))
                .ok_or_else(|| no_job(name)),
            (&Method::GET, ["functions", name]) => registry
                .function(name)
                .map(|e| Reply::ok(to_body(e)))
                .ok_or_else(|| no_function(name)),
            (&Method::GET, ["triggers", class, trigger]) => TriggerName::parse(trigger)
                .and_then(|t| registry.trigger(stored_class(class), t))
                .map(|e| Reply::ok(to_body(e)))
                .ok_or_else(|| no_trigger(class)),
            (&Method::POST, ["functions" | "triggers" | "jobs"]) => {
                let entry = hook_entry(&req.body, None)?;
                let created = registry
                    .create(entry.clone())
                    .await
                    .map_err(|err| match err {
                        RegistryError::Exists => already_exists(&entry),
                        err => registry_failed(err),
                    })?;
                Ok(Reply::ok(to_body(created)))
            }
            (&Method::PUT, ["functions", name]) if deleting => {
                delete_hook(registry, &HookEntry::function_key(name)).await
            }
            (&Method::PUT, ["jobs", name]) if deleting => {
                delete_hook(registry, &HookEntry::job_key(name)).await
            }
            (&Method::PUT, ["triggers", class, trigger]) if deleting => {
                match TriggerName::parse(trigger) {
                    Some(t) => {
                        delete_hook(registry, &HookEntry::trigger_key(stored_class(class), t)).await
                    }
                    None => Ok(Reply::ok(Value::Object(Map::new()))),
                }
            }
            (&Method::PUT, ["functions", name]) => {
                let entry = hook_entry(&req.body, Some(HookName::Function(name)))?;
                update_hook(registry, entry, || no_function(name)).await
            }
            (&Method::PUT, ["jobs", name]) => {
                let entry = hook_entry(&req.body, Some(HookName::Job(name)))?;
                update_hook(registry, entry, || no_job(name)).await
            }
            (&Method::PUT, ["triggers", class, trigger]) => {
                let entry = hook_entry(&req.body, Some(HookName::Trigger(class, trigger)))?;
                update_hook(registry, entry, || no_trigger(class)).await
            }
            _ => Err(self.no_route(req)),
        }
    }
}

fn with_class(mut object: Object, class_name: &str) -> Object {
    object.insert("className".into(), Value::from(class_name));
    object
}

/// The write a beforeSave's returned object asks for. The returned object
/// replaces the request's fields, as in Parse Server, but a field the hook
/// returned as it was shown keeps the request's own operation (an
/// `Increment` stays atomic), and fixed fields keep theirs.
fn merge_returned(
    body: &Map<String, Value>,
    shown: &Object,
    returned: Map<String, Value>,
) -> (Map<String, Value>, Vec<String>) {
    let mut write = Map::new();
    let mut changed = Vec::new();
    for (key, value) in returned {
        if FIXED_FIELDS.contains(&key.as_str()) {
            continue;
        }
        if shown.get(&key) == Some(&value) {
            if let Some(asked) = body.get(&key) {
                write.insert(key, asked.clone());
            }
        } else {
            changed.push(key.clone());
            write.insert(key, value);
        }
    }
    for key in ["objectId"].iter().chain(SECRET_FIELDS) {
        if let Some(value) = body.get(*key) {
            write.insert((*key).to_owned(), value.clone());
        }
    }
    (write, changed)
}

/// The class a trigger is registered on: the one class of the log-in,
/// log-out, file and connect triggers (where Parse's `@File` is `_File` and
/// `@Connect` is `_Connect`), or a class of the app or one of Parse's own
/// that Cloud Code may hook.
fn trigger_class(class: String, trigger: TriggerName) -> ParseResult<String> {
    let class = stored_class(&class).to_owned();
    match trigger.only_class() {
        Some(only) if class == only => Ok(class),
        Some(only) => Err(invalid_hook(&format!(
            "{trigger} is a trigger of {only} only"
        ))),
        None if ["_User", "_Role", "_Session", "_Installation"].contains(&class.as_str()) => {
            Ok(class)
        }
        None => {
            validate_class_name(&class).map_err(|_| invalid_hook("invalid className"))?;
            Ok(class)
        }
    }
}

/// Parse's pseudo-classes `@File` and `@Connect` as oxbase registers them.
fn stored_class(class: &str) -> &str {
    match class {
        "@File" => FILE_CLASS,
        "@Connect" => CONNECT_CLASS,
        _ => class,
    }
}

enum HookName<'a> {
    Function(&'a str),
    Job(&'a str),
    Trigger(&'a str, &'a str),
}

fn invalid_hook(detail: &str) -> ParseError {
    ParseError::new(
        code::WEBHOOK_ERROR,
        format!("invalid hook declaration: {detail}"),
    )
}

/// The entry a `/hooks` body declares. On `PUT`, the name comes from the
/// path.
fn hook_entry(body: &Map<String, Value>, name: Option<HookName<'_>>) -> ParseResult<HookEntry> {
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let (function_name, class_name, trigger_name, job_name) = match name {
        Some(HookName::Function(name)) => (Some(name.to_owned()), None, None, None),
        Some(HookName::Job(name)) => (None, None, None, Some(name.to_owned())),
        Some(HookName::Trigger(class, trigger)) => {
            (None, Some(class.to_owned()), Some(trigger.to_owned()), None)
        }
        None => (
            text("functionName"),
            text("className"),
            text("triggerName"),
            text("jobName"),
        ),
    };
    let url = text("url");
    let nats = body.get("nats") == Some(&Value::Bool(true));
    match (&url, nats) {
        (Some(url), false) => validate_url(url)?,
        (None, true) => {}
        (Some(_), true) => return Err(invalid_hook("give either url or nats, not both")),
        (None, false) => return Err(invalid_hook("a url (or nats: true) is required")),
    }
    let name_ok = |name: &str| {
        if oxbase_proto::valid_token(name) {
            Ok(())
        } else {
            Err(invalid_hook(
                "a function or job name is 1 to 128 ASCII letters, digits, '_' or '-'",
            ))
        }
    };
    match (function_name, class_name, trigger_name, job_name) {
        (Some(name), None, None, None) => {
            name_ok(&name)?;
            Ok(HookEntry {
                function_name: Some(name),
                class_name: None,
                trigger_name: None,
                job_name: None,
                url,
                nats,
                rate_limit: None,
            })
        }
        (None, None, None, Some(name)) => {
            name_ok(&name)?;
            Ok(HookEntry {
                function_name: None,
                class_name: None,
                trigger_name: None,
                job_name: Some(name),
                url,
                nats,
                rate_limit: None,
            })
        }
        (None, Some(class), Some(trigger), None) => {
            let trigger = TriggerName::parse(&trigger).ok_or_else(|| {
                invalid_hook(&format!(
                    "triggerName must be one of {}",
                    TriggerName::ALL.map(TriggerName::as_str).join(", ")
                ))
            })?;
            let class = trigger_class(class, trigger)?;
            Ok(HookEntry {
                function_name: None,
                class_name: Some(class),
                trigger_name: Some(trigger),
                job_name: None,
                url,
                nats,
                rate_limit: None,
            })
        }
        _ => Err(invalid_hook(
            "give functionName, jobName, or className and triggerName",
        )),
    }
}

/// A webhook URL: http or https, with a host, and nothing a header cannot
/// carry.
fn validate_url(url: &str) -> ParseResult<()> {
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    let printable = url.bytes().all(|b| b.is_ascii_graphic());
    match host {
        Some(host) if !host.is_empty() && printable && url.len() <= 2048 => Ok(()),
        _ => Err(invalid_hook("url must be an http or https URL")),
    }
}

fn no_function(name: &str) -> ParseError {
    ParseError::new(
        code::WEBHOOK_ERROR,
        format!("no function named: {name} is defined"),
    )
}

fn no_job(name: &str) -> ParseError {
    ParseError::new(
        code::WEBHOOK_ERROR,
        format!("no job named: {name} is defined"),
    )
}

fn no_trigger(class: &str) -> ParseError {
    ParseError::new(code::WEBHOOK_ERROR, format!("class {class} does not exist"))
}

fn already_exists(entry: &HookEntry) -> ParseError {
    let message = match (&entry.function_name, &entry.class_name, entry.trigger_name) {
        (Some(name), _, _) => format!("function name: {name} already exists"),
        _ if entry.job_name.is_some() => format!(
            "job name: {} already exists",
            entry.job_name.as_deref().unwrap_or_default()
        ),
        (_, Some(class), Some(trigger)) => format!("class {class} already has trigger {trigger}"),
        _ => "the hook already exists".into(),
    };
    ParseError::new(code::WEBHOOK_ERROR, message)
}

fn registry_failed(err: RegistryError) -> ParseError {
    tracing::warn!(error = %err, "hook registry");
    ParseError::new(
        code::WEBHOOK_ERROR,
        "the hook registry is unavailable; try again",
    )
}

async fn delete_hook(registry: &HookRegistry, key: &str) -> ParseResult<Reply> {
    registry.delete(key).await.map_err(registry_failed)?;
    Ok(Reply::ok(Value::Object(Map::new())))
}

async fn update_hook(
    registry: &HookRegistry,
    entry: HookEntry,
    missing: impl FnOnce() -> ParseError,
) -> ParseResult<Reply> {
    match registry.update(entry).await {
        Ok(entry) => Ok(Reply::ok(serde_json::to_value(entry).unwrap_or_default())),
        Err(RegistryError::NotFound) => Err(missing()),
        Err(err) => Err(registry_failed(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_returned_object_replaces_the_write_but_keeps_unchanged_operations() {
        let body = map(json!({"score": {"__op": "Increment", "amount": 1}, "name": "a"}));
        let shown = map(json!({"objectId": "x", "score": 2, "name": "a", "level": 3}));
        let returned = map(json!({
            "objectId": "other", "createdAt": "t", "score": 2, "level": 3, "stamped": true
        }));
        let (write, changed) = merge_returned(&body, &shown, returned);
        assert_eq!(
            Value::Object(write),
            json!({"score": {"__op": "Increment", "amount": 1}, "stamped": true})
        );
        assert_eq!(changed, ["stamped"]);
    }

    #[test]
    fn live_query_triggers_are_registered_where_parse_registers_them() {
        let class = |class: &str, trigger| trigger_class(class.to_owned(), trigger);
        for connect in ["@Connect", "_Connect"] {
            assert_eq!(
                class(connect, TriggerName::BeforeConnect).unwrap(),
                CONNECT_CLASS
            );
        }
        for trigger in [TriggerName::BeforeSubscribe, TriggerName::AfterEvent] {
            for name in ["Game", "_User", "_Role", "_Installation"] {
                assert_eq!(class(name, trigger).unwrap(), name, "{trigger} on {name}");
            }
            for bad in ["@Connect", "@File", "1x", "_Hooks"] {
                assert!(class(bad, trigger).is_err(), "{trigger} on {bad}");
            }
        }
        for bad in ["Game", "_User", "@File"] {
            assert!(class(bad, TriggerName::BeforeConnect).is_err(), "{bad}");
        }
    }

    #[test]
    fn hook_declarations_are_checked() {
        let ok = hook_entry(
            &map(json!({"functionName": "f", "url": "https://x.io/f"})),
            None,
        );
        assert!(ok.is_ok());
        let nats = hook_entry(
            &map(json!({"className": "Game", "triggerName": "beforeSave", "nats": true})),
            None,
        )
        .unwrap();
        assert!(nats.nats && nats.url.is_none());
        let file = hook_entry(
            &map(json!({"className": "@File", "triggerName": "beforeSaveFile", "nats": true})),
            None,
        )
        .unwrap();
        assert_eq!(file.class_name.as_deref(), Some(FILE_CLASS));
        let connect = hook_entry(
            &map(json!({"className": "@Connect", "triggerName": "beforeConnect", "nats": true})),
            None,
        )
        .unwrap();
        assert_eq!(connect.class_name.as_deref(), Some(CONNECT_CLASS));
        for bad in [
            json!({"functionName": "f", "url": "ftp://x.io"}),
            json!({"functionName": "f", "url": "http://"}),
            json!({"functionName": "f"}),
            json!({"functionName": "a.b", "url": "http://x.io"}),
            json!({"className": "Game", "triggerName": "beforeFnd", "url": "http://x.io"}),
            json!({"className": "Game", "triggerName": "beforeLogin", "url": "http://x.io"}),
            json!({"className": "_User", "triggerName": "beforeSaveFile", "url": "http://x.io"}),
            json!({"className": "1x", "triggerName": "afterSave", "url": "http://x.io"}),
            json!({"className": "Game", "triggerName": "beforeConnect", "url": "http://x.io"}),
            json!({"className": "@Connect", "triggerName": "beforeSubscribe", "nats": true}),
            json!({"className": "@Connect", "triggerName": "afterEvent", "nats": true}),
            json!({"url": "http://x.io"}),
        ] {
            let err = hook_entry(&map(bad.clone()), None).unwrap_err();
            assert!(
                matches!(err, ParseError::Parse { code: 143, .. }),
                "{bad}: {err:?}"
            );
        }
    }
}
