//! The operations console (ratatui). Placeholder until the console lands.
use color_eyre::eyre::{eyre, Result};

use crate::cli::ConsoleArgs;
use crate::demo::DemoOptions;
use crate::runner::Engine;

pub async fn run_console(_engine: Engine, _args: ConsoleArgs, _demo: Option<DemoOptions>) -> Result<()> {
    Err(eyre!("the console is not built yet"))
}
