//! `tollgate`: serve, migrate, and check configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use app::settings::{self, Loaded, Sources};
use app::{Application, telemetry};
use clap::{Parser, Subcommand};

/// Tollgate: accounts, plans, credits and quotas for AI apps.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version)]
struct Cli {
    /// Extra configuration file(s), layered after config/default.toml and
    /// config/{TOLLGATE_ENV}.toml (repeatable; also TOLLGATE_CONFIG, comma-separated).
    #[arg(long = "config", global = true, value_name = "FILE")]
    config: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the HTTP server.
    Serve,
    /// Apply database migrations.
    Migrate,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate settings and catalog; print each problem with its file and key.
    Check,
}

fn load(cli: &Cli) -> Result<Loaded, ExitCode> {
    settings::load(&Sources::from_env(&cli.config)).map_err(|problems| {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        eprintln!("{} configuration error(s)", problems.len());
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match load(&cli) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let catalog = &loaded.catalog;
            let layers: Vec<String> = loaded.layers.iter().map(ToString::to_string).collect();
            eprintln!("configuration OK (environment `{}`)", loaded.environment);
            eprintln!("  layers:  {}", layers.join(" -> "));
            eprintln!(
                "  catalog: {} ({} plans, {} packs, {} actions, {} meters, {} models)",
                loaded.catalog_origin,
                catalog.plans.len(),
                catalog.packs.len(),
                catalog.actions.len(),
                catalog.meters.len(),
                catalog.models.len()
            );
            ExitCode::SUCCESS
        }
        Command::Migrate => {
            eprintln!(
                "tollgate migrate: this build has no database store yet, so there is nothing to migrate. \
                 Accounts, credits and quotas are not persisted by this version."
            );
            ExitCode::SUCCESS
        }
        Command::Serve => serve(loaded),
    }
}

fn serve(loaded: Loaded) -> ExitCode {
    telemetry::init(&loaded.settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let settings = loaded.settings;
        let app = match Application::build(&settings, loaded.catalog) {
            Ok(app) => app,
            Err(err) => {
                tracing::error!(%err, host = %settings.server.host, port = settings.server.port, "cannot bind");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            environment = %loaded.environment,
            catalog = %loaded.catalog_origin,
            address = %format!("{}:{}", settings.server.host, app.port()),
            "tollgate listening"
        );
        match app.run_until_signal().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(%err, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}
