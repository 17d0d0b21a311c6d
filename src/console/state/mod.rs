//! The console's state: what is on screen, what is loading, the open popup and form. Updated
//! only by [`app::App::update`] from a message; never draws and never does I/O.

pub mod app;
mod commands;
mod loads;
mod details;
pub mod form;
pub mod replay;
pub mod slot;
