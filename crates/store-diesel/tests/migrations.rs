//! The PostgreSQL and SQLite migrations must describe the same database: the same
//! migrations by name, and once applied the same tables, columns, nullability and named
//! indexes (types differ by dialect on purpose: BIGINT/INTEGER, BOOLEAN/INTEGER). A change
//! made to one backend's migrations and not the other's fails here, in CI.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::TestDb;
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

#[derive(Debug, QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Bool)]
    not_null: bool,
}

#[derive(Debug, QueryableByName)]
struct Index {
    #[diesel(sql_type = Text)]
    name: String,
}

fn folders(backend: &str) -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(backend);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

type Shape = (BTreeSet<(String, String, bool)>, BTreeSet<String>);

fn shape(columns: Vec<Column>, indexes: Vec<Index>) -> Shape {
    (
        columns
            .into_iter()
            .filter(|c| c.table_name != "__diesel_schema_migrations")
            .map(|c| (c.table_name, c.column_name, c.not_null))
            .collect(),
        indexes.into_iter().map(|i| i.name).collect(),
    )
}

async fn sqlite_shape() -> Shape {
    let db = TestDb::sqlite().await;
    let mut conn = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
        diesel::SqliteConnection,
    >::establish(&db.config.url.replace("sqlite://", ""))
    .await
    .unwrap();
    // A PRIMARY KEY column is NOT NULL in PostgreSQL whether or not it says so.
    let columns = diesel::sql_query(
        "SELECT m.name AS table_name, p.name AS column_name, (p.\"notnull\" OR p.pk > 0) AS not_null \
         FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
    )
    .load::<Column>(&mut conn)
    .await
    .unwrap();
    let indexes = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .load::<Index>(&mut conn)
    .await
    .unwrap();
    shape(columns, indexes)
}

async fn postgres_shape() -> Option<Shape> {
    let db = TestDb::postgres().await?;
    let mut conn = AsyncPgConnection::establish(&db.config.url).await.unwrap();
    let columns = diesel::sql_query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name, \
                (is_nullable = 'NO') AS not_null \
         FROM information_schema.columns WHERE table_schema = current_schema()",
    )
    .load::<Column>(&mut conn)
    .await
    .unwrap();
    // Indexes the migrations name (not those PostgreSQL makes for keys and UNIQUE columns).
    let indexes = diesel::sql_query(
        "SELECT indexname::text AS name FROM pg_indexes \
         WHERE schemaname = current_schema() \
           AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key'",
    )
    .load::<Index>(&mut conn)
    .await
    .unwrap();
    Some(shape(columns, indexes))
}

#[test]
fn both_backends_have_the_same_migrations() {
    assert_eq!(folders("postgres"), folders("sqlite"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_migrate_to_the_same_tables_columns_and_indexes() {
    let sqlite = sqlite_shape().await;
    let Some(postgres) = postgres_shape().await else {
        return;
    };
    let only = |a: &BTreeSet<(String, String, bool)>, b: &BTreeSet<(String, String, bool)>| {
        a.difference(b).cloned().collect::<Vec<_>>()
    };
    assert!(
        sqlite.0 == postgres.0,
        "columns differ:\n only in SQLite: {:?}\n only in PostgreSQL: {:?}",
        only(&sqlite.0, &postgres.0),
        only(&postgres.0, &sqlite.0)
    );
    assert_eq!(sqlite.1, postgres.1, "named indexes differ");
}
