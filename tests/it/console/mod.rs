//! The console without a terminal: App state driven by actions (key presses go through the
//! real bindings table), rendered on ratatui's TestBackend and compared with insta snapshots;
//! the bindings table's guarantees; themes; and one end-to-end session in tmux. This file holds
//! the fixtures (a fixed status, a tracker, a preview, one App per screen) the others share:
//!
//! - `snapshots`: every view and popup, rendered and compared with its snapshot;
//! - `behaviour`: key presses through the bindings table, confirmations, read-only refusals;
//! - `themes`: theme files, and every view's styles per theme and terminal size;
//! - `screenshots`: SVG screenshots of every view;
//! - `tmux`: one end-to-end session in a real terminal.

mod behaviour;
mod screenshots;
mod snapshots;
mod themes;
mod tmux;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Local, TimeZone};
use deltalink::config::Config;
use deltalink::console::msg::{Action, Command, View};
use deltalink::console::state::app::{App, Clock, Popup};
use deltalink::console::keys::{self, Context};
use deltalink::console::msg::{Finished, Job, Request, TaskEvent, TrackerData};
use deltalink::console::theme::{self, ColorDepth, Theme, ThemeEnv};
use deltalink::console::render;
use deltalink::engine::keymap::PreviewRow;
use deltalink::store::link::{LinkPage, LinkWrite};
use deltalink::ops::reset::{ResetChange, ResetPlan, ResetTarget};
use deltalink::engine::{Outcome, Preview, ReadRangeView, ReplayReport, RunReport, UpstreamRead};
use deltalink::config::{LagSlo, DEFAULT_MAX_LAG, DEFAULT_RETENTION_MARGIN, DEFAULT_WARN_LAG};
use deltalink::ops::health::{self, Health, UpstreamFacts};
use deltalink::ops::status::{ConsumerStatus, PipelineStatus, PipelineUpstreamStatus, Status, UpstreamStatus};
use deltalink::store::tracker::{HistoryEntry, TrackerRow};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier, Style};
use ratatui::Terminal;

// ---------------------------------------------------------------- fixtures

/// The demo lake's shape, fixed here so engine changes to the demo do not move snapshots.
const CONFIG: &str = r#"
[tracker]
uri = "_deltalink/tracker"
[upstreams.publications]
uri = "publications"
[upstreams.author_publication_link]
uri = "author_publication_link"
[upstreams.d_spmaster]
uri = "d_spmaster"
[upstreams.d_daisng_ranked_affiliation]
uri = "d_daisng_ranked_affiliation"

[pipelines.enriched_publications]
link_table = "_deltalink/links/enriched_publications"
key = ["pub_id"]
[[pipelines.enriched_publications.sources]]
upstream = "publications"
keys = ["pub_id"]
[[pipelines.enriched_publications.sources]]
upstream = "author_publication_link"
keys = ["pub_id"]

[pipelines.author_profiles]
link_table = "_deltalink/links/author_profiles"
key = ["author_id"]
[[pipelines.author_profiles.sources]]
upstream = "author_publication_link"
keys = ["author_id"]

[pipelines.researcher_affiliations]
link_table = "_deltalink/links/researcher_affiliations"
key = ["sp_id", "institution_key"]
reset_allowed = false
[[pipelines.researcher_affiliations.sources]]
upstream = "d_daisng_ranked_affiliation"
keys = ["sp_id", "institution_key"]

[pipelines.spmaster_profiles]
link_table = "_deltalink/links/spmaster_profiles"
key = ["sp_id"]
[[pipelines.spmaster_profiles.sources]]
upstream = "d_spmaster"
keys = ["sp_id"]
[[pipelines.spmaster_profiles.sources]]
upstream = "d_daisng_ranked_affiliation"
keys = ["sp_id"]
"#;

fn config() -> Arc<Config> {
    Arc::new(Config::parse(CONFIG, Path::new("/lake/deltalink.toml")).expect("test config parses"))
}

/// A fixed local time, so snapshots do not depend on the clock or the time zone.
fn clock() -> Clock {
    Clock::Fixed(Local.with_ymd_and_hms(2025, 3, 1, 12, 30, 0).single().expect("valid time"))
}

fn upstream(name: &str, latest: u64, ts: &str, op: &str) -> UpstreamStatus {
    UpstreamStatus {
        name: name.into(),
        uri: format!("/lake/{name}"),
        latest_version: Some(latest),
        cdf_enabled: true,
        last_commit_ts: Some(ts.into()),
        last_commit_ms: chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| t.timestamp_millis()),
        last_operation: Some(op.into()),
        error: None,
    }
}

fn progress(upstream: &str, processed: Option<i64>, latest: Option<u64>, lag_s: Option<f64>) -> PipelineUpstreamStatus {
    PipelineUpstreamStatus {
        upstream: upstream.into(),
        processed_version: processed,
        latest_version: latest,
        lag_versions: latest.map(|l| processed.map_or(l + 1, |p| (l as i64 - p).max(0) as u64)),
        lag_seconds: lag_s,
        retention_seconds_left: None,
        retention_note: None,
        health: Health::default(),
        pending_run_id: None,
        pending_change_rows: None,
    }
}

/// The verdicts status would give, with the default lag objectives (no retention facts).
fn judged(mut st: Status) -> Status {
    let slo = LagSlo { warn: DEFAULT_WARN_LAG, max: DEFAULT_MAX_LAG };
    for p in &mut st.pipelines {
        for u in &mut p.upstreams {
            let error = st.upstreams.iter().find(|x| x.name == u.upstream).and_then(|x| x.error.clone());
            let facts = UpstreamFacts {
                pipeline: &p.name,
                upstream: &u.upstream,
                error: error.as_deref(),
                processed_version: u.processed_version,
                lag_versions: u.lag_versions,
                lag_seconds: u.lag_seconds,
                pending_run_id: u.pending_run_id,
                ..Default::default()
            };
            u.health = health::assess_upstream(&slo, DEFAULT_RETENTION_MARGIN, &facts);
        }
        p.health = health::worst(p.upstreams.iter().map(|u| u.health.clone()));
    }
    st
}

fn pipeline(
    name: &str,
    key: &[&str],
    link_rows: Option<u64>,
    run: Option<i64>,
    ups: Vec<PipelineUpstreamStatus>,
) -> PipelineStatus {
    PipelineStatus {
        name: name.into(),
        link_table: format!("/lake/_deltalink/links/{name}"),
        key: key.iter().map(|k| k.to_string()).collect(),
        link_rows,
        last_run_id: run,
        last_write: None,
        health: Health::default(),
        upstreams: ups,
        consumers: vec![],
        pause: None,
    }
}

/// The demo lake's status, built by hand: lag, an up-to-date pipeline, an interrupted run,
/// a never-run pipeline and an upstream that cannot be read.
fn status() -> Status {
    let mut spmaster = pipeline(
        "spmaster_profiles",
        &["sp_id"],
        Some(812),
        Some(3),
        vec![
            progress("d_spmaster", Some(90), Some(95), Some(340.0)),
            progress("d_daisng_ranked_affiliation", None, None, None),
        ],
    );
    spmaster.upstreams[0].pending_run_id = Some(4);
    let mut enriched = pipeline(
        "enriched_publications",
        &["pub_id"],
        Some(4_210),
        Some(7),
        vec![
            progress("publications", Some(230), Some(240), Some(312.0)),
            progress("author_publication_link", Some(180), Some(180), Some(0.0)),
        ],
    );
    // Run 7 was written by another process (watch) 6m12s before the fixed clock.
    enriched.last_write = Some(LinkWrite {
        version: 9,
        run_id: 7,
        kind: "run".into(),
        at: Some("2025-03-01T12:23:48Z".into()),
        at_ms: Some(clock().now().timestamp_millis() - 372_000),
        keys_inserted: Some(1_204),
        keys_updated: Some(312),
    });
    let mut broken = upstream("d_daisng_ranked_affiliation", 0, "2025-03-01T11:00:00Z", "WRITE");
    broken.latest_version = None;
    broken.error = Some(
        "upstream `d_daisng_ranked_affiliation` at /lake/d_daisng_ranked_affiliation does not exist (no Delta table there)\n  fix: check the uri"
            .into(),
    );
    judged(Status {
        upstreams: vec![
            upstream("author_publication_link", 180, "2025-03-01T12:10:00Z", "MERGE"),
            broken,
            upstream("d_spmaster", 95, "2025-03-01T12:20:00Z", "UPDATE"),
            upstream("publications", 240, "2025-03-01T12:25:00Z", "WRITE"),
        ],
        pipelines: vec![
            pipeline(
                "author_profiles",
                &["author_id"],
                Some(0),
                None,
                vec![progress("author_publication_link", None, Some(180), None)],
            ),
            enriched,
            pipeline(
                "researcher_affiliations",
                &["sp_id", "institution_key"],
                None,
                None,
                vec![progress("d_daisng_ranked_affiliation", None, None, None)],
            ),
            spmaster,
        ],
    })
}

fn report(pipeline: &str, run_id: i64, keys: u64) -> RunReport {
    RunReport {
        pipeline: pipeline.into(),
        run_id: Some(run_id),
        outcome: Outcome::Written,
        resumed: false,
        upstreams: vec![],
        change_rows: keys * 3,
        null_key_rows: 0,
        distinct_keys: keys,
        keys_inserted: keys - 2,
        keys_updated: 2,
        link_files_rewritten: 1,
        link_files_marked: 0,
        cdf_scans: 2,
        joined: vec![],
        duration: Duration::from_millis(1_234),
        link_merge: Duration::from_millis(400),
    }
}

/// Answer the App's pending requests the way the engine would; unanswered ones stay in flight.
fn respond(app: &mut App, answer: impl Fn(&Job) -> Option<Finished>) -> Vec<Request> {
    let requests = app.drain_requests();
    for r in &requests {
        if let Request::Spawn { id, job } = r {
            if let Some(result) = answer(job) {
                app.update(Action::Task(TaskEvent::Finished { id: *id, result }));
            }
        }
    }
    requests
}

fn app_with(read_only: bool) -> App {
    let mut app = App::new(config(), read_only).with_clock(clock());
    respond(&mut app, |job| matches!(job, Job::Status).then(|| Finished::Status(Ok(status()))));
    app
}

fn app() -> App {
    app_with(false)
}

fn key(app: &mut App, code: KeyCode) {
    let ev = KeyEvent::new(code, KeyModifiers::NONE);
    if let Some(action) = keys::action_for(app.context(), &ev) {
        app.update(action);
    }
}

fn keys_typed(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

/// The screen `render::draw` paints for `app`, cells with their styles.
fn draw(app: &App, width: u16, height: u16) -> Buffer {
    let mut term = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    term.draw(|f| render::draw(f, app)).expect("draw");
    term.backend().buffer().clone()
}

/// The characters of a screen, one line per row, trailing blanks trimmed.
fn text_of(buf: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width).map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol())).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render(app: &App, width: u16, height: u16) -> String {
    text_of(&draw(app, width, height))
}

fn is_write_spawn(r: &Request) -> bool {
    matches!(r, Request::Spawn { job: Job::Write(_), .. })
}

fn tracker_data() -> TrackerData {
    let row = |p: &str, u: &str, v: i64, run: i64| TrackerRow {
        pipeline_name: p.into(),
        upstream: u.into(),
        last_processed_version: Some(v),
        last_processed_ts: Some(1_740_830_000_000),
        run_id: Some(run),
        pending_version: None,
        pending_run_id: None,
        updated_at: Some(1_740_831_000_000),
        updated_by: Some("ops".into()),
        note: Some("run".into()),
    };
    let mut interrupted = row("spmaster_profiles", "d_spmaster", 90, 3);
    interrupted.pending_version = Some(95);
    interrupted.pending_run_id = Some(4);
    let entry = |version: u64, action: &str, pipeline: &str, reason: Option<&str>| HistoryEntry {
        version,
        timestamp_ms: Some(1_740_831_000_000 - (10 - version as i64) * 60_000),
        operation: "MERGE".into(),
        action: Some(action.into()),
        pipeline: Some(pipeline.into()),
        operator: Some("ops".into()),
        reason: reason.map(String::from),
        details: serde_json::Value::Null,
    };
    TrackerData {
        rows: vec![
            row("enriched_publications", "author_publication_link", 180, 7),
            row("enriched_publications", "publications", 230, 7),
            interrupted,
        ],
        history: vec![
            entry(9, "run", "enriched_publications", None),
            entry(8, "reset", "enriched_publications", Some("re-read after the title fix")),
            entry(7, "run-intent", "spmaster_profiles", None),
        ],
    }
}

fn preview_data() -> Preview {
    let row = |k: &str, u: &str, v: i64, t: &str| PreviewRow {
        key: vec![k.into()],
        upstream: u.into(),
        commit_version: v,
        change_type: t.into(),
        commit_time: Some(format!("2025-03-01T12:{:02}:00Z", v % 60)),
        change_rows: 1,
    };
    Preview {
        pipeline: "enriched_publications".into(),
        key: vec!["pub_id".into()],
        upstreams: vec![
            UpstreamRead {
                upstream: "publications".into(),
                processed: Some(230),
                tracked: true,
                pinned: 240,
                pinned_ts: None,
                range: Some(ReadRangeView { snapshot: None, from: 231, to: 240 }),
            },
            UpstreamRead {
                upstream: "author_publication_link".into(),
                processed: Some(180),
                tracked: true,
                pinned: 180,
                pinned_ts: None,
                range: None,
            },
        ],
        change_rows: 14,
        null_key_rows: 1,
        distinct_keys: 4,
        rows: vec![
            row("1017", "publications", 233, "update_postimage"),
            row("1017", "publications", 233, "update_preimage"),
            row("1204", "publications", 236, "insert"),
            row("877", "publications", 239, "delete"),
        ],
    }
}

fn link_page() -> LinkPage {
    let cols = ["pub_id", "run_id", "last_change_ts", "upstreams", "provenance"];
    let row = |k: &str, run: &str, ts: &str, prov: &str| {
        vec![k.to_string(), run.to_string(), ts.to_string(), "[publications]".to_string(), prov.to_string()]
    };
    LinkPage {
        columns: cols.map(String::from).to_vec(),
        rows: vec![
            row("1017", "7", "2025-03-01T12:25:00Z", "[publications@233:update_postimage@2025-03-01T12:25:00Z]"),
            row("1204", "7", "2025-03-01T12:20:00Z", "[publications@236:insert@2025-03-01T12:20:00Z]"),
            row("877", "6", "2025-03-01T11:55:00Z", "[publications@212:delete@2025-03-01T11:55:00Z]"),
        ],
        total_matching: 4_210,
    }
}

fn reset_plan(change_rows: u64) -> ResetPlan {
    ResetPlan {
        pipeline: "enriched_publications".into(),
        target: ResetTarget::Version(200),
        changes: vec![ResetChange {
            upstream: "publications".into(),
            current: Some(230),
            new: Some(200),
            valid: (-1, 240),
            latest: 240,
            commits_delta: 30,
            change_rows,
        }],
    }
}

/// The Tracker view with its data, the first row selected.
fn tracker_app() -> App {
    let mut app = app();
    key(&mut app, KeyCode::Char('5'));
    respond(&mut app, |job| matches!(job, Job::Tracker).then(|| Finished::Tracker(Ok(tracker_data()))));
    app
}

/// The Pipelines view after a run, enriched_publications selected, its detail pane open.
fn pipelines_app() -> App {
    let mut app = app();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('j'));
    app.update(Action::Task(TaskEvent::Finished {
        id: deltalink::console::msg::TaskId(900),
        result: Finished::Run {
            pipeline: "enriched_publications".into(),
            result: Ok(report("enriched_publications", 7, 42)),
        },
    }));
    key(&mut app, KeyCode::Enter);
    respond(&mut app, answer_pending_rows);
    app
}

/// The engine's answer to a count of pending change rows: 1,234 per range.
fn answer_pending_rows(job: &Job) -> Option<Finished> {
    match job {
        Job::PendingRows { pipeline, ranges } => Some(Finished::PendingRows {
            pipeline: pipeline.clone(),
            counts: ranges.iter().map(|r| (r.upstream.clone(), Ok(1_234))).collect(),
        }),
        _ => None,
    }
}

/// The Link view of enriched_publications with its first page.
fn link_app() -> App {
    let mut app = app();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Char('3'));
    let asked = respond(&mut app, |job| match job {
        Job::LinkPage { pipeline, .. } => {
            Some(Finished::LinkPage { pipeline: pipeline.clone(), result: Ok(link_page()) })
        }
        _ => None,
    });
    assert!(asked.iter().any(|r| matches!(r, Request::Spawn { job: Job::LinkPage { pipeline, .. }, .. } if pipeline == "enriched_publications")));
    app
}

/// The Preview view of enriched_publications: first the spinner (checked), then the result.
fn preview_app() -> App {
    let mut app = app();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Char('4'));
    let requests = app.drain_requests();
    let loading = render(&app, 100, 30);
    assert!(loading.contains("computing what the next run of enriched_publications would write"), "{loading}");
    for r in requests {
        if let Request::Spawn { id, job: Job::Preview { pipeline } } = r {
            app.update(Action::Task(TaskEvent::Finished {
                id,
                result: Finished::Preview { pipeline, result: Ok(preview_data()) },
            }));
        }
    }
    app
}

/// The Activity view with a run, a failed run and a background error.
fn activity_app() -> App {
    let mut app = app();
    let id = deltalink::console::msg::TaskId(900);
    let run = |pipeline: &str, result| {
        Action::Task(TaskEvent::Finished { id, result: Finished::Run { pipeline: pipeline.into(), result } })
    };
    app.update(run("enriched_publications", Ok(report("enriched_publications", 7, 42))));
    app.update(run(
        "researcher_affiliations",
        Err("upstream `d_daisng_ranked_affiliation` does not exist\n  fix: check the uri".into()),
    ));
    app.update(Action::Task(TaskEvent::Background { error: "demo writer: commit conflict".into() }));
    key(&mut app, KeyCode::Char('6'));
    app
}

/// The help overlay over the Pipelines view.
fn help_app() -> App {
    let mut app = app();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('?'));
    assert_eq!(app.context(), Context::Help);
    app
}

/// A planned reset of enriched_publications/publications to version 200, waiting for the
/// pipeline name to be typed (half of it is).
fn reset_confirm_app() -> App {
    let mut app = tracker_app();
    key(&mut app, KeyCode::Char('j')); // enriched_publications / publications
    key(&mut app, KeyCode::Char('e'));
    assert_eq!(app.context(), Context::ResetForm);
    key(&mut app, KeyCode::Tab); // target → value
    keys_typed(&mut app, "200");
    key(&mut app, KeyCode::Enter); // dry run
    let asked = respond(&mut app, |job| match job {
        Job::PlanReset { pipeline, upstreams, target } => {
            assert_eq!(upstreams, &["publications".to_string()]);
            assert_eq!(target, &ResetTarget::Version(200));
            Some(Finished::ResetPlan { pipeline: pipeline.clone(), result: Ok(reset_plan(4_500)) })
        }
        _ => None,
    });
    assert!(asked.iter().all(|r| !is_write_spawn(r)), "a dry run writes nothing");
    key(&mut app, KeyCode::Tab); // value → reason
    keys_typed(&mut app, "re-read after the title fix");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::TypedConfirm, "4,500 change rows need the pipeline name typed");
    keys_typed(&mut app, "enriched");
    app
}

/// The replay form of enriched_publications, versions 120..=140 of publications, its dry run
/// shown.
fn replay_form_app() -> App {
    let mut app = pipelines_app();
    key(&mut app, KeyCode::Char('P'));
    assert_eq!(app.context(), Context::ReplayForm);
    key(&mut app, KeyCode::BackTab); // from → scope
    key(&mut app, KeyCode::Right); // all → the first upstream
    key(&mut app, KeyCode::Tab);
    keys_typed(&mut app, "120");
    key(&mut app, KeyCode::Tab);
    keys_typed(&mut app, "140");
    key(&mut app, KeyCode::Enter);
    let asked = respond(&mut app, |job| match job {
        Job::PlanReplay(r) => {
            assert_eq!((r.from_version, r.to_version, r.execute, r.into.is_none()), (120, Some(140), false, true));
            assert_eq!(r.upstreams, vec!["publications".to_string()]);
            Some(Finished::ReplayPlan { pipeline: r.pipeline.clone(), result: Ok(replay_report(4_321)) })
        }
        _ => None,
    });
    assert!(asked.iter().all(|r| !is_write_spawn(r)), "a dry run writes nothing");
    app
}

fn replay_report(keys: u64) -> ReplayReport {
    ReplayReport {
        pipeline: "enriched_publications".into(),
        target: "demo-lake/_deltalink/links/enriched_publications".into(),
        into_link_table: true,
        upstreams: vec![UpstreamRead {
            upstream: "publications".into(),
            processed: Some(119),
            tracked: true,
            pinned: 140,
            pinned_ts: None,
            range: Some(ReadRangeView { snapshot: None, from: 120, to: 140 }),
        }],
        change_rows: keys * 2,
        distinct_keys: keys,
        run_id: None,
        written: false,
        duration: Duration::from_millis(80),
    }
}

/// `enriched_publications` with two downstream consumers: a search index that is caught up and
/// a daily report a day and a half behind (lagging by its default 26 h objective).
fn consumers_app() -> App {
    let text = format!("{CONFIG}[[pipelines.enriched_publications.consumers]]\nname = \"search_index\"\n[[pipelines.enriched_publications.consumers]]\nname = \"daily_report\"\n");
    let config = Arc::new(Config::parse(&text, Path::new("/lake/deltalink.toml")).expect("config with consumers parses"));
    let slo = config.pipelines["enriched_publications"].consumers[1].slo;
    let mut st = status();
    let enriched = st.pipelines.iter_mut().find(|p| p.name == "enriched_publications").expect("pipeline");
    let consumer = |name: &str, acked: i64, runs: u64, keys: u64, lag: f64| {
        let facts = health::ConsumerFacts { pipeline: "enriched_publications", consumer: name, acked_run_id: acked, keys_waiting: keys, runs_waiting: runs, lag_seconds: lag, ..Default::default() };
        ConsumerStatus {
            name: name.into(),
            acked_run_id: acked,
            reading_version: Some(9),
            reading_through_run_id: Some(7),
            runs_waiting: runs,
            keys_waiting: keys,
            oldest_unconsumed_change: None,
            lag_seconds: lag,
            health: health::assess_consumer(&slo, &facts),
        }
    };
    enriched.consumers = vec![consumer("search_index", 7, 0, 0, 0.0), consumer("daily_report", 5, 2, 1_516, 36.0 * 3_600.0)];
    enriched.health = health::worst(std::iter::once(enriched.health.clone()).chain(enriched.consumers.iter().map(|c| c.health.clone())));
    let mut app = App::new(config, false).with_clock(clock());
    respond(&mut app, |job| matches!(job, Job::Status).then(|| Finished::Status(Ok(st.clone()))));
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Enter);
    respond(&mut app, answer_pending_rows);
    app
}

/// Screenshots go to the target dir; `DELTALINK_SAVE_SCREENSHOTS=1` refreshes the committed
/// ones in screenshots/ instead (so a plain test run leaves the checkout clean).
fn save_screenshot(file_name: &str, contents: &str) {
    let dir = if std::env::var("DELTALINK_SAVE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    std::fs::write(dir.join(file_name), contents).expect("write screenshot");
}

/// The six views first, then the popups: what the snapshot tests, the theme snapshots and the
/// SVG screenshots all show, built once.
const SCREENS: [&str; 10] =
    ["upstreams", "pipelines", "link", "preview", "tracker", "activity", "help", "reset_confirm", "replay_form", "consumers"];

fn screen_app(name: &str) -> App {
    match name {
        "upstreams" => app(),
        "pipelines" => pipelines_app(),
        "link" => link_app(),
        "preview" => preview_app(),
        "tracker" => tracker_app(),
        "activity" => activity_app(),
        "help" => help_app(),
        "reset_confirm" => reset_confirm_app(),
        "replay_form" => replay_form_app(),
        "consumers" => consumers_app(),
        other => panic!("no fixture screen `{other}`"),
    }
}

/// Compare `screen` with the insta snapshot `name`. Asserted here, in this module, for every
/// submodule: the snapshots keep the names they had when these tests were one file
/// (`snapshots/it__console__<name>.snap`).
fn snapshot(name: &str, screen: String) {
    insta::assert_snapshot!(name, screen);
}
