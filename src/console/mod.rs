//! The operations console (ratatui).
//!
//! Shape (as gitui / the ratatui templates): terminal input → [`msg::Action`] →
//! [`state::app::App::update`] → render from state ([`render::draw`]). Engine work runs as tokio tasks
//! ([`tasks`]) whose results come back over a channel as actions; the loop never awaits I/O
//! and draws only when something changed: at once for a key, at most once per frame interval for engine events.

// One-way: messages and vocabulary at the bottom, state above them, rendering above state,
// the task runner and the terminal loop on top (tests/it/architecture.rs keeps it so).
pub mod msg;
pub mod keys;
pub mod text;
pub mod theme;
pub mod state;
pub mod render;
pub mod tasks;

use std::fs::OpenOptions;
use std::io::{stdout, Stdout};
use std::panic::PanicHookInfo;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use color_eyre::eyre::{eyre, Result, WrapErr};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, MouseButton, MouseEventKind};
use ratatui::crossterm::terminal::{
    self, BeginSynchronizedUpdate, EndSynchronizedUpdate, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute, queue};
use ratatui::Terminal;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Dispatch;

use crate::ops::demo::{DemoOptions, DemoWriter};
use crate::engine::Engine;

use msg::{Action, Command, TaskEvent};
use state::app::{self, App};
use tasks::Tasks;
use theme::ThemeEnv;

/// The console's own flags (global: they apply to `deltalink` and `deltalink demo`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConsoleArgs {
    /// Console theme: a name from themes/ (dark, light, mono) or a path to a theme TOML.
    #[arg(long, global = true)]
    pub theme: Option<String>,
    /// Capture the mouse in the console (off by default: it breaks copy/paste over SSH).
    #[arg(long, global = true)]
    pub mouse: bool,
    /// Where the console writes its log (tracing output never goes to the terminal it draws on).
    #[arg(long, global = true)]
    pub log_file: Option<PathBuf>,
}

/// At most one frame per this interval (~60 fps), after draining every pending event.
const FRAME: Duration = Duration::from_millis(16);
/// How long the input thread waits for a key before checking whether the console is gone.
const INPUT_POLL: Duration = Duration::from_millis(100);
/// The demo writer commits this often.
const DEMO_EVERY: Duration = Duration::from_secs(3);

/// Open the console on `engine` until the operator quits. With `demo`, a background writer
/// keeps committing to the demo lake so there is always something to watch.
pub async fn run_console(engine: Engine, args: ConsoleArgs, demo: Option<DemoOptions>) -> Result<()> {
    let (log, _log_guard) = file_logging(args.log_file.as_deref())?;
    let _ui_log = tracing::dispatcher::set_default(&log);
    let env = ThemeEnv::from_process();
    let theme = theme::select(args.theme.as_deref(), &env)?;

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let demo_task = match &demo {
        Some(d) => Some(start_demo_writer(d, events_tx.clone(), log.clone()).await?),
        None => None,
    };
    let sql_check = spawn_sql_check(engine.clone(), events_tx.clone(), log.clone());
    let app = App::new(engine.config.clone(), engine.read_only).with_theme(theme).with_mouse(args.mouse);
    let tasks = Tasks::new(engine, events_tx, log.clone(), env.depth(), tokio::runtime::Handle::current());

    let ui = spawn_ui_thread(app, tasks, events_rx, log, args.mouse)?;
    let result = match tokio::task::spawn_blocking(move || ui.join()).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic), // the hook already restored the terminal
        Err(e) => Err(eyre!("the console's UI thread could not be joined: {e}")),
    };
    sql_check.abort();
    if let Some(t) = demo_task {
        t.abort();
    }
    result
}

/// The terminal loop on its own thread and current-thread runtime. Its frame timer, tick and
/// input then never wait for the engine runtime's workers, which DataFusion holds for a long
/// poll at a time during a large run (frames waited up to 220 ms for a worker to drive the
/// shared timer). Jobs still run on the engine runtime (see [`Tasks`]).
fn spawn_ui_thread(
    mut app: App,
    mut tasks: Tasks,
    events: UnboundedReceiver<TaskEvent>,
    log: Dispatch,
    mouse: bool,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let ui = move || -> Result<()> {
        let _ui_log = tracing::dispatcher::set_default(&log);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().wrap_err("cannot start the console's runtime")?;
        let result = runtime.block_on(async {
            let mut tui = Tui::enter(mouse)?;
            event_loop(&mut tui, &mut app, &mut tasks, events).await
        });
        tasks.abort_all();
        result
    };
    std::thread::Builder::new().name("deltalink-ui".into()).spawn(ui).wrap_err("cannot start the console's UI thread")
}

/// Tracing goes to a file: anything written to the terminal would tear the UI.
fn file_logging(path: Option<&Path>) -> Result<(Dispatch, tracing_appender::non_blocking::WorkerGuard)> {
    let path: PathBuf = path.map_or_else(|| std::env::temp_dir().join("deltalink-console.log"), Path::to_path_buf);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .wrap_err_with(|| format!("cannot open the console log file {}", path.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    let filter = tracing_subscriber::EnvFilter::try_from_env("DELTALINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,deltalink=info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(false).finish();
    Ok((Dispatch::new(subscriber), guard))
}

/// Plan every `sql` mapping against the upstream schemas (as `run` does before it starts), so
/// a typo shows in Activity when the console opens, not when someone presses run at 3 a.m.
fn spawn_sql_check(engine: Engine, events: UnboundedSender<TaskEvent>, log: Dispatch) -> JoinHandle<()> {
    let work = async move {
        if let Err(e) = engine.validate_sql().await {
            let _ = events.send(TaskEvent::Background { error: format!("config: {e:#}") });
        }
    };
    tokio::spawn(tracing::instrument::WithSubscriber::with_subscriber(work, log))
}

async fn start_demo_writer(
    demo: &DemoOptions,
    events: UnboundedSender<TaskEvent>,
    log: Dispatch,
) -> Result<JoinHandle<()>> {
    // A different seed each start, so restarting the demo does not replay the same commits.
    let seed = demo.seed.wrapping_add(chrono::Utc::now().timestamp_millis().unsigned_abs());
    let mut writer = DemoWriter::create(&demo.dir, seed).await?;
    let work = async move {
        let mut every = tokio::time::interval(DEMO_EVERY);
        every.tick().await; // the first tick is immediate; let the console draw first
        loop {
            every.tick().await;
            if let Err(e) = writer.step().await {
                tracing::warn!("demo writer: {e:#}");
                let _ = events.send(TaskEvent::Background { error: format!("demo writer: {e:#}") });
            }
        }
    };
    Ok(tokio::spawn(tracing::instrument::WithSubscriber::with_subscriber(work, log)))
}

/// The terminal in raw mode on the alternate screen; restored on drop and on panic.
struct Tui {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    mouse: bool,
}

impl Tui {
    fn enter(mouse: bool) -> Result<Tui> {
        install_panic_hook(mouse);
        terminal::enable_raw_mode().wrap_err("cannot switch the terminal to raw mode")?;
        let mut out = stdout();
        let entered = execute!(out, EnterAlternateScreen, cursor::Hide).and_then(|_| {
            if mouse {
                execute!(out, event::EnableMouseCapture)
            } else {
                Ok(())
            }
        });
        let terminal = entered.and_then(|_| Terminal::new(CrosstermBackend::new(stdout())));
        match terminal {
            Ok(terminal) => Ok(Tui { terminal, mouse }),
            Err(e) => {
                restore(mouse);
                Err(e).wrap_err("cannot set up the terminal")
            }
        }
    }

    /// One frame, wrapped in a synchronized update so terminals never show half a frame.
    fn draw(&mut self, app: &App) -> Result<()> {
        queue!(self.terminal.backend_mut(), BeginSynchronizedUpdate)?;
        self.terminal.draw(|f| render::draw(f, app))?;
        execute!(self.terminal.backend_mut(), EndSynchronizedUpdate)?;
        Ok(())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore(self.mouse);
    }
}

fn restore(mouse: bool) {
    let mut out = stdout();
    if mouse {
        let _ = execute!(out, event::DisableMouseCapture);
    }
    let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
}

/// A panic on the UI thread restores the terminal before the report is printed. Panics on
/// worker threads (engine tasks) are caught per task and logged: the console keeps running,
/// and printing to the terminal from there would tear the screen.
fn install_panic_hook(mouse: bool) {
    let ui_thread = std::thread::current().id();
    let previous: Arc<dyn Fn(&PanicHookInfo<'_>) + Send + Sync> = Arc::from(std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == ui_thread {
            restore(mouse);
            previous(info);
        } else {
            tracing::error!("panic in a background task: {info}");
        }
    }));
}

/// Terminal events are read on a blocking thread (crossterm's async stream is not enabled)
/// and forwarded; the thread ends within one poll interval after the console is gone.
fn spawn_input_reader() -> UnboundedReceiver<std::io::Result<Event>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::task::spawn_blocking(move || loop {
        match event::poll(INPUT_POLL) {
            Ok(true) => {
                let ev = event::read();
                let failed = ev.is_err();
                if tx.send(ev).is_err() || failed {
                    break;
                }
            }
            Ok(false) if tx.is_closed() => break,
            Ok(false) => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    });
    rx
}

/// Input → action, or nothing. Mouse events only arrive when capture was enabled (--mouse).
fn translate(app: &App, ev: Event) -> Option<Action> {
    match ev {
        Event::Key(k) => keys::action_for(app.context(), &k),
        Event::Resize(width, height) => Some(Action::Resize { width, height }),
        Event::Mouse(m) if app.mouse => match m.kind {
            MouseEventKind::ScrollDown => Some(Command::Down.into()),
            MouseEventKind::ScrollUp => Some(Command::Up.into()),
            MouseEventKind::Down(MouseButton::Left) => render::tab_at(app.size, m.column, m.row).map(Action::ClickTab),
            _ => None,
        },
        _ => None,
    }
}

async fn event_loop(
    tui: &mut Tui,
    app: &mut App,
    tasks: &mut Tasks,
    mut events: UnboundedReceiver<TaskEvent>,
) -> Result<()> {
    let mut input = spawn_input_reader();
    let mut tick = tokio::time::interval(app::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let size = tui.terminal.size()?;
    app.update(Action::Resize { width: size.width, height: size.height });
    let mut next_frame = Instant::now();
    loop {
        for request in app.drain_requests() {
            tasks.execute(request);
        }
        if app.should_quit {
            return Ok(());
        }
        let redraw = app.needs_redraw();
        tokio::select! {
            ev = input.recv() => {
                let ev = ev.ok_or_else(|| eyre!("the terminal input reader stopped"))?;
                handle_input(app, ev?);
                // A key is answered at once; the frame pacing below is for the stream of
                // engine events, which would otherwise make a key wait for the next slot.
                if app.needs_redraw() {
                    drain(app, &mut input, &mut events)?;
                    tui.draw(app)?;
                    app.mark_drawn();
                    next_frame = Instant::now() + FRAME;
                }
            }
            Some(ev) = events.recv() => app.update(Action::Task(ev)),
            _ = tick.tick() => app.update(Action::Tick),
            _ = tokio::time::sleep_until(next_frame), if redraw => {
                drain(app, &mut input, &mut events)?;
                tui.draw(app)?;
                app.mark_drawn();
                next_frame = Instant::now() + FRAME;
            }
        }
    }
}

fn handle_input(app: &mut App, ev: Event) {
    if let Some(action) = translate(app, ev) {
        app.update(action);
    }
}

/// Apply everything already waiting, so one frame shows all of it.
fn drain(
    app: &mut App,
    input: &mut UnboundedReceiver<std::io::Result<Event>>,
    events: &mut UnboundedReceiver<TaskEvent>,
) -> Result<()> {
    while let Ok(ev) = input.try_recv() {
        handle_input(app, ev?);
    }
    while let Ok(ev) = events.try_recv() {
        app.update(Action::Task(ev));
    }
    Ok(())
}
