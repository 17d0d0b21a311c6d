//! What the operator's commands do to the state: moving, opening, sorting, filtering, the
//! forms and confirmations that lead to a write.

use crate::console::keys::Context;
use crate::console::msg::{Command, Job, PendingRange, Request, View, WriteOp};
use crate::console::state::form::{DryRunForm, Form, ResetForm};
use crate::console::state::slot::Slot;
use crate::console::state::replay::ReplayForm;
use crate::store::link::LinkSort;

use super::app::{App, Confirm, InputKind, InputLine, LINK_PAGE_SIZE, Level, PAGE_STEP, PendingRows, Popup};

impl App {

    // ---------------------------------------------------------------- commands

    pub(crate) fn command(&mut self, c: Command) {
        if c == Command::ForceQuit {
            self.should_quit = true;
            return;
        }
        match self.context() {
            Context::Help | Context::Detail => self.popup_command(c),
            Context::Confirm | Context::TypedConfirm => self.confirm_command(c),
            Context::ResetForm | Context::ReplayForm => self.form_command(c),
            Context::Input => self.input_command(c),
            Context::View(_) => self.view_command(c),
        }
    }

    pub(crate) fn view_command(&mut self, c: Command) {
        match c {
            Command::Quit => {
                if !self.back_out() {
                    self.should_quit = true;
                }
            }
            Command::Back => {
                self.back_out();
            }
            Command::NextView => self.show(self.view.next()),
            Command::PrevView => self.show(self.view.prev()),
            Command::Show(v) => self.show(v),
            Command::Up => self.move_by(-1),
            Command::Down => self.move_by(1),
            Command::PageUp => self.move_by(-PAGE_STEP),
            Command::PageDown => self.move_by(PAGE_STEP),
            Command::Top => self.select_row(0),
            Command::Bottom => self.select_row(usize::MAX),
            Command::Open => self.open(),
            Command::Help => self.popup = Some(Popup::Help { scroll: 0 }),
            Command::Filter => {
                let text = self.filter(self.view).to_string();
                self.input = Some(InputLine { kind: InputKind::Filter, text });
            }
            Command::Palette => self.input = Some(InputLine { kind: InputKind::Palette, text: String::new() }),
            Command::Refresh => self.refresh(),
            Command::Cancel => self.cancel_newest(),
            Command::Sort => self.sort(),
            Command::PrevPipeline => self.cycle_pipeline(-1),
            Command::NextPipeline => self.cycle_pipeline(1),
            Command::NextPage => self.turn_page(1),
            Command::PrevPage => self.turn_page(-1),
            Command::RunSelected => self.run_focused(),
            Command::RunAll => self.run_all(),
            Command::Reset => self.reset_selected(),
            Command::Replay => self.replay_focused(),
            Command::Maintain => self.maintain_focused(),
            Command::Pause => self.pause_focused(),
            _ => {}
        }
    }

    /// Close the innermost thing open in a view; false when there was nothing.
    pub(crate) fn back_out(&mut self) -> bool {
        if self.view == View::Pipelines && self.detail_open {
            self.detail_open = false;
            return true;
        }
        if !self.filter(self.view).is_empty() {
            self.set_filter(String::new());
            if self.view == View::Link {
                self.apply_link_filter();
            }
            return true;
        }
        false
    }

    pub(crate) fn show(&mut self, view: View) {
        self.view = view;
        match view {
            View::Link => self.ensure_link(),
            View::Preview => self.ensure_preview(),
            View::Tracker => self.ensure_tracker(),
            View::Pipelines => self.count_pending_rows(),
            View::Upstreams | View::Activity => {}
        }
    }

    pub(crate) fn move_by(&mut self, d: isize) {
        let cur = self.selected(self.view) as isize;
        self.select_row((cur + d).max(0) as usize);
    }

    pub(crate) fn select_row(&mut self, row: usize) {
        let n = self.row_count(self.view);
        self.selected[self.view.index()] = row.min(n.saturating_sub(1));
        if self.view == View::Pipelines {
            let sel = self.selected(View::Pipelines);
            if let Some(p) = self.pipeline_rows().get(sel) {
                self.pipeline = Some(p.name.clone());
            }
            self.count_pending_rows();
        }
    }

    /// While the Pipelines detail pane is open: count the selected pipeline's pending change
    /// rows, unless they are counted (or being counted) for these very versions.
    pub(crate) fn count_pending_rows(&mut self) {
        if !(self.view == View::Pipelines && self.detail_open) {
            return;
        }
        let Some(p) = self.pipeline_rows().get(self.selected(View::Pipelines)).map(|p| p.name.clone()) else { return };
        let ranges: Vec<PendingRange> = self
            .pipeline_status(&p)
            .map(|s| s.upstreams.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|u| u.pending_versions().map(|(from, to)| PendingRange { upstream: u.upstream.clone(), from, to }))
            .collect();
        let current = &self.pending_rows;
        if current.pipeline == p && (current.ranges == ranges || current.counts.is_loading()) {
            return;
        }
        self.pending_rows = PendingRows { pipeline: p.clone(), ranges: ranges.clone(), counts: Slot::default() };
        if ranges.is_empty() {
            self.pending_rows.counts.value = Some(Vec::new());
            return;
        }
        let label = format!("pending change rows of {p}");
        let id = self.spawn(Job::PendingRows { pipeline: p, ranges }, label);
        self.pending_rows.counts.start(id);
    }

    pub(crate) fn open(&mut self) {
        let detail = match self.view {
            View::Pipelines => {
                self.detail_open = !self.detail_open;
                self.count_pending_rows();
                return;
            }
            View::Upstreams => self.upstream_detail(),
            View::Link => self.link_detail(),
            View::Tracker => self.tracker_detail(),
            View::Activity => self.activity_detail(),
            View::Preview => None,
        };
        if let Some((title, lines)) = detail {
            self.popup = Some(Popup::Detail { title, lines, scroll: 0 });
        }
    }

    pub(crate) fn refresh(&mut self) {
        self.request_status();
        match self.view {
            View::Tracker => self.load_tracker(),
            View::Link => self.load_link(),
            View::Preview => self.load_preview(),
            View::Upstreams | View::Pipelines | View::Activity => {}
        }
    }

    pub(crate) fn sort(&mut self) {
        match self.view {
            View::Upstreams => self.upstream_sort = self.upstream_sort.next(),
            View::Link => {
                self.link.query.sort = match self.link.query.sort {
                    LinkSort::RunIdDesc => LinkSort::ChangeTimeDesc,
                    LinkSort::ChangeTimeDesc => LinkSort::Key,
                    LinkSort::Key => LinkSort::RunIdDesc,
                };
                self.link.query.offset = 0;
                self.load_link();
            }
            _ => {}
        }
    }

    pub(crate) fn cycle_pipeline(&mut self, d: isize) {
        let names: Vec<&String> = self.config.pipelines.keys().collect();
        if names.is_empty() {
            return;
        }
        let cur = self.pipeline.as_ref().and_then(|p| names.iter().position(|n| *n == p)).unwrap_or(0) as isize;
        let next = names[(cur + d).rem_euclid(names.len() as isize) as usize].clone();
        if let Some(row) = self.pipeline_rows().iter().position(|p| p.name == next) {
            self.selected[View::Pipelines.index()] = row;
        }
        self.pipeline = Some(next);
        self.link.query.offset = 0;
        match self.view {
            View::Link => self.load_link(),
            View::Preview => self.load_preview(),
            _ => {}
        }
    }

    pub(crate) fn turn_page(&mut self, d: isize) {
        let total = match &self.link.page.value {
            Some(Ok(p)) => p.total_matching as usize,
            _ => return,
        };
        let offset = self.link.query.offset as isize + d * LINK_PAGE_SIZE as isize;
        if offset < 0 || offset as usize >= total {
            self.flash(Level::Info, if d < 0 { "first page" } else { "last page" });
            return;
        }
        self.link.query.offset = offset as usize;
        self.selected[View::Link.index()] = 0;
        self.load_link();
    }

    pub(crate) fn cancel_newest(&mut self) {
        let Some(task) = self.tasks.iter().rev().find(|t| !t.is_background()) else {
            self.flash(Level::Info, "nothing to cancel");
            return;
        };
        let (id, label) = (task.id, task.label.clone());
        self.outbox.push(Request::Cancel(id));
        self.flash(Level::Info, format!("cancelling {label}…"));
    }

    // ---------------------------------------------------------------- writes

    /// Writes are refused with a flash when the console is read-only.
    pub(crate) fn refuse_read_only(&mut self, what: &str) -> bool {
        if self.read_only {
            self.flash(Level::Warn, format!("read-only: {what} is disabled (started with --read-only)"));
        }
        self.read_only
    }

    /// The pipeline `r` runs in the current view.
    pub fn focused_pipeline(&self) -> Option<String> {
        match self.view {
            View::Pipelines => self.pipeline_rows().get(self.selected(View::Pipelines)).map(|p| p.name.clone()),
            View::Tracker => self.tracker_rows().get(self.selected(View::Tracker)).map(|r| r.pipeline_name.clone()),
            View::Link | View::Preview => self.pipeline.clone(),
            View::Upstreams | View::Activity => None,
        }
    }

    pub(crate) fn run_focused(&mut self) {
        if self.refuse_read_only("running a pipeline") {
            return;
        }
        match self.focused_pipeline() {
            Some(p) => self.propose(WriteOp::Run(p), None),
            None => self.flash(Level::Warn, "no pipeline selected"),
        }
    }

    pub(crate) fn run_all(&mut self) {
        if !self.refuse_read_only("running all pipelines") {
            self.propose(WriteOp::RunAll, None);
        }
    }

    pub(crate) fn reset_selected(&mut self) {
        if self.refuse_read_only("resetting the tracker") {
            return;
        }
        let row = self
            .tracker_rows()
            .get(self.selected(View::Tracker))
            .map(|r| (r.pipeline_name.clone(), r.upstream.clone()));
        match row {
            Some((p, u)) => self.open_reset_form(&p, Some(&u)),
            None => self.flash(Level::Warn, "select a tracker row first (or :reset PIPELINE)"),
        }
    }

    pub(crate) fn open_reset_form(&mut self, pipeline: &str, upstream: Option<&str>) {
        let Some(p) = self.config.pipelines.get(pipeline) else {
            self.flash(Level::Error, format!("unknown pipeline `{pipeline}`"));
            return;
        };
        if !p.reset_allowed {
            self.flash(Level::Error, format!("pipeline `{pipeline}` does not allow resets (reset_allowed = false)"));
            return;
        }
        self.popup = Some(Popup::ResetForm(ResetForm::new(pipeline, p.upstream_names(), upstream)));
    }

    pub(crate) fn replay_focused(&mut self) {
        if self.refuse_read_only("replaying a pipeline") {
            return;
        }
        let upstream = match self.view {
            View::Tracker => self.tracker_rows().get(self.selected(View::Tracker)).map(|r| r.upstream.clone()),
            _ => None,
        };
        match self.focused_pipeline() {
            Some(p) => self.open_replay_form(&p, upstream.as_deref()),
            None => self.flash(Level::Warn, "no pipeline selected (or :replay PIPELINE)"),
        }
    }

    pub(crate) fn open_replay_form(&mut self, pipeline: &str, upstream: Option<&str>) {
        let Some(p) = self.config.pipelines.get(pipeline) else {
            self.flash(Level::Error, format!("unknown pipeline `{pipeline}`"));
            return;
        };
        let form = ReplayForm::new(pipeline, p.upstream_names(), upstream);
        if !p.reset_allowed {
            // A scratch table stays possible: say so up front instead of failing at the end.
            self.flash(Level::Warn, format!("`{pipeline}` has reset_allowed = false: replay into a scratch table (Into)"));
        }
        self.popup = Some(Popup::ReplayForm(form));
    }

    /// `m`: dry-run the focused pipeline's link-table upkeep; its answer becomes the confirmation.
    pub(crate) fn maintain_focused(&mut self) {
        if self.refuse_read_only("maintaining a link table") {
            return;
        }
        match self.focused_pipeline() {
            Some(pipeline) => {
                self.flash(Level::Info, format!("maintenance dry run of {pipeline}…"));
                self.spawn(Job::PlanMaintain { pipeline: pipeline.clone() }, format!("plan maintain {pipeline}"));
            }
            None => self.flash(Level::Warn, "no pipeline selected"),
        }
    }

    /// `z`: pause the focused pipeline, or resume it when the last status showed an operator's
    /// pause (the engine re-checks: pausing a paused pipeline writes nothing).
    pub(crate) fn pause_focused(&mut self) {
        if self.refuse_read_only("pausing a pipeline") {
            return;
        }
        let Some(pipeline) = self.focused_pipeline() else { return self.flash(Level::Warn, "no pipeline selected") };
        let pause = self.operator_pause(&pipeline).is_none();
        self.propose_pause(&pipeline, pause, None);
    }

    /// Ask to pause (`pause`) or resume `pipeline`; `reason` defaults to where it came from.
    pub(crate) fn propose_pause(&mut self, pipeline: &str, pause: bool, reason: Option<String>) {
        let reason = reason.unwrap_or_else(|| if pause { "paused from the console" } else { "resumed from the console" }.to_string());
        self.propose(WriteOp::Pause { pipeline: pipeline.to_string(), paused: pause, reason }, None);
    }

    /// The operator's pause of `pipeline` the last status showed.
    pub fn operator_pause(&self, pipeline: &str) -> Option<&crate::store::pause::Pause> {
        self.status.value.as_ref()?.pipelines.iter().find(|p| p.name == pipeline)?.pause.as_ref()
    }

    /// Every write goes through here: it becomes a confirmation popup, never a task.
    pub(crate) fn propose(&mut self, op: WriteOp, form: Option<Popup>) {
        let typed = op.typed_confirmation().map(|_| String::new());
        self.input = None;
        self.popup = Some(Popup::Confirm(Confirm { op, typed, form: form.map(Box::new) }));
    }

    pub(crate) fn confirm_command(&mut self, c: Command) {
        let Some(Popup::Confirm(mut confirm)) = self.popup.take() else { return };
        match c {
            Command::Confirm if confirm.typed.is_none() => self.start_write(confirm.op),
            Command::Submit => match (&confirm.typed, confirm.op.typed_confirmation()) {
                (Some(typed), Some(want)) if *typed == want => self.start_write(confirm.op),
                (_, want) => {
                    self.flash(Level::Warn, format!("type `{}` exactly to confirm", want.unwrap_or_default()));
                    self.popup = Some(Popup::Confirm(confirm));
                }
            },
            Command::Back => {
                self.flash(Level::Info, format!("not done: {}", confirm.op.describe()));
                self.popup = confirm.form.map(|f| *f);
            }
            Command::DeleteBack | Command::ClearInput => {
                if let Some(t) = confirm.typed.as_mut() {
                    edit_text(t, c);
                }
                self.popup = Some(Popup::Confirm(confirm));
            }
            _ => self.popup = Some(Popup::Confirm(confirm)),
        }
    }

    /// The only place a [`Job::Write`] is created: after a confirmation was accepted.
    pub(crate) fn start_write(&mut self, op: WriteOp) {
        if self.refuse_read_only("writing") {
            return;
        }
        let label = op.describe();
        let total = match op {
            WriteOp::RunAll => self.config.pipelines.values().filter(|p| !p.paused && self.operator_pause(&p.name).is_none()).count(),
            WriteOp::Run(_) | WriteOp::Reset { .. } | WriteOp::Replay { .. } | WriteOp::Maintain { .. } | WriteOp::Pause { .. } => 1,
        };
        self.log(Level::Info, format!("started: {label}"));
        let id = self.spawn(Job::Write(op), label);
        if let Some(t) = self.task_mut(id) {
            t.total = total;
        }
    }

    // ---------------------------------------------------------------- reset form

    /// Keys in the reset or replay form: Enter submits it, Esc closes it, the rest edits it.
    pub(crate) fn form_command(&mut self, c: Command) {
        match (c, &self.popup) {
            (Command::Submit, Some(Popup::ResetForm(_))) => return self.submit_dry_run_form(Popup::reset_form),
            (Command::Submit, Some(Popup::ReplayForm(_))) => return self.submit_dry_run_form(Popup::replay_form),
            (Command::Back, _) => return self.popup = None,
            _ => {}
        }
        let form: &mut dyn Form = match self.popup.as_mut() {
            Some(Popup::ResetForm(f)) => f,
            Some(Popup::ReplayForm(f)) => f,
            _ => return,
        };
        match c {
            Command::NextField => form.move_focus(1),
            Command::PrevField => form.move_focus(-1),
            Command::PrevOption => form.cycle(-1),
            Command::NextOption => form.cycle(1),
            Command::DeleteBack | Command::ClearInput => form.edit(&mut |t| edit_text(t, c)),
            _ => {}
        }
    }

    /// Enter on a dry-run form (reset or replay): dry-run the inputs; once a dry run of exactly
    /// them is shown and a reason typed, propose the write it describes.
    pub(crate) fn submit_dry_run_form<F: DryRunForm>(&mut self, pick: fn(&mut Popup) -> Option<&mut F>) {
        // A relative scratch path resolves like the config's own paths.
        let base = self.config.path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let Some(form) = self.popup.as_mut().and_then(pick) else { return };
        if form.plan().is_loading() {
            self.flash(Level::Info, "dry run in progress…");
            return;
        }
        if let Some(plan) = form.plan().ok().cloned() {
            if !form.has_reason() {
                form.focus_reason();
                self.flash(Level::Warn, "enter a reason: it is recorded in the audit trail");
                return;
            }
            match form.write_op(plan, &base) {
                Ok(op) => {
                    let back = self.popup.take();
                    self.propose(op, back);
                }
                Err(e) => form.plan_mut().value = Some(Err(e)),
            }
            return;
        }
        match form.dry_run_job(&base) {
            Ok(job) => {
                let label = format!("dry run of {} {}", F::VERB, form.pipeline());
                let id = self.spawn(job, label);
                if let Some(form) = self.popup.as_mut().and_then(pick) {
                    form.plan_mut().start(id);
                }
            }
            Err(e) => form.plan_mut().value = Some(Err(e)),
        }
    }

    // ---------------------------------------------------------------- popups, input line

    pub(crate) fn popup_command(&mut self, c: Command) {
        match (c, self.popup.as_mut()) {
            (Command::Back, _) => self.popup = None,
            (Command::Up, Some(Popup::Help { scroll } | Popup::Detail { scroll, .. })) => {
                *scroll = scroll.saturating_sub(1)
            }
            (Command::Down, Some(Popup::Help { scroll } | Popup::Detail { scroll, .. })) => {
                *scroll = scroll.saturating_add(1)
            }
            _ => {}
        }
    }

    pub(crate) fn input_command(&mut self, c: Command) {
        let Some(mut line) = self.input.take() else { return };
        match (c, line.kind) {
            (Command::Submit, InputKind::Filter) => {
                if self.view == View::Link {
                    self.apply_link_filter();
                }
            }
            (Command::Submit, InputKind::Palette) => self.palette(&line.text),
            (Command::Back, InputKind::Filter) => {
                self.set_filter(String::new());
                if self.view == View::Link && self.link.query.filter.is_some() {
                    self.apply_link_filter();
                }
            }
            (Command::Back, InputKind::Palette) => {}
            (Command::DeleteBack | Command::ClearInput, kind) => {
                edit_text(&mut line.text, c);
                if kind == InputKind::Filter {
                    self.set_filter(line.text.clone());
                }
                self.input = Some(line);
            }
            _ => self.input = Some(line),
        }
    }

    pub(crate) fn insert(&mut self, ch: char) {
        match (&mut self.input, &mut self.popup) {
            (Some(line), None) => {
                line.text.push(ch);
                if line.kind == InputKind::Filter {
                    let text = line.text.clone();
                    self.set_filter(text);
                }
            }
            (_, Some(Popup::Confirm(Confirm { typed: Some(t), .. }))) => t.push(ch),
            (_, Some(Popup::ResetForm(form))) => form.edit(&mut |t| t.push(ch)),
            (_, Some(Popup::ReplayForm(form))) => form.edit(&mut |t| t.push(ch)),
            _ => {}
        }
    }

    /// Local views filter as you type; the link table is filtered by the engine on Enter.
    pub(crate) fn set_filter(&mut self, text: String) {
        self.filters[self.view.index()] = text;
        if self.view != View::Link {
            self.selected[self.view.index()] = 0;
        }
    }

    pub(crate) fn apply_link_filter(&mut self) {
        let f = self.filter(View::Link).trim().to_string();
        self.link.query.filter = (!f.is_empty()).then_some(f);
        self.link.query.offset = 0;
        self.selected[View::Link.index()] = 0;
        self.load_link();
    }

    /// `:` commands.
    pub(crate) fn palette(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else { return };
        let arg = words.next();
        match (cmd, arg) {
            ("q" | "quit", _) => self.should_quit = true,
            ("run", Some(p)) => {
                if !self.refuse_read_only("running a pipeline") && self.known_pipeline(p) {
                    self.propose(WriteOp::Run(p.to_string()), None);
                }
            }
            ("run-all", _) => self.run_all(),
            ("preview", p) => self.goto_pipeline(View::Preview, p),
            ("link", p) => self.goto_pipeline(View::Link, p),
            ("reset", Some(p)) => {
                if !self.refuse_read_only("resetting the tracker") && self.known_pipeline(p) {
                    self.show(View::Tracker);
                    self.open_reset_form(p, words.next());
                }
            }
            ("replay", Some(p)) => {
                if !self.refuse_read_only("replaying a pipeline") && self.known_pipeline(p) {
                    self.open_replay_form(p, words.next());
                }
            }
            (verb @ ("pause" | "resume"), Some(p)) => {
                if !self.refuse_read_only("pausing a pipeline") && self.known_pipeline(p) {
                    let reason: Vec<&str> = words.collect();
                    self.propose_pause(p, verb == "pause", (!reason.is_empty()).then(|| reason.join(" ")));
                }
            }
            ("theme", Some(t)) => {
                self.spawn(Job::Theme(t.to_string()), format!("theme {t}"));
            }
            ("refresh", _) => self.refresh(),
            ("help", _) => self.popup = Some(Popup::Help { scroll: 0 }),
            _ => self.flash(
                Level::Error,
                format!("unknown command `{line}`: try :run NAME, :run-all, :preview NAME, :link NAME, :reset NAME, :replay NAME, :pause NAME [REASON], :resume NAME, :theme NAME, :q"),
            ),
        }
    }

    pub(crate) fn known_pipeline(&mut self, name: &str) -> bool {
        let known = self.config.pipelines.contains_key(name);
        if !known {
            let names: Vec<&str> = self.config.pipelines.keys().map(String::as_str).collect();
            self.flash(Level::Error, format!("unknown pipeline `{name}`; configured: {}", names.join(", ")));
        }
        known
    }

    pub(crate) fn goto_pipeline(&mut self, view: View, name: Option<&str>) {
        if let Some(n) = name {
            if !self.known_pipeline(n) {
                return;
            }
            self.pipeline = Some(n.to_string());
            self.link.query.offset = 0;
        }
        self.view = view;
        match view {
            View::Link => self.load_link(),
            _ => self.load_preview(),
        }
    }

    /// Mouse: a click on a tab switches views (not under a popup).
    pub(crate) fn click_tab(&mut self, view: View) {
        if self.popup.is_none() {
            self.show(view);
        }
    }
}

/// Backspace / Ctrl-u on a text field.
pub(crate) fn edit_text(t: &mut String, c: Command) {
    match c {
        Command::DeleteBack => {
            t.pop();
        }
        Command::ClearInput => t.clear(),
        _ => {}
    }
}
