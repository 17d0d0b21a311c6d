//! The Tracker view.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;


use crate::console::msg::View;
use crate::console::state::app::App;
use crate::console::text::{self, opt};
use crate::console::render::widgets::{error_text, filter_note, fit_columns, longest, message, pane, table, TableSpec};

/// Below this body height the Tracker view hides the audit trail.
const AUDIT_MIN_HEIGHT: u16 = 16;

pub(super) fn tracker(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let title = format!("Tracker{}", filter_note(app, View::Tracker));
    match (&app.tracker.data.value, app.tracker.data.loading) {
        (None, _) => message(f, area, pane(title, t), format!("{} reading the tracker…", app.spinner())),
        (Some(Err(e)), _) => message(f, area, pane(title, t), error_text(t, e)),
        (Some(Ok(_)), _) if area.height >= AUDIT_MIN_HEIGHT => {
            let [top, bottom] = Layout::vertical([Constraint::Percentage(55), Constraint::Min(5)]).areas(area);
            tracker_rows(f, top, app, title);
            audit_trail(f, bottom, app);
        }
        (Some(Ok(_)), _) => tracker_rows(f, area, app, title),
    }
}

fn tracker_rows(f: &mut Frame, area: Rect, app: &App, title: String) {
    let t = &app.theme;
    let rows = app.tracker_rows();
    if rows.is_empty() && app.filter(View::Tracker).is_empty() {
        return message(
            f,
            area,
            pane(title, t),
            "The tracker has no rows yet: a pipeline gets its rows on its first run.",
        );
    }
    let wide = area.width >= 110;
    let p_w = longest(rows.iter().map(|r| r.pipeline_name.as_str()), 8, 26);
    let u_w = longest(rows.iter().map(|r| r.upstream.as_str()), 8, 28);
    let mut header = vec!["Pipeline", "Upstream", "Processed", "Run", "Pending", "Updated (UTC)"];
    let mut widths = vec![
        Constraint::Length(p_w),
        Constraint::Length(u_w),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(11),
        Constraint::Length(19),
    ];
    if wide {
        header.extend(["By", "Note"]);
        widths.extend([Constraint::Length(10), Constraint::Fill(1)]);
    }
    let ts = |v: Option<i64>| v.map_or("-".into(), text::utc_ms);
    let table_rows = rows
        .iter()
        .map(|r| {
            let pending = match (r.pending_version, r.pending_run_id) {
                (None, None) => Cell::from("-"),
                (v, id) => Cell::from(Span::styled(format!("v{} #{}", opt(v), opt(id)), t.warn)),
            };
            let mut cells = vec![
                Cell::from(r.pipeline_name.clone()),
                Cell::from(r.upstream.clone()),
                Cell::from(opt(r.last_processed_version)),
                Cell::from(opt(r.run_id)),
                pending,
                Cell::from(ts(r.updated_at)),
            ];
            if wide {
                cells.push(Cell::from(r.updated_by.clone().unwrap_or_default()));
                cells.push(Cell::from(r.note.clone().unwrap_or_default()));
            }
            Row::new(cells)
        })
        .collect();
    let hint = if app.read_only { "" } else { " · e resets · P replays" };
    let title = format!("{title} · {} rows{hint}", rows.len());
    table(f, area, app, TableSpec { block: pane(title, t), header, widths, rows: table_rows });
}

fn audit_trail(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let history = app.history();
    let rows: Vec<Row> = history
        .iter()
        .map(|h| {
            let why = match (&h.reason, &h.details) {
                (Some(r), _) => r.clone(),
                (None, serde_json::Value::Null) => String::new(),
                (None, d) => d.to_string(),
            };
            Row::new([
                h.version.to_string(),
                h.timestamp_ms.map_or("-".into(), text::utc_ms),
                h.action.clone().unwrap_or_else(|| h.operation.clone()),
                h.pipeline.clone().unwrap_or_default(),
                h.operator.clone().unwrap_or_default(),
                why,
            ])
        })
        .collect();
    let widths = vec![
        Constraint::Length(4),
        Constraint::Length(19),
        Constraint::Length(14),
        Constraint::Length(24),
        Constraint::Length(10),
        Constraint::Fill(1),
    ];
    let header = Row::new(["Ver", "Time (UTC)", "Action", "Pipeline", "Operator", "Reason / details"]).style(t.column);
    let block = pane(format!("Audit trail · last {} tracker commits", history.len()), t);
    // Not selectable: the audit trail is read-only context for the rows above.
    let widths = fit_columns(widths, block.inner(area).width);
    f.render_widget(Table::new(rows, widths).header(header).block(block), area);
}
