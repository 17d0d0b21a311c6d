//! Batch cycles: many pipelines run together, each upstream pinned once and each range
//! that several read scanned once.

use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{Result, eyre};

use crate::config::{KeyMapping, Pipeline};
use crate::store::pause::Pause;

use super::core::{Cycle, Engine};
use super::options::{RunEvent, RunOptions};
use super::report::RunReport;

impl Engine {

    /// The configured pipelines not paused in the config.
    pub fn unpaused_pipelines(&self) -> Vec<String> {
        self.config.pipelines.values().filter(|p| !p.paused).map(|p| p.name.clone()).collect()
    }

    /// The pipelines an operator paused (`deltalink pause`), with who, when and why.
    pub async fn operator_pauses(&self) -> Result<HashMap<String, Pause>> {
        let rows = self.tracker().await?.pause_rows(None).await?;
        Ok(self.config.pipelines.keys().filter_map(|p| Some((p.clone(), Pause::find(&rows, p)?))).collect())
    }

    /// Run several pipelines, one after another; when `names` is empty, every pipeline paused
    /// neither in the config nor by an operator (`run --all`).
    pub async fn run_many(&self, names: &[String], opts: &RunOptions) -> Vec<(String, Result<RunReport>)> {
        let names: Vec<String> = if names.is_empty() {
            // Unreadable pauses are not a reason to run nothing: each run checks its own.
            let paused = self.operator_pauses().await.unwrap_or_default();
            self.unpaused_pipelines().into_iter().filter(|p| !paused.contains_key(p)).collect()
        } else {
            names.to_vec()
        };
        let mut readers: HashMap<String, usize> = HashMap::new();
        for n in &names {
            if let Ok(p) = self.config.pipeline(n) {
                for u in p.upstream_names() {
                    *readers.entry(u).or_default() += 1;
                }
            }
        }
        let pipelines: Vec<&Pipeline> = names.iter().filter_map(|n| self.config.pipeline(n).ok()).collect();
        // Pipelines run concurrently (bounded), each as its own task: as futures of one task
        // their CPU work (grouping, building and encoding link rows) shared one core.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        let cycle = Cycle {
            shared: readers
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(u, _)| {
                    let cols = columns_needed(&pipelines, &u);
                    (u, cols)
                })
                .collect(),
            heavy: Some(tokio::sync::Semaphore::new(parallel)),
            pipelines: names.len(),
            ..Default::default()
        };
        let engine = Engine { cycle: Some(Arc::new(cycle)), ..self.clone() };
        let runs = names.into_iter().map(|n| {
            let (engine, opts) = (engine.clone(), opts.clone());
            async move {
                let task = {
                    let (n, opts) = (n.clone(), opts.clone());
                    crate::util::task::spawn_owned(async move { engine.run(&n, &opts).await })
                };
                let r = task.await.unwrap_or_else(|e| Err(eyre!("the run of pipeline `{n}` stopped: {e}")));
                if let Some(tx) = &opts.events {
                    let result = r.as_ref().map(Clone::clone).map_err(|e| format!("{e:#}"));
                    let _ = tx.send(RunEvent::Finished { pipeline: n.clone(), result });
                }
                (n, r)
            }
        });
        // Unordered: a finished pipeline frees its slot at once, not when the ones started
        // before it finish too; the results are put back in the order of `names`.
        let mut done: Vec<(usize, (String, Result<RunReport>))> = futures::stream::iter(runs.enumerate())
            .map(|(i, run)| async move { (i, run.await) })
            .buffer_unordered(parallel * 2)
            .collect()
            .await;
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, r)| r).collect()
    }
}

/// The columns of `upstream` that the cycle's pipelines need from its change rows; `None` when
/// some `sql` source may read any column of it.
pub(crate) fn columns_needed(pipelines: &[&Pipeline], upstream: &str) -> Option<Vec<String>> {
    let mut cols: Vec<String> = Vec::new();
    for p in pipelines {
        let sql_reads_it = p.sources.iter().any(|s| matches!(s.mapping, KeyMapping::Sql(_)) && p.upstream_names().iter().any(|u| u == upstream));
        if sql_reads_it {
            return None;
        }
        for s in p.sources.iter().filter(|s| s.upstream == upstream) {
            if let KeyMapping::Columns(c) = &s.mapping {
                cols.extend(c.iter().cloned());
            }
        }
    }
    cols.sort();
    cols.dedup();
    Some(cols)
}
