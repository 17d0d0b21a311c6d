//! The six views. Each is a table (plus a pane where there is room) drawn from App state;
//! panes collapse on small terminals so 80×24 stays usable.

mod activity;
mod link;
mod pipelines;
mod preview;
mod tracker;
mod upstreams;

use ratatui::layout::Rect;
use ratatui::Frame;

use crate::console::msg::View;
use crate::console::state::app::App;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    match app.view {
        View::Upstreams => upstreams::upstreams(f, area, app),
        View::Pipelines => pipelines::pipelines(f, area, app),
        View::Link => link::link(f, area, app),
        View::Preview => preview::preview(f, area, app),
        View::Tracker => tracker::tracker(f, area, app),
        View::Activity => activity::activity(f, area, app),
    }
}
