//! Preview: the keys a run would write now, without writing anything.

use color_eyre::eyre::Result;

use crate::store::lake;
use crate::store::link;

use super::core::{Engine, session};
use super::plan::configured_rows;
use super::protocol::{PendingRun, completed_rows};
use super::report::Preview;

impl Engine {

    /// The keys the next run would write, with provenance; writes nothing (same code path).
    pub async fn preview(&self, name: &str, limit: Option<usize>) -> Result<Preview> {
        let pipeline = self.config.pipeline(name)?.clone();
        let tracker = self.tracker().await?;
        let rows = configured_rows(&pipeline, tracker.rows(Some(name)).await?);
        let link = lake::open_owned(&pipeline.link_table, self.storage()).await?;
        let committed = match &link {
            Some(t) => link::committed_run_id(t, name).await?,
            None => None,
        };
        // What the next run will do with a pending run decides what it reads: a committed one
        // is only completed (its keys are written already), an abandoned one is re-planned.
        let (rows, resume) = match self.resolve_pending(&rows, link.as_ref(), committed).await? {
            PendingRun::Committed(pending) => {
                let done = completed_rows(&rows, pending, "preview");
                let rows = rows.iter().map(|r| done.iter().find(|d| d.upstream == r.upstream).unwrap_or(r).clone()).collect();
                (rows, false)
            }
            PendingRun::None | PendingRun::Abandoned => (rows, false),
            PendingRun::NotCommitted => (rows, true),
        };
        let plan = self.plan(&pipeline, &rows, link, committed, resume).await?;
        let ctx = session();
        let affected = self.read_keys(&ctx, &plan).await?;
        let (rows, change_rows, null_key_rows, distinct_keys) = match &affected {
            Some(a) => (a.preview_rows(limit)?, a.change_rows, a.null_key_rows, a.distinct_keys),
            None => (vec![], 0, 0, 0),
        };
        Ok(Preview {
            pipeline: name.into(),
            key: pipeline.key.clone(),
            upstreams: plan.reads,
            change_rows,
            null_key_rows,
            distinct_keys,
            rows,
        })
    }
}
