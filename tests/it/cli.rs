//! The command line as scripts and operators use it: the `deltalink` binary on a demo lake,
//! its JSON contracts, two processes racing, and the tracker commands' dry runs and refusals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{deltalink_as, log_commits, rt, simple_config, succeeded, Lake, ModelTable};

fn deltalink(config: &Path, args: &[&str]) -> Output {
    deltalink_as("cli-tester", config, args)
}

fn json(out: &Output, what: &str) -> Value {
    serde_json::from_str(&succeeded(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"))
}

fn demo_lake(dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_deltalink"))
        .args(["demo", dir.to_str().expect("utf-8"), "--no-console", "--commits", "20"])
        .output()
        .expect("spawn deltalink demo");
    PathBuf::from(succeeded(&out, "demo").trim())
}

#[test]
fn the_cli_on_the_demo_lake_status_runs_races_resets_and_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo_lake(dir.path());
    let tracker = dir.path().join("_deltalink/tracker");

    // status --json: the documented shape, every pipeline behind every upstream before a run.
    let status = json(&deltalink(&config, &["status", "--json"]), "status --json");
    let upstreams = status["upstreams"].as_array().expect("upstreams");
    assert_eq!(upstreams.len(), 4);
    for u in upstreams {
        for field in ["name", "uri", "latest_version", "cdf_enabled", "last_commit_ts", "last_operation"] {
            assert!(!u[field].is_null(), "upstream field `{field}`: {u}");
        }
    }
    let pipelines = status["pipelines"].as_array().expect("pipelines");
    let names: Vec<&str> = pipelines.iter().map(|p| p["name"].as_str().expect("name")).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    for p in pipelines {
        assert!(p["link_table"].is_string() && p.get("link_rows").is_some(), "{p}");
        for u in p["upstreams"].as_array().expect("pipeline upstreams") {
            assert!(u["processed_version"].is_null() && u["lag_versions"].as_i64() > Some(0), "never run yet: {u}");
        }
    }

    // --count-rows: the change rows each pipeline has not read, per upstream, from the feed.
    let counted = json(&deltalink(&config, &["status", "--json", "--count-rows"]), "status --count-rows");
    let behind: Vec<u64> = counted["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .flat_map(|p| p["upstreams"].as_array().expect("upstreams").iter().map(|u| u["pending_change_rows"].as_u64().expect("counted")))
        .collect();
    assert!(!behind.is_empty() && behind.iter().all(|n| *n > 0), "every upstream has unread change rows: {behind:?}");

    // preview --json writes nothing and names provenance.
    let before = log_commits(&tracker);
    let preview = json(&deltalink(&config, &["preview", "institution_rollup", "--json", "--limit", "3"]), "preview");
    assert!(preview["distinct_keys"].as_u64() > Some(0), "{preview}");
    assert_eq!(log_commits(&tracker), before, "preview writes nothing");

    // Two processes run everything at once: every pipeline is written exactly once; the
    // loser of a pipeline's lease says who holds it.
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_deltalink"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--all", "--json"])
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn run")
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [first.wait_with_output().expect("first run"), second.wait_with_output().expect("second run")];
    let mut written: Vec<String> = Vec::new();
    for out in &outputs {
        let reports: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
        for r in reports.as_array().expect("run reports") {
            if r["outcome"] == "written" {
                written.push(r["pipeline"].as_str().expect("pipeline").to_string());
            }
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines().filter(|l| l.contains("FAILED")) {
            assert!(stderr.contains("is busy: leased by"), "a failed pipeline lost the lease race, nothing else: {line}\n{stderr}");
        }
    }
    written.sort();
    // A pipeline whose lease the other process held is caught up by the rerun below instead.
    assert!(written.windows(2).all(|w| w[0] != w[1]), "a pipeline written twice: {written:?}");
    succeeded(&deltalink(&config, &["run", "--all"]), "catch-up run");
    let status = json(&deltalink(&config, &["status", "--json"]), "status after runs");
    let caught_up = json(&deltalink(&config, &["status", "--json", "--count-rows"]), "status --count-rows after runs");
    for p in caught_up["pipelines"].as_array().expect("pipelines") {
        for u in p["upstreams"].as_array().expect("upstreams") {
            assert_eq!(u["pending_change_rows"].as_u64(), Some(0), "nothing left to read: {p}");
        }
    }
    for p in status["pipelines"].as_array().expect("pipelines") {
        assert!(p["link_rows"].as_u64() > Some(0), "{p}");
        for u in p["upstreams"].as_array().expect("upstreams") {
            assert_eq!((u["lag_versions"].as_i64(), &u["processed_version"]), (Some(0), &u["latest_version"]), "caught up: {p}");
        }
    }

    // tracker reset: a dry run prints the impact and writes nothing; --read-only refuses to
    // execute; --execute records the reason and the operator.
    let before = log_commits(&tracker);
    let dry = deltalink(&config, &["tracker", "reset", "enriched_publications", "--shift-by", "-2"]);
    let (impact, note) = (succeeded(&dry, "reset dry run"), String::from_utf8_lossy(&dry.stderr));
    assert!(impact.contains("re-reads 2 commits") && note.contains("DRY RUN"), "{impact}\n{note}");
    let ro = deltalink(&config, &["--read-only", "tracker", "reset", "enriched_publications", "--shift-by", "-2", "--execute", "--reason", "x"]);
    assert!(!ro.status.success() && String::from_utf8_lossy(&ro.stderr).contains("--read-only"), "{ro:?}");
    assert_eq!(log_commits(&tracker), before, "dry run and read-only refusal write nothing");
    succeeded(&deltalink(&config, &["tracker", "reset", "enriched_publications", "--shift-by", "-2", "--execute", "--reason", "cli test"]), "reset");
    let shown = json(&deltalink(&config, &["tracker", "show", "enriched_publications", "--json"]), "tracker show");
    let last = &shown["history"][0];
    assert_eq!((last["action"].as_str(), last["reason"].as_str(), last["operator"].as_str()), (Some("reset"), Some("cli test"), Some("cli-tester")), "{last}");
    let status = json(&deltalink(&config, &["status", "--json"]), "status after reset");
    let enriched = status["pipelines"].as_array().expect("pipelines").iter().find(|p| p["name"] == "enriched_publications").expect("pipeline");
    assert!(enriched["upstreams"].as_array().expect("upstreams").iter().all(|u| u["lag_versions"].as_i64() == Some(2)), "{enriched}");

    // replay: a dry run by default.
    let links = dir.path().join("_deltalink/links/enriched_publications");
    let before = log_commits(&links);
    let replay = deltalink(&config, &["replay", "enriched_publications", "--from-version", "0"]);
    let said = format!("{}{}", succeeded(&replay, "replay dry run"), String::from_utf8_lossy(&replay.stderr));
    assert!(said.contains("DRY RUN"), "{said}");
    assert_eq!(log_commits(&links), before, "a replay dry run writes nothing");

    // The demo's downstream consumer: consume (the JSON contract), ack, the words for people.
    let batch = json(&deltalink(&config, &["consume", "enriched_publications", "--consumer", "search_index", "--json"]), "consume");
    for field in ["link_version", "after_run_id", "through_run_id", "keys", "link_table", "key_columns"] {
        assert!(!batch[field].is_null(), "consume field `{field}`: {batch}");
    }
    assert!(batch["keys"].as_u64().unwrap_or(0) > 0 && batch["reads"]["spark_sql"].as_str().is_some_and(|s| s.contains("VERSION AS OF")), "{batch}");
    let through = batch["through_run_id"].to_string();
    let acked = succeeded(&deltalink(&config, &["ack", "enriched_publications", "--consumer", "search_index", "--through-run", &through]), "ack");
    assert!(acked.contains(&format!("acked through run {through}")), "{acked}");
    let shown = succeeded(&deltalink(&config, &["status"]), "status");
    assert!(shown.contains("consumer search_index") && shown.contains("caught up"), "{shown}");
    let nothing = succeeded(&deltalink(&config, &["consume", "enriched_publications", "--consumer", "search_index"]), "consume again");
    assert!(nothing.contains("nothing new"), "{nothing}");
    let typo = deltalink(&config, &["ack", "enriched_publications", "--consumer", "serch_index", "--through-run", "1"]);
    assert!(String::from_utf8_lossy(&typo.stderr).contains("declared: search_index"), "{typo:?}");
    let upkeep = succeeded(&deltalink(&config, &["maintain", "enriched_publications"]), "maintain dry run");
    assert!(upkeep.contains("DRY RUN") && upkeep.contains("link table of enriched_publications"), "{upkeep}");
}

/// `deltalink` with stderr captured (a pipe, as under cron, systemd, CI or `2>log`), no
/// `DELTALINK_LOG` or `NO_COLOR` from the test's own environment unless `no_color` sets one.
fn deltalink_piped(config: &Path, args: &[&str], no_color: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deltalink"));
    cmd.arg("--config").arg(config).args(args).env("RUST_BACKTRACE", "0").env_remove("DELTALINK_LOG").env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    cmd.output().expect("spawn deltalink")
}

fn assert_plain(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("\x1b["), "{what}: ANSI escape codes on a stderr that is not a terminal:\n{stderr:?}");
    stderr
}

/// Warnings (tracing) and error reports (color-eyre) written to a stderr that is not a terminal
/// carry no ANSI colour codes, whether or not NO_COLOR is set.
#[test]
fn stderr_that_is_not_a_terminal_gets_no_colour_codes() {
    let lake = Lake::new();
    rt().block_on(async {
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1), None, Some(2)]).await;
    });
    // Two pipelines over one upstream: each run has the NULL-key row to warn about.
    lake.config(&simple_config(&["a"], &[("p", &["a"]), ("q", &["a"])]));
    let config = lake.path("deltalink.toml");
    let missing = lake.path("no-such-config.toml");

    for (no_color, pipeline) in [(None, "p"), (Some("1"), "q")] {
        let when = format!("NO_COLOR={no_color:?}");

        // A warning: change rows with a NULL key are skipped, and said so on stderr.
        let run = deltalink_piped(&config, &["run", pipeline], no_color);
        assert!(run.status.success(), "run {pipeline} ({when}) failed:\n{}", String::from_utf8_lossy(&run.stderr));
        let warning = assert_plain(&run, &format!("run {pipeline} ({when})"));
        assert!(warning.contains("WARN") && warning.contains("NULL key"), "run {pipeline} ({when}) warns of the NULL key:\n{warning}");

        // An error report: the config file does not exist.
        let failed = deltalink_piped(&missing, &["status"], no_color);
        assert!(!failed.status.success(), "status with a missing config ({when}) must fail");
        let error = assert_plain(&failed, &format!("missing config ({when})"));
        assert!(error.contains("cannot read config file") && error.contains("no-such-config.toml"), "{when}:\n{error}");
    }
}
