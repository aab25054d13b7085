//! The `oxbase` command: one binary that runs any of oxbase's services.

mod nats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use oxbase_kit::shutdown::drain_within;
use oxbase_kit::{Config, Readiness, Secret, Shutdown};
use serde_json::Value;

/// The master key `oxbase dev` uses when none is configured. Dev binds to
/// loopback by default, so a well-known key does not open it to the network.
pub const DEV_MASTER_KEY: &str = "oxbase-dev-master-key";

#[derive(Debug, Parser)]
#[command(
    name = "oxbase",
    version,
    about = "A drop-in replacement for Parse Server"
)]
pub struct Cli {
    /// A TOML config file (default: ./oxbase.toml when present).
    #[arg(long, global = true, env = "OXBASE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything on the embedded store, with a local NATS server, for
    /// development.
    Dev(ServerArgs),
    /// The Parse API alone, against the configured store.
    Api(ServerArgs),
}

/// Flags that override the config file and the environment.
#[derive(Debug, Args)]
struct ServerArgs {
    /// HTTP port (OXBASE_PORT).
    #[arg(long)]
    port: Option<u16>,
    /// Parse application id (OXBASE_APP_ID).
    #[arg(long)]
    app_id: Option<String>,
    /// Parse master key (OXBASE_MASTER_KEY).
    #[arg(long)]
    master_key: Option<String>,
    /// Directory for the embedded store and local tools (OXBASE_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// URL path the API is served under (OXBASE_MOUNT_PATH).
    #[arg(long)]
    mount_path: Option<String>,
    /// Store URI, such as sqlite://path (OXBASE_DATABASE_URI).
    #[arg(long)]
    database_uri: Option<String>,
}

impl ServerArgs {
    fn overrides(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if let Some(port) = self.port {
            out.push(("port", Value::from(port)));
        }
        let text = [
            ("app_id", &self.app_id),
            ("master_key", &self.master_key),
            ("mount_path", &self.mount_path),
            ("database_uri", &self.database_uri),
        ];
        for (key, value) in text {
            if let Some(value) = value {
                out.push((key, Value::from(value.clone())));
            }
        }
        if let Some(dir) = &self.data_dir {
            out.push(("data_dir", Value::from(dir.display().to_string())));
        }
        out
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => dev(cli.config, args).await,
        Command::Api(args) => {
            let config = Config::load(cli.config.as_deref(), &args.overrides())?;
            oxbase_kit::telemetry::init(config.log_format, &config.log_level);
            if config.master_key.is_none() {
                bail!("a master key is required: set OXBASE_MASTER_KEY or --master-key");
            }
            api(config).await
        }
    }
}

async fn dev(file: Option<PathBuf>, args: ServerArgs) -> anyhow::Result<()> {
    let defaults = Config {
        host: "127.0.0.1".into(),
        allow_client_class_creation: true,
        ..Config::default()
    };
    let mut config = Config::load_with_defaults(
        defaults,
        file.as_deref(),
        std::env::vars(),
        &args.overrides(),
    )?;
    oxbase_kit::telemetry::init(config.log_format, &config.log_level);
    if config.master_key.is_none() {
        config.master_key = Some(Secret::new(DEV_MASTER_KEY));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;

    let _nats = nats::LocalNats::start(&config)
        .await
        .context("cannot start the local NATS server")?;

    let url = format!(
        "http://{}:{}{}",
        config.host, config.port, config.mount_path
    );
    println!("oxbase dev is starting");
    println!("  serverURL:  {url}");
    println!("  appId:      {}", config.app_id);
    println!(
        "  masterKey:  {}",
        config
            .master_key
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default()
    );
    println!("  data:       {}", config.data_dir.display());
    println!("  NATS:       {}", config.nats_url);
    api(config).await
}

async fn api(config: Config) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    let readiness = Readiness::new();
    readiness.register("store");
    let options = oxbase_store::StoreOptions {
        pool_size: config.database_pool_size,
        read_uri: config.database_read_uri.clone(),
        read_preference: config.database_read_preference.clone(),
    };
    let store = oxbase_store::open(&config.database_uri(), &options)
        .await
        .context("cannot open the store")?;
    store.ping().await.context("the store does not answer")?;
    readiness.set("store", true);
    let relay = start_relay(&config, &store, &readiness, &shutdown).await?;
    let app = oxbase_api::App::new(&config, Arc::clone(&store), relay, None).await?;
    let listener = oxbase_api::bind(&config).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        mount = %config.mount_path,
        "serving the Parse API"
    );
    let grace = Duration::from_secs(config.shutdown_timeout_secs);
    let served = drain_within(
        &shutdown,
        grace,
        oxbase_api::serve(listener, app, readiness, shutdown.clone()),
    )
    .await;
    match served {
        Some(result) => result?,
        None => tracing::warn!("stopped with requests still in flight"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Connects to NATS (in the background: writes do not wait for it, their
/// events wait in the outbox) and runs the outbox relay.
async fn start_relay(
    config: &Config,
    store: &Arc<dyn oxbase_store::Store>,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<Arc<oxbase_api::RelaySignals>>> {
    if !config.events.enabled {
        tracing::warn!("events are off (events.enabled = false): writes publish nothing");
        return Ok(None);
    }
    // A cluster is a comma-separated list of its servers' URLs.
    let servers = config
        .nats_url
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("nats_url {:?} is not a NATS URL list", config.nats_url))?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_url))?;
    let subjects = oxbase_proto::Subjects::new(config.events.prefix.as_str())?;
    let stream = oxbase_proto::EventStreamSpec::new(&subjects, &config.events.stream);
    let signals = Arc::new(oxbase_api::RelaySignals::default());
    let relay = oxbase_api::OutboxRelay::new(
        Arc::clone(store),
        async_nats::jetstream::new(client),
        stream,
        oxbase_api::RelaySettings::default(),
        Arc::clone(&signals),
    );
    tokio::spawn(relay.run(readiness.clone(), shutdown.clone()));
    Ok(Some(signals))
}
