//! Popups drawn over the view: help (generated from the bindings table), details,
//! confirmations of writes, and the reset and replay forms with their dry runs.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::ops::reset::{ResetChange, ResetPlan};

use crate::console::msg::{reset_rows, WriteOp, TYPED_CONFIRM_ROWS};
use crate::describe;
use crate::console::state::app::{App, Confirm, Popup};
use crate::console::state::form::{FormField, ResetForm};
use crate::console::state::slot::Slot;
use crate::console::state::replay::{ReplayField, ReplayForm};
use crate::console::keys::{self, Binding, Context};
use crate::console::text;
use crate::describe::thousands;
use crate::console::theme::Theme;

pub fn draw(f: &mut Frame, area: Rect, app: &App, popup: &Popup) {
    match popup {
        Popup::Help { scroll } => {
            show(f, area, app, "Keys: ".to_string() + app.view.title(), help_lines(app), *scroll, 100)
        }
        Popup::Detail { title, lines, scroll } => {
            let lines = lines.iter().map(|l| Line::from(l.clone())).collect();
            show(f, area, app, title.clone(), with_hints(app, lines), *scroll, 96)
        }
        Popup::Confirm(c) => show(f, area, app, "Confirm".into(), with_hints(app, confirm_lines(app, c)), 0, 96),
        Popup::ResetForm(form) => {
            let title = format!("Reset the tracker of {}", form.pipeline);
            show(f, area, app, title, with_hints(app, form_lines(app, form)), 0, 90)
        }
        Popup::ReplayForm(form) => {
            let title = format!("Replay {}", form.pipeline);
            show(f, area, app, title, with_hints(app, replay_form_lines(app, form)), 0, 90)
        }
    }
}

/// A centred box sized to its text (up to `max_width` and the screen).
fn show(f: &mut Frame, area: Rect, app: &App, title: String, lines: Vec<Line<'static>>, scroll: u16, max_width: u16) {
    let t = &app.theme;
    let text_w = lines.iter().map(Line::width).max().unwrap_or(0) as u16;
    let width = (text_w.max(title.chars().count() as u16 + 4) + 4).min(max_width).min(area.width.saturating_sub(2));
    let wrapped = wrapped_height(&lines, width.saturating_sub(2));
    let height = (wrapped + 2).min(area.height.saturating_sub(2));
    let title = if wrapped + 2 > height { format!("{title} · j/k scroll") } else { title };
    let rect = Rect {
        x: area.x + (area.width.saturating_sub(width)) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height,
    };
    let block =
        Block::bordered().style(t.popup).border_style(t.title).title(Span::styled(format!(" {title} "), t.title));
    f.render_widget(Clear, rect);
    f.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }).scroll((scroll, 0)), rect);
}

/// Rows the lines take when wrapped at `width` (word wrapping may need one more for a long
/// word at a line end; one spare row per wrapped line keeps the last line visible).
fn wrapped_height(lines: &[Line<'_>], width: u16) -> u16 {
    let w = usize::from(width.max(1));
    lines
        .iter()
        .map(|l| match l.width() {
            n if n <= w => 1,
            n => n.div_ceil(w) + 1,
        })
        .sum::<usize>()
        .try_into()
        .unwrap_or(u16::MAX)
}

/// The popup's own key hints, from the same table as the key bar.
fn with_hints(app: &App, mut lines: Vec<Line<'static>>) -> Vec<Line<'static>> {
    let hints: Vec<String> = keys::bindings(app.context())
        .into_iter()
        .filter_map(|b| b.bar.map(|label| format!("{} {label}", keys::keys_label(b))))
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(hints.join(" · "), app.theme.dim));
    lines
}

// ---------------------------------------------------------------- help

fn help_lines(app: &App) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut lines = vec![Line::styled(app.view.title().to_string(), t.title)];
    lines.extend(keys::view_bindings(app.view).iter().map(|b| help_line(app, b)));
    lines.push(Line::raw(""));
    lines.push(Line::styled("Everywhere", t.title));
    lines.extend(
        keys::bindings(Context::View(app.view))
            .into_iter()
            .skip(keys::view_bindings(app.view).len())
            .map(|b| help_line(app, b)),
    );
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "In text fields: type to edit · Bksp deletes · Ctrl-u clears · Enter applies · Esc cancels",
        t.dim,
    ));
    lines.push(Line::styled("Writes always ask first; with --read-only they are disabled.", t.dim));
    lines
}

fn help_line(app: &App, b: &Binding) -> Line<'static> {
    let t = &app.theme;
    let mut spans = vec![Span::styled(format!("  {:<14} ", keys::keys_label(b)), t.column), Span::raw(b.help)];
    if app.read_only && b.command.is_write() {
        spans.push(Span::styled("  [disabled: read-only]", t.dim));
    }
    Line::from(spans)
}

// ---------------------------------------------------------------- confirmation

fn confirm_lines(app: &App, c: &Confirm) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut lines = match &c.op {
        WriteOp::Run(p) => run_lines(app, p),
        WriteOp::RunAll => {
            let n = app.config.pipelines.len();
            vec![
                Line::styled(format!("Run all {n} pipelines now, one after another?"), t.title),
                Line::raw(format!("{} commits are pending in total.", pending(app, None))),
            ]
        }
        WriteOp::Reset { plan, reason } => {
            let mut l = vec![
                Line::styled(
                    format!("Reset the tracker of {} {}?", plan.pipeline, describe::reset_target(&plan.target)),
                    t.title,
                ),
                Line::raw(format!("reason: {reason}")),
                Line::raw(""),
            ];
            l.extend(plan_lines(t, plan));
            l
        }
        WriteOp::Replay { replay, dry_run } => {
            let mut l = vec![
                Line::styled(format!("Replay {} into {}?", replay.pipeline, dry_run.target), t.title),
                Line::raw(format!("reason: {}", replay.reason.as_deref().unwrap_or_default())),
                Line::raw(""),
            ];
            l.extend(replay_lines(t, dry_run));
            if replay.into.is_none() {
                l.push(Line::styled("These keys get a new run_id in the production link table: downstream reprocesses them.", t.warn));
            }
            l
        }
        WriteOp::Pause { pipeline, paused: true, reason } => vec![
            Line::styled(format!("Pause pipeline {pipeline}?"), t.title),
            Line::raw(format!("reason: {reason}")),
            Line::raw("watch and run --all skip it and runs of it are refused until it is resumed;"),
            Line::raw("a run under way finishes. Resets, replays and maintenance still work."),
            Line::raw("Recorded in the tracker with your name (deltalink resume, or z again, resumes it)."),
        ],
        WriteOp::Pause { pipeline, paused: false, .. } => {
            let by = app.operator_pause(pipeline).map_or(String::new(), |p| format!("It is {}.", p.describe()));
            vec![
                Line::styled(format!("Resume pipeline {pipeline}?"), t.title),
                Line::raw(by),
                Line::raw("The next poll of watch (or run) reads what it missed meanwhile."),
            ]
        }
        WriteOp::Maintain { pipeline, plan } => {
            let mut l = vec![Line::styled(format!("Maintain the link table of {pipeline}?"), t.title), Line::raw("")];
            l.extend(plan.iter().flat_map(|u| crate::describe::table_upkeep(u).lines().map(|s| Line::raw(s.to_string())).collect::<Vec<_>>()));
            l.push(Line::raw("The rows and the change feed stay as they are; runs of this pipeline wait meanwhile."));
            l
        }
    };
    if let (Some(typed), Some(want)) = (&c.typed, c.op.typed_confirmation()) {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            format!("More than {} change rows: type `{want}` and Enter to confirm.", thousands(TYPED_CONFIRM_ROWS)),
            t.warn,
        ));
        lines.push(Line::from(vec![Span::styled("> ", t.title), Span::raw(format!("{typed}▏"))]));
    }
    lines
}

fn run_lines(app: &App, p: &str) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut lines = vec![
        Line::styled(format!("Run pipeline {p} now?"), t.title),
        Line::raw(format!(
            "It reads {} pending commits and merges the keys they touch into its link table.",
            pending(app, Some(p))
        )),
    ];
    if let Some(Ok(pv)) = app.preview.data.value.as_ref().filter(|_| app.preview.pipeline == p) {
        lines.push(Line::raw(format!(
            "The preview shows {} keys from {} change rows.",
            thousands(pv.distinct_keys),
            thousands(pv.change_rows)
        )));
    }
    lines
}

/// Pending commits of one pipeline (or all), as the last status saw them.
fn pending(app: &App, pipeline: Option<&str>) -> String {
    let Some(st) = &app.status.value else { return "an unknown number of".into() };
    let n: u64 = st
        .pipelines
        .iter()
        .filter(|p| pipeline.is_none_or(|name| p.name == name))
        .flat_map(|p| &p.upstreams)
        .filter_map(|u| u.lag_versions)
        .sum();
    thousands(n)
}

/// The dry run: per upstream current → new and what is re-read or skipped.
fn plan_lines(t: &Theme, plan: &ResetPlan) -> Vec<Line<'static>> {
    let w = plan.changes.iter().map(|c| c.upstream.chars().count()).max().unwrap_or(8).max(8);
    let mut lines = vec![Line::styled(
        format!(
            "{:<w$}  {:>9} → {:<9} {:>8}  {:<16} {:>11}",
            "upstream", "current", "new", "latest", "commits", "change rows"
        ),
        t.column,
    )];
    lines.extend(plan.changes.iter().map(|c| change_line(c, w)));
    lines.push(Line::raw(format!("total: {} change rows re-read or skipped", thousands(reset_rows(plan)))));
    lines
}

fn change_line(c: &ResetChange, w: usize) -> Line<'static> {
    let commits = match c.commits_delta {
        0 => "unchanged".to_string(),
        d if d > 0 => format!("re-read {}", thousands(d as u64)),
        d => format!("skip {}", thousands(d.unsigned_abs())),
    };
    Line::raw(format!(
        "{:<w$}  {:>9} → {:<9} {:>8}  {:<16} {:>11}",
        c.upstream,
        text::opt(c.current),
        c.new.map_or_else(|| "snapshot".to_string(), |v| v.to_string()),
        c.latest,
        commits,
        thousands(c.change_rows)
    ))
}

// ---------------------------------------------------------------- reset form

fn form_lines(app: &App, form: &ResetForm) -> Vec<Line<'static>> {
    let t = &app.theme;
    let value = if form.kind.takes_value() {
        format!("{}▏  {}", form.value, form.kind.hint())
    } else {
        "(none needed)".into()
    };
    let mut lines = vec![
        field(t, form, FormField::Scope, "Upstreams", format!("‹ {} ›", form.scope.label())),
        field(t, form, FormField::Target, "Target", format!("‹ {} ›", form.kind.label())),
        field(t, form, FormField::Value, "Value", value),
        field(t, form, FormField::Reason, "Reason", format!("{}▏", form.reason)),
        Line::raw(""),
    ];
    lines.extend(dry_run_lines(app, &form.plan, |plan| plan_lines(t, plan)));
    lines
}

/// Where a form's dry run stands: not asked yet, running, failed, or its result and what next.
fn dry_run_lines<T>(
    app: &App,
    plan: &Slot<Result<T, String>>,
    shown: impl FnOnce(&T) -> Vec<Line<'static>>,
) -> Vec<Line<'static>> {
    let t = &app.theme;
    match (&plan.value, plan.is_loading()) {
        (_, true) => vec![Line::styled(format!("{} dry run…", app.spinner()), t.warn)],
        (None, false) => vec![Line::styled("Enter runs a dry run: nothing is written until you confirm.", t.dim)],
        (Some(Err(e)), false) => e.lines().map(|l| Line::styled(l.to_string(), t.error)).collect(),
        (Some(Ok(plan)), false) => {
            let mut lines = vec![Line::styled("Dry run:", t.title)];
            lines.extend(shown(plan));
            lines.push(Line::styled("Enter again to confirm (a reason is required).", t.warn));
            lines
        }
    }
}

fn field(t: &Theme, form: &ResetForm, which: FormField, name: &str, value: String) -> Line<'static> {
    form_field(t, form.focus == which, name, value)
}

/// One line of a form: its name, and its value highlighted while focused.
fn form_field(t: &Theme, focused: bool, name: &str, value: String) -> Line<'static> {
    let marker = if focused { "▶ " } else { "  " };
    let style: Style = if focused { t.selected } else { t.popup };
    Line::from(vec![Span::styled(format!("{marker}{name:<10}"), t.column), Span::styled(value, style)])
}

// ---------------------------------------------------------------- replay form

fn replay_form_lines(app: &App, form: &ReplayForm) -> Vec<Line<'static>> {
    let t = &app.theme;
    let into = if form.into_production() {
        "▏  (empty: the pipeline's link table; a path or URI: a scratch table)".to_string()
    } else {
        format!("{}▏  (scratch table; relative to the config's folder)", form.into)
    };
    let r = |which, name, value| form_field(t, form.focus == which, name, value);
    let mut lines = vec![
        r(ReplayField::Scope, "Upstreams", format!("‹ {} ›", form.scope.label())),
        r(ReplayField::From, "From", format!("{}▏  version, inclusive", form.from)),
        r(ReplayField::To, "To", format!("{}▏  version, inclusive (empty: latest)", form.to)),
        r(ReplayField::Into, "Into", into),
        r(ReplayField::Reason, "Reason", format!("{}▏", form.reason)),
        Line::raw(""),
    ];
    lines.extend(dry_run_lines(app, &form.plan, |report| replay_lines(t, report)));
    lines
}

/// A replay's dry run: the ranges read and the keys it would write.
fn replay_lines(t: &Theme, r: &crate::engine::ReplayReport) -> Vec<Line<'static>> {
    let mut lines: Vec<Line<'static>> = r
        .upstreams
        .iter()
        .map(|u| match u.range {
            Some(g) => Line::raw(format!("  {:<28} versions {}..={}", u.upstream, g.from, g.to)),
            None => Line::raw(format!("  {:<28} nothing in range", u.upstream)),
        })
        .collect();
    lines.push(Line::styled(
        format!("{} change rows → {} keys, into {}", thousands(r.change_rows), thousands(r.distinct_keys), r.target),
        t.column,
    ));
    lines
}
