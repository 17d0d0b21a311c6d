//! The Activity view.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};
use ratatui::Frame;


use crate::console::msg::View;
use crate::console::state::app::App;
use crate::console::text::{self};
use crate::console::render::style::level_style;
use crate::console::render::widgets::{filter_note, message, pane, table, TableSpec};

pub(super) fn activity(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let entries = app.activity_rows();
    let title = format!("Activity · {} entries{}", entries.len(), filter_note(app, View::Activity));
    if entries.is_empty() && app.filter(View::Activity).is_empty() {
        return message(
            f,
            area,
            pane(title, t),
            "Nothing yet: runs, resets and errors are logged here (newest first).",
        );
    }
    let rows = entries
        .iter()
        .map(|e| {
            let level = match e.level {
                crate::console::state::app::Level::Info => "info",
                crate::console::state::app::Level::Ok => "ok",
                crate::console::state::app::Level::Warn => "warn",
                crate::console::state::app::Level::Error => "ERROR",
            };
            let style: Style = level_style(t, e.level);
            Row::new([
                Cell::from(text::clock(&e.at)),
                Cell::from(Span::styled(level, style)),
                Cell::from(Span::styled(text::first_line(&e.text).to_string(), style)),
            ])
        })
        .collect();
    let widths = vec![Constraint::Length(8), Constraint::Length(5), Constraint::Fill(1)];
    table(f, area, app, TableSpec { block: pane(title, t), header: vec!["Time", "Level", "What"], widths, rows });
}
