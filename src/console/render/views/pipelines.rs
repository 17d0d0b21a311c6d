//! The Pipelines view.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Cell, Paragraph, Row, Wrap};
use ratatui::Frame;

use crate::config::{display_uri, Pipeline, StartFrom};
use crate::ops::health::HealthState;

use crate::console::msg::View;
use crate::console::state::app::App;
use crate::console::text::{self, opt};
use crate::describe::{run_summary, thousands};
use crate::console::render::style::health_style;
use crate::console::render::widgets::{filter_note, longest, pane, table, TableSpec};

/// Below this body height the Pipelines detail pane replaces the table.
const SPLIT_MIN_HEIGHT: u16 = 22;

pub(super) fn pipelines(f: &mut Frame, area: Rect, app: &App) {
    let selected = app.pipeline_rows().get(app.selected(View::Pipelines)).copied();
    match (app.detail_open, selected) {
        (true, Some(p)) if area.height >= SPLIT_MIN_HEIGHT => {
            let [top, bottom] = Layout::vertical([Constraint::Min(6), Constraint::Length(13)]).areas(area);
            pipeline_table(f, top, app);
            pipeline_detail(f, bottom, app, p);
        }
        (true, Some(p)) => pipeline_detail(f, area, app, p),
        _ => pipeline_table(f, area, app),
    }
}

fn pipeline_table(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let pipelines = app.pipeline_rows();
    let title =
        format!("Pipelines {}/{}{}", pipelines.len(), app.config.pipelines.len(), filter_note(app, View::Pipelines));
    let name_w = longest(pipelines.iter().map(|p| p.name.as_str()), 8, 26);
    let up_w = longest(pipelines.iter().flat_map(|p| p.sources.iter().map(|s| s.upstream.as_str())), 8, 28);
    // Processed versions and link rows are also in the detail pane; the last run needs the
    // room more.
    let consumers = pipelines.iter().any(|p| !p.consumers.is_empty());
    let cols = PipelineCols { processed: area.width >= 130, link_rows: area.width >= 110, consumers };
    let mut header = vec!["Pipeline", "Health", "Upstream"];
    let mut widths = vec![Constraint::Length(name_w), Constraint::Length(7), Constraint::Length(up_w)];
    if cols.processed {
        header.push("Processed");
        widths.push(Constraint::Length(9));
    }
    header.push("Pending");
    widths.push(Constraint::Length(8));
    if cols.link_rows {
        header.push("Link rows");
        widths.push(Constraint::Length(9));
    }
    if cols.consumers {
        // A name and what waits for it: `daily_report 1,516 · 1d12h`.
        let names = pipelines.iter().flat_map(|p| p.consumers.iter().map(|c| c.name.as_str()));
        header.push("Consumers");
        widths.push(Constraint::Length(longest(names, 9, 20) + 15));
    }
    header.push("Last run");
    widths.push(Constraint::Fill(1));
    let rows = pipelines.iter().map(|p| pipeline_row(app, p, cols)).collect();
    table(f, area, app, TableSpec { block: pane(title, t), header, widths, rows });
}

#[derive(Clone, Copy)]
struct PipelineCols {
    processed: bool,
    link_rows: bool,
    /// Shown when some pipeline declares downstream consumers.
    consumers: bool,
}

/// One row per pipeline, one line per upstream it reads.
fn pipeline_row<'a>(app: &App, p: &Pipeline, cols: PipelineCols) -> Row<'a> {
    let t = &app.theme;
    let st = app.pipeline_status(&p.name);
    let ups = p.upstream_names();
    let per_up = |u: &String| st.and_then(|s| s.upstreams.iter().find(|x| &x.upstream == u));
    let processed: Vec<Line> =
        ups.iter().map(|u| Line::from(opt(per_up(u).and_then(|x| x.processed_version)))).collect();
    let pending: Vec<Line> = ups
        .iter()
        .map(|u| match per_up(u).and_then(|x| x.lag_versions) {
            Some(0) => Line::styled("✓", t.ok),
            Some(n) => Line::styled(format!("+{}", thousands(n)), t.warn),
            None => Line::from("?"),
        })
        .collect();
    let health = match st {
        Some(s) => Line::styled(s.health.state.word(), health_style(t, s.health.state)),
        None => Line::from("?"),
    };
    let mut cells = vec![
        Cell::from(p.name.clone()),
        Cell::from(health),
        Cell::from(Text::from(ups.iter().map(|u| Line::from(u.clone())).collect::<Vec<_>>())),
    ];
    if cols.processed {
        cells.push(Cell::from(Text::from(processed)));
    }
    cells.push(Cell::from(Text::from(pending)));
    if cols.link_rows {
        cells.push(Cell::from(st.and_then(|s| s.link_rows).map_or("?".into(), thousands)));
    }
    if cols.consumers {
        cells.push(Cell::from(Text::from(consumer_lines(app, p))));
    }
    cells.push(Cell::from(last_run(app, &p.name)));
    Row::new(cells).height(ups.len().max(p.consumers.len()).max(1) as u16)
}

/// One line per consumer: caught up, or what waits for it and how old the oldest change is.
fn consumer_lines(app: &App, p: &Pipeline) -> Vec<Line<'static>> {
    let t = &app.theme;
    let st = app.pipeline_status(&p.name);
    p.consumers
        .iter()
        .map(|c| match st.and_then(|s| s.consumers.iter().find(|x| x.name == c.name)) {
            Some(x) if x.keys_waiting == 0 => Line::styled(format!("{} ✓", c.name), t.ok),
            Some(x) => Line::styled(
                format!("{} {} · {}", c.name, thousands(x.keys_waiting), text::age(x.lag_seconds)),
                if x.health.state == HealthState::Ok { t.warn } else { health_style(t, x.health.state) },
            ),
            None => Line::from(format!("{} ?", c.name)),
        })
        .collect()
}

/// The Last run cell: running now, run in this session, or what the tracker says.
fn last_run(app: &App, name: &str) -> Line<'static> {
    let t = &app.theme;
    let running = app.tasks.iter().find(|task| {
        task.write && (task.current.as_deref() == Some(name) || task.label == format!("run {name}"))
    });
    if let Some(task) = running {
        let step = task.step.filter(|_| task.current.as_deref() == Some(name)).map_or("starting", crate::describe::step_label);
        return Line::styled(format!("{} running: {step}", app.spinner()), t.warn);
    }
    let pending = app.pipeline_status(name).and_then(|s| s.upstreams.iter().find_map(|u| u.pending_run_id));
    if let Some(run) = pending {
        // The detail pane and Tracker say more; the next run recovers it.
        return Line::styled(format!("run #{run} interrupted"), t.warn);
    }
    match app.last_runs.get(name) {
        Some(last) => match &last.result {
            Ok(r) => Line::styled(format!("{} {}", text::clock(&last.at), text::run_cell(r)), t.ok),
            Err(e) => Line::styled(format!("{} FAILED: {}", text::clock(&last.at), text::first_line(e)), t.error),
        },
        // Not run from this console: the link table's last write says what another process
        // (watch, a cron job, another operator) did and when.
        None => {
            let st = app.pipeline_status(name);
            match (st.and_then(|s| s.last_write.as_ref()), st.and_then(|s| s.last_run_id)) {
                (Some(w), _) => Line::styled(text::write_cell(w, app.now()), t.dim),
                (None, Some(id)) => Line::styled(format!("run #{id}"), t.dim),
                (None, None) => Line::styled("never run", t.dim),
            }
        }
    }
}

fn pipeline_detail(f: &mut Frame, area: Rect, app: &App, p: &Pipeline) {
    let t = &app.theme;
    let st = app.pipeline_status(&p.name);
    let start = match p.start {
        StartFrom::Earliest => "earliest",
        StartFrom::Latest => "latest",
    };
    let mut lines = vec![
        Line::from(format!(
            "key ({})  ·  starts at {start}  ·  resets {}",
            p.key.join(", "),
            if p.reset_allowed { "allowed" } else { "not allowed" }
        )),
        Line::from(format!(
            "link table {}  ·  {} rows  ·  last run id {}",
            display_uri(&p.link_table),
            st.and_then(|s| s.link_rows).map_or("?".into(), thousands),
            opt(st.and_then(|s| s.last_run_id))
        )),
    ];
    if let Some(s) = st {
        lines.push(Line::from(vec![
            Span::raw("health "),
            Span::styled(s.health.state.word(), health_style(t, s.health.state)),
            Span::raw(format!(": {}", s.health.reason)),
        ]));
    }
    let ups = st.map(|s| s.upstreams.as_slice()).unwrap_or_default();
    // Fits 80 columns: the name column as wide as the longest name, the pending run only when
    // a run is pending.
    let w = ups.iter().map(|u| u.upstream.chars().count()).max().unwrap_or(8).max(8);
    let pending_run = ups.iter().any(|u| u.pending_run_id.is_some());
    let row = |cells: [String; 6], run: String| {
        let [name, processed, latest, lag, rows, age] = cells;
        let run = if pending_run { format!("  {run}") } else { String::new() };
        format!("{name:<w$} {processed:>9} {latest:>7} {lag:>5} {rows:>9} {age:>8}{run}")
    };
    let header = ["upstream", "processed", "latest", "lag", "chg rows", "lag time"].map(String::from);
    lines.push(Line::styled(row(header, "pending run".into()), t.column));
    let pending = (app.pending_rows.pipeline == p.name).then_some(&app.pending_rows);
    for u in ups {
        // Change rows in the pending versions, counted in the background.
        let rows = match (u.lag_versions, pending.and_then(|r| r.count(&u.upstream))) {
            (Some(0), _) => "0".to_string(),
            (_, Some(Ok(n))) => thousands(*n),
            (_, Some(Err(_))) => "error".to_string(),
            (_, None) if pending.is_some_and(|r| r.counts.is_loading()) => app.spinner().to_string(),
            (_, None) => "?".to_string(),
        };
        let cells = [
            u.upstream.clone(),
            opt(u.processed_version),
            opt(u.latest_version),
            opt(u.lag_versions),
            rows,
            u.lag_seconds.map_or("-".into(), text::age),
        ];
        lines.push(Line::from(row(cells, opt(u.pending_run_id))));
    }
    // The retention countdown of the upstream closest to losing unread commits.
    let closest = ups.iter().filter_map(|u| Some((u, u.retention_seconds_left?))).min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((u, left)) = closest {
        let when = if left > 0.0 { format!("in {}", crate::util::time::human_seconds(left)) } else { "now".into() };
        let style = if u.health.state == HealthState::AtRisk { t.error } else { t.dim };
        lines.push(Line::styled(
            format!("retention: unread commits of {} can become unreadable {when} ({})", u.upstream, u.retention_note.as_deref().unwrap_or("")),
            style,
        ));
    }
    lines.extend(consumer_detail(app, st.map(|s| s.consumers.as_slice()).unwrap_or_default()));
    if let Some(w) = st.and_then(|s| s.last_write.as_ref()) {
        lines.push(Line::from(format!("last write: {}", w.describe())));
    }
    if let Some(last) = app.last_runs.get(&p.name) {
        let what = match &last.result {
            Ok(r) => Span::styled(run_summary(r), t.ok),
            Err(e) => Span::styled(format!("FAILED: {e}"), t.error),
        };
        lines.push(Line::from(vec![Span::raw(format!("last run at {}: ", text::clock(&last.at))), what]));
    }
    let block = pane(format!("{} · Enter closes", p.name), t);
    f.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}

/// The detail pane's consumers: how far each has acked, what waits, since when.
fn consumer_detail(app: &App, consumers: &[crate::ops::status::ConsumerStatus]) -> Vec<Line<'static>> {
    let t = &app.theme;
    if consumers.is_empty() {
        return Vec::new();
    }
    let w = consumers.iter().map(|c| c.name.chars().count()).max().unwrap_or(8).max(8);
    let mut lines = vec![Line::styled(format!("{:<w$} {:>9} {:>5} {:>9} {:>8}  reading", "consumer", "acked run", "runs", "keys", "lag time"), t.column)];
    for c in consumers {
        let reading = match (c.reading_version, c.reading_through_run_id) {
            (Some(v), Some(r)) if r > c.acked_run_id => format!("runs ..={r} at v{v}"),
            _ => "-".into(),
        };
        let line = format!("{:<w$} {:>9} {:>5} {:>9} {:>8}  {reading}", c.name, c.acked_run_id, c.runs_waiting, thousands(c.keys_waiting), text::age(c.lag_seconds));
        lines.push(Line::styled(line, health_style(t, c.health.state)));
    }
    lines
}
