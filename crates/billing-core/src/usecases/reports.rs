//! The operator's business view (see [`crate::business`] for the definitions).

use time::OffsetDateTime;

use super::{Billing, BillingError};
use crate::business::{BusinessMetrics, business_metrics};
use crate::ports::ReportStore;

impl Billing {
    /// The business figures for `[from, to)`, as of now, priced by the catalog.
    pub async fn business_metrics(
        &self,
        store: &dyn ReportStore,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<BusinessMetrics, BillingError> {
        let now = self.clock.now();
        let facts = store.business_facts(from, to, now).await?;
        Ok(business_metrics(&facts, &self.catalog, from, to, now))
    }
}
