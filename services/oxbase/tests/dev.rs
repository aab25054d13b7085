//! `oxbase dev` as a user runs it: it starts NATS and the API, serves, and
//! stops cleanly on SIGTERM, taking its NATS server with it.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn dev_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (api_port, nats_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxbase"))
        .arg("dev")
        .args(["--port", &api_port.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .env("OXBASE_NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let base = format!("http://127.0.0.1:{api_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::blocking::Client::new();
    while client
        .get(format!("{base}/ready"))
        .send()
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "oxbase dev exited with {status}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "oxbase dev did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(port_open(nats_port), "the local NATS server listens");

    let created = client
        .post(format!("{base}/parse/classes/Note"))
        .header("X-Parse-Application-Id", "oxbase-dev")
        .body(r#"{"text":"hello"}"#)
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(dir.path().join("oxbase.db").exists());

    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let stopped_by = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < stopped_by,
            "oxbase dev did not stop within its bound"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "exit {status}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{api_port}/parse")),
        "{stdout}"
    );
    assert!(stdout.contains("oxbase-dev-master-key"), "{stdout}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !port_open(nats_port),
        "the local NATS server stopped with oxbase"
    );
    assert!(!port_open(api_port));
}
