//! The chaos test's short mode (`benches/chaos.py --short`): three `watch` processes, an
//! operator resetting and replaying, a writer committing inserts, updates, key moves and
//! deletes, while watchers are killed, frozen past their lease and run with a skewed clock —
//! on a local lake, then on S3 (moto) behind a fault proxy. The script's own oracle (Python
//! deltalake/polars, no deltalink code) checks the end state; any violation fails this test
//! with the script's report. Needs DELTALINK_PYTHON (.ci/run sets it); without it SKIPPED.
//! The long mode (≥ 30 min) is run by hand: see the README's *Chaos* section.

use std::process::Command;

fn python_with(modules: &str) -> Option<String> {
    let py = std::env::var("DELTALINK_PYTHON").ok()?;
    let ok = Command::new(&py).args(["-c", &format!("import {modules}")]).status().ok()?.success();
    ok.then_some(py)
}

/// Run the short chaos mode on `store` with lease TTL `ttl` seconds; panic with the script's
/// report unless it passed.
fn chaos_short(py: &str, store: &str, ttl: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/chaos.py");
    let out = Command::new(py)
        .args([script, "--bin", env!("CARGO_BIN_EXE_deltalink"), "--short", "--ttl", ttl, "--store", store])
        .output()
        .expect("start benches/chaos.py");
    let report = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    // The figures are the point of the run: show them (cargo test prints them with --nocapture).
    println!("{report}");
    assert!(
        out.status.success(),
        "chaos short mode on {store} failed ({}):\n{report}\n{errors}",
        out.status
    );
    assert!(report.contains("violations          0"), "the report must state 0 violations:\n{report}");
    // Debian's `faketime` package brings the wrapper and the library the script preloads.
    if std::path::Path::new("/usr/bin/faketime").exists() {
        assert!(report.contains("clock offset        on"), "faketime is installed, so one watcher must run with a skewed clock:\n{report}");
    }
}

#[test]
fn chaos_short_mode_on_a_local_lake_and_on_s3_behind_a_fault_proxy_has_no_violations() {
    let Some(py) = python_with("deltalake, polars, pyarrow") else {
        eprintln!("SKIPPED: set DELTALINK_PYTHON to a python with deltalake + polars + pyarrow (.ci/run does)");
        return;
    };
    chaos_short(&py, "local", "2");
    let required = std::env::var("DELTALINK_REQUIRE_S3").is_ok_and(|v| v == "1");
    if !cfg!(feature = "s3") {
        assert!(!required, "DELTALINK_REQUIRE_S3=1 but this build lacks the `s3` feature (--features all-stores)");
        eprintln!("SKIPPED (S3 part): build with --features s3 or all-stores");
    } else if python_with("moto").is_some() {
        // On S3 the TTL is 4 s: moto (Python) behind the fault proxy, sharing 2 cores with the
        // rest of the suite, confirms a heartbeat in over 2 s often enough that with a 2 s TTL
        // holders lost their leases faster than they could finish a run (seen once: no
        // progress for the whole 60 s quiesce, no violation). The lease's own limit is 2 s.
        chaos_short(&py, "s3", "4");
    } else {
        assert!(!required, "DELTALINK_REQUIRE_S3=1 but moto is not installed in DELTALINK_PYTHON");
        eprintln!("SKIPPED (S3 part): moto[server] is not installed in DELTALINK_PYTHON (.ci/run installs it)");
    }
}
