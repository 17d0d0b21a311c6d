//! Continuous mode: poll upstream versions cheaply and run a pipeline when one of its
//! upstreams moved. Ctrl-C stops after the in-flight cycle finishes (runs are crash-safe anyway).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use color_eyre::eyre::Result;

use crate::engine::{Engine, RunOptions, RunReport};
use crate::store::pause::Pause;

/// Polls upstreams and runs pipelines whose upstreams moved.
pub struct Watcher {
    engine: Engine,
    pipelines: Vec<String>,
    interval: Duration,
}

impl Watcher {
    pub fn new(engine: Engine, pipelines: Vec<String>, interval: Duration) -> Self {
        let pipelines =
            if pipelines.is_empty() { engine.unpaused_pipelines() } else { pipelines };
        Watcher { engine, pipelines, interval }
    }

    /// Latest version of an upstream from a listing of its log (no snapshot: the engine's
    /// probes, which status and the metrics of this process share).
    async fn latest(&self, name: &str) -> Result<u64> {
        let u = self.engine.config.upstream(name)?;
        Ok(self.engine.probes.probe(name, &u.uri, &self.engine.config.storage_options, &self.engine.commits).await?.latest)
    }

    /// Pipelines not paused by an operator with an upstream ahead of the tracker (or an
    /// unfinished run), and the upstreams whose version could not be read. An unreadable upstream holds back nothing
    /// else: its pipelines still run when another of their upstreams moved (the run then
    /// names the problem and its fix), and the other pipelines run as usual.
    pub async fn due(&mut self) -> Result<(Vec<String>, Vec<(String, color_eyre::Report)>)> {
        let tracker = self.engine.tracker().await?;
        let (rows, pauses) = (tracker.rows(None).await?, tracker.pause_rows(None).await?);
        let mut latest: HashMap<String, Option<i64>> = HashMap::new();
        let mut unreadable = Vec::new();
        let (mut due, pipelines) = (Vec::new(), self.pipelines.clone());
        for p in pipelines {
            let pipeline = self.engine.config.pipeline(&p)?.clone();
            // Paused by an operator: not run, and its lag not observed (not judged while paused).
            if Pause::find(&pauses, &p).is_some() {
                continue;
            }
            let mine: Vec<_> = rows.iter().filter(|r| r.pipeline_name == p).collect();
            let mut moved = mine.iter().any(|r| r.pending_run_id.is_some());
            for u in pipeline.upstream_names() {
                if !latest.contains_key(&u) {
                    let version = match self.latest(&u).await {
                        Ok(v) => Some(v as i64),
                        Err(e) => {
                            unreadable.push((u.clone(), e));
                            None
                        }
                    };
                    latest.insert(u.clone(), version);
                }
                let processed = mine.iter().find(|r| r.upstream == u).and_then(|r| r.processed());
                if let Some(v) = latest[&u] {
                    // One observation per poll: health's "lag grew at each of the last N polls".
                    self.engine.observed.record_lag(&p, &u, crate::engine::lag_versions(v as u64, processed));
                }
                moved |= latest[&u].is_some_and(|v| processed.is_none_or(|p| p < v));
            }
            if moved {
                due.push(p);
            }
        }
        Ok((due, unreadable))
    }

    /// Poll until `stop` is set; `report` is called after every run (or error). The pipelines
    /// due in one poll run as one cycle, like `run --all`: an upstream several of them read
    /// is scanned once.
    pub async fn run(&mut self, stop: Arc<AtomicBool>, mut report: impl FnMut(&str, &Result<RunReport>)) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            match self.due().await {
                Ok((due, unreadable)) => {
                    for (upstream, e) in unreadable {
                        report(&format!("(poll of upstream `{upstream}`)"), &Err(e));
                    }
                    if !due.is_empty() {
                        for (p, r) in self.engine.run_many(&due, &RunOptions::default()).await {
                            report(&p, &r);
                        }
                    }
                }
                Err(e) => report("(poll)", &Err(e)),
            }
            let deadline = tokio::time::Instant::now() + self.interval;
            while tokio::time::Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100).min(self.interval)).await;
            }
        }
        Ok(())
    }
}
