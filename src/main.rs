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
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("metamcp: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(metamcp::mcp::bridge::run(&url, token.as_deref())) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("metamcp: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Tools { conn, command } => cli::run_tools(conn, command),
        Command::Profiles { conn, command } => cli::run_profiles(conn, command),
        Command::User { config, command } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("metamcp: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("metamcp: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(metamcp::user_cli::run(&settings, command)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("metamcp: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("metamcp: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            metamcp::telemetry::init(&settings);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("metamcp: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(settings)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("metamcp: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
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
