//! Engine work as tokio tasks. The UI loop never awaits I/O: the App asks for work with a
//! [`Request`], [`Tasks`] spawns it, and results come back as [`TaskEvent`]s on one channel.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use color_eyre::eyre::Result;
use futures::FutureExt;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::task::AbortHandle;
use tracing::instrument::WithSubscriber;
use tracing::Dispatch;

use crate::store::lake;
use crate::store::link::{self, LinkPage, LinkQuery};
use crate::ops::maintain::{self, MaintainOptions};
use crate::ops::reset::{self};
use crate::engine::{Engine, Replay, RunEvent, RunOptions, RunReport};
use crate::ops::status::{self};

use crate::console::msg::{Finished, Job, Progress, Request, TaskEvent, TaskId, TrackerData, WriteOp, HISTORY_LIMIT, PREVIEW_LIMIT};
use crate::console::theme::{self, ColorDepth};

/// Spawns jobs and keeps their abort handles (cancelling a run is safe: the next run recovers).
pub struct Tasks {
    engine: Engine,
    events: UnboundedSender<TaskEvent>,
    running: HashMap<TaskId, AbortHandle>,
    /// Tracing of task code goes to the console's log file, never to the terminal.
    log: Dispatch,
    depth: ColorDepth,
    /// The engine's runtime: jobs run there, never on the UI thread's own runtime.
    runtime: tokio::runtime::Handle,
}

impl Tasks {
    /// `runtime`: where jobs run (the engine's multi-threaded runtime).
    pub fn new(engine: Engine, events: UnboundedSender<TaskEvent>, log: Dispatch, depth: ColorDepth, runtime: tokio::runtime::Handle) -> Tasks {
        Tasks { engine, events, running: HashMap::new(), log, depth, runtime }
    }

    pub fn execute(&mut self, request: Request) {
        self.running.retain(|_, h| !h.is_finished());
        match request {
            Request::Spawn { id, job } => self.spawn(id, job),
            Request::Cancel(id) => self.cancel(id),
        }
    }

    fn spawn(&mut self, id: TaskId, job: Job) {
        let engine = self.engine.clone();
        let events = self.events.clone();
        let depth = self.depth;
        let work = async move {
            // A panic in engine code must not take the console down: report it as a failure.
            let event = match AssertUnwindSafe(run_job(&engine, id, job, &events, depth)).catch_unwind().await {
                Ok(result) => TaskEvent::Finished { id, result },
                Err(panic) => TaskEvent::Failed { id, error: panic_text(panic.as_ref()) },
            };
            let _ = events.send(event);
        };
        let handle = self.runtime.spawn(work.with_subscriber(self.log.clone()));
        self.running.insert(id, handle.abort_handle());
    }

    fn cancel(&mut self, id: TaskId) {
        if let Some(h) = self.running.remove(&id) {
            if !h.is_finished() {
                h.abort();
                let _ = self.events.send(TaskEvent::Cancelled { id });
            }
        }
    }

    /// On quit: stop everything (runs stopped mid-way are recovered by the next run).
    pub fn abort_all(&mut self) {
        for (_, h) in self.running.drain() {
            h.abort();
        }
    }
}

fn text(e: color_eyre::Report) -> String {
    format!("{e:#}")
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panicked: {msg}")
}

async fn run_job(
    engine: &Engine,
    id: TaskId,
    job: Job,
    events: &UnboundedSender<TaskEvent>,
    depth: ColorDepth,
) -> Finished {
    match job {
        Job::Status => Finished::Status(
            status::status(engine)
                .await
                .inspect(|st| status::observe(engine, st))
                .map_err(text),
        ),
        Job::Tracker => Finished::Tracker(load_tracker(engine).await.map_err(text)),
        Job::Preview { pipeline } => {
            let result = engine.preview(&pipeline, Some(PREVIEW_LIMIT)).await.map_err(text);
            Finished::Preview { pipeline, result }
        }
        Job::LinkPage { pipeline, query } => {
            let result = load_link_page(engine, &pipeline, &query).await.map_err(text);
            Finished::LinkPage { pipeline, result }
        }
        Job::PlanReset { pipeline, upstreams, target } => {
            let result = reset::plan_reset(engine, &pipeline, &upstreams, target).await.map_err(text);
            Finished::ResetPlan { pipeline, result }
        }
        Job::PlanReplay(replay) => {
            let dry_run = Replay { execute: false, ..replay };
            let result = engine.replay(&dry_run).await.map_err(text);
            Finished::ReplayPlan { pipeline: dry_run.pipeline, result }
        }
        Job::PlanMaintain { pipeline } => {
            let result = maintain::maintain(engine, std::slice::from_ref(&pipeline), false, &MaintainOptions::dry_run()).await.map_err(text);
            Finished::MaintainPlan { pipeline, result }
        }
        Job::Write(WriteOp::Maintain { pipeline, .. }) => {
            let opts = MaintainOptions::dry_run().with_execute(true);
            let result = maintain::maintain(engine, std::slice::from_ref(&pipeline), false, &opts).await.map_err(text);
            Finished::Maintained { pipeline, result }
        }
        Job::Write(WriteOp::Pause { pipeline, paused, reason }) => {
            let result = crate::ops::pause::set_paused(engine, &pipeline, paused, &reason).await.map_err(text);
            Finished::Paused { pipeline, paused, result }
        }
        Job::PendingRows { pipeline, ranges } => {
            let mut counts = Vec::with_capacity(ranges.len());
            for r in ranges {
                counts.push((r.upstream.clone(), status::count_changes(engine, &r.upstream, r.from, r.to).await.map_err(text)));
            }
            Finished::PendingRows { pipeline, counts }
        }
        Job::Write(WriteOp::Replay { replay, .. }) => {
            // Its steps show as the task's progress, like a run's.
            let (tx, forward) = forward_run_events(id, events);
            let result = engine.replay_with(&replay, &RunOptions::default().with_events(tx)).await.map_err(text);
            let _ = forward.await;
            Finished::Replay { pipeline: replay.pipeline, result }
        }
        Job::Write(WriteOp::Run(pipeline)) => {
            let result = run_one(engine, id, &pipeline, events).await;
            Finished::Run { pipeline, result }
        }
        Job::Write(WriteOp::RunAll) => {
            run_all(engine, id, events).await;
            Finished::RunAll
        }
        Job::Write(WriteOp::Reset { plan, reason }) => {
            let result = reset::execute_reset(engine, &plan, &reason).await.map_err(text);
            Finished::Reset { pipeline: plan.pipeline, result }
        }
        Job::Theme(spec) => {
            let loaded = tokio::task::spawn_blocking(move || theme::load(&spec, depth)).await;
            Finished::Theme(match loaded {
                Ok(r) => r.map_err(text),
                Err(e) => Err(e.to_string()),
            })
        }
    }
}

/// One run, its step events forwarded as progress of task `id`.
async fn run_one(
    engine: &Engine,
    id: TaskId,
    pipeline: &str,
    events: &UnboundedSender<TaskEvent>,
) -> Result<RunReport, String> {
    let (tx, forward) = forward_run_events(id, events);
    let result = engine.run(pipeline, &RunOptions::default().with_events(tx)).await.map_err(text);
    // The sender is gone with the options: wait for the last steps so they precede the result.
    let _ = forward.await;
    result
}

/// All pipelines as one engine cycle (central reads, bounded concurrency); each pipeline's end
/// is reported as it happens.
async fn run_all(engine: &Engine, id: TaskId, events: &UnboundedSender<TaskEvent>) {
    let (tx, forward) = forward_run_events(id, events);
    engine.run_many(&[], &RunOptions::default().with_events(tx)).await;
    let _ = forward.await;
}

/// A sender for a run's events and the task that forwards them as progress of task `id`
/// (a pipeline's end as `PipelineDone`); it ends when the sender is dropped.
fn forward_run_events(
    id: TaskId,
    events: &UnboundedSender<TaskEvent>,
) -> (UnboundedSender<RunEvent>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<RunEvent>();
    let out = events.clone();
    let forward = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let progress = match ev {
                RunEvent::Finished { pipeline, result } => Progress::PipelineDone { pipeline, result },
                other => Progress::Run(other),
            };
            let _ = out.send(TaskEvent::Progress { id, progress });
        }
    });
    (tx, forward)
}

async fn load_tracker(engine: &Engine) -> Result<TrackerData> {
    let tracker = engine.tracker().await?;
    let rows = tracker.rows(None).await?;
    let history = tracker.history(HISTORY_LIMIT).await?;
    Ok(TrackerData { rows, history })
}

async fn load_link_page(engine: &Engine, pipeline: &str, query: &LinkQuery) -> Result<LinkPage> {
    let p = engine.config.pipeline(pipeline)?;
    match lake::open_owned(&p.link_table, &engine.config.storage_options).await? {
        Some(table) => link::browse(&table, &p.key, query).await,
        // The link table is created by the first run that writes keys.
        None => Ok(LinkPage::default()),
    }
}
