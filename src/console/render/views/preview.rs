//! The Preview view.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row};
use ratatui::Frame;

use crate::engine::Preview;

use crate::console::msg::View;
use crate::console::state::app::App;
use crate::console::msg::PREVIEW_LIMIT;
use crate::describe::thousands;
use crate::console::render::widgets::{error_text, filter_note, longest, message, pane, table, TableSpec};

pub(super) fn preview(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let p = &app.preview;
    let title = format!("Preview · {} · r runs it", p.pipeline);
    match (&p.data.value, p.data.loading) {
        (None, Some(_)) => message(
            f,
            area,
            pane(title, t),
            format!("{} computing what the next run of {} would write… (c cancels)", app.spinner(), p.pipeline),
        ),
        (None, None) => message(f, area, pane(title, t), "no pipeline selected"),
        (Some(Err(e)), _) => message(f, area, pane(title, t), error_text(t, e)),
        (Some(Ok(data)), _) => preview_data(f, area, app, data, title),
    }
}

fn preview_data(f: &mut Frame, area: Rect, app: &App, data: &Preview, title: String) {
    let t = &app.theme;
    let mut lines = vec![Line::from(format!(
        "{} change rows → {} distinct keys · {} NULL-key rows skipped",
        thousands(data.change_rows),
        thousands(data.distinct_keys),
        thousands(data.null_key_rows)
    ))];
    let up_w = longest(data.upstreams.iter().map(|u| u.upstream.as_str()), 8, 32) as usize;
    lines.extend(data.upstreams.iter().map(|u| Line::from(format!("{:<up_w$}  {}", u.upstream, crate::describe::read_range(u)))));
    let summary_h = (lines.len() as u16 + 2).min(area.height / 2);
    let [top, bottom] = Layout::vertical([Constraint::Length(summary_h), Constraint::Min(3)]).areas(area);
    f.render_widget(Paragraph::new(lines).block(pane(title, t)), top);

    let rows = app.preview_rows();
    let shown =
        if data.rows.len() >= PREVIEW_LIMIT { format!("first {PREVIEW_LIMIT}") } else { data.rows.len().to_string() };
    let keys_title =
        format!("Affected keys by commit · rows {}/{shown}{}", rows.len(), filter_note(app, View::Preview));
    let key_header = format!("Key ({})", data.key.join(", "));
    let keys: Vec<String> = rows.iter().map(|r| r.key.join(", ")).collect();
    let key_w = longest(keys.iter().map(String::as_str).chain([key_header.as_str()]), 8, 40);
    let widths = vec![
        Constraint::Length(key_w),
        Constraint::Length(up_w as u16),
        Constraint::Length(8),
        Constraint::Length(16),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let table_rows = rows
        .iter()
        .zip(keys)
        .map(|(r, key)| {
            Row::new([
                key,
                r.upstream.clone(),
                r.commit_version.to_string(),
                r.change_type.clone(),
                thousands(r.change_rows),
                r.commit_time.as_deref().map_or("-".into(), |t| t.replace('T', " ").trim_end_matches('Z').to_string()),
            ])
        })
        .collect();
    let header = vec![key_header.as_str(), "Upstream", "Version", "Change", "Rows", "Committed (UTC)"];
    table(f, bottom, app, TableSpec { block: pane(keys_title, t), header, widths, rows: table_rows });
}
