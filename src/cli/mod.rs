//! The command line: clap's types for every subcommand, and [`run`], which hands each to its
//! handler in [`commands`]. The data commands read through [`reader`] (the local store, or the
//! admin API of the server holding it) and show what they read with [`print`].

mod backtest;
mod commands;
mod people;
mod print;
mod reader;
mod search;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Cordon: a chat-ops bot and SOAR playbook runner for cloud detection and response.
#[derive(Debug, Parser)]
#[command(name = "cordon", version, about)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        short,
        global = true,
        env = "CORDON_CONFIG",
        default_value = "config.yaml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: alert intake, admin API, health and metrics on `server.listen`.
    Serve,
    /// Check the config (and, with PATHS, playbooks); print every error as file:line:column. Exit 1 on any error.
    Validate {
        /// Playbook files or folders to check as well.
        paths: Vec<PathBuf>,
    },
    /// List and show stored alerts.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// List and show incidents.
    #[command(subcommand)]
    Incidents(IncidentsCommand),
    /// Run playbooks' offline `tests:` (no network); one line per case, then `N passed, N failed`. Exit 1 on any failure.
    Test {
        /// Playbook files or folders (default: the config's playbooks.paths, else `playbooks`).
        paths: Vec<PathBuf>,
    },
    /// List, show, cancel runs; retry or skip a step held for a decision.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Approve an approval step of a run (through the running server's admin API).
    Approve(DecisionArgs),
    /// Deny an approval step of a run (through the running server's admin API).
    Deny(DecisionArgs),
    /// Check the audit log's hash chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The actions playbooks can use.
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// Print the JSON Schema of playbooks (for editors: see README).
    Schema {
        /// What to describe: `playbook`.
        what: String,
    },
    /// Personal tokens: create (printed once), list, revoke. Needs `admin` or the bootstrap token.
    #[command(subcommand)]
    Tokens(people::TokensCommand),
    /// People stored on the server (those in the config are listed too). Needs `admin`.
    #[command(subcommand)]
    People(people::PeopleCommand),
    /// Save a credential for the CLI: a personal token (pasted, or `--token-stdin`), or an OIDC
    /// login through the device authorization grant when the config names an `oidc` issuer.
    Login(people::LoginArgs),
    /// Who the server says you are, and your roles.
    Whoami {
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Reload the running server's playbooks (like SIGHUP); refused whole if any has an error.
    Reload {
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// The store: counts and sizes per kind of record; a retention pass now.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Replay stored alerts through PLAYBOOKS (edited, not loaded) in dry run, offline, and show
    /// what they would have done and the incidents gained and lost against the loaded playbooks.
    /// Nothing is called and nothing is written.
    Backtest {
        /// Playbook files or folders to try.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// How far back: alerts received within this (e.g. 7d, 30d).
        #[arg(long, default_value = "30d")]
        since: cordon::config::HumanDuration,
        /// Only alerts from this source.
        #[arg(long)]
        source: Option<String>,
        /// Only alerts this search query finds (docs/search.md), e.g. `severity:>=7`.
        #[arg(long)]
        query: Option<String>,
        #[command(flatten)]
        from: Source,
    },
    /// Search alerts and incidents: `field:value` terms, free words, AND/OR/NOT, parentheses
    /// (docs/search.md). Newest first; `--cursor` takes the `more:` cursor of the page before.
    #[command(after_help = READS_THE_STORE)]
    Search {
        /// The query, e.g. `source:aws.guardduty severity:>=7 ip:203.0.113.7` or `tor relay`.
        #[arg(default_value = "")]
        query: String,
        /// Only alerts and incidents at or after this time (2024-05-01, RFC 3339, or 7d, 24h ago).
        #[arg(long)]
        since: Option<String>,
        /// Only those before this time.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        from: Source,
    },
    /// Everything about one entity (an IP address, a principal, a resource, a pod, a key) over a
    /// window: alerts, incidents, evidence, actions taken, decisions, and the entities seen with it.
    #[command(after_help = READS_THE_STORE)]
    Hunt {
        entity: String,
        /// How far back from now (30m, 24h, 7d, 2w).
        #[arg(long, default_value = "7d")]
        window: String,
        #[command(flatten)]
        from: Source,
    },
    /// Rebuild the search index (sled) or search rows (PostgreSQL) from the stored alerts and
    /// incidents. Stop the server first when the store is the embedded one.
    Reindex,
    /// Copy an embedded (sled) store into an empty PostgreSQL database, then check the copy:
    /// counts and contents of every kind of record, and the audit chain. Stop the server first.
    Migrate {
        /// The sled store's folder (`store.path`).
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// The PostgreSQL database: `postgres://user:password@host:5432/cordon`. Prefer the
        /// environment variable, which keeps the password out of the process list.
        #[arg(
            long,
            value_name = "URL",
            env = "CORDON_MIGRATE_TO",
            hide_env_values = true
        )]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Counts and sizes per kind (alerts, raw payloads, incidents, evidence, runs, outbox, audit).
    Stats {
        #[command(flatten)]
        from: Source,
    },
    /// Run one retention pass now on the local store (a running server prunes by itself every
    /// retention.every); prints what each kind lost.
    Prune {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ActionsCommand {
    /// List the actions with their inputs and whether they have side effects.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct DecisionArgs {
    run: String,
    step: String,
    /// Optional, and only your own identity: the server takes who decides from your credential
    /// (`CORDON_TOKEN`, or what `cordon login` saved) and refuses any other.
    #[arg(long = "as", value_name = "IDENTITY")]
    identity: Option<String>,
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

#[derive(Debug, Subcommand)]
#[command(
    after_help = "list and show read the local store when no server holds it; cancel and resolve go through the running server's admin API."
)]
enum RunsCommand {
    /// Newest runs first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        playbook: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        from: Source,
    },
    /// One run: steps, approvals, audit trail.
    Show(One),
    /// Cancel a run that has not finished.
    Cancel {
        id: String,
        #[command(flatten)]
        by: Acting,
    },
    /// Retry or skip a step held as needs_decision after a crash.
    Resolve {
        id: String,
        step: String,
        /// Run the step again.
        #[arg(long, conflicts_with = "skip")]
        retry: bool,
        /// Skip the step and go on.
        #[arg(long)]
        skip: bool,
        #[command(flatten)]
        by: Acting,
    },
    /// Ask to reverse a finished step with its action's undo (release an isolated instance,
    /// enable a disabled key...): the undo waits for approval in a run of its own.
    Undo {
        id: String,
        step: String,
        #[command(flatten)]
        by: Acting,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain; exit 1 when an entry was changed, removed or inserted. With
    /// --checkpoint, also that the log still holds the signed head: a cut or rewritten tail.
    Verify {
        #[command(flatten)]
        from: Source,
        /// A checkpoint file (`cordon audit checkpoint`): its signature must verify with the
        /// trusted public key, and the log must still hold its entry with its hash.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// The public key (base64) to check the checkpoint with, instead of the config's
        /// `audit.public_key` or the public half of `audit.signing_key`.
        #[arg(long, value_name = "BASE64", requires = "checkpoint")]
        public_key: Option<String>,
    },
    /// Sign the chain's head with `audit.signing_key` and write the checkpoint (JSON) to FILE or
    /// stdout; it is also queued for the configured sinks (`audit.checkpoints`). Reads the local
    /// store, or asks the server holding it.
    Checkpoint {
        /// Where to write the checkpoint (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Ask the admin API of the server at URL instead of the local store.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Print a new signing key (for `audit.signing_key`, keep it secret) and its public key (for
    /// `audit.public_key` where logs are verified).
    Keygen,
}

/// Which server to ask (default: the one running with this config): the arguments of the commands
/// that change something through the running server's API. Who acts is the person behind the
/// CLI's credential (`CORDON_TOKEN`, or what `cordon login` saved).
#[derive(Debug, Args)]
struct Acting {
    /// Optional, and only your own identity; the server refuses any other.
    #[arg(long = "as", value_name = "IDENTITY")]
    identity: Option<String>,
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

/// The help of the alert and incident commands on where they read.
const READS_THE_STORE: &str = "Reads the local store; when a running server holds it, asks that server's admin API at server.listen with server.admin_token from the config.";

/// Which record a `show` command shows, and where it reads it.
#[derive(Debug, Args)]
struct One {
    id: String,
    #[command(flatten)]
    from: Source,
}

/// Where the data commands read from. Without `--server`, they open the local store named in the
/// config; when a running server holds it (one process at a time may open it), they ask that server's
/// admin API (at the address it recorded beside the store, else `server.listen`) with
/// `server.admin_token` instead. `--server URL` asks a server directly.
#[derive(Debug, Args)]
struct Source {
    /// Ask the admin API of the server at URL (e.g. http://127.0.0.1:8080) instead of the local store.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
#[command(after_help = READS_THE_STORE)]
enum AlertsCommand {
    /// Newest alerts first.
    List {
        /// Only alerts from this source (e.g. aws.guardduty).
        #[arg(long)]
        source: Option<String>,
        /// Only alerts of this incident.
        #[arg(long)]
        incident: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        from: Source,
    },
    /// One alert with its raw payload.
    Show(One),
}

#[derive(Debug, Subcommand)]
#[command(after_help = READS_THE_STORE)]
enum IncidentsCommand {
    /// Newest incidents first.
    List {
        /// Only `open` or `resolved` incidents.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        from: Source,
    },
    /// One incident with its alerts.
    Show(One),
    /// The incident report: alerts, timeline, decisions, actions and their undo, evidence.
    Report {
        id: String,
        /// HTML instead of Markdown.
        #[arg(long)]
        html: bool,
        /// Ask the admin API of the server at URL instead of the local store.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Mark an incident resolved (mirrored tickets follow).
    Resolve {
        id: String,
        #[command(flatten)]
        by: Acting,
    },
    /// Open a resolved incident again.
    Reopen {
        id: String,
        #[command(flatten)]
        by: Acting,
    },
}

impl Cli {
    /// Whether this is `cordon serve`.
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve)
    }
}

/// Runs the command; the exit code says whether it found problems.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = &cli.config;
    match cli.command {
        Command::Serve => commands::serve(config).await,
        Command::Validate { paths } => Ok(commands::validate(config, &paths)),
        Command::Alerts(command) => commands::alerts(config, command).await,
        Command::Incidents(command) => commands::incidents(config, command).await,
        Command::Test { paths } => commands::test(config, &paths).await,
        Command::Runs(command) => commands::runs(config, command).await,
        Command::Approve(args) => commands::decision(config, args, true).await,
        Command::Deny(args) => commands::decision(config, args, false).await,
        Command::Audit(AuditCommand::Verify {
            from,
            checkpoint,
            public_key,
        }) => commands::audit_verify(config, from, checkpoint, public_key).await,
        Command::Audit(AuditCommand::Checkpoint { out, server }) => {
            commands::audit_checkpoint(config, out, server).await
        }
        Command::Audit(AuditCommand::Keygen) => Ok(commands::audit_keygen()),
        Command::Actions(ActionsCommand::List { json }) => commands::actions(config, json),
        Command::Schema { what } => commands::schema(config, &what),
        Command::Migrate { from, to } => commands::migrate(&from, &to).await,
        Command::Store(StoreCommand::Stats { from }) => store::stats(config, from).await,
        Command::Store(StoreCommand::Prune { json }) => store::prune(config, json).await,
        Command::Backtest {
            paths,
            since,
            source,
            query,
            from,
        } => backtest::backtest(config, &paths, since, source, query, from).await,
        Command::Search {
            query,
            since,
            until,
            limit,
            cursor,
            from,
        } => {
            let search = cordon::search::Search {
                q: query,
                since,
                until,
                limit: Some(limit),
                cursor,
            };
            search::search(config, search, from).await
        }
        Command::Hunt {
            entity,
            window,
            from,
        } => search::hunt(config, &entity, &window, from).await,
        Command::Reindex => search::reindex(config).await,
        Command::Reload { server } => commands::reload(config, server.as_deref()).await,
        Command::Tokens(command) => people::tokens(config, command).await,
        Command::People(command) => people::people(config, command).await,
        Command::Login(args) => people::login(config, args).await,
        Command::Whoami { server } => people::whoami(config, server.as_deref()).await,
    }
}
