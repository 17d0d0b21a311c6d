//! Building blocks every view draws with: a titled pane, a selectable table that fits its
//! columns, a message in place of a table.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Cell, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;


use crate::console::msg::View;
use crate::console::state::app::App;
use crate::console::theme::Theme;

pub(crate) fn pane<'a>(title: String, t: &Theme) -> Block<'a> {
    Block::bordered().border_style(t.border).title(Span::styled(format!(" {title} "), t.title))
}

/// Width of the selection marker column (`› `) of every selectable table.
const MARKER: u16 = 2;

/// A table with the theme's header and selection styles, the selection kept visible.
pub(crate) fn table(f: &mut Frame, area: Rect, app: &App, spec: TableSpec<'_>) {
    let t = &app.theme;
    let header = Row::new(spec.header.iter().map(|h| Cell::from(*h))).style(t.column);
    let n = spec.rows.len();
    let widths = fit_columns(spec.widths, spec.block.inner(area).width.saturating_sub(MARKER));
    let table = Table::new(spec.rows, widths)
        .header(header)
        .block(spec.block)
        .row_highlight_style(t.selected)
        .highlight_symbol("› ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected((n > 0).then(|| app.selected(app.view)));
    f.render_stateful_widget(table, area, &mut state);
}

/// Column widths that fit `width`, cut from the right when the wanted ones do not. Left to
/// the layout solver, an overflowing table has many equally bad solutions and the solver picks
/// a different one from run to run (columns jump); cutting from the right is stable and keeps
/// the identifying first columns whole.
pub(crate) fn fit_columns(widths: Vec<Constraint>, width: u16) -> Vec<Constraint> {
    let gaps = widths.len().saturating_sub(1) as u16; // ratatui's column spacing is 1
    let wanted = |c: &Constraint| match c {
        Constraint::Length(n) | Constraint::Min(n) => *n,
        _ => 0,
    };
    if widths.iter().map(wanted).sum::<u16>() + gaps <= width {
        return widths;
    }
    let mut left = width.saturating_sub(gaps);
    widths
        .iter()
        .map(|c| {
            let n = wanted(c).min(left);
            left -= n;
            Constraint::Length(n)
        })
        .collect()
}

pub(crate) struct TableSpec<'a> {
    pub(crate) block: Block<'a>,
    pub(crate) header: Vec<&'a str>,
    pub(crate) widths: Vec<Constraint>,
    pub(crate) rows: Vec<Row<'a>>,
}

/// A bordered message in place of a table (loading, errors, empty states).
pub(crate) fn message(f: &mut Frame, area: Rect, block: Block<'_>, text: impl Into<Text<'static>>) {
    f.render_widget(Paragraph::new(text).block(block).wrap(Wrap { trim: false }), area);
}

pub(crate) fn error_text(t: &Theme, e: &str) -> Text<'static> {
    Text::from(e.lines().map(|l| Line::styled(l.to_string(), t.error)).collect::<Vec<_>>())
}

pub(crate) fn longest<'a>(items: impl Iterator<Item = &'a str>, min: usize, max: usize) -> u16 {
    items.map(|s| s.chars().count()).max().unwrap_or(0).clamp(min, max) as u16
}

pub(crate) fn filter_note(app: &App, view: View) -> String {
    match app.filter(view) {
        "" => String::new(),
        f => format!(" · filter “{f}”"),
    }
}
