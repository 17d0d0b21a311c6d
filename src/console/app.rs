//! The console's state and its one entry point, [`App::update`]. No I/O happens here: engine
//! work is asked for through the outbox ([`App::drain_requests`]) and comes back as actions.
//! Time comes from a [`Clock`] and animation from tick counts, so tests render exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};

use crate::config::{Config, Pipeline};
use crate::keymap::PreviewRow;
use crate::link::{LinkPage, LinkQuery, LinkSort};
use crate::runner::{Preview, RunEvent, RunReport, Step};
use crate::status::{PipelineStatus, PipelineUpstreamStatus, Status, UpstreamStatus};
use crate::tracker::{HistoryEntry, TrackerRow};

use super::action::{Action, Command, Edit, View, WriteOp};
use super::details;
use super::form::{Form, ResetForm};
use super::replay::ReplayForm;
use super::keys::Context;
use super::tasks::{Finished, Job, PendingRange, Progress, Request, TaskEvent, TaskId, TrackerData};
use super::text;
use super::theme::Theme;
use super::ui;

/// How often the loop sends [`Action::Tick`].
pub const TICK: Duration = Duration::from_millis(100);
/// Status is refreshed every this many ticks (~2 s).
const REFRESH_TICKS: u64 = 20;
/// A flash message stays this many ticks (~5 s).
const FLASH_TICKS: u64 = 50;
/// Rows per link-table page.
pub const LINK_PAGE_SIZE: usize = 100;
/// Rows moved by PgUp/PgDn.
const PAGE_STEP: isize = 10;
/// Activity entries kept.
const ACTIVITY_KEEP: usize = 500;

/// Where "now" comes from: the system, or a fixed instant for reproducible tests.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    System,
    Fixed(DateTime<Local>),
}

impl Clock {
    pub fn now(&self) -> DateTime<Local> {
        match self {
            Clock::System => Local::now(),
            Clock::Fixed(t) => *t,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Ok,
    Warn,
    Error,
}

/// One line of the Activity view.
#[derive(Clone, Debug)]
pub struct Entry {
    pub at: DateTime<Local>,
    pub level: Level,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct Flash {
    pub level: Level,
    pub text: String,
    until_tick: u64,
}

/// What a task is: decides the spinner, cancelling, and where its result goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    Status,
    Tracker,
    Preview,
    LinkPage,
    PlanReset,
    PlanReplay,
    PendingRows,
    Write,
    Theme,
}

/// A task in flight.
#[derive(Clone, Debug)]
pub struct InFlight {
    pub id: TaskId,
    pub kind: TaskKind,
    pub label: String,
    pub started: DateTime<Local>,
    /// The pipeline a write is working on, and its last step.
    pub current: Option<String>,
    pub step: Option<Step>,
    /// Pipelines finished of `total` (run-all).
    pub done: usize,
    pub total: usize,
}

impl InFlight {
    /// Periodic refreshes: not worth a spinner and not cancelled by `c`.
    pub fn is_background(&self) -> bool {
        matches!(self.kind, TaskKind::Status | TaskKind::Tracker)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamSort {
    Name,
    Lag,
    Latest,
    LastCommit,
}

impl UpstreamSort {
    pub fn label(self) -> &'static str {
        match self {
            UpstreamSort::Name => "name",
            UpstreamSort::Lag => "lag ↓",
            UpstreamSort::Latest => "latest version ↓",
            UpstreamSort::LastCommit => "last commit ↓",
        }
    }

    fn next(self) -> UpstreamSort {
        match self {
            UpstreamSort::Name => UpstreamSort::Lag,
            UpstreamSort::Lag => UpstreamSort::Latest,
            UpstreamSort::Latest => UpstreamSort::LastCommit,
            UpstreamSort::LastCommit => UpstreamSort::Name,
        }
    }
}

/// The result of the last run of a pipeline started from this console.
#[derive(Clone, Debug)]
pub struct LastRun {
    pub at: DateTime<Local>,
    pub result: Result<RunReport, String>,
}

#[derive(Clone, Debug, Default)]
pub struct LinkState {
    pub pipeline: String,
    pub query: LinkQuery,
    pub page: Option<Result<LinkPage, String>>,
    pub loading: Option<TaskId>,
}

#[derive(Clone, Debug, Default)]
pub struct PreviewState {
    pub pipeline: String,
    pub data: Option<Result<Preview, String>>,
    pub loading: Option<TaskId>,
}

/// Change rows pending per upstream of the pipeline in the Pipelines detail pane, counted in
/// the background for exactly `ranges` (recounted when the versions move).
#[derive(Clone, Debug, Default)]
pub struct PendingRows {
    pub pipeline: String,
    pub ranges: Vec<PendingRange>,
    pub counts: Option<Vec<(String, Result<u64, String>)>>,
    pub loading: Option<TaskId>,
}

impl PendingRows {
    /// The count for `upstream`: `None` while counting (or nothing pending to count).
    pub fn count(&self, upstream: &str) -> Option<&Result<u64, String>> {
        self.counts.as_ref()?.iter().find(|(u, _)| u == upstream).map(|(_, c)| c)
    }
}

#[derive(Clone, Debug, Default)]
pub struct TrackerState {
    pub data: Option<Result<TrackerData, String>>,
    pub loading: Option<TaskId>,
    /// A write happened since the data was read.
    stale: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Filter,
    Palette,
}

/// The bottom input line (`/` filter or `:` palette).
#[derive(Clone, Debug)]
pub struct InputLine {
    pub kind: InputKind,
    pub text: String,
}

/// A proposed write waiting for the operator.
#[derive(Clone, Debug)]
pub struct Confirm {
    pub op: WriteOp,
    /// What has been typed, when the write needs the pipeline name typed (else y/n).
    pub typed: Option<String>,
    /// The form to return to when the write is declined.
    pub form: Option<Box<Popup>>,
}

#[derive(Clone, Debug)]
pub enum Popup {
    Help { scroll: u16 },
    Detail { title: String, lines: Vec<String>, scroll: u16 },
    Confirm(Confirm),
    ResetForm(ResetForm),
    ReplayForm(ReplayForm),
}

/// A row of the Upstreams view: the upstream and the pipelines reading it.
pub struct UpstreamRow<'a> {
    pub name: &'a str,
    pub status: Option<&'a UpstreamStatus>,
    pub readers: Vec<(&'a str, &'a PipelineUpstreamStatus)>,
}

impl UpstreamRow<'_> {
    pub fn max_lag(&self) -> Option<u64> {
        self.readers.iter().filter_map(|(_, r)| r.lag_versions).max()
    }
}

pub struct App {
    pub config: Arc<Config>,
    pub read_only: bool,
    pub theme: Theme,
    pub mouse: bool,
    clock: Clock,
    pub view: View,
    /// Terminal size, for mouse hit-testing.
    pub size: (u16, u16),
    pub status: Option<Status>,
    pub status_error: Option<String>,
    pub last_refresh: Option<DateTime<Local>>,
    selected: [usize; 6],
    filters: [String; 6],
    pub upstream_sort: UpstreamSort,
    /// The pipeline the Link and Preview views show (follows the Pipelines selection).
    pub pipeline: Option<String>,
    pub detail_open: bool,
    pub last_runs: BTreeMap<String, LastRun>,
    pub link: LinkState,
    pub preview: PreviewState,
    pub pending_rows: PendingRows,
    pub tracker: TrackerState,
    activity: Vec<Entry>,
    pub tasks: Vec<InFlight>,
    pub popup: Option<Popup>,
    pub input: Option<InputLine>,
    pub flash: Option<Flash>,
    ticks: u64,
    next_task: u64,
    status_task: Option<TaskId>,
    /// A write finished while a refresh was in flight: refresh again when it lands.
    status_again: bool,
    last_status_tick: u64,
    outbox: Vec<Request>,
    pub should_quit: bool,
    dirty: bool,
}

impl App {
    /// A console over `config`; asks for the first status refresh right away.
    pub fn new(config: Arc<Config>, read_only: bool) -> App {
        let pipeline = config.pipelines.keys().next().cloned();
        let mut app = App {
            config,
            read_only,
            theme: Theme::default(),
            mouse: false,
            clock: Clock::System,
            view: View::Upstreams,
            size: (80, 24),
            status: None,
            status_error: None,
            last_refresh: None,
            selected: [0; 6],
            filters: Default::default(),
            upstream_sort: UpstreamSort::Name,
            pipeline,
            detail_open: false,
            last_runs: BTreeMap::new(),
            link: LinkState::default(),
            preview: PreviewState::default(),
            pending_rows: PendingRows::default(),
            tracker: TrackerState::default(),
            activity: Vec::new(),
            tasks: Vec::new(),
            popup: None,
            input: None,
            flash: None,
            ticks: 0,
            next_task: 0,
            status_task: None,
            status_again: false,
            last_status_tick: 0,
            outbox: Vec::new(),
            should_quit: false,
            dirty: true,
        };
        app.request_status();
        app
    }

    pub fn with_theme(mut self, theme: Theme) -> App {
        self.theme = theme;
        self
    }

    pub fn with_mouse(mut self, mouse: bool) -> App {
        self.mouse = mouse;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> App {
        self.clock = clock;
        self
    }

    pub fn now(&self) -> DateTime<Local> {
        self.clock.now()
    }

    /// Engine work asked for since the last call (the loop spawns it).
    pub fn drain_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.outbox)
    }

    /// Whether anything visible changed since the last [`App::mark_drawn`].
    pub fn needs_redraw(&self) -> bool {
        self.dirty
    }

    pub fn mark_drawn(&mut self) {
        self.dirty = false;
    }

    /// Which bindings table is active.
    pub fn context(&self) -> Context {
        match &self.popup {
            Some(Popup::Help { .. }) => Context::Help,
            Some(Popup::Detail { .. }) => Context::Detail,
            Some(Popup::Confirm(c)) if c.typed.is_some() => Context::TypedConfirm,
            Some(Popup::Confirm(_)) => Context::Confirm,
            Some(Popup::ResetForm(_)) => Context::ResetForm,
            Some(Popup::ReplayForm(_)) => Context::ReplayForm,
            None if self.input.is_some() => Context::Input,
            None => Context::View(self.view),
        }
    }

    /// The one way state changes.
    pub fn update(&mut self, action: Action) {
        if !matches!(action, Action::Tick) {
            self.dirty = true;
        }
        match action {
            Action::Command(c) => self.command(c),
            Action::Edit(Edit::Insert(ch)) => self.insert(ch),
            Action::Task(ev) => self.task_event(ev),
            Action::Tick => self.tick(),
            Action::Resize { width, height } => self.size = (width, height),
            Action::Click { column, row } => self.click(column, row),
        }
    }

    // ---------------------------------------------------------------- rows shown by views

    pub fn filter(&self, view: View) -> &str {
        &self.filters[view.index()]
    }

    fn matches(&self, view: View, text: &str) -> bool {
        let f = self.filter(view);
        f.is_empty() || text.to_lowercase().contains(&f.to_lowercase())
    }

    /// Upstreams (filtered, sorted) with their status and readers.
    pub fn upstream_rows(&self) -> Vec<UpstreamRow<'_>> {
        let mut rows: Vec<UpstreamRow<'_>> = self
            .config
            .upstreams
            .keys()
            .filter(|n| self.matches(View::Upstreams, n))
            .map(|name| UpstreamRow {
                name,
                status: self.status.as_ref().and_then(|s| s.upstream(name)),
                readers: self.readers(name),
            })
            .collect();
        match self.upstream_sort {
            UpstreamSort::Name => {}
            UpstreamSort::Lag => rows.sort_by_key(|r| std::cmp::Reverse(r.max_lag())),
            UpstreamSort::Latest => rows.sort_by_key(|r| std::cmp::Reverse(r.status.and_then(|s| s.latest_version))),
            UpstreamSort::LastCommit => {
                rows.sort_by_key(|r| std::cmp::Reverse(r.status.and_then(|s| s.last_commit_ms)))
            }
        }
        rows
    }

    fn readers(&self, upstream: &str) -> Vec<(&str, &PipelineUpstreamStatus)> {
        let Some(st) = &self.status else { return vec![] };
        st.pipelines
            .iter()
            .flat_map(|p| p.upstreams.iter().filter(|u| u.upstream == upstream).map(move |u| (p.name.as_str(), u)))
            .collect()
    }

    pub fn pipeline_rows(&self) -> Vec<&Pipeline> {
        self.config.pipelines.values().filter(|p| self.matches(View::Pipelines, &p.name)).collect()
    }

    pub fn pipeline_status(&self, name: &str) -> Option<&PipelineStatus> {
        self.status.as_ref().and_then(|s| s.pipelines.iter().find(|p| p.name == name))
    }

    pub fn link_rows(&self) -> &[Vec<String>] {
        match &self.link.page {
            Some(Ok(page)) => &page.rows,
            _ => &[],
        }
    }

    pub fn preview_rows(&self) -> Vec<&PreviewRow> {
        match &self.preview.data {
            Some(Ok(p)) => p
                .rows
                .iter()
                .filter(|r| self.matches(View::Preview, &format!("{} {}", r.key.join(" "), r.upstream)))
                .collect(),
            _ => vec![],
        }
    }

    pub fn tracker_rows(&self) -> Vec<&TrackerRow> {
        match &self.tracker.data {
            Some(Ok(d)) => d
                .rows
                .iter()
                .filter(|r| self.matches(View::Tracker, &format!("{} {}", r.pipeline_name, r.upstream)))
                .collect(),
            _ => vec![],
        }
    }

    pub fn history(&self) -> &[HistoryEntry] {
        match &self.tracker.data {
            Some(Ok(d)) => &d.history,
            _ => &[],
        }
    }

    /// Activity, newest first.
    pub fn activity_rows(&self) -> Vec<&Entry> {
        self.activity.iter().rev().filter(|e| self.matches(View::Activity, &e.text)).collect()
    }

    fn row_count(&self, view: View) -> usize {
        match view {
            View::Upstreams => self.upstream_rows().len(),
            View::Pipelines => self.pipeline_rows().len(),
            View::Link => self.link_rows().len(),
            View::Preview => self.preview_rows().len(),
            View::Tracker => self.tracker_rows().len(),
            View::Activity => self.activity_rows().len(),
        }
    }

    /// The selected row of a view, kept inside the rows it has now.
    pub fn selected(&self, view: View) -> usize {
        self.selected[view.index()].min(self.row_count(view).saturating_sub(1))
    }

    /// Braille spinner frame, advanced by ticks.
    pub fn spinner(&self) -> &'static str {
        const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
        FRAMES[(self.ticks % FRAMES.len() as u64) as usize]
    }

    pub fn foreground_tasks(&self) -> Vec<&InFlight> {
        self.tasks.iter().filter(|t| !t.is_background()).collect()
    }

    /// The write in flight the gauge shows (the oldest).
    pub fn write_task(&self) -> Option<&InFlight> {
        self.tasks.iter().find(|t| t.kind == TaskKind::Write)
    }

    // ---------------------------------------------------------------- commands

    fn command(&mut self, c: Command) {
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

    fn view_command(&mut self, c: Command) {
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
            _ => {}
        }
    }

    /// Close the innermost thing open in a view; false when there was nothing.
    fn back_out(&mut self) -> bool {
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

    fn show(&mut self, view: View) {
        self.view = view;
        match view {
            View::Link => self.ensure_link(),
            View::Preview => self.ensure_preview(),
            View::Tracker => self.ensure_tracker(),
            View::Pipelines => self.count_pending_rows(),
            View::Upstreams | View::Activity => {}
        }
    }

    fn move_by(&mut self, d: isize) {
        let cur = self.selected(self.view) as isize;
        self.select_row((cur + d).max(0) as usize);
    }

    fn select_row(&mut self, row: usize) {
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
    fn count_pending_rows(&mut self) {
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
        if current.pipeline == p && (current.ranges == ranges || current.loading.is_some()) {
            return;
        }
        self.pending_rows = PendingRows { pipeline: p.clone(), ranges: ranges.clone(), counts: None, loading: None };
        if ranges.is_empty() {
            self.pending_rows.counts = Some(Vec::new());
            return;
        }
        let label = format!("pending change rows of {p}");
        self.pending_rows.loading = Some(self.spawn(Job::PendingRows { pipeline: p, ranges }, TaskKind::PendingRows, label));
    }

    fn open(&mut self) {
        let detail = match self.view {
            View::Pipelines => {
                self.detail_open = !self.detail_open;
                self.count_pending_rows();
                return;
            }
            View::Upstreams => details::upstream(self),
            View::Link => details::link(self),
            View::Tracker => details::tracker(self),
            View::Activity => details::activity(self),
            View::Preview => None,
        };
        if let Some((title, lines)) = detail {
            self.popup = Some(Popup::Detail { title, lines, scroll: 0 });
        }
    }

    fn refresh(&mut self) {
        self.request_status();
        match self.view {
            View::Tracker => self.load_tracker(),
            View::Link => self.load_link(),
            View::Preview => self.load_preview(),
            View::Upstreams | View::Pipelines | View::Activity => {}
        }
    }

    fn sort(&mut self) {
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

    fn cycle_pipeline(&mut self, d: isize) {
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

    fn turn_page(&mut self, d: isize) {
        let total = match &self.link.page {
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

    fn cancel_newest(&mut self) {
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
    fn refuse_read_only(&mut self, what: &str) -> bool {
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

    fn run_focused(&mut self) {
        if self.refuse_read_only("running a pipeline") {
            return;
        }
        match self.focused_pipeline() {
            Some(p) => self.propose(WriteOp::Run(p), None),
            None => self.flash(Level::Warn, "no pipeline selected"),
        }
    }

    fn run_all(&mut self) {
        if !self.refuse_read_only("running all pipelines") {
            self.propose(WriteOp::RunAll, None);
        }
    }

    fn reset_selected(&mut self) {
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

    fn open_reset_form(&mut self, pipeline: &str, upstream: Option<&str>) {
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

    fn replay_focused(&mut self) {
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

    fn open_replay_form(&mut self, pipeline: &str, upstream: Option<&str>) {
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

    /// Every write goes through here: it becomes a confirmation popup, never a task.
    fn propose(&mut self, op: WriteOp, form: Option<Popup>) {
        let typed = op.typed_confirmation().map(|_| String::new());
        self.input = None;
        self.popup = Some(Popup::Confirm(Confirm { op, typed, form: form.map(Box::new) }));
    }

    fn confirm_command(&mut self, c: Command) {
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
    fn start_write(&mut self, op: WriteOp) {
        if self.refuse_read_only("writing") {
            return;
        }
        let label = op.describe();
        let total = match op {
            WriteOp::RunAll => self.config.pipelines.len(),
            WriteOp::Run(_) | WriteOp::Reset { .. } | WriteOp::Replay { .. } => 1,
        };
        self.log(Level::Info, format!("started: {label}"));
        let id = self.spawn(Job::Write(op), TaskKind::Write, label);
        if let Some(t) = self.task_mut(id) {
            t.total = total;
        }
    }

    // ---------------------------------------------------------------- reset form

    /// Keys in the reset or replay form: Enter submits it, Esc closes it, the rest edits it.
    fn form_command(&mut self, c: Command) {
        match (c, &self.popup) {
            (Command::Submit, Some(Popup::ResetForm(_))) => return self.submit_form(),
            (Command::Submit, Some(Popup::ReplayForm(_))) => return self.submit_replay_form(),
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

    /// Enter: dry-run the inputs; once a dry run of them is shown, propose the reset.
    fn submit_form(&mut self) {
        let Some(Popup::ResetForm(form)) = self.popup.as_mut() else { return };
        if form.planning.is_some() {
            self.flash(Level::Info, "dry run in progress…");
            return;
        }
        if let Some(plan) = form.planned().cloned() {
            if form.reason.trim().is_empty() {
                form.focus = super::form::FormField::Reason;
                self.flash(Level::Warn, "enter a reason: it is recorded in the audit trail");
                return;
            }
            let reason = form.reason.trim().to_string();
            if let Some(form @ Popup::ResetForm(_)) = self.popup.take() {
                self.propose(WriteOp::Reset { plan, reason }, Some(form));
            }
            return;
        }
        match form.target() {
            Ok(target) => {
                let job = Job::PlanReset { pipeline: form.pipeline.clone(), upstreams: form.scope.selected(), target };
                let label = format!("dry run of reset {}", form.pipeline);
                let id = self.spawn(job, TaskKind::PlanReset, label);
                if let Some(Popup::ResetForm(form)) = self.popup.as_mut() {
                    form.planning = Some(id);
                }
            }
            Err(e) => form.plan = Some(Err(e)),
        }
    }

    // ---------------------------------------------------------------- replay form

    /// Enter: dry-run the inputs; once a dry run of them is shown, propose the replay.
    fn submit_replay_form(&mut self) {
        // A relative scratch path resolves like the config's own paths.
        let base = self.config.path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let Some(Popup::ReplayForm(form)) = self.popup.as_mut() else { return };
        if form.planning.is_some() {
            self.flash(Level::Info, "dry run in progress…");
            return;
        }
        if let Some(dry_run) = form.planned().cloned() {
            if form.reason.trim().is_empty() {
                form.focus = super::replay::ReplayField::Reason;
                self.flash(Level::Warn, "enter a reason: it is recorded in the audit trail");
                return;
            }
            match form.replay(true, &base) {
                Ok(replay) => {
                    if let Some(form @ Popup::ReplayForm(_)) = self.popup.take() {
                        self.propose(WriteOp::Replay { replay, dry_run }, Some(form));
                    }
                }
                Err(e) => form.plan = Some(Err(e)),
            }
            return;
        }
        match form.replay(false, &base) {
            Ok(replay) => {
                let label = format!("dry run of replay {}", form.pipeline);
                let id = self.spawn(Job::PlanReplay(replay), TaskKind::PlanReplay, label);
                if let Some(Popup::ReplayForm(form)) = self.popup.as_mut() {
                    form.planning = Some(id);
                }
            }
            Err(e) => form.plan = Some(Err(e)),
        }
    }

    fn replay_plan_loaded(&mut self, id: TaskId, pipeline: String, result: Result<crate::runner::ReplayReport, String>) {
        if let Err(e) = &result {
            self.log(Level::Error, format!("dry run of replay {pipeline}: {e}"));
        }
        if let Some(Popup::ReplayForm(form)) = self.popup.as_mut() {
            if Self::wanted(form.planning, id, &form.pipeline, &pipeline) {
                form.planning = None;
                form.plan = Some(result);
            }
        }
    }

    // ---------------------------------------------------------------- popups, input line

    fn popup_command(&mut self, c: Command) {
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

    fn input_command(&mut self, c: Command) {
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

    fn insert(&mut self, ch: char) {
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
    fn set_filter(&mut self, text: String) {
        self.filters[self.view.index()] = text;
        if self.view != View::Link {
            self.selected[self.view.index()] = 0;
        }
    }

    fn apply_link_filter(&mut self) {
        let f = self.filter(View::Link).trim().to_string();
        self.link.query.filter = (!f.is_empty()).then_some(f);
        self.link.query.offset = 0;
        self.selected[View::Link.index()] = 0;
        self.load_link();
    }

    /// `:` commands.
    fn palette(&mut self, line: &str) {
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
            ("theme", Some(t)) => {
                self.spawn(Job::Theme(t.to_string()), TaskKind::Theme, format!("theme {t}"));
            }
            ("refresh", _) => self.refresh(),
            ("help", _) => self.popup = Some(Popup::Help { scroll: 0 }),
            _ => self.flash(
                Level::Error,
                format!("unknown command `{line}`: try :run NAME, :run-all, :preview NAME, :link NAME, :reset NAME, :replay NAME, :theme NAME, :q"),
            ),
        }
    }

    fn known_pipeline(&mut self, name: &str) -> bool {
        let known = self.config.pipelines.contains_key(name);
        if !known {
            let names: Vec<&str> = self.config.pipelines.keys().map(String::as_str).collect();
            self.flash(Level::Error, format!("unknown pipeline `{name}`; configured: {}", names.join(", ")));
        }
        known
    }

    fn goto_pipeline(&mut self, view: View, name: Option<&str>) {
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

    /// Mouse: a click on the tab line switches views.
    fn click(&mut self, column: u16, row: u16) {
        if self.popup.is_none() {
            if let Some(v) = ui::tab_at(self.size, column, row) {
                self.show(v);
            }
        }
    }

    // ---------------------------------------------------------------- engine work

    fn spawn(&mut self, job: Job, kind: TaskKind, label: String) -> TaskId {
        self.next_task += 1;
        let id = TaskId(self.next_task);
        let started = self.now();
        self.tasks.push(InFlight { id, kind, label, started, current: None, step: None, done: 0, total: 1 });
        self.outbox.push(Request::Spawn { id, job });
        id
    }

    /// Drop a load nobody waits for any more (its result would be ignored anyway).
    fn supersede(&mut self, old: Option<TaskId>) {
        if let Some(id) = old {
            self.take_task(id);
            self.outbox.push(Request::Cancel(id));
        }
    }

    fn task_mut(&mut self, id: TaskId) -> Option<&mut InFlight> {
        self.tasks.iter_mut().find(|t| t.id == id)
    }

    fn take_task(&mut self, id: TaskId) -> Option<InFlight> {
        let i = self.tasks.iter().position(|t| t.id == id)?;
        Some(self.tasks.remove(i))
    }

    fn request_status(&mut self) {
        if self.status_task.is_none() {
            self.last_status_tick = self.ticks;
            self.status_task = Some(self.spawn(Job::Status, TaskKind::Status, "refresh status".into()));
        }
    }

    fn ensure_tracker(&mut self) {
        if (self.tracker.data.is_none() || self.tracker.stale) && self.tracker.loading.is_none() {
            self.load_tracker();
        }
    }

    fn load_tracker(&mut self) {
        if self.tracker.loading.is_none() {
            self.tracker.stale = false;
            self.tracker.loading = Some(self.spawn(Job::Tracker, TaskKind::Tracker, "read tracker".into()));
        }
    }

    fn ensure_link(&mut self) {
        let current = self.pipeline.clone().unwrap_or_default();
        if self.link.pipeline != current || (self.link.page.is_none() && self.link.loading.is_none()) {
            self.load_link();
        }
    }

    fn load_link(&mut self) {
        let Some(pipeline) = self.pipeline.clone() else { return };
        let old = self.link.loading.take();
        self.supersede(old);
        if self.link.pipeline != pipeline {
            self.link.page = None;
        }
        self.link.pipeline = pipeline.clone();
        let job = Job::LinkPage {
            pipeline: pipeline.clone(),
            query: LinkQuery { limit: LINK_PAGE_SIZE, ..self.link.query.clone() },
        };
        self.link.loading = Some(self.spawn(job, TaskKind::LinkPage, format!("link rows of {pipeline}")));
    }

    fn ensure_preview(&mut self) {
        let current = self.pipeline.clone().unwrap_or_default();
        if self.preview.pipeline != current || (self.preview.data.is_none() && self.preview.loading.is_none()) {
            self.load_preview();
        }
    }

    fn load_preview(&mut self) {
        let Some(pipeline) = self.pipeline.clone() else { return };
        let old = self.preview.loading.take();
        self.supersede(old);
        self.preview.pipeline = pipeline.clone();
        self.preview.data = None;
        self.selected[View::Preview.index()] = 0;
        let job = Job::Preview { pipeline: pipeline.clone() };
        self.preview.loading = Some(self.spawn(job, TaskKind::Preview, format!("preview of {pipeline}")));
    }

    // ---------------------------------------------------------------- results

    fn task_event(&mut self, ev: TaskEvent) {
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
                    let note = if t.kind == TaskKind::Write { " (safe: the next run recovers)" } else { "" };
                    self.log(Level::Warn, format!("cancelled: {}{note}", t.label));
                }
            }
            TaskEvent::Background { error } => self.log(Level::Error, error),
        }
    }

    /// A task ended without a result: nothing waits for it any more.
    fn forget(&mut self, id: TaskId) {
        let mine = |slot: &mut Option<TaskId>| {
            if *slot == Some(id) {
                *slot = None;
            }
        };
        mine(&mut self.status_task);
        mine(&mut self.tracker.loading);
        mine(&mut self.link.loading);
        mine(&mut self.preview.loading);
        mine(&mut self.pending_rows.loading);
        match self.popup.as_mut() {
            Some(Popup::ResetForm(form)) => mine(&mut form.planning),
            Some(Popup::ReplayForm(form)) => mine(&mut form.planning),
            _ => {}
        }
    }

    fn progress(&mut self, id: TaskId, progress: Progress) {
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

    fn finished(&mut self, id: TaskId, result: Finished) {
        match result {
            Finished::Status(r) => self.status_loaded(id, r),
            Finished::Tracker(r) => {
                self.forget(id);
                if let Err(e) = &r {
                    self.log(Level::Error, format!("tracker: {e}"));
                }
                self.tracker.data = Some(r);
            }
            Finished::Preview { pipeline, result } => self.preview_loaded(id, pipeline, result),
            Finished::LinkPage { pipeline, result } => self.link_loaded(id, pipeline, result),
            Finished::ResetPlan { pipeline, result } => self.plan_loaded(id, pipeline, result),
            Finished::Reset { pipeline, result } => {
                match result {
                    Ok(()) => self.log(Level::Ok, format!("reset {pipeline}: done (recorded in the audit trail)")),
                    Err(e) => self.log(Level::Error, format!("reset {pipeline} failed: {e}")),
                }
                self.after_write(&pipeline);
            }
            Finished::ReplayPlan { pipeline, result } => self.replay_plan_loaded(id, pipeline, result),
            Finished::PendingRows { pipeline, counts } => {
                if self.pending_rows.loading == Some(id) && self.pending_rows.pipeline == pipeline {
                    self.pending_rows.loading = None;
                    self.pending_rows.counts = Some(counts);
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

    fn status_loaded(&mut self, id: TaskId, result: Result<Status, String>) {
        self.forget(id);
        match result {
            Ok(status) => {
                self.status = Some(status);
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
            Err(e) if self.status_error.as_deref() == Some(e.as_str()) => {}
            Err(e) => {
                self.log(Level::Error, format!("status refresh failed: {e}"));
                self.status_error = Some(e);
            }
        }
    }

    /// Results are taken when they are for what the view shows now (or nothing was asked).
    fn wanted(loading: Option<TaskId>, id: TaskId, showing: &str, got: &str) -> bool {
        showing == got && loading.is_none_or(|l| l == id)
    }

    fn preview_loaded(&mut self, id: TaskId, pipeline: String, result: Result<Preview, String>) {
        if !Self::wanted(self.preview.loading, id, &self.preview.pipeline, &pipeline) {
            return;
        }
        self.preview.loading = None;
        if let Err(e) = &result {
            self.log(Level::Error, format!("preview of {pipeline}: {e}"));
        }
        self.preview.data = Some(result);
    }

    fn link_loaded(&mut self, id: TaskId, pipeline: String, result: Result<LinkPage, String>) {
        if !Self::wanted(self.link.loading, id, &self.link.pipeline, &pipeline) {
            return;
        }
        self.link.loading = None;
        if let Err(e) = &result {
            self.log(Level::Error, format!("link table of {pipeline}: {e}"));
        }
        self.link.page = Some(result);
    }

    fn plan_loaded(&mut self, id: TaskId, pipeline: String, result: Result<crate::reset::ResetPlan, String>) {
        if let Err(e) = &result {
            self.log(Level::Error, format!("dry run of reset {pipeline}: {e}"));
        }
        if let Some(Popup::ResetForm(form)) = self.popup.as_mut() {
            if Self::wanted(form.planning, id, &form.pipeline, &pipeline) {
                form.planning = None;
                form.plan = Some(result);
            }
        }
    }

    fn record_run(&mut self, pipeline: String, result: Result<RunReport, String>) {
        match &result {
            Ok(r) => {
                let level = if r.outcome == crate::runner::Outcome::NothingNew { Level::Info } else { Level::Ok };
                self.log(level, format!("run {pipeline}: {}", text::run_summary(r)));
            }
            Err(e) => self.log(Level::Error, format!("run {pipeline} failed: {e}")),
        }
        let at = self.now();
        self.last_runs.insert(pipeline.clone(), LastRun { at, result });
        self.after_write(&pipeline);
    }

    /// A write changed the lake: what was read before is stale.
    fn after_write(&mut self, pipeline: &str) {
        if self.status_task.is_some() {
            self.status_again = true;
        } else {
            self.request_status();
        }
        self.tracker.stale = true;
        if self.view == View::Tracker {
            self.ensure_tracker();
        }
        if self.preview.pipeline == pipeline {
            self.preview.data = None;
            if self.view == View::Preview {
                self.load_preview();
            }
        }
        if self.link.pipeline == pipeline {
            if self.view == View::Link {
                self.load_link();
            } else {
                self.link.page = None;
            }
        }
    }

    fn tick(&mut self) {
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

/// Backspace / Ctrl-u on a text field.
fn edit_text(t: &mut String, c: Command) {
    match c {
        Command::DeleteBack => {
            t.pop();
        }
        Command::ClearInput => t.clear(),
        _ => {}
    }
}
