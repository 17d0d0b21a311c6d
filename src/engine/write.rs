//! Writing a run's keys into the link table (created on first use), fenced.

use std::sync::Arc;
use std::time::Instant;

use color_eyre::eyre::{Result, eyre};
use deltalake::DeltaTable;
use deltalake::schema::DataType as DeltaType;

use crate::Error;
use crate::config::KeyMapping;
use crate::engine::keymap::AffectedKeys;
use crate::store::lease::Fence;
use crate::store::link::{self, LinkMerge, LinkWriteMetrics, WriteKind};
use crate::util::time::now_ms;

use super::core::Engine;
use super::plan::{Plan, key_types_over_sources};

impl Engine {

    /// MERGE a run's (or replay's) keys into the pipeline's link table under `plan.run_id`.
    ///
    /// Refused unless the link table's last run is older than `plan.run_id`: a writer that lost
    /// its lease cannot commit a run over a newer one, nor the same run twice. The check reads
    /// the snapshot the commit is built on, and the commit carries the pipeline's application
    /// transaction, so a concurrent commit of another run conflicts with it: check and commit
    /// are one step.
    pub(crate) async fn write_keys(
        &self,
        plan: &Plan,
        affected: AffectedKeys,
        kind: WriteKind,
        fence: Option<&Fence>,
        before_commit: &(dyn Fn() -> Result<()> + Sync),
    ) -> Result<LinkWriteMetrics> {
        let per_key = kind.mark_provenance(Arc::new(affected).per_key().await?)?;
        let table = self.link_table_for(plan, Some(&per_key.schema())).await?;
        let committed = match &plan.link {
            Some(_) => plan.link_committed,
            None => link::committed_run_id(&table, &plan.pipeline.name).await?,
        };
        if let Some(newer) = committed.filter(|c| *c >= plan.run_id) {
            return Err(Error::Fenced {
                pipeline: plan.pipeline.name.clone(),
                what: format!("the link-table commit of run {}", plan.run_id),
                why: format!("the link table already holds run {newer}"),
                generation: fence.map_or(0, Fence::generation),
            }
            .into());
        }
        let pinned: std::collections::BTreeMap<String, i64> = plan.reads.iter().map(|r| (r.upstream.clone(), r.pinned as i64)).collect();
        let merge = LinkMerge {
            pipeline: &plan.pipeline.name,
            key: &plan.pipeline.key,
            run_id: plan.run_id,
            kind,
            now_us: now_ms() * 1000,
            target_file_size: self.link_file_size,
            strategy: self.merge_strategy,
            deletion_vectors: plan.pipeline.deletion_vectors,
            before_commit,
            pinned: &pinned,
            lease_generation: fence.map(Fence::generation),
        };
        let started = Instant::now();
        let metrics = merge.execute(table, per_key).await.map_err(|e| link_conflict(e, plan, fence))?.1;
        Ok(LinkWriteMetrics { duration: started.elapsed(), ..metrics })
    }

    pub(crate) async fn link_table_for(&self, plan: &Plan, per_key: Option<&deltalake::arrow::datatypes::SchemaRef>) -> Result<DeltaTable> {
        let key_types: Vec<(String, DeltaType)> = match key_types_over_sources(&plan.pipeline, &plan.tables, None)? {
            Some(types) => types,
            // Only `sql` sources: the key types of the keys at hand, else of the first query's
            // planned output.
            None => match per_key {
                Some(schema) => link::delta_key_types(schema, &plan.pipeline.key)?,
                None => {
                    let (upstream, sql) = plan
                        .pipeline
                        .sources
                        .iter()
                        .find_map(|s| match &s.mapping {
                            KeyMapping::Sql(sql) => Some((s.upstream.as_str(), sql.as_str())),
                            _ => None,
                        })
                        .ok_or_else(|| eyre!("pipeline `{}` has no sources", plan.pipeline.name))?;
                    link::delta_key_types(&self.plan_sql(&plan.pipeline, upstream, sql).await?, &plan.pipeline.key)?
                }
            },
        };
        match &plan.link {
            Some(t) => link::checked(t.clone(), &plan.pipeline.name, &key_types),
            None => link::open_or_create(&plan.pipeline.link_table, &plan.pipeline.name, &key_types, plan.pipeline.deletion_vectors, self.storage()).await,
        }
    }
}

/// A link commit that lost to another writer's (the same run committed by a process that took
/// the lease over, or a newer run) in the fencing error's words; other errors as they are.
pub(crate) fn link_conflict(e: color_eyre::Report, plan: &Plan, fence: Option<&Fence>) -> color_eyre::Report {
    if !format!("{e:#}").to_lowercase().contains("concurrent transaction") {
        return e;
    }
    Error::Fenced {
        pipeline: plan.pipeline.name.clone(),
        what: format!("the link-table commit of run {}", plan.run_id),
        why: format!("another writer committed to the link table since this run read it ({e:#})"),
        generation: fence.map_or(0, Fence::generation),
    }
    .into()
}
