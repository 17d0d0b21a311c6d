//! The command line: parse, load the config, call the engine, print. No engine logic here.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use color_eyre::eyre::{Result, WrapErr};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::console::ConsoleArgs;
use crate::ops::demo::{ensure_demo_lake, DemoOptions};
use crate::engine::{Engine, Outcome, RunOptions, RunReport};
use crate::ops::health::{HealthState, Severity};
use crate::ops::metrics::{server as metrics_server, Metrics};
use crate::ops::status::{self, Status};
use crate::util::time::human_seconds;

#[derive(Parser, Debug)]
#[command(name = "deltalink", version, about = "Delta Lake change-data pipelines: CDF → per-pipeline link tables, with an operations console")]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, global = true, env = "DELTALINK_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Refuse every command that writes.
    #[arg(long, global = true)]
    pub read_only: bool,
    #[command(flatten)]
    pub console: ConsoleArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Versions, lag, retention guard, health and link-table sizes of every upstream and pipeline.
    Status {
        #[arg(long, conflicts_with = "check")]
        json: bool,
        /// For monitors (cron, Kubernetes probes, Nagios): one line per pipeline that is not
        /// ok, and exit 0 ok / 1 warning (lagging) / 2 critical (stalled, at_risk, failing) /
        /// 3 unknown (the status could not be read).
        #[arg(long)]
        check: bool,
        /// Also count each pipeline's pending change rows per upstream (scans the change feed).
        #[arg(long)]
        count_rows: bool,
    },
    /// Run pipelines once: read new changes and merge their keys into the link tables.
    Run {
        /// Pipelines to run (all with --all or when none is named).
        pipelines: Vec<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// The keys the next run of PIPELINE would write, with provenance. Writes nothing.
    Preview {
        pipeline: String,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Tracker rows and their audit trail; resets.
    Tracker {
        #[command(subcommand)]
        command: TrackerCommand,
    },
    /// Re-derive keys for an explicit version range without moving the tracker.
    Replay {
        pipeline: String,
        #[arg(long)]
        from_version: u64,
        #[arg(long)]
        to_version: Option<u64>,
        /// Upstreams to replay (all of the pipeline's when omitted).
        #[arg(long = "upstream")]
        upstreams: Vec<String>,
        /// Write into a scratch link table at this location instead of the pipeline's.
        #[arg(long)]
        into: Option<String>,
        /// Write (without it: a dry run that writes nothing).
        #[arg(long)]
        execute: bool,
        /// Why (recorded with the operator in the tracker's audit log).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run pipelines whenever their upstreams move. Ctrl-C stops after the in-flight run.
    Watch {
        pipelines: Vec<String>,
        /// Poll interval, e.g. 10s, 500ms, 2m.
        #[arg(long, default_value = "10s", value_parser = interval_arg)]
        interval: std::time::Duration,
        /// Serve Prometheus/OpenMetrics metrics at http://ADDR/metrics (also /healthz, /readyz),
        /// e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<String>,
    },
    /// Print the metrics `watch --metrics-addr` serves, once (for a node-exporter textfile).
    Metrics,
    /// The next batch for a downstream consumer: the link-table version to read at, the runs it
    /// covers and ready-to-paste reads (recorded, so upkeep keeps that version readable).
    Consume {
        pipeline: String,
        #[arg(long)]
        consumer: String,
        #[arg(long)]
        json: bool,
    },
    /// Compact small files of link tables (and the tracker), then vacuum files no reader can
    /// need — never what a consumer's last batch reads. A dry run unless --execute.
    Maintain {
        /// Pipelines whose link tables to maintain (all when none is named).
        pipelines: Vec<String>,
        /// Also the tracker table (the default when no pipeline is named).
        #[arg(long)]
        tracker: bool,
        /// Keep removed files younger than this (e.g. 7d, 24h; default: each table's
        /// delta.deletedFileRetentionDuration, 7 days when unset).
        #[arg(long, value_parser = interval_arg)]
        retention: Option<std::time::Duration>,
        #[arg(long)]
        execute: bool,
        #[arg(long)]
        json: bool,
    },
    /// Record that a consumer processed every run through N (forward only; --rewind to go back).
    Ack {
        pipeline: String,
        #[arg(long)]
        consumer: String,
        /// The batch's `through_run_id`.
        #[arg(long)]
        through_run: i64,
        /// Move the consumer back so the runs after N are delivered again (a dry run unless
        /// --execute; needs --reason).
        #[arg(long)]
        rewind: bool,
        #[arg(long, requires = "rewind")]
        execute: bool,
        /// Why (recorded with the operator in the tracker's audit log).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Pause a pipeline: `watch` and `run --all` skip it, `run` refuses it, health says
    /// `paused` (recorded in the tracker with the operator and reason; a run under way finishes).
    Pause {
        pipeline: String,
        /// Why (shown in status and the console, and kept in the tracker's audit log).
        #[arg(long)]
        reason: String,
    },
    /// Resume a paused pipeline.
    Resume {
        pipeline: String,
        #[arg(long, default_value = "resumed")]
        reason: String,
    },
    /// Create (or reuse) the demo lake under DIR and open the console on it.
    Demo {
        #[arg(default_value = "demo-lake")]
        dir: PathBuf,
        /// Only create the lake and print its config path; do not open the console.
        #[arg(long)]
        no_console: bool,
        /// Commits of history to write when the lake is new.
        #[arg(long, default_value_t = 240)]
        commits: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrackerCommand {
    /// Tracker rows (of one pipeline) and the tracker's recent history.
    Show {
        pipeline: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 20)]
        history: usize,
    },
    /// Move a pipeline's tracker position. Dry run unless --execute.
    Reset(ResetArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false)))]
pub struct ResetArgs {
    pub pipeline: String,
    #[arg(long = "upstream")]
    pub upstreams: Vec<String>,
    /// Processed through version N (the next run reads N+1 onwards); -1 re-reads everything.
    #[arg(long, group = "target", allow_negative_numbers = true)]
    pub to_version: Option<i64>,
    #[arg(long, group = "target")]
    pub to_earliest: bool,
    #[arg(long, group = "target")]
    pub to_latest: bool,
    /// Move by N versions (negative re-reads).
    #[arg(long, group = "target", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// Processed through the last version committed at or before this time: RFC 3339, or a
    /// date with an optional time read as UTC (2026-11-25, 2026-11-25 10:00).
    #[arg(long, group = "target")]
    pub to_datetime: Option<String>,
    /// Commit the reset (without it: a dry run that writes nothing).
    #[arg(long)]
    pub execute: bool,
    /// Why (recorded in the tracker's commit info with the operator: $USER, else $LOGNAME, else the OS account).
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `--interval`: a duration, or a bare number of seconds (as the flag has always taken).
fn interval_arg(s: &str) -> std::result::Result<std::time::Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(_) => crate::util::time::parse_duration(&format!("{}s", s.trim())),
        Err(_) => crate::util::time::parse_duration(s),
    }
}

pub fn main() -> Result<()> {
    // Error reports (and panics) are coloured only where the log lines are: see `stderr_colour`.
    let theme = if stderr_colour() { color_eyre::config::Theme::dark() } else { color_eyre::config::Theme::new() };
    color_eyre::config::HookBuilder::default().theme(theme).install()?;
    let cli = Cli::parse();
    if opens_console(&cli) {
        // Before the runtime starts: its threads inherit it.
        crate::util::cpu::leave_a_core_to_the_terminal();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .wrap_err("cannot start the tokio runtime")?;
    runtime.block_on(dispatch(cli))
}

/// Whether the command opens the console (no subcommand, or `demo` without `--no-console`).
fn opens_console(cli: &Cli) -> bool {
    matches!(&cli.command, None | Some(Command::Demo { no_console: false, .. }))
}

/// Warnings, and delta-rs's errors except its transaction log's: a concurrent commit is logged
/// there as an ERROR before deltalink retries it (or reports it, with context, itself).
const DEFAULT_LOG_FILTER: &str = "warn,deltalake_core=error,deltalake_core::kernel::transaction=off";

fn init_stderr_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DELTALINK_LOG").unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr_colour())
        .try_init();
}

/// Whether what goes to stderr (log lines, error reports) may carry ANSI colour codes: only
/// when stderr is a terminal — never into a pipe, a file, journald or a CI log — and `NO_COLOR`
/// (<https://no-color.org>) is unset or empty.
pub fn stderr_colour() -> bool {
    use std::io::IsTerminal;
    colour_allowed(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"))
}

fn colour_allowed(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn load_engine(cli: &Cli) -> Result<Engine> {
    let config = Config::load(&cli.config)?;
    Ok(Engine::new(config).with_read_only(cli.read_only))
}

async fn dispatch(cli: Cli) -> Result<()> {
    match &cli.command {
        None => {
            let engine = load_engine(&cli)?;
            crate::console::run_console(engine, cli.console.clone(), None).await
        }
        Some(Command::Demo { dir, no_console, commits }) => {
            // With the console open, logs go to the console's log file, never to the terminal it draws on.
            if *no_console {
                init_stderr_logging();
            }
            let opts = DemoOptions::new(dir).with_commits(*commits);
            let config_path = build_demo(&opts).await?;
            if *no_console {
                println!("{}", config_path.display());
                return Ok(());
            }
            let engine = Engine::new(Config::load(&config_path)?).with_read_only(cli.read_only);
            crate::console::run_console(engine, cli.console.clone(), Some(opts)).await
        }
        Some(Command::Status { check: true, .. }) => {
            init_stderr_logging();
            // A monitor must tell "cannot even read the config" (unknown) from a failed check.
            let code = match load_engine(&cli) {
                Ok(engine) => status_check(&engine).await,
                Err(e) => {
                    println!("UNKNOWN: {}", format!("{e:#}").lines().next().unwrap_or_default());
                    Severity::Unknown.exit_code()
                }
            };
            std::io::stdout().flush()?;
            std::process::exit(code);
        }
        Some(cmd) => {
            init_stderr_logging();
            let engine = load_engine(&cli)?;
            run_command(&engine, cmd).await
        }
    }
}

async fn build_demo(opts: &DemoOptions) -> Result<PathBuf> {
    let progress = |done: usize, total: usize| {
        if done == 1 || done % 20 == 0 || done == total {
            eprint!("\rbuilding demo lake: {done}/{total} commits");
            let _ = std::io::stderr().flush();
            if done == total {
                eprintln!();
            }
        }
    };
    ensure_demo_lake(opts, &progress).await
}

async fn run_command(engine: &Engine, cmd: &Command) -> Result<()> {
    if matches!(cmd, Command::Run { .. } | Command::Preview { .. } | Command::Watch { .. } | Command::Replay { .. }) {
        // A typo in a mapping query fails here, at start-up, not at 3 a.m.
        engine.validate_sql().await?;
    }
    match cmd {
        Command::Status { json, count_rows, .. } => {
            let mut st = status::status(engine).await?;
            if *count_rows {
                status::count_pending_rows(engine, &mut st).await;
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(&st);
            }
            Ok(())
        }
        Command::Run { pipelines, all, json } => {
            let names = if *all { vec![] } else { pipelines.clone() };
            let results = engine.run_many(&names, &RunOptions::default()).await;
            let mut failed = Vec::new();
            let mut reports = Vec::new();
            for (name, r) in results {
                match r {
                    Ok(rep) => {
                        if !json {
                            print_run(&rep);
                        }
                        reports.push(rep);
                    }
                    Err(e) => {
                        eprintln!("pipeline {name}: FAILED\n{e:?}\n");
                        failed.push(name);
                    }
                }
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                println!("{} CDF scans for {} pipeline(s) (ranges shared by pipelines are read once)", engine.scans.get(), reports.len() + failed.len());
            }
            if !failed.is_empty() {
                return Err(color_eyre::eyre::eyre!("{} pipeline(s) failed: {}", failed.len(), failed.join(", ")));
            }
            Ok(())
        }
        Command::Preview { pipeline, json, limit } => {
            let p = engine.preview(pipeline, Some(*limit)).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&p)?);
                return Ok(());
            }
            println!(
                "pipeline {}: {} change rows → {} distinct keys ({} rows with NULL key skipped)",
                p.pipeline, p.change_rows, p.distinct_keys, p.null_key_rows
            );
            for u in &p.upstreams {
                println!("  {:<32} {}", u.upstream, crate::describe::read_range(u));
            }
            println!("\n  {:<30} {:<30} {:>8}  change", p.key.join(", "), "upstream", "version");
            for r in &p.rows {
                let at = r.commit_time.as_deref().unwrap_or("-");
                println!("  {:<30} {:<30} {:>8}  {:<16} {at}", r.key.join(", "), r.upstream, r.commit_version, r.change_type);
            }
            if p.rows.len() as u64 >= *limit as u64 {
                println!("  … (showing {limit}; use --limit N)");
            }
            Ok(())
        }
        Command::Tracker { command: TrackerCommand::Show { pipeline, json, history } } => {
            tracker_show(engine, pipeline.as_deref(), *json, *history).await
        }
        Command::Tracker { command: TrackerCommand::Reset(args) } => tracker_reset(engine, args).await,
        Command::Replay { pipeline, from_version, to_version, upstreams, into, execute, reason, json } => {
            let into = match into {
                Some(u) => Some(
                    crate::config::resolve_table_uri(u, &std::env::current_dir()?).map_err(color_eyre::eyre::Report::msg)?,
                ),
                None => None,
            };
            let replay = crate::engine::Replay {
                pipeline: pipeline.clone(),
                from_version: *from_version,
                to_version: *to_version,
                upstreams: upstreams.clone(),
                into,
                execute: *execute,
                reason: reason.clone(),
            };
            let r = engine.replay(&replay).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            for u in &r.upstreams {
                println!("  {:<32} {}", u.upstream, crate::describe::read_range(u));
            }
            if r.written {
                println!("replay of {} written into {} as run {}: {} change rows → {} keys", r.pipeline, r.target, r.run_id.unwrap_or_default(), r.change_rows, r.distinct_keys);
            } else {
                println!("DRY RUN: replay of {} into {} would write {} keys from {} change rows; add --execute to write", r.pipeline, r.target, r.distinct_keys, r.change_rows);
            }
            Ok(())
        }
        Command::Metrics => {
            let metrics = Metrics::new();
            metrics.observe_status(&status::status(engine).await?);
            print!("{}", metrics.encode()?);
            Ok(())
        }
        Command::Watch { pipelines, interval, metrics_addr } => {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("Ctrl-C: stopping after the in-flight run");
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            });
            eprintln!("watching every {:?}; Ctrl-C to stop", interval);
            let metrics = std::sync::Arc::new(Metrics::new());
            if let Some(addr) = metrics_addr {
                let listener = metrics_server::bind(addr).await?;
                eprintln!("metrics on http://{}/metrics", listener.local_addr()?);
                tokio::spawn(metrics_server::serve(listener, engine.clone(), metrics.clone()));
            }
            if let Some(alerts) = engine.config.alerts.clone() {
                let host = alerts.webhook.host_str().unwrap_or_default().to_string();
                let alerter = crate::ops::alerts::Alerter::new(alerts)?;
                eprintln!("alerts: health transitions go to {host}");
                tokio::spawn(crate::ops::alerts::watch_health(engine.clone(), alerter, *interval));
            }
            let mut w = crate::ops::watch::Watcher::new(engine.clone(), pipelines.clone(), *interval);
            w.run(stop, |p, r| {
                // Poll errors are reported under a pseudo-name; only pipelines' runs count.
                if engine.config.pipelines.contains_key(p) {
                    metrics.observe_run(p, r, crate::util::time::now_ms() as f64 / 1000.0);
                }
                match r {
                    Ok(rep) => print_run(rep),
                    Err(e) => eprintln!("pipeline {p}: FAILED\n{e:?}"),
                }
            })
            .await
        }
        Command::Consume { pipeline, consumer, json } => {
            let batch = crate::ops::consume::consume(engine, pipeline, consumer).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&batch)?);
            } else {
                print!("{}", crate::describe::consumer_batch(&batch));
            }
            Ok(())
        }
        Command::Ack { pipeline, consumer, through_run, rewind, execute, reason, json } => {
            ack(engine, pipeline, consumer, *through_run, *execute, *rewind, reason.as_deref(), *json).await
        }
        Command::Maintain { pipelines, tracker, retention, execute, json } => {
            let mut opts = crate::ops::maintain::MaintainOptions::dry_run().with_execute(*execute);
            if let Some(r) = retention {
                opts = opts.with_retention(*r);
            }
            let done = crate::ops::maintain::maintain(engine, pipelines, *tracker || pipelines.is_empty(), &opts).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&done)?);
                return Ok(());
            }
            for t in &done {
                println!("{}", crate::describe::table_upkeep(t));
            }
            if !execute {
                println!("DRY RUN: nothing was changed; add --execute to compact and vacuum");
            }
            Ok(())
        }
        Command::Pause { pipeline, reason } => set_paused(engine, pipeline, true, reason).await,
        Command::Resume { pipeline, reason } => set_paused(engine, pipeline, false, reason).await,
        Command::Demo { .. } => unreachable!("handled in dispatch"),
    }
}

async fn set_paused(engine: &Engine, pipeline: &str, paused: bool, reason: &str) -> Result<()> {
    use crate::ops::pause::{set_paused, Paused};
    match set_paused(engine, pipeline, paused, reason).await? {
        Paused::Changed { run_in_progress } => {
            let verb = if paused { "paused" } else { "resumed" };
            println!("pipeline {pipeline}: {verb} (operator {}, reason: {reason})", crate::util::who::operator());
            if paused && run_in_progress {
                println!("  a run of it is under way and will finish; the next one is refused");
            }
        }
        Paused::Already { pause: Some(p) } => println!("pipeline {pipeline}: already {}; nothing written", p.describe()),
        Paused::Already { pause: None } => println!("pipeline {pipeline}: not paused; nothing written"),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn ack(engine: &Engine, pipeline: &str, consumer: &str, through: i64, execute: bool, rewind: bool, reason: Option<&str>, json: bool) -> Result<()> {
    use crate::ops::consume;
    if !rewind {
        let acked = consume::ack(engine, pipeline, consumer, through, reason).await?;
        match (json, acked) {
            (true, _) => println!("{}", serde_json::to_string_pretty(&acked)?),
            (false, consume::Acked::Moved { from, to }) => println!("consumer {consumer} of {pipeline}: acked through run {to} (was {from})"),
            (false, consume::Acked::AlreadyAcked { at }) => println!("consumer {consumer} of {pipeline}: already acked through run {at}; nothing written"),
        }
        return Ok(());
    }
    let plan = consume::plan_rewind(engine, pipeline, consumer, through).await?;
    if json && !execute {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let words = format!(
        "consumer {consumer} of {pipeline}: acked run {} → {}; {} keys of runs {}..={} will be delivered again",
        plan.from_run_id,
        plan.to_run_id,
        plan.keys_again,
        plan.to_run_id + 1,
        plan.from_run_id
    );
    if !execute {
        println!("DRY RUN: {words}\n  add --execute --reason \"…\" to rewind");
        return Ok(());
    }
    let reason = reason.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
        color_eyre::eyre::eyre!("a rewind needs --reason \"…\" (recorded with the operator in the tracker's audit log); nothing was rewound")
    })?;
    consume::execute_rewind(engine, &plan, reason).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!("REWOUND: {words}");
    }
    Ok(())
}


fn print_run(r: &RunReport) {
    println!("pipeline {}: {}", r.pipeline, crate::describe::run_summary(r));
    for u in &r.upstreams {
        println!("  {:<32} {}", u.upstream, crate::describe::read_range(u));
    }
    if r.outcome == Outcome::Written {
        println!("  {} CDF scans; link MERGE {:.2}s", r.cdf_scans, r.link_merge.as_secs_f64());
        for j in &r.joined {
            println!("  joined {:<25} by `{}`: {}", j.upstream, j.source, crate::describe::joined_read(j));
        }
    }
}

/// `status --check`: the verdicts a monitor needs, and the exit code of the worst.
async fn status_check(engine: &Engine) -> i32 {
    let st = match status::status(engine).await {
        Ok(st) => st,
        Err(e) => {
            println!("UNKNOWN: cannot read the status: {}", format!("{e:#}").lines().next().unwrap_or_default());
            return Severity::Unknown.exit_code();
        }
    };
    let mut worst = Severity::Ok;
    for p in st.pipelines.iter().filter(|p| p.needs_attention()) {
        let severity = p.health.state.severity();
        worst = worst.max(severity);
        println!("{} {}: {} — {}", severity.label(), p.name, p.health.state.word(), p.health.reason);
    }
    if worst == Severity::Ok {
        let paused = st.pipelines.iter().filter(|p| p.health.state == HealthState::Paused).count();
        let also = if paused > 0 { format!(", {paused} paused") } else { String::new() };
        println!("OK: {} pipelines ok{also}", st.pipelines.len() - paused);
    }
    worst.exit_code()
}

fn print_status(st: &Status) {
    println!("{:<32} {:>8}  {:<4} {:<21} last operation", "UPSTREAM", "LATEST", "CDF", "LAST COMMIT");
    for u in &st.upstreams {
        match &u.error {
            Some(e) => println!("{:<32} ERROR: {}", u.name, e.lines().next().unwrap_or_default()),
            None => println!(
                "{:<32} {:>8}  {:<4} {:<21} {}",
                u.name,
                u.latest_version.map_or("-".into(), |v| v.to_string()),
                if u.cdf_enabled { "on" } else { "OFF" },
                u.last_commit_ts.clone().unwrap_or_default(),
                u.last_operation.clone().unwrap_or_default()
            ),
        }
    }
    println!();
    for p in &st.pipelines {
        println!(
            "PIPELINE {}  key ({})  link rows {}  last run {}  health {}",
            p.name,
            p.key.join(", "),
            p.link_rows.map_or("?".into(), |n| n.to_string()),
            p.last_run_id.map_or("-".into(), |n| n.to_string()),
            p.health.state.word()
        );
        if p.needs_attention() {
            println!("  why: {}", p.health.reason);
        }
        if let Some(w) = &p.last_write {
            println!("  last write: {}", w.describe());
        }
        for u in &p.upstreams {
            println!(
                "  {:<30} processed {:>6}  latest {:>6}  lag {:>5} versions {:>9}{}{}",
                u.upstream,
                u.processed_version.map_or("-".into(), |v| v.to_string()),
                u.latest_version.map_or("-".into(), |v| v.to_string()),
                u.lag_versions.map_or("?".into(), |v| v.to_string()),
                u.lag_seconds.map_or("".into(), |s| format!("{s:.0}s")),
                u.pending_change_rows.map_or(String::new(), |n| format!("  {n} change rows pending")),
                u.pending_run_id.map_or(String::new(), |r| format!("  (run {r} pending)"))
            );
            if let Some(left) = u.retention_seconds_left {
                let when = if left > 0.0 { format!("in {}", human_seconds(left)) } else { "now".to_string() };
                println!("    retention: oldest unread commit can become unreadable {when} ({})", u.retention_note.as_deref().unwrap_or(""));
            }
        }
        for c in &p.consumers {
            let waiting = match c.keys_waiting {
                0 => "caught up".to_string(),
                keys => format!("{keys} keys of {} runs waiting, oldest change {} old", c.runs_waiting, human_seconds(c.lag_seconds)),
            };
            println!("  consumer {:<21} acked run {:>6}  {waiting}  {}", c.name, c.acked_run_id, c.health.state.word());
        }
    }
}

async fn tracker_show(engine: &Engine, pipeline: Option<&str>, json: bool, history: usize) -> Result<()> {
    if let Some(p) = pipeline {
        engine.config.pipeline(p)?;
    }
    let tracker = engine.tracker().await?;
    let rows = tracker.rows(pipeline).await?;
    let mut hist = tracker.history(history * 4).await?;
    hist.retain(|h| pipeline.is_none() || h.pipeline.as_deref() == pipeline);
    hist.truncate(history);
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "rows": rows, "history": hist }))?);
        return Ok(());
    }
    println!("{:<28} {:<30} {:>9} {:>6} {:<21} updated by", "PIPELINE", "UPSTREAM", "PROCESSED", "RUN", "UPDATED");
    for r in &rows {
        println!(
            "{:<28} {:<30} {:>9} {:>6} {:<21} {}{}",
            r.pipeline_name,
            r.upstream,
            r.last_processed_version.map_or("-".into(), |v| v.to_string()),
            r.run_id.map_or("-".into(), |v| v.to_string()),
            r.updated_at.and_then(crate::util::time::format_ms).unwrap_or_default(),
            r.updated_by.clone().unwrap_or_default(),
            r.pending_run_id.map_or(String::new(), |p| format!("  (run {p} pending at version {})", r.pending_version.unwrap_or_default()))
        );
    }
    println!("\nHISTORY (newest first)");
    for h in &hist {
        println!(
            "  v{:<5} {:<21} {:<14} {:<24} {:<10} {}",
            h.version,
            h.timestamp_ms.and_then(crate::util::time::format_ms).unwrap_or_default(),
            h.action.clone().unwrap_or_else(|| h.operation.clone()),
            h.pipeline.clone().unwrap_or_default(),
            h.operator.clone().unwrap_or_default(),
            h.reason.clone().map(|r| format!("reason: {r}")).unwrap_or_default()
        );
    }
    Ok(())
}

fn reset_target(args: &ResetArgs) -> Result<crate::ops::reset::ResetTarget> {
    use crate::ops::reset::ResetTarget;
    Ok(if let Some(v) = args.to_version {
        ResetTarget::Version(v)
    } else if args.to_earliest {
        ResetTarget::Earliest
    } else if args.to_latest {
        ResetTarget::Latest
    } else if let Some(n) = args.shift_by {
        ResetTarget::ShiftBy(n)
    } else if let Some(t) = &args.to_datetime {
        let t = crate::util::time::parse_instant(t).map_err(|e| color_eyre::eyre::eyre!("--to-datetime: {e}"))?;
        ResetTarget::DateTime(t.with_timezone(&chrono::Utc))
    } else {
        return Err(color_eyre::eyre::eyre!("give one of --to-version, --to-earliest, --to-latest, --shift-by, --to-datetime"));
    })
}

async fn tracker_reset(engine: &Engine, args: &ResetArgs) -> Result<()> {
    let target = reset_target(args)?;
    if args.execute && engine.read_only {
        return Err(crate::Error::ReadOnly { what: "tracker reset".into() }.into());
    }
    let plan = crate::ops::reset::plan_reset(engine, &args.pipeline, &args.upstreams, target).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        for c in &plan.changes {
            let what = match c.commits_delta {
                0 => "no change".to_string(),
                d if d > 0 => format!("re-reads {d} commits ({} change rows)", c.change_rows),
                d => format!("SKIPS {} commits ({} change rows)", -d, c.change_rows),
            };
            println!(
                "  {:<30} {} → {}   {what}",
                c.upstream,
                c.current.map_or("never".into(), |v| v.to_string()),
                c.new.map_or("earliest snapshot".into(), |v| v.to_string())
            );
        }
    }
    if !args.execute {
        eprintln!("DRY RUN: nothing written; add --execute --reason TEXT to commit");
        return Ok(());
    }
    let reason = args.reason.clone().unwrap_or_else(|| "(no reason given)".into());
    crate::ops::reset::execute_reset(engine, &plan, &reason).await?;
    eprintln!("reset committed to the tracker (operator {}, reason: {reason})", crate::util::who::operator());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::colour_allowed;

    #[test]
    fn colour_only_on_a_terminal_and_without_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some("".into())), "an empty NO_COLOR is unset (no-color.org)");
        assert!(!colour_allowed(true, Some("1".into())));
        assert!(!colour_allowed(false, None), "a pipe or a file gets no escape codes");
        assert!(!colour_allowed(false, Some("1".into())));
    }
}
