//! Metrics as a monitoring stack sees them: a real Prometheus server (Debian's `prometheus`,
//! installed by .ci/run) scrapes `watch --metrics-addr` on loopback and its HTTP API returns the
//! lag series with the right labels; `promtool check metrics` accepts `deltalink metrics`;
//! `/healthz` and `/readyz` answer as probes expect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// Kills the child when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A lake where `p` (over `a`) is watched and `q` (over `b`) is one commit behind.
fn lake_with_a_lagging_pipeline() -> Lake {
    let lake = Lake::new();
    rt().block_on(async {
        let (_a, mut b) = two_pipelines_run_once(&lake, &simple_config(&["a", "b"], &[("p", &["a"]), ("q", &["b"])])).await;
        b.insert(&[Some(2)]).await;
    });
    lake
}

/// Whether `tool` (from Debian's prometheus package) is installed; where CI requires it
/// (DELTALINK_REQUIRE_PROMETHEUS), its absence fails instead of skipping.
fn have(tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("DELTALINK_REQUIRE_PROMETHEUS").is_err(),
        "DELTALINK_REQUIRE_PROMETHEUS is set but `{tool}` is not installed (apt-get install prometheus)"
    );
    eprintln!("SKIPPED: no `{tool}` (Debian's prometheus package; .ci/run installs it)");
    false
}

/// GET `path` from `addr`: status code and body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `deltalink watch p --metrics-addr 127.0.0.1:0`, and the address it reports.
fn start_watch(config: &Path) -> (Reaped, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deltalink"))
        .arg("--config")
        .arg(config)
        .args(["watch", "p", "--interval", "1s", "--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watch");
    let stderr = child.stderr.take().expect("stderr");
    let watch = Reaped(child);
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("watch ended before serving metrics").expect("stderr line");
        if let Some(url) = line.strip_prefix("metrics on http://") {
            break url.trim_end_matches("/metrics").to_string();
        }
    };
    // Keep draining stderr so the watcher never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (watch, addr)
}

/// Until `f` answers or `limit` passes (waiting on another process, checked every 200 ms).
fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prometheus_scrapes_watch_and_its_api_returns_the_lag_series() {
    if !have("prometheus") {
        return;
    }
    let lake = lake_with_a_lagging_pipeline();
    let (_watch, addr) = start_watch(&lake.path("deltalink.toml"));

    let (code, body) = http_get(&addr, "/healthz").expect("healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = http_get(&addr, "/readyz").expect("readyz");
    assert_eq!(code, 200, "{body}");
    assert_eq!(http_get(&addr, "/nope").expect("404").0, 404);
    let (code, body) = http_get(&addr, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(body.contains("deltalink_lag_versions{pipeline=\"q\",upstream=\"b\"} 1"), "{body}");
    assert!(body.contains("deltalink_health{pipeline=\"q\",state=\"ok\"} 1"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF: {body}");

    let prom_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: deltalink\n    static_configs:\n      - targets: ['{addr}']\n"),
    )
    .expect("prometheus config");
    let _prometheus = Reaped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let api = format!("127.0.0.1:{prom_port}");
    let series = eventually(Duration::from_secs(60), || {
        let (code, body) = http_get(&api, "/api/v1/query?query=deltalink_lag_versions").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?.clone();
        (code == 200 && result.len() == 2).then_some(result)
    })
    .expect("Prometheus scraped both lag series within a minute");
    let mut seen: Vec<(String, String, String, String)> = series
        .iter()
        .map(|s| {
            let m = &s["metric"];
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (text("job"), text("pipeline"), text("upstream"), s["value"][1].as_str().unwrap_or_default().to_string())
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("deltalink".into(), "p".into(), "a".into(), "0".into()),
            ("deltalink".into(), "q".into(), "b".into(), "1".into()),
        ]
    );
    let (_, body) = http_get(&api, "/api/v1/query?query=up").expect("up");
    assert!(body.contains("\"value\":[") && body.contains(",\"1\"]"), "the target is up: {body}");
}

#[test]
fn promtool_accepts_the_metrics_command_output() {
    if !have("promtool") {
        return;
    }
    let lake = lake_with_a_lagging_pipeline();
    let out = Command::new(env!("CARGO_BIN_EXE_deltalink"))
        .arg("--config")
        .arg(lake.path("deltalink.toml"))
        .arg("metrics")
        .output()
        .expect("deltalink metrics");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    for name in ["deltalink_lag_versions", "deltalink_lag_seconds", "deltalink_retention_seconds_left", "deltalink_health"] {
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}: {text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("pipe metrics");
    let checked = promtool.wait_with_output().expect("promtool output");
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// The README's example alert rules are valid Prometheus rules (copied by on-call as they are).
#[test]
fn the_readme_alert_rules_pass_promtool() {
    if !have("promtool") {
        return;
    }
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let start = readme.find("# rules.yml").expect("the README has example rules");
    let rules = &readme[start..start + readme[start..].find("```").expect("end of the rules block")];
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).expect("write rules");
    let out = Command::new("promtool").args(["check", "rules"]).arg(&file).output().expect("promtool check rules");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("SUCCESS: 2 rules found"), "{text}{}", String::from_utf8_lossy(&out.stderr));
}

/// `/readyz` is what a Kubernetes readiness probe asks: 503 with the reason while the tracker
/// cannot be read (here: its newest commit corrupted), 200 again once it can, and `/healthz`
/// stays 200 throughout (the process is alive; restarting it would not help).
#[test]
fn readyz_is_503_while_the_tracker_cannot_be_read_and_200_again_after() {
    let lake = lake_with_a_lagging_pipeline();
    let (_watch, addr) = start_watch(&lake.path("deltalink.toml"));
    assert_eq!(http_get(&addr, "/readyz").expect("readyz").0, 200);

    let log = lake.path("_deltalink/tracker/_delta_log");
    let newest = std::fs::read_dir(&log)
        .expect("tracker log")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .expect("a tracker commit");
    let commit = std::fs::read(&newest).expect("read the newest tracker commit");
    std::fs::write(&newest, b"{ not json").expect("corrupt it");
    let (code, body) = http_get(&addr, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: the tracker cannot be read: "), "{body}");
    assert_eq!(http_get(&addr, "/healthz").expect("healthz"), (200, "ok\n".to_string()));

    std::fs::write(&newest, commit).expect("restore it");
    assert_eq!(http_get(&addr, "/readyz").expect("readyz").0, 200);
}
