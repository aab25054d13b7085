//! Schedules over HTTP: oxbase's `/cron/schedules` and Parse's
//! `/cloud_code/jobs`, whose `_JobSchedule` objects the cron service fires.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use oxbase_cron::{CronError, ScheduleBook};
use oxbase_objects::{Auth, ParseError, ParseResult, code, query::FindOptions};
use oxbase_proto::cron::CronSchedule;
use serde_json::{Map, Value, json};

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;

/// Runs listed at most per request.
const MAX_RUNS: usize = 1000;

fn cron_error(err: CronError) -> ParseError {
    match err {
        CronError::NotFound => ParseError::new(code::OBJECT_NOT_FOUND, "Schedule not found."),
        CronError::Duplicate(_) => ParseError::new(code::DUPLICATE_VALUE, err.to_string()),
        CronError::Invalid(text) => ParseError::new(code::VALIDATION_ERROR, text),
        other => ParseError::internal(format!("cron: {other}")),
    }
}

impl App {
    fn schedules(&self) -> ParseResult<&Arc<ScheduleBook>> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.schedules.as_ref())
            .ok_or_else(|| {
                ParseError::new(
                    code::COMMAND_UNAVAILABLE,
                    "Schedules are off on this server (cron.enabled = false, or no NATS).",
                )
            })
    }

    /// oxbase's schedules, master key only:
    ///
    /// - `GET /cron/schedules`, `POST /cron/schedules`;
    /// - `GET|PUT|DELETE /cron/schedules/<name>`;
    /// - `GET /cron/schedules/<name>/runs?limit=`: the last runs, latest
    ///   first.
    pub(crate) async fn cron_route(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        auth.require_master()?;
        if req.method != Method::GET {
            auth.require_writable("change schedules")?;
        }
        let book = self.schedules()?;
        let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let body = || -> ParseResult<CronSchedule> {
            serde_json::from_value(Value::Object(req.body.clone())).map_err(|err| {
                ParseError::new(code::VALIDATION_ERROR, format!("invalid schedule: {err}"))
            })
        };
        match (&req.method, &s[1..]) {
            (&Method::GET, ["schedules"]) => {
                let all = book.list().await.map_err(cron_error)?;
                Ok(Reply::ok(json!({ "results": all })))
            }
            (&Method::POST, ["schedules"]) => {
                let created = book.create(body()?).await.map_err(cron_error)?;
                Ok(Reply {
                    status: StatusCode::CREATED,
                    ..Reply::ok(json!(created))
                })
            }
            (&Method::GET, ["schedules", name]) => {
                Ok(Reply::ok(json!(book.get(name).await.map_err(cron_error)?)))
            }
            (&Method::PUT, ["schedules", name]) => {
                let mut schedule = body()?;
                if schedule.name.is_empty() {
                    schedule.name = (*name).to_owned();
                }
                if schedule.name != *name {
                    return Err(ParseError::new(
                        code::VALIDATION_ERROR,
                        "a schedule cannot be renamed: create one under the new name",
                    ));
                }
                let replaced = book.replace(schedule).await.map_err(cron_error)?;
                Ok(Reply::ok(json!(replaced)))
            }
            (&Method::DELETE, ["schedules", name]) => {
                book.delete(name).await.map_err(cron_error)?;
                Ok(Reply::ok(json!({})))
            }
            (&Method::GET, ["schedules", name, "runs"]) => {
                let limit = match req.params.get("limit") {
                    None => 100,
                    Some(value) => value
                        .as_u64()
                        .filter(|n| (1..=MAX_RUNS as u64).contains(n))
                        .ok_or_else(|| {
                            ParseError::new(
                                code::VALIDATION_ERROR,
                                format!("limit must be from 1 to {MAX_RUNS}"),
                            )
                        })? as usize,
                };
                book.get(name).await.map_err(cron_error)?;
                let runs = book.runs(name, limit).await.map_err(cron_error)?;
                Ok(Reply::ok(json!({ "results": runs })))
            }
            _ => Err(self.no_route(req)),
        }
    }

    /// Parse's `/cloud_code/jobs`, as Parse Dashboard uses it (master key):
    ///
    /// - `GET /cloud_code/jobs`: the `_JobSchedule` objects;
    /// - `GET /cloud_code/jobs/data`: the jobs that can be scheduled, and
    ///   the ones that are;
    /// - `POST /cloud_code/jobs` with `{"job_schedule": {...}}`;
    /// - `PUT|DELETE /cloud_code/jobs/<objectId>`.
    pub(crate) async fn cloud_code_route(
        &self,
        auth: &Auth,
        req: &ParseRequest,
    ) -> ParseResult<Reply> {
        auth.require_master()?;
        if req.method != Method::GET {
            auth.require_writable("change job schedules")?;
        }
        let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let schedule_body = || -> ParseResult<Map<String, Value>> {
            match req.body.get("job_schedule") {
                Some(Value::Object(map)) => Ok(map.clone()),
                _ => Err(ParseError::new(
                    code::INVALID_JSON,
                    "job_schedule must be an object",
                )),
            }
        };
        match (&req.method, &s[1..]) {
            (&Method::GET, ["jobs"]) => {
                let all = self.objects.job_schedules().await?;
                Ok(Reply::ok(Value::Array(
                    all.into_iter().map(Value::Object).collect(),
                )))
            }
            (&Method::GET, ["jobs", "data"]) => {
                let in_use: Vec<Value> = self
                    .objects
                    .job_schedules()
                    .await?
                    .into_iter()
                    .filter_map(|object| object.get("jobName").cloned())
                    .collect();
                let jobs: Vec<String> = self
                    .jobs
                    .as_ref()
                    .and_then(|jobs| jobs.registry.as_ref())
                    .map(|registry| {
                        registry
                            .jobs()
                            .into_iter()
                            .filter_map(|entry| entry.job_name)
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Reply::ok(json!({ "in_use": in_use, "jobs": jobs })))
            }
            (&Method::POST, ["jobs"]) => {
                let mut schedule = schedule_body()?;
                let name = schedule
                    .get("jobName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let deployed = self
                    .jobs
                    .as_ref()
                    .and_then(|jobs| jobs.registry.as_ref())
                    .is_some_and(|registry| registry.job(&name).is_some());
                // Parse Server answers this with code 1 and a 500; a
                // client's mistake is a 400 here.
                if !deployed {
                    return Err(ParseError::new(
                        code::SCRIPT_FAILED,
                        "Cannot Schedule a job that is not deployed",
                    ));
                }
                if !schedule.contains_key("startAfter") {
                    schedule.insert("startAfter".into(), json!(oxbase_objects::values::now()));
                }
                self.check_job_schedule(&schedule)?;
                let write = self
                    .objects
                    .prepare_create(&Auth::master(), "_JobSchedule", &schedule)
                    .await?;
                let reply = self.objects.commit_one(write).await?;
                Ok(Reply {
                    status: StatusCode::CREATED,
                    ..Reply::ok(reply.body())
                })
            }
            (&Method::PUT, ["jobs", id]) => {
                let changes = schedule_body()?;
                let current = self
                    .objects
                    .get(
                        &Auth::master(),
                        "_JobSchedule",
                        id,
                        &FindOptions::for_get(&Map::new(), self.objects.limits())?,
                    )
                    .await?;
                let mut merged = current;
                merged.extend(changes.clone());
                self.check_job_schedule(&merged)?;
                let write = self
                    .objects
                    .prepare_update(&Auth::master(), "_JobSchedule", id, &changes)
                    .await?;
                let reply = self.objects.commit_one(write).await?;
                Ok(Reply::ok(reply.body()))
            }
            (&Method::DELETE, ["jobs", id]) => {
                let write = self
                    .objects
                    .prepare_delete(&Auth::master(), "_JobSchedule", id)
                    .await?;
                self.objects.commit_one(write).await?;
                Ok(Reply::ok(json!({})))
            }
            _ => Err(self.no_route(req)),
        }
    }

    /// Refuses a `_JobSchedule` the cron service could not fire.
    fn check_job_schedule(&self, schedule: &Map<String, Value>) -> ParseResult<()> {
        let mut probe = schedule.clone();
        probe.entry("objectId").or_insert_with(|| json!("new"));
        let parse_queue = self
            .jobs
            .as_ref()
            .map(|jobs| jobs.queue.settings().parse_queue.clone())
            .unwrap_or_else(|| "default".into());
        let converted = oxbase_cron::from_job_schedule(&probe, &parse_queue)
            .map_err(|err| ParseError::new(code::VALIDATION_ERROR, err.to_string()))?;
        oxbase_cron::Timing::parse(&converted.cron, &converted.time_zone)
            .map_err(|err| ParseError::new(code::VALIDATION_ERROR, err.to_string()))?;
        Ok(())
    }
}
