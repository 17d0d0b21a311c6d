//! Everything that can happen to the console, as data: user commands (the unit of the key
//! bindings table), text typed into an input, results coming back from engine tasks, ticks.
//! Writes are a separate type ([`WriteOp`]) that only a confirmation popup turns into a task.
//! Engine work goes out as [`Request`]s for [`Job`]s and comes back as [`TaskEvent`]s.

use crate::ops::maintain::TableUpkeep;
use crate::ops::reset::{ResetPlan, ResetTarget};
use crate::engine::{Preview, Replay, ReplayReport, RunEvent, RunReport};
use crate::ops::status::Status;
use crate::store::link::{LinkPage, LinkQuery};
use crate::store::tracker::{HistoryEntry, TrackerRow};

use crate::console::theme::Theme;


/// The six views, in tab order (number keys 1-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    Upstreams,
    Pipelines,
    Link,
    Preview,
    Tracker,
    Activity,
}

impl View {
    pub const ALL: [View; 6] =
        [View::Upstreams, View::Pipelines, View::Link, View::Preview, View::Tracker, View::Activity];

    pub fn title(self) -> &'static str {
        match self {
            View::Upstreams => "Upstreams",
            View::Pipelines => "Pipelines",
            View::Link => "Link table",
            View::Preview => "Preview",
            View::Tracker => "Tracker",
            View::Activity => "Activity",
        }
    }

    pub fn index(self) -> usize {
        match self {
            View::Upstreams => 0,
            View::Pipelines => 1,
            View::Link => 2,
            View::Preview => 3,
            View::Tracker => 4,
            View::Activity => 5,
        }
    }

    pub fn next(self) -> View {
        View::ALL[(self.index() + 1) % View::ALL.len()]
    }

    pub fn prev(self) -> View {
        View::ALL[(self.index() + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// A user intent. Keys, the command palette and the mouse all map to these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Back out of the innermost thing; quit when there is nothing to back out of.
    Quit,
    /// Quit at once (Ctrl-c: raw mode swallows SIGINT, so it must be a binding).
    ForceQuit,
    /// Back out (close popup, detail pane or filter); never quits.
    Back,
    NextView,
    PrevView,
    Show(View),
    Up,
    Down,
    Top,
    Bottom,
    PageUp,
    PageDown,
    /// Details of the selected row.
    Open,
    Help,
    Filter,
    Palette,
    Refresh,
    Cancel,
    Sort,
    PrevPipeline,
    NextPipeline,
    NextPage,
    PrevPage,
    /// Run the pipeline in focus (asks first).
    RunSelected,
    /// Run every pipeline (asks first).
    RunAll,
    /// Open the reset form for the selected tracker row (dry run, then asks).
    Reset,
    /// Open the replay form for the pipeline in focus (dry run, then asks).
    Replay,
    /// Link-table upkeep of the pipeline in focus (dry run, then asks).
    Maintain,
    /// Pause the pipeline in focus, or resume it when an operator paused it (asks first).
    Pause,
    /// `y` in a confirmation popup.
    Confirm,
    /// Enter in a text input or the reset form.
    Submit,
    NextField,
    PrevField,
    PrevOption,
    NextOption,
    DeleteBack,
    ClearInput,
}

impl Command {
    /// Commands that lead to a write: disabled with --read-only and always confirmed.
    pub fn is_write(self) -> bool {
        matches!(self, Command::RunSelected | Command::RunAll | Command::Reset | Command::Replay | Command::Maintain | Command::Pause)
    }
}

/// A character typed into the focused input (filter, palette, typed confirmation, form field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    Insert(char),
}

/// Input to [`crate::console::state::app::App::update`].
#[derive(Debug)]
pub enum Action {
    Command(Command),
    Edit(Edit),
    Task(TaskEvent),
    Tick,
    Resize {
        width: u16,
        height: u16,
    },
    /// A left click on a view's tab (only with --mouse; the loop finds the tab under it).
    ClickTab(View),
}

impl From<Command> for Action {
    fn from(c: Command) -> Self {
        Action::Command(c)
    }
}

/// A write the user asked for. It is data so it can travel through the confirmation popup:
/// only [`crate::console::state::app::App`]'s confirm handler turns it into an engine task.
#[derive(Clone, Debug)]
pub enum WriteOp {
    Run(String),
    RunAll,
    Reset { plan: ResetPlan, reason: String },
    /// `replay.execute` is set; `dry_run` is what the operator saw.
    Replay { replay: Replay, dry_run: ReplayReport },
    /// `plan` is the dry run the operator saw.
    Maintain { pipeline: String, plan: Vec<TableUpkeep> },
    /// Pause (`paused`) or resume a pipeline, recorded in the tracker like `deltalink pause`.
    Pause { pipeline: String, paused: bool, reason: String },
}

/// Resets moving more change rows than this (and replays into the production link table of
/// more keys) must be confirmed by typing the pipeline name.
pub const TYPED_CONFIRM_ROWS: u64 = 1000;

impl WriteOp {
    /// One line naming the write, for the popup, the Activity log and the task list.
    pub fn describe(&self) -> String {
        match self {
            WriteOp::Run(p) => format!("run {p}"),
            WriteOp::RunAll => "run all pipelines".into(),
            WriteOp::Reset { plan, .. } => format!("reset {} to {}", plan.pipeline, crate::describe::reset_target(&plan.target)),
            WriteOp::Replay { replay, dry_run } => format!(
                "replay {} versions {}..{} into {}",
                replay.pipeline,
                replay.from_version,
                replay.to_version.map_or("latest".to_string(), |v| v.to_string()),
                dry_run.target
            ),
            WriteOp::Maintain { pipeline, .. } => format!("maintain the link table of {pipeline}"),
            WriteOp::Pause { pipeline, paused: true, .. } => format!("pause {pipeline}"),
            WriteOp::Pause { pipeline, paused: false, .. } => format!("resume {pipeline}"),
        }
    }

    /// The word the operator must type to confirm, when y/n is not enough.
    pub fn typed_confirmation(&self) -> Option<String> {
        match self {
            WriteOp::Reset { plan, .. } if reset_rows(plan) > TYPED_CONFIRM_ROWS => Some(plan.pipeline.clone()),
            // Many keys re-emitted into the production link table reach every downstream reader.
            // The engine's dry run says whether `into` is that table (a path typed out to it is).
            WriteOp::Replay { dry_run, .. } if dry_run.into_link_table && dry_run.distinct_keys > TYPED_CONFIRM_ROWS => {
                Some(dry_run.pipeline.clone())
            }
            _ => None,
        }
    }
}

/// Change rows a reset re-reads or skips, over all its upstreams.
pub fn reset_rows(plan: &ResetPlan) -> u64 {
    plan.changes.iter().map(|c| c.change_rows).sum()
}


// ---------------------------------------------------------------- engine work, out and back

/// Rows the Preview view asks for (the totals always cover everything).
pub const PREVIEW_LIMIT: usize = 500;
/// Tracker commits shown as the audit trail.
pub const HISTORY_LIMIT: usize = 50;

/// Names one spawned task, so its progress, result and cancellation find their way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskId(pub u64);

/// Work for the engine.
#[derive(Clone, Debug)]
pub enum Job {
    Status,
    Tracker,
    Preview {
        pipeline: String,
    },
    LinkPage {
        pipeline: String,
        query: LinkQuery,
    },
    PlanReset {
        pipeline: String,
        upstreams: Vec<String>,
        target: ResetTarget,
    },
    /// A replay without `execute`: what it would write.
    PlanReplay(Replay),
    /// A dry run of a pipeline's link-table upkeep.
    PlanMaintain { pipeline: String },
    /// Change rows of each pending range of a pipeline (the Pipelines detail pane).
    PendingRows { pipeline: String, ranges: Vec<PendingRange> },
    /// Only ever built from an accepted confirmation.
    Write(WriteOp),
    Theme(String),
}

/// What the App asks the loop to do.
#[derive(Debug)]
pub enum Request {
    Spawn { id: TaskId, job: Job },
    Cancel(TaskId),
}

/// The tracker view's data: one row per (pipeline, upstream) and the audit trail.
#[derive(Clone, Debug)]
pub struct TrackerData {
    pub rows: Vec<TrackerRow>,
    pub history: Vec<HistoryEntry>,
}

/// What comes back from a task (or from the demo writer).
#[derive(Debug)]
pub enum TaskEvent {
    Progress {
        id: TaskId,
        progress: Progress,
    },
    Finished {
        id: TaskId,
        result: Finished,
    },
    /// The task panicked (it is logged; the console carries on).
    Failed {
        id: TaskId,
        error: String,
    },
    Cancelled {
        id: TaskId,
    },
    /// An error of work the console did not ask for (the demo writer).
    Background {
        error: String,
    },
}

#[derive(Debug)]
pub enum Progress {
    Run(RunEvent),
    /// One pipeline of a run-all finished.
    PipelineDone {
        pipeline: String,
        result: Result<RunReport, String>,
    },
}

/// A task's result; errors are rendered to text where they happen.
#[derive(Debug)]
pub enum Finished {
    Status(Result<Status, String>),
    Tracker(Result<TrackerData, String>),
    Preview { pipeline: String, result: Result<Preview, String> },
    LinkPage { pipeline: String, result: Result<LinkPage, String> },
    ResetPlan { pipeline: String, result: Result<ResetPlan, String> },
    Reset { pipeline: String, result: Result<(), String> },
    ReplayPlan { pipeline: String, result: Result<ReplayReport, String> },
    PendingRows { pipeline: String, counts: Vec<(String, Result<u64, String>)> },
    Replay { pipeline: String, result: Result<ReplayReport, String> },
    MaintainPlan { pipeline: String, result: Result<Vec<TableUpkeep>, String> },
    Maintained { pipeline: String, result: Result<Vec<TableUpkeep>, String> },
    Paused { pipeline: String, paused: bool, result: Result<crate::ops::pause::Paused, String> },
    Run { pipeline: String, result: Result<RunReport, String> },
    RunAll,
    Theme(Result<Theme, String>),
}

/// Versions `from..=to` of one upstream that a pipeline has not read yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRange {
    pub upstream: String,
    pub from: u64,
    pub to: u64,
}
