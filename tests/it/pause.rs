//! An operator's pause, from the binary as on call uses it: `deltalink pause` records who and
//! why in the tracker; `run --all` and `watch` skip the pipeline, `run NAME` refuses it with the
//! fix, `status --json` and `status --check` say `paused`; `deltalink resume` lets it catch up.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use deltalink::engine::RunOptions;
use deltalink::ops::watch::Watcher;

use crate::common::*;

fn deltalink(config: &Path, args: &[&str]) -> Output {
    deltalink_as("oncall-amy", config, args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn status_json(config: &Path) -> Value {
    let out = deltalink(config, &["status", "--json"]);
    serde_json::from_str(&succeeded(&out, "status --json")).expect("status --json is JSON")
}

fn pipeline<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pipelines"].as_array().expect("pipelines").iter().find(|p| p["name"] == name).expect("pipeline in status")
}

#[test]
fn a_paused_pipeline_is_skipped_and_refused_until_resumed_and_status_says_who_and_why() {
    let lake = Lake::new();
    let toml = simple_config(&["a"], &[("p", &["a"]), ("q", &["a"])]);
    let mut a = rt().block_on(async {
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await;
        a
    });
    let config = lake.path("deltalink.toml");
    std::fs::write(&config, &toml).expect("write config");
    succeeded(&deltalink(&config, &["run", "--all"]), "first run");

    let paused = succeeded(&deltalink(&config, &["pause", "q", "--reason", "upstream a is being rebuilt"]), "pause");
    assert_eq!(paused.trim(), "pipeline q: paused (operator oncall-amy, reason: upstream a is being rebuilt)");
    let commits = log_commits(&lake.path("_deltalink/tracker"));
    let again = succeeded(&deltalink(&config, &["pause", "q", "--reason", "twice"]), "pause again");
    assert!(again.starts_with("pipeline q: already paused by oncall-amy at ") && again.contains(": upstream a is being rebuilt; nothing written"), "{again}");
    assert_eq!(log_commits(&lake.path("_deltalink/tracker")), commits, "pausing a paused pipeline writes nothing");

    rt().block_on(a.insert(&[Some(2)]));
    let ran = succeeded(&deltalink(&config, &["run", "--all", "--json"]), "run --all");
    let ran: Value = serde_json::from_str(&ran).expect("run --json");
    let names: Vec<&str> = ran.as_array().expect("one report per pipeline").iter().filter_map(|r| r["pipeline"].as_str()).collect();
    assert_eq!(names, ["p"], "run --all skips the paused pipeline: {ran}");

    let refused = deltalink(&config, &["run", "q"]);
    assert!(!refused.status.success(), "an explicit run of a paused pipeline is refused");
    let why = stderr(&refused);
    assert!(why.contains("pipeline `q` is paused by oncall-amy at ") && why.contains("fix: deltalink resume q"), "{why}");

    let engine = lake.engine(&toml);
    let (due, _) = rt().block_on(Watcher::new(engine.clone(), vec![], Duration::from_secs(1)).due()).expect("poll");
    assert!(due.is_empty(), "watch does not run a paused pipeline, though it is behind: {due:?}");

    // status --json: the verdict, who paused it, and the retention guard of the unread commit.
    let status = status_json(&config);
    let (p, q) = (pipeline(&status, "p"), pipeline(&status, "q"));
    assert_eq!(p["health"]["state"], "ok", "{p}");
    assert_eq!(p["consumers"], Value::Array(vec![]), "no consumers configured: an empty list, not absent");
    assert!(p["upstreams"][0]["retention_seconds_left"].is_null(), "p is current: nothing can fall out of retention: {p}");
    assert!(p.get("pause").is_none(), "{p}");
    assert_eq!(q["health"]["state"], "paused", "{q}");
    let reason = q["health"]["reason"].as_str().expect("reason");
    assert!(reason.starts_with("paused by oncall-amy at ") && reason.contains("`deltalink resume q` resumes it"), "{reason}");
    assert_eq!((q["pause"]["by"].as_str(), q["pause"]["reason"].as_str()), (Some("oncall-amy"), Some("upstream a is being rebuilt")));
    let left = q["upstreams"][0]["retention_seconds_left"].as_f64().expect("q has an unread commit: time left");
    let week = 7.0 * 24.0 * 3600.0;
    assert!(left > week - 600.0 && left <= week, "Delta's default 7-day deleted-file retention from a fresh commit: {left}");
    assert_eq!(q["upstreams"][0]["lag_versions"], 1);

    let check = deltalink(&config, &["status", "--check"]);
    let listed = stdout(&check);
    assert_eq!(check.status.code(), Some(0), "a pause is the operator's choice, not an alarm: {listed}");
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[0].starts_with("OK q: paused — paused by oncall-amy at ") && lines[0].contains("upstream a is being rebuilt"), "{listed}");
    assert_eq!(lines[1], "OK: 1 pipelines ok, 1 paused");

    let history = rt().block_on(async { engine.tracker().await.expect("tracker").history(10).await.expect("history") });
    let audit = history.iter().find(|h| h.action.as_deref() == Some("pause")).expect("the pause is in the audit log");
    assert_eq!((audit.operator.as_deref(), audit.reason.as_deref()), (Some("oncall-amy"), Some("upstream a is being rebuilt")));
    assert_eq!(history.iter().filter(|h| h.action.as_deref() == Some("pause")).count(), 1, "the second pause wrote nothing");

    let resumed = succeeded(&deltalink(&config, &["resume", "q", "--reason", "rebuilt"]), "resume");
    assert_eq!(resumed.trim(), "pipeline q: resumed (operator oncall-amy, reason: rebuilt)");
    let (due, _) = rt().block_on(Watcher::new(engine.clone(), vec![], Duration::from_secs(1)).due()).expect("poll");
    assert_eq!(due, ["q"], "resumed and behind: the next poll runs it");
    let report = rt().block_on(engine.run("q", &RunOptions::default())).expect("a resumed pipeline runs");
    assert_eq!(report.distinct_keys, 1, "it reads what it missed while paused");
    assert_eq!(pipeline(&status_json(&config), "q")["health"]["state"], "ok");
    assert!(succeeded(&deltalink(&config, &["resume", "q"]), "resume again").contains("not paused; nothing written"));

    let read_only = deltalink(&config, &["--read-only", "pause", "q", "--reason", "x"]);
    assert!(!read_only.status.success() && stderr(&read_only).contains("pause of pipeline `q` is refused: deltalink runs with --read-only"), "{}", stderr(&read_only));
}
