//! The audit writer: audit records are written after the response, many per transaction.
//!
//! `AuditStore::append` queues the record and returns; one task writes whatever is queued,
//! up to [`MAX_BATCH`] records, in one transaction. `list` first waits until everything
//! queued before it is written, so a reader always sees its own requests' records. Records
//! still queued when the process dies are lost, which is why the server flushes the queue
//! ([`DieselStore::flush_audit`]) once it has stopped taking requests. The journal, not the
//! audit log, is the record of credits: nothing about money waits on this queue.

use billing_core::records::AuditRecord;
use tokio::sync::{mpsc, oneshot};

use crate::db::tx_error;
use crate::records::AuditRow;
use crate::sql::transaction_call;
use crate::store::DieselStore;

/// The most records one transaction writes.
const MAX_BATCH: usize = 500;

/// What the writer is asked to do.
pub(crate) enum AuditJob {
    /// Write this record.
    Record(Box<AuditRecord>),
    /// Say when everything queued before this is written.
    Flush(oneshot::Sender<()>),
}

/// Serves the queue until it closes.
pub(crate) async fn run(store: DieselStore, mut queue: mpsc::Receiver<AuditJob>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut rows = Vec::with_capacity(jobs.len());
        let mut flushed = Vec::new();
        for job in jobs.drain(..) {
            match job {
                AuditJob::Record(record) => rows.push(AuditRow::from_domain(&record)),
                AuditJob::Flush(done) => flushed.push(done),
            }
        }
        if !rows.is_empty() {
            let count = rows.len();
            if let Err(err) = store.append_rows(rows).await {
                tracing::warn!(error = %err, count, "could not record audit entries");
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

impl DieselStore {
    /// Writes audit rows in one transaction.
    pub(crate) async fn append_rows(
        &self,
        rows: Vec<AuditRow>,
    ) -> Result<(), billing_core::ports::StoreError> {
        let _writer = self.pool.write_guard().await;
        self.retrying(|| {
            let rows = rows.clone();
            async move {
                let mut conn = self.pool.get().await.map_err(crate::db::TxError::Store)?;
                transaction_call!(conn, audit_append_many(rows))
            }
        })
        .await
    }

    /// Waits until every audit record queued so far is written (or failed to be). Call it
    /// once the server has stopped taking requests, before the process exits.
    pub async fn flush_audit(&self) {
        let Some(background) = &self.background else {
            return;
        };
        let (done, written) = oneshot::channel();
        if background.audit.send(AuditJob::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Queues a record for the writer, or writes it now when the store has no writer.
    pub(crate) async fn queue_audit(
        &self,
        record: &AuditRecord,
    ) -> Result<(), billing_core::ports::StoreError> {
        if let Some(background) = &self.background
            && background
                .audit
                .send(AuditJob::Record(Box::new(record.clone())))
                .await
                .is_ok()
        {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        crate::sql::call!(conn, audit_append(AuditRow::from_domain(record))).map_err(tx_error)
    }
}
