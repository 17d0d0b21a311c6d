//! The console without a terminal: App state driven by actions (key presses go through the
//! real bindings table), rendered on ratatui's TestBackend and compared with insta snapshots;
//! the bindings table's guarantees; themes; and one end-to-end session in tmux.

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

// ---------------------------------------------------------------- snapshots of every view

#[test]
fn snapshot_upstreams_view() {
    insta::assert_snapshot!("upstreams_100x30", render(&app(), 100, 30));
}

#[test]
fn snapshot_pipelines_view_with_detail_pane() {
    insta::assert_snapshot!("pipelines_100x30", render(&pipelines_app(), 100, 30));
}

#[test]
fn snapshot_link_view() {
    insta::assert_snapshot!("link_100x30", render(&link_app(), 100, 30));
}

#[test]
fn snapshot_preview_view_spinner_then_result() {
    insta::assert_snapshot!("preview_100x30", render(&preview_app(), 100, 30));
}

#[test]
fn snapshot_tracker_view() {
    insta::assert_snapshot!("tracker_100x30", render(&tracker_app(), 100, 30));
}

#[test]
fn snapshot_activity_view() {
    insta::assert_snapshot!("activity_100x30", render(&activity_app(), 100, 30));
}

#[test]
fn snapshot_help_overlay() {
    let mut app = help_app();
    insta::assert_snapshot!("help_pipelines_100x30", render(&app, 100, 30));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.context(), Context::View(View::Pipelines));
}

#[test]
fn snapshot_read_only_badge_and_flash_on_write_attempt() {
    let mut app = app_with(true);
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('r'));
    assert!(app.popup.is_none(), "a read-only console proposes no write");
    assert!(app.drain_requests().iter().all(|r| !is_write_spawn(r)));
    let screen = render(&app, 100, 30);
    assert!(screen.contains("[RO]"), "{screen}");
    assert!(screen.contains("read-only: running a pipeline is disabled"), "{screen}");
    insta::assert_snapshot!("read_only_flash_100x30", screen);
}

#[test]
fn snapshot_reset_confirmation_popup() {
    let mut app = reset_confirm_app();
    insta::assert_snapshot!("reset_confirm_100x30", render(&app, 100, 30));

    key(&mut app, KeyCode::Enter); // wrong name: refused
    assert!(app.drain_requests().iter().all(|r| !is_write_spawn(r)));
    assert_eq!(app.context(), Context::TypedConfirm);
    keys_typed(&mut app, "_publications");
    key(&mut app, KeyCode::Enter);
    let requests = app.drain_requests();
    assert!(
        requests.iter().any(|r| matches!(r, Request::Spawn { job: Job::Write(deltalink::console::msg::WriteOp::Reset { reason, .. }), .. } if reason == "re-read after the title fix")),
        "{requests:?}"
    );
}

#[test]
fn snapshot_replay_form_with_its_dry_run() {
    insta::assert_snapshot!("replay_form_100x30", render(&replay_form_app(), 100, 30));
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

#[test]
fn snapshot_pipelines_with_consumers_in_the_table_and_the_detail_pane() {
    let screen = render(&consumers_app(), 120, 34);
    assert!(screen.contains("daily_report 1,516 · 1d12h"), "the table shows what waits for the lagging consumer:\n{screen}");
    assert!(screen.contains("search_index ✓"), "{screen}");
    insta::assert_snapshot!("pipelines_consumers_120x34", screen);
}

#[test]
fn snapshot_small_terminal_80x24() {
    let mut app = app();
    insta::assert_snapshot!("upstreams_80x24", render(&app, 80, 24));
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("pipelines_detail_80x24", render(&app, 80, 24));
}

#[test]
fn a_terminal_too_small_says_so_and_still_quits() {
    let mut app = app();
    let screen = render(&app, 50, 12);
    assert!(screen.contains("terminal is 50×12; deltalink needs at least 60×16"), "{screen}");
    assert!(render(&app, 60, 16).contains("deltalink"), "the minimum size draws the console");
    key(&mut app, KeyCode::Char('q'));
    assert!(app.should_quit, "q quits even when the console cannot be drawn");
}

// ---------------------------------------------------------------- behaviour

#[test]
fn small_reset_is_confirmed_with_y_and_declining_returns_to_the_form() {
    let mut app = tracker_app();
    key(&mut app, KeyCode::Char('e'));
    key(&mut app, KeyCode::Right); // target: earliest
    key(&mut app, KeyCode::Enter);
    respond(&mut app, |job| match job {
        Job::PlanReset { pipeline, .. } => {
            Some(Finished::ResetPlan { pipeline: pipeline.clone(), result: Ok(reset_plan(12)) })
        }
        _ => None,
    });
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    keys_typed(&mut app, "why");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::Confirm);
    key(&mut app, KeyCode::Char('n'));
    assert_eq!(app.context(), Context::ResetForm, "declining goes back to the form");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('y'));
    assert!(app.drain_requests().iter().any(is_write_spawn));
}

/// A maintenance dry run as the engine answers it: 38 small files and one that hides most of
/// its rows, 212 removed files to vacuum, version 9 kept for a consumer.
fn maintain_plan() -> Vec<deltalink::ops::maintain::TableUpkeep> {
    use deltalink::ops::maintain::{Files, TableUpkeep};
    vec![TableUpkeep {
        table: "link table of enriched_publications".into(),
        uri: "/lake/_deltalink/links/enriched_publications/".into(),
        before: Files { files: 41, bytes: 9_800_000, with_deletion_vectors: 3 },
        after: Files { files: 4, bytes: 9_800_000, with_deletion_vectors: 3 },
        purge: deltalink::store::link::Purged { files: 1, rows_dropped: 1_204 },
        compact_files: 38,
        vacuum_files: 212,
        vacuum_bytes: 31_400_000,
        retention_seconds: 7 * 86_400,
        keep_from_version: Some(9),
        executed: false,
    }]
}

#[test]
fn maintain_shows_its_dry_run_and_writes_only_when_confirmed() {
    let mut app = pipelines_app();
    key(&mut app, KeyCode::Char('m'));
    let requests = respond(&mut app, |job| match job {
        Job::PlanMaintain { pipeline } => Some(Finished::MaintainPlan { pipeline: pipeline.clone(), result: Ok(maintain_plan()) }),
        _ => None,
    });
    assert!(requests.iter().any(|r| matches!(r, Request::Spawn { job: Job::PlanMaintain { pipeline }, .. } if pipeline == "enriched_publications")));
    assert!(!requests.iter().any(is_write_spawn), "a dry run writes nothing");
    assert_eq!(app.context(), Context::Confirm);
    insta::assert_snapshot!("maintain_confirm_100x30", render(&app, 100, 30));
    key(&mut app, KeyCode::Char('n'));
    assert!(!app.drain_requests().iter().any(is_write_spawn), "declined");
    key(&mut app, KeyCode::Char('m'));
    respond(&mut app, |job| match job {
        Job::PlanMaintain { pipeline } => Some(Finished::MaintainPlan { pipeline: pipeline.clone(), result: Ok(maintain_plan()) }),
        _ => None,
    });
    key(&mut app, KeyCode::Char('y'));
    assert!(app.drain_requests().iter().any(|r| matches!(r, Request::Spawn { job: Job::Write(deltalink::console::msg::WriteOp::Maintain { .. }), .. })));
    let mut read_only = app_with(true);
    key(&mut read_only, KeyCode::Char('2'));
    key(&mut read_only, KeyCode::Char('m'));
    assert!(read_only.drain_requests().is_empty(), "read-only: not even the dry run");
}

/// `z` pauses the selected pipeline after a y/n; once the status shows the operator's pause, `z`
/// offers to resume it; `:pause NAME REASON` records the typed reason; read-only refuses both.
#[test]
fn z_pauses_then_resumes_the_selected_pipeline_and_the_palette_takes_a_reason() {
    use deltalink::console::msg::WriteOp;
    let pause_of = |requests: &[Request]| -> Vec<(String, bool, String)> {
        requests
            .iter()
            .filter_map(|r| match r {
                Request::Spawn { job: Job::Write(WriteOp::Pause { pipeline, paused, reason }), .. } => Some((pipeline.clone(), *paused, reason.clone())),
                _ => None,
            })
            .collect()
    };
    let mut app = app();
    keys_typed(&mut app, "2j");
    key(&mut app, KeyCode::Char('z'));
    assert_eq!(app.context(), Context::Confirm);
    let screen = render(&app, 100, 30);
    assert!(screen.contains("Pause pipeline enriched_publications?") && screen.contains("a run under way finishes"), "{screen}");
    key(&mut app, KeyCode::Char('n'));
    assert!(pause_of(&app.drain_requests()).is_empty(), "declined: nothing written");
    let mut paused = status();
    let p = paused.pipelines.iter_mut().find(|p| p.name == "enriched_publications").expect("pipeline");
    p.pause = Some(deltalink::store::pause::Pause { by: "amy".into(), at: Some("2025-03-01T12:00:00Z".into()), reason: "INC-7".into() });
    p.health = Health { state: health::HealthState::Paused, reason: "paused by amy at 2025-03-01T12:00:00Z: INC-7".into() };
    key(&mut app, KeyCode::Char('z'));
    key(&mut app, KeyCode::Char('y'));
    // The engine pauses it, and the status the console reloads after the write shows the pause.
    let requests = respond(&mut app, |job| match job {
        Job::Write(WriteOp::Pause { pipeline, paused, .. }) => {
            Some(Finished::Paused { pipeline: pipeline.clone(), paused: *paused, result: Ok(deltalink::ops::pause::Paused::Changed { run_in_progress: false }) })
        }
        _ => None,
    });
    assert_eq!(pause_of(&requests), [("enriched_publications".to_string(), true, "paused from the console".to_string())]);
    respond(&mut app, |job| matches!(job, Job::Status).then(|| Finished::Status(Ok(paused.clone()))));
    let screen = render(&app, 100, 30);
    assert!(screen.contains("› enriched_publications   paused"), "the health column says it in a word:\n{screen}");
    key(&mut app, KeyCode::Char('z'));
    let screen = render(&app, 100, 30);
    assert!(screen.contains("Resume pipeline enriched_publications?") && screen.contains("It is paused by amy at 2025-03-01T12:00:00Z: INC-7."), "{screen}");
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(pause_of(&app.drain_requests()), [("enriched_publications".to_string(), false, "resumed from the console".to_string())]);

    key(&mut app, KeyCode::Char(':'));
    keys_typed(&mut app, "pause spmaster_profiles upstream rebuild INC-9");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(pause_of(&app.drain_requests()), [("spmaster_profiles".to_string(), true, "upstream rebuild INC-9".to_string())]);

    let mut read_only = app_with(true);
    key(&mut read_only, KeyCode::Char('2'));
    key(&mut read_only, KeyCode::Char('z'));
    assert_ne!(read_only.context(), Context::Confirm, "read-only: not even asked");
    assert!(pause_of(&read_only.drain_requests()).is_empty());
}

#[test]
fn replay_needs_a_dry_run_a_reason_and_a_typed_name_and_declining_returns_to_the_form() {
    let mut app = replay_form_app();
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::ReplayForm, "no reason yet");
    assert!(app.flash.as_ref().is_some_and(|f| f.text.contains("reason")));
    keys_typed(&mut app, "bad join in v121");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::TypedConfirm, "4,321 keys into the production link table: type the name");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.context(), Context::ReplayForm, "declining goes back to the form");
    assert!(app.drain_requests().iter().all(|r| !is_write_spawn(r)));
    key(&mut app, KeyCode::Enter);
    keys_typed(&mut app, "enriched_publications");
    key(&mut app, KeyCode::Enter);
    let requests = app.drain_requests();
    let written = requests.iter().find_map(|r| match r {
        Request::Spawn { job: Job::Write(deltalink::console::msg::WriteOp::Replay { replay, .. }), .. } => Some(replay.clone()),
        _ => None,
    });
    let replay = written.expect("the confirmed replay is sent");
    assert_eq!((replay.execute, replay.from_version, replay.to_version), (true, 120, Some(140)));
    assert_eq!(replay.reason.as_deref(), Some("bad join in v121"));

    // Into a scratch table: a path, resolved like the config's paths; editing drops the dry run.
    let mut app = replay_form_app();
    key(&mut app, KeyCode::Tab); // to → into
    keys_typed(&mut app, "scratch/check");
    assert!(matches!(&app.popup, Some(Popup::ReplayForm(f)) if f.plan.value.is_none()), "an edit invalidates the dry run");
    key(&mut app, KeyCode::Enter);
    let asked = app.drain_requests();
    let into = asked.iter().find_map(|r| match r {
        Request::Spawn { job: Job::PlanReplay(r), .. } => r.into.clone(),
        _ => None,
    });
    assert!(into.is_some_and(|u| u.path().ends_with("scratch/check/")), "{asked:?}");

    // The pipeline's own link table typed out as a path is still production: the engine's dry
    // run says so, and the name must be typed.
    let mut app = replay_form_app();
    key(&mut app, KeyCode::Tab); // to → into
    keys_typed(&mut app, "demo-lake/_deltalink/links/enriched_publications");
    key(&mut app, KeyCode::Enter);
    respond(&mut app, |job| match job {
        Job::PlanReplay(r) => Some(Finished::ReplayPlan { pipeline: r.pipeline.clone(), result: Ok(replay_report(4_321)) }),
        _ => None,
    });
    key(&mut app, KeyCode::Tab); // into → reason
    keys_typed(&mut app, "same table, by its path");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::TypedConfirm, "into its own link table by path: type the name");
}

#[test]
fn the_detail_pane_counts_pending_change_rows_once_per_version() {
    use deltalink::console::msg::PendingRange;
    let mut app = app();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('j')); // enriched_publications
    app.drain_requests();
    key(&mut app, KeyCode::Enter);
    let asked: Vec<Job> = app.drain_requests().into_iter().filter_map(|r| match r {
        Request::Spawn { job: job @ Job::PendingRows { .. }, id } => {
            app.update(Action::Task(TaskEvent::Finished { id, result: answer_pending_rows(&job).expect("answer") }));
            Some(job)
        }
        _ => None,
    }).collect();
    // Only publications is behind (230 of 240); author_publication_link is caught up.
    assert!(
        matches!(asked.as_slice(), [Job::PendingRows { pipeline, ranges }]
            if pipeline == "enriched_publications" && ranges == &[PendingRange { upstream: "publications".into(), from: 231, to: 240 }]),
        "{asked:?}"
    );
    let screen = render(&app, 120, 40);
    assert!(screen.contains("chg rows") && screen.contains("1,234"), "{screen}");
    // The same versions again (a refresh): not counted again.
    app.update(Action::Task(TaskEvent::Finished { id: deltalink::console::msg::TaskId(901), result: Finished::Status(Ok(status())) }));
    assert!(app.drain_requests().iter().all(|r| !matches!(r, Request::Spawn { job: Job::PendingRows { .. }, .. })));
    // publications moved on: counted again, over the new range.
    let mut moved = status();
    moved.pipelines[1].upstreams[0].latest_version = Some(245);
    app.update(Action::Task(TaskEvent::Finished { id: deltalink::console::msg::TaskId(902), result: Finished::Status(Ok(moved)) }));
    let again = app.drain_requests();
    assert!(
        again.iter().any(|r| matches!(r, Request::Spawn { job: Job::PendingRows { ranges, .. }, .. } if ranges[0].to == 245)),
        "{again:?}"
    );
}

#[test]
fn every_binding_of_every_view_is_in_the_help_overlay() {
    for view in View::ALL {
        let mut app = app();
        app.update(Command::Show(view).into());
        app.update(Command::Help.into());
        let screen = render(&app, 120, 60);
        for b in keys::bindings(Context::View(view)) {
            let line = format!("{:<14} {}", keys::keys_label(b), b.help);
            assert!(screen.contains(&line), "help of {view:?} lacks `{line}`:\n{screen}");
        }
    }
}

#[test]
fn every_popup_shows_its_bar_bindings() {
    let mut app = tracker_app();
    key(&mut app, KeyCode::Char('e'));
    let mut replay = tracker_app();
    key(&mut replay, KeyCode::Char('P'));
    for (app, ctx) in [(app, Context::ResetForm), (replay, Context::ReplayForm)] {
        assert_eq!(app.context(), ctx);
        let screen = render(&app, 120, 40);
        for b in keys::bindings(ctx) {
            if let Some(label) = b.bar {
                let hint = format!("{} {label}", keys::keys_label(b));
                assert!(screen.contains(&hint), "{ctx:?} lacks `{hint}`:\n{screen}");
            }
        }
    }
}

#[test]
fn writes_always_go_through_a_confirmation() {
    for view in View::ALL {
        for b in keys::bindings(Context::View(view)).into_iter().filter(|b| b.command.is_write()) {
            let mut app = tracker_app();
            app.update(Command::Show(view).into());
            app.drain_requests();
            app.update(b.command.into());
            // Maintenance asks once its dry run is back.
            let requests = respond(&mut app, |job| match job {
                Job::PlanMaintain { pipeline } => Some(Finished::MaintainPlan { pipeline: pipeline.clone(), result: Ok(maintain_plan()) }),
                _ => None,
            });
            assert!(requests.iter().all(|r| !is_write_spawn(r)), "{view:?} {:?} wrote without asking", b.command);
            assert!(
                matches!(app.popup, Some(Popup::Confirm(_) | Popup::ResetForm(_) | Popup::ReplayForm(_))),
                "{view:?} {:?} opened no confirmation",
                b.command
            );
        }
    }
    // The palette asks too.
    let mut app = app();
    key(&mut app, KeyCode::Char(':'));
    keys_typed(&mut app, "run enriched_publications");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.context(), Context::Confirm);
    assert!(app.drain_requests().iter().all(|r| !is_write_spawn(r)));
    key(&mut app, KeyCode::Char('y'));
    assert!(app.drain_requests().iter().any(is_write_spawn));
}

#[test]
fn a_write_key_means_the_same_in_every_view() {
    let mut meaning: std::collections::HashMap<keys::KeyPress, Vec<(View, Command)>> = Default::default();
    for view in View::ALL {
        for b in keys::bindings(Context::View(view)) {
            for k in b.keys {
                meaning.entry(*k).or_default().push((view, b.command));
            }
        }
    }
    for (k, uses) in meaning {
        if uses.iter().any(|(_, c)| c.is_write()) {
            let first = uses[0].1;
            assert!(
                uses.iter().all(|(_, c)| *c == first),
                "key {} is a write in one view and not in another: {uses:?}",
                k.label()
            );
        }
    }
}

#[test]
fn read_only_refuses_every_write_path() {
    let mut app = app_with(true);
    for (view, k) in [(View::Pipelines, 'r'), (View::Pipelines, 'R'), (View::Upstreams, 'R'), (View::Pipelines, 'P'), (View::Tracker, 'P')] {
        app.update(Command::Show(view).into());
        key(&mut app, KeyCode::Char(k));
        assert!(app.popup.is_none(), "{view:?} {k}");
        assert!(app.flash.as_ref().is_some_and(|f| f.text.contains("read-only")));
    }
    key(&mut app, KeyCode::Char(':'));
    keys_typed(&mut app, "run-all");
    key(&mut app, KeyCode::Enter);
    assert!(app.popup.is_none());
    assert!(app.drain_requests().iter().all(|r| !is_write_spawn(r)));
}

#[test]
fn reset_is_refused_where_the_config_forbids_it() {
    let mut app = app();
    key(&mut app, KeyCode::Char(':'));
    keys_typed(&mut app, "reset researcher_affiliations");
    key(&mut app, KeyCode::Enter);
    assert!(app.popup.is_none());
    assert!(app.flash.as_ref().is_some_and(|f| f.text.contains("reset_allowed = false")));
}

#[test]
fn filter_palette_and_quit() {
    let mut app = app();
    key(&mut app, KeyCode::Char('/'));
    keys_typed(&mut app, "pub");
    assert_eq!(
        app.upstream_rows().iter().map(|r| r.name).collect::<Vec<_>>(),
        ["author_publication_link", "publications"]
    );
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('q'));
    assert!(!app.should_quit, "q first clears the filter");
    assert_eq!(app.upstream_rows().len(), 4);
    key(&mut app, KeyCode::Char(':'));
    keys_typed(&mut app, "bogus");
    key(&mut app, KeyCode::Enter);
    assert!(app.flash.as_ref().is_some_and(|f| f.text.contains("unknown command")));
    key(&mut app, KeyCode::Char('s'));
    let by_lag: Vec<&str> = app.upstream_rows().iter().map(|r| r.name).collect();
    assert_eq!(by_lag, ["author_publication_link", "publications", "d_spmaster", "d_daisng_ranked_affiliation"]);
    key(&mut app, KeyCode::Char('q'));
    assert!(app.should_quit);
}

#[test]
fn cancel_asks_the_loop_to_abort_the_newest_task() {
    let mut app = app();
    key(&mut app, KeyCode::Char('4'));
    let preview = app.drain_requests().into_iter().find_map(|r| match r {
        Request::Spawn { id, job: Job::Preview { .. } } => Some(id),
        _ => None,
    });
    key(&mut app, KeyCode::Char('c'));
    let cancels: Vec<_> = app
        .drain_requests()
        .into_iter()
        .filter_map(|r| if let Request::Cancel(id) = r { Some(id) } else { None })
        .collect();
    assert_eq!(cancels, preview.into_iter().collect::<Vec<_>>());
}

// ---------------------------------------------------------------- themes

#[test]
fn themes_parse_and_follow_the_terminal() {
    for (name, _) in theme::BUILTIN {
        let t = theme::load(name, ColorDepth::TrueColor).expect("built-in theme");
        assert_eq!(t.name, name);
    }
    assert_eq!(ColorDepth::detect(Some("truecolor"), Some("xterm")), ColorDepth::TrueColor);
    assert_eq!(ColorDepth::detect(None, Some("xterm-256color")), ColorDepth::Ansi256);
    assert_eq!(ColorDepth::detect(None, Some("xterm")), ColorDepth::Ansi16);

    let sixteen = theme::load("dark", ColorDepth::Ansi16).expect("dark");
    for s in [sixteen.base, sixteen.header, sixteen.selected, sixteen.error] {
        for c in [s.fg, s.bg].into_iter().flatten() {
            assert!(!matches!(c, Color::Rgb(..) | Color::Indexed(_)), "{c:?} is not one of the 16 colours");
        }
    }
    let indexed = theme::load("dark", ColorDepth::Ansi256).expect("dark");
    assert!(matches!(indexed.header.bg, Some(Color::Indexed(_))));

    let no_color = ThemeEnv { no_color: true, ..Default::default() };
    assert_eq!(theme::select(None, &no_color).expect("mono").name, "mono");
    assert_eq!(theme::select(Some("light"), &no_color).expect("explicit").name, "light");
    let err = theme::select(Some("neon"), &ThemeEnv::default()).expect_err("unknown theme");
    assert!(format!("{err:#}").contains("dark, light, mono"), "{err:#}");
    assert!(theme::parse("[styles]\nbase = { fg = \"nope\" }", "x", ColorDepth::TrueColor).is_err());
}

#[test]
fn theme_file_by_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("custom.toml");
    std::fs::write(&path, "[styles]\nheader = { fg = \"black\", bg = \"yellow\", mods = [\"bold\"] }\n")
        .expect("write");
    let t = theme::load(path.to_str().expect("utf-8"), ColorDepth::TrueColor).expect("theme file");
    assert_eq!(t.name, "custom");
    assert_eq!(t.header.bg, Some(Color::Yellow));
}

/// Where the colours are, which text snapshots cannot show: every distinct cell style gets a
/// letter, the legend names it after the theme style it equals (over the base, or over a
/// popup's cleared cells) and the screen is drawn in those letters.
fn style_map(buf: &Buffer, theme: &Theme) -> String {
    type StyleKey = (Color, Color, Modifier);
    let resolve = |s: Style| -> StyleKey {
        (s.fg.unwrap_or(Color::Reset), s.bg.unwrap_or(Color::Reset), s.add_modifier - s.sub_modifier)
    };
    let layers = [("", theme.base), ("popup+", Style::reset().patch(theme.popup))];
    // Themes may give several styles the same look (mono does): name them all, `a=b`.
    let names = |k: &StyleKey| {
        layers
            .iter()
            .map(|(layer, under)| {
                let same = theme.styles().into_iter().filter(|(_, s)| resolve(under.patch(*s)) == *k);
                same.map(|(n, _)| format!("{layer}{n}")).collect::<Vec<_>>().join("=")
            })
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| "-".into())
    };
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut seen: Vec<StyleKey> = Vec::new();
    let mut grid = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            let c = &buf[(x, y)];
            let k = (c.fg, c.bg, c.modifier);
            let i = seen.iter().position(|s| *s == k).unwrap_or_else(|| {
                seen.push(k);
                seen.len() - 1
            });
            grid.push(letters.get(i).copied().unwrap_or('?'));
        }
        grid.push('\n');
    }
    let colour =
        |c: Color| theme::to_rgb(c).map_or("default".to_string(), |(r, g, b)| format!("#{r:02x}{g:02x}{b:02x}"));
    let mut legend = String::from("styles:\n");
    for (i, k) in seen.iter().enumerate() {
        let mods: Vec<String> = k.2.iter_names().map(|(n, _)| n.to_lowercase()).collect();
        let name = names(k);
        legend += &format!(
            "  {}  {} on {} {:<20} {name}\n",
            letters.get(i).copied().unwrap_or('?'),
            colour(k.0),
            colour(k.1),
            mods.join(",")
        );
    }
    legend + &grid
}

#[test]
fn snapshots_of_every_view_per_theme_and_size() {
    // The dark snapshot holds the text and its styles; the other themes hold only their
    // styles, after checking that a theme changes no character of the screen.
    for (w, h) in [(80, 24), (160, 48)] {
        for name in &SCREENS[..6] {
            let mut dark_text = None;
            for (theme_name, _) in theme::BUILTIN {
                let mut app = screen_app(name);
                app.theme = theme::load(theme_name, ColorDepth::TrueColor).expect("built-in theme");
                let buf = draw(&app, w, h);
                let text = text_of(&buf);
                let styles = style_map(&buf, &app.theme);
                let snap = format!("{name}_{theme_name}_{w}x{h}");
                match &dark_text {
                    None => {
                        insta::assert_snapshot!(snap, format!("{text}\n{styles}"));
                        dark_text = Some(text);
                    }
                    Some(dark) => {
                        assert_eq!(&text, dark, "{snap}: the theme changed the text");
                        insta::assert_snapshot!(snap, styles);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- SVG screenshots

/// One cell of an SVG screenshot: 14px monospace advances about 0.6em.
const CELL_W: f32 = 8.4;
const CELL_H: f32 = 17.0;

/// `#rrggbb` of a colour; `Reset` (the terminal's default) becomes `default`.
fn hex(c: Color, default: Color) -> String {
    let (r, g, b) = theme::to_rgb(c).or_else(|| theme::to_rgb(default)).unwrap_or((0, 0, 0));
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// A screen as SVG. Each run of equal-styled cells in a row becomes a background rect and a
/// text stretched to exactly the run's cells, so the grid holds whatever font the viewer has.
/// `base` stands in for the terminal's default colours (`Color::Reset`).
fn buffer_to_svg(buf: &Buffer, base: Style) -> String {
    let (dfg, dbg) = (base.fg.unwrap_or(Color::Gray), base.bg.unwrap_or(Color::Black));
    let (w, h) = (buf.area.width, buf.area.height);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{:.0}\" \
         font-family=\"'DejaVu Sans Mono', Menlo, Consolas, monospace\" font-size=\"14\" xml:space=\"preserve\">\n\
         <style>text {{ white-space: pre }}</style>\n<rect width=\"100%\" height=\"100%\" fill=\"{}\"/>\n",
        f32::from(w) * CELL_W,
        f32::from(h) * CELL_H,
        hex(dbg, dbg)
    );
    for y in 0..h {
        let mut x = 0;
        while x < w {
            let first = &buf[(x, y)];
            let (start, style) = (x, (first.fg, first.bg, first.modifier));
            let mut text = String::new();
            while x < w && (buf[(x, y)].fg, buf[(x, y)].bg, buf[(x, y)].modifier) == style {
                text.push_str(buf[(x, y)].symbol());
                x += 1;
            }
            let (mut fg, mut bg, m) = (hex(style.0, dfg), hex(style.1, dbg), style.2);
            if m.contains(Modifier::REVERSED) {
                std::mem::swap(&mut fg, &mut bg);
            }
            let (px, py, width) = (f32::from(start) * CELL_W, f32::from(y) * CELL_H, f32::from(x - start) * CELL_W);
            if bg != hex(dbg, dbg) {
                svg += &format!(
                    "<rect x=\"{px:.1}\" y=\"{py:.1}\" width=\"{width:.1}\" height=\"{CELL_H}\" fill=\"{bg}\"/>\n"
                );
            }
            if text.trim().is_empty() {
                continue;
            }
            let mut attrs = format!("fill=\"{fg}\"");
            for (flag, attr) in [
                (Modifier::BOLD, " font-weight=\"bold\""),
                (Modifier::ITALIC, " font-style=\"italic\""),
                (Modifier::DIM, " fill-opacity=\"0.6\""),
                (Modifier::UNDERLINED, " text-decoration=\"underline\""),
                (Modifier::CROSSED_OUT, " text-decoration=\"line-through\""),
            ] {
                if m.contains(flag) {
                    attrs += attr;
                }
            }
            let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            svg += &format!(
                "<text x=\"{px:.1}\" y=\"{:.1}\" textLength=\"{width:.1}\" lengthAdjust=\"spacingAndGlyphs\" {attrs}>{escaped}</text>\n",
                py + CELL_H * 0.78
            );
        }
    }
    svg + "</svg>\n"
}

/// Every view, the help overlay, the reset confirmation and the replay form as SVG in the dark theme, from the
/// snapshot fixtures; `DELTALINK_SAVE_SCREENSHOTS=1` refreshes screenshots/*.svg.
#[test]
fn screenshots_of_every_view_as_svg() {
    let dark = theme::load("dark", ColorDepth::TrueColor).expect("dark");
    for name in SCREENS {
        let mut app = screen_app(name);
        app.theme = dark.clone();
        let svg = buffer_to_svg(&draw(&app, 120, 32), dark.base);
        let title = match View::ALL.iter().find(|v| v.title().to_lowercase().starts_with(name)) {
            Some(v) => format!("{} {}", v.index() + 1, v.title()),
            None if name == "help" => "Keys: Pipelines".into(),
            None if name == "replay_form" => "Replay enriched_publications".into(),
            None if name == "consumers" => "2 Pipelines".into(),
            None => "Confirm".into(),
        };
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"), "{name}: not an SVG document");
        assert!(svg.contains(&title), "{name}: no `{title}` in the SVG");
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count(), "{name}: unbalanced text");
        assert!(svg.contains("fill=\"#1e2030\""), "{name}: the dark theme's background is missing");
        save_screenshot(&format!("{name}.svg"), &svg);
    }
}

// ---------------------------------------------------------------- end to end, in tmux

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: String,
    config: PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let conf = self.config.to_str().expect("utf-8");
        Process::new("tmux").args(["-L", &self.socket, "-f", conf]).args(args).output().expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "console"]).stdout).into_owned()
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "console"];
        args.extend(keys);
        assert!(self.cmd(&args).status.success(), "send-keys {keys:?}");
    }

    /// Poll the pane until `ready` holds (the 100 ms sleep paces the polling; it is not the sync).
    fn wait_for(&self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; the screen shows:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
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

#[test]
fn console_end_to_end_in_tmux() {
    if !on_path("tmux") {
        println!("SKIPPED: tmux not installed (.ci/run installs it)");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_deltalink");
    let tmp = tempfile::tempdir().expect("tempdir");
    let lake = tmp.path().join("demo-lake");
    let built = Process::new(bin)
        .arg("demo")
        .arg(&lake)
        .args(["--no-console", "--commits", "20"])
        .output()
        .expect("run deltalink demo");
    assert!(built.status.success(), "demo lake: {}", String::from_utf8_lossy(&built.stderr));

    let config = tmp.path().join("tmux.conf");
    std::fs::write(&config, "set -g remain-on-exit on\nset -g status off\n").expect("tmux config");
    let tmux = Tmux { socket: format!("deltalink-e2e-{}", std::process::id()), config };
    let log = tmp.path().join("console.log");
    // Relative --config from inside the lake: the header shows no temp path.
    // The shell records the exit status: tmux's own #{pane_dead_status} is not always filled in.
    let exit_file = tmp.path().join("exit-status");
    let command =
        format!("'{bin}' --config deltalink.toml --log-file '{}'; echo $? > '{}'", log.display(), exit_file.display());
    let lake_dir = lake.to_str().expect("utf-8");
    let started = tmux.cmd(&["new-session", "-d", "-s", "console", "-x", "120", "-y", "35", "-c", lake_dir, &command]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));

    let minute = Duration::from_secs(60);
    let screen = tmux.wait_for("the Upstreams view with status", minute, |s| {
        s.contains("d_daisng_ranked_affiliation") && s.contains("refreshed") && s.contains("enriched_publications")
    });
    save_screenshot("upstreams.txt", &screen);

    tmux.send(&["2"]);
    tmux.wait_for("the Pipelines view", minute, |s| s.contains("Last run") && s.contains("never run"));
    tmux.send(&["j"]);
    tmux.send(&["-l", "?"]);
    let screen = tmux.wait_for("the help overlay", minute, |s| s.contains("Keys: Pipelines"));
    save_screenshot("help.txt", &screen);
    tmux.send(&["Escape"]);
    let screen = tmux.wait_for("help to close", minute, |s| !s.contains("Keys: Pipelines"));
    save_screenshot("pipelines.txt", &screen);

    tmux.send(&["4"]);
    let screen = tmux.wait_for("the preview", Duration::from_secs(120), |s| s.contains("distinct keys"));
    save_screenshot("preview.txt", &screen);

    tmux.send(&["r"]);
    tmux.wait_for("the run confirmation", minute, |s| s.contains("Run pipeline enriched_publications now?"));
    tmux.send(&["y"]);
    tmux.send(&["6"]);
    let screen = tmux.wait_for("the run in Activity", Duration::from_secs(180), |s| {
        s.contains("run enriched_publications: run #1 written") || s.contains("run enriched_publications failed")
    });
    assert!(screen.contains("run enriched_publications: run #1 written"), "{screen}");

    tmux.send(&["3"]);
    let screen = tmux.wait_for("link rows", minute, |s| s.contains("rows 1–"));
    save_screenshot("link.txt", &screen);
    tmux.send(&["5"]);
    let screen =
        tmux.wait_for("the tracker", minute, |s| s.contains("Audit trail") && s.contains("enriched_publications"));
    save_screenshot("tracker.txt", &screen);
    reset_from_the_keyboard(&tmux, &lake);
    replay_from_the_keyboard(&tmux, &lake);

    tmux.send(&["6"]);
    let screen = tmux.wait_for("Activity", minute, |s| s.contains("Activity ·"));
    save_screenshot("activity.txt", &screen);

    tmux.send(&["q"]);
    let exit = || std::fs::read_to_string(&exit_file).unwrap_or_default().trim().to_string();
    tmux.wait_for("the console to exit", minute, |_| !exit().is_empty());
    assert_eq!(exit(), "0", "exit status; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// The Processed column of a tracker row as the screen shows it.
fn shown_version(screen: &str, pipeline: &str, upstream: &str) -> Option<i64> {
    screen.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.windows(2).position(|w| w == [pipeline, upstream])?;
        words.get(at + 2)?.parse().ok()
    })
}

/// The tracker row on disk, read with the library as any other process would.
fn tracker_on_disk(lake: &Path, pipeline: &str, upstream: &str) -> TrackerRow {
    let config = Config::load(lake.join("deltalink.toml")).expect("the demo lake's config");
    let rows = crate::common::rt().block_on(async {
        let tracker = deltalink::Engine::new(config).tracker().await.expect("open the tracker");
        tracker.rows(Some(pipeline)).await.expect("tracker rows")
    });
    rows.into_iter().find(|r| r.upstream == upstream).expect("the tracker row on disk")
}

/// In the Tracker view after the run: reset enriched_publications/publications back by two
/// commits through the form (dry run, reason, confirmation), then check that the screen, the
/// tracker on disk and the audit trail all show it.
/// From the Tracker view (publications of enriched_publications selected): replay versions 0
/// to latest of publications into a scratch table, confirm, and find the replay in the audit
/// trail on screen and the scratch table on disk.
fn replay_from_the_keyboard(tmux: &Tmux, lake: &Path) {
    let (minute, reason) = (Duration::from_secs(60), "e2e replay check");
    tmux.send(&["P"]);
    tmux.wait_for("the replay form", minute, |s| s.contains("Replay enriched_publications") && s.contains("‹ publications ›"));
    tmux.send(&["-l", "0"]);
    tmux.send(&["Tab", "Tab"]); // from → to → into
    tmux.send(&["-l", "replay-check"]);
    tmux.send(&["Tab"]);
    tmux.send(&["-l", reason]);
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the replay dry run", minute, |s| s.contains("Enter again to confirm") || s.contains("error"));
    assert!(screen.contains("Dry run:") && screen.contains("keys, into") && screen.contains("replay-check"), "{screen}");
    assert!(!lake.join("replay-check").exists(), "a dry run writes nothing");
    tmux.send(&["Enter"]);
    tmux.wait_for("the replay confirmation", minute, |s| s.contains("Replay enriched_publications into"));
    tmux.send(&["y"]);
    let screen = tmux.wait_for("the replay in the audit trail", minute, |s| {
        s.lines().any(|l| l.contains(" replay ") && l.contains("enriched_publications") && l.contains(reason))
    });
    save_screenshot("tracker_after_replay.txt", &screen);
    assert!(lake.join("replay-check/_delta_log").exists(), "the scratch link table was written");
}

fn reset_from_the_keyboard(tmux: &Tmux, lake: &Path) {
    let (pipeline, upstream, reason) = ("enriched_publications", "publications", "e2e shift back");
    let minute = Duration::from_secs(60);
    let before = tracker_on_disk(lake, pipeline, upstream).last_processed_version.expect("processed after the run");
    assert!(before >= 2, "the run processed too little to shift back by 2: v{before}");

    tmux.send(&["j"]); // rows are sorted: author_publication_link, then publications
    tmux.send(&["e"]);
    tmux.wait_for("the reset form", minute, |s| s.contains("Reset the tracker of enriched_publications"));
    tmux.wait_for("the form scoped to publications", minute, |s| s.contains("‹ publications ›"));
    tmux.send(&["Right", "Right", "Right"]); // target: version → earliest → latest → shift by
    tmux.wait_for("the shift target", minute, |s| s.contains("‹ shift by ›"));
    tmux.send(&["Tab"]);
    tmux.send(&["-l", "--", "-2"]); // `--`: the value starts with a dash
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the dry run", minute, |s| s.contains("Enter again to confirm") || s.contains("error"));
    assert!(screen.contains("Dry run:") && screen.contains("re-read 2"), "{screen}");
    save_screenshot("reset_form.txt", &screen);
    tmux.send(&["Tab"]);
    tmux.send(&["-l", reason]);
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the reset confirmation", minute, |s| s.contains(&format!("reason: {reason}")));
    // Large resets ask for the pipeline name, small ones for y.
    if screen.contains(&format!("type `{pipeline}`")) {
        tmux.send(&["-l", pipeline]);
        tmux.send(&["Enter"]);
    } else {
        tmux.send(&["y"]);
    }
    let after = before - 2;
    // The audit trail's row of the reset: action, pipeline and the reason typed above.
    let audited = |s: &str| s.lines().any(|l| l.contains(" reset ") && l.contains(pipeline) && l.contains(reason));
    let screen = tmux.wait_for("the reset row and its audit entry", minute, |s| {
        shown_version(s, pipeline, upstream) == Some(after) && audited(s)
    });
    save_screenshot("tracker_after_reset.txt", &screen);

    let row = tracker_on_disk(lake, pipeline, upstream);
    assert_eq!(row.last_processed_version, Some(after), "tracker on disk: {row:?}");
    let other = tracker_on_disk(lake, pipeline, "author_publication_link");
    assert_eq!(shown_version(&screen, pipeline, "author_publication_link"), other.last_processed_version, "{screen}");
}

/// A pipeline not run from this console shows the link table's last write (by watch, a cron
/// job, another operator) in its Last run cell: kind, run, age against the clock, keys.
#[test]
fn last_run_cell_shows_a_write_made_by_another_process() {
    let mut app = app();
    key(&mut app, KeyCode::Char('2'));
    let screen = render(&app, 160, 30);
    assert!(screen.contains("#7 6m12s ago, 1,516 keys"), "{screen}");
    assert!(screen.contains("never run"), "author_profiles has no write: {screen}");
}

/// A run's line in Activity says how much of each joined table it read (narrowing at work).
#[test]
fn a_runs_line_names_what_it_read_of_each_joined_table() {
    let mut r = report("j", 4, 12);
    r.joined.push(deltalink::engine::JoinedRead {
        source: "a".into(),
        upstream: "aff_large".into(),
        pruned_on: vec!["sp_id".into()],
        files_read: 20,
        files_total: 200,
        rows_read: 1_200,
    });
    let line = deltalink::describe::run_summary(&r);
    assert!(line.starts_with("run #4 written: 36 change rows → 12 keys") && line.ends_with("; joined aff_large: 20 of 200 files"), "{line}");
}
