//! The `oxbase` command: one binary that runs any of oxbase's services.

pub mod nats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use oxbase_cron::CronConfig;
use oxbase_hooks::TriggersConfig;
use oxbase_jobs::JobsConfig;
use oxbase_kit::shutdown::drain_within;
use oxbase_kit::{Config, MetricsSource, Readiness, Secret, Sections, Service, Shutdown};
use oxbase_livequery::{LiveQuery, LiveQueryConfig};
use oxbase_push::PushConfig;
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
    /// The LiveQuery server alone: Parse's realtime subscriptions over
    /// WebSocket on the configured port (on any path), fed by the event
    /// stream. Needs NATS, and the store for sessions, roles and class
    /// permissions.
    Livequery(PortArgs),
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

/// Every service's config section: one file and one set of variables
/// configure the whole binary.
pub fn sections() -> Sections {
    Sections::new()
        .with::<oxbase_objects::Limits>()
        .with::<oxbase_objects::AuthConfig>()
        .with::<oxbase_objects::AccountLockout>()
        .with::<oxbase_objects::PasswordPolicy>()
        .with::<oxbase_objects::EmailConfig>()
        .with::<oxbase_api::FilesConfig>()
        .with::<oxbase_api::RateLimitConfig>()
        .with::<oxbase_api::IdempotencyConfig>()
        .with::<oxbase_api::PagesConfig>()
        .with::<TriggersConfig>()
        .with::<JobsConfig>()
        .with::<CronConfig>()
        .with::<PushConfig>()
        .with::<LiveQueryConfig>()
}

impl Command {
    /// The subcommand's name, which names the process in its traces.
    fn name(&self) -> &'static str {
        match self {
            Self::Dev(_) => "dev",
            Self::Api(_) => "api",
            Self::All(_) => "all",
            Self::Triggers(_) => "triggers",
            Self::Jobs(_) => "jobs",
            Self::Cron(_) => "cron",
            Self::Push(_) => "push",
            Self::Livequery(_) => "livequery",
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ran = run_command(cli).await;
    // The spans of the last moments, the shutdown's included.
    oxbase_kit::telemetry::shutdown().await;
    ran
}

async fn run_command(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.name();
    let background = |port: Option<u16>| -> anyhow::Result<Config> {
        let config = Config::load(&sections(), cli.config.as_deref(), &port_override(port))?;
        oxbase_kit::telemetry::init_for(&config, command);
        Ok(config)
    };
    match cli.command {
        Command::Dev(args) => dev(cli.config, args).await,
        Command::Api(args) => {
            serve(server_config(cli.config, &args, command)?, Services::Api).await
        }
        Command::All(args) => {
            serve(server_config(cli.config, &args, command)?, Services::All).await
        }
        Command::Jobs(args) => {
            let process = Process::new(background(args.port)?);
            let service = jobs(&process).await?;
            run_alone(process, service).await
        }
        Command::Cron(args) => {
            let process = Process::new(background(args.port)?);
            let service = cron(&process.config).await?;
            run_alone(process, service).await
        }
        Command::Push(args) => {
            let process = Process::new(background(args.port)?);
            let service = push(&process.config).await?;
            run_alone(process, service).await
        }
        Command::Livequery(args) => {
            let process = Process::new(background(args.port)?);
            let live = livequery(&process).await?;
            let service = live.service(&process.readiness);
            run_alone_with(process, service, Some(live.router())).await
        }
        Command::Triggers(args) => match args.action {
            None => {
                let process = Process::new(background(args.port)?);
                let service = triggers(&process).await?;
                run_alone(process, service).await
            }
            // No log lines: its output is the count, for scripts.
            Some(TriggersAction::Replay { class }) => {
                let config = Config::load(&sections(), cli.config.as_deref(), &[])?;
                replay(config, class).await
            }
        },
    }
}

fn port_override(port: Option<u16>) -> Vec<(&'static str, Value)> {
    port.map(|port| ("port", Value::from(port)))
        .into_iter()
        .collect()
}

/// The config of a process that serves the API.
fn server_config(
    file: Option<PathBuf>,
    args: &ServerArgs,
    command: &str,
) -> anyhow::Result<Config> {
    let config = Config::load(&sections(), file.as_deref(), &args.overrides())?;
    oxbase_kit::telemetry::init_for(&config, command);
    if config.master_key.is_none() {
        bail!("a master key is required: set OXBASE_MASTER_KEY or --master-key");
    }
    Ok(config)
}

async fn dev(file: Option<PathBuf>, args: ServerArgs) -> anyhow::Result<()> {
    let defaults = Config {
        host: "127.0.0.1".into(),
        allow_client_class_creation: true,
        // No load balancer to wait for.
        drain_delay_ms: 0,
        ..Config::default()
    };
    let mut config = Config::load_with_defaults(
        &sections(),
        defaults,
        file.as_deref(),
        std::env::vars(),
        &args.overrides(),
    )?;
    oxbase_kit::telemetry::init_for(&config, "dev");
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
    oxbase_api::check_email(&config)
        .map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))?;
    oxbase_api::check_files(&config)
        .map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))?;
    let shutdown = Shutdown::on_signals();
    let readiness = Readiness::new();
    readiness.register("store");
    let store = open_store(&config).await?;
    readiness.set("store", true);
    tokio::spawn(watch_store(
        store.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    let triggers_config: TriggersConfig = config.section();
    let jobs_config: JobsConfig = config.section();
    let push_config: PushConfig = config.section();
    let all = services == Services::All;
    // Every NATS-backed feature is reached through this client; push is
    // on by default, so `oxbase api` without NATS needs push.enabled off.
    let client = if config.events.enabled
        || triggers_config.enabled
        || jobs_config.enabled
        || push_config.enabled
        || oxbase_api::needs_nats(&config)
    {
        Some(nats::connect(&config).await?)
    } else {
        None
    };
    // The relay outlives the requests, to publish what the last ones wrote.
    let relay_stop = Shutdown::new();
    let (relay, relay_task) =
        start_relay(&config, client.as_ref(), &store, &readiness, &relay_stop)?.unzip();
    let hooks = start_hooks(&config, client.as_ref(), &readiness, &shutdown)?;
    if let (Some(client), Some(_)) = (&client, &relay) {
        prepare_triggers(&config, client, &readiness, &shutdown);
    }
    let objects = open_objects(&config, store, relay).await?;
    let registry = hooks.as_ref().map(|hooks| Arc::clone(&hooks.registry));

    // What runs beside the API: every service with `all`.
    let mut background: Vec<Box<dyn Service>> = Vec::new();
    if let (Some(hooks), true) = (&hooks, all) {
        background.push(Box::new(oxbase_triggers::TriggersService::new(
            &config,
            hooks.client.clone(),
            Arc::clone(&hooks.registry),
        )?));
    }
    let mut queue = None;
    if let Some(client) = client.as_ref().filter(|_| jobs_config.enabled) {
        if all {
            let service = oxbase_jobs::JobsService::new(&config, client.clone(), registry.clone())?
                .status_sink(objects.clone());
            queue = Some(service.queue());
            background.push(Box::new(service));
        } else {
            queue = Some(job_queue(&config, client)?);
        }
    }
    let jobs = match (&client, queue) {
        (Some(client), Some(queue)) => {
            let schedules = if config.section::<CronConfig>().enabled {
                schedule_book(&config, client, &queue).ok()
            } else {
                None
            };
            if let (Some(book), true) = (&schedules, all) {
                background.push(Box::new(
                    oxbase_cron::CronService::new(&config, Arc::clone(book))?
                        .parse_schedules(objects.clone()),
                ));
            }
            Some(oxbase_api::Jobs {
                queue,
                schedules,
                registry: registry.clone(),
            })
        }
        _ => None,
    };
    let push = match &client {
        Some(client) if push_config.enabled => {
            if all {
                background.push(Box::new(oxbase_push::PushService::new(
                    &config,
                    client.clone(),
                    objects.clone(),
                )?));
            }
            Some(oxbase_push::PushQueue::new(
                async_nats::jetstream::new(client.clone()),
                oxbase_push::Settings::from_config(&config)?,
            ))
        }
        _ => None,
    };

    let live = live_query(&config, client.as_ref(), &objects, hooks.as_ref())?;
    if let Some(live) = &live {
        background.push(live.service(&readiness));
    }

    let sources: Vec<MetricsSource> = background.iter().map(|service| service.metrics()).collect();
    let more_metrics = (!sources.is_empty()).then(|| {
        Arc::new(move || sources.iter().map(|source| source()).collect::<String>()) as MetricsSource
    });
    let app = oxbase_api::App::new(&config, objects, hooks, jobs, push, client.as_ref());
    let listener = oxbase_api::bind(&config).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        mount = %config.mount_path,
        services = ?background.iter().map(|service| service.name()).collect::<Vec<_>>(),
        "serving the Parse API"
    );
    let mut router = app.router(readiness.clone(), more_metrics);
    if let Some(live) = &live {
        router = live.wrap(router, &config.mount_path);
    }
    let drain_delay = Duration::from_millis(config.drain_delay_ms);
    let api = async {
        let served = oxbase_api::serve(
            listener,
            router,
            readiness.clone(),
            shutdown.clone(),
            drain_delay,
        )
        .await;
        shutdown.trigger();
        relay_stop.trigger();
        if let Some(relay) = relay_task {
            let _ = relay.await;
        }
        served.map_err(anyhow::Error::from)
    };
    // A service that fails stops the others and the API with it.
    let services = async {
        oxbase_kit::run_services(background, readiness.clone(), shutdown.clone())
            .await
            .map_err(anyhow::Error::from)
    };
    // The grace for requests in flight starts once the API stops taking
    // them.
    drain(&config, &shutdown.delayed(drain_delay), async {
        let (api, services) = tokio::join!(api, services);
        api.and(services)
    })
    .await
}

/// A process that runs one background service: its config, and the
/// readiness and shutdown its parts share.
struct Process {
    config: Config,
    readiness: Readiness,
    shutdown: Shutdown,
}

impl Process {
    fn new(config: Config) -> Self {
        Self {
            config,
            readiness: Readiness::new(),
            shutdown: Shutdown::on_signals(),
        }
    }

    /// The hook registry, kept in sync until the process stops; `/ready`
    /// waits for its first load.
    fn hooks(&self, client: &async_nats::Client) -> anyhow::Result<Option<oxbase_api::Hooks>> {
        start_hooks(&self.config, Some(client), &self.readiness, &self.shutdown)
    }
}

/// The triggers service of `oxbase triggers`.
async fn triggers(process: &Process) -> anyhow::Result<Box<dyn Service>> {
    let config = &process.config;
    if !config.section::<TriggersConfig>().enabled {
        bail!("triggers are turned off (triggers.enabled = false)");
    }
    let client = nats::connect(config).await?;
    let hooks = process.hooks(&client)?.context("triggers are turned off")?;
    Ok(Box::new(oxbase_triggers::TriggersService::new(
        config,
        client,
        hooks.registry,
    )?))
}

/// LiveQuery beside the API, when it is on and NATS carries events.
fn live_query(
    config: &Config,
    client: Option<&async_nats::Client>,
    objects: &Arc<oxbase_objects::ObjectLayer>,
    hooks: Option<&oxbase_api::Hooks>,
) -> anyhow::Result<Option<LiveQuery>> {
    if !config.section::<LiveQueryConfig>().enabled {
        return Ok(None);
    }
    let Some(client) = client.filter(|_| config.events.enabled) else {
        tracing::warn!("LiveQuery needs NATS and events (events.enabled); it is off");
        return Ok(None);
    };
    let caller = hooks.map(|hooks| hook_caller(config, hooks)).transpose()?;
    Ok(Some(LiveQuery::new(
        config,
        Arc::clone(objects),
        client.clone(),
        caller,
    )?))
}

/// The LiveQuery server of `oxbase livequery`. It opens the store for
/// sessions, roles and class permissions.
async fn livequery(process: &Process) -> anyhow::Result<LiveQuery> {
    let config = &process.config;
    if !config.section::<LiveQueryConfig>().enabled {
        bail!("LiveQuery is turned off (livequery.enabled = false)");
    }
    let client = nats::connect(config).await?;
    let caller = process
        .hooks(&client)?
        .map(|hooks| hook_caller(config, &hooks))
        .transpose()?;
    let objects = open_objects(config, open_store(config).await?, None).await?;
    Ok(LiveQuery::new(config, objects, client, caller)?)
}

fn hook_caller(
    config: &Config,
    hooks: &oxbase_api::Hooks,
) -> anyhow::Result<oxbase_hooks::HookCaller> {
    Ok(oxbase_hooks::HookCaller::new(
        hooks.client.clone(),
        Arc::clone(&hooks.registry),
        oxbase_proto::Subjects::new(config.events.prefix.as_str())?,
        config.section::<TriggersConfig>().call_limits(),
    ))
}

/// The jobs service of `oxbase jobs`. It opens the store to keep Parse's
/// `_JobStatus`.
async fn jobs(process: &Process) -> anyhow::Result<Box<dyn Service>> {
    let config = &process.config;
    if !config.section::<JobsConfig>().enabled {
        bail!("jobs are turned off (jobs.enabled = false)");
    }
    let client = nats::connect(config).await?;
    let hooks = process.hooks(&client)?;
    let registry = hooks.map(|hooks| hooks.registry);
    let objects = open_objects(config, open_store(config).await?, None).await?;
    Ok(Box::new(
        oxbase_jobs::JobsService::new(config, client, registry)?.status_sink(objects),
    ))
}

/// The cron service of `oxbase cron`. It opens the store to fire Parse's
/// `_JobSchedule`.
async fn cron(config: &Config) -> anyhow::Result<Box<dyn Service>> {
    if !config.section::<CronConfig>().enabled || !config.section::<JobsConfig>().enabled {
        bail!("cron is turned off (cron.enabled = false, or jobs.enabled = false)");
    }
    let client = nats::connect(config).await?;
    let book = schedule_book(config, &client, &job_queue(config, &client)?)?;
    let objects = open_objects(config, open_store(config).await?, None).await?;
    Ok(Box::new(
        oxbase_cron::CronService::new(config, book)?.parse_schedules(objects),
    ))
}

/// The push service of `oxbase push`. It opens the store for
/// `_Installation` and `_PushStatus`.
async fn push(config: &Config) -> anyhow::Result<Box<dyn Service>> {
    if !config.section::<PushConfig>().enabled {
        bail!("push is turned off (push.enabled = false)");
    }
    let client = nats::connect(config).await?;
    let objects = open_objects(config, open_store(config).await?, None).await?;
    Ok(Box::new(oxbase_push::PushService::new(
        config, client, objects,
    )?))
}

fn job_queue(
    config: &Config,
    client: &async_nats::Client,
) -> anyhow::Result<Arc<oxbase_jobs::JobQueue>> {
    Ok(oxbase_jobs::JobQueue::new(
        async_nats::jetstream::new(client.clone()),
        Arc::new(oxbase_jobs::Settings::from_config(config)?),
    ))
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

/// Runs one background service beside /health, /ready and /metrics on the
/// configured port, until a signal and the drain that follows.
async fn run_alone(process: Process, service: Box<dyn Service>) -> anyhow::Result<()> {
    run_alone_with(process, service, None).await
}

/// [`run_alone`], with `more` (the service's own endpoints) served on the
/// same port.
async fn run_alone_with(
    process: Process,
    service: Box<dyn Service>,
    more: Option<axum::Router>,
) -> anyhow::Result<()> {
    let Process {
        config,
        readiness,
        shutdown,
    } = process;
    let listener = oxbase_api::bind(&config).await?;
    tracing::info!(addr = %listener.local_addr()?, service = service.name(), "health and metrics");
    readiness.drain_on(&shutdown);
    let metrics = service.metrics();
    let mut router = oxbase_kit::health::router(readiness.clone()).route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move { metrics() }
        }),
    );
    if let Some(more) = more {
        router = router.merge(more);
    }
    let http = async {
        let stop = shutdown.clone();
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.wait().await })
        .await
        .context("the health endpoint failed")
    };
    // The process is there for the service: once it stops, so does the
    // health endpoint.
    let work = async {
        let ran =
            oxbase_kit::run_services(vec![service], readiness.clone(), shutdown.clone()).await;
        shutdown.trigger();
        ran.map_err(anyhow::Error::from)
    };
    drain(&config, &shutdown, async {
        let (work, http) = tokio::join!(work, http);
        work.and(http)
    })
    .await
}

/// Waits for `work`, or for the shutdown grace to end once a stop began.
async fn drain(
    config: &Config,
    shutdown: &Shutdown,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let grace = Duration::from_secs(config.shutdown_timeout_secs);
    match drain_within(shutdown, grace, work).await {
        Some(done) => done?,
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

/// Keeps `/ready` following the store: a process whose database is down
/// leaves the load balancer until it answers again.
async fn watch_store(
    store: Arc<dyn oxbase_store::Store>,
    readiness: Readiness,
    shutdown: Shutdown,
) {
    const EVERY: Duration = Duration::from_secs(1);
    loop {
        let answered = matches!(
            tokio::time::timeout(EVERY * 2, store.ping()).await,
            Ok(Ok(()))
        );
        readiness.set("store", answered);
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn oxbase_store::Store>> {
    let options = oxbase_store::StoreOptions {
        pool_size: config.database_pool_size,
        read_uri: config.database_read_uri.clone(),
        read_preference: config.database_read_preference.clone(),
        query_timeout: {
            let limits: oxbase_objects::Limits = config.section();
            (limits.query_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(limits.query_timeout_ms))
        },
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

/// Runs the outbox relay over `client`, when events are on, until `stop`
/// and its hand-over are done (the task).
fn start_relay(
    config: &Config,
    client: Option<&async_nats::Client>,
    store: &Arc<dyn oxbase_store::Store>,
    readiness: &Readiness,
    stop: &Shutdown,
) -> anyhow::Result<
    Option<(
        Arc<oxbase_objects::RelaySignals>,
        tokio::task::JoinHandle<()>,
    )>,
> {
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
    let task = tokio::spawn(relay.run(readiness.clone(), stop.clone()));
    Ok(Some((signals, task)))
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
    if !config.section::<TriggersConfig>().enabled {
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
    let triggers = config.section::<TriggersConfig>();
    if !triggers.enabled {
        tracing::warn!("cloud functions and triggers are off (triggers.enabled = false)");
        return Ok(None);
    }
    let client = client.context("cloud functions and triggers need NATS")?;
    let subjects = oxbase_proto::Subjects::new(config.events.prefix.as_str())?;
    let registry = oxbase_hooks::HookRegistry::new(
        async_nats::jetstream::new(client.clone()),
        &subjects,
        triggers.replicas,
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
