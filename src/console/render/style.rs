//! Styles that several views share.

use ratatui::style::Style;

use crate::console::state::app::Level;
use crate::console::theme::Theme;

/// The colour of a message of this level.
pub fn level_style(t: &Theme, level: Level) -> Style {
    match level {
        Level::Info => t.base,
        Level::Ok => t.ok,
        Level::Warn => t.warn,
        Level::Error => t.error,
    }
}
