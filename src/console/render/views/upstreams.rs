//! The Upstreams view.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Cell, Row};
use ratatui::Frame;

use crate::console::msg::View;
use crate::console::state::app::{App, UpstreamRow};
use crate::console::text::{self, opt};
use crate::console::theme::Theme;
use crate::console::render::style::health_style;
use crate::ops::health::HealthState;
use crate::console::render::widgets::{filter_note, longest, pane, table, TableSpec};

pub(super) fn upstreams(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let rows = app.upstream_rows();
    let title = format!(
        "Upstreams {}/{} · sort: {}{}",
        rows.len(),
        app.config.upstreams.len(),
        app.upstream_sort.label(),
        filter_note(app, View::Upstreams)
    );
    // Narrow terminals keep what matters for lag; Enter shows every field.
    let cols = UpstreamCols { last_commit: area.width >= 110, operation: area.width >= 130 };
    let name_w = longest(rows.iter().map(|r| r.name), 8, 32);
    let mut header = vec!["Upstream", "Latest", "CDF", "Health"];
    let mut widths = vec![Constraint::Length(name_w), Constraint::Length(7), Constraint::Length(4), Constraint::Length(7)];
    if cols.last_commit {
        header.push("Last commit (UTC)");
        widths.push(Constraint::Length(19));
    }
    if cols.operation {
        header.push("Operation");
        widths.push(Constraint::Length(12));
    }
    header.push("Read by: pipeline@processed, lag");
    widths.push(Constraint::Fill(1));
    let rows = rows.iter().map(|r| upstream_row(r, cols, t)).collect();
    table(f, area, app, TableSpec { block: pane(title, t), header, widths, rows });
}

#[derive(Clone, Copy)]
struct UpstreamCols {
    last_commit: bool,
    operation: bool,
}

fn upstream_row<'a>(r: &UpstreamRow<'a>, cols: UpstreamCols, t: &Theme) -> Row<'a> {
    let mut cells = vec![Cell::from(r.name.to_string())];
    let Some(s) = r.status else {
        cells.extend(["…", "…", "…"].map(Cell::from));
        return Row::new(cells);
    };
    let optional = usize::from(cols.last_commit) + usize::from(cols.operation);
    if let Some(e) = &s.error {
        cells.push(Cell::from(Span::styled("ERROR", t.error)));
        cells.push(Cell::from(""));
        cells.push(health_cell(r, t));
        cells.extend(std::iter::repeat_n(Cell::from(""), optional));
        cells.push(Cell::from(Span::styled(text::first_line(e).to_string(), t.error)));
        return Row::new(cells);
    }
    cells.push(Cell::from(opt(s.latest_version)));
    cells.push(if s.cdf_enabled { Cell::from("on") } else { Cell::from(Span::styled("OFF", t.error)) });
    cells.push(health_cell(r, t));
    if cols.last_commit {
        cells.push(Cell::from(s.last_commit_ts.as_deref().map_or("-".into(), text::utc_text)));
    }
    if cols.operation {
        cells.push(Cell::from(s.last_operation.clone().unwrap_or_default()));
    }
    // One line per reading pipeline, so long names never hide another reader's lag.
    let readers: Vec<Line> = r
        .readers
        .iter()
        .map(|(p, u)| {
            let mut line = match (u.processed_version, u.lag_versions) {
                (None, _) => Line::styled(format!("{p} never read"), t.warn),
                (Some(v), Some(0)) => Line::styled(format!("{p}@{v} ✓"), t.ok),
                (Some(v), lag) => Line::styled(format!("{p}@{v} lag {}", opt(lag)), t.warn),
            };
            // The verdict only when it needs someone: a word, so it reads without colour.
            if u.health.state != HealthState::Ok {
                line.push_span(Span::styled(format!(" {}", u.health.state.word()), health_style(t, u.health.state)));
            }
            line
        })
        .collect();
    let height = readers.len().max(1) as u16;
    cells.push(Cell::from(Text::from(readers)));
    Row::new(cells).height(height)
}

/// The worst verdict of the pipelines reading the upstream, as a word in its colour (so it reads
/// in `NO_COLOR` too); `-` when no pipeline reads it.
fn health_cell<'a>(r: &UpstreamRow<'a>, t: &Theme) -> Cell<'a> {
    match r.readers.iter().map(|(_, u)| u.health.state).max() {
        Some(state) => Cell::from(Span::styled(state.word(), health_style(t, state))),
        None => Cell::from(Span::styled("-", t.dim)),
    }
}
