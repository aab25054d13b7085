//! Background jobs over HTTP: Parse's `POST /jobs/<name>` with its
//! `_JobStatus`, and oxbase's queue API under `/queues`. Both only put jobs
//! in the queues (NATS); the jobs service runs them.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use oxbase_hooks::HookRegistry;
use oxbase_jobs::{JobQueue, JobsError};
use oxbase_objects::{Auth, JobStatusChange, ParseError, ParseResult, code};
use oxbase_proto::jobs::{JobSpec, JobState};
use serde_json::{Value, json};

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;

/// Jobs listed at most per request.
const MAX_LIST: usize = 1000;

/// What the API needs for jobs.
#[derive(Debug, Clone)]
pub struct Jobs {
    pub queue: Arc<JobQueue>,
    /// Schedules, when cron is on.
    pub schedules: Option<Arc<oxbase_cron::ScheduleBook>>,
    /// Where `POST /jobs/<name>` checks that the job has a handler.
    pub registry: Option<Arc<HookRegistry>>,
}

fn jobs_error(err: JobsError) -> ParseError {
    match err {
        JobsError::NotFound => ParseError::new(code::OBJECT_NOT_FOUND, "Job not found."),
        other if other.is_internal() => ParseError::internal(format!("jobs: {other}")),
        other => ParseError::new(code::VALIDATION_ERROR, other.to_string()),
    }
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

impl App {
    fn jobs(&self) -> ParseResult<&Jobs> {
        self.jobs.as_ref().ok_or_else(|| {
            ParseError::new(
                code::COMMAND_UNAVAILABLE,
                "Background jobs are off on this server (jobs.enabled = false, or no NATS).",
            )
        })
    }

    /// Parse's `POST /jobs/<name>` and `POST /jobs` (`{"jobName": ...}`):
    /// a `_JobStatus` in `running`, then the job on the Parse queue.
    pub(crate) async fn jobs_route(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        auth.require_master()?;
        auth.require_writable("start a job")?;
        let jobs = self.jobs()?;
        let name = match (&req.method, req.segments.get(1)) {
            (&Method::POST, Some(name)) if req.segments.len() == 2 => name.clone(),
            (&Method::POST, None) => req
                .body
                .get("jobName")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ParseError::new(code::SCRIPT_FAILED, "Invalid job."))?,
            _ => {
                return Err(self.no_route(req));
            }
        };
        let known = jobs
            .registry
            .as_ref()
            .is_some_and(|registry| registry.job(&name).is_some());
        if !known {
            return Err(ParseError::new(code::SCRIPT_FAILED, "Invalid job."));
        }
        let params = Value::Object(req.params.clone());
        let status_id = self.objects.open_job_status(&name, &params, "api").await?;
        let queue = jobs.queue.settings().parse_queue.clone();
        let spec = JobSpec {
            name,
            payload: params,
            ..JobSpec::default()
        };
        if let Err(err) = jobs
            .queue
            .submit(&queue, spec, Some(status_id.clone()))
            .await
        {
            let failed = JobStatusChange {
                status: Some("failed".into()),
                message: Some(err.to_string()),
                finished: true,
            };
            let _ = self.objects.update_job_status(&status_id, failed).await;
            return Err(jobs_error(err));
        }
        let mut reply = Reply::ok(json!({}));
        reply.headers.push(("X-Parse-Job-Status-Id", status_id));
        Ok(reply)
    }

    /// oxbase's queue API, master key only:
    ///
    /// - `GET /queues`: the queues and their settings;
    /// - `POST /queues/<q>/jobs`: submit a [`JobSpec`];
    /// - `GET /queues/<q>/jobs?state=&limit=`: list;
    /// - `GET /queues/<q>/jobs/<id>`: one job;
    /// - `POST /queues/<q>/jobs/<id>/cancel` and `.../retry`.
    pub(crate) async fn queues_route(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        auth.require_master()?;
        let jobs = self.jobs()?;
        let queue = &jobs.queue;
        let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        if req.method != Method::GET {
            auth.require_writable("change jobs")?;
        }
        match (&req.method, &s[1..]) {
            (&Method::GET, []) => {
                let queues = queue
                    .settings()
                    .queues
                    .iter()
                    .map(|(name, config)| {
                        let mut value = to_json(config);
                        if let Value::Object(map) = &mut value {
                            map.insert("name".into(), json!(name));
                        }
                        value
                    })
                    .collect();
                Ok(Reply::ok(json!({ "results": Value::Array(queues) })))
            }
            (&Method::POST, [name, "jobs"]) => {
                let spec: JobSpec = serde_json::from_value(Value::Object(req.body.clone()))
                    .map_err(|err| {
                        ParseError::new(code::VALIDATION_ERROR, format!("invalid job: {err}"))
                    })?;
                let submitted = queue.submit(name, spec, None).await.map_err(jobs_error)?;
                let status = if submitted.duplicate {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Ok(Reply {
                    status,
                    ..Reply::ok(to_json(submitted))
                })
            }
            (&Method::GET, [name, "jobs"]) => {
                let state = match req.params.get("state") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(text)) => Some(JobState::parse(text).ok_or_else(|| {
                        ParseError::new(
                            code::VALIDATION_ERROR,
                            "state must be waiting, delayed, active, succeeded, dead or cancelled",
                        )
                    })?),
                    Some(_) => {
                        return Err(ParseError::new(
                            code::VALIDATION_ERROR,
                            "state must be a string",
                        ));
                    }
                };
                let limit = match req.params.get("limit") {
                    None => 100,
                    Some(value) => value
                        .as_u64()
                        .filter(|n| (1..=MAX_LIST as u64).contains(n))
                        .ok_or_else(|| {
                            ParseError::new(
                                code::VALIDATION_ERROR,
                                format!("limit must be from 1 to {MAX_LIST}"),
                            )
                        })? as usize,
                };
                let found = queue.list(name, state, limit).await.map_err(jobs_error)?;
                Ok(Reply::ok(json!({ "results": to_json(found) })))
            }
            (&Method::GET, [name, "jobs", id]) => {
                queue
                    .settings()
                    .queues
                    .get(*name)
                    .ok_or_else(|| jobs_error(JobsError::UnknownQueue((*name).to_owned())))?;
                let job = queue.get(name, id).await.map_err(jobs_error)?;
                Ok(Reply::ok(to_json(job)))
            }
            (&Method::POST, [name, "jobs", id, "cancel"]) => {
                let job = queue.cancel(name, id).await.map_err(jobs_error)?;
                Ok(Reply::ok(to_json(job)))
            }
            (&Method::POST, [name, "jobs", id, "retry"]) => {
                let job = queue.retry(name, id).await.map_err(jobs_error)?;
                Ok(Reply::ok(to_json(job)))
            }
            _ => Err(self.no_route(req)),
        }
    }
}
