//! Reading a plan's change rows: pinned tables, `sql` relations with their change images,
//! ranges shared by a cycle, and the keys they map to.

use color_eyre::eyre::WrapErr;
use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{Result, eyre};
use deltalake::DeltaTable;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::{DataFrame, Expr, SessionContext};

use crate::Error;
use crate::config::{KeyMapping, Pipeline};
use crate::engine::keymap::{self, AffectedKeys};
use crate::engine::sqlmap;
use crate::store::cdf::{self, ReadRange, ScanCounter};
use crate::store::counted::{CountedProvider, ScanTally};
use crate::store::lake;
use crate::store::tracker::TrackerRow;

use super::core::{Cycle, Engine, SharedRead, session};
use super::plan::{JoinedScan, Plan};
use super::prune;
use super::protocol::{IntentNote, explain};
use super::report::{ReadRangeView, UpstreamRead};

impl Engine {

    /// Upstreams that `sql` sources join and that are not read already (a replay of some of a
    /// pipeline's upstreams joins the others at their latest versions).
    pub(crate) async fn open_sql_tables(&self, pipeline: &Pipeline, tables: &mut HashMap<String, DeltaTable>) -> Result<()> {
        let names: Vec<String> = self.config.upstreams.keys().cloned().collect();
        for source in &pipeline.sources {
            let KeyMapping::Sql(sql) = &source.mapping else { continue };
            let prepared = sqlmap::prepare(sql, &pipeline.name, &source.upstream, &names)?;
            refuse_joins_outside(pipeline, &source.upstream, &prepared.tables)?;
            for t in prepared.tables {
                if !tables.contains_key(&t) {
                    let u = self.config.upstream(&t)?;
                    tables.insert(t.clone(), lake::open_upstream(&t, &u.uri, self.storage()).await?);
                }
            }
        }
        Ok(())
    }

    /// Check every `sql` source against the upstream schemas (unknown tables, syntax, output
    /// columns) so a typo fails at start-up, not at 3 a.m. Reads schemas only.
    pub async fn validate_sql(&self) -> Result<()> {
        for pipeline in self.config.pipelines.values() {
            for source in &pipeline.sources {
                if let KeyMapping::Sql(sql) = &source.mapping {
                    self.plan_sql(pipeline, &source.upstream, sql).await?;
                }
            }
        }
        Ok(())
    }

    /// Plan one `sql` source against empty relations of the upstream schemas; its output schema.
    pub(crate) async fn plan_sql(&self, pipeline: &Pipeline, upstream: &str, sql: &str) -> Result<deltalake::arrow::datatypes::Schema> {
        let names: Vec<String> = self.config.upstreams.keys().cloned().collect();
        let prepared = sqlmap::prepare(sql, &pipeline.name, upstream, &names)?;
        refuse_joins_outside(pipeline, upstream, &prepared.tables)?;
        let ctx = session();
        ctx.register_table(sqlmap::CHANGES, self.empty_relation(upstream, true).await?)?;
        for t in &prepared.tables {
            ctx.register_table(t.as_str(), self.empty_relation(t, false).await?)?;
        }
        let df = ctx.sql(&prepared.sql).await.wrap_err_with(|| {
            format!("pipeline `{}`, source `{upstream}`: the `sql` does not plan against the upstream schemas", pipeline.name)
        })?;
        let columns: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        sqlmap::check_output(&columns, &pipeline.key, &pipeline.name, upstream)?;
        Ok(df.schema().as_arrow().clone())
    }

    pub(crate) async fn empty_relation(&self, name: &str, with_cdf_columns: bool) -> Result<Arc<dyn deltalake::datafusion::catalog::TableProvider>> {
        use deltalake::arrow::datatypes::{Field, Schema, TimeUnit};
        let u = self.config.upstream(name)?;
        let table = lake::open_upstream(name, &u.uri, self.storage()).await?;
        let schema = table.snapshot()?.snapshot().arrow_schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        if with_cdf_columns {
            fields.push(Field::new(cdf::CHANGE_TYPE, DataType::Utf8, true));
            fields.push(Field::new(cdf::COMMIT_VERSION, DataType::UInt64, true));
            fields.push(Field::new(cdf::COMMIT_TIMESTAMP, DataType::Timestamp(TimeUnit::Millisecond, None), true));
        }
        let schema = Arc::new(Schema::new(fields));
        Ok(Arc::new(deltalake::datafusion::datasource::MemTable::try_new(schema, vec![vec![]])?))
    }

    /// Open an upstream at the version this run reads up to: the latest, or the intent's pin.
    pub(crate) async fn open_pinned(
        &self,
        name: &str,
        prior: Option<&TrackerRow>,
        pending_run: Option<i64>,
    ) -> Result<(DeltaTable, UpstreamRead)> {
        let upstream = self.config.upstream(name)?;
        let processed = prior.and_then(|r| r.last_processed_version);
        let mut table = match (&self.cycle, pending_run) {
            (Some(cycle), None) => {
                let cell = match cycle.pins.lock() {
                    Ok(mut pins) => pins.entry(name.to_string()).or_default().clone(),
                    Err(_) => Arc::default(), // poisoned by a panicked run: open it afresh
                };
                let pinned = cell.get_or_try_init(|| lake::open_upstream(name, &upstream.uri, self.storage())).await?.clone();
                // Another process ran this pipeline past the cycle's pin meanwhile: pin its
                // latest version instead (the table was not re-created: see below).
                let cycle_pin = lake::table_version(&pinned)? as i64;
                if processed.is_some_and(|p| p > cycle_pin) {
                    lake::open_upstream(name, &upstream.uri, self.storage()).await?
                } else {
                    pinned
                }
            }
            _ => lake::open_upstream(name, &upstream.uri, self.storage()).await?,
        };
        let latest = lake::table_version(&table)?;
        let pinned = match prior.and_then(|r| r.pending_version).filter(|_| pending_run.is_some()) {
            Some(p) => p as u64,
            None => latest,
        };
        if pinned != latest {
            table.load_version(pinned).await.wrap_err_with(|| format!("upstream `{name}`: cannot load pinned version {pinned}"))?;
        }
        if let Some(p) = processed.filter(|p| *p > latest as i64) {
            return Err(Error::TrackerAhead {
                pipeline: prior.map(|r| r.pipeline_name.clone()).unwrap_or_default(),
                upstream: name.into(),
                processed: p as u64,
                latest,
            }
            .into());
        }
        let pinned_ts = lake::read_commit(&table, pinned).await?.and_then(|c| c.timestamp_ms);
        // An upstream that was untracked when an intent was written stays untracked while that
        // intent is its row (resumed or abandoned): the row exists only because of the intent.
        let tracked = prior.is_some_and(|r| !IntentNote::parse(r.note.as_deref()).untracked);
        Ok((table, UpstreamRead { upstream: name.into(), processed, tracked, pinned, pinned_ts, range: None }))
    }

    /// Read every source's change rows for the plan and group them per key.
    pub(crate) async fn read_keys(&self, ctx: &SessionContext, plan: &Plan) -> Result<Option<AffectedKeys>> {
        let key_types = self.arrow_key_types(plan)?;
        // Upstreams are planned (and shared reads collected) concurrently: planning a CDF scan
        // reads the range's commits, ~0.1 s per upstream when done one after another.
        let reads = plan.reads.iter().filter_map(|read| {
            let range = read.range.map(ReadRangeView::to_range)?;
            let table = &plan.tables[&read.upstream];
            Some(async move { Ok::<_, color_eyre::Report>((read.upstream.clone(), self.read_range(ctx, &read.upstream, table, range).await?)) })
        });
        let raw: HashMap<String, Vec<DataFrame>> = futures::future::try_join_all(reads).await?.into_iter().collect();
        // One frame per upstream (a source's frames unioned), grouped by key upstream by upstream.
        let mut frames: Vec<(String, DataFrame)> = Vec::new();
        let mut add = |upstream: &str, df: DataFrame| -> Result<()> {
            match frames.iter_mut().find(|(u, _)| u == upstream) {
                Some((_, acc)) => *acc = acc.clone().union(df)?,
                None => frames.push((upstream.to_string(), df)),
            }
            Ok(())
        };
        for source in &plan.pipeline.sources {
            let Some(changes) = raw.get(&source.upstream) else { continue };
            match &source.mapping {
                KeyMapping::Columns(cols) => {
                    for df in changes {
                        add(
                            &source.upstream,
                            keymap::project_source(
                                df.clone(),
                                &source.upstream,
                                &plan.pipeline.name,
                                cols,
                                &plan.pipeline.key,
                                key_types.as_deref(),
                            )?,
                        )?;
                    }
                }
                KeyMapping::Sql(sql) => {
                    let df = self.sql_source(ctx, plan, &source.upstream, sql, changes, &raw, key_types.as_deref()).await?;
                    add(&source.upstream, df)?;
                }
            }
        }
        if frames.is_empty() {
            return Ok(None);
        }
        let affected = keymap::group_changes(frames, &plan.pipeline.key, self.grouping_cores(), rows_read_at_least(plan))
            .await
            .map_err(|e| explain(e, plan))?;
        Ok(Some(affected))
    }

    /// Run one `sql` source: `changes` is this upstream's change rows; every other upstream the
    /// query names is its snapshot at the pinned version plus its pre-images and deleted rows of
    /// this run (the delta rule, made complete when both sides change in one run).
    pub(crate) async fn sql_source(
        &self,
        ctx: &SessionContext,
        plan: &Plan,
        upstream: &str,
        sql: &str,
        changes: &[DataFrame],
        raw: &HashMap<String, Vec<DataFrame>>,
        key_types: Option<&[DataType]>,
    ) -> Result<DataFrame> {
        let names: Vec<String> = self.config.upstreams.keys().cloned().collect();
        let prepared = sqlmap::prepare(sql, &plan.pipeline.name, upstream, &names)?;
        let changes_df = union_by_name(changes.to_vec())?.ok_or_else(|| eyre!("no change frames for `{upstream}`"))?;
        let pruning = self.join_pruning(plan, upstream, &prepared, &changes_df).await?;
        let mut registered = vec![sqlmap::CHANGES.to_string()];
        ctx.register_table(sqlmap::CHANGES, changes_df.into_view())?;
        let result = async {
            for t in &prepared.tables {
                let relation = self.relation_with_images(ctx, plan, upstream, t, raw.get(t), pruning.get(t)).await?;
                ctx.register_table(t.as_str(), relation.into_view())?;
                registered.push(t.clone());
            }
            ctx.sql(&prepared.sql).await.map_err(color_eyre::Report::from)
        }
        .await;
        for r in &registered {
            ctx.deregister_table(r.as_str())?;
        }
        let df = result.wrap_err_with(|| format!("pipeline `{}`, source `{upstream}`: the `sql` failed", plan.pipeline.name))?;
        let columns: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        sqlmap::check_output(&columns, &plan.pipeline.key, &plan.pipeline.name, upstream)?;
        let read = plan.reads.iter().find(|r| r.upstream == upstream);
        keymap::project_sql_output(df, &plan.pipeline.key, key_types, prepared.provenance, read.map(|r| (r.pinned, r.pinned_ts)))
    }

    /// Filters that narrow the tables a `sql` source joins to the rows its change rows can join
    /// (see [`prune`]), with the columns each is on. None for a first snapshot read: every row
    /// is a change then, and listing their values would cost a second pass for nothing.
    async fn join_pruning(
        &self,
        plan: &Plan,
        upstream: &str,
        prepared: &sqlmap::PreparedSql,
        changes: &DataFrame,
    ) -> Result<HashMap<String, (Vec<String>, Expr)>> {
        let snapshot_read = plan.reads.iter().any(|r| r.upstream == upstream && r.range.is_some_and(|g| g.snapshot.is_some()));
        if snapshot_read || prepared.tables.is_empty() {
            return Ok(HashMap::new());
        }
        let mut schemas = vec![(sqlmap::CHANGES.to_string(), changes.schema().inner().clone())];
        for t in &prepared.tables {
            let table = plan.tables.get(t).ok_or_else(|| eyre!("upstream `{t}` was not pinned for this run"))?;
            schemas.push((t.clone(), table.snapshot()?.snapshot().arrow_schema()));
        }
        let links = match prune::plan_links(&prepared.sql, &schemas).await {
            Ok(links) => links,
            Err(e) => {
                // The query itself is planned (and its error reported) right after this.
                tracing::debug!(pipeline = %plan.pipeline.name, source = upstream, error = %e, "join pruning not planned");
                return Ok(HashMap::new());
            }
        };
        let mut out = HashMap::new();
        for (t, links) in links {
            let filter = prune::key_filter(changes, &links).await?;
            out.insert(t, (links.into_iter().map(|l| l.table_column).collect(), filter));
        }
        Ok(out)
    }

    /// Another upstream as a SQL source sees it: snapshot at the pin ∪ this run's pre-images/deletes,
    /// both narrowed by `pruning` when the query allows it; its scan's reads are tallied in the plan.
    pub(crate) async fn relation_with_images(
        &self,
        ctx: &SessionContext,
        plan: &Plan,
        source: &str,
        name: &str,
        images: Option<&Vec<DataFrame>>,
        pruning: Option<&(Vec<String>, Expr)>,
    ) -> Result<DataFrame> {
        let table = plan.tables.get(name).ok_or_else(|| eyre!("upstream `{name}` was not pinned for this run"))?;
        table.update_datafusion_session(&ctx.state())?;
        let tally = Arc::new(ScanTally::default());
        plan.joined.record(JoinedScan {
            source: source.into(),
            upstream: name.into(),
            pruned_on: pruning.map(|(on, _)| on.clone()).unwrap_or_default(),
            files_total: table.snapshot()?.log_data().num_files() as u64,
            tally: tally.clone(),
        });
        let provider = CountedProvider::new(table.table_provider().await?, tally);
        let mut snapshot = ctx.read_table(Arc::new(provider))?;
        if let Some((_, filter)) = pruning {
            snapshot = snapshot.filter(filter.clone())?;
        }
        let columns: Vec<String> = snapshot.schema().fields().iter().map(|f| f.name().clone()).collect();
        let mut all = vec![snapshot];
        for df in images.into_iter().flatten() {
            let df = match pruning {
                Some((_, filter)) => df.clone().filter(filter.clone())?,
                None => df.clone(),
            };
            let before = df
                .clone()
                .filter(
                    deltalake::datafusion::prelude::ident(cdf::CHANGE_TYPE)
                        .in_list(vec![deltalake::datafusion::prelude::lit("delete"), deltalake::datafusion::prelude::lit("update_preimage")], false),
                )?
                .select(columns.iter().map(|c| deltalake::datafusion::prelude::ident(c)).collect::<Vec<_>>())?;
            all.push(before);
        }
        union_by_name(all)?.ok_or_else(|| eyre!("no relation for `{name}`"))
    }

    pub(crate) async fn read_range(&self, ctx: &SessionContext, name: &str, table: &DeltaTable, range: ReadRange) -> Result<Vec<DataFrame>> {
        match range {
            ReadRange::Changes { start, end } => {
                match self.cycle.as_ref().filter(|c| c.shared.contains_key(name)) {
                    Some(cycle) => Ok(vec![self.shared_changes(ctx, cycle, name, table, start, end).await?]),
                    None => Ok(vec![cdf::changes_frame(ctx, name, table, start, end, &self.scans).await?]),
                }
            }
            ReadRange::SnapshotThenChanges { snapshot, end } => {
                let mut frames = vec![cdf::snapshot_frame(ctx, name, table, snapshot, &self.scans).await?];
                if end > snapshot {
                    frames.push(cdf::changes_frame(ctx, name, table, snapshot + 1, end, &self.scans).await?);
                }
                Ok(frames)
            }
        }
    }

    /// A change range read once per cycle and served from memory to every pipeline that reads it.
    pub(crate) async fn shared_changes(
        &self,
        ctx: &SessionContext,
        cycle: &Cycle,
        name: &str,
        table: &DeltaTable,
        start: u64,
        end: u64,
    ) -> Result<DataFrame> {
        let cell = {
            let mut reads = cycle.reads.lock().map_err(|_| eyre!("shared read cache poisoned"))?;
            reads.entry((name.to_string(), start, end)).or_default().clone()
        };
        let columns = cycle.shared.get(name).cloned().flatten();
        let batches = cell
            .get_or_try_init(|| async {
                let mut df = cdf::changes_frame(ctx, name, table, start, end, &self.scans).await?;
                if let Some(cols) = &columns {
                    let mut keep: Vec<&str> = cols.iter().map(String::as_str).collect();
                    keep.extend([cdf::CHANGE_TYPE, cdf::COMMIT_VERSION, cdf::COMMIT_TIMESTAMP]);
                    // A missing key column is reported by the pipeline's own projection later.
                    let present: Vec<&str> =
                        keep.into_iter().filter(|c| df.schema().field_with_unqualified_name(c).is_ok()).collect();
                    df = df.select_columns(&present)?;
                }
                let batches = df.collect().await.map_err(|e| cdf::explain_read_error(name, start, end, e.into()))?;
                Ok::<SharedRead, color_eyre::Report>(Arc::new(batches))
            })
            .await?
            .clone();
        let planned = match batches.first() {
            Some(b) => b.schema(),
            None => cdf::changes_frame(ctx, name, table, start, end, &ScanCounter::default()).await?.schema().inner().clone(),
        };
        let mem = keymap::mem_table(planned, batches.as_ref().clone())?;
        Ok(ctx.read_table(Arc::new(mem))?)
    }
}

/// A `sql` source may join only upstreams the pipeline reads: another table would be read at
/// whatever version is latest (a redo of the run could see another one) and its own changes
/// would never mark keys (the delta rule needs its change rows too).
pub(crate) fn refuse_joins_outside(pipeline: &Pipeline, upstream: &str, joined: &[String]) -> Result<()> {
    let reads = pipeline.upstream_names();
    let Some(outside) = joined.iter().find(|t| !reads.contains(t)) else { return Ok(()) };
    Err(eyre!(
        "pipeline `{}`, source `{upstream}`: the `sql` joins upstream `{outside}`, which is not a source of the pipeline: it would be read unpinned and its changes would never mark keys\n  fix: add it as a source ([[pipelines.{}.sources]] upstream = \"{outside}\" with the `keys` or `sql` that map its changes to the key)",
        pipeline.name,
        pipeline.name
    ))
}

pub(crate) fn union_by_name(frames: Vec<DataFrame>) -> Result<Option<DataFrame>> {
    let mut it = frames.into_iter();
    let Some(first) = it.next() else { return Ok(None) };
    Ok(Some(it.try_fold(first, |acc, f| acc.union_by_name(f))?))
}

/// Change rows a run reads at least, as far as the upstreams' snapshots tell: an upstream read
/// from its first version (or from a snapshot) brings every live row of its pinned version.
/// Reads of later ranges count nothing (their size is not in the snapshot).
fn rows_read_at_least(plan: &Plan) -> usize {
    let from_the_start = |range: ReadRange| matches!(range, ReadRange::Changes { start: 0, .. } | ReadRange::SnapshotThenChanges { .. });
    plan.reads
        .iter()
        .filter(|read| read.range.map(ReadRangeView::to_range).is_some_and(from_the_start))
        .filter_map(|read| plan.tables.get(&read.upstream)?.snapshot().ok())
        .map(|snapshot| snapshot.log_data().iter().filter_map(|file| file.num_records()).sum::<usize>())
        .sum()
}
