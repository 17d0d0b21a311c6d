//! Options of a run (fault injection for tests, progress events) and its named steps.

use std::sync::Arc;

use color_eyre::eyre::Result;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::Error;

use super::report::RunReport;

/// The steps of a run, named so faults can be injected between them in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Step {
    Pinned,
    IntentRecorded,
    ChangesRead,
    /// The link table's new files are written, its commit not made yet.
    LinkFilesWritten,
    LinkCommitted,
    TrackerCommitted,
}

impl Step {
    /// In the order a run passes them.
    pub const ALL: [Step; 6] =
        [Step::Pinned, Step::IntentRecorded, Step::ChangesRead, Step::LinkFilesWritten, Step::LinkCommitted, Step::TrackerCommitted];

    /// Its place in [`Step::ALL`], from 1 (progress shown as "3/6").
    pub fn number(self) -> usize {
        Step::ALL.iter().position(|s| *s == self).map_or(0, |i| i + 1)
    }

    /// The short name logs and the test hooks (`DELTALINK_STOP_AFTER=intent`) use; the wording
    /// for people is `describe::step_label`.
    pub fn name(self) -> &'static str {
        match self {
            Step::Pinned => "pinned",
            Step::IntentRecorded => "intent",
            Step::ChangesRead => "read",
            Step::LinkFilesWritten => "files",
            Step::LinkCommitted => "link",
            Step::TrackerCommitted => "tracker",
        }
    }
}

/// Progress a run reports while it works (the console shows these).
#[derive(Debug, Clone)]
pub enum RunEvent {
    Step { pipeline: String, step: Step },
    Message { pipeline: String, text: String },
    /// One pipeline of a `run_many` cycle finished (the others may still be running).
    Finished { pipeline: String, result: std::result::Result<RunReport, String> },
}

/// Options of a run, built like delta-rs's operation builders.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    fail_after: Option<Step>,
    hold_after: Option<(Step, Arc<tokio::sync::Notify>)>,
    pub(crate) events: Option<UnboundedSender<RunEvent>>,
}

impl RunOptions {
    /// Testing: return an error right after `step` (the process state is as if it died there).
    pub fn with_fault_after(mut self, step: Step) -> Self {
        self.fail_after = Some(step);
        self
    }
    /// Testing: right after `step`, notify `held` and wait until the run's task is cancelled
    /// (a cancel at a known step, without sleeps).
    pub fn with_hold_after(mut self, step: Step, held: Arc<tokio::sync::Notify>) -> Self {
        self.hold_after = Some((step, held));
        self
    }
    pub fn with_events(mut self, tx: UnboundedSender<RunEvent>) -> Self {
        self.events = Some(tx);
        self
    }
    /// [`RunOptions::reached`], then the test hold, if any, at this step.
    pub(crate) async fn passed(&self, pipeline: &str, step: Step) -> Result<()> {
        self.reached(pipeline, step)?;
        if let Some((_, held)) = self.hold_after.as_ref().filter(|(s, _)| *s == step) {
            held.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    pub(crate) fn reached(&self, pipeline: &str, step: Step) -> Result<()> {
        tracing::info!(pipeline, step = step.name(), "run step reached");
        if let Some(tx) = &self.events {
            let _ = tx.send(RunEvent::Step { pipeline: pipeline.into(), step });
        }
        if self.fail_after == Some(step) {
            return Err(Error::InjectedFault(format!("{step:?}")).into());
        }
        test_point(step.name());
        Ok(())
    }
}

/// Where the kill and freeze tests stop a process: `DELTALINK_FAULT_AFTER=name` crashes it here
/// (no unwinding, no cleanup), `DELTALINK_STOP_AFTER=name` freezes it here (SIGSTOP, as a VM
/// pause or a long GC would; SIGCONT wakes it up). Names: the run's steps, and `maintain-leased`.
pub(crate) fn test_point(name: &str) {
    if std::env::var("DELTALINK_FAULT_AFTER").ok().as_deref() == Some(name) {
        std::process::abort();
    }
    if std::env::var("DELTALINK_STOP_AFTER").ok().as_deref() == Some(name) {
        stop_self();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn stop_self() {
    // SAFETY: raise(2) with a valid signal number has no memory-safety preconditions.
    unsafe {
        libc::raise(libc::SIGSTOP);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn stop_self() {
    tracing::warn!("DELTALINK_STOP_AFTER is only supported on Linux (glibc)");
}

pub(crate) fn send(opts: &RunOptions, pipeline: &str, text: String) {
    if let Some(tx) = &opts.events {
        let _ = tx.send(RunEvent::Message { pipeline: pipeline.into(), text });
    }
}
