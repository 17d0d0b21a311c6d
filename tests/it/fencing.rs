//! Exactly once with several actors: a run frozen past its lease (a real SIGSTOP at a known
//! step, as a VM pause or a long GC would freeze it) wakes up after an operator's reset or
//! another process's runs, and must be refused instead of overwriting them; the tracker's
//! compare-and-set; a `start = "latest"` pipeline's first run dying after its intent; a replay
//! `--into` the pipeline's own link table keeps the production guards.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deltalink::ops::reset::{execute_reset, plan_reset, ResetTarget};
use deltalink::engine::{Replay, RunOptions, Step};
use deltalink::store::tracker::{Audit, RowWrite, TrackerRow};

use crate::common::*;

/// A short lease TTL, so that taking over a frozen holder's lease takes seconds.
fn fenced_config(upstreams: &[&str], pipelines: &[(&str, &[&str])]) -> String {
    simple_config(upstreams, pipelines).replacen("[tracker]\n", "[tracker]\nlease_ttl_seconds = 2\n", 1)
}

/// `deltalink run p`, stopping itself (SIGSTOP) right after `step`; returns once it is stopped.
fn frozen_run(lake: &Lake, step: &str) -> Child {
    let cfg = lake.path("deltalink.toml");
    let child = Command::new(env!("CARGO_BIN_EXE_deltalink"))
        .args(["--config", cfg.to_str().expect("utf-8"), "run", "p"])
        .env("DELTALINK_STOP_AFTER", step)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deltalink");
    wait_until_stopped(child.id(), step);
    child
}

/// Poll the process state until it is stopped (`T`): the condition, not a guessed time.
fn wait_until_stopped(pid: u32, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        match state {
            Some('T') | Some('t') => return,
            Some('Z') | None => panic!("deltalink exited before stopping after `{step}`"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "deltalink did not reach `{step}` within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until the frozen holder's lease looks expired by this host's clock (no heartbeat for
/// its TTL): before that, a contender is told the pipeline is busy.
async fn wait_until_lease_looks_expired(engine: &deltalink::Engine) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while deltalink::store::lease::current(&engine.config, "p").await.expect("lease").is_some_and(|h| !h.expired()) {
        assert!(Instant::now() < deadline, "the frozen holder's lease never looked expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wake a frozen run and collect how it ended.
fn wake(child: Child) -> (bool, String) {
    let status = Command::new("kill").args(["-CONT", &child.id().to_string()]).status().expect("kill -CONT");
    assert!(status.success(), "kill -CONT");
    let out = child.wait_with_output().expect("wait for deltalink");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The run_ids of the link table's commits, in version order.
async fn link_commit_run_ids(engine: &deltalink::Engine, pipeline: &str) -> Vec<i64> {
    let Some(t) = link_table(engine, pipeline).await else { return vec![] };
    let latest = t.version().expect("version");
    let mut ids = Vec::new();
    for v in 0..=latest {
        let commit = deltalink::store::lake::read_commit(&t, v).await.expect("read commit");
        if let Some(id) = commit.and_then(|c| c.info).and_then(|i| i.info.get("deltalink.run_id").and_then(|r| r.as_i64())) {
            ids.push(id);
        }
    }
    ids
}

async fn row_of(engine: &deltalink::Engine, pipeline: &str) -> TrackerRow {
    engine.tracker().await.expect("tracker").rows(Some(pipeline)).await.expect("rows").remove(0)
}

fn assert_strictly_increasing(ids: &[i64], context: &str) {
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{context}: link commits' run_ids must strictly increase: {ids:?}");
}

/// Upstream `a` with versions 1..=6 (two inserted keys each) run by `p`, then versions 7..=9:
/// the keys of all of them (the oracle) and the pipeline's engine.
async fn lake_with_unread_versions() -> (Lake, ModelTable, deltalink::Engine, Affected) {
    let lake = Lake::new();
    let mut a = ModelTable::create(&lake.path("a"), true).await;
    let engine = lake.engine(&fenced_config(&["a"], &[("p", &["a"])]));
    let mut all = Affected::new();
    for k in 1..=6 {
        all.extend(a.insert(&[Some(k * 10), Some(k * 10 + 1)]).await);
    }
    engine.run("p", &RunOptions::default()).await.expect("first run");
    let mut rng = seeded(18);
    for _ in 0..3 {
        all.extend(a.random_commit(&mut rng, 100).await);
    }
    (lake, a, engine, all)
}

/// Reproduction 1 of issue 18: a run frozen after its intent (and, worse, frozen after its
/// lease check right before the link commit, or after the link commit) while an operator's
/// audited reset succeeds; woken up, it must not write its pinned version over the reset.
#[test]
fn a_run_frozen_past_its_lease_cannot_undo_an_operators_reset() {
    for step in ["intent", "files", "link"] {
        let (lake, a, engine, all) = rt().block_on(lake_with_unread_versions());
        let frozen = frozen_run(&lake, step);
        rt().block_on(async {
            // The frozen holder's process is alive: the reset watches its lease for the TTL
            // on this process's clock, then takes it over.
            wait_until_lease_looks_expired(&engine).await;
            let plan = plan_reset(&engine, "p", &[], ResetTarget::Version(3)).await.expect("plan");
            execute_reset(&engine, &plan, "re-read after a downstream bug").await.expect("reset while a run is frozen");
        });
        let (ok, stderr) = wake(frozen);
        assert!(!ok, "after `{step}`: the woken run must fail, not commit: {stderr}");
        assert!(stderr.contains("lost its lease") || stderr.contains("was refused"), "after `{step}`: {stderr}");
        rt().block_on(async {
            let row = row_of(&engine, "p").await;
            assert_eq!((row.last_processed_version, row.pending_run_id), (Some(3), None), "after `{step}`: the reset stands: {row:?}");
            let history = engine.tracker().await.expect("t").history(1).await.expect("history");
            assert_eq!(history[0].action.as_deref(), Some("reset"), "after `{step}`: nothing was written over the reset");

            let r = engine.run("p", &RunOptions::default()).await.expect("the next run");
            assert_eq!(r.upstreams[0].processed, Some(3), "after `{step}`: the re-read the operator asked for happens");
            assert_eq!(row_of(&engine, "p").await.last_processed_version, Some(a.version() as i64));
            let keys: Affected = link_keys(&engine, "p").await.into_keys().collect();
            assert_eq!(keys, all, "after `{step}`: every key, none lost");
            assert_strictly_increasing(&link_commit_run_ids(&engine, "p").await, step);
        });
    }
}

/// A run frozen after its lease check, right before its link commit, while another process
/// takes the lease over, finishes the frozen run's intent and runs a newer run: woken, its link
/// commit is refused (a run_id at or below the link table's last), and the tracker never
/// moves backwards.
#[test]
fn a_run_frozen_before_its_link_commit_cannot_commit_over_newer_runs() {
    let (lake, mut a, engine, mut all) = rt().block_on(lake_with_unread_versions());
    let frozen = frozen_run(&lake, "files");
    let newest = rt().block_on(async {
        wait_until_lease_looks_expired(&engine).await;
        let resumed = engine.run("p", &RunOptions::default()).await.expect("takeover run");
        assert!(resumed.resumed, "the takeover resumes the frozen run's intent: {resumed:?}");
        all.extend(a.insert(&[Some(7000)]).await);
        let newer = engine.run("p", &RunOptions::default()).await.expect("a newer run");
        newer.run_id.expect("run id")
    });
    let (ok, stderr) = wake(frozen);
    assert!(!ok, "the woken run must fail: {stderr}");
    assert!(stderr.contains("was refused"), "{stderr}");
    rt().block_on(async {
        let row = row_of(&engine, "p").await;
        assert_eq!((row.run_id, row.last_processed_version, row.pending_run_id), (Some(newest), Some(a.version() as i64), None), "{row:?}");
        let ids = link_commit_run_ids(&engine, "p").await;
        assert_strictly_increasing(&ids, "takeover");
        assert_eq!(ids.last(), Some(&newest));
        let keys: Affected = link_keys(&engine, "p").await.into_keys().collect();
        assert_eq!(keys, all);
    });
}

/// Tracker writes are compare-and-set on the rows their writer read: a write over a row that
/// changed since is refused and changes nothing; a write that already landed (a retry) passes.
#[test]
fn a_tracker_write_over_a_row_changed_since_it_was_read_is_refused() {
    rt().block_on(async {
        let (_lake, _a, engine, _) = lake_with_unread_versions().await;
        let read = row_of(&engine, "p").await;
        let mut theirs = read.clone();
        theirs.last_processed_version = Some(2);
        theirs.note = Some("reset: by an operator".into());
        let mut tracker = engine.tracker().await.expect("tracker");
        tracker.upsert(&[RowWrite::new(theirs.clone(), Some(read.clone()))], &Audit::new("reset", "p")).await.expect("first writer");

        let mut mine = read.clone();
        mine.last_processed_version = Some(9);
        let mut stale = engine.tracker().await.expect("tracker");
        let e = format!("{:#}", stale.upsert(&[RowWrite::new(mine, Some(read.clone()))], &Audit::new("run", "p")).await.expect_err("stale"));
        assert!(e.contains("was refused") && e.contains("upstream `a`") && e.contains("processed 2"), "{e}");
        assert_eq!(row_of(&engine, "p").await, theirs, "the refused write changed nothing");

        // The first writer's commit retried (as after a lost reply) is let through as written.
        tracker.upsert(&[RowWrite::new(theirs.clone(), Some(read))], &Audit::new("reset", "p")).await.expect("a retry of a landed write");
        assert_eq!(row_of(&engine, "p").await, theirs);
    });
}

/// A stale intent: the tracker says run 1 is pending with pin 8, but the link table's commit of
/// run 1 pinned version 6 (another writer's). It is never trusted: the intent is abandoned and a
/// new run with a new run_id reads on from the processed version, once.
#[test]
fn an_intent_whose_run_id_the_link_table_committed_with_other_pins_is_abandoned_for_a_new_run() {
    rt().block_on(async {
        let (_lake, _a, engine, _) = lake_with_unread_versions().await;
        let read = row_of(&engine, "p").await;
        assert_eq!((read.last_processed_version, read.run_id), (Some(6), Some(1)));
        let mut stale = read.clone();
        stale.pending_run_id = Some(1);
        stale.pending_version = Some(8);
        let mut tracker = engine.tracker().await.expect("tracker");
        tracker.upsert(&[RowWrite::new(stale, Some(read))], &Audit::new("run-intent", "p")).await.expect("write the stale intent");

        let report = engine.run("p", &RunOptions::default()).await.expect("run");
        assert_eq!((report.run_id, report.resumed), (Some(2), false), "a new run, not a resumed run 1");
        let range = report.upstreams[0].range.expect("a range is read");
        assert_eq!((range.from, range.to), (7, 9), "from the processed version on, to the latest: not the stale pin");
        let row = row_of(&engine, "p").await;
        assert_eq!((row.last_processed_version, row.run_id, row.pending_run_id, row.pending_version), (Some(9), Some(2), None, None));
        assert_eq!(link_commit_run_ids(&engine, "p").await, vec![1, 2], "run 1 is not written again");
        let again = engine.run("p", &RunOptions::default()).await.expect("a run after it");
        assert_eq!(again.outcome, deltalink::engine::Outcome::NothingNew);
    });
}

/// Reproduction 2 of issue 18: a `start = "latest"` pipeline's first run dies after its
/// intent; the restart must record the pin and read nothing, not all history.
#[test]
fn a_start_latest_first_run_that_dies_after_its_intent_still_reads_nothing_old() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        for k in 0..20 {
            a.insert(&[Some(k)]).await;
        }
        let cfg = fenced_config(&["a"], &[("p", &["a"])]).replacen("key = [\"k\"]\n", "key = [\"k\"]\nstart = \"latest\"\n", 1);
        let engine = lake.engine(&cfg);
        let pinned = a.version() as i64;
        let e = engine.run("p", &RunOptions::default().with_fault_after(Step::IntentRecorded)).await.expect_err("injected");
        assert!(format!("{e:#}").contains("injected fault"), "{e:#}");
        let r = engine.run("p", &RunOptions::default()).await.expect("restart");
        assert!(r.resumed, "{r:?}");
        assert_eq!(r.distinct_keys, 0, "nothing before the first run's pin is read: {r:?}");
        assert!(link_keys(&engine, "p").await.is_empty());
        assert_eq!(row_of(&engine, "p").await.last_processed_version, Some(pinned));

        let new = a.insert(&[Some(500)]).await;
        engine.run("p", &RunOptions::default()).await.expect("next run");
        let keys: Affected = link_keys(&engine, "p").await.into_keys().collect();
        assert_eq!(keys, new, "only what landed after the pin");
    });
}

/// Reproduction 3 of issue 18: `replay --into` the pipeline's own link table is a production
/// replay: refused while a crashed run is pending (it would take that run's run_id), refused
/// under `reset_allowed = false`; otherwise it takes a run_id after every run.
#[test]
fn a_replay_into_the_pipelines_own_link_table_keeps_the_production_guards() {
    rt().block_on(async {
        let (lake, mut a, engine, mut all) = lake_with_unread_versions().await;
        let own = engine.config.pipeline("p").expect("p").link_table.clone();
        let replay = |execute| Replay {
            pipeline: "p".into(),
            from_version: 1,
            to_version: Some(4),
            upstreams: vec![],
            into: Some(own.clone()),
            execute,
            reason: Some("compare".into()),
        };
        let e = engine.run("p", &RunOptions::default().with_fault_after(Step::ChangesRead)).await.expect_err("crash");
        assert!(format!("{e:#}").contains("injected fault"), "{e:#}");
        let e = format!("{:#}", engine.replay(&replay(true)).await.expect_err("refused while a run is pending"));
        assert!(e.contains("unfinished run"), "{e}");

        // The pending run completes with every key of its range.
        all.extend(a.insert(&[Some(9000)]).await);
        engine.run("p", &RunOptions::default()).await.expect("recovering run");
        engine.run("p", &RunOptions::default()).await.expect("catch up");
        let keys: Affected = link_keys(&engine, "p").await.into_keys().collect();
        assert_eq!(keys, all, "no key of the crashed run's range is missing");

        let before = row_of(&engine, "p").await;
        let dry = engine.replay(&replay(false)).await.expect("dry run");
        assert!(dry.into_link_table, "the dry run says the path is the pipeline's own link table (the console's typed confirmation asks it)");
        let r = engine.replay(&replay(true)).await.expect("replay into its own link table");
        assert!(r.run_id > before.run_id, "a new run_id after every run: {r:?} vs {before:?}");
        assert_strictly_increasing(&link_commit_run_ids(&engine, "p").await, "replay");

        let locked = lake.engine(&fenced_config(&["a"], &[("p", &["a"])]).replacen("key = [\"k\"]\n", "key = [\"k\"]\nreset_allowed = false\n", 1));
        let e = format!("{:#}", locked.replay(&replay(true)).await.expect_err("reset_allowed = false"));
        assert!(e.contains("reset_allowed = false"), "{e}");
    });
}

/// A `sql` source joining an upstream that is not a source of the pipeline is refused when the
/// config is checked: that table would be read unpinned and its changes would mark no keys.
#[test]
fn a_sql_source_joining_an_upstream_outside_the_pipeline_is_refused() {
    rt().block_on(async {
        let lake = Lake::new();
        ModelTable::create(&lake.path("a"), true).await;
        ModelTable::create(&lake.path("b"), true).await;
        let cfg = simple_config(&["a", "b"], &[]).to_string()
            + "[pipelines.p]\nlink_table = \"_deltalink/links/p\"\nkey = [\"k\"]\n[[pipelines.p.sources]]\nupstream = \"a\"\nsql = \"SELECT b.k AS k FROM changes c JOIN b ON c.payload = b.payload\"\n";
        let engine = lake.engine(&cfg);
        let e = format!("{:#}", engine.validate_sql().await.expect_err("refused"));
        assert!(e.contains("joins upstream `b`, which is not a source") && e.contains("fix: add it as a source"), "{e}");
        let e = format!("{:#}", engine.run("p", &RunOptions::default()).await.expect_err("refused"));
        assert!(e.contains("which is not a source"), "{e}");
        assert!(!lake.path("_deltalink/tracker/_delta_log").exists(), "nothing written");
    });
}

/// The lease's expiry never compares clocks across hosts: a holder whose heartbeats carry a
/// clock far behind ours, but keep coming, is never taken over; once they stop, it is taken
/// over after its TTL on our clock.
#[test]
fn a_holder_with_a_skewed_clock_is_taken_over_only_once_silent() {
    use deltalink::store::lease::{acquire, object_path, LeaseHolder};
    rt().block_on(async {
        let lake = Lake::new();
        ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&fenced_config(&["a"], &[("p", &["a"])]));
        let object = lake.path("_deltalink/tracker").join(object_path("p", 0).as_ref());
        std::fs::create_dir_all(object.parent().expect("parent")).expect("lease dir");
        let holder = |beat: i64| LeaseHolder {
            operator: "elsewhere".into(),
            host: "a-host-whose-clock-is-a-day-behind".into(),
            pid: 1,
            purpose: "run".into(),
            since_ms: 0,
            heartbeat_ms: beat,
            token: "skewed".into(),
            ttl_ms: 400,
            released: false,
        };
        // Written whole (a temp file renamed over it), as object stores put objects.
        let write = {
            let object = object.clone();
            move |beat: i64| {
                let tmp = object.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec(&holder(beat)).expect("json")).expect("write lease");
                std::fs::rename(&tmp, &object).expect("rename lease");
            }
        };
        write(1);
        // Heartbeats every 100 ms (a quarter TTL), a day behind our clock, while a contender
        // tries to take the lease.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let beating = {
            let (stop, write) = (stop.clone(), write.clone());
            tokio::spawn(async move {
                let mut beat = 1;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    beat += 100;
                    write(beat);
                }
            })
        };
        let e = format!("{:#}", acquire(&engine.config, "p", "contender").await.err().expect("a live holder is not taken over"));
        assert!(e.contains("is busy: leased by elsewhere"), "{e}");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        beating.await.expect("heartbeat task");
        let started = Instant::now();
        let lease = acquire(&engine.config, "p", "contender").await.expect("a silent holder is taken over");
        assert!(started.elapsed() >= Duration::from_millis(400), "only after its whole TTL on our clock");
        assert_eq!(deltalink::store::lease::current_generation(&engine.config, "p").await.expect("generation"), Some(1));
        lease.release().await;
    });
}

/// A lake with upstream `a` and pipeline `p` (2 s lease TTL), `p`'s lease taken; when it was
/// asked for, and the heartbeat time its lease object was created with.
async fn leased_lake() -> (Lake, deltalink::Engine, deltalink::store::lease::Lease, Instant, i64) {
    use deltalink::store::lease::{acquire, current};
    let lake = Lake::new();
    ModelTable::create(&lake.path("a"), true).await;
    let engine = lake.engine(&fenced_config(&["a"], &[("p", &["a"])]));
    let asked = Instant::now();
    let lease = acquire(&engine.config, "p", "run").await.expect("lease");
    let first_beat = current(&engine.config, "p").await.expect("lease").expect("held").heartbeat_ms;
    (lake, engine, lease, asked, first_beat)
}

/// Poll until `lease`'s injected heartbeat failures are used up and then a heartbeat has
/// rewritten its object (its `heartbeat_ms` past `before`).
async fn wait_for_a_heartbeat_after_the_failures(engine: &deltalink::Engine, lease: &deltalink::store::lease::Lease, before: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let beat = deltalink::store::lease::current(&engine.config, "p").await.expect("lease").map_or(0, |h| h.heartbeat_ms);
        if lease.heartbeat_failures_pending() == 0 && beat > before {
            return;
        }
        assert!(Instant::now() < deadline, "no heartbeat landed after the injected failures");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A heartbeat that fails (the store unreachable for a moment) is retried sooner than the next
/// regular one: three failures in a row starting at the first beat would leave the lease
/// unconfirmed past its 3/4-TTL validity at the regular pace (a beat every quarter TTL), but
/// the retries confirm it in time, so the holder still holds it well after that validity.
#[test]
fn a_failed_heartbeat_is_retried_in_time_and_the_holder_keeps_its_lease() {
    use deltalink::store::lease::acquire;
    rt().block_on(async {
        let (_lake, engine, lease, acquired, first_beat) = leased_lake().await;
        let fence = lease.fence();
        lease.fail_next_heartbeats(3);
        wait_for_a_heartbeat_after_the_failures(&engine, &lease, first_beat).await;
        // Past the validity the first confirmation gave (3/4 of the 2 s TTL): only a retried
        // heartbeat can have kept the holding.
        while acquired.elapsed() < Duration::from_millis(1_700) {
            fence.check().expect("held while its heartbeats are retried");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fence.check().expect("still held after the validity of its first heartbeat");
        let e = format!("{:#}", acquire(&engine.config, "p", "contender").await.err().expect("busy"));
        assert!(e.contains("is busy"), "{e}");
        lease.release().await;
    });
}

/// Heartbeats failing for longer than the holding's validity: the holder counts itself out
/// (its next commit is refused) and a heartbeat that lands after that does not revive the
/// holding; once silent, another process takes the lease over.
#[test]
fn a_heartbeat_that_lands_after_the_lease_lapsed_does_not_revive_it() {
    use deltalink::store::lease::{acquire, current_generation};
    rt().block_on(async {
        let (_lake, engine, lease, _, first_beat) = leased_lake().await;
        let fence = lease.fence();
        // A first beat after 0.5 s, then retries every 1/6 s: ten failures last ~2 s, past
        // the 1.5 s validity.
        lease.fail_next_heartbeats(10);
        wait_for_a_heartbeat_after_the_failures(&engine, &lease, first_beat).await;
        let e = fence.check().expect_err("lapsed while its heartbeats failed").to_string();
        assert!(e.contains("lost its lease") && e.contains("generation 0"), "{e}");
        // The late heartbeat rewrote the object, but nothing follows it: it looks expired a
        // TTL later, and is taken over after being watched unchanged for another.
        wait_until_lease_looks_expired(&engine).await;
        let contender = acquire(&engine.config, "p", "contender").await.expect("taken over once silent for its TTL");
        assert_eq!(current_generation(&engine.config, "p").await.expect("generation"), Some(1));
        fence.check().expect_err("a takeover does not revive the old holding");
        contender.release().await;
        lease.release().await;
    });
}

/// `preview` resolves a pending run first, as the next run will: after a run that died once its
/// link commit landed, the next run only completes the tracker, so the preview shows nothing
/// of that run's range — and then exactly what landed since.
#[test]
fn preview_after_a_run_that_died_after_its_link_commit_shows_only_what_the_next_run_writes() {
    rt().block_on(async {
        let (_lake, mut a, engine, _) = lake_with_unread_versions().await;
        let e = engine.run("p", &RunOptions::default().with_fault_after(Step::LinkCommitted)).await.expect_err("crash");
        assert!(format!("{e:#}").contains("injected fault"), "{e:#}");
        let preview = engine.preview("p", None).await.expect("preview");
        assert_eq!(preview.distinct_keys, 0, "the pending run's keys are written already: {preview:?}");
        a.insert(&[Some(4242)]).await;
        let preview = engine.preview("p", None).await.expect("preview");
        assert_eq!(preview.distinct_keys, 1, "{preview:?}");
        let recovered = engine.run("p", &RunOptions::default()).await.expect("recovering run");
        assert_eq!(recovered.outcome, deltalink::engine::Outcome::Recovered);
        let next = engine.run("p", &RunOptions::default()).await.expect("next run");
        assert_eq!(next.distinct_keys, 1, "the preview showed what the next run wrote: {next:?}");
    });
}

/// An upstream removed from a pipeline while a run of it is pending: its row (and intent) no
/// longer take part, so the pipeline completes and goes on instead of "recovering" forever.
#[test]
fn an_upstream_removed_around_a_pending_run_does_not_hold_the_pipeline() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        let mut all = a.insert(&[Some(1), Some(2)]).await;
        b.insert(&[Some(3)]).await;
        let both = lake.engine(&fenced_config(&["a", "b"], &[("p", &["a", "b"])]));
        let e = both.run("p", &RunOptions::default().with_fault_after(Step::LinkCommitted)).await.expect_err("crash");
        assert!(format!("{e:#}").contains("injected fault"), "{e:#}");

        let only_a = lake.engine(&fenced_config(&["a", "b"], &[("p", &["a"])]));
        let first = only_a.run("p", &RunOptions::default()).await.expect("first run without b");
        assert_eq!(first.outcome, deltalink::engine::Outcome::Recovered, "{first:?}");
        let second = only_a.run("p", &RunOptions::default()).await.expect("second run without b");
        assert_eq!(second.outcome, deltalink::engine::Outcome::NothingNew, "b's stale intent holds nothing: {second:?}");
        all.extend(a.insert(&[Some(7)]).await);
        only_a.run("p", &RunOptions::default()).await.expect("third run");
        let keys: Affected = link_keys(&only_a, "p").await.into_keys().collect();
        assert!(all.is_subset(&keys), "every key of a: {keys:?}");
    });
}

/// An upstream added to a pipeline while a run of it is pending (it died after its intent): the
/// redone run keeps its run_id and the intent's pin, reads the new upstream from its start, and
/// every key of both lands once; the next run finds nothing new.
#[test]
fn an_upstream_added_around_a_pending_run_is_read_by_the_redone_run() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        let mut all = a.insert(&[Some(1), Some(2)]).await;
        all.extend(b.insert(&[Some(3), Some(4)]).await);
        let only_a = lake.engine(&fenced_config(&["a", "b"], &[("p", &["a"])]));
        let e = only_a.run("p", &RunOptions::default().with_fault_after(Step::IntentRecorded)).await.expect_err("crash");
        assert!(format!("{e:#}").contains("injected fault"), "{e:#}");
        let pinned = row_of(&only_a, "p").await;
        assert_eq!((pinned.pending_run_id, pinned.pending_version), (Some(1), Some(1)));
        // Committed after the pin: the redone run must not read it (the pin holds), the next does.
        let later = a.insert(&[Some(9)]).await;

        let both = lake.engine(&fenced_config(&["a", "b"], &[("p", &["a", "b"])]));
        let redone = both.run("p", &RunOptions::default()).await.expect("redone run");
        assert_eq!((redone.run_id, redone.resumed), (Some(1), true), "{redone:?}");
        let ranges: Vec<(String, Option<(u64, u64)>)> =
            redone.upstreams.iter().map(|u| (u.upstream.clone(), u.range.map(|r| (r.from, r.to)))).collect();
        assert_eq!(ranges, [("a".to_string(), Some((0, 1))), ("b".to_string(), Some((0, 1)))], "a to its pin, b from its start");
        let keys: Affected = link_keys(&both, "p").await.into_keys().collect();
        assert_eq!(keys, all, "a's keys up to the pin and b's keys, once");
        let next = both.run("p", &RunOptions::default()).await.expect("next run");
        assert_eq!((next.run_id, next.distinct_keys), (Some(2), later.len() as u64), "only what a committed after the pin");
        assert_eq!(both.run("p", &RunOptions::default()).await.expect("then").outcome, deltalink::engine::Outcome::NothingNew);
    });
}

/// `maintain --execute` frozen right after taking the pipeline's lease and opening its link
/// table (as a VM pause would freeze it), while another process takes the lease over and runs:
/// woken, it must not purge, compact or vacuum against a log it no longer knows (or under a run
/// committing meanwhile). It stops, and the link table holds every key once.
#[test]
fn a_maintenance_frozen_past_its_lease_commits_nothing_over_newer_runs() {
    let (lake, mut a, engine, mut all) = rt().block_on(async {
        let (lake, a, engine, all) = lake_with_unread_versions().await;
        // Rewritten keys: link files with deletion vectors for maintenance to purge.
        engine.run("p", &RunOptions::default()).await.expect("second run");
        (lake, a, engine, all)
    });
    let cfg = lake.path("deltalink.toml");
    let child = Command::new(env!("CARGO_BIN_EXE_deltalink"))
        .args(["--config", cfg.to_str().expect("utf-8"), "maintain", "p", "--execute", "--retention", "1s"])
        .env("DELTALINK_STOP_AFTER", "maintain-leased")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deltalink maintain");
    wait_until_stopped(child.id(), "maintain-leased");
    rt().block_on(async {
        wait_until_lease_looks_expired(&engine).await;
        all.extend(a.random_commit(&mut seeded(19), 100).await);
        all.extend(a.update_key(&a.rows.keys().copied().take(3).collect::<Vec<_>>(), 7).await);
        engine.run("p", &RunOptions::default()).await.expect("a run by the process that took the lease over");
    });
    let (ok, stderr) = wake(child);
    assert!(!ok && stderr.contains("lost its lease"), "the woken maintenance must stop: {stderr}");
    rt().block_on(async {
        let rows = link_rows(&engine, "p").await;
        let keys: Affected = rows.iter().map(|(k, _)| k[0].parse::<i64>().expect("integer key")).collect();
        assert_eq!((keys, rows.len()), (all.clone(), all.len()), "every key, once");
        let history = engine.tracker().await.expect("t").history(5).await.expect("history");
        assert!(history.iter().all(|h| h.action.as_deref() != Some("maintain")), "no maintenance on record: {history:?}");
    });
}
