//! Health on real lakes, as on call meets it: lag crossing `warn_lag` and `max_lag`, the
//! retention guard firing before unread commits can be lost (Delta's defaults, small retention
//! properties, a VACUUM that already ran), a run that died after its intent, an unreadable
//! upstream — and `status --check`'s lines and exit codes from the binary.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use deltalink::engine::{Engine, RunOptions, Step};
use deltalink::ops::health::HealthState;
use deltalink::ops::status::{status_at, PipelineUpstreamStatus, Status};
use deltalink::util::time::now_ms;

use crate::common::*;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// `simple_config` with lag objectives on every pipeline.
fn with_slo(config: String, warn: &str, max: &str) -> String {
    config.replace("key = [\"k\"]\n", &format!("key = [\"k\"]\nwarn_lag = \"{warn}\"\nmax_lag = \"{max}\"\n"))
}

fn verdict(st: &Status, pipeline: &str) -> (HealthState, String) {
    let p = st.pipelines.iter().find(|p| p.name == pipeline).expect("pipeline in status");
    (p.health.state, p.health.reason.clone())
}

fn progress<'a>(st: &'a Status, pipeline: &str, upstream: &str) -> &'a PipelineUpstreamStatus {
    let p = st.pipelines.iter().find(|p| p.name == pipeline).expect("pipeline in status");
    p.upstreams.iter().find(|u| u.upstream == upstream).expect("upstream of the pipeline")
}

/// A lake with upstream `a`, pipeline `p` run once over it, then one more commit it has not read.
async fn one_commit_behind(warn: &str, max: &str) -> (Lake, ModelTable, Engine) {
    let lake = Lake::new();
    let mut a = ModelTable::create(&lake.path("a"), true).await;
    a.insert(&[Some(1)]).await;
    let engine = lake.engine(&with_slo(simple_config(&["a"], &[("p", &["a"])]), warn, max));
    engine.run("p", &RunOptions::default()).await.expect("first run");
    let st = status_at(&engine, now_ms()).await.expect("status");
    assert_eq!(verdict(&st, "p"), (HealthState::Ok, "current".to_string()));
    assert_eq!(progress(&st, "p", "a").retention_seconds_left, None, "nothing unread, nothing at risk");
    a.insert(&[Some(2)]).await;
    (lake, a, engine)
}

async fn set_properties(a: &mut ModelTable, properties: &[(&str, &str)]) {
    let properties: HashMap<String, String> = properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    a.table = a.table.clone().set_tbl_properties().with_properties(properties).await.expect("set table properties");
}

/// Lag is the age of the oldest unread commit; as it grows, the verdict goes ok → lagging →
/// stalled, and with Delta's default retention (7 days for deleted files) the guard says
/// `at_risk` a day (the default margin) before the commit can become unreadable.
#[test]
fn lag_crosses_warn_then_max_lag_and_the_retention_guard_fires_a_day_early() {
    rt().block_on(async {
        let (_lake, _a, engine) = one_commit_behind("1h", "6h").await;
        let base = now_ms();
        let at = |offset: i64| {
            let engine = engine.clone();
            async move { status_at(&engine, base + offset).await.expect("status") }
        };
        let st = at(0).await;
        let (state, reason) = verdict(&st, "p");
        assert_eq!(state, HealthState::Ok, "{reason}");
        assert!(reason.contains("1 versions behind"), "{reason}");
        let left = progress(&st, "p", "a").retention_seconds_left.expect("an unread commit has a countdown");
        assert!((7.0 * 86_400.0 - 60.0..=7.0 * 86_400.0).contains(&left), "7 days from a fresh commit: {left}");

        let (state, reason) = verdict(&at(2 * HOUR_MS).await, "p");
        assert_eq!(state, HealthState::Lagging, "{reason}");
        assert!(reason.contains("`a`: oldest unread commit is 2h") && reason.contains("above warn_lag 1h 00m"), "{reason}");

        let (state, reason) = verdict(&at(7 * HOUR_MS).await, "p");
        assert_eq!(state, HealthState::Stalled, "{reason}");
        assert!(reason.contains("above max_lag 6h 00m"), "{reason}");

        let st = at(6 * DAY_MS + HOUR_MS).await;
        let (state, reason) = verdict(&st, "p");
        assert_eq!(state, HealthState::AtRisk, "at risk outranks stalled: {reason}");
        assert!(reason.contains("unread commits from version 2 can become unreadable in 22h"), "{reason}");
        assert!(reason.contains("deleted-file retention 7d 00h") && reason.contains("deltalink run p"), "{reason}");
        let left = progress(&st, "p", "a").retention_seconds_left.expect("countdown");
        assert!((22.0 * 3_600.0..=23.0 * 3_600.0).contains(&left), "{left}");

        let (_, reason) = verdict(&at(8 * DAY_MS).await, "p");
        assert!(reason.contains("may already be unreadable"), "{reason}");

        // Reading the commit makes it current again.
        engine.run("p", &RunOptions::default()).await.expect("catch up");
        assert_eq!(verdict(&at(8 * DAY_MS).await, "p").0, HealthState::Ok);
    });
}

/// Small retention properties put a fresh unread commit at risk at once; a VACUUM run with a
/// shorter RETAIN than the property says so in the reason, with its version.
#[test]
fn small_retention_properties_and_a_vacuum_put_an_unread_range_at_risk() {
    rt().block_on(async {
        let (_lake, mut a, engine) = one_commit_behind("1h", "6h").await;
        set_properties(&mut a, &[("delta.deletedFileRetentionDuration", "interval 2 hours"), ("delta.logRetentionDuration", "interval 3 days")]).await;
        let st = status_at(&engine, now_ms()).await.expect("status");
        let (state, reason) = verdict(&st, "p");
        assert_eq!(state, HealthState::AtRisk, "{reason}");
        assert!(reason.contains("can become unreadable in 1h") && reason.contains("deleted-file retention 2h 00m"), "{reason}");
        assert!(reason.contains("log retention 3d 00h"), "{reason}");

        // Rewrite the file holding key 2 (a delete), then VACUUM with RETAIN 0 (checks off).
        a.delete(&[1]).await;
        let (vacuumed, _) = a
            .table
            .clone()
            .vacuum()
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .await
            .expect("vacuum");
        a.table = vacuumed;
        let st = status_at(&engine, now_ms()).await.expect("status");
        let (state, reason) = verdict(&st, "p");
        assert_eq!(state, HealthState::AtRisk, "{reason}");
        assert!(reason.contains("may already be unreadable") && reason.contains("VACUUM at version"), "{reason}");
        assert!(reason.contains("removed files unreferenced for over 0s"), "{reason}");
        assert_eq!(progress(&st, "p", "a").retention_seconds_left, Some(0.0));
    });
}

/// A long-running process judges trends too: lag that grew at each of the last polls of
/// `watch` is `lagging` while still under `warn_lag`, and runs that failed in a row are
/// `failing` with their error until one succeeds. A one-shot status (a new process) has no
/// polls and no runs to judge, so it sees neither.
#[test]
fn lag_growing_over_watch_polls_is_lagging_and_failed_runs_in_a_row_are_failing() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await;
        let config = format!(
            "[health]\nlag_growth_polls = 3\nfailing_after_runs = 2\n{}",
            with_slo(simple_config(&["a"], &[("p", &["a"])]), "1h", "6h")
        );
        let engine = lake.engine(&config);
        engine.run("p", &RunOptions::default()).await.expect("first run");
        let mut watcher = deltalink::ops::watch::Watcher::new(engine.clone(), vec![], std::time::Duration::from_secs(1));
        let now = || async { status_at(&engine, now_ms()).await.expect("status") };
        for k in 2..=4 {
            a.insert(&[Some(k)]).await;
            let (due, unreadable) = watcher.due().await.expect("poll");
            assert_eq!((due, unreadable.len()), (vec!["p".to_string()], 0));
        }
        let (state, reason) = verdict(&now().await, "p");
        assert_eq!(state, HealthState::Ok, "three polls are two growths: {reason}");
        a.insert(&[Some(5)]).await;
        watcher.due().await.expect("poll");
        let (state, reason) = verdict(&now().await, "p");
        assert_eq!(state, HealthState::Lagging, "{reason}");
        assert!(reason.contains("`a`: lag grew at each of the last 3 polls (1 → 2 → 3 → 4 versions), still under warn_lag 1h 00m"), "{reason}");
        let one_shot = lake.engine(&config);
        assert_eq!(verdict(&status_at(&one_shot, now_ms()).await.expect("status"), "p").0, HealthState::Ok, "no polls, no trend");

        engine.run("p", &RunOptions::default()).await.expect("catch up");
        watcher.due().await.expect("poll");
        assert_eq!(verdict(&now().await, "p"), (HealthState::Ok, "current".to_string()), "caught up: the trend is over");

        a.insert(&[Some(6)]).await;
        let failing = RunOptions::default().with_fault_after(Step::Pinned);
        let _first = engine.run("p", &failing).await.expect_err("injected");
        assert_eq!(verdict(&now().await, "p").0, HealthState::Ok, "one failed run of two allowed");
        let error = format!("{:#}", engine.run("p", &failing).await.expect_err("injected"));
        let (state, reason) = verdict(&now().await, "p");
        assert_eq!(state, HealthState::Failing, "{reason}");
        let first_line = error.lines().next().expect("an error line");
        assert!(reason.starts_with(&format!("the last 2 runs failed: {first_line};")) && reason.contains("`deltalink run p`"), "{reason}");
        assert_eq!(verdict(&status_at(&one_shot, now_ms()).await.expect("status"), "p").0, HealthState::Ok, "another process saw no failed run");

        engine.run("p", &RunOptions::default()).await.expect("a run that succeeds");
        assert_eq!(verdict(&now().await, "p"), (HealthState::Ok, "current".to_string()), "a success clears it");
    });
}

/// A run that dies after its intent leaves the pipeline failing (nothing holds it) until a run
/// recovers it; an upstream that cannot be read fails the pipelines reading it.
#[test]
fn a_dead_run_and_an_unreadable_upstream_are_failing_with_what_to_do() {
    rt().block_on(async {
        let (lake, _a, engine) = one_commit_behind("1h", "6h").await;
        let _injected = engine.run("p", &RunOptions::default().with_fault_after(Step::IntentRecorded)).await.expect_err("injected");
        let (state, reason) = verdict(&status_at(&engine, now_ms()).await.expect("status"), "p");
        assert_eq!(state, HealthState::Failing, "{reason}");
        assert!(reason.contains("stopped after its intent") && reason.contains("run `deltalink run p`"), "{reason}");
        engine.run("p", &RunOptions::default()).await.expect("the next run recovers");
        assert_eq!(verdict(&status_at(&engine, now_ms()).await.expect("status"), "p").0, HealthState::Ok);

        std::fs::rename(lake.path("a"), lake.path("a-moved")).expect("move the upstream away");
        let (state, reason) = verdict(&status_at(&engine, now_ms()).await.expect("status"), "p");
        assert_eq!(state, HealthState::Failing, "{reason}");
        assert!(reason.starts_with("cannot read upstream `a`"), "{reason}");
    });
}

fn check(config: &Path, faketime: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deltalink"));
    if let Some(offset) = faketime {
        // libfaketime preloaded directly: the `faketime` wrapper opens a named semaphore after
        // its pid, and one left behind by a killed wrapper of the same pid (the chaos test
        // kills some) made it refuse to start ("sem_open: File exists", exit code 1).
        let lib = libfaketime().expect("libfaketime (the caller checks)");
        cmd.env("LD_PRELOAD", lib).env("FAKETIME", offset);
    }
    cmd.arg("--config").arg(config).args(["status", "--check"]).output().expect("run deltalink status --check")
}

/// libfaketime (Debian's package `faketime`, which `.ci/run` installs), if installed.
fn libfaketime() -> Option<std::path::PathBuf> {
    let candidates = [
        format!("/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1", std::env::consts::ARCH),
        "/usr/lib64/faketime/libfaketime.so.1".into(),
        "/usr/lib/faketime/libfaketime.so.1".into(),
        "/usr/local/lib/faketime/libfaketime.so.1".into(),
    ];
    candidates.into_iter().map(std::path::PathBuf::from).find(|p| p.exists())
}

fn code_and_text(out: &Output) -> (i32, String) {
    (out.status.code().expect("exit code"), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a failed check printed on stderr, for an assertion's message: its exit code 1 is also
/// that of a command that failed.
fn stderr_of(out: &Output) -> String {
    format!("\n--- stderr ---\n{}", String::from_utf8_lossy(&out.stderr))
}

/// `status --check` for monitors: one line per pipeline not ok, exit 0 / 1 / 2 / 3.
#[test]
fn status_check_prints_what_is_not_ok_and_exits_with_the_worst_severity() {
    let lake = Lake::new();
    rt().block_on(async {
        let config = with_slo(simple_config(&["a", "b"], &[("p", &["a"]), ("q", &["b"])]), "1h", "6h");
        let (mut a, _b) = two_pipelines_run_once(&lake, &config).await;
        a.insert(&[Some(2)]).await;
    });
    let config = lake.path("deltalink.toml");

    let (code, text) = code_and_text(&check(&config, None));
    assert_eq!((code, text.trim()), (0, "OK: 2 pipelines ok"));

    match libfaketime() {
        Some(_) => {
            let out = check(&config, Some("+2h"));
            let (code, text) = code_and_text(&out);
            assert_eq!(code, 1, "{text}{}", stderr_of(&out));
            assert!(text.starts_with("WARNING p: lagging — `a`: oldest unread commit is 2h"), "{text}{}", stderr_of(&out));
            assert_eq!(text.lines().count(), 1, "q is current, so it is not listed: {text}");
            let out = check(&config, Some("+7h"));
            let (code, text) = code_and_text(&out);
            assert_eq!(code, 2, "{text}{}", stderr_of(&out));
            assert!(text.starts_with("CRITICAL p: stalled"), "{text}{}", stderr_of(&out));
        }
        // Installed but not found is a gap in `libfaketime`'s list, not a reason to skip.
        None if Command::new("faketime").arg("--version").output().is_ok() => {
            panic!("faketime is installed but libfaketime.so.1 is not at any path `libfaketime()` knows: add its directory there")
        }
        None => eprintln!("SKIPPED: the lagging and stalled exit codes need libfaketime (package faketime; .ci/run installs it)"),
    }

    std::fs::rename(lake.path("b"), lake.path("b-moved")).expect("move b away");
    let (code, text) = code_and_text(&check(&config, None));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("CRITICAL q: failing — cannot read upstream `b`"), "{text}");

    std::fs::write(&config, "[tracker]\nuri = 42\n").expect("break the config");
    let (code, text) = code_and_text(&check(&config, None));
    assert_eq!(code, 3, "{text}");
    assert!(text.starts_with("UNKNOWN: "), "{text}");
}

/// `paused = true`: "all" skips the pipeline, its lag is not judged (even past max_lag), an
/// explicit run still runs it, and keys about to be lost still make it `at_risk`.
#[test]
fn a_paused_pipeline_is_skipped_by_all_and_only_retention_can_raise_it() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await;
        let config = with_slo(simple_config(&["a"], &[("p", &["a"]), ("q", &["a"])]), "1h", "6h")
            .replace("[pipelines.q]\n", "[pipelines.q]\npaused = true\n");
        let engine = lake.engine(&config);
        let ran: Vec<String> = engine.run_many(&[], &RunOptions::default()).await.into_iter().map(|(name, _)| name).collect();
        assert_eq!(ran, vec!["p".to_string()], "all means the pipelines not paused");
        engine.run("q", &RunOptions::default()).await.expect("an explicit run of a paused pipeline runs");
        a.insert(&[Some(2)]).await;

        let st = status_at(&engine, now_ms() + 7 * HOUR_MS).await.expect("status");
        assert_eq!(verdict(&st, "p").0, HealthState::Stalled);
        let (state, reason) = verdict(&st, "q");
        assert_eq!(state, HealthState::Paused, "{reason}");
        assert!(reason.contains("pipelines.q.paused = true") && reason.contains("remove the line to resume"), "{reason}");
        assert_eq!(verdict(&status_at(&engine, now_ms() + 7 * DAY_MS).await.expect("status"), "q").0, HealthState::AtRisk);
    });
}

/// A pipeline that never ran with `start = "earliest"` will read the whole history: its lag is
/// the age of commit 0, and that history falling out of retention puts it at risk; with
/// `start = "latest"` nothing old is read, so nothing is judged.
#[test]
fn a_pipeline_that_never_ran_is_judged_on_the_history_its_first_run_reads() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await;
        let config = with_slo(simple_config(&["a"], &[("p", &["a"]), ("q", &["a"])]), "1h", "6h")
            .replace("[pipelines.q]\n", "[pipelines.q]\nstart = \"latest\"\n");
        let engine = lake.engine(&config);
        let now = now_ms();
        let (state, reason) = verdict(&status_at(&engine, now).await.expect("status"), "p");
        assert_eq!(state, HealthState::Ok, "{reason}");
        assert!(reason.contains("not run yet (oldest commit"), "{reason}");
        let st = status_at(&engine, now + 7 * HOUR_MS).await.expect("status");
        assert_eq!(verdict(&st, "p").0, HealthState::Stalled);
        assert_eq!(verdict(&st, "q").0, HealthState::Ok, "start = latest reads no history");
        let (state, reason) = verdict(&status_at(&engine, now + 7 * DAY_MS).await.expect("status"), "p");
        assert_eq!(state, HealthState::AtRisk, "{reason}");
        assert!(reason.contains("from version 0"), "{reason}");
    });
}

/// Status probes an upstream's log instead of loading a snapshot: the table properties come
/// from the newest metadata wherever it is — a commit after the last probe, a commit after a
/// checkpoint, or the checkpoint itself — cold or moved forward from a cached probe.
#[test]
fn status_probes_find_the_newest_properties_in_commits_and_checkpoints() {
    use deltalink::store::lake::CommitCache;
    use deltalink::store::probe::ProbeCache;
    let rt = rt();
    let lake = Lake::new();
    rt.block_on(async {
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await;
        a.insert(&[Some(2)]).await;
        deltalake::checkpoints::create_checkpoint(&a.table, None).await.expect("checkpoint at 2");
        let (uri, storage, commits) = (url_of(&lake.path("a")), HashMap::new(), CommitCache::default());
        let cached = ProbeCache::default();
        // Cold, checkpoint at the latest version: the properties come from the checkpoint.
        let p = cached.probe("a", &uri, &storage, &commits).await.expect("probe");
        assert_eq!((p.latest, p.cdf_enabled(), p.last_operation.as_deref()), (2, true, Some("WRITE")));
        assert_eq!(p.retention().log, std::time::Duration::from_secs(30 * 86_400), "Delta's default");
        // A property set after the checkpoint: seen by the cached probe moving forward and by a
        // cold one.
        set_properties(&mut a, &[("delta.logRetentionDuration", "interval 2 days"), ("delta.enableChangeDataFeed", "false")]).await;
        a.insert(&[Some(3)]).await;
        for (what, probes) in [("moved forward", &cached), ("cold", &ProbeCache::default())] {
            let p = probes.probe("a", &uri, &storage, &commits).await.expect("probe");
            assert_eq!((p.latest, p.cdf_enabled()), (4, false), "{what}");
            assert_eq!(p.retention().log, std::time::Duration::from_secs(2 * 86_400), "{what}");
        }
        deltalake::checkpoints::create_checkpoint(&a.table, None).await.expect("checkpoint at 4");
        let p = ProbeCache::default().probe("a", &uri, &storage, &commits).await.expect("probe");
        assert_eq!((p.cdf_enabled(), p.retention().log), (false, std::time::Duration::from_secs(2 * 86_400)), "from the checkpoint");
        let missing = ProbeCache::default().probe("b", &url_of(&lake.path("b")), &storage, &commits).await.err().expect("missing");
        assert!(format!("{missing}").contains("upstream `b`"), "{missing}");
    });
}
