//! The default mailer: each message becomes a file in an outbox folder, and the log says
//! only that a message was written (recipient's domain, subject, file) — never its body,
//! which carries single-use tokens. An operator wires a real mail service in its place.

use std::path::PathBuf;

use async_trait::async_trait;
use billing_core::ports::{Mail, Mailer, StoreError};

/// Writes messages to `dir`.
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
}

impl OutboxMailer {
    /// A mailer writing into `dir` (created when needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, mail: Mail) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let suffix: u32 = rand::random();
        let path = dir.join(format!("{stamp}-{suffix:08x}.eml"));
        let text = format!(
            "To: {}\nSubject: {}\n\n{}\n",
            mail.to, mail.subject, mail.body
        );
        let written = path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&written, text)
        })
        .await
        .map_err(|e| StoreError::Other(e.to_string()))?
        .map_err(|e| StoreError::Unavailable(format!("cannot write mail: {e}")))?;
        let domain = mail.to.rsplit('@').next().unwrap_or("");
        tracing::info!(to_domain = domain, subject = %mail.subject, file = %path.display(), "mail written to the outbox");
        Ok(())
    }
}
