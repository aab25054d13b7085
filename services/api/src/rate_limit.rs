//! Parse Server's `rateLimit`: rules that count requests by path, method
//! and zone in fixed windows, as express-rate-limit does, and refuse the
//! ones over a rule's count with 429.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use axum::http::{Method, StatusCode};
use oxbase_kit::{Config, NatsError};
use oxbase_objects::{Auth, ParseError, ParseResult, code};
use regex::Regex;
use serde_json::{Value, json};

use crate::App;
use crate::config::{RateLimitConfig, RateLimitRule, RateLimitStore, RateLimitZone};
use crate::request::ParseRequest;
use crate::routes::Reply;
use crate::shared_bucket::{SharedBucket, digest_key};
use oxbase_proto::{HookEntry, RequestMethods, TriggerName};

/// A rule, ready to match.
pub(crate) struct Rule {
    /// Names the rule's counts in the shared bucket, so processes agree on
    /// it whatever the order of their rules.
    id: String,
    path: Regex,
    methods: Methods,
    window: Duration,
    limit: u64,
    message: String,
    include_master_key: bool,
    include_internal_requests: bool,
    zone: RateLimitZone,
}

enum Methods {
    Any,
    List(Vec<String>),
    Pattern(Regex),
}

impl Methods {
    fn matches(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::List(list) => list.iter().any(|m| m.eq_ignore_ascii_case(method)),
            Methods::Pattern(pattern) => pattern.is_match(method),
        }
    }
}

impl Rule {
    pub(crate) fn compile(rule: &RateLimitRule) -> Result<Self, String> {
        Self::with_path(rule, path_regex(&rule.request_path)?)
    }

    /// The rule, matching `path`; `rule.request_path` names its counts.
    fn with_path(rule: &RateLimitRule, path: Regex) -> Result<Self, String> {
        if rule.request_time_window == 0 {
            return Err("request_time_window must be greater than 0".into());
        }
        let methods = match &rule.request_methods {
            None => Methods::Any,
            Some(RequestMethods::List(list)) => Methods::List(list.clone()),
            Some(RequestMethods::Pattern(pattern)) => Methods::Pattern(
                Regex::new(pattern).map_err(|err| format!("request_methods {pattern:?}: {err}"))?,
            ),
        };
        let id = digest_key(&format!(
            "{}\n{}\n{:?}\n{:?}",
            rule.request_path, rule.request_time_window, rule.zone, rule.request_methods
        ))[..12]
            .to_owned();
        Ok(Self {
            id,
            path,
            methods,
            window: Duration::from_millis(rule.request_time_window),
            limit: rule.request_count,
            message: rule.error_response_message.clone(),
            include_master_key: rule.include_master_key,
            include_internal_requests: rule.include_internal_requests,
            zone: rule.zone,
        })
    }

    /// The rule of a hook's `rateLimit`, on the hook's routes; `None` for
    /// a hook without one, or whose trigger takes none.
    fn for_hook(entry: &HookEntry) -> Option<Self> {
        let limit = entry.rate_limit.as_ref()?;
        let (paths, methods) = hook_routes(entry)?;
        let rule = RateLimitRule {
            request_path: paths.join(" "),
            request_time_window: limit.request_time_window,
            request_count: limit.request_count,
            error_response_message: limit
                .error_response_message
                .clone()
                .unwrap_or_else(|| "Too many requests.".into()),
            request_methods: limit.request_methods.clone().or_else(|| {
                methods.map(|methods| {
                    RequestMethods::List(methods.iter().map(|m| (*m).to_owned()).collect())
                })
            }),
            include_master_key: limit.include_master_key,
            include_internal_requests: limit.include_internal_requests,
            zone: limit.zone,
        };
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        paths_regex(&paths)
            .and_then(|path| Self::with_path(&rule, path))
            .inspect_err(|err| {
                tracing::warn!(hook = ?oxbase_hooks::key_of(entry), %err, "ignoring a hook's rate limit");
            })
            .ok()
    }

    /// Whether the rule counts a request to a path it matches. A batch
    /// item also counts for rules on `POST`, the batch's own method, as
    /// in Parse.
    fn counts(&self, method: &str, in_batch: bool, master: bool, ip: IpAddr) -> bool {
        if !self.include_internal_requests && is_internal(ip) {
            return false;
        }
        let method_matches =
            self.methods.matches(method) || (in_batch && self.methods.matches("POST"));
        method_matches && (self.include_master_key || !master)
    }

    /// Whose count the request adds to.
    fn zone_key(&self, auth: &Auth, token: Option<&str>, ip: IpAddr) -> String {
        let by_ip = || format!("ip:{}", ip.to_canonical());
        match self.zone {
            RateLimitZone::Global => "global".into(),
            RateLimitZone::Ip => by_ip(),
            RateLimitZone::Session => token.map_or_else(by_ip, |token| format!("session:{token}")),
            RateLimitZone::User => match (token, &auth.user) {
                (Some(_), Some(user)) => format!("user:{}", user.id),
                _ => by_ip(),
            },
        }
    }
}

/// Parse's "internal request": one from 127.0.0.1, which its Cloud Code
/// makes when it calls the API.
fn is_internal(ip: IpAddr) -> bool {
    ip.to_canonical() == IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// A path-to-regexp v8 pattern as a regex: text, `:name` (one segment),
/// `*name` (one or more segments), `{...}` (optional), `\` (escapes the
/// next character); case-insensitive, with an optional trailing slash.
fn path_regex(pattern: &str) -> Result<Regex, String> {
    paths_regex(&[pattern])
}

/// A regex matching any of the patterns.
fn paths_regex(patterns: &[&str]) -> Result<Regex, String> {
    let bodies = patterns
        .iter()
        .map(|pattern| path_tokens(&mut pattern.chars().peekable(), pattern, false))
        .collect::<Result<Vec<_>, _>>()?;
    Regex::new(&format!("(?is)^(?:{})/?$", bodies.join("|"))).map_err(|err| err.to_string())
}

/// The routes a hook's `rateLimit` counts, as Parse Server's Cloud Code
/// adds them: the paths and the methods unless the limit names its own.
/// Parse gives `_User` the path `/users/_User`, which no request takes;
/// oxbase counts `/users` there, and the `/classes` paths of the built-in
/// classes beside their own.
fn hook_routes(entry: &HookEntry) -> Option<(Vec<String>, Option<&'static [&'static str]>)> {
    if let Some(name) = &entry.function_name {
        return Some((vec![format!("/functions/{}", escape_path(name))], None));
    }
    let class = entry.class_name.as_deref()?;
    let class_routes = || {
        let own = match class {
            "_User" => Some("/users{/*id}"),
            "_Session" => Some("/sessions{/*id}"),
            "_Role" => Some("/roles{/*id}"),
            "_Installation" => Some("/installations{/*id}"),
            _ => None,
        };
        let mut paths = vec![format!("/classes/{}{{/*id}}", escape_path(class))];
        paths.extend(own.map(str::to_owned));
        paths
    };
    let files = || vec!["/files{/*id}".to_owned()];
    Some(match entry.trigger_name? {
        TriggerName::BeforeSave => (class_routes(), Some(&["POST", "PUT"])),
        TriggerName::BeforeDelete => (class_routes(), Some(&["DELETE"])),
        TriggerName::BeforeFind => (class_routes(), Some(&["GET"])),
        TriggerName::BeforeLogin => (vec!["/login".to_owned()], Some(&["POST", "GET"])),
        TriggerName::BeforePasswordResetRequest => {
            (vec!["/requestPasswordReset".to_owned()], Some(&["POST"]))
        }
        TriggerName::BeforeSaveFile => (files(), Some(&["POST", "PUT"])),
        TriggerName::BeforeDeleteFile => (files(), Some(&["DELETE"])),
        _ => return None,
    })
}

/// A name as literal text of a path-to-regexp pattern.
fn escape_path(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let special = matches!(
                c,
                ':' | '*' | '{' | '}' | '(' | ')' | '[' | ']' | '+' | '?' | '!' | '\\'
            );
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

fn path_tokens(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    pattern: &str,
    in_group: bool,
) -> Result<String, String> {
    let invalid = |what: String| format!("request_path {pattern:?}: {what}");
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let escaped = chars
                    .next()
                    .ok_or_else(|| invalid("nothing after \\".into()))?;
                out.push_str(&regex::escape(escaped.encode_utf8(&mut [0; 4])));
            }
            ':' | '*' => {
                if param_name(chars).is_empty() {
                    return Err(invalid(format!("missing a parameter name after {c}")));
                }
                out.push_str(if c == ':' { "[^/]+" } else { ".+" });
            }
            '{' => out.push_str(&format!("(?:{})?", path_tokens(chars, pattern, true)?)),
            '}' if in_group => return Ok(out),
            '}' | '(' | ')' | '[' | ']' | '+' | '?' | '!' => {
                return Err(invalid(format!("unexpected {c}")));
            }
            other => out.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
        }
    }
    if in_group {
        return Err(invalid("a { is not closed".into()));
    }
    Ok(out)
}

/// A parameter's name: an identifier, or any text in double quotes.
fn param_name(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut name = String::new();
    if chars.peek() == Some(&'"') {
        chars.next();
        while let Some(c) = chars.next() {
            match c {
                '"' => return name,
                '\\' => name.extend(chars.next()),
                c => name.push(c),
            }
        }
        // An unterminated quote names nothing.
        return String::new();
    }
    while let Some(&c) = chars.peek() {
        let allowed =
            c == '_' || c == '$' || c.is_alphabetic() || (!name.is_empty() && c.is_alphanumeric());
        if !allowed {
            break;
        }
        name.push(c);
        chars.next();
    }
    name
}

/// The rules and their counts.
pub(crate) struct RateLimits {
    rules: Vec<Rule>,
    /// The rules of the registered hooks' `rateLimit`s.
    hook_rules: Mutex<HookRules>,
    counts: Counts,
}

/// Hook rules, compiled once per change of the registry's entries.
#[derive(Default)]
struct HookRules {
    from: Option<Arc<[HookEntry]>>,
    rules: Arc<[Rule]>,
}

enum Counts {
    /// A window table per rule, by the rule's id, in this process.
    Memory(Mutex<HashMap<String, Windows>>),
    Shared(Box<SharedCounts>),
}

/// A request's count in its window.
struct Hit {
    hits: u64,
    reset_in: Duration,
}

/// The rule a request went over.
struct Refusal<'a> {
    message: &'a str,
    reset_in: Duration,
}

/// What a request's counts come to.
#[derive(Default)]
struct Outcome<'a> {
    refusal: Option<Refusal<'a>>,
    /// The count with the fewest requests left, for the `X-RateLimit-*`
    /// headers.
    tightest: Option<Left>,
}

/// A rule's limit, the requests left in the window, and when it ends.
struct Left {
    limit: u64,
    remaining: u64,
    reset_in: Duration,
}

impl Left {
    /// express-rate-limit's legacy headers, which Parse Server sends:
    /// the window's end is in Unix seconds, rounded up.
    fn headers(&self) -> [(&'static str, String); 3] {
        let reset = SystemTime::now() + self.reset_in;
        let reset = reset
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().div_ceil(1000));
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ]
    }
}

impl RateLimits {
    pub(crate) fn from_config(config: &Config, nats: Option<&async_nats::Client>) -> Self {
        let section: RateLimitConfig = config.section();
        // A loaded config has been validated; a rule that still does not
        // compile (a config built in code) is left out, loudly.
        let rules: Vec<Rule> = section
            .rules
            .iter()
            .filter_map(|rule| {
                Rule::compile(rule)
                    .inspect_err(|err| tracing::error!(%err, "ignoring a rate limit rule"))
                    .ok()
            })
            .collect();
        let subjects = oxbase_proto::Subjects::new(config.events.prefix.as_str()).ok();
        let counts = match (section.store, nats, subjects) {
            (RateLimitStore::Nats, Some(client), Some(subjects)) => {
                // Counts outlive their window in the bucket; hooks' rules
                // are not known yet, so a day is kept at least.
                let longest = rules.iter().map(|rule| rule.window).max();
                Counts::Shared(Box::new(SharedCounts {
                    bucket: SharedBucket::new(
                        client,
                        &subjects,
                        "RATE_LIMITS",
                        "oxbase rate limit counts",
                        longest.unwrap_or_default().max(SHARED_HORIZON),
                        SHARED_TIMEOUT,
                    ),
                    degraded: AtomicBool::new(false),
                }))
            }
            (store, ..) => {
                if store == RateLimitStore::Nats && !rules.is_empty() {
                    tracing::warn!(
                        "rate_limit.store = \"nats\" without NATS: each process counts alone"
                    );
                }
                Counts::Memory(Mutex::default())
            }
        };
        Self {
            rules,
            hook_rules: Mutex::default(),
            counts,
        }
    }

    /// The rules of `entries` (the registry's hooks with a `rateLimit`),
    /// compiled again only when the registry has changed.
    fn hook_rules(&self, entries: Arc<[HookEntry]>) -> Arc<[Rule]> {
        let mut cached = self.hook_rules.lock().unwrap_or_else(|e| e.into_inner());
        if cached
            .from
            .as_ref()
            .is_some_and(|from| Arc::ptr_eq(from, &entries))
        {
            return Arc::clone(&cached.rules);
        }
        let rules: Arc<[Rule]> = entries.iter().filter_map(Rule::for_hook).collect();
        *cached = HookRules {
            from: Some(entries),
            rules: Arc::clone(&rules),
        };
        rules
    }

    /// Adds the request to the count of every rule it matches (each one,
    /// as Parse does, even past the first that refuses it): the first rule
    /// it goes over, if any, and the count with the fewest requests left.
    async fn count<'a>(&'a self, hook_rules: &'a [Rule], request: &Counted<'_>) -> Outcome<'a> {
        let mut outcome = Outcome::default();
        for rule in self.rules.iter().chain(hook_rules) {
            if !rule.path.is_match(request.path)
                || !rule.counts(
                    request.method,
                    request.in_batch,
                    request.auth.master,
                    request.ip,
                )
            {
                continue;
            }
            let key = rule.zone_key(request.auth, request.token, request.ip);
            let hit = match &self.counts {
                Counts::Memory(tables) => Some(
                    tables
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(rule.id.clone())
                        .or_default()
                        .hit(key, rule.window, Instant::now()),
                ),
                Counts::Shared(shared) => shared.hit(rule, &key).await,
            };
            let Some(hit) = hit else { continue };
            if hit.hits > rule.limit && outcome.refusal.is_none() {
                outcome.refusal = Some(Refusal {
                    message: &rule.message,
                    reset_in: hit.reset_in,
                });
            }
            let remaining = rule.limit.saturating_sub(hit.hits);
            if outcome
                .tightest
                .as_ref()
                .is_none_or(|left| remaining < left.remaining)
            {
                outcome.tightest = Some(Left {
                    limit: rule.limit,
                    remaining,
                    reset_in: hit.reset_in,
                });
            }
        }
        outcome
    }
}

/// What a rule looks at in a request, or in an item of a batch.
struct Counted<'a> {
    path: &'a str,
    method: &'a str,
    in_batch: bool,
    auth: &'a Auth,
    token: Option<&'a str>,
    ip: IpAddr,
}

/// `/login` ignores the session token it is sent, so its zone does too.
fn session_token<'a>(req: &'a ParseRequest, path: &str) -> Option<&'a str> {
    let login = path.trim_end_matches('/').eq_ignore_ascii_case("/login");
    req.credentials.session_token.as_deref().filter(|_| !login)
}

impl App {
    /// Counts a request against the rules; a request over one gets Parse's
    /// refusal, 429 `{"code": 100, ...}`. A batch counts, and then each of
    /// its items; an item over a rule fails the whole batch, before any of
    /// it runs, with 400 and the same body, as in Parse. `path` is the
    /// request's path below the mount path, as sent. The `X-RateLimit-*`
    /// headers of the request's own count go in `headers`, whatever the
    /// answer.
    pub(crate) async fn rate_limit(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        path: &str,
        headers: &mut Vec<(&'static str, String)>,
    ) -> ParseResult<Option<Reply>> {
        let hook_entries = self.hooks.as_ref().map(|hooks| hooks.rate_limited());
        let hook_rules = match hook_entries {
            Some(entries) if !entries.is_empty() => self.rate_limits.hook_rules(entries),
            _ if self.rate_limits.rules.is_empty() => return Ok(None),
            _ => Arc::from([]),
        };
        let counted = Counted {
            path,
            method: req.method.as_str(),
            in_batch: false,
            auth,
            token: session_token(req, path),
            ip: req.ip,
        };
        let outcome = self.rate_limits.count(&hook_rules, &counted).await;
        if let Some(left) = &outcome.tightest {
            headers.extend(left.headers());
        }
        if let Some(refusal) = outcome.refusal {
            let mut reply = Reply::ok(json!({
                "code": code::CONNECTION_FAILED,
                "error": refusal.message,
            }));
            reply.status = StatusCode::TOO_MANY_REQUESTS;
            let seconds = refusal.reset_in.as_millis().div_ceil(1000);
            reply.headers.push(("retry-after", seconds.to_string()));
            return Ok(Some(reply));
        }
        if req.method != Method::POST || req.segments != ["batch"] {
            return Ok(None);
        }
        let items = req.body.get("requests").and_then(Value::as_array);
        for item in items.into_iter().flatten() {
            // An item that does not route fails the batch when it runs.
            let Some(path) = item
                .get("path")
                .and_then(Value::as_str)
                .and_then(|path| self.batch_item_path(path))
            else {
                continue;
            };
            let method = item
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("GET")
                .to_ascii_uppercase();
            let counted = Counted {
                path: &path,
                method: &method,
                in_batch: true,
                token: session_token(req, &path),
                ..counted
            };
            if let Some(refusal) = self.rate_limits.count(&hook_rules, &counted).await.refusal {
                return Err(ParseError::new(code::CONNECTION_FAILED, refusal.message));
            }
        }
        Ok(None)
    }

    /// A batch item's path below the mount path (or below the public URL's
    /// path), as `/batch` routes it.
    fn batch_item_path(&self, path: &str) -> Option<String> {
        let rest = self.batch_item_route(path)?;
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        Some(format!("/{}", segments.join("/")))
    }
}

/// The clients of one rule with their windows, in this process.
#[derive(Default)]
struct Windows {
    clients: HashMap<String, Window>,
    swept: Option<Instant>,
}

struct Window {
    reset: Instant,
    hits: u64,
}

impl Windows {
    /// A fixed window per client, from its first request, as
    /// express-rate-limit's memory store keeps.
    fn hit(&mut self, key: String, window: Duration, now: Instant) -> Hit {
        // Once a window, forget the clients whose window is over, so the
        // table holds only the recent ones.
        if self.swept.is_none_or(|at| now >= at + window) {
            self.clients.retain(|_, client| client.reset > now);
            self.swept = Some(now);
        }
        let client = self.clients.entry(key).or_insert(Window {
            reset: now + window,
            hits: 0,
        });
        if client.reset <= now {
            *client = Window {
                reset: now + window,
                hits: 0,
            };
        }
        client.hits += 1;
        Hit {
            hits: client.hits,
            reset_in: client.reset - now,
        }
    }
}

/// How long the shared bucket keeps a count at least. A hook's rule with
/// a longer window than this (and than every configured rule's) starts
/// over once its count is this old.
const SHARED_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// How long one NATS call of a count may take: past it, the request goes
/// through uncounted.
const SHARED_TIMEOUT: Duration = Duration::from_secs(1);

/// Compare-and-set rounds before giving up on a count that other
/// processes keep changing.
const SHARED_ATTEMPTS: u64 = 50;

/// Counts in the `<PREFIX>_RATE_LIMITS` bucket, one key per rule and
/// client, holding `"<window end, unix ms> <hits>"`.
struct SharedCounts {
    bucket: SharedBucket,
    /// Whether the last count failed, so that an outage is logged once,
    /// not on every request.
    degraded: AtomicBool,
}

impl SharedCounts {
    /// The request's count; `None` when NATS cannot say. Limits are then
    /// not enforced: availability comes first.
    async fn hit(&self, rule: &Rule, client: &str) -> Option<Hit> {
        match self.try_hit(rule, client).await {
            Ok(hit) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limits are enforced again: NATS answers");
                }
                Some(hit)
            }
            Err(err) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%err, "rate limits are not enforced: their counts in NATS are unreachable");
                }
                None
            }
        }
    }

    /// An increment no other process's can overwrite: a create for a new
    /// window, else an update on the revision read.
    async fn try_hit(&self, rule: &Rule, client: &str) -> Result<Hit, NatsError> {
        let kv = self.bucket.get().await?;
        let key = format!("{}.{}", rule.id, digest_key(client));
        let window = u64::try_from(rule.window.as_millis()).unwrap_or(u64::MAX);
        for attempt in 0..SHARED_ATTEMPTS {
            if attempt > 0 {
                // Lost a race: requests that lost together retry apart,
                // or they would keep colliding on the next revision.
                let pause = rand::random_range(0..=attempt.min(20) * 200);
                tokio::time::sleep(Duration::from_micros(pause)).await;
            }
            let now = unix_millis();
            let entry = kv
                .entry(key.as_str())
                .await?
                .filter(|entry| entry.operation == kv::Operation::Put);
            let Some(entry) = entry else {
                match kv.create(&key, encode(now + window, 1)).await {
                    Ok(_) => {
                        return Ok(Hit {
                            hits: 1,
                            reset_in: rule.window,
                        });
                    }
                    Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(err) => return Err(err.into()),
                }
            };
            let (reset, hits) = decode(&entry.value)
                .filter(|(reset, _)| *reset > now)
                .unwrap_or((now + window, 0));
            match kv
                .update(&key, encode(reset, hits + 1), entry.revision)
                .await
            {
                Ok(_) => {
                    return Ok(Hit {
                        hits: hits + 1,
                        reset_in: Duration::from_millis(reset - now),
                    });
                }
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(NatsError::new(
            "a rate limit count kept changing under concurrent updates",
        ))
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode(reset: u64, hits: u64) -> bytes::Bytes {
    format!("{reset} {hits}").into()
}

fn decode(value: &[u8]) -> Option<(u64, u64)> {
    let (reset, hits) = std::str::from_utf8(value).ok()?.split_once(' ')?;
    Some((reset.parse().ok()?, hits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        path_regex(pattern).unwrap().is_match(path)
    }

    #[test]
    fn paths_follow_path_to_regexp_v8() {
        assert!(matches("/classes/:className", "/classes/GameScore"));
        assert!(matches("/classes/:className", "/Classes/GameScore/"));
        assert!(!matches("/classes/:className", "/classes/GameScore/abc"));
        assert!(!matches("/classes/:className", "/classes"));
        assert!(matches("/functions/*name", "/functions/a/b"));
        assert!(!matches("/functions/*name", "/functions/"));
        assert!(matches("/*path", "/anything/at/all"));
        assert!(matches("/login", "/login"));
        assert!(!matches("/login", "/loginx"));
        assert!(matches("/users{/:id}", "/users"));
        assert!(matches("/users{/:id}", "/users/abc"));
        assert!(matches("/a.b", "/a.b"));
        assert!(!matches("/a.b", "/aXb"));
        assert!(matches(r"/a\:b", "/a:b"));
        assert!(matches(r#"/x/:"quoted name""#, "/x/1"));
        for bad in [
            "/functions/*",
            "/a/:",
            "/a(b)",
            "/a?",
            "/{open",
            "/close}",
            r"/end\",
        ] {
            assert!(path_regex(bad).is_err(), "{bad}");
        }
    }

    fn rule(methods: Option<oxbase_proto::RequestMethods>) -> Rule {
        Rule::compile(&RateLimitRule {
            request_path: "/*path".into(),
            request_time_window: 1000,
            request_count: 1,
            error_response_message: "no".into(),
            request_methods: methods,
            include_master_key: false,
            include_internal_requests: false,
            zone: RateLimitZone::Ip,
        })
        .unwrap()
    }

    #[test]
    fn who_and_what_a_rule_counts() {
        let remote: IpAddr = "203.0.113.9".parse().unwrap();
        let local: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let any = rule(None);
        assert!(any.counts("GET", false, false, remote));
        assert!(!any.counts("GET", false, true, remote), "master skips");
        assert!(!any.counts("GET", false, false, local), "internal skips");
        let list = rule(Some(RequestMethods::List(vec!["put".into()])));
        assert!(list.counts("PUT", false, false, remote));
        assert!(!list.counts("GET", false, false, remote));
        let post = rule(Some(RequestMethods::Pattern("^POST$".into())));
        assert!(!post.counts("GET", false, false, remote));
        assert!(
            post.counts("GET", true, false, remote),
            "a batch item is a POST too"
        );
    }

    #[test]
    fn windows_are_fixed_per_client() {
        let mut windows = Windows::default();
        let window = Duration::from_secs(10);
        let start = Instant::now();
        assert_eq!(windows.hit("a".into(), window, start).hits, 1);
        assert_eq!(
            windows
                .hit("a".into(), window, start + Duration::from_secs(5))
                .hits,
            2
        );
        assert_eq!(
            windows
                .hit("b".into(), window, start + Duration::from_secs(5))
                .hits,
            1
        );
        let later = start + Duration::from_secs(11);
        let hit = windows.hit("a".into(), window, later);
        assert_eq!(hit.hits, 1, "a new window");
        assert_eq!(hit.reset_in, window);
        assert_eq!(windows.clients.len(), 2, "b's window is still open");
        windows.hit("a".into(), window, start + Duration::from_secs(30));
        assert_eq!(windows.clients.len(), 1, "b was forgotten");
    }

    #[test]
    fn rules_read_parse_names_and_ours() {
        let parse: RateLimitRule = serde_json::from_value(json!({
            "requestPath": "/login",
            "requestTimeWindow": 1000,
            "requestCount": 3,
            "requestMethods": "^POST$",
            "zone": "session",
        }))
        .unwrap();
        assert_eq!(parse.error_response_message, "Too many requests.");
        assert_eq!(parse.zone, RateLimitZone::Session);
        assert!(Rule::compile(&parse).is_ok());
        let ours: RateLimitRule = serde_json::from_value(json!({
            "request_path": "/functions/*",
            "request_time_window": 1000,
            "request_count": 3,
            "request_methods": ["POST"],
        }))
        .unwrap();
        assert_eq!(ours.zone, RateLimitZone::Ip);
        assert!(
            Rule::compile(&ours).is_err(),
            "a wildcard needs a name in v8"
        );
        let no_window = RateLimitRule {
            request_time_window: 0,
            ..parse
        };
        assert!(Rule::compile(&no_window).is_err());
    }

    #[test]
    fn hooks_count_on_their_routes() {
        let hook = |entry: Value| -> HookEntry {
            let mut entry = entry;
            entry["nats"] = json!(true);
            entry["rateLimit"] = json!({"requestTimeWindow": 1000, "requestCount": 1});
            serde_json::from_value(entry).unwrap()
        };
        let function = Rule::for_hook(&hook(json!({"functionName": "a:b"}))).unwrap();
        assert!(function.path.is_match("/functions/a:b"));
        assert!(!function.path.is_match("/functions/a"));
        assert!(function.methods.matches("GET"), "every method");
        let users = Rule::for_hook(&hook(
            json!({"className": "_User", "triggerName": "beforeSave"}),
        ))
        .unwrap();
        for path in [
            "/users",
            "/users/abc",
            "/classes/_User",
            "/classes/_User/abc",
        ] {
            assert!(users.path.is_match(path), "{path}");
        }
        assert!(!users.path.is_match("/classes/Other"));
        assert!(users.methods.matches("PUT") && !users.methods.matches("GET"));
        let login = Rule::for_hook(&hook(
            json!({"className": "_User", "triggerName": "beforeLogin"}),
        ))
        .unwrap();
        assert!(login.path.is_match("/login") && login.methods.matches("GET"));
        assert!(
            Rule::for_hook(&hook(json!({"className": "A", "triggerName": "afterSave"}))).is_none(),
            "Parse gives after-triggers no limit"
        );
    }

    #[test]
    fn shared_values_round_trip() {
        assert_eq!(decode(&encode(12, 3)), Some((12, 3)));
        assert_eq!(decode(b"garbage"), None);
    }
}
