//! `tollgate`: serve, migrate, check configuration, and keep Stripe in step.

mod stripe_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use app::settings::{self, Loaded, Sources, redact_url};
use app::system::{SystemClock, UlidGenerator};
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
    /// Apply pending database migrations.
    Migrate,
    /// Ledger tools.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// User tools.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Serve the mock LLM provider as an OpenAI-compatible API (for benchmarks: point
    /// `llm.openai_base_url` at it).
    MockLlm {
        /// The port (127.0.0.1).
        #[arg(long, default_value_t = 8090)]
        port: u16,
    },
    /// Run task workers without the HTTP server: `llm` tasks, the lease and deadline
    /// sweeper, and the task webhooks. Any number may run beside `serve` on one database.
    Worker {
        /// Workers running `llm` tasks (default: `tasks.workers`, at least 1).
        #[arg(long)]
        workers: Option<u32>,
    },
    /// Stripe tools (need STRIPE_SECRET_KEY).
    Stripe {
        #[command(subcommand)]
        command: StripeCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StripeCommand {
    /// Create or check the catalog's products and prices at Stripe; print the
    /// `stripe_price_id` lines to put in the configuration.
    Setup {
        /// Only read, and say what would be created.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare every Stripe subscription with Tollgate's and apply Stripe's state where
    /// they differ; list each difference.
    Sync {
        /// Only report.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Check every account: balance equals its journal, no negative remaining, every hold
    /// resolved once or pending. Lists each account that fails and exits 1 if any does.
    Verify,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Gives a user the `admin` or the `user` role (their tokens carry it from the next
    /// session check, within `auth.session_check_seconds`).
    Role {
        /// The user's email.
        email: String,
        /// `admin` or `user`.
        #[arg(value_parser = ["admin", "user"])]
        role: String,
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
                "  catalog: {} ({} plans, {} packs, {} actions, {} meters, {} models, {} task types)",
                loaded.catalog_origin,
                catalog.plans.len(),
                catalog.packs.len(),
                catalog.actions.len(),
                catalog.meters.len(),
                catalog.models.len(),
                catalog.tasks.len()
            );
            ExitCode::SUCCESS
        }
        Command::Migrate => block_on(migrate(loaded)),
        Command::Ledger {
            command: LedgerCommand::Verify,
        } => block_on(verify_ledger(loaded)),
        Command::User {
            command: UserCommand::Role { email, role },
        } => block_on(set_role(loaded, email, role)),
        Command::Stripe {
            command: StripeCommand::Setup { dry_run },
        } => block_on(stripe_cmd::setup(loaded, dry_run)),
        Command::Stripe {
            command: StripeCommand::Sync { dry_run },
        } => block_on(stripe_cmd::sync(loaded, dry_run)),
        Command::MockLlm { port } => block_on(async move {
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => {
                    eprintln!(
                        "mock LLM provider (OpenAI-compatible) on http://127.0.0.1:{port}/v1"
                    );
                    let served = match app::mock_llm::serve(listener) {
                        Ok(server) => server.await,
                        Err(err) => Err(err),
                    };
                    match served {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(err) => {
                            eprintln!("error: {err}");
                            ExitCode::FAILURE
                        }
                    }
                }
                Err(err) => {
                    eprintln!("error: cannot listen on port {port}: {err}");
                    ExitCode::FAILURE
                }
            }
        }),
        Command::Worker { workers } => block_on(worker(loaded, workers)),
        Command::Serve => serve(loaded),
    }
}

fn block_on(future: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn worker(loaded: Loaded, count: Option<u32>) -> ExitCode {
    telemetry::init(&loaded.settings.log);
    let store = match open_store(&loaded).await {
        Ok(store) => std::sync::Arc::new(store),
        Err(code) => return code,
    };
    let settings = &loaded.settings;
    let llm: std::sync::Arc<dyn billing_core::ports::LlmRouter> =
        match app::server::llm_providers(settings) {
            Ok(providers) => std::sync::Arc::new(providers),
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
    let clock: std::sync::Arc<dyn billing_core::ports::Clock> = std::sync::Arc::new(SystemClock);
    let billing = app::server::billing(settings, loaded.catalog.clone(), store.clone(), clock);
    let tasks = billing_core::usecases::Tasks {
        billing,
        store: store.clone(),
        notify: settings.tasks.webhook_url.is_some(),
    };
    let count = count.unwrap_or(settings.tasks.workers).max(1);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = std::sync::Arc::new(http_api::metrics::Metrics::new());
    let scheduler = app::schedule::Scheduler::for_this_process(store.clone(), metrics);
    let handles =
        app::server::task_background(settings, &tasks, llm, store, count, &stopped, &scheduler);
    tracing::info!(workers = count, "task workers started");
    let signal = app::server::shutdown_signal().await;
    tracing::info!(signal, "stopping task workers after the tasks in hand");
    let _ = stop.send(true);
    for handle in handles {
        let _ = handle.await;
    }
    ExitCode::SUCCESS
}

async fn migrate(loaded: Loaded) -> ExitCode {
    let config = loaded.settings.database.config();
    let url = redact_url(&config.url);
    match store_diesel::migrate::run_pending(&config).await {
        Ok(applied) if applied.is_empty() => {
            eprintln!("{url}: up to date, nothing to apply");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            eprintln!(
                "{url}: applied {} migration(s): {}",
                applied.len(),
                applied.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {url}: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn open_store(loaded: &Loaded) -> Result<store_diesel::DieselStore, ExitCode> {
    let config = loaded.settings.database.config();
    let url = redact_url(&config.url);
    match store_diesel::migrate::pending(&config).await {
        Ok(pending) if pending.is_empty() => {}
        Ok(_) => {
            eprintln!("error: {url} is not migrated; run `tollgate migrate` first");
            return Err(ExitCode::FAILURE);
        }
        Err(err) => {
            eprintln!("error: {url}: {err}");
            return Err(ExitCode::FAILURE);
        }
    }
    store_diesel::DieselStore::connect(
        &config,
        std::sync::Arc::new(SystemClock),
        std::sync::Arc::new(UlidGenerator::default()),
    )
    .await
    .map_err(|err| {
        eprintln!("error: {url}: {err}");
        ExitCode::FAILURE
    })
}

async fn set_role(loaded: Loaded, email: String, role: String) -> ExitCode {
    use billing_core::ports::AccountStore;
    use billing_core::records::Role;
    let store = match open_store(&loaded).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let email = billing_core::usecases::normalize_email(&email).unwrap_or(email);
    let mut user = match store.user_by_email(&email).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            eprintln!("error: no user with the email {email}");
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    user.role = if role == "admin" {
        Role::Admin
    } else {
        Role::User
    };
    match store.update_user(&user).await {
        Ok(()) => {
            eprintln!(
                "{} ({}) is now `{role}`; it applies from their next sign-in or token refresh",
                user.email, user.id
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the list of failing accounts is the command's output"
)]
async fn verify_ledger(loaded: Loaded) -> ExitCode {
    let store = match open_store(&loaded).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let catalog = loaded.catalog;
    let overdraft = |plan: &str| catalog.plan(plan).map_or(0, |p| p.overdraft);
    match store.verify_ledger(overdraft).await {
        Ok((checked, failures)) if failures.is_empty() => {
            eprintln!("ledger OK: {checked} account(s) match their journals");
            ExitCode::SUCCESS
        }
        Ok((checked, failures)) => {
            for (account, violations) in &failures {
                for violation in violations {
                    println!("{account}: {violation}");
                }
            }
            eprintln!(
                "ledger FAILED: {} of {checked} account(s) disagree with their journals",
                failures.len()
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(loaded: Loaded) -> ExitCode {
    telemetry::init(&loaded.settings.log);
    block_on(async move {
        let settings = loaded.settings;
        let app = match Application::build(&settings, loaded.catalog).await {
            Ok(app) => app,
            Err(err) => {
                tracing::error!(%err, "cannot start");
                eprintln!("error: {err}");
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
