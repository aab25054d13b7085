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
    /// The Parse API and every background service in one process.
    All(ServerArgs),
    /// The triggers service alone: afterSave and afterDelete deliveries,
    /// and the webhook calls of functions and before-hooks. Needs NATS,
    /// not the store.
    Triggers(TriggersArgs),
    /// The jobs service alone: runs background jobs from the queues, and
    /// answers NATS submissions. Needs NATS, and the store for Parse's
    /// `_JobStatus`.
    Jobs(PortArgs),
    /// The cron service alone: fires every schedule's ticks, once each
    /// across every cron process. Needs NATS, and the store for Parse's
    /// `_JobSchedule`.
    Cron(PortArgs),
    /// The push service alone: resolves pushes into batches and sends
    /// them through the providers. Needs NATS, and the store for
    /// `_Installation` and `_PushStatus`.
    Push(PortArgs),
}

#[derive(Debug, Args)]
struct PortArgs {
    /// Port of /health, /ready and /metrics (OXBASE_PORT).
    #[arg(long)]
    port: Option<u16>,
}

#[derive(Debug, Args)]
struct TriggersArgs {
    /// Port of /health, /ready and /metrics (OXBASE_PORT).
    #[arg(long)]
    port: Option<u16>,
    #[command(subcommand)]
    action: Option<TriggersAction>,
}

#[derive(Debug, Subcommand)]
enum TriggersAction {
    /// Moves the dead letters back to delivery (each gets a fresh set of
    /// attempts) and prints how many.
    Replay {
        /// Only the dead letters of this class.
        #[arg(long)]
        class: Option<String>,
    },
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
        Command::Api(args) => serve(server_config(cli.config, &args)?, Services::Api).await,
        Command::All(args) => serve(server_config(cli.config, &args)?, Services::All).await,
        Command::Jobs(args) => {
            let config = Config::load(cli.config.as_deref(), &port_override(args.port))?;
            oxbase_kit::telemetry::init(config.log_format, &config.log_level);
            jobs(config).await
        }
        Command::Cron(args) => {
            let config = Config::load(cli.config.as_deref(), &port_override(args.port))?;
            oxbase_kit::telemetry::init(config.log_format, &config.log_level);
            cron(config).await
        }
        Command::Push(args) => {
            let config = Config::load(cli.config.as_deref(), &port_override(args.port))?;
            oxbase_kit::telemetry::init(config.log_format, &config.log_level);
            push(config).await
        }
        Command::Triggers(args) => {
            let config = Config::load(cli.config.as_deref(), &port_override(args.port))?;
            match args.action {
                None => {
                    oxbase_kit::telemetry::init(config.log_format, &config.log_level);
                    triggers(config).await
                }
                // No log lines: its output is the count, for scripts.
                Some(TriggersAction::Replay { class }) => replay(config, class).await,
            }
        }
    }
}

fn port_override(port: Option<u16>) -> Vec<(&'static str, Value)> {
    port.map(|port| ("port", Value::from(port)))
        .into_iter()
        .collect()
}

/// The config of a process that serves the API.
fn server_config(file: Option<PathBuf>, args: &ServerArgs) -> anyhow::Result<Config> {
    let config = Config::load(file.as_deref(), &args.overrides())?;
    oxbase_kit::telemetry::init(config.log_format, &config.log_level);
    if config.master_key.is_none() {
        bail!("a master key is required: set OXBASE_MASTER_KEY or --master-key");
    }
    Ok(config)
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
    serve(config, Services::All).await
}

/// What a process that serves the API runs besides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Services {
    Api,
    All,
}

async fn serve(config: Config, services: Services) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    let readiness = Readiness::new();
    readiness.register("store");
    let store = open_store(&config).await?;
    readiness.set("store", true);
    // Every NATS-backed feature is reached through this client; push is
    // on by default, so `oxbase api` without NATS needs push.enabled off.
    let client = if config.events.enabled
        || config.triggers.enabled
        || config.jobs.enabled
        || config.push.enabled
    {
        Some(nats::connect(&config).await?)
    } else {
        None
    };
    let relay = start_relay(&config, client.as_ref(), &store, &readiness, &shutdown)?;
    let hooks = start_hooks(&config, client.as_ref(), &readiness, &shutdown)?;
    if let (Some(client), Some(_)) = (&client, &relay) {
        prepare_triggers(&config, client, &readiness, &shutdown);
    }
    let triggers = match (&hooks, services) {
        (Some(hooks), Services::All) => Some(oxbase_triggers::TriggersService::new(
            &config,
            hooks.client.clone(),
            Arc::clone(&hooks.registry),
        )?),
        _ => None,
    };
    let registry = hooks.as_ref().map(|hooks| Arc::clone(&hooks.registry));
    let jobs_service = match (&client, services) {
        (Some(client), Services::All) if config.jobs.enabled => Some(
            oxbase_jobs::JobsService::new(&config, client.clone(), registry.clone())?,
        ),
        _ => None,
    };
    let jobs = match (&client, &jobs_service) {
        (_, Some(service)) => Some(service.queue()),
        (Some(client), None) if config.jobs.enabled => Some(oxbase_jobs::JobQueue::new(
            async_nats::jetstream::new(client.clone()),
            Arc::new(oxbase_jobs::Settings::from_config(&config)?),
        )),
        _ => None,
    }
    .map(|queue| {
        let schedules = match &client {
            Some(client) if config.cron.enabled => schedule_book(&config, client, &queue).ok(),
            _ => None,
        };
        oxbase_api::Jobs {
            queue,
            schedules,
            registry: registry.clone(),
        }
    });
    let cron_service = match (&jobs, services) {
        (Some(jobs), Services::All) => match &jobs.schedules {
            Some(book) => Some(oxbase_cron::CronService::new(&config, Arc::clone(book))?),
            None => None,
        },
        _ => None,
    };
    let mut sources: Vec<oxbase_api::MetricsSource> = Vec::new();
    if let Some(service) = &triggers {
        let metrics = service.metrics();
        sources.push(Arc::new(move || metrics.render()));
    }
    if let Some(service) = &jobs_service {
        let metrics = service.metrics();
        sources.push(Arc::new(move || metrics.render()));
    }
    if let Some(service) = &cron_service {
        let metrics = service.metrics();
        sources.push(Arc::new(move || metrics.render()));
    }
    let push_metrics = Arc::new(oxbase_push::Metrics::default());
    let runs_push = client.is_some() && config.push.enabled && matches!(services, Services::All);
    if runs_push {
        let metrics = Arc::clone(&push_metrics);
        sources.push(Arc::new(move || metrics.render()));
    }
    let more_metrics = (!sources.is_empty()).then(|| {
        Arc::new(move || sources.iter().map(|source| source()).collect::<String>())
            as oxbase_api::MetricsSource
    });
    let push = match &client {
        Some(client) if config.push.enabled => Some(oxbase_push::PushQueue::new(
            async_nats::jetstream::new(client.clone()),
            oxbase_push::Settings::from_config(&config)?,
        )),
        _ => None,
    };
    let objects = open_objects(&config, store, relay).await?;
    let app = oxbase_api::App::new(&config, Arc::clone(&objects), hooks, jobs, push.clone());
    let push_service = match &client {
        Some(client) if runs_push => Some(
            oxbase_push::PushService::new(&config, client.clone(), objects.clone())?
                .with_metrics(push_metrics),
        ),
        _ => None,
    };
    let jobs_service = jobs_service.map(|service| service.status_sink(objects.clone()));
    let cron_service = cron_service.map(|service| service.parse_schedules(objects.clone()));
    let listener = oxbase_api::bind(&config).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        mount = %config.mount_path,
        triggers = triggers.is_some(),
        "serving the Parse API"
    );
    let api = async {
        let served = oxbase_api::serve(
            listener,
            app,
            readiness.clone(),
            shutdown.clone(),
            more_metrics,
        )
        .await;
        shutdown.trigger();
        served.map_err(anyhow::Error::from)
    };
    let triggers = async {
        let Some(triggers) = triggers else {
            return Ok(());
        };
        let ran = triggers.run(readiness.clone(), shutdown.clone()).await;
        if ran.is_err() {
            shutdown.trigger();
        }
        ran.context("the triggers service failed")
    };
    let jobs = async {
        let Some(service) = jobs_service else {
            return Ok(());
        };
        let ran = service.run(readiness.clone(), shutdown.clone()).await;
        if ran.is_err() {
            shutdown.trigger();
        }
        ran.context("the jobs service failed")
    };
    let cron = async {
        let Some(service) = cron_service else {
            return Ok(());
        };
        let ran = service.run(readiness.clone(), shutdown.clone()).await;
        if ran.is_err() {
            shutdown.trigger();
        }
        ran.context("the cron service failed")
    };
    let push = async {
        let Some(service) = push_service else {
            return Ok(());
        };
        let ran = service.run(readiness.clone(), shutdown.clone()).await;
        if ran.is_err() {
            shutdown.trigger();
        }
        ran.context("the push service failed")
    };
    let grace = Duration::from_secs(config.shutdown_timeout_secs);
    match drain_within(&shutdown, grace, async {
        tokio::join!(api, triggers, jobs, cron, push)
    })
    .await
    {
        Some((api, triggers, jobs, cron, push)) => {
            api?;
            triggers?;
            jobs?;
            cron?;
            push?;
        }
        None => tracing::warn!("stopped with work still in flight"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// `oxbase triggers`: the triggers service, with /health, /ready and
/// /metrics on the configured port.
async fn triggers(config: Config) -> anyhow::Result<()> {
    if !config.triggers.enabled {
        bail!("triggers are turned off (triggers.enabled = false)");
    }
    let shutdown = Shutdown::on_signals();
    let readiness = Readiness::new();
    let client = nats::connect(&config).await?;
    let hooks = start_hooks(&config, Some(&client), &readiness, &shutdown)?
        .context("triggers are turned off")?;
    let service = oxbase_triggers::TriggersService::new(&config, client, hooks.registry)?;
    let metrics = service.metrics();
    let work = async {
        service
            .run(readiness.clone(), shutdown.clone())
            .await
            .context("the triggers service failed")
    };
    background(
        &config,
        readiness.clone(),
        shutdown.clone(),
        Arc::new(move || metrics.render()),
        work,
    )
    .await
}

/// `oxbase jobs`: the jobs service, with /health, /ready and /metrics on
/// the configured port. It opens the store to keep Parse's `_JobStatus`.
async fn jobs(config: Config) -> anyhow::Result<()> {
    if !config.jobs.enabled {
        bail!("jobs are turned off (jobs.enabled = false)");
    }
    let shutdown = Shutdown::on_signals();
    let readiness = Readiness::new();
    let client = nats::connect(&config).await?;
    let hooks = start_hooks(&config, Some(&client), &readiness, &shutdown)?;
    let registry = hooks.as_ref().map(|hooks| Arc::clone(&hooks.registry));
    let objects = open_objects(&config, open_store(&config).await?, None).await?;
    let service = oxbase_jobs::JobsService::new(&config, client, registry)?.status_sink(objects);
    let metrics = service.metrics();
    let work = async {
        service
            .run(readiness.clone(), shutdown.clone())
            .await
            .context("the jobs service failed")
    };
    background(
        &config,
        readiness.clone(),
        shutdown.clone(),
        Arc::new(move || metrics.render()),
        work,
    )
    .await
}

/// `oxbase cron`: the cron service, with /health, /ready and /metrics on
/// the configured port. It opens the store to fire Parse's `_JobSchedule`.
async fn cron(config: Config) -> anyhow::Result<()> {
    if !config.cron.enabled || !config.jobs.enabled {
        bail!("cron is turned off (cron.enabled = false, or jobs.enabled = false)");
    }
    let shutdown = Shutdown::on_signals();
    let readiness = Readiness::new();
    let client = nats::connect(&config).await?;
    let queue = oxbase_jobs::JobQueue::new(
        async_nats::jetstream::new(client.clone()),
        Arc::new(oxbase_jobs::Settings::from_config(&config)?),
    );
    let book = schedule_book(&config, &client, &queue)?;
    let objects = open_objects(&config, open_store(&config).await?, None).await?;
    let service = oxbase_cron::CronService::new(&config, book)?.parse_schedules(objects);
    let metrics = service.metrics();
    let work = async {
        service
            .run(readiness.clone(), shutdown.clone())
            .await
            .context("the cron service failed")
    };
    background(
        &config,
        readiness.clone(),
        shutdown.clone(),
        Arc::new(move || metrics.render()),
        work,
    )
    .await
}

/// `oxbase push`: the push service, with /health, /ready and /metrics on
/// the configured port. It opens the store for `_Installation` and
/// `_PushStatus`.
async fn push(config: Config) -> anyhow::Result<()> {
    if !config.push.enabled {
        bail!("push is turned off (push.enabled = false)");
    }
    let shutdown = Shutdown::on_signals();
    let readiness = Readiness::new();
    let client = nats::connect(&config).await?;
    let objects = open_objects(&config, open_store(&config).await?, None).await?;
    let service = oxbase_push::PushService::new(&config, client, objects)?;
    let metrics = service.metrics();
    let work = async {
        service
            .run(readiness.clone(), shutdown.clone())
            .await
            .context("the push service failed")
    };
    background(
        &config,
        readiness.clone(),
        shutdown.clone(),
        Arc::new(move || metrics.render()),
        work,
    )
    .await
}

fn schedule_book(
    config: &Config,
    client: &async_nats::Client,
    queue: &Arc<oxbase_jobs::JobQueue>,
) -> anyhow::Result<Arc<oxbase_cron::ScheduleBook>> {
    Ok(oxbase_cron::ScheduleBook::new(
        async_nats::jetstream::new(client.clone()),
        oxbase_cron::Settings::from_config(config)?,
        Arc::clone(queue),
    ))
}

/// Runs a background service's `work` beside /health, /ready and /metrics
/// on the configured port, until a signal and the drain that follows.
async fn background(
    config: &Config,
    readiness: Readiness,
    shutdown: Shutdown,
    metrics: oxbase_api::MetricsSource,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let listener = oxbase_api::bind(config).await?;
    tracing::info!(addr = %listener.local_addr()?, "health and metrics");
    let router = oxbase_kit::health::router(readiness).route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move { metrics() }
        }),
    );
    let http = async {
        let stop = shutdown.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.wait().await })
            .await
            .context("the health endpoint failed")
    };
    let work = async {
        let ran = work.await;
        shutdown.trigger();
        ran
    };
    let grace = Duration::from_secs(config.shutdown_timeout_secs);
    match drain_within(&shutdown, grace, async { tokio::join!(work, http) }).await {
        Some((work, http)) => {
            work?;
            http?;
        }
        None => tracing::warn!("stopped with work still in flight"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// `oxbase triggers replay`.
async fn replay(config: Config, class: Option<String>) -> anyhow::Result<()> {
    let client = nats::connect_now(&config).await?;
    let moved = oxbase_triggers::replay_dead_letters(&config, client.clone(), class.as_deref())
        .await
        .context("cannot replay the dead letters")?;
    client.flush().await.context("NATS")?;
    let what = if moved == 1 {
        "dead letter"
    } else {
        "dead letters"
    };
    match class {
        Some(class) => println!("replayed {moved} {what} of {class}"),
        None => println!("replayed {moved} {what}"),
    }
    Ok(())
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn oxbase_store::Store>> {
    let options = oxbase_store::StoreOptions {
        pool_size: config.database_pool_size,
        read_uri: config.database_read_uri.clone(),
        read_preference: config.database_read_preference.clone(),
    };
    let store = oxbase_store::open(&config.database_uri(), &options)
        .await
        .context("cannot open the store")?;
    store.ping().await.context("the store does not answer")?;
    Ok(store)
}

/// Parse's object layer over `store`; `relay`, when events are on, is
/// woken after each write.
async fn open_objects(
    config: &Config,
    store: Arc<dyn oxbase_store::Store>,
    relay: Option<Arc<oxbase_objects::RelaySignals>>,
) -> anyhow::Result<Arc<oxbase_objects::ObjectLayer>> {
    oxbase_objects::ObjectLayer::from_config(config, store, relay)
        .await
        .context("cannot load the schemas")
}

/// Runs the outbox relay over `client`, when events are on.
fn start_relay(
    config: &Config,
    client: Option<&async_nats::Client>,
    store: &Arc<dyn oxbase_store::Store>,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<Arc<oxbase_objects::RelaySignals>>> {
    if !config.events.enabled {
        tracing::warn!("events are off (events.enabled = false): writes publish nothing");
        return Ok(None);
    }
    let client = client.context("events need NATS")?;
    let subjects = oxbase_proto::Subjects::new(config.events.prefix.as_str())?;
    let stream = oxbase_proto::EventStreamSpec::new(&subjects, &config.events.stream);
    let signals = Arc::new(oxbase_objects::RelaySignals::default());
    let relay = oxbase_objects::OutboxRelay::new(
        Arc::clone(store),
        async_nats::jetstream::new(client.clone()),
        stream,
        oxbase_objects::RelaySettings::default(),
        Arc::clone(&signals),
    );
    tokio::spawn(relay.run(readiness.clone(), shutdown.clone()));
    Ok(Some(signals))
}

/// Has the triggers service's streams and its router's consumer created,
/// when events and triggers are on: the router starts with the events
/// published after its consumer exists, so with this every event written
/// once `/ready` answers has its after-hooks delivered, even if no triggers
/// process has run yet.
fn prepare_triggers(
    config: &Config,
    client: &async_nats::Client,
    readiness: &Readiness,
    shutdown: &Shutdown,
) {
    if !config.triggers.enabled {
        return;
    }
    readiness.register("router");
    let config = config.clone();
    let client = client.clone();
    let readiness = readiness.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match oxbase_triggers::prepare(&config, client.clone()).await {
                Ok(()) => {
                    readiness.set("router", true);
                    return;
                }
                Err(err @ oxbase_triggers::TriggersError::StreamMismatch { .. }) => {
                    tracing::error!(%err, "cannot set up after-hook deliveries");
                    return;
                }
                Err(err) => tracing::debug!(%err, "cannot set up after-hook deliveries yet"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.wait() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}

/// Keeps the hook registry in sync over `client`, when triggers are on.
/// `/ready` waits for its first load.
fn start_hooks(
    config: &Config,
    client: Option<&async_nats::Client>,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<oxbase_api::Hooks>> {
    if !config.triggers.enabled {
        tracing::warn!("cloud functions and triggers are off (triggers.enabled = false)");
        return Ok(None);
    }
    let client = client.context("cloud functions and triggers need NATS")?;
    let subjects = oxbase_proto::Subjects::new(config.events.prefix.as_str())?;
    let registry = oxbase_hooks::HookRegistry::new(
        async_nats::jetstream::new(client.clone()),
        &subjects,
        config.triggers.replicas,
    );
    tokio::spawn(Arc::clone(&registry).run(shutdown.clone()));
    readiness.register("hooks");
    let loaded = Arc::clone(&registry);
    let ready = readiness.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                done = loaded.wait_loaded(Duration::from_secs(1)) => if done {
                    ready.set("hooks", true);
                    return;
                },
                () = stop.wait() => return,
            }
        }
    });
    Ok(Some(oxbase_api::Hooks {
        client: client.clone(),
        registry,
    }))
}
