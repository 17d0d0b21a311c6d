//! Replay: re-read a chosen range of upstream versions into a link table, audited.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, eyre};

use crate::store::cdf::ReadRange;
use crate::store::lake;
use crate::store::link::{self, WriteKind};

use super::core::{Engine, session};
use super::options::{RunOptions, Step};
use super::plan::{Plan, check_readable, configured_rows, same_table};
use super::protocol::audit;
use super::report::{Replay, ReplayReport, UpstreamRead};

impl Engine {

    /// Re-derive keys for an explicit version range without moving the tracker: into the
    /// pipeline's link table (a new run_id, provenance marked as replay) or into a scratch
    /// link table. A dry run (nothing written) unless `replay.execute`.
    pub async fn replay(&self, replay: &Replay) -> Result<ReplayReport> {
        self.replay_with(replay, &RunOptions::default()).await
    }

    /// [`Engine::replay`] reporting its steps (and, in tests, failing after one) like a run:
    /// `IntentRecorded` after the `replay-intent` audit, `LinkFilesWritten` and `LinkCommitted`
    /// around the link-table commit, `TrackerCommitted` after the `replay` audit.
    pub async fn replay_with(&self, replay: &Replay, opts: &RunOptions) -> Result<ReplayReport> {
        let started = Instant::now();
        let mut pipeline = self.config.pipeline(&replay.pipeline)?.clone();
        // `--into` the pipeline's own link table is a production replay, with its guards.
        let scratch = replay.into.as_ref().filter(|into| !same_table(into, &pipeline.link_table));
        if scratch.is_none() && !pipeline.reset_allowed && replay.execute {
            return Err(eyre!(
                "pipeline `{}` has `reset_allowed = false` in {}: replays into its link table are refused (use --into URI for a scratch table)",
                pipeline.name,
                self.config.path.display()
            ));
        }
        if replay.execute {
            self.refuse_if_read_only(&format!("replay of pipeline `{}`", pipeline.name))?;
        }
        if let Some(into) = scratch {
            pipeline.link_table = into.clone();
        }
        let names = if replay.upstreams.is_empty() { pipeline.upstream_names() } else { replay.upstreams.clone() };
        let mut reads = Vec::new();
        let mut tables = HashMap::new();
        for name in names {
            if !pipeline.sources.iter().any(|s| s.upstream == name) {
                return Err(eyre!("pipeline `{}` does not read upstream `{name}`", pipeline.name));
            }
            let u = self.config.upstream(&name)?;
            let mut table = lake::open_upstream(&name, &u.uri, self.storage()).await?;
            let latest = lake::table_version(&table)?;
            let to = replay.to_version.unwrap_or(latest);
            if to > latest || replay.from_version > to {
                return Err(eyre!(
                    "upstream `{name}`: cannot replay {}..={to}; its versions are 0..={latest} and --from-version must not exceed --to-version",
                    replay.from_version
                ));
            }
            if to != latest {
                table.load_version(to).await?;
            }
            let range = ReadRange::Changes { start: replay.from_version, end: to };
            let pinned_ts = lake::read_commit(&table, to).await?.and_then(|c| c.timestamp_ms);
            let read = UpstreamRead {
                upstream: name.clone(),
                processed: Some(replay.from_version as i64 - 1),
                tracked: true,
                pinned: to,
                pinned_ts,
                range: Some(range.into()),
            };
            check_readable(&read, &table).await?;
            reads.push(read);
            tables.insert(name, table);
        }
        // Tables a `sql` source joins, replayed or not (at their latest versions).
        self.open_sql_tables(&pipeline, &mut tables).await?;
        let mut plan = Plan { pipeline, run_id: 0, resumed: false, reads, tables, prior: HashMap::new(), link: None, link_committed: None, joined: Default::default() };
        let ctx = session();
        let affected = self.read_keys(&ctx, &plan).await?;
        let mut report = ReplayReport {
            pipeline: replay.pipeline.clone(),
            target: crate::config::display_uri(&plan.pipeline.link_table),
            into_link_table: scratch.is_none(),
            upstreams: plan.reads.clone(),
            change_rows: affected.as_ref().map_or(0, |a| a.change_rows),
            distinct_keys: affected.as_ref().map_or(0, |a| a.distinct_keys),
            run_id: None,
            written: false,
            duration: Duration::ZERO,
        };
        if !replay.execute {
            report.duration = started.elapsed();
            return Ok(report);
        }
        let lease = crate::store::lease::acquire(&self.config, &replay.pipeline, "replay").await?;
        let fence = lease.fence();
        let result = async {
            plan.run_id = self.next_run_id_for_replay(&plan, scratch.is_none()).await?;
            // Audited before anything is written, so a replay that dies mid-write is on record
            // too (as started, never finished); the second record says it finished.
            let audited = |action| {
                let mut audit = audit(action, &plan).fenced(&fence);
                audit.reason = replay.reason.clone();
                audit.details["into"] = serde_json::json!(crate::config::display_uri(&plan.pipeline.link_table));
                audit
            };
            let name = replay.pipeline.as_str();
            let mut tracker = self.tracker().await?;
            fence.check()?;
            tracker.record(&audited("replay-intent")).await?;
            opts.passed(name, Step::IntentRecorded).await?;
            if let Some(a) = affected.filter(|a| a.distinct_keys > 0) {
                let before_commit = || {
                    fence.check()?;
                    opts.reached(name, Step::LinkFilesWritten)
                };
                self.write_keys(&plan, a, WriteKind::Replay, Some(&fence), &before_commit).await?;
            }
            opts.passed(name, Step::LinkCommitted).await?;
            fence.check()?;
            tracker.record(&audited("replay")).await?;
            opts.passed(name, Step::TrackerCommitted).await?;
            Ok::<_, color_eyre::Report>(())
        }
        .await;
        lease.release().await;
        result?;
        report.run_id = Some(plan.run_id);
        report.written = true;
        report.duration = started.elapsed();
        Ok(report)
    }

    pub(crate) async fn next_run_id_for_replay(&self, plan: &Plan, production: bool) -> Result<i64> {
        let committed = match lake::open_owned(&plan.pipeline.link_table, self.storage()).await? {
            Some(t) => link::committed_run_id(&t, &plan.pipeline.name).await?.unwrap_or(0),
            None => 0,
        };
        if !production {
            return Ok(committed + 1);
        }
        let rows = configured_rows(&plan.pipeline, self.tracker().await?.rows(Some(&plan.pipeline.name)).await?);
        if rows.iter().any(|r| r.pending_run_id.is_some()) {
            return Err(eyre!(
                "pipeline `{}` has an unfinished run; run it first (`deltalink run {}`) so it completes, then replay",
                plan.pipeline.name,
                plan.pipeline.name
            ));
        }
        Ok(rows.iter().flat_map(|r| [r.run_id, r.pending_run_id]).flatten().max().unwrap_or(0).max(committed) + 1)
    }
}
