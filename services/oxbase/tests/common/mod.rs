//! Real processes for the end-to-end tests: nats-server (from PATH;
//! `bash ops/test.sh` installs one) and the `oxbase` binary on the
//! embedded store, each killed (SIGKILL) when dropped.
#![allow(dead_code)] // each test binary uses its own part

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::Value;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server with JetStream.
pub struct Nats {
    child: Child,
    pub port: u16,
}

impl Nats {
    pub fn start(port: u16, store: &Path) -> Self {
        Self::spawn(port, store, &[])
    }

    /// One node of a cluster named `oxbase-test`: `routes` are the cluster
    /// ports of every node, `cluster` this node's own.
    pub fn start_node(port: u16, store: &Path, name: &str, cluster: u16, routes: &[u16]) -> Self {
        let routes = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = format!("nats://127.0.0.1:{cluster}");
        Self::spawn(
            port,
            store,
            &[
                "-n",
                name,
                "--cluster_name",
                "oxbase-test",
                "--cluster",
                &cluster,
                "--routes",
                &routes,
            ],
        )
    }

    /// A server started with more command-line arguments (`-c <file>`).
    pub fn spawn(port: u16, store: &Path, extra: &[&str]) -> Self {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (bash ops/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    /// Stops the server the way an operator does (SIGTERM), letting it
    /// write out its state; dropping it kills it instead.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Oxbase {
    /// Behind a lock so that a test sharing the server between tasks can
    /// still kill it.
    child: std::sync::Mutex<Child>,
    pub base: String,
    pub client: reqwest::Client,
}

impl Drop for Oxbase {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Oxbase {
    /// `oxbase api` on the embedded store in `dir`, publishing events to
    /// `nats_url` (a comma-separated list for a cluster); waits for /ready.
    pub async fn start(dir: &Path, nats_url: &str, env: &[(&str, &str)]) -> Self {
        let server = Self::spawn(dir, nats_url, env);
        server.wait_ready().await;
        server
    }

    /// Starts `oxbase api` without waiting for it to be ready.
    pub fn spawn(dir: &Path, nats_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_command("api", dir, nats_url, env)
    }

    fn spawn_command(command: &str, dir: &Path, nats_url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_oxbase"))
            .arg(command)
            .args([
                "--port",
                &port.to_string(),
                "--master-key",
                "mk",
                "--app-id",
                "app",
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("OXBASE_HOST", "127.0.0.1")
            .env("OXBASE_ALLOW_CLIENT_CLASS_CREATION", "true")
            .env("OXBASE_NATS_URL", nats_url)
            .envs(env.iter().copied())
            .stdout(log_file(command, port))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child: std::sync::Mutex::new(child),
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    /// Kills the process the way a crash would (SIGKILL).
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.client.get(format!("{}/ready", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "oxbase never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request to the REST API as a client (the app id, no master key).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/parse/{path}", self.base))
            .header("X-Parse-Application-Id", "app")
    }

    /// A REST call as a client (the app id, no master key); `Err` when no answer came
    /// (the process died) or the answer was not a success.
    pub async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let mut request = self.request(method, path);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub async fn backlog(&self) -> u64 {
        metric(&self.base, "oxbase_outbox_backlog").await
    }

    pub async fn metric(&self, name: &str) -> u64 {
        metric(&self.base, name).await
    }

    /// Waits until the relay has published everything in the outbox. The
    /// gauge refreshes each second, so it is read until it shows zero.
    pub async fn wait_drained(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.backlog().await > 0 {
            assert!(
                Instant::now() < deadline,
                "the outbox backlog never drained"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every event in the stream, in stream order, with its `Nats-Msg-Id`.
pub async fn all_events(js: &jetstream::Context) -> Vec<(Value, String)> {
    // A cluster that has just lost a node may still be electing its meta
    // leader, so its API can time out for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (total, mut messages) = loop {
        match ordered_reader(js).await {
            Ok(reader) => break reader,
            Err(e) if Instant::now() < deadline => {
                eprintln!("the events stream is not readable yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the events stream never became readable: {e}"),
        }
    };
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream stopped delivering")
            .expect("the consumer ended")
            .unwrap();
        out.push(event_with_id(&message));
    }
    out
}

async fn ordered_reader(
    js: &jetstream::Context,
) -> Result<(usize, consumer::pull::Ordered), async_nats::Error> {
    let mut stream = js.get_stream("OXBASE_EVENTS").await?;
    let total = stream.info().await?.state.messages as usize;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await?;
    Ok((total, consumer.messages().await?))
}

/// The event a message carries, and its `Nats-Msg-Id` header.
pub fn event_with_id(message: &async_nats::Message) -> (Value, String) {
    let id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.to_string())
        .unwrap_or_default();
    (serde_json::from_slice(&message.payload).unwrap(), id)
}

impl Oxbase {
    /// `oxbase <command>` (`api`, `all`) on the embedded store in `dir`,
    /// as [`Oxbase::start`] does for `api`; waits for /ready.
    pub async fn start_command(
        command: &str,
        dir: &Path,
        nats_url: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let server = Self::spawn_command(command, dir, nats_url, env);
        server.wait_ready().await;
        server
    }

    /// A REST call with the master key: its status and body.
    pub async fn master_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let mut request = self
            .request(method, path)
            .header("X-Parse-Master-Key", "mk");
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// A REST call with the master key; panics unless it succeeds.
    pub async fn master_call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, body) = self.master_request(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status}: {body}");
        body
    }
}

/// A separate background service process (`oxbase triggers`, `oxbase
/// jobs`), killed (SIGKILL) when dropped.
pub struct ServiceProcess {
    child: std::sync::Mutex<Child>,
    pub base: String,
}

/// Where an oxbase process's log goes: OXBASE_TEST_LOG_DIR keeps each
/// one, for debugging.
fn log_file(command: &str, port: u16) -> Stdio {
    match std::env::var_os("OXBASE_TEST_LOG_DIR") {
        Some(dir) => Stdio::from(
            std::fs::File::create(Path::new(&dir).join(format!("{command}-{port}.log"))).unwrap(),
        ),
        None => Stdio::null(),
    }
}

impl ServiceProcess {
    /// Starts `oxbase <command>` against `nats_url` and waits for /ready.
    pub async fn start(command: &str, nats_url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_oxbase"))
            .args([command, "--port", &port.to_string()])
            .env("OXBASE_HOST", "127.0.0.1")
            .env("OXBASE_NATS_URL", nats_url)
            .envs(env.iter().copied())
            .stdout(log_file(command, port))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = Self {
            child: std::sync::Mutex::new(child),
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(format!("{}/ready", process.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return process;
            }
            assert!(
                Instant::now() < deadline,
                "oxbase {command} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process the way a crash would (SIGKILL).
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops it the way an operator does (SIGTERM) and returns how it
    /// exited.
    pub fn terminate(&self) -> std::process::ExitStatus {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap()
    }

    /// A counter from its /metrics.
    pub async fn metric(&self, name: &str) -> u64 {
        metric(&self.base, name).await
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `oxbase triggers replay <args>` and returns what it printed.
pub fn replay_dead_letters(nats_url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_oxbase"))
        .args(["triggers", "replay"])
        .args(args)
        .env("OXBASE_NATS_URL", nats_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A value from the /metrics of the process at `base`.
async fn metric(base: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}
