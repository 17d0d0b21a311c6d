//! The console without a terminal: App state driven by actions (key presses go through the
//! real bindings table), rendered on ratatui's TestBackend and compared with insta snapshots;
//! the bindings table's guarantees; themes; and one end-to-end session in tmux.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Local, TimeZone};
use deltalink::config::Config;
use deltalink::console::action::{Action, Command, View};
use deltalink::console::app::{App, Clock, Popup};
use deltalink::console::keys::{self, Context};
use deltalink::console::tasks::{Finished, Job, Request, TaskEvent, TrackerData};
use deltalink::console::theme::{self, ColorDepth, ThemeEnv};
use deltalink::console::ui;
use deltalink::keymap::PreviewRow;
use deltalink::link::LinkPage;
use deltalink::reset::{ResetChange, ResetPlan, ResetTarget};
use deltalink::runner::{Outcome, Preview, ReadRangeView, RunReport, UpstreamRead};
use deltalink::status::{PipelineStatus, PipelineUpstreamStatus, Status, UpstreamStatus};
use deltalink::tracker::{HistoryEntry, TrackerRow};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;
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
        pending_run_id: None,
    }
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
        upstreams: ups,
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
    let mut broken = upstream("d_daisng_ranked_affiliation", 0, "2025-03-01T11:00:00Z", "WRITE");
    broken.latest_version = None;
    broken.error = Some(
        "upstream `d_daisng_ranked_affiliation` at /lake/d_daisng_ranked_affiliation does not exist (no Delta table there)\n  fix: check the uri"
            .into(),
    );
    Status {
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
            pipeline(
                "enriched_publications",
                &["pub_id"],
                Some(4_210),
                Some(7),
                vec![
                    progress("publications", Some(230), Some(240), Some(312.0)),
                    progress("author_publication_link", Some(180), Some(180), Some(0.0)),
                ],
            ),
            pipeline(
                "researcher_affiliations",
                &["sp_id", "institution_key"],
                None,
                None,
                vec![progress("d_daisng_ranked_affiliation", None, None, None)],
            ),
            spmaster,
        ],
    }
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
        cdf_scans: 2,
        duration: Duration::from_millis(1_234),
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

fn render(app: &App, width: u16, height: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    term.draw(|f| ui::draw(f, app)).expect("draw");
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..height {
        let line: String = (0..width).map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol())).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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
            row("1017", "7", "2025-03-01T12:25:00Z", "[publications@233:update_postimage]"),
            row("1204", "7", "2025-03-01T12:20:00Z", "[publications@236:insert]"),
            row("877", "6", "2025-03-01T11:55:00Z", "[publications@212:delete]"),
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

// ---------------------------------------------------------------- snapshots of every view

#[test]
fn snapshot_upstreams_view() {
    insta::assert_snapshot!("upstreams_100x30", render(&app(), 100, 30));
}

#[test]
fn snapshot_pipelines_view_with_detail_pane() {
    let mut app = app();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('j'));
    app.update(Action::Task(TaskEvent::Finished {
        id: deltalink::console::tasks::TaskId(900),
        result: Finished::Run {
            pipeline: "enriched_publications".into(),
            result: Ok(report("enriched_publications", 7, 42)),
        },
    }));
    key(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("pipelines_100x30", render(&app, 100, 30));
}

#[test]
fn snapshot_link_view() {
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
    insta::assert_snapshot!("link_100x30", render(&app, 100, 30));
}

#[test]
fn snapshot_preview_view_spinner_then_result() {
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
    insta::assert_snapshot!("preview_100x30", render(&app, 100, 30));
}

#[test]
fn snapshot_tracker_view() {
    insta::assert_snapshot!("tracker_100x30", render(&tracker_app(), 100, 30));
}

#[test]
fn snapshot_activity_view() {
    let mut app = app();
    let id = deltalink::console::tasks::TaskId(900);
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
    insta::assert_snapshot!("activity_100x30", render(&app, 100, 30));
}

#[test]
fn snapshot_help_overlay() {
    let mut app = app();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('?'));
    assert_eq!(app.context(), Context::Help);
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
    insta::assert_snapshot!("reset_confirm_100x30", render(&app, 100, 30));

    key(&mut app, KeyCode::Enter); // wrong name: refused
    assert!(app.drain_requests().iter().all(|r| !is_write_spawn(r)));
    assert_eq!(app.context(), Context::TypedConfirm);
    keys_typed(&mut app, "_publications");
    key(&mut app, KeyCode::Enter);
    let requests = app.drain_requests();
    assert!(
        requests.iter().any(|r| matches!(r, Request::Spawn { job: Job::Write(deltalink::console::action::WriteOp::Reset { reason, .. }), .. } if reason == "re-read after the title fix")),
        "{requests:?}"
    );
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
    let screen = render(&app, 120, 40);
    for b in keys::bindings(Context::ResetForm) {
        if let Some(label) = b.bar {
            let hint = format!("{} {label}", keys::keys_label(b));
            assert!(screen.contains(&hint), "reset form lacks `{hint}`:\n{screen}");
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
            let requests = app.drain_requests();
            assert!(requests.iter().all(|r| !is_write_spawn(r)), "{view:?} {:?} wrote without asking", b.command);
            assert!(
                matches!(app.popup, Some(Popup::Confirm(_) | Popup::ResetForm(_))),
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
    for (view, k) in [(View::Pipelines, 'r'), (View::Pipelines, 'R'), (View::Upstreams, 'R')] {
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

/// Screens of the tmux run go to the target dir; `DELTALINK_SAVE_SCREENSHOTS=1` refreshes the
/// committed ones in screenshots/ (so a plain test run leaves the checkout clean).
fn save_screenshot(name: &str, screen: &str) {
    let dir = if std::env::var("DELTALINK_SAVE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    std::fs::write(dir.join(format!("{name}.txt")), screen).expect("write screenshot");
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
    save_screenshot("upstreams", &screen);

    tmux.send(&["2"]);
    tmux.wait_for("the Pipelines view", minute, |s| s.contains("Last run") && s.contains("never run"));
    tmux.send(&["j"]);
    tmux.send(&["-l", "?"]);
    let screen = tmux.wait_for("the help overlay", minute, |s| s.contains("Keys: Pipelines"));
    save_screenshot("help", &screen);
    tmux.send(&["Escape"]);
    let screen = tmux.wait_for("help to close", minute, |s| !s.contains("Keys: Pipelines"));
    save_screenshot("pipelines", &screen);

    tmux.send(&["4"]);
    let screen = tmux.wait_for("the preview", Duration::from_secs(120), |s| s.contains("distinct keys"));
    save_screenshot("preview", &screen);

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
    save_screenshot("link", &screen);
    tmux.send(&["5"]);
    let screen =
        tmux.wait_for("the tracker", minute, |s| s.contains("Audit trail") && s.contains("enriched_publications"));
    save_screenshot("tracker", &screen);
    tmux.send(&["6"]);
    let screen = tmux.wait_for("Activity", minute, |s| s.contains("Activity ·"));
    save_screenshot("activity", &screen);

    tmux.send(&["q"]);
    let exit = || std::fs::read_to_string(&exit_file).unwrap_or_default().trim().to_string();
    tmux.wait_for("the console to exit", minute, |_| !exit().is_empty());
    assert_eq!(exit(), "0", "exit status; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}
