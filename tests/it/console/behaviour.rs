//! The console as keys drive it: the bindings table's guarantees, confirmations before every
//! write, read-only refusals, palettes, cancel.

use super::*;

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
    snapshot("maintain_confirm_100x30", render(&app, 100, 30));
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
