//! The console's state and its one entry point, [`App::update`]. No I/O happens here: engine
//! work is asked for through the outbox ([`App::drain_requests`]) and comes back as actions.
//! Time comes from a [`Clock`] and animation from tick counts, so tests render exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};

use crate::config::{Config, Pipeline};
use crate::console::keys::Context;
use crate::console::msg::{Action, Edit, PendingRange, Request, TaskId, TrackerData, View, WriteOp};
use crate::console::state::form::ResetForm;
use crate::console::state::slot::Slot;
use crate::console::state::replay::ReplayForm;
use crate::console::theme::Theme;
use crate::engine::keymap::PreviewRow;
use crate::engine::{Preview, RunReport, Step};
use crate::ops::status::{PipelineStatus, PipelineUpstreamStatus, Status, UpstreamStatus};
use crate::store::link::{LinkPage, LinkQuery};
use crate::store::tracker::{HistoryEntry, TrackerRow};

/// How often the loop sends [`Action::Tick`].
pub const TICK: Duration = Duration::from_millis(100);
/// Status is refreshed every this many ticks (~2 s).
pub(crate) const REFRESH_TICKS: u64 = 20;
/// A flash message stays this many ticks (~5 s).
pub(crate) const FLASH_TICKS: u64 = 50;
/// Rows per link-table page.
pub const LINK_PAGE_SIZE: usize = 100;
/// Rows moved by PgUp/PgDn.
pub(crate) const PAGE_STEP: isize = 10;
/// Activity entries kept.
pub(crate) const ACTIVITY_KEEP: usize = 500;

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
    pub(crate) until_tick: u64,
}

/// A task in flight.
#[derive(Clone, Debug)]
pub struct InFlight {
    pub id: TaskId,
    /// A [`Job::Write`]: the gauge shows it, and cancelling it is logged as safe.
    pub write: bool,
    /// A periodic refresh: not worth a spinner and not cancelled by `c`.
    pub background: bool,
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
    pub fn is_background(&self) -> bool {
        self.background
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

    pub(crate) fn next(self) -> UpstreamSort {
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
    pub page: Slot<Result<LinkPage, String>>,
}

#[derive(Clone, Debug, Default)]
pub struct PreviewState {
    pub pipeline: String,
    pub data: Slot<Result<Preview, String>>,
}

/// Change rows pending per upstream of the pipeline in the Pipelines detail pane, counted in
/// the background for exactly `ranges` (recounted when the versions move).
#[derive(Clone, Debug, Default)]
pub struct PendingRows {
    pub pipeline: String,
    pub ranges: Vec<PendingRange>,
    pub counts: Slot<Vec<(String, Result<u64, String>)>>,
}

impl PendingRows {
    /// The count for `upstream`: `None` while counting (or nothing pending to count).
    pub fn count(&self, upstream: &str) -> Option<&Result<u64, String>> {
        self.counts.value.as_ref()?.iter().find(|(u, _)| u == upstream).map(|(_, c)| c)
    }
}

#[derive(Clone, Debug, Default)]
pub struct TrackerState {
    pub data: Slot<Result<TrackerData, String>>,
    /// A write happened since the data was read.
    pub(crate) stale: bool,
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

impl Popup {
    /// The reset form, when it is the open popup.
    pub fn reset_form(&mut self) -> Option<&mut ResetForm> {
        match self {
            Popup::ResetForm(form) => Some(form),
            _ => None,
        }
    }

    /// The replay form, when it is the open popup.
    pub fn replay_form(&mut self) -> Option<&mut ReplayForm> {
        match self {
            Popup::ReplayForm(form) => Some(form),
            _ => None,
        }
    }
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
    pub(crate) clock: Clock,
    pub view: View,
    /// Terminal size, for mouse hit-testing.
    pub size: (u16, u16),
    /// The last status that landed, and the refresh in flight.
    pub status: Slot<Status>,
    pub status_error: Option<String>,
    pub last_refresh: Option<DateTime<Local>>,
    pub(crate) selected: [usize; 6],
    pub(crate) filters: [String; 6],
    pub upstream_sort: UpstreamSort,
    /// The pipeline the Link and Preview views show (follows the Pipelines selection).
    pub pipeline: Option<String>,
    pub detail_open: bool,
    pub last_runs: BTreeMap<String, LastRun>,
    pub link: LinkState,
    pub preview: PreviewState,
    pub pending_rows: PendingRows,
    pub tracker: TrackerState,
    pub(crate) activity: Vec<Entry>,
    pub tasks: Vec<InFlight>,
    pub popup: Option<Popup>,
    pub input: Option<InputLine>,
    pub flash: Option<Flash>,
    pub(crate) ticks: u64,
    pub(crate) next_task: u64,
    /// A write finished while a refresh was in flight: refresh again when it lands.
    pub(crate) status_again: bool,
    pub(crate) last_status_tick: u64,
    pub(crate) outbox: Vec<Request>,
    pub should_quit: bool,
    pub(crate) dirty: bool,
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
            status: Slot::default(),
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
            Action::ClickTab(view) => self.click_tab(view),
        }
    }

    // ---------------------------------------------------------------- rows shown by views

    pub fn filter(&self, view: View) -> &str {
        &self.filters[view.index()]
    }

    pub(crate) fn matches(&self, view: View, text: &str) -> bool {
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
                status: self.status.value.as_ref().and_then(|s| s.upstream(name)),
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

    pub(crate) fn readers(&self, upstream: &str) -> Vec<(&str, &PipelineUpstreamStatus)> {
        let Some(st) = &self.status.value else { return vec![] };
        st.pipelines
            .iter()
            .flat_map(|p| p.upstreams.iter().filter(|u| u.upstream == upstream).map(move |u| (p.name.as_str(), u)))
            .collect()
    }

    pub fn pipeline_rows(&self) -> Vec<&Pipeline> {
        self.config.pipelines.values().filter(|p| self.matches(View::Pipelines, &p.name)).collect()
    }

    pub fn pipeline_status(&self, name: &str) -> Option<&PipelineStatus> {
        self.status.value.as_ref().and_then(|s| s.pipelines.iter().find(|p| p.name == name))
    }

    pub fn link_rows(&self) -> &[Vec<String>] {
        match &self.link.page.value {
            Some(Ok(page)) => &page.rows,
            _ => &[],
        }
    }

    pub fn preview_rows(&self) -> Vec<&PreviewRow> {
        match &self.preview.data.value {
            Some(Ok(p)) => p
                .rows
                .iter()
                .filter(|r| self.matches(View::Preview, &format!("{} {}", r.key.join(" "), r.upstream)))
                .collect(),
            _ => vec![],
        }
    }

    pub fn tracker_rows(&self) -> Vec<&TrackerRow> {
        match &self.tracker.data.value {
            Some(Ok(d)) => d
                .rows
                .iter()
                .filter(|r| self.matches(View::Tracker, &format!("{} {}", r.pipeline_name, r.upstream)))
                .collect(),
            _ => vec![],
        }
    }

    pub fn history(&self) -> &[HistoryEntry] {
        match &self.tracker.data.value {
            Some(Ok(d)) => &d.history,
            _ => &[],
        }
    }

    /// Activity, newest first.
    pub fn activity_rows(&self) -> Vec<&Entry> {
        self.activity.iter().rev().filter(|e| self.matches(View::Activity, &e.text)).collect()
    }

    pub(crate) fn row_count(&self, view: View) -> usize {
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
        self.tasks.iter().find(|t| t.write)
    }
}
