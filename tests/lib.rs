//! Helpers for the black-box tests: start the real server on a free port and talk HTTP.

use std::path::Path;

use app::Application;
use app::settings::{Sources, load};

/// A running server and a client for it.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The SQLite database's folder, removed when the test ends.
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts the server with `config/` and `TOLLGATE_ENV=test` (port 0), plus `files`.
    pub async fn spawn(files: &[&str]) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sources = Sources {
            dir: root.join("config"),
            environment: "test".into(),
            files: files.iter().map(|f| root.join(f)).collect(),
        };
        let mut loaded = load(&sources).unwrap_or_else(|problems| panic!("config: {problems:?}"));
        let dir = tempfile::tempdir().expect("temp dir");
        loaded.settings.database.url = format!("sqlite://{}", dir.path().join("api.db").display());
        let app = Application::build(&loaded.settings, loaded.catalog)
            .await
            .expect("start");
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        Self {
            address,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// GETs a path.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }
}
