//! Routing of authenticated Parse requests, including `/batch`.

use axum::http::{Method, StatusCode};
use futures_util::future::join_all;
use oxbase_objects::{
    Auth, ParseError, ParseResult, PreparedWrite, WriteEffect, WriteReply, code, installations,
    query::{FindMode, FindOptions},
};
use serde_json::{Map, Value, json};

use crate::App;
use crate::request::ParseRequest;

/// A response body with its status and, for creates, its `Location`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub location: Option<String>,
    /// Headers besides the usual ones, such as `X-Parse-Job-Status-Id`.
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            location: None,
            headers: Vec::new(),
        }
    }
}

/// Parse Server routes oxbase does not serve yet; they answer with an error
/// that says so rather than "no such route".
const NOT_YET: &[&str] = &["graphql", "events", "validate_purchase", "security"];

/// Parse's class aliases: `/users`, `/roles` and `/sessions` are the
/// class routes of `_User`, `_Role` and `_Session`, except for `me`.
pub(crate) fn canonical_segments(segments: Vec<String>) -> Vec<String> {
    let class = match segments.first().map(String::as_str) {
        Some("users") => "_User",
        Some("roles") => "_Role",
        Some("sessions") => "_Session",
        Some("installations") => "_Installation",
        _ => return segments,
    };
    if segments.get(1).is_some_and(|s| s == "me") {
        return segments;
    }
    let mut out = vec!["classes".to_owned(), class.to_owned()];
    out.extend(segments.into_iter().skip(1));
    out
}

/// A write a request makes to `/classes`, if it is one.
enum ClassWrite<'a> {
    Create(&'a str),
    Update(&'a str, &'a str),
    Delete(&'a str, &'a str),
}

fn class_write(req: &ParseRequest) -> Option<ClassWrite<'_>> {
    let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (&req.method, s.as_slice()) {
        (&Method::POST, ["classes", class]) => Some(ClassWrite::Create(class)),
        (&Method::PUT, ["classes", class, id]) => Some(ClassWrite::Update(class, id)),
        (&Method::DELETE, ["classes", class, id]) => Some(ClassWrite::Delete(class, id)),
        _ => None,
    }
}

/// Whether a request names a route, so a batch can refuse unroutable items
/// before running any of them, as Parse Server does.
fn is_routable(req: &ParseRequest) -> bool {
    let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    class_write(req).is_some()
        || matches!(
            (&req.method, s.as_slice()),
            (&Method::GET, ["classes", _])
                | (&Method::GET, ["classes", _, _])
                | (&Method::GET, ["users" | "sessions", "me"])
                | (&Method::GET | &Method::POST, ["login" | "verifyPassword"])
                | (
                    &Method::POST,
                    ["logout"
                        | "loginAs"
                        | "upgradeToRevocableSession"
                        | "requestPasswordReset"
                        | "verificationEmailRequest"
                        | "challenge"]
                )
        )
        || s.first().is_some_and(|root| NOT_YET.contains(root))
}

/// Parse answers a change to a user that the user's ACL refused (or that
/// names no user) with 206, not 101, unless the master key made it.
fn user_write_refused(auth: &Auth, write: &ClassWrite<'_>, err: ParseError) -> ParseError {
    let to_user = matches!(
        write,
        ClassWrite::Update("_User", _) | ClassWrite::Delete("_User", _)
    );
    match err {
        ParseError::Parse {
            code: code::OBJECT_NOT_FOUND,
            ..
        } if to_user && !auth.master => ParseError::new(code::SESSION_MISSING, "Permission denied"),
        other => other,
    }
}

impl App {
    pub(crate) async fn dispatch(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        let aliased;
        let req = if matches!(
            req.segments.first().map(String::as_str),
            Some("users" | "roles" | "sessions" | "installations")
        ) {
            aliased = ParseRequest {
                segments: canonical_segments(req.segments.clone()),
                ..req.clone()
            };
            &aliased
        } else {
            req
        };
        if let Some(write) = class_write(req) {
            if let ClassWrite::Create("_User") = write {
                return self.signup(auth, req).await;
            }
            let refused = |err| user_write_refused(auth, &write, err);
            let prepared = self.prepare(auth, req, &write).await.map_err(refused)?;
            let effect = WriteEffect::of(&prepared);
            let reply = self.objects.commit_one(prepared).await.map_err(refused)?;
            self.objects
                .after_writes(std::slice::from_ref(&effect))
                .await;
            self.mail_verification(&effect);
            let mut reply = self.write_reply(req, &write, reply);
            self.objects
                .renew_session_after(auth, &effect, &mut reply.body)
                .await?;
            return Ok(reply);
        }
        let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        match (&req.method, s.as_slice()) {
            (&Method::GET, ["users", "me"]) => self.me(auth, req).await,
            (&Method::GET, ["sessions", "me"]) => self.session_me(auth, req).await,
            (&Method::GET | &Method::POST, ["login"]) => self.login(auth, req).await,
            (&Method::POST, ["logout"]) => self.logout(auth, req).await,
            (&Method::GET | &Method::POST, ["verifyPassword"]) => {
                self.verify_password(auth, req).await
            }
            (&Method::POST, ["challenge"]) => self.challenge(auth, req).await,
            (&Method::POST, ["loginAs"]) => self.login_as(auth, req).await,
            (&Method::POST, ["upgradeToRevocableSession"]) => self.upgrade_session(auth).await,
            (&Method::POST, ["requestPasswordReset"]) => {
                self.request_password_reset(auth, req).await
            }
            (&Method::POST, ["verificationEmailRequest"]) => {
                self.verification_email_request(req).await
            }
            (&Method::GET, ["classes", class]) => self.find_route(auth, req, class).await,
            (&Method::GET, ["classes", class, id]) => self.get_route(auth, req, class, id).await,
            (&Method::POST, ["batch"]) => self.batch(auth, req).await,
            (_, ["files", ..]) => self.files_route(auth, req).await,
            (_, ["config"]) => self.config_route(auth, req).await,
            (_, ["schemas", ..]) => self.schemas_route(auth, req).await,
            (_, ["hooks", ..]) => self.hooks_route(auth, req).await,
            (_, ["jobs", ..]) => self.jobs_route(auth, req).await,
            (_, ["queues", ..]) => self.queues_route(auth, req).await,
            (_, ["cron", ..]) => self.cron_route(auth, req).await,
            (_, ["push", ..]) => self.push_route(auth, req).await,
            (_, ["cloud_code", ..]) => self.cloud_code_route(auth, req).await,
            (&Method::GET | &Method::POST, ["functions", name]) => {
                self.function_route(auth, req, name).await
            }
            (_, ["serverInfo"]) => self.server_info(auth, req),
            (&Method::GET, ["aggregate", class]) => self.aggregate_route(auth, req, class).await,
            (&Method::DELETE, ["purge", class]) => self.purge(auth, class).await,
            (_, ["push_audiences", ..]) => self.push_audiences(auth, req).await,
            (_, ["scriptlog", ..]) => self.script_log(auth, req),
            (_, [root, ..]) if NOT_YET.contains(root) => {
                Err(ParseError::not_supported(format!("/{root}")))
            }
            _ => Err(self.no_route(req)),
        }
    }

    /// `GET /classes/{class}`, with Parse's `explain` and
    /// `redirectClassNameForKey`.
    async fn find_route(&self, auth: &Auth, req: &ParseRequest, class: &str) -> ParseResult<Reply> {
        let mut params = req.params.clone();
        let mode = FindMode::take(&mut params)?;
        let class = match &mode.redirect_key {
            Some(key) => self.objects.relation_target(class, key).await?,
            None => class.to_owned(),
        };
        self.before_find(auth, req, &class, &mut params, false)
            .await?;
        let options = FindOptions::for_find(&params, self.objects.limits())?;
        if mode.explain {
            if !auth.has_master_key() {
                return Err(ParseError::query(
                    "Using the explain query parameter requires the master key",
                ));
            }
            let plan = self.objects.explain(&class, &options).await?;
            return Ok(Reply::ok(json!({ "results": plan })));
        }
        let (mut results, count) = self.objects.find(auth, &class, &options).await?;
        self.expand_files(req, &mut results);
        self.after_find(auth, req, &class, &params, &mut results)
            .await?;
        if mode.redirect_key.is_some() {
            for object in &mut results {
                object.insert("className".into(), Value::from(class.as_str()));
            }
        }
        let mut body = Map::new();
        body.insert(
            "results".into(),
            Value::Array(results.into_iter().map(Value::Object).collect()),
        );
        if let Some(count) = count {
            body.insert("count".into(), json!(count));
        }
        Ok(Reply::ok(Value::Object(body)))
    }

    /// `GET /classes/{class}/{id}`. A beforeFind hook sees it as a query
    /// for the id; when it rewrites the query, the object must also match
    /// the new one.
    async fn get_route(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        class: &str,
        id: &str,
    ) -> ParseResult<Reply> {
        let mut params = req.params.clone();
        params.insert("where".into(), json!({ "objectId": id }));
        let mut objects = if self
            .before_find(auth, req, class, &mut params, true)
            .await?
        {
            let rewritten = params.remove("where").unwrap_or_else(|| json!({}));
            params.insert(
                "where".into(),
                json!({ "$and": [rewritten, { "objectId": id }] }),
            );
            params.insert("limit".into(), json!(1));
            params.remove("skip");
            let options = FindOptions::for_find(&params, self.objects.limits())?;
            let (found, _) = self.objects.find(auth, class, &options).await?;
            found
        } else {
            let options = FindOptions::for_get(&req.params, self.objects.limits())?;
            vec![self.objects.get(auth, class, id, &options).await?]
        };
        self.expand_files(req, &mut objects);
        self.after_find(auth, req, class, &params, &mut objects)
            .await?;
        let object = objects
            .pop()
            .ok_or_else(|| ParseError::new(code::OBJECT_NOT_FOUND, "Object not found."))?;
        Ok(Reply::ok(Value::Object(object)))
    }

    /// The error for a request no route serves.
    pub(crate) fn no_route(&self, req: &ParseRequest) -> ParseError {
        ParseError::NoRoute {
            method: req.method.to_string(),
            path: format!("{}/{}", self.mount, req.segments.join("/")),
        }
    }

    pub(crate) fn expand_files(&self, req: &ParseRequest, objects: &mut [oxbase_store::Object]) {
        crate::files::expand_urls(objects, &self.files_mount_url(req), &self.app_id);
    }

    async fn prepare(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        write: &ClassWrite<'_>,
    ) -> ParseResult<PreparedWrite> {
        match write {
            ClassWrite::Create(class @ installations::CLASS)
            | ClassWrite::Update(class @ installations::CLASS, _) => {
                let id = match write {
                    ClassWrite::Update(_, id) => Some(*id),
                    _ => None,
                };
                let landing = self.objects.land_installation(auth, id, &req.body).await?;
                let mut prepared = self
                    .save(auth, req, class, landing.target.as_deref(), &landing.body)
                    .await?;
                prepared.remove_after(landing.duplicates);
                Ok(prepared)
            }
            ClassWrite::Create(class) => self.save(auth, req, class, None, &req.body).await,
            ClassWrite::Update(class, id) => self.save(auth, req, class, Some(id), &req.body).await,
            ClassWrite::Delete(class, id) => {
                let mut context = req.context.clone();
                self.before_delete(auth, req, class, id, &mut context)
                    .await?;
                let mut prepared = self.objects.prepare_delete(auth, class, id).await?;
                prepared.set_cloud_context(context);
                Ok(prepared)
            }
        }
    }

    /// A create.
    pub(crate) async fn prepare_create(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        class: &str,
    ) -> ParseResult<PreparedWrite> {
        self.save(auth, req, class, None, &req.body).await
    }

    /// A create (`object_id` `None`) or an update, after the class's
    /// beforeSave hook.
    async fn save(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        class: &str,
        object_id: Option<&str>,
        body: &Map<String, Value>,
    ) -> ParseResult<PreparedWrite> {
        let mut context = req.context.clone();
        let hooked = self
            .before_save(auth, req, class, object_id, body, &mut context)
            .await?;
        let (body, changed) = match &hooked {
            Some((body, changed)) => (body, changed.clone()),
            None => (body, Vec::new()),
        };
        let mut prepared = match object_id {
            None => self.objects.prepare_create(auth, class, body).await?,
            Some(id) => self.objects.prepare_update(auth, class, id, body).await?,
        };
        prepared.echo_also(changed);
        prepared.set_cloud_context(context);
        Ok(prepared)
    }

    fn write_reply(&self, req: &ParseRequest, write: &ClassWrite<'_>, reply: WriteReply) -> Reply {
        match (&reply, write) {
            (WriteReply::Created { object_id, body }, ClassWrite::Create(class)) => Reply {
                status: StatusCode::CREATED,
                body: body.clone(),
                location: Some(format!(
                    "{}{}/classes/{class}/{object_id}",
                    req.origin, self.mount
                )),
                headers: Vec::new(),
            },
            _ => Reply::ok(reply.body()),
        }
    }

    /// `POST /batch`: sub-requests answer positionally. Writes commit
    /// together in one store call (atomically with `"transaction": true`);
    /// reads run concurrently.
    async fn batch(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        let requests = req
            .body
            .get("requests")
            .and_then(Value::as_array)
            .ok_or_else(|| ParseError::json("requests must be an array"))?;
        let max = self.objects.limits().max_batch_size;
        if requests.len() > max {
            return Err(ParseError::json(format!(
                "Batch request contains {} sub-requests, which exceeds the limit of {max}.",
                requests.len()
            )));
        }
        let transaction = req.body.get("transaction") == Some(&Value::Bool(true));

        let mut subs = Vec::with_capacity(requests.len());
        for item in requests {
            let path = item
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| ParseError::json("batch request path must be a string"))?;
            let method = match item.get("method").and_then(Value::as_str).unwrap_or("GET") {
                m if m.eq_ignore_ascii_case("GET") => Method::GET,
                m if m.eq_ignore_ascii_case("POST") => Method::POST,
                m if m.eq_ignore_ascii_case("PUT") => Method::PUT,
                m if m.eq_ignore_ascii_case("DELETE") => Method::DELETE,
                other => return Err(ParseError::json(format!("cannot route {other} {path}"))),
            };
            let segments = self.batch_segments(path)?;
            if segments == ["batch"] {
                return Err(ParseError::json("nested batch requests are not allowed"));
            }
            let body = match item.get("body") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(map)) => map.clone(),
                Some(_) => return Err(ParseError::json("batch request body must be an object")),
            };
            let sub = req.sub_request(method, canonical_segments(segments), body);
            if !is_routable(&sub) {
                return Err(ParseError::json(format!(
                    "cannot route {} {path}",
                    sub.method
                )));
            }
            subs.push(sub);
        }

        let mut results: Vec<Option<ParseResult<Value>>> = vec![None; subs.len()];
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        for (i, sub) in subs.iter().enumerate() {
            let write = class_write(sub);
            // As in Parse, a sign-up carrying an existing user's authData
            // logs that user in, with a session, rather than failing 208.
            if let Some(ClassWrite::Create("_User")) = write {
                match self.auth_data_log_in(auth, sub).await {
                    Ok(None) => {}
                    Ok(Some(reply)) => {
                        results[i] = Some(Ok(reply.body));
                        continue;
                    }
                    Err(err) if transaction => return Err(err),
                    Err(err) => {
                        results[i] = Some(Err(err));
                        continue;
                    }
                }
            }
            match write {
                Some(write) => match self.prepare(auth, sub, &write).await {
                    Ok(prepared) => writes.push((i, prepared)),
                    Err(err) if transaction => return Err(user_write_refused(auth, &write, err)),
                    Err(err) => results[i] = Some(Err(user_write_refused(auth, &write, err))),
                },
                None => reads.push(i),
            }
        }
        let (indexes, prepared): (Vec<usize>, Vec<PreparedWrite>) = writes.into_iter().unzip();
        if !prepared.is_empty() {
            let effects: Vec<_> = prepared.iter().map(WriteEffect::of).collect();
            let replies = self.objects.commit(prepared, transaction).await?;
            let committed: Vec<&WriteEffect> = effects
                .iter()
                .zip(&replies)
                .filter(|(_, reply)| reply.is_ok())
                .map(|(effect, _)| effect)
                .collect();
            self.objects.after_writes(&committed).await;
            for effect in &committed {
                self.mail_verification(effect);
            }
            for ((i, reply), effect) in indexes.into_iter().zip(replies).zip(&effects) {
                let answer = match reply {
                    Ok(reply) => {
                        let mut body = reply.body();
                        self.objects
                            .renew_session_after(auth, effect, &mut body)
                            .await
                            .map(|()| body)
                    }
                    Err(err) => match class_write(&subs[i]) {
                        Some(write) => Err(user_write_refused(auth, &write, err)),
                        None => Err(err),
                    },
                };
                results[i] = Some(answer);
            }
        }
        let answers = join_all(reads.iter().map(|&i| self.dispatch(auth, &subs[i]))).await;
        for (i, answer) in reads.into_iter().zip(answers) {
            results[i] = Some(answer.map(|reply| reply.body));
        }
        let body = results
            .into_iter()
            .map(|result| match result {
                Some(Ok(success)) => json!({ "success": success }),
                Some(Err(err)) => json!({ "error": err.body() }),
                None => json!({ "error": ParseError::internal("batch item had no result").body() }),
            })
            .collect();
        Ok(Reply::ok(Value::Array(body)))
    }

    /// The route of a batch item's path.
    fn batch_segments(&self, path: &str) -> ParseResult<Vec<String>> {
        let rest = self
            .batch_item_route(path)
            .ok_or_else(|| ParseError::json(format!("cannot route batch path {path}")))?;
        Ok(rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// What follows the mount path (or the public URL's path, behind a
    /// proxy) in a batch item's path, which must start with one of them.
    pub(crate) fn batch_item_route<'a>(&self, path: &'a str) -> Option<&'a str> {
        self.batch_prefixes
            .iter()
            .filter_map(|prefix| {
                path.strip_prefix(prefix.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .min_by_key(|rest| rest.len())
    }
}
