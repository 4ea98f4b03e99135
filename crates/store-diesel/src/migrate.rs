//! Migrations, embedded in the binary: `migrations/postgres` and `migrations/sqlite`.

use billing_core::ports::StoreError;
use diesel::Connection;
use diesel::sqlite::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::db::{Backend, DatabaseConfig};

const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    DownAll,
    Pending,
}

/// The versions not yet applied (nothing is changed).
pub async fn pending(config: &DatabaseConfig) -> Result<Vec<String>, StoreError> {
    run(config, Direction::Pending).await
}

/// Applies every pending migration; returns the versions applied.
pub async fn run_pending(config: &DatabaseConfig) -> Result<Vec<String>, StoreError> {
    run(config, Direction::Up).await
}

/// Reverts every applied migration, newest first; returns the versions reverted.
pub async fn revert_all(config: &DatabaseConfig) -> Result<Vec<String>, StoreError> {
    run(config, Direction::DownAll).await
}

async fn run(config: &DatabaseConfig, direction: Direction) -> Result<Vec<String>, StoreError> {
    let config = config.clone();
    // Migrations run on a synchronous connection, so off the async threads.
    tokio::task::spawn_blocking(move || match config.backend() {
        Backend::Postgres => {
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&config.url)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            apply(&mut conn, POSTGRES, direction)
        }
        Backend::Sqlite => {
            config.create_sqlite_dir()?;
            let mut conn = SqliteConnection::establish(config.sqlite_path())
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            apply(&mut conn, SQLITE, direction)
        }
    })
    .await
    .map_err(|e| StoreError::Other(e.to_string()))?
}

fn apply<C>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
    direction: Direction,
) -> Result<Vec<String>, StoreError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
        StoreError::Other(format!("migration failed: {e}"))
    };
    let versions = match direction {
        Direction::Up => conn.run_pending_migrations(migrations).map_err(failed)?,
        Direction::DownAll => conn.revert_all_migrations(migrations).map_err(failed)?,
        Direction::Pending => {
            return Ok(conn
                .pending_migrations(migrations)
                .map_err(failed)?
                .iter()
                .map(|m| m.name().version().to_string())
                .collect());
        }
    };
    Ok(versions.into_iter().map(|v| v.to_string()).collect())
}
