//! Snapshots of every view and popup (TestBackend, insta).

use super::*;

#[test]
fn snapshot_upstreams_view() {
    snapshot("upstreams_100x30", render(&app(), 100, 30));
}

#[test]
fn snapshot_pipelines_view_with_detail_pane() {
    snapshot("pipelines_100x30", render(&pipelines_app(), 100, 30));
}

#[test]
fn snapshot_link_view() {
    snapshot("link_100x30", render(&link_app(), 100, 30));
}

#[test]
fn snapshot_preview_view_spinner_then_result() {
    snapshot("preview_100x30", render(&preview_app(), 100, 30));
}

#[test]
fn snapshot_tracker_view() {
    snapshot("tracker_100x30", render(&tracker_app(), 100, 30));
}

#[test]
fn snapshot_activity_view() {
    snapshot("activity_100x30", render(&activity_app(), 100, 30));
}

#[test]
fn snapshot_help_overlay() {
    let mut app = help_app();
    snapshot("help_pipelines_100x30", render(&app, 100, 30));
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
    snapshot("read_only_flash_100x30", screen);
}

#[test]
fn snapshot_reset_confirmation_popup() {
    let mut app = reset_confirm_app();
    snapshot("reset_confirm_100x30", render(&app, 100, 30));

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
    snapshot("replay_form_100x30", render(&replay_form_app(), 100, 30));
}

#[test]
fn snapshot_pipelines_with_consumers_in_the_table_and_the_detail_pane() {
    let screen = render(&consumers_app(), 120, 34);
    assert!(screen.contains("daily_report 1,516 · 1d12h"), "the table shows what waits for the lagging consumer:\n{screen}");
    assert!(screen.contains("search_index ✓"), "{screen}");
    snapshot("pipelines_consumers_120x34", screen);
}

#[test]
fn snapshot_small_terminal_80x24() {
    let mut app = app();
    snapshot("upstreams_80x24", render(&app, 80, 24));
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Enter);
    snapshot("pipelines_detail_80x24", render(&app, 80, 24));
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
