//! Engine work out and back: spawning jobs (one load in flight per kind), and folding their
//! progress and results into the state; the clock tick and the activity log.

use crate::console::msg::{Finished, Job, Progress, Request, TaskEvent, TaskId, View, WriteOp};
use crate::console::text;
use crate::engine::{Preview, RunEvent, RunReport};
use crate::ops::status::Status;
use crate::store::link::{LinkPage, LinkQuery};

use super::app::{ACTIVITY_KEEP, App, Entry, FLASH_TICKS, Flash, InFlight, LINK_PAGE_SIZE, LastRun, Level, Popup, REFRESH_TICKS};
use crate::console::state::form::DryRunForm;

impl App {

    // ---------------------------------------------------------------- engine work

    pub(crate) fn spawn(&mut self, job: Job, label: String) -> TaskId {
        self.next_task += 1;
        let id = TaskId(self.next_task);
        let started = self.now();
        let (write, background) = (matches!(job, Job::Write(_)), matches!(job, Job::Status | Job::Tracker));
        self.tasks.push(InFlight { id, write, background, label, started, current: None, step: None, done: 0, total: 1 });
        self.outbox.push(Request::Spawn { id, job });
        id
    }

    /// Drop a load nobody waits for any more (its result would be ignored anyway).
    pub(crate) fn supersede(&mut self, old: Option<TaskId>) {
        if let Some(id) = old {
            self.take_task(id);
            self.outbox.push(Request::Cancel(id));
        }
    }

    pub(crate) fn task_mut(&mut self, id: TaskId) -> Option<&mut InFlight> {
        self.tasks.iter_mut().find(|t| t.id == id)
    }

    pub(crate) fn take_task(&mut self, id: TaskId) -> Option<InFlight> {
        let i = self.tasks.iter().position(|t| t.id == id)?;
        Some(self.tasks.remove(i))
    }

    pub(crate) fn request_status(&mut self) {
        if !self.status.is_loading() {
            self.last_status_tick = self.ticks;
            let id = self.spawn(Job::Status, "refresh status".into());
            self.status.start(id);
        }
    }

    pub(crate) fn ensure_tracker(&mut self) {
        if (self.tracker.data.value.is_none() || self.tracker.stale) && !self.tracker.data.is_loading() {
            self.load_tracker();
        }
    }

    pub(crate) fn load_tracker(&mut self) {
        if !self.tracker.data.is_loading() {
            self.tracker.stale = false;
            let id = self.spawn(Job::Tracker, "read tracker".into());
            self.tracker.data.start(id);
        }
    }

    pub(crate) fn ensure_link(&mut self) {
        let current = self.pipeline.clone().unwrap_or_default();
        if self.link.pipeline != current || (self.link.page.value.is_none() && !self.link.page.is_loading()) {
            self.load_link();
        }
    }

    pub(crate) fn load_link(&mut self) {
        let Some(pipeline) = self.pipeline.clone() else { return };
        let old = self.link.page.stop();
        self.supersede(old);
        if self.link.pipeline != pipeline {
            self.link.page.clear();
        }
        self.link.pipeline = pipeline.clone();
        let job = Job::LinkPage {
            pipeline: pipeline.clone(),
            query: LinkQuery { limit: LINK_PAGE_SIZE, ..self.link.query.clone() },
        };
        let id = self.spawn(job, format!("link rows of {pipeline}"));
        self.link.page.start(id);
    }

    pub(crate) fn ensure_preview(&mut self) {
        let current = self.pipeline.clone().unwrap_or_default();
        if self.preview.pipeline != current || (self.preview.data.value.is_none() && !self.preview.data.is_loading()) {
            self.load_preview();
        }
    }

    pub(crate) fn load_preview(&mut self) {
        let Some(pipeline) = self.pipeline.clone() else { return };
        let old = self.preview.data.stop();
        self.supersede(old);
        self.preview.pipeline = pipeline.clone();
        self.preview.data.clear();
        self.selected[View::Preview.index()] = 0;
        let job = Job::Preview { pipeline: pipeline.clone() };
        let id = self.spawn(job, format!("preview of {pipeline}"));
        self.preview.data.start(id);
    }

    // ---------------------------------------------------------------- results

    pub(crate) fn task_event(&mut self, ev: TaskEvent) {
        match ev {
            TaskEvent::Progress { id, progress } => self.progress(id, progress),
            TaskEvent::Finished { id, result } => {
                self.take_task(id);
                self.finished(id, result);
            }
            TaskEvent::Failed { id, error } => {
                let label = self.take_task(id).map_or_else(|| "task".to_string(), |t| t.label);
                self.forget(id);
                self.log(Level::Error, format!("{label}: {error}"));
            }
            TaskEvent::Cancelled { id } => {
                // Superseded loads were already dropped from the list: they end silently.
                if let Some(t) = self.take_task(id) {
                    self.forget(id);
                    let note = if t.write { " (safe: the next run recovers)" } else { "" };
                    self.log(Level::Warn, format!("cancelled: {}{note}", t.label));
                }
            }
            TaskEvent::Background { error } => self.log(Level::Error, error),
        }
    }

    /// A task ended without a result: nothing waits for it any more.
    pub(crate) fn forget(&mut self, id: TaskId) {
        self.status.forget(id);
        self.tracker.data.forget(id);
        self.link.page.forget(id);
        self.preview.data.forget(id);
        self.pending_rows.counts.forget(id);
        match self.popup.as_mut() {
            Some(Popup::ResetForm(form)) => form.plan.forget(id),
            Some(Popup::ReplayForm(form)) => form.plan.forget(id),
            _ => {}
        }
    }

    pub(crate) fn progress(&mut self, id: TaskId, progress: Progress) {
        match progress {
            Progress::Run(RunEvent::Step { pipeline, step }) => {
                if let Some(t) = self.task_mut(id) {
                    t.current = Some(pipeline);
                    t.step = Some(step);
                }
            }
            Progress::Run(RunEvent::Message { pipeline, text }) => self.log(Level::Warn, format!("{pipeline}: {text}")),
            // A pipeline's end is forwarded as PipelineDone (tasks::forward_run_events).
            Progress::Run(RunEvent::Finished { .. }) => {}
            Progress::PipelineDone { pipeline, result } => {
                if let Some(t) = self.task_mut(id) {
                    t.done += 1;
                    t.step = None;
                }
                self.record_run(pipeline, result);
            }
        }
    }

    pub(crate) fn finished(&mut self, id: TaskId, result: Finished) {
        match result {
            Finished::Status(r) => self.status_loaded(id, r),
            Finished::Tracker(r) => {
                if let Err(e) = &r {
                    self.log(Level::Error, format!("tracker: {e}"));
                }
                self.tracker.data.land(id, r);
            }
            Finished::Preview { pipeline, result } => self.preview_loaded(id, pipeline, result),
            Finished::LinkPage { pipeline, result } => self.link_loaded(id, pipeline, result),
            Finished::ResetPlan { pipeline, result } => self.dry_run_loaded(id, pipeline, result, Popup::reset_form),
            Finished::Reset { pipeline, result } => {
                match result {
                    Ok(()) => self.log(Level::Ok, format!("reset {pipeline}: done (recorded in the audit trail)")),
                    Err(e) => self.log(Level::Error, format!("reset {pipeline} failed: {e}")),
                }
                self.after_write(&pipeline);
            }
            Finished::MaintainPlan { pipeline, result } => match result {
                Ok(plan) => self.propose(WriteOp::Maintain { pipeline, plan }, None),
                Err(e) => self.log(Level::Error, format!("maintenance dry run of {pipeline} failed: {e}")),
            },
            Finished::Maintained { pipeline, result } => {
                match result {
                    Ok(done) => {
                        for t in &done {
                            self.log(Level::Ok, crate::describe::table_upkeep(t).replace('\n', " "));
                        }
                    }
                    Err(e) => self.log(Level::Error, format!("maintain {pipeline} failed: {e}")),
                }
                self.after_write(&pipeline);
            }
            Finished::Paused { pipeline, paused, result } => {
                use crate::ops::pause::Paused;
                let verb = if paused { "paused" } else { "resumed" };
                match result {
                    Ok(Paused::Changed { run_in_progress: true }) if paused => self.log(
                        Level::Ok,
                        format!("{pipeline}: paused (in the audit trail); the run under way finishes, the next is refused"),
                    ),
                    Ok(Paused::Changed { .. }) => self.log(Level::Ok, format!("{pipeline}: {verb} (recorded in the audit trail)")),
                    Ok(Paused::Already { .. }) => self.log(Level::Info, format!("{pipeline}: already {verb}; nothing written")),
                    Err(e) => self.log(Level::Error, format!("{} {pipeline} failed: {e}", if paused { "pause" } else { "resume" })),
                }
                self.after_write(&pipeline);
            }
            Finished::ReplayPlan { pipeline, result } => self.dry_run_loaded(id, pipeline, result, Popup::replay_form),
            Finished::PendingRows { pipeline, counts } => {
                if self.pending_rows.counts.loading == Some(id) && self.pending_rows.pipeline == pipeline {
                    self.pending_rows.counts.land(id, counts);
                    // Versions may have moved while counting.
                    self.count_pending_rows();
                }
            }
            Finished::Replay { pipeline, result } => {
                match result {
                    Ok(r) => self.log(
                        Level::Ok,
                        format!("replay {pipeline}: {} keys written into {} (recorded in the audit trail)", r.distinct_keys, r.target),
                    ),
                    Err(e) => self.log(Level::Error, format!("replay {pipeline} failed: {e}")),
                }
                self.after_write(&pipeline);
            }
            Finished::Run { pipeline, result } => self.record_run(pipeline, result),
            Finished::RunAll => self.log(Level::Info, "run all: finished"),
            Finished::Theme(Ok(theme)) => {
                self.flash(Level::Ok, format!("theme {}", theme.name));
                self.theme = theme;
            }
            Finished::Theme(Err(e)) => self.flash(Level::Error, e),
        }
    }

    pub(crate) fn status_loaded(&mut self, id: TaskId, result: Result<Status, String>) {
        match result {
            Ok(status) => {
                self.status.land(id, status);
                self.last_refresh = Some(self.now());
                self.count_pending_rows();
                if self.status_error.take().is_some() {
                    self.log(Level::Ok, "status: refreshing works again");
                }
                if std::mem::take(&mut self.status_again) {
                    self.request_status();
                }
            }
            // A failing refresh repeats every 2 s: log it once, not every time.
            Err(e) if self.status_error.as_deref() == Some(e.as_str()) => self.status.forget(id),
            Err(e) => {
                self.status.forget(id);
                self.log(Level::Error, format!("status refresh failed: {e}"));
                self.status_error = Some(e);
            }
        }
    }


    pub(crate) fn preview_loaded(&mut self, id: TaskId, pipeline: String, result: Result<Preview, String>) {
        // Results are taken when they are for what the view shows now.
        if self.preview.pipeline != pipeline || !self.preview.data.wants(id) {
            return;
        }
        if let Err(e) = &result {
            self.log(Level::Error, format!("preview of {pipeline}: {e}"));
        }
        self.preview.data.land(id, result);
    }

    pub(crate) fn link_loaded(&mut self, id: TaskId, pipeline: String, result: Result<LinkPage, String>) {
        if self.link.pipeline != pipeline || !self.link.page.wants(id) {
            return;
        }
        if let Err(e) = &result {
            self.log(Level::Error, format!("link table of {pipeline}: {e}"));
        }
        self.link.page.land(id, result);
    }

    /// A dry run landed: it fills the open form when it is that pipeline's and the one the form
    /// waits for.
    pub(crate) fn dry_run_loaded<F: DryRunForm>(
        &mut self,
        id: TaskId,
        pipeline: String,
        result: Result<F::Plan, String>,
        pick: fn(&mut Popup) -> Option<&mut F>,
    ) {
        if let Err(e) = &result {
            self.log(Level::Error, format!("dry run of {} {pipeline}: {e}", F::VERB));
        }
        if let Some(form) = self.popup.as_mut().and_then(pick) {
            if form.pipeline() == pipeline {
                form.plan_mut().land(id, result);
            }
        }
    }

    pub(crate) fn record_run(&mut self, pipeline: String, result: Result<RunReport, String>) {
        match &result {
            Ok(r) => {
                let level = if r.outcome == crate::engine::Outcome::NothingNew { Level::Info } else { Level::Ok };
                self.log(level, format!("run {pipeline}: {}", crate::describe::run_summary(r)));
            }
            Err(e) => self.log(Level::Error, format!("run {pipeline} failed: {e}")),
        }
        let at = self.now();
        self.last_runs.insert(pipeline.clone(), LastRun { at, result });
        self.after_write(&pipeline);
    }

    /// A write changed the lake: what was read before is stale.
    pub(crate) fn after_write(&mut self, pipeline: &str) {
        if self.status.is_loading() {
            self.status_again = true;
        } else {
            self.request_status();
        }
        self.tracker.stale = true;
        if self.view == View::Tracker {
            self.ensure_tracker();
        }
        if self.preview.pipeline == pipeline {
            self.preview.data.clear();
            if self.view == View::Preview {
                self.load_preview();
            }
        }
        if self.link.pipeline == pipeline {
            if self.view == View::Link {
                self.load_link();
            } else {
                self.link.page.clear();
            }
        }
    }

    pub(crate) fn tick(&mut self) {
        self.ticks += 1;
        if self.flash.as_ref().is_some_and(|f| self.ticks >= f.until_tick) {
            self.flash = None;
            self.dirty = true;
        }
        if !self.foreground_tasks().is_empty() {
            self.dirty = true; // the spinner moves
        }
        if self.ticks.saturating_sub(self.last_status_tick) >= REFRESH_TICKS {
            self.request_status();
            if self.view == View::Tracker {
                self.load_tracker();
            }
        }
    }

    // ---------------------------------------------------------------- messages

    pub fn flash(&mut self, level: Level, text: impl Into<String>) {
        self.flash = Some(Flash { level, text: text.into(), until_tick: self.ticks + FLASH_TICKS });
    }

    /// Add to Activity; errors are also flashed, since the operator may be on another view.
    pub fn log(&mut self, level: Level, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(target: "deltalink::console", ?level, "{text}");
        if level == Level::Error {
            self.flash(level, text::first_line(&text).to_string());
        }
        self.activity.push(Entry { at: self.now(), level, text });
        if self.activity.len() > ACTIVITY_KEEP {
            self.activity.remove(0);
        }
    }
}
