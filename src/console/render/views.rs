//! The six views. Each is a table (plus a pane where there is room) drawn from App state;
//! panes collapse on small terminals so 80×24 stays usable.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Cell, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use crate::config::{display_uri, Pipeline, StartFrom};
use crate::store::link::LinkSort;
use crate::engine::Preview;

use crate::console::msg::View;
use crate::console::state::app::{App, TaskKind, UpstreamRow};
use crate::console::msg::PREVIEW_LIMIT;
use crate::console::text::{self, opt, thousands};
use crate::console::theme::Theme;
use crate::console::render::style::level_style;

/// Below this body height the Pipelines detail pane replaces the table.
const SPLIT_MIN_HEIGHT: u16 = 22;
/// Below this body height the Tracker view hides the audit trail.
const AUDIT_MIN_HEIGHT: u16 = 16;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    match app.view {
        View::Upstreams => upstreams(f, area, app),
        View::Pipelines => pipelines(f, area, app),
        View::Link => link(f, area, app),
        View::Preview => preview(f, area, app),
        View::Tracker => tracker(f, area, app),
        View::Activity => activity(f, area, app),
    }
}

fn pane<'a>(title: String, t: &Theme) -> Block<'a> {
    Block::bordered().border_style(t.border).title(Span::styled(format!(" {title} "), t.title))
}

/// Width of the selection marker column (`› `) of every selectable table.
const MARKER: u16 = 2;

/// A table with the theme's header and selection styles, the selection kept visible.
fn table(f: &mut Frame, area: Rect, app: &App, spec: TableSpec<'_>) {
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
fn fit_columns(widths: Vec<Constraint>, width: u16) -> Vec<Constraint> {
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

struct TableSpec<'a> {
    block: Block<'a>,
    header: Vec<&'a str>,
    widths: Vec<Constraint>,
    rows: Vec<Row<'a>>,
}

/// A bordered message in place of a table (loading, errors, empty states).
fn message(f: &mut Frame, area: Rect, block: Block<'_>, text: impl Into<Text<'static>>) {
    f.render_widget(Paragraph::new(text).block(block).wrap(Wrap { trim: false }), area);
}

fn error_text(t: &Theme, e: &str) -> Text<'static> {
    Text::from(e.lines().map(|l| Line::styled(l.to_string(), t.error)).collect::<Vec<_>>())
}

fn longest<'a>(items: impl Iterator<Item = &'a str>, min: usize, max: usize) -> u16 {
    items.map(|s| s.chars().count()).max().unwrap_or(0).clamp(min, max) as u16
}

fn filter_note(app: &App, view: View) -> String {
    match app.filter(view) {
        "" => String::new(),
        f => format!(" · filter “{f}”"),
    }
}

// ---------------------------------------------------------------- Upstreams

fn upstreams(f: &mut Frame, area: Rect, app: &App) {
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
    let cols = UpstreamCols { last_commit: area.width >= 100, operation: area.width >= 120 };
    let name_w = longest(rows.iter().map(|r| r.name), 8, 32);
    let mut header = vec!["Upstream", "Latest", "CDF"];
    let mut widths = vec![Constraint::Length(name_w), Constraint::Length(7), Constraint::Length(4)];
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
        cells.extend(["…", "…"].map(Cell::from));
        return Row::new(cells);
    };
    let optional = usize::from(cols.last_commit) + usize::from(cols.operation);
    if let Some(e) = &s.error {
        cells.push(Cell::from(Span::styled("ERROR", t.error)));
        cells.extend(std::iter::repeat_n(Cell::from(""), 1 + optional));
        cells.push(Cell::from(Span::styled(text::first_line(e).to_string(), t.error)));
        return Row::new(cells);
    }
    cells.push(Cell::from(opt(s.latest_version)));
    cells.push(if s.cdf_enabled { Cell::from("on") } else { Cell::from(Span::styled("OFF", t.error)) });
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
        .map(|(p, u)| match (u.processed_version, u.lag_versions) {
            (None, _) => Line::styled(format!("{p} never read"), t.warn),
            (Some(v), Some(0)) => Line::styled(format!("{p}@{v} ✓"), t.ok),
            (Some(v), lag) => Line::styled(format!("{p}@{v} lag {}", opt(lag)), t.warn),
        })
        .collect();
    let height = readers.len().max(1) as u16;
    cells.push(Cell::from(Text::from(readers)));
    Row::new(cells).height(height)
}

// ---------------------------------------------------------------- Pipelines

fn pipelines(f: &mut Frame, area: Rect, app: &App) {
    let selected = app.pipeline_rows().get(app.selected(View::Pipelines)).copied();
    match (app.detail_open, selected) {
        (true, Some(p)) if area.height >= SPLIT_MIN_HEIGHT => {
            let [top, bottom] = Layout::vertical([Constraint::Min(6), Constraint::Length(11)]).areas(area);
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
    // Processed versions are also in the detail pane; the last run needs the room more.
    let cols = PipelineCols { processed: area.width >= 120, link_rows: area.width >= 100 };
    let mut header = vec!["Pipeline", "Upstream"];
    let mut widths = vec![Constraint::Length(name_w), Constraint::Length(up_w)];
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
    header.push("Last run");
    widths.push(Constraint::Fill(1));
    let rows = pipelines.iter().map(|p| pipeline_row(app, p, cols)).collect();
    table(f, area, app, TableSpec { block: pane(title, t), header, widths, rows });
}

#[derive(Clone, Copy)]
struct PipelineCols {
    processed: bool,
    link_rows: bool,
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
    let mut cells = vec![
        Cell::from(p.name.clone()),
        Cell::from(Text::from(ups.iter().map(|u| Line::from(u.clone())).collect::<Vec<_>>())),
    ];
    if cols.processed {
        cells.push(Cell::from(Text::from(processed)));
    }
    cells.push(Cell::from(Text::from(pending)));
    if cols.link_rows {
        cells.push(Cell::from(st.and_then(|s| s.link_rows).map_or("?".into(), thousands)));
    }
    cells.push(Cell::from(last_run(app, &p.name)));
    Row::new(cells).height(ups.len().max(1) as u16)
}

/// The Last run cell: running now, run in this session, or what the tracker says.
fn last_run(app: &App, name: &str) -> Line<'static> {
    let t = &app.theme;
    let running = app.tasks.iter().find(|task| {
        task.kind == TaskKind::Write && (task.current.as_deref() == Some(name) || task.label == format!("run {name}"))
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
            (_, None) if pending.is_some_and(|r| r.loading.is_some()) => app.spinner().to_string(),
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
    if let Some(w) = st.and_then(|s| s.last_write.as_ref()) {
        lines.push(Line::from(format!("last write: {}", w.describe())));
    }
    if let Some(last) = app.last_runs.get(&p.name) {
        let what = match &last.result {
            Ok(r) => Span::styled(text::run_summary(r), t.ok),
            Err(e) => Span::styled(format!("FAILED: {e}"), t.error),
        };
        lines.push(Line::from(vec![Span::raw(format!("last run at {}: ", text::clock(&last.at))), what]));
    }
    let block = pane(format!("{} · Enter closes", p.name), t);
    f.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}

// ---------------------------------------------------------------- Link table

fn link_sort_label(s: LinkSort) -> &'static str {
    match s {
        LinkSort::RunIdDesc => "run id ↓",
        LinkSort::ChangeTimeDesc => "change time ↓",
        LinkSort::Key => "key",
    }
}

fn link(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let l = &app.link;
    let mut title = format!("Link table · {} · sort: {}", l.pipeline, link_sort_label(l.query.sort));
    if let Some(filter) = &l.query.filter {
        title += &format!(" · key contains “{filter}”");
    }
    match (&l.page, l.loading) {
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

// ---------------------------------------------------------------- Preview

fn preview(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let p = &app.preview;
    let title = format!("Preview · {} · r runs it", p.pipeline);
    match (&p.data, p.loading) {
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

// ---------------------------------------------------------------- Tracker

fn tracker(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let title = format!("Tracker{}", filter_note(app, View::Tracker));
    match (&app.tracker.data, app.tracker.loading) {
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

// ---------------------------------------------------------------- Activity

fn activity(f: &mut Frame, area: Rect, app: &App) {
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
