//! The Link table view.

use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Cell, Row};
use ratatui::Frame;

use crate::store::link::LinkSort;

use crate::console::state::app::App;
use crate::describe::thousands;
use crate::console::render::widgets::{error_text, longest, message, pane, table, TableSpec};

fn link_sort_label(s: LinkSort) -> &'static str {
    match s {
        LinkSort::RunIdDesc => "run id ↓",
        LinkSort::ChangeTimeDesc => "change time ↓",
        LinkSort::Key => "key",
    }
}

pub(super) fn link(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let l = &app.link;
    let mut title = format!("Link table · {} · sort: {}", l.pipeline, link_sort_label(l.query.sort));
    if let Some(filter) = &l.query.filter {
        title += &format!(" · key contains “{filter}”");
    }
    match (&l.page.value, l.page.loading) {
        (None, Some(_)) => message(f, area, pane(title, t), format!("{} reading the link table…", app.spinner())),
        (None, None) => message(f, area, pane(title, t), "no pipeline selected"),
        (Some(Err(e)), _) => message(f, area, pane(title, t), error_text(t, e)),
        (Some(Ok(page)), _) if page.columns.is_empty() => message(
            f,
            area,
            pane(title, t),
            format!(
                "The link table of {} does not exist yet: the first run that writes keys creates it (r runs).",
                l.pipeline
            ),
        ),
        (Some(Ok(page)), loading) => {
            let first = l.query.offset + usize::from(!page.rows.is_empty());
            let last = l.query.offset + page.rows.len();
            let busy = if loading.is_some() { format!(" {}", app.spinner()) } else { String::new() };
            let title = format!("{title} · rows {first}–{last} of {}{busy}", thousands(page.total_matching));
            let widths: Vec<Constraint> = (0..page.columns.len())
                .map(|i| {
                    let values = page.rows.iter().map(|r| r.get(i).map_or("", String::as_str));
                    let w = longest(values.chain([page.columns[i].as_str()]), 4, 30);
                    if i + 1 == page.columns.len() {
                        Constraint::Fill(1)
                    } else {
                        Constraint::Length(w)
                    }
                })
                .collect();
            let rows = page.rows.iter().map(|r| Row::new(r.iter().map(|c| Cell::from(c.clone())))).collect();
            let header = page.columns.iter().map(String::as_str).collect();
            table(f, area, app, TableSpec { block: pane(title, t), header, widths, rows });
        }
    }
}
