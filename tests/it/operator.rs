//! Operator actions: resets (dry run and audited execute), replay, leases, read-only, crashes.

use std::collections::BTreeMap;
use std::process::Command;

use deltalink::ops::reset::{execute_reset, plan_reset, ResetTarget};
use deltalink::engine::{Outcome, Replay, RunOptions};

use crate::common::*;

/// A lake with upstream `a` (versions 0..=6, one insert per version) already run by `p`.
async fn lake_with_history() -> (Lake, ModelTable, deltalink::Engine, Vec<Affected>) {
    let lake = Lake::new();
    let mut a = ModelTable::create(&lake.path("a"), true).await;
    let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
    let mut per_version = vec![Affected::new()];
    for k in 1..=6 {
        per_version.push(a.insert(&[Some(k * 10), Some(k * 10 + 1)]).await);
    }
    engine.run("p", &RunOptions::default()).await.expect("initial run");
    (lake, a, engine, per_version)
}

async fn tracker_version(engine: &deltalink::Engine) -> Option<u64> {
    engine.tracker().await.expect("tracker").table().and_then(|t| t.version())
}

#[test]
fn reset_targets_dry_run_and_audited_execute() {
    rt().block_on(async {
        let (_lake, a, engine, _) = lake_with_history().await;
        let latest = a.version() as i64;
        let before = tracker_version(&engine).await;

        let plan = plan_reset(&engine, "p", &[], ResetTarget::Version(2)).await.expect("plan");
        let c = &plan.changes[0];
        assert_eq!((c.current, c.new), (Some(latest), Some(2)));
        assert_eq!(c.commits_delta, latest - 2);
        assert_eq!(c.change_rows, 2 * (latest as u64 - 2), "two inserted rows per re-read version");
        assert_eq!(tracker_version(&engine).await, before, "a dry run writes nothing");

        let check = |t: ResetTarget, want: Option<i64>| {
            let engine = engine.clone();
            async move {
                let p = plan_reset(&engine, "p", &["a".into()], t.clone()).await.expect("plan");
                assert_eq!(p.changes[0].new, want, "{t:?}");
            }
        };
        check(ResetTarget::Earliest, Some(-1)).await;
        check(ResetTarget::Latest, Some(latest)).await;
        check(ResetTarget::ShiftBy(-3), Some(latest - 3)).await;
        let ts = deltalink::store::lake::read_commit(&a.table, 3).await.expect("read").expect("commit").timestamp_ms.expect("ts");
        let at = chrono::DateTime::from_timestamp_millis(ts).expect("ts");
        let p = plan_reset(&engine, "p", &[], ResetTarget::DateTime(at)).await.expect("plan datetime");
        assert!(p.changes[0].new >= Some(3), "last version at or before v3's time: {:?}", p.changes[0].new);

        let e = format!("{:#}", plan_reset(&engine, "p", &[], ResetTarget::Version(latest + 5)).await.expect_err("out of range"));
        assert!(e.contains(&format!("valid versions are -1..={latest}")), "{e}");
        let old = chrono::DateTime::from_timestamp_millis(ts - 86_400_000).expect("ts");
        let e = format!("{:#}", plan_reset(&engine, "p", &[], ResetTarget::DateTime(old)).await.expect_err("too early"));
        assert!(e.contains("no readable commit at or before"), "{e}");
        let e = format!("{:#}", plan_reset(&engine, "p", &["zz".into()], ResetTarget::Latest).await.expect_err("bad upstream"));
        assert!(e.contains("does not read upstream `zz`"), "{e}");

        execute_reset(&engine, &plan, "downstream bug #42").await.expect("execute");
        let rows = engine.tracker().await.expect("t").rows(Some("p")).await.expect("rows");
        assert_eq!(rows[0].last_processed_version, Some(2));
        let hist = engine.tracker().await.expect("t").history(1).await.expect("history");
        assert_eq!(hist[0].action.as_deref(), Some("reset"));
        assert_eq!(hist[0].reason.as_deref(), Some("downstream bug #42"));
        // The operator is `$USER` (the CLI test runs the binary with a chosen one).
        assert_eq!(hist[0].operator.as_deref(), Some(deltalink::util::who::operator().as_str()));
        assert_eq!(hist[0].details["changes"][0]["from"], serde_json::json!(latest));
        assert_eq!(hist[0].details["changes"][0]["to"], serde_json::json!(2));

        // The next run re-reads versions 3..=latest: their keys get the new run_id.
        let r = engine.run("p", &RunOptions::default()).await.expect("re-read");
        assert_eq!(r.distinct_keys, 2 * (latest as u64 - 2));
        let link = link_keys(&engine, "p").await;
        assert_eq!(link[&30], 2);
        assert_eq!(link[&20], 1);
    });
}

/// A process's tracker upserts start from the state it last committed, without reloading the
/// log; a commit by another writer in between (delta-rs's UPDATE here, as another process
/// would make) must not be overwritten: the upsert conflicts, reloads, and keeps both.
#[test]
fn an_upsert_from_a_stale_state_keeps_another_writers_tracker_commit() {
    rt().block_on(async {
        let (_lake, _a, engine, _) = lake_with_history().await;
        let mut tracker = engine.tracker().await.expect("tracker");
        let table = tracker.table().cloned().expect("tracker table");
        let before = table.version().expect("version");
        let (edited, _) = table
            .update()
            .with_predicate("pipeline_name = 'p'")
            .with_update("note", "'set by another writer'")
            .await
            .expect("another writer's UPDATE");
        assert_eq!(edited.version(), Some(before + 1));

        // `tracker` (and this process's last commit) are still at `before`.
        let mut row = deltalink::store::tracker::TrackerRow::new("q", "a");
        row.last_processed_version = Some(3);
        let write = deltalink::store::tracker::RowWrite::new(row, None);
        tracker.upsert(&[write], &deltalink::store::tracker::Audit::new("test", "q")).await.expect("upsert");

        let fresh = engine.tracker().await.expect("tracker");
        assert_eq!(fresh.table().and_then(|t| t.version()), Some(before + 2), "one retry after the conflict");
        let rows = fresh.rows(None).await.expect("rows");
        assert_eq!(rows.len(), 2, "one row per pipeline and upstream: {rows:?}");
        let p = rows.iter().find(|r| r.pipeline_name == "p").expect("p's row");
        assert_eq!(p.note.as_deref(), Some("set by another writer"), "the other writer's commit was kept");
        assert_eq!(p.last_processed_version, Some(6));
        let q = rows.iter().find(|r| r.pipeline_name == "q").expect("q's row");
        assert_eq!(q.last_processed_version, Some(3));
    });
}

/// Upserts waiting for the tracker's turn are committed together by whoever holds it (a group
/// commit). However they were grouped, eight concurrent upserts from eight trackers all land,
/// each row once, in at most eight commits, and the history shows every upsert's audit once,
/// at the version that committed it.
#[test]
fn concurrent_upserts_all_land_and_every_audit_stays_in_the_history() {
    use deltalink::store::tracker::{Audit, TrackerRow};
    rt().block_on(async {
        let (_lake, _a, engine, _) = lake_with_history().await;
        let before = tracker_version(&engine).await.expect("tracker version");
        let upserts = (0..8i64).map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut tracker = engine.tracker().await.expect("tracker");
                let mut row = TrackerRow::new(&format!("g{i}"), "a");
                row.last_processed_version = Some(i);
                let write = deltalink::store::tracker::RowWrite::new(row, None);
                tracker.upsert(&[write], &Audit::new("test-group", &format!("g{i}"))).await.expect("upsert");
            })
        });
        for upsert in futures::future::join_all(upserts).await {
            upsert.expect("upsert task");
        }
        let tracker = engine.tracker().await.expect("tracker");
        let after = tracker_version(&engine).await.expect("tracker version");
        assert!(after > before && after - before <= 8, "8 upserts in {} commits", after - before);
        eprintln!("8 concurrent upserts took {} commits", after - before);
        let rows = tracker.rows(None).await.expect("rows");
        for i in 0..8i64 {
            let mine: Vec<_> = rows.iter().filter(|r| r.pipeline_name == format!("g{i}")).collect();
            assert_eq!(mine.len(), 1, "g{i}: {rows:?}");
            assert_eq!(mine[0].last_processed_version, Some(i));
        }
        let history = tracker.history(100).await.expect("history");
        let mut audited: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for h in history.iter().filter(|h| h.action.as_deref() == Some("test-group")) {
            audited.entry(h.pipeline.clone().unwrap_or_default()).or_default().push(h.version);
        }
        assert_eq!(audited.len(), 8, "{history:?}");
        for (pipeline, versions) in &audited {
            assert_eq!(versions.len(), 1, "{pipeline} audited once: {versions:?}");
            assert!(versions[0] > before && versions[0] <= after, "{pipeline} at v{}", versions[0]);
        }
    });
}

/// A dry run shows "current → new"; when a run moves the tracker before the operator
/// executes it, executing the stale plan is refused instead of resetting from elsewhere.
#[test]
fn a_stale_dry_run_is_refused_once_the_tracker_moved() {
    rt().block_on(async {
        let (_lake, mut a, engine, _) = lake_with_history().await;
        let plan = plan_reset(&engine, "p", &[], ResetTarget::ShiftBy(-2)).await.expect("plan");
        a.insert(&[Some(99)]).await;
        engine.run("p", &RunOptions::default()).await.expect("a run lands meanwhile");
        let moved = processed_versions(&engine, "p").await;
        let e = format!("{:#}", execute_reset(&engine, &plan, "stale").await.expect_err("stale plan"));
        assert!(e.contains("moved since the dry run") && e.contains("it showed 6, it is now 7"), "{e}");
        assert_eq!(processed_versions(&engine, "p").await, moved, "nothing was reset");
        let fresh = plan_reset(&engine, "p", &[], ResetTarget::ShiftBy(-2)).await.expect("plan again");
        execute_reset(&engine, &fresh, "fresh").await.expect("a fresh dry run executes");
        assert_eq!(processed_versions(&engine, "p").await, vec![Some(5)]);
    });
}

#[test]
fn resets_and_runs_are_refused_while_leased_and_in_read_only_mode() {
    rt().block_on(async {
        let (_lake, _a, engine, _) = lake_with_history().await;
        let plan = plan_reset(&engine, "p", &[], ResetTarget::Version(1)).await.expect("plan");
        let lease = deltalink::store::lease::acquire(&engine.config, "p", "test holder").await.expect("lease");
        let before = tracker_version(&engine).await;
        let e = format!("{:#}", execute_reset(&engine, &plan, "x").await.expect_err("leased"));
        assert!(e.contains("is busy: leased by") && e.contains("test holder"), "{e}");
        let e = format!("{:#}", engine.run("p", &RunOptions::default()).await.expect_err("leased"));
        assert!(e.contains("is busy"), "{e}");
        assert_eq!(tracker_version(&engine).await, before);
        lease.release().await;

        let ro = engine.clone().with_read_only(true);
        let e = format!("{:#}", execute_reset(&ro, &plan, "x").await.expect_err("read-only"));
        assert!(e.contains("--read-only"), "{e}");
        let e = format!("{:#}", ro.run("p", &RunOptions::default()).await.expect_err("read-only"));
        assert!(e.contains("--read-only"), "{e}");
        execute_reset(&engine, &plan, "after release").await.expect("works once released");
    });
}

#[test]
fn an_expired_lease_is_taken_over_by_exactly_one_of_many_contenders() {
    rt().block_on(async {
        let (lake, _a, engine, _) = lake_with_history().await;
        for round in 0..5u64 {
            // A holder on another host that stopped heartbeating long ago, at a generation past
            // the last round's (released) one; several rounds, as the interleavings differ.
            // Its TTL is short: contenders watch it that long on their own clock first.
            let dead_generation = 3 + 2 * round;
            let dead = deltalink::store::lease::LeaseHolder {
                operator: "gone".into(),
                host: "another-host".into(),
                pid: 1,
                purpose: "run".into(),
                since_ms: 0,
                heartbeat_ms: 0,
                token: "dead".into(),
                ttl_ms: 300,
                released: false,
            };
            let object = lake.path("_deltalink/tracker").join(deltalink::store::lease::object_path("p", dead_generation).as_ref());
            std::fs::create_dir_all(object.parent().expect("parent")).expect("lease dir");
            std::fs::write(&object, serde_json::to_vec(&dead).expect("json")).expect("expired lease");

            let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
            let contenders: Vec<_> = (0..8)
                .map(|i| {
                    let (engine, start) = (engine.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        deltalink::store::lease::acquire(&engine.config, "p", &format!("contender {i}")).await
                    })
                })
                .collect();
            let mut won = Vec::new();
            for c in contenders {
                match c.await.expect("contender task") {
                    Ok(lease) => won.push(lease),
                    Err(e) => {
                        let e = format!("{e:#}");
                        assert!(e.contains("is busy: leased by") || e.contains("at the same moment"), "{e}");
                    }
                }
            }
            assert_eq!(won.len(), 1, "round {round}: exactly one contender takes an expired lease over");
            let holder = deltalink::store::lease::current(&engine.config, "p").await.expect("read lease").expect("held");
            assert!(holder.purpose.starts_with("contender") && !holder.expired(), "{holder:?}");
            assert!(!object.exists(), "the winner deletes the generation it took over");
            for lease in won {
                lease.release().await;
            }
            let left = walk_files(&lake.path("_deltalink/tracker/_leases"));
            assert_eq!(left.len(), 1, "a released lease leaves its generation, marked released: {left:?}");
            let released = deltalink::store::lease::current(&engine.config, "p").await.expect("read lease").expect("marker");
            assert!(released.released && released.expired(), "{released:?}");
            assert_eq!(deltalink::store::lease::current_generation(&engine.config, "p").await.expect("generation"), Some(dead_generation + 1));
        }
        engine.run("p", &RunOptions::default()).await.expect("the pipeline runs once the lease is released");
    });
}

#[test]
fn reset_allowed_false_refuses_resets_and_replays() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await;
        let cfg = simple_config(&["a"], &[("p", &["a"])]).replace("key = [\"k\"]\n", "key = [\"k\"]\nreset_allowed = false\n");
        let engine = lake.engine(&cfg);
        let e = format!("{:#}", plan_reset(&engine, "p", &[], ResetTarget::Latest).await.expect_err("refused"));
        assert!(e.contains("reset_allowed = false"), "{e}");
        let replay = Replay { pipeline: "p".into(), from_version: 0, to_version: None, upstreams: vec![], into: None, execute: true, reason: None };
        let e = format!("{:#}", engine.replay(&replay).await.expect_err("refused"));
        assert!(e.contains("reset_allowed = false"), "{e}");
    });
}

#[test]
fn replay_into_a_scratch_table_matches_the_oracle_for_that_range() {
    rt().block_on(async {
        let (lake, a, engine, per_version) = lake_with_history().await;
        let scratch = url_of(&lake.path("scratch"));
        let mut replay = Replay {
            pipeline: "p".into(),
            from_version: 2,
            to_version: Some(4),
            upstreams: vec![],
            into: Some(scratch.clone()),
            execute: false,
            reason: Some("downstream bug #7".into()),
        };
        let dry = engine.replay(&replay).await.expect("dry run");
        assert!(!dry.written);
        assert!(!lake.path("scratch").exists(), "dry run wrote nothing");
        replay.execute = true;
        let r = engine.replay(&replay).await.expect("replay");
        let expected: Affected = per_version[2..=4].iter().flatten().copied().collect();
        assert_eq!(r.distinct_keys as usize, expected.len());
        let t = deltalink::store::lake::open_owned(&scratch, &Default::default()).await.expect("open").expect("scratch exists");
        let keys: Affected = deltalink::store::link::all_keys(&t, &["k".to_string()])
            .await
            .expect("keys")
            .into_iter()
            .map(|(k, _)| k[0].parse().expect("int"))
            .collect();
        assert_eq!(keys, expected);
        // Production link table and tracker untouched by a scratch replay.
        assert!(link_keys(&engine, "p").await.values().all(|r| *r == 1));

        // Replay into production: a new run_id, and the next real run continues after it.
        replay.into = None;
        let r = engine.replay(&replay).await.expect("replay into link table");
        assert_eq!(r.run_id, Some(2));
        let link = link_keys(&engine, "p").await;
        assert_eq!(link[&20], 2);
        assert_eq!(link[&10], 1);
        // The replayed keys' provenance says so; the others keep their run's.
        let (rows, _) = link_rows_and_feed(&engine, "p").await;
        let row = |k: &str| rows.iter().find(|r| r.starts_with(&format!("{k} |"))).cloned().expect("row");
        // Provenance: upstream, version, change type and the commit's time.
        assert!(row("20").contains("[replay:a@2:insert@") && ends_with_time(&row("20")), "{}", row("20"));
        assert!(row("10").contains("[a@1:insert@") && ends_with_time(&row("10")), "{}", row("10"));
        let v1 = deltalink::store::lake::read_commit(&a.table, 1).await.expect("commit").and_then(|c| c.timestamp_ms).expect("time");
        let stamp = deltalink::util::time::format_ms(v1).expect("format");
        assert!(row("10").contains(&format!("[a@1:insert@{stamp}]")), "version 1's own commit time: {}", row("10"));
        // Both replays are in the tracker's audit log, with who, why, from and to.
        // Each is recorded as started before it writes, then as finished.
        let history = engine.tracker().await.expect("tracker").history(4).await.expect("history");
        let actions: Vec<_> = history.iter().map(|h| h.action.as_deref().unwrap_or_default()).collect();
        assert_eq!(actions, ["replay", "replay-intent", "replay", "replay-intent"], "newest first");
        for (h, into) in history.iter().zip(["_deltalink/links/p", "_deltalink/links/p", "scratch", "scratch"]) {
            assert_eq!(h.reason.as_deref(), Some("downstream bug #7"), "{h:?}");
            assert!(h.details["into"].as_str().is_some_and(|i| i.contains(into)), "{h:?}");
            assert_eq!((&h.details["upstreams"][0]["from"], &h.details["upstreams"][0]["to"]), (&serde_json::json!(1), &serde_json::json!(4)), "{h:?}");
        }
        assert_eq!(processed_versions(&engine, "p").await, vec![Some(6)], "a replay moves no processed version");
        // Status shows the replay as the link table's last write.
        let st = deltalink::ops::status::status(&engine).await.expect("status");
        let w = st.pipelines[0].last_write.clone().expect("last write");
        assert_eq!((w.kind.as_str(), w.run_id, w.keys_inserted), ("replay", 2, Some(0)), "{w:?}");
        assert_eq!(w.keys_updated, Some(r.distinct_keys), "{w:?}");
    });
}

/// A replay failing after any of its steps (an injected error; the process state is as if it
/// died there) leaves the link table as it was or wholly replayed — one commit, no stray data
/// files — is on record in the audit log from before it wrote, moves no processed version, and
/// frees the pipeline: a retry then replays and the next run finds nothing new.
#[test]
fn a_replay_failing_at_any_step_leaves_the_link_table_whole_and_on_record() {
    use deltalink::engine::Step;
    rt().block_on(async {
        for step in [Step::IntentRecorded, Step::LinkFilesWritten, Step::LinkCommitted, Step::TrackerCommitted] {
            let (lake, _a, engine, per_version) = lake_with_history().await;
            let before = link_keys(&engine, "p").await;
            let replay = Replay {
                pipeline: "p".into(),
                from_version: 2,
                to_version: Some(4),
                upstreams: vec![],
                into: None,
                execute: true,
                reason: Some("fault test".into()),
            };
            let replayed: Affected = per_version[2..=4].iter().flatten().copied().collect();
            let e = engine.replay_with(&replay, &RunOptions::default().with_fault_after(step)).await.expect_err("injected");
            assert!(format!("{e:#}").contains("injected fault"), "{step:?}: {e:#}");

            let after = link_keys(&engine, "p").await;
            let committed = matches!(step, Step::LinkCommitted | Step::TrackerCommitted);
            let expected: BTreeMap<i64, i64> =
                before.iter().map(|(k, run)| (*k, if committed && replayed.contains(k) { 2 } else { *run })).collect();
            assert_eq!(after, expected, "{step:?}: the link table is as before or wholly replayed");
            let strays = unreferenced_data_files(&lake.path("_deltalink/links/p"));
            assert!(strays.is_empty(), "{step:?}: data files no commit references: {strays:?}");
            let history = engine.tracker().await.expect("tracker").history(1).await.expect("history");
            let last = if step == Step::TrackerCommitted { "replay" } else { "replay-intent" };
            assert_eq!(history[0].action.as_deref(), Some(last), "{step:?}: {:?}", history[0]);
            assert_eq!(processed_versions(&engine, "p").await, vec![Some(6)], "{step:?}: a replay moves no processed version");

            let retry = engine.replay(&replay).await.expect("a retry replays (the lease was freed)");
            let run_id = retry.run_id.expect("written");
            let after = link_keys(&engine, "p").await;
            assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "{step:?}: no key lost or invented");
            assert!(replayed.iter().all(|k| after[k] == run_id), "{step:?}: the retry's run_id on every replayed key");
            let next = engine.run("p", &RunOptions::default()).await.expect("run after the replay");
            assert_eq!(next.outcome, Outcome::NothingNew, "{step:?}");
        }
    });
}

/// The tracker's processed version of each of `pipeline`'s upstreams.
async fn processed_versions(engine: &deltalink::Engine, pipeline: &str) -> Vec<Option<i64>> {
    let rows = engine.tracker().await.expect("tracker").rows(Some(pipeline)).await.expect("rows");
    rows.iter().map(|r| r.processed()).collect()
}

/// Cancelling a run (the console aborts its task) at any step frees the pipeline at once —
/// the process lives on, so neither a dead pid nor the TTL would — and the next run converges
/// to the state of a pipeline that was never cancelled. Cancelling a `run_many` cycle cancels
/// the runs it spawned.
#[test]
fn a_cancelled_run_frees_its_pipeline_and_the_next_run_converges() {
    use deltalink::engine::Step;
    use std::sync::Arc;
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(5);
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&simple_config(&["a"], &[("cancelled", &["a"]), ("clean", &["a"])]));
        let steps = [Step::Pinned, Step::IntentRecorded, Step::ChangesRead, Step::LinkCommitted, Step::TrackerCommitted];
        for (round, step) in steps.into_iter().enumerate() {
            for _ in 0..3 {
                a.random_commit(&mut rng, 50).await;
            }
            let held = Arc::new(tokio::sync::Notify::new());
            let opts = RunOptions::default().with_hold_after(step, held.clone());
            let run = {
                let engine = engine.clone();
                if round % 2 == 0 {
                    tokio::spawn(async move { drop(engine.run("cancelled", &opts).await) })
                } else {
                    tokio::spawn(async move { drop(engine.run_many(&["cancelled".into()], &opts).await) })
                }
            };
            held.notified().await;
            run.abort();
            assert!(run.await.is_err_and(|e| e.is_cancelled()), "the run was cancelled at {step:?}");
            // A cycle's pipelines run as tasks of their own, aborted with it — and tokio aborts
            // asynchronously: wait for the condition (the lease freed), not for a time.
            let freed = async {
                while deltalink::store::lease::current(&engine.config, "cancelled").await.expect("lease").is_some_and(|h| !h.expired()) {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(30), freed).await.expect("the cancelled run's lease is freed");
            engine
                .run("cancelled", &RunOptions::default())
                .await
                .unwrap_or_else(|e| panic!("run after a cancel at {step:?} (round {round}): {e:#}"));
            engine.run("clean", &RunOptions::default()).await.expect("clean run");
            assert_eq!(link_keys(&engine, "cancelled").await, link_keys(&engine, "clean").await, "after a cancel at {step:?}");
            assert_eq!(processed_versions(&engine, "cancelled").await, processed_versions(&engine, "clean").await);
        }
    });
}

#[test]
fn two_engines_racing_on_one_pipeline_write_once() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        for k in 0..5 {
            a.insert(&[Some(k)]).await;
        }
        let cfg = simple_config(&["a"], &[("p", &["a"])]);
        let (e1, e2) = (lake.engine(&cfg), lake.engine(&cfg));
        let opts = RunOptions::default();
        let (r1, r2) = tokio::join!(e1.run("p", &opts), e2.run("p", &opts));
        let written = [&r1, &r2].iter().filter(|r| matches!(r, Ok(rep) if rep.outcome == Outcome::Written)).count();
        assert_eq!(written, 1, "exactly one run writes: {r1:?} / {r2:?}");
        for r in [&r1, &r2] {
            if let Err(e) = r {
                assert!(format!("{e:#}").contains("is busy"), "{e:#}");
            }
        }
        assert_eq!(link_keys(&e1, "p").await, (0..5).map(|k| (k, 1)).collect::<BTreeMap<_, _>>());
    });
}

#[test]
fn a_killed_process_converges_on_restart() {
    let bin = env!("CARGO_BIN_EXE_deltalink");
    // Every step, two histories each: the process aborts right after the step (no unwinding).
    let cases = ["pinned", "intent", "read", "files", "link", "tracker"].into_iter().flat_map(|step| [(step, 9), (step, 19)]);
    for (step, seed) in cases {
        let (lake, expected) = rt().block_on(async {
            let lake = Lake::new();
            let mut a = ModelTable::create(&lake.path("a"), true).await;
            let mut rng = seeded(seed);
            let mut expected = Affected::new();
            for _ in 0..4 {
                expected.extend(a.random_commit(&mut rng, 30).await);
            }
            lake.config(&simple_config(&["a"], &[("p", &["a"])]));
            (lake, expected)
        });
        let cfg = lake.path("deltalink.toml");
        let killed = Command::new(bin)
            .args(["--config", cfg.to_str().expect("utf-8"), "run", "p"])
            .env("DELTALINK_FAULT_AFTER", step)
            .output()
            .expect("spawn deltalink");
        assert!(!killed.status.success(), "the process must die after `{step}`");
        let ok = Command::new(bin).args(["--config", cfg.to_str().expect("utf-8"), "run", "p"]).output().expect("spawn");
        assert!(ok.status.success(), "restart after {step}: {}", String::from_utf8_lossy(&ok.stderr));
        rt().block_on(async {
            let engine = deltalink::Engine::new(deltalink::Config::load(&cfg).expect("config"));
            let link = link_keys(&engine, "p").await;
            assert_eq!(link, expected.iter().map(|k| (*k, 1)).collect::<BTreeMap<_, _>>(), "after kill at {step} (history {seed})");
            let rows = engine.tracker().await.expect("t").rows(Some("p")).await.expect("rows");
            assert_eq!(rows[0].pending_run_id, None);
            assert_eq!(rows[0].run_id, Some(1));
        });
    }
}

#[test]
fn watch_picks_up_commits_landing_while_it_runs_and_reads_each_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut expected = a.insert(&[Some(1)]).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = deltalink::ops::watch::Watcher::new(engine.clone(), vec![], Duration::from_millis(20));
        let watching = watcher.run(stop.clone(), move |_, r| {
            let _ = tx.send(r.as_ref().map(|rep| rep.upstreams.iter().map(|u| (u.processed, u.pinned)).collect::<Vec<_>>()).map_err(|e| format!("{e:#}")));
        });
        // The driver commits while the watcher polls and runs, and waits (on the watcher's own
        // reports, not on time) until a run has read up to its latest commit.
        let driver = async {
            let mut rng = seeded(5);
            let mut ranges: Vec<(Option<i64>, u64)> = Vec::new();
            for _ in 0..4 {
                for _ in 0..3 {
                    expected.extend(a.random_commit(&mut rng, 50).await);
                }
                let target = a.version();
                loop {
                    let report = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("a run within 60 s").expect("watcher alive");
                    let read = report.expect("watch run succeeds");
                    ranges.extend(read.iter().copied());
                    if read.iter().any(|(_, pinned)| *pinned >= target) {
                        break;
                    }
                }
            }
            stop.store(true, Ordering::SeqCst);
            ranges
        };
        let (watched, ranges) = tokio::join!(watching, driver);
        watched.expect("watch stops cleanly");
        // Ranges (processed, pinned] tile the versions: each run starts where the last ended.
        let mut last: Option<u64> = None;
        for (processed, pinned) in ranges.iter().filter(|(p, pin)| *p != Some(*pin as i64)) {
            assert_eq!(*processed, last.map(|v| v as i64), "no commit skipped or read twice: {ranges:?}");
            last = Some(*pinned);
        }
        assert_eq!(last, Some(a.version()));
        assert_eq!(link_keys(&engine, "p").await.keys().copied().collect::<Affected>(), expected);
    });
}

/// An upstream that cannot be read (here: not created yet) is reported on every poll and holds
/// back nothing else: the pipelines of the other upstreams keep running.
#[test]
fn watch_reports_an_unreadable_upstream_and_keeps_running_the_others() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut expected = a.insert(&[Some(1)]).await;
        let engine = lake.engine(&simple_config(&["a", "missing"], &[("p", &["a"]), ("q", &["missing"])]));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = deltalink::ops::watch::Watcher::new(engine.clone(), vec![], Duration::from_millis(20));
        let watching = watcher.run(stop.clone(), move |who, r| {
            let _ = tx.send((who.to_string(), r.as_ref().map(|rep| rep.upstreams[0].pinned).map_err(|e| format!("{e:#}"))));
        });
        let driver = async {
            let (mut poll_errors, mut runs) = (Vec::new(), 0);
            for k in 2..4 {
                expected.extend(a.insert(&[Some(k)]).await);
                let target = a.version();
                loop {
                    let (who, r) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("a report within 60 s").expect("watcher alive");
                    match (who.as_str(), r) {
                        ("p", Ok(pinned)) if pinned >= target => {
                            runs += 1;
                            break;
                        }
                        ("p", Ok(_)) => {}
                        (_, Err(e)) => poll_errors.push((who, e)),
                        other => panic!("unexpected report {other:?}"),
                    }
                }
            }
            stop.store(true, Ordering::SeqCst);
            (poll_errors, runs)
        };
        let (watched, (poll_errors, runs)) = tokio::join!(watching, driver);
        watched.expect("watch stops cleanly");
        assert_eq!(runs, 2);
        assert!(!poll_errors.is_empty(), "the unreadable upstream is reported");
        for (who, e) in &poll_errors {
            assert!(who.contains("`missing`") && e.contains("missing"), "{who}: {e}");
        }
        assert_eq!(link_keys(&engine, "p").await.keys().copied().collect::<Affected>(), expected);
    });
}

/// Whether a rendered link row's provenance list ends with an RFC 3339 commit time.
fn ends_with_time(row: &str) -> bool {
    let Some(prov) = row.rsplit(" | ").next() else { return false };
    let Some(stamp) = prov.strip_suffix(']').and_then(|p| p.rsplit('@').next()) else { return false };
    chrono::DateTime::parse_from_rfc3339(stamp).is_ok()
}
