//! The key bindings: ONE table per context. The `?` overlay, the key bar and the key
//! dispatcher all read these tables, so what is shown is exactly what is bound.
//!
//! Rule kept by the tables (and checked by a test): a key bound to a write in one view is
//! never bound to anything else in another view, so muscle memory cannot write by accident.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::console::msg::{Action, Command, Edit, View};

/// Where the keyboard focus is; each context has its own table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    View(View),
    Help,
    Detail,
    Confirm,
    TypedConfirm,
    ResetForm,
    ReplayForm,
    /// The filter (`/`) or command palette (`:`) line.
    Input,
}

impl Context {
    /// Contexts where printable characters are text, not commands.
    pub fn takes_text(self) -> bool {
        matches!(self, Context::TypedConfirm | Context::ResetForm | Context::ReplayForm | Context::Input)
    }
}

/// One key press: a code plus Ctrl/Alt (Shift is folded into the character).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyPress {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

const fn key(c: char) -> KeyPress {
    KeyPress { code: KeyCode::Char(c), mods: KeyModifiers::NONE }
}

const fn ctrl(c: char) -> KeyPress {
    KeyPress { code: KeyCode::Char(c), mods: KeyModifiers::CONTROL }
}

const fn code(code: KeyCode) -> KeyPress {
    KeyPress { code, mods: KeyModifiers::NONE }
}

impl KeyPress {
    /// Normalise a terminal key event: Shift is implied by the character (`R`, `?`, `:`) and by
    /// BackTab, and terminals differ in whether they report it.
    pub fn from_event(ev: &KeyEvent) -> KeyPress {
        KeyPress { code: ev.code, mods: ev.modifiers.difference(KeyModifiers::SHIFT) }
    }

    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Up => "↑".into(),
            KeyCode::Down => "↓".into(),
            KeyCode::Left => "←".into(),
            KeyCode::Right => "→".into(),
            KeyCode::Enter => "Enter".into(),
            KeyCode::Esc => "Esc".into(),
            KeyCode::Tab => "Tab".into(),
            KeyCode::BackTab => "S-Tab".into(),
            KeyCode::Backspace => "Bksp".into(),
            KeyCode::PageUp => "PgUp".into(),
            KeyCode::PageDown => "PgDn".into(),
            KeyCode::Home => "Home".into(),
            KeyCode::End => "End".into(),
            KeyCode::F(n) => format!("F{n}"),
            other => format!("{other:?}"),
        };
        if self.mods.contains(KeyModifiers::CONTROL) {
            format!("Ctrl-{base}")
        } else {
            base
        }
    }
}

/// One row of a bindings table.
#[derive(Debug)]
pub struct Binding {
    pub keys: &'static [KeyPress],
    pub command: Command,
    /// The line in the `?` overlay.
    pub help: &'static str,
    /// The short label in the key bar; `None` keeps the binding out of the bar.
    pub bar: Option<&'static str>,
}

const fn bind(keys: &'static [KeyPress], command: Command, help: &'static str, bar: Option<&'static str>) -> Binding {
    Binding { keys, command, help, bar }
}

/// Bindings of every view (listed after the view's own ones).
static GLOBAL: &[Binding] = &[
    // Ordered by how much a newcomer needs them: the help overlay may scroll on small screens.
    bind(&[key('?')], Command::Help, "show the keys of this view", Some("help")),
    bind(&[key('q')], Command::Quit, "back out; quit when there is nothing to back out of", Some("quit")),
    bind(&[code(KeyCode::Esc)], Command::Back, "back out (close detail pane, clear filter)", None),
    bind(&[code(KeyCode::Tab)], Command::NextView, "next view", Some("views")),
    bind(&[code(KeyCode::BackTab)], Command::PrevView, "previous view", None),
    bind(
        &[key(':')],
        Command::Palette,
        "command palette (:run :run-all :preview :link :reset :replay :pause :theme :q)",
        Some("cmd"),
    ),
    bind(&[code(KeyCode::F(5)), ctrl('r')], Command::Refresh, "refresh now", Some("refresh")),
    bind(&[key('R')], Command::RunAll, "run all pipelines (asks first)", Some("run all")),
    bind(&[key('c')], Command::Cancel, "cancel the newest task (a cancelled run is recovered by the next run)", None),
    bind(&[code(KeyCode::Up), key('k')], Command::Up, "move up", None),
    bind(&[code(KeyCode::Down), key('j')], Command::Down, "move down", None),
    bind(&[key('g'), code(KeyCode::Home)], Command::Top, "go to the first row", None),
    bind(&[key('G'), code(KeyCode::End)], Command::Bottom, "go to the last row", None),
    bind(&[code(KeyCode::PageUp)], Command::PageUp, "page up", None),
    bind(&[code(KeyCode::PageDown)], Command::PageDown, "page down", None),
    bind(&[key('1')], Command::Show(View::Upstreams), "Upstreams view", None),
    bind(&[key('2')], Command::Show(View::Pipelines), "Pipelines view", None),
    bind(&[key('3')], Command::Show(View::Link), "Link table view", None),
    bind(&[key('4')], Command::Show(View::Preview), "Preview view", None),
    bind(&[key('5')], Command::Show(View::Tracker), "Tracker view", None),
    bind(&[key('6')], Command::Show(View::Activity), "Activity view", None),
];

/// Bindings of every context, popups and inputs included (raw mode swallows SIGINT).
static ALWAYS: &[Binding] = &[bind(&[ctrl('c')], Command::ForceQuit, "quit now", None)];

static UPSTREAMS: &[Binding] = &[
    bind(&[code(KeyCode::Enter)], Command::Open, "details of the selected upstream", Some("details")),
    bind(&[key('/')], Command::Filter, "filter upstreams by name", Some("filter")),
    bind(&[key('s')], Command::Sort, "sort by name, lag, latest version, last commit", Some("sort")),
];

/// Replay: the write key of the pipeline views (and of nothing else anywhere).
const REPLAY: Binding = bind(
    &[key('P')],
    Command::Replay,
    "replay a version range: form, dry run, confirm (link table or scratch table)",
    Some("replay"),
);

static PIPELINES: &[Binding] = &[
    bind(&[key('r')], Command::RunSelected, "run the selected pipeline (asks first)", Some("run")),
    REPLAY,
    bind(&[key('m')], Command::Maintain, "maintain the link table: dry run (files before → after), then asks", None),
    bind(&[key('z')], Command::Pause, "pause the selected pipeline, or resume it (asks first)", None),
    bind(&[code(KeyCode::Enter)], Command::Open, "toggle the detail pane", Some("details")),
    bind(&[key('/')], Command::Filter, "filter pipelines by name", Some("filter")),
];

static LINK: &[Binding] = &[
    bind(&[key('r')], Command::RunSelected, "run this pipeline (asks first)", Some("run")),
    bind(&[code(KeyCode::Left), key('h')], Command::PrevPipeline, "previous pipeline", Some("pipeline")),
    bind(&[code(KeyCode::Right), key('l')], Command::NextPipeline, "next pipeline", None),
    bind(&[key('n')], Command::NextPage, "next page", Some("page")),
    bind(&[key('p')], Command::PrevPage, "previous page", None),
    bind(&[key('/')], Command::Filter, "filter rows by key (Enter applies)", Some("filter")),
    bind(&[key('s')], Command::Sort, "sort by run id, change time, key", Some("sort")),
    bind(&[code(KeyCode::Enter)], Command::Open, "all columns of the selected row", None),
];

static PREVIEW: &[Binding] = &[
    bind(
        &[key('r')],
        Command::RunSelected,
        "run this pipeline: write what the preview shows (asks first)",
        Some("run"),
    ),
    bind(&[code(KeyCode::Left), key('h')], Command::PrevPipeline, "previous pipeline", Some("pipeline")),
    bind(&[code(KeyCode::Right), key('l')], Command::NextPipeline, "next pipeline", None),
    bind(&[key('/')], Command::Filter, "filter affected keys", Some("filter")),
];

static TRACKER: &[Binding] = &[
    bind(&[key('e')], Command::Reset, "reset the selected row's pipeline: form, dry run, confirm", Some("reset")),
    bind(&[key('r')], Command::RunSelected, "run the selected row's pipeline (asks first)", Some("run")),
    REPLAY,
    bind(&[code(KeyCode::Enter)], Command::Open, "all fields of the selected row", Some("details")),
    bind(&[key('/')], Command::Filter, "filter rows by pipeline or upstream", Some("filter")),
];

static ACTIVITY: &[Binding] = &[
    bind(&[code(KeyCode::Enter)], Command::Open, "the whole entry (errors are multi-line)", Some("details")),
    bind(&[key('/')], Command::Filter, "filter entries", Some("filter")),
];

static HELP: &[Binding] = &[
    bind(&[code(KeyCode::Esc), key('q'), key('?')], Command::Back, "close help", Some("close")),
    bind(&[code(KeyCode::Up), key('k')], Command::Up, "scroll up", Some("scroll")),
    bind(&[code(KeyCode::Down), key('j')], Command::Down, "scroll down", None),
];

static DETAIL: &[Binding] = &[
    bind(&[code(KeyCode::Esc), key('q'), code(KeyCode::Enter)], Command::Back, "close", Some("close")),
    bind(&[code(KeyCode::Up), key('k')], Command::Up, "scroll up", Some("scroll")),
    bind(&[code(KeyCode::Down), key('j')], Command::Down, "scroll down", None),
];

static CONFIRM: &[Binding] = &[
    bind(&[key('y')], Command::Confirm, "yes, do it", Some("yes")),
    bind(&[key('n'), code(KeyCode::Esc), key('q')], Command::Back, "no, cancel", Some("no")),
];

static TYPED_CONFIRM: &[Binding] = &[
    bind(&[code(KeyCode::Enter)], Command::Submit, "confirm (the typed name must match)", Some("confirm")),
    bind(&[code(KeyCode::Esc)], Command::Back, "cancel", Some("cancel")),
    bind(&[code(KeyCode::Backspace)], Command::DeleteBack, "delete a character", None),
    bind(&[ctrl('u')], Command::ClearInput, "clear", None),
];

static RESET_FORM: &[Binding] = &[
    bind(&[code(KeyCode::Enter)], Command::Submit, "dry run; once planned, confirm", Some("dry run/confirm")),
    bind(&[code(KeyCode::Tab), code(KeyCode::Down)], Command::NextField, "next field", Some("field")),
    bind(&[code(KeyCode::BackTab), code(KeyCode::Up)], Command::PrevField, "previous field", None),
    bind(&[code(KeyCode::Left)], Command::PrevOption, "previous choice (scope, target)", Some("choice")),
    bind(&[code(KeyCode::Right)], Command::NextOption, "next choice (scope, target)", None),
    bind(&[code(KeyCode::Backspace)], Command::DeleteBack, "delete a character", None),
    bind(&[ctrl('u')], Command::ClearInput, "clear the field", None),
    bind(&[code(KeyCode::Esc)], Command::Back, "close the form", Some("close")),
];

static REPLAY_FORM: &[Binding] = &[
    bind(&[code(KeyCode::Enter)], Command::Submit, "dry run; once planned, confirm", Some("dry run/confirm")),
    bind(&[code(KeyCode::Tab), code(KeyCode::Down)], Command::NextField, "next field", Some("field")),
    bind(&[code(KeyCode::BackTab), code(KeyCode::Up)], Command::PrevField, "previous field", None),
    bind(&[code(KeyCode::Left)], Command::PrevOption, "previous upstream scope", Some("scope")),
    bind(&[code(KeyCode::Right)], Command::NextOption, "next upstream scope", None),
    bind(&[code(KeyCode::Backspace)], Command::DeleteBack, "delete a character", None),
    bind(&[ctrl('u')], Command::ClearInput, "clear the field", None),
    bind(&[code(KeyCode::Esc)], Command::Back, "close the form", Some("close")),
];

static INPUT: &[Binding] = &[
    bind(&[code(KeyCode::Enter)], Command::Submit, "apply", Some("apply")),
    bind(&[code(KeyCode::Esc)], Command::Back, "cancel (a filter is cleared)", Some("cancel")),
    bind(&[code(KeyCode::Backspace)], Command::DeleteBack, "delete a character", None),
    bind(&[ctrl('u')], Command::ClearInput, "clear", None),
];

/// The view's own bindings (without the global ones).
pub fn view_bindings(view: View) -> &'static [Binding] {
    match view {
        View::Upstreams => UPSTREAMS,
        View::Pipelines => PIPELINES,
        View::Link => LINK,
        View::Preview => PREVIEW,
        View::Tracker => TRACKER,
        View::Activity => ACTIVITY,
    }
}

/// Every binding active in a context: the context's own, then (in views) the global ones.
pub fn bindings(ctx: Context) -> Vec<&'static Binding> {
    let own: &[Binding] = match ctx {
        Context::View(v) => view_bindings(v),
        Context::Help => HELP,
        Context::Detail => DETAIL,
        Context::Confirm => CONFIRM,
        Context::TypedConfirm => TYPED_CONFIRM,
        Context::ResetForm => RESET_FORM,
        Context::ReplayForm => REPLAY_FORM,
        Context::Input => INPUT,
    };
    let global: &[Binding] = if matches!(ctx, Context::View(_)) { GLOBAL } else { &[] };
    own.iter().chain(global).chain(ALWAYS).collect()
}

/// What a key press means in a context: a bound command, typed text, or nothing.
pub fn action_for(ctx: Context, ev: &KeyEvent) -> Option<Action> {
    if ev.kind == KeyEventKind::Release {
        return None;
    }
    let press = KeyPress::from_event(ev);
    if let Some(b) = bindings(ctx).into_iter().find(|b| b.keys.contains(&press)) {
        return Some(Action::Command(b.command));
    }
    match press.code {
        KeyCode::Char(c) if ctx.takes_text() && press.mods.is_empty() => Some(Action::Edit(Edit::Insert(c))),
        _ => None,
    }
}

/// "j ↓"-style label of all keys of a binding.
pub fn keys_label(b: &Binding) -> String {
    b.keys.iter().map(KeyPress::label).collect::<Vec<_>>().join(" ")
}
