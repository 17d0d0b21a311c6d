//! Styles that several views share.

use crate::ops::health::HealthState;
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

/// Health in colour; the word carries it without colour (`NO_COLOR`).
pub fn health_style(t: &Theme, state: HealthState) -> Style {
    match state {
        HealthState::Ok => t.ok,
        HealthState::Paused => t.dim,
        HealthState::Lagging => t.warn,
        HealthState::Stalled | HealthState::AtRisk | HealthState::Failing => t.error,
    }
}
