//! Process helpers shared by the binary's tests: the `tollgate` command with a clean
//! environment, throwaway databases, and a served instance's address and logs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// The binary with a clean environment: config from the repository, TOLLGATE_ENV=test.
pub fn bare_tollgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env("TOLLGATE_CONFIG_DIR", config_dir())
        .env("TOLLGATE_ENV", "test")
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("STRIPE_SECRET_KEY")
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("TOLLGATE__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The same, with a throwaway SQLite database that lives as long as the returned folder.
pub fn tollgate_with_db() -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bare_tollgate();
    cmd.env(
        "TOLLGATE__DATABASE__URL",
        format!("sqlite://{}", dir.path().join("t.db").display()),
    );
    (cmd, dir)
}

/// A fresh PostgreSQL schema for one test, dropped when the guard goes; with the URL that
/// selects it. `None` when no test database is configured.
pub struct PgSchema {
    admin: String,
    name: String,
    /// The URL that selects the schema.
    pub url: String,
}

impl PgSchema {
    /// `None` when no test database is configured.
    pub fn new(label: &str) -> Option<Self> {
        let admin = std::env::var("TOLLGATE_TEST_DATABASE_URL").ok()?;
        let name = format!(
            "cli_{label}_{}_{}",
            std::process::id(),
            time::OffsetDateTime::now_utc().unix_timestamp()
        );
        pg_admin(&admin, &format!("CREATE SCHEMA {name}"));
        let separator = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{separator}options=-csearch_path%3D{name}");
        Some(Self { admin, name, url })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        pg_admin(&self.admin, &format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

pub fn pg_admin(url: &str, sql: &str) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut conn = AsyncPgConnection::establish(url).await.unwrap();
        conn.batch_execute(sql).await.unwrap();
    });
}

pub type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Starts `serve` with JSON logs and returns the address it listens on.
pub fn start_serving(mut cmd: Command) -> (String, std::process::Child, Lines) {
    if !cmd.get_envs().any(|(key, _)| key == "TOLLGATE__LOG__LEVEL") {
        cmd.env("TOLLGATE__LOG__LEVEL", "info");
    }
    let mut child = cmd
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if event["message"] == "tollgate listening" {
            break event["address"].as_str().unwrap().to_owned();
        }
    };
    (address, child, lines)
}

pub fn get_json(url: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() })
}

/// SIGTERM, then the exit status and the remaining log lines.
pub fn stop(
    mut child: std::process::Child,
    lines: Lines,
) -> (std::process::ExitStatus, Vec<String>) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    (exit, rest)
}
