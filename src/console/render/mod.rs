//! Rendering: a pure function of [`App`]. The frame is header, tabs, the view, an optional
//! progress gauge, the status line and the key bar (generated from the bindings table).

use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Gauge, Paragraph, Tabs};
use ratatui::Frame;

use crate::engine::Step;

use crate::console::msg::View;
use crate::console::state::app::{App, InFlight, InputKind};
use crate::console::keys;
use crate::console::text;

pub mod popups;
pub mod style;
pub mod views;
pub mod widgets;

/// The frame's regions.
pub struct Areas {
    pub header: Rect,
    pub tabs: Rect,
    pub body: Rect,
    pub gauge: Option<Rect>,
    pub status: Rect,
    pub keys: Rect,
}

/// Split the screen; the gauge line exists only while a write runs.
pub fn layout(area: Rect, gauge: bool) -> Areas {
    let [header, tabs, body, gauge_area, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(u16::from(gauge)),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    Areas { header, tabs, body, gauge: gauge.then_some(gauge_area), status, keys }
}

fn tab_title(v: View) -> String {
    format!("{} {}", v.index() + 1, v.title())
}

/// The view whose tab is at a screen position (tabs are " title " separated by "│").
pub fn tab_at(size: (u16, u16), column: u16, row: u16) -> Option<View> {
    let tabs = layout(Rect::new(0, 0, size.0, size.1), false).tabs;
    if row != tabs.y {
        return None;
    }
    let mut x = tabs.x;
    for v in View::ALL {
        let w = tab_title(v).chars().count() as u16 + 2;
        if column >= x && column < x + w {
            return Some(v);
        }
        x += w + 1;
    }
    None
}

/// The smallest terminal the views fit in; below it the console says so instead of drawing
/// garbled panes (keys still work, so `q` quits).
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    f.render_widget(Block::default().style(app.theme.base), area);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(f, area, app);
        return;
    }
    let a = layout(area, app.write_task().is_some());
    header(f, a.header, app);
    tabs(f, a.tabs, app);
    views::draw(f, a.body, app);
    if let (Some(g), Some(task)) = (a.gauge, app.write_task()) {
        gauge(f, g, app, task);
    }
    status_line(f, a.status, app);
    key_bar(f, a.keys, app);
    if let Some(p) = &app.popup {
        popups::draw(f, area, app, p);
    }
}

fn header(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let right = match (&app.status_error, app.last_refresh) {
        (Some(_), _) => Span::styled("status refresh failing ", t.error),
        (None, Some(at)) => Span::styled(format!("refreshed {} ", text::clock(&at)), t.dim),
        (None, None) => Span::styled(format!("{} loading status ", app.spinner()), t.dim),
    };
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(right.width() as u16)]).areas(area);
    let mut left = vec![Span::styled(" deltalink ", t.header), Span::raw(" ")];
    if app.read_only {
        left.push(Span::styled("[RO]", t.badge));
        left.push(Span::raw(" "));
    }
    left.push(Span::styled(app.config.path.display().to_string(), t.dim));
    let fg = app.foreground_tasks();
    if !fg.is_empty() {
        let what = match fg.as_slice() {
            [one] => one.label.clone(),
            many => format!("{} tasks", many.len()),
        };
        left.push(Span::styled(format!("  {} {what}", app.spinner()), t.warn));
    }
    f.render_widget(Paragraph::new(Line::from(left)), left_area);
    f.render_widget(Paragraph::new(Line::from(right)).alignment(Alignment::Right), right_area);
}

fn tabs(f: &mut Frame, area: Rect, app: &App) {
    let titles: Vec<String> = View::ALL.iter().map(|v| tab_title(*v)).collect();
    let tabs = Tabs::new(titles)
        .select(app.view.index())
        .style(app.theme.tab)
        .highlight_style(app.theme.tab_active)
        .divider("│");
    f.render_widget(tabs, area);
}

/// Progress of the running write: pipelines done plus the steps of the current one.
fn gauge(f: &mut Frame, area: Rect, app: &App, task: &InFlight) {
    let steps = Step::ALL.len();
    let step = task.step.map_or(0, Step::number);
    let ratio = ((task.done as f64 + step as f64 / steps as f64) / task.total.max(1) as f64).clamp(0.0, 1.0);
    let secs = (app.now() - task.started).num_milliseconds().max(0) as f64 / 1000.0;
    let mut label = format!("{} {}", app.spinner(), task.label);
    if task.total > 1 {
        label += &format!(" {}/{}", task.done, task.total);
    }
    if let (Some(p), Some(s)) = (&task.current, task.step) {
        label += &format!(" · {p}: {} ({step}/{steps})", crate::describe::step_label(s));
    }
    label += &format!(" · {secs:.1}s · c cancels");
    let g = Gauge::default().gauge_style(app.theme.gauge).ratio(ratio).label(label);
    f.render_widget(g, area);
}

/// The input line when typing, else the flash message, else a one-line summary.
fn status_line(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let line = if let Some(input) = &app.input {
        let prompt = match input.kind {
            InputKind::Filter => format!("/ filter {}: ", app.view.title().to_lowercase()),
            InputKind::Palette => ":".to_string(),
        };
        Line::from(vec![Span::styled(prompt, t.title), Span::raw(format!("{}▏", input.text))])
    } else if let Some(flash) = &app.flash {
        Line::from(Span::styled(format!(" {}", flash.text), style::level_style(t, flash.level).patch(t.flash)))
    } else {
        Line::from(Span::styled(format!(" {}", summary(app)), t.dim))
    };
    f.render_widget(Paragraph::new(line), area);
}

fn summary(app: &App) -> String {
    let Some(st) = &app.status.value else { return "waiting for the first status…".into() };
    let pending: u64 = st.pipelines.iter().flat_map(|p| &p.upstreams).filter_map(|u| u.lag_versions).sum();
    let broken = st.upstreams.iter().filter(|u| u.error.is_some()).count();
    let mut s = format!(
        "{} upstreams · {} pipelines · {} commits pending",
        st.upstreams.len(),
        st.pipelines.len(),
        crate::describe::thousands(pending)
    );
    if broken > 0 {
        s += &format!(" · {broken} upstreams unreadable");
    }
    // What needs someone first: a narrow terminal cuts the end of the line.
    let unwell = st.pipelines.iter().filter(|p| p.needs_attention()).count();
    if unwell > 0 {
        s = format!("{unwell} pipelines not ok · {s}");
    }
    s
}

/// Key hints of the active context, from the bindings table, as many as fit.
fn key_bar(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let mut spans = vec![Span::raw(" ")];
    let mut width = 1;
    for b in keys::bindings(app.context()) {
        let Some(label) = b.bar else { continue };
        let key = b.keys.first().map(keys::KeyPress::label).unwrap_or_default();
        let item = [Span::styled(format!(" {key} "), t.key), Span::styled(format!(" {label}  "), t.key_label)];
        let w: usize = item.iter().map(Span::width).sum();
        if width + w > area.width as usize {
            break;
        }
        width += w;
        let disabled = app.read_only && b.command.is_write();
        spans.extend(item.map(|s| if disabled { s.patch_style(t.dim.add_modifier(Modifier::CROSSED_OUT)) } else { s }));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn too_small(f: &mut Frame, area: Rect, app: &App) {
    let text = format!(
        "terminal is {}×{}; deltalink needs at least {MIN_WIDTH}×{MIN_HEIGHT}. Enlarge the window (q quits).",
        area.width, area.height
    );
    let p = ratatui::widgets::Paragraph::new(text).style(app.theme.error).wrap(ratatui::widgets::Wrap { trim: true });
    f.render_widget(p, area);
}
