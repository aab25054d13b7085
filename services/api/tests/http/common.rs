//! Starts the API on a free port over a temporary store: SQLite, or with
//! `OXBASE_TEST_BACKEND=postgres` a fresh PostgreSQL database on the server
//! `OXBASE_TEST_POSTGRES_URI` names (dropped afterwards), so the same tests
//! run on every backend.

#![allow(dead_code)]

use std::net::SocketAddr;

use oxbase_kit::{Config, Readiness, Secret, Shutdown};
use oxbase_test_support::PostgresDatabase;
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;

pub const APP_ID: &str = "test-app";
pub const MASTER_KEY: &str = "test-master";

pub struct TestServer {
    pub base: String,
    pub client: Client,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
    _database: Option<PostgresDatabase>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        // Server logs go to the test's output. Purges log at info, so
        // `/scriptlog` has lines to answer.
        oxbase_kit::telemetry::init(
            oxbase_kit::LogFormat::Text,
            "warn,oxbase_objects::purge=info",
        );
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            app_id: APP_ID.into(),
            master_key: Some(Secret::new(MASTER_KEY)),
            host: "127.0.0.1".into(),
            port: 0,
            data_dir: dir.path().to_owned(),
            allow_client_class_creation: true,
            ..Config::default()
        };
        let database = match std::env::var("OXBASE_TEST_BACKEND").as_deref() {
            Ok("postgres") => {
                // A fresh database, dropped with the server.
                let database = PostgresDatabase::create(
                    "oxbase_api",
                    "OXBASE_TEST_BACKEND=postgres needs OXBASE_TEST_POSTGRES_URI: run \
                     `bash ops/test.sh`, which installs and starts PostgreSQL",
                )
                .await;
                config.database_uri = Some(database.uri().to_owned());
                Some(database)
            }
            Ok("sqlite") | Err(_) => None,
            Ok(other) => panic!("unknown OXBASE_TEST_BACKEND {other:?}"),
        };
        adjust(&mut config);
        let store = oxbase_store::open(&config.database_uri(), &Default::default())
            .await
            .unwrap();
        let objects = oxbase_objects::ObjectLayer::from_config(&config, store, None)
            .await
            .unwrap();
        let app = oxbase_api::App::new(&config, objects, None, None, None, None);
        let listener = oxbase_api::bind(&config).await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let readiness = Readiness::new();
        tokio::spawn(oxbase_api::serve(
            listener,
            app.router(readiness.clone(), None),
            readiness,
            shutdown.clone(),
            std::time::Duration::ZERO,
        ));
        Self {
            base: format!("http://{addr}{}", config.mount_path),
            client: Client::new(),
            shutdown,
            _dir: dir,
            _database: database,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// A request with the app id and no other key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-Parse-Application-Id", APP_ID)
    }

    pub fn master(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
            .header("X-Parse-Master-Key", MASTER_KEY)
    }

    pub async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        send(self.request(method, path), body).await
    }

    /// A request with the master key.
    pub async fn master_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        send(self.master(method, path), body).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.json(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.json(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.json(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.json(Method::DELETE, path, None).await
    }

    /// `GET /classes/{class}` with `where` and other options.
    pub async fn query(&self, class: &str, params: &[(&str, String)]) -> (u16, Value) {
        let request = self
            .request(Method::GET, &format!("classes/{class}"))
            .query(params);
        read(request.send().await.unwrap()).await
    }

    /// The objects of a class, by master key.
    pub async fn all(&self, class: &str) -> Vec<Value> {
        let response = self
            .master(Method::GET, &format!("classes/{class}"))
            .query(&[("limit", "1000")])
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert_eq!(status, 200, "{body}");
        body["results"].as_array().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The server lets go of its connections before the database goes.
        self.shutdown.trigger();
    }
}

async fn send(mut request: RequestBuilder, body: Option<Value>) -> (u16, Value) {
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

pub async fn read(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Asserts a Parse error with this status and code.
#[track_caller]
pub fn assert_error(result: &(u16, Value), status: u16, code: i64) {
    assert_eq!(result.0, status, "status of {}", result.1);
    assert_eq!(result.1["code"], code, "code of {}", result.1);
    assert!(result.1["error"].is_string(), "message of {}", result.1);
}
