//! Wiring: config → store → intake sources → router, and the server's life from bind to a clean
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::actions::builtin::{Builtins, Notifier};
use crate::actions::{Registry, SpecCatalog};
use crate::api;
use crate::chat::{self, ChatPlatform};
use crate::config::Config;
use crate::engine::approval::ApproverGroups;
use crate::engine::exec::Guardrails;
use crate::engine::{Engine, Playbooks};
use crate::intake::router::{self as intake, Intake};
use crate::integrations::Integrations;
use crate::script::{Limits, Scripts};
use crate::store::{Store, StoreError};
use crate::telemetry::{HttpLabels, Metrics};

/// What every handler shares.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    /// The intake endpoint's own state (its sources, the store, the engine).
    pub intake: Arc<Intake>,
    /// The actions, whose integrations a reload replaces.
    pub actions: Arc<Registry>,
    /// The outbound HTTP client integrations use.
    pub http: reqwest::Client,
    /// What Cordon owes other systems (tickets, chat), delivered with retries.
    pub outbox: Arc<crate::outbox::Outbox>,
    /// The configured chat platforms, started: their routes are served.
    pub chat: Vec<Arc<dyn ChatPlatform>>,
    /// The ticket systems' webhook routes.
    pub tickets: Router,
    /// The web console's own state (live events, its OIDC client).
    pub console: Arc<crate::console::Console>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("a chat platform cannot start: {0}")]
    Chat(#[from] chat::PlatformError),
    #[error("playbooks have errors:\n{0}")]
    Playbooks(crate::config::Diagnostics),
    #[error("the engine could not resume: {0}")]
    Engine(String),
}

/// A bound, not yet serving, server.
pub struct Server {
    pub state: Arc<AppState>,
    listener: TcpListener,
}

impl Server {
    /// Opens the store and binds the listener.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::new());
        let store = crate::store::open(&config.store, &config.grouping, metrics.clone()).await?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| StartError::Http(e.to_string()))?;
        let sources = intake::sources(&config, &http);
        let retry = &config.tickets.retry;
        let outbox = crate::outbox::Outbox::start_with(store.clone(), retry.base.0, retry.max.0);
        // Chat: cards and thread notes go through the outbox to each configured platform;
        // `chat.notify` in playbooks posts through the same.
        let chat_names = config.chat.platforms();
        let notifier = (!chat_names.is_empty()).then(|| {
            Arc::new(chat::Notes(chat::Fanout::new(
                outbox.clone(),
                chat_names.clone(),
            ))) as Arc<dyn Notifier>
        });
        // Email: `email.send` steps queue mail in the outbox, whose SMTP deliverer sends it.
        let mailer = crate::email::mailer(&config.email, outbox.clone(), store.clone());
        let (engine, actions, playbooks) = start_engine(
            &config,
            store.clone(),
            http.clone(),
            metrics.clone(),
            (notifier, mailer),
        )
        .await?;
        let mut platforms = Vec::new();
        if !chat_names.is_empty() {
            let fanout = chat::Fanout::new(outbox.clone(), chat_names);
            engine.add_channel(Arc::new(chat::ChatChannel::new(
                store.clone(),
                fanout.clone(),
            )));
            engine.add_watcher(Arc::new(chat::ChatWatcher::new(store.clone(), fanout)));
            let commands = Arc::new(chat::Commands::new(
                store.clone(),
                Arc::downgrade(&engine),
                approver_groups(&config),
                config.chat.triggers.clone(),
            ));
            let deps = chat::ChatDeps {
                store: store.clone(),
                engine: Arc::downgrade(&engine),
                outbox: outbox.clone(),
                http: http.clone(),
                approvers: approver_groups(&config),
                commands,
                max_body_bytes: config.server.max_body_bytes,
            };
            platforms = chat::platforms(&config.chat, &deps).await?;
        }
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let intake = Arc::new(Intake {
            sources,
            store: store.clone(),
            engine: engine.clone(),
            metrics: metrics.clone(),
        });
        // Tickets: the deliverers of the configured systems, the incident watcher, the webhooks.
        let tickets = crate::tickets::start(crate::tickets::TicketDeps {
            config: Arc::new(config.tickets.clone()),
            store: store.clone(),
            engine: engine.clone(),
            outbox: outbox.clone(),
            http: http.clone(),
            scripts: scripts(&config),
        });
        // Audit checkpoints: their sinks' deliverer, and the periodic signing.
        crate::audit::sink::start(&config, store.clone(), outbox.clone(), http.clone());
        // Email: the SMTP deliverer, and the watcher of `email.notify`.
        crate::email::start(&config.email, store.clone(), outbox.clone(), &engine);
        // Streams out: a deliverer per destination, and the watcher that queues events for them.
        if let Some(streams) = crate::streams::Streams::start(
            &config.streams,
            store.clone(),
            outbox.clone(),
            http.clone(),
        ) {
            engine.add_watcher(streams);
        }
        // Only now do runs move: the chat channels, the watchers (chat threads, tickets) and the
        // outbox deliverers above all exist, so a resumed run's first card or comment has
        // somewhere to go (tests/restart_order.rs).
        // The console hears every incident event, for its live pages.
        let console = Arc::new(crate::console::Console::new(&config));
        engine.add_watcher(console.live.watcher());
        let resumed = engine
            .recover()
            .await
            .map_err(|e| StartError::Engine(e.to_string()))?;
        tracing::info!(playbooks, resumed_runs = resumed, "engine started");
        // Retention: a pass every `retention.every`, in batches between the store's other work.
        crate::retention::Pruner::new(
            store.clone(),
            config.retention.clone(),
            crate::retention::system_clock(),
        )
        .start();
        // Streams in: alerts from JetStream, once runs can move.
        if let Some(jetstream) = &config.intake.jetstream {
            crate::streams::intake::Consumer {
                config: jetstream.clone(),
                store: store.clone(),
                engine: engine.clone(),
                metrics: metrics.clone(),
            }
            .start();
        }
        let state = Arc::new(AppState {
            config: Arc::new(config),
            store,
            engine,
            metrics,
            intake,
            actions,
            http,
            outbox,
            chat: platforms,
            tickets,
            console,
        });
        Ok(Server { state, listener })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.server.listen)
    }

    /// Serves until `shutdown` completes, then stops taking connections, lets requests in flight
    /// and runs mid-step finish, and flushes and closes the store, all within
    /// `server.shutdown_grace` plus [`CLOSE_SLACK`]. A store that does not close by then (a disk
    /// that stopped answering) is left behind with what it still had under way logged: everything
    /// acknowledged is already on disk, so exiting loses nothing that was acknowledged.
    ///
    /// While it serves, the address it listens on is written to [`address_file`], so the CLI finds
    /// the server that holds the store even when `server.listen` says port 0 or `0.0.0.0`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StoreError> {
        let state = self.state.clone();
        let address_file = address_file(&state.config);
        let mut reachable = self.local_addr();
        if reachable.ip().is_unspecified() {
            reachable.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        if let Err(e) = std::fs::write(&address_file, format!("http://{reachable}\n")) {
            tracing::warn!(error = %e, file = %address_file.display(), "cannot record the server address for the CLI");
        }
        let grace = state.config.server.shutdown_grace.0;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(serve(
            self.listener,
            router(state.clone()),
            ConnectionLimits::of(&state.config),
            async move {
                let _ = stop_rx.await;
            },
        ));
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        // The console's live streams never finish on their own.
        state.console.live.close();
        let deadline = tokio::time::Instant::now() + grace;
        let _ = stop_tx.send(());
        match tokio::time::timeout_at(deadline, serving).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => log_pending(
                &*state.store,
                false,
                "requests still in flight after the shutdown grace, store work still pending; closing anyway",
            ),
        }
        let _ = std::fs::remove_file(&address_file);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !state.engine.drain(left).await {
            tracing::warn!(grace = ?grace, "runs still advancing after the shutdown grace; they resume at the next start or on another replica");
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left + CLOSE_SLACK, state.store.close()).await {
            Ok(closed) => closed?,
            Err(_) => {
                log_pending(
                    &*state.store,
                    true,
                    "the store did not close within the shutdown grace; exiting with its work still pending (everything acknowledged is already on disk)",
                );
                return Err(StoreError::Backend(
                    "the store did not close within the shutdown grace".into(),
                ));
            }
        }
        tracing::info!("store flushed and closed");
        Ok(())
    }
}

/// What one connection may take (`server:` in the config).
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_read_timeout: std::time::Duration,
    max_connections: usize,
}

impl ConnectionLimits {
    fn of(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: config.server.header_read_timeout.0,
            max_connections: config.server.max_connections.max(1),
        }
    }
}

/// Serves `app` on `listener` over HTTP/1.1 until `stop` completes, then lets the requests in
/// flight finish (the caller bounds how long).
///
/// Our own accept loop instead of `axum::serve`, which takes no settings: hyper's
/// `header_read_timeout` needs a timer, which only a hand-built connection gets, and it is what
/// closes a connection whose headers trickle in (slowloris) or never come. HTTP/1.1 only: hyper's
/// HTTP/2 detection waits for the first bytes with no time limit, and every sender Cordon serves
/// (cloud notification services, chat platforms, ticket systems, the CLI) speaks HTTP/1.1.
/// At most `max_connections` are served at once; the next is accepted when one closes, so a
/// flood of idle connections waits in the kernel's backlog instead of holding file descriptors.
/// A body that is too slow is [`body_deadline`]'s, in the router.
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (closing, _) = tokio::sync::watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken: wait a
                    // little instead of spinning, and go on.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let app = app.clone();
        let mut closing = closing.subscribe();
        tokio::spawn(async move {
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let mut app = app.clone();
                    async move {
                        tower::Service::call(&mut app, request.map(axum::body::Body::new)).await
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = closing.wait_for(|closing| *closing) => {}
            }
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection holds a slot until it ends: all slots back means all requests answered.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
    Ok(())
}

/// Cuts off a request body that has not fully arrived `server.body_read_timeout` after its
/// headers: the body ends in an error for whoever reads it, and whatever the handler answers
/// then is replaced by 408 with a JSON body and `Connection: close`. A body nobody reads costs
/// nothing and is not timed.
async fn body_deadline(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let expired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let limit = app.config.server.body_read_timeout.0;
    let request = request.map(|body| {
        axum::body::Body::new(Deadline {
            body,
            sleep: Box::pin(tokio::time::sleep(limit)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if !expired.load(std::sync::atomic::Ordering::Relaxed) {
        return response;
    }
    let mut response = crate::http::ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the request body did not arrive within {} s (server.body_read_timeout)",
            limit.as_secs_f64()
        ),
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// A request body that fails once its time is up ([`body_deadline`]).
struct Deadline {
    body: axum::body::Body,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    expired: Arc<std::sync::atomic::AtomicBool>,
}

/// What reading a body past its deadline fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl hyper::body::Body for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.expired
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Logs what the store still has under way when the shutdown runs out of time: a warning while
/// closing goes on, an error when the store is left behind.
fn log_pending(store: &dyn Store, left_behind: bool, message: &str) {
    let oldest = store.oldest_pending();
    let operation = oldest.as_ref().map(|o| o.operation.name());
    let pending_seconds = oldest.as_ref().map(|o| o.age.as_secs_f64());
    let queued = store.queued();
    if left_behind {
        tracing::error!(queued, operation, pending_seconds, "{message}");
    } else {
        tracing::warn!(queued, operation, pending_seconds, "{message}");
    }
}

/// What closing the store may take beyond `server.shutdown_grace`.
pub const CLOSE_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// The script engine with the configured limits.
pub fn scripts(config: &Config) -> Arc<Scripts> {
    Arc::new(Scripts::new(Limits {
        timeout: config.playbooks.script_timeout.0,
        ..Limits::default()
    }))
}

/// Approver groups from the config.
pub fn approver_groups(config: &Config) -> ApproverGroups {
    ApproverGroups(config.approvers.clone())
}

/// The actions playbooks may name: the built-ins and those of the configured integrations.
pub fn catalog(config: &Config) -> Result<SpecCatalog, crate::config::Diagnostics> {
    let integrations = load_integrations(config, reqwest::Client::new(), None)?;
    Ok(Registry::catalog_with(&integrations))
}

/// Loads the configured integrations.
pub fn load_integrations(
    config: &Config,
    http: reqwest::Client,
    store: Option<Arc<dyn Store>>,
) -> Result<Integrations, crate::config::Diagnostics> {
    Integrations::load(&config.integrations, http, store).map_err(crate::config::Diagnostics)
}

/// The approver group names playbooks may name: the config's groups.
pub fn group_names(config: &Config) -> Vec<String> {
    config.approvers.keys().cloned().collect()
}

/// Loads the configured playbooks; every error of every file, or the playbooks.
pub fn load_playbooks(
    config: &Config,
    scripts: &Scripts,
    catalog: &dyn crate::actions::Catalog,
) -> Result<Vec<crate::playbook::Compiled>, crate::config::Diagnostics> {
    let groups = group_names(config);
    let (playbooks, diagnostics) =
        crate::playbook::load::load_paths(&config.playbooks.paths, scripts, catalog, Some(&groups));
    if diagnostics.is_empty() {
        Ok(playbooks)
    } else {
        Err(crate::config::Diagnostics(diagnostics))
    }
}

/// Where the built-in `chat.notify` and `email.send` hand their messages, when configured.
type Outlets = (
    Option<Arc<dyn Notifier>>,
    Option<Arc<dyn crate::actions::builtin::Mailer>>,
);

async fn start_engine(
    config: &Config,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    (notifier, mailer): Outlets,
) -> Result<(Arc<Engine>, Arc<Registry>, usize), StartError> {
    let scripts = scripts(config);
    let integrations = load_integrations(config, http.clone(), Some(store.clone()))
        .map_err(StartError::Playbooks)?;
    // YARA rules are compiled once here and at every reload; a rule with an error stops the start.
    let s3 = crate::yara::s3::S3Reader::from_config(config).map_err(|e| {
        StartError::Playbooks(crate::config::Diagnostics(vec![
            crate::config::Diagnostic::new(std::path::Path::new("yara.s3_credentials"), 0, 0, e),
        ]))
    })?;
    let yara = Arc::new(
        crate::yara::Yara::load(&config.yara)
            .map_err(StartError::Playbooks)?
            .with_s3(s3),
    );
    // `core.http` follows redirects itself, checking each hop against `http_allow`, on clients
    // that reach only the addresses `http_allow` allows (src/actions/egress.rs).
    let builtins = Arc::new(
        Builtins::new(
            Some(store.clone()),
            config.playbooks.http_allow.clone(),
            config.playbooks.http_max_response_bytes,
            notifier,
        )
        .map_err(StartError::Http)?
        .with_mailer(mailer)
        .with_yara(Some(yara)),
    );
    let actions = Arc::new(Registry::new(builtins, integrations));
    let playbooks =
        load_playbooks(config, &scripts, &*actions.catalog()).map_err(StartError::Playbooks)?;
    let g = &config.guardrails;
    let guardrails = Arc::new(
        Guardrails::new(
            g.protected.clone(),
            g.blast_radius
                .iter()
                .map(|(k, v)| (k.clone(), (v.max, v.window.0)))
                .collect(),
            g.blast_radius_approvers.clone(),
        )
        .counted_in(store.clone()),
    );
    let count = playbooks.len();
    let store_for_people = store.clone();
    let engine = Engine::start(
        store,
        (scripts, actions.clone(), guardrails),
        Playbooks::new(playbooks),
        crate::engine::service::Trust {
            groups: approver_groups(config),
            people: Arc::new(crate::trust::Directory::new(config, store_for_people)),
            undo_approvers: config.guardrails.undo_approvers.clone(),
        },
        config.grouping.resolved_at_source,
        config.playbooks.workers,
        metrics,
    );
    Ok((engine, actions, count))
}

/// Where a running server records its address: beside the store folder, as `<store path>.addr`.
pub fn address_file(config: &Config) -> std::path::PathBuf {
    let mut name = config.store.path.clone().into_os_string();
    name.push(".addr");
    name.into()
}

/// Every route: the admin API and health here, and the routes of intake, the chat platforms and
/// the ticket systems, each built from its own state.
pub fn router(state: Arc<AppState>) -> Router {
    let own: Router = Router::new()
        // One path, two meanings: POST takes alerts from a source (intake's router, merged
        // below), GET shows one alert by id.
        .route("/v1/alerts/{source}", get(api::show_alert))
        .route("/v1/alerts", get(api::list_alerts))
        .route("/v1/incidents", get(api::list_incidents))
        .route("/v1/search", get(api::search))
        .route("/v1/hunt/{entity}", get(api::hunt))
        .route("/v1/runs", get(api::list_runs))
        .route("/v1/runs/{id}", get(api::show_run))
        .route("/v1/runs/{id}/cancel", post(api::cancel_run))
        .route("/v1/runs/{id}/steps/{step}/undo", post(api::undo_step))
        .route("/v1/runs/{id}/approvals/{step}", post(api::decide_approval))
        .route(
            "/v1/runs/{id}/steps/{step}/resolve",
            post(api::resolve_step),
        )
        .route("/v1/playbooks/{id}/runs", post(api::trigger_playbook))
        .route("/v1/audit/verify", get(api::verify_audit))
        .route("/v1/whoami", get(api::people::whoami))
        .route("/v1/people", get(api::people::list_people))
        .route(
            "/v1/people/{id}",
            axum::routing::put(api::people::put_person).delete(api::people::remove_person),
        )
        .route(
            "/v1/tokens",
            get(api::people::list_tokens).post(api::people::create_token),
        )
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(api::people::revoke_token),
        )
        .route("/v1/audit/checkpoints", post(api::audit_checkpoint))
        .route("/v1/playbooks/reload", post(reload_playbooks))
        .route("/v1/store/stats", get(store_stats))
        .route("/v1/incidents/{id}", get(api::show_incident))
        .route("/v1/incidents/{id}/{change}", post(api::incident_status))
        .route("/v1/incidents/{id}/report", get(api::report))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    own.merge(intake::router(state.intake.clone()))
        .merge(crate::console::router(state.clone()))
        .merge(chat::routes(&state.chat))
        .merge(state.tickets.clone())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            record_latency,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), body_deadline))
}

/// Reloads the playbooks from the configured paths. A set with any error is refused whole and the
/// loaded playbooks keep running.
pub fn reload(state: &AppState) -> Result<usize, crate::config::Diagnostics> {
    let scripts = scripts(&state.config);
    let integrations =
        load_integrations(&state.config, state.http.clone(), Some(state.store.clone()))?;
    let catalog = Registry::catalog_with(&integrations);
    let playbooks = load_playbooks(&state.config, &scripts, &catalog)?;
    let rules = crate::yara::compile(&state.config.yara)?;
    let count = playbooks.len();
    if let Some(yara) = state.actions.builtins().yara() {
        yara.replace(rules);
    }
    state.actions.replace(integrations);
    state.engine.replace_playbooks(Playbooks::new(playbooks));
    Ok(count)
}

async fn reload_playbooks(
    State(app): State<Arc<AppState>>,
    caller: crate::api::Authed,
) -> Response {
    if let Err(refused) = caller
        .require(
            &app,
            crate::model::people::Role::Author,
            "reloading playbooks",
        )
        .await
    {
        return refused.into_response();
    }
    match reload(&app) {
        Ok(count) => {
            tracing::info!(playbooks = count, "playbooks reloaded");
            axum::Json(serde_json::json!({ "reloaded": count })).into_response()
        }
        Err(diagnostics) => {
            tracing::warn!(
                errors = diagnostics.0.len(),
                "playbook reload refused; the loaded playbooks keep running"
            );
            let errors: Vec<String> = diagnostics.0.iter().map(|d| d.to_string()).collect();
            (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": "invalid_playbooks", "message": "the playbooks have errors; the loaded ones keep running", "errors": errors }))).into_response()
        }
    }
}

/// `GET /v1/store/stats`: counts and sizes per kind of record (`cordon store stats`).
async fn store_stats(State(app): State<Arc<AppState>>, caller: crate::api::Authed) -> Response {
    if let Err(refused) = caller
        .require(
            &app,
            crate::model::people::Role::Viewer,
            "reading store stats",
        )
        .await
    {
        return refused.into_response();
    }
    match app.store.stats().await {
        Ok(stats) => axum::Json(stats).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "store stats failed");
            crate::http::ApiError::unavailable().into_response()
        }
    }
}

/// Reloads playbooks on every SIGHUP, for as long as the server runs.
pub fn reload_on_sighup(state: Arc<AppState>) {
    // The handler is installed before this returns (not inside the task), so a SIGHUP sent as
    // soon as the server says it listens reloads instead of killing the process.
    #[cfg(unix)]
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload playbooks with `cordon reload`");
        return;
    };
    #[cfg(unix)]
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reload(&state) {
                Ok(count) => tracing::info!(playbooks = count, "playbooks reloaded (SIGHUP)"),
                Err(diagnostics) => {
                    tracing::warn!(errors = %diagnostics, "playbook reload refused; the loaded playbooks keep running")
                }
            }
        }
    });
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the store takes writes and none of its operations has been under way for longer
/// than `store.stall_limit`. Reads nothing from the store itself, so it answers while the store
/// is stuck.
async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let oldest = app.store.oldest_pending();
    let limit = app.config.store.stall_limit.0;
    if let Some(operation) = app.metrics.observe_store(oldest.as_ref(), limit) {
        let pending = oldest.map_or(0.0, |o| o.age.as_secs_f64());
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "store stalled",
                "message": format!("a store {operation} has been under way for {pending:.1}s (store.stall_limit is {}s)", limit.as_secs_f64()),
                "operation": operation,
                "pending_seconds": pending,
                "queued": app.store.queued(),
            })),
        )
            .into_response();
    }
    if app.store.is_ready() {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "store not ready" })),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    app.metrics.observe_store(
        app.store.oldest_pending().as_ref(),
        app.config.store.stall_limit.0,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn record_latency(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    app.metrics
        .http_request_seconds
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The router answered without a socket: the request goes straight to the service.
#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::Service;

    use super::*;

    async fn server() -> (Server, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: t0ken\nstore:\n  path: {}/store\nplaybooks:\n  paths: []\n",
            dir.path().display()
        );
        let config = crate::config::parse(&text, std::path::Path::new("test.yaml"))
            .unwrap_or_else(|d| panic!("{d}"));
        (Server::bind(config).await.expect("binds"), dir)
    }

    async fn answer(server: &Server, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let mut router = router(server.state.clone());
        let response = router.call(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn routes_of_unconfigured_platforms_and_systems_say_so_and_the_admin_api_wants_its_token()
    {
        let (server, _dir) = server().await;
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let post = |uri: &str| Request::post(uri).body(Body::from("{}")).unwrap();

        assert_eq!(
            answer(&server, get("/healthz")).await,
            (StatusCode::OK, serde_json::json!({ "status": "ok" }))
        );
        let (status, body) = answer(&server, post("/v1/chat/discord/interactions")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("discord_not_configured"))
        );
        let (status, body) = answer(&server, post("/v1/chat/irc/messages")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (status, body) = answer(&server, post("/v1/tickets/jira/webhook")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        // The API refuses a request without a credential before reading anything else; the
        // bootstrap token manages people and tokens, and reads nothing else.
        let (status, body) = answer(&server, get("/v1/runs/nope")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
        let (status, body) = answer(
            &server,
            Request::get("/v1/runs/nope")
                .header("authorization", "Bearer t0ken")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["missing_role"].as_str()),
            (StatusCode::FORBIDDEN, Some("viewer")),
            "{body}"
        );
    }
}
