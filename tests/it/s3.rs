//! Real object storage: an S3 API server (moto, from the test venv) on loopback, with
//! credentials enforced. Runs, status, resets and concurrent commits against s3:// tables, and
//! the storage rows of the bad-input catalogue (wrong credentials, unreachable endpoint,
//! missing bucket). `.ci/run` installs moto and sets DELTALINK_REQUIRE_S3=1, so there a missing
//! server is a failure; elsewhere the tests say SKIPPED.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use deltalink::ops::reset::{execute_reset, plan_reset, ResetTarget};
use deltalink::engine::{Outcome, RunOptions};
use deltalink::Engine;

use crate::common::*;

const BUCKET: &str = "lake";
const SECRET: &str = "test";

/// The moto server child; dropping it closes its stdin, which stops it.
struct S3Server {
    child: Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn start_server() -> Option<S3Server> {
    let required = std::env::var("DELTALINK_REQUIRE_S3").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "DELTALINK_REQUIRE_S3=1 but the S3 server cannot start: {why}");
        eprintln!("SKIPPED: {why} (.ci/run installs moto[server] in a venv and sets DELTALINK_PYTHON)");
        None
    };
    let Ok(py) = std::env::var("DELTALINK_PYTHON") else { return skip("DELTALINK_PYTHON is not set".into()) };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_server.py");
    let mut child = match Command::new(&py)
        .args([script, BUCKET])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return skip(format!("cannot start {py}: {e}")),
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    match line.trim().strip_prefix("READY ") {
        Some(endpoint) => Some(S3Server { endpoint: endpoint.to_string(), child }),
        None => {
            let _ = child.kill();
            skip(format!("tests/s3_server.py did not start (is moto[server] installed?), said {line:?}"))
        }
    }
}

fn storage(endpoint: &str, secret: &str) -> HashMap<String, String> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("max_retries", "1"),
        ("retry_timeout", "5s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Pipelines p and q over upstream `a`, everything in the bucket; the secret comes from the
/// environment through `${…}` so it is never in the file.
fn s3_config(endpoint: &str, secret_var: &str) -> String {
    let mut s = format!(
        "[storage]\nAWS_ENDPOINT_URL = \"{endpoint}\"\nAWS_ALLOW_HTTP = \"true\"\nAWS_REGION = \"us-east-1\"\n\
         AWS_ACCESS_KEY_ID = \"test\"\nAWS_SECRET_ACCESS_KEY = \"${{{secret_var}}}\"\nmax_retries = \"1\"\nretry_timeout = \"5s\"\n\
         [tracker]\nuri = \"s3://{BUCKET}/_deltalink/tracker\"\n[upstreams.a]\nuri = \"s3://{BUCKET}/a\"\n"
    );
    for p in ["p", "q"] {
        s += &format!(
            "[pipelines.{p}]\nlink_table = \"s3://{BUCKET}/_deltalink/links/{p}\"\nkey = [\"k\"]\n\
             [[pipelines.{p}.sources]]\nupstream = \"a\"\nkeys = [\"k\"]\n"
        );
    }
    s
}

async fn processed(engine: &Engine, pipeline: &str) -> Option<i64> {
    let tracker = engine.tracker().await.expect("tracker");
    tracker.rows(Some(pipeline)).await.expect("rows").first().and_then(|r| r.processed())
}

#[test]
fn runs_status_resets_and_concurrent_commits_on_s3() {
    let Some(server) = start_server() else { return };
    rt().block_on(async {
        let lake = Lake::new();
        let opts = storage(&server.endpoint, SECRET);
        let url = url::Url::parse(&format!("s3://{BUCKET}/a")).expect("url");
        let mut a = ModelTable::create_at(url, &opts, true).await;
        let mut rng = seeded(31);
        let mut expected = Affected::new();
        for _ in 0..6 {
            expected.extend(a.random_commit(&mut rng, 40).await);
        }
        let engine = lake.engine_with_env(&s3_config(&server.endpoint, "DELTALINK_TEST_S3_SECRET"), &[("DELTALINK_TEST_S3_SECRET", SECRET)]);

        // Two pipelines run concurrently: their tracker commits race on S3's conditional put.
        let results = engine.run_many(&[], &RunOptions::default()).await;
        for (name, r) in &results {
            let r = r.as_ref().unwrap_or_else(|e| panic!("run {name}: {e:#}"));
            assert_eq!(r.outcome, Outcome::Written, "{name}");
        }
        for p in ["p", "q"] {
            let got: Affected = link_keys(&engine, p).await.into_keys().collect();
            assert_eq!(got, expected, "pipeline {p} matches the oracle");
            assert_eq!(processed(&engine, p).await, Some(a.version() as i64));
        }

        // Two engines racing on one pipeline: the lease (a create-if-absent put) lets one write.
        let more = a.insert(&[Some(1000), Some(1001)]).await;
        let other = lake.engine_with_env(&s3_config(&server.endpoint, "DELTALINK_TEST_S3_SECRET"), &[("DELTALINK_TEST_S3_SECRET", SECRET)]);
        let run_opts = RunOptions::default();
        let (r1, r2) = tokio::join!(engine.run("p", &run_opts), other.run("p", &run_opts));
        let written = [&r1, &r2].iter().filter(|r| matches!(r, Ok(rep) if rep.outcome == Outcome::Written)).count();
        assert_eq!(written, 1, "exactly one run writes: {r1:?} / {r2:?}");
        let p_keys: BTreeMap<i64, i64> = link_keys(&engine, "p").await;
        assert!(more.iter().all(|k| p_keys.get(k) == Some(&2)), "new keys written once, by run 2: {p_keys:?}");

        // Status over S3.
        let st = deltalink::ops::status::status(&engine).await.expect("status");
        assert_eq!(st.upstreams[0].latest_version, Some(a.version()));
        assert!(st.upstreams[0].cdf_enabled);
        let p = st.pipelines.iter().find(|p| p.name == "p").expect("p");
        assert_eq!(p.upstreams[0].lag_versions, Some(0));
        let q = st.pipelines.iter().find(|p| p.name == "q").expect("q");
        assert_eq!(q.upstreams[0].lag_versions, Some(1));

        // Reset q to the earliest and re-run: same keys, tracker audited.
        let plan = plan_reset(&engine, "q", &[], ResetTarget::Earliest).await.expect("plan");
        execute_reset(&engine, &plan, "s3 test").await.expect("execute");
        assert_eq!(processed(&engine, "q").await, Some(-1));
        engine.run("q", &RunOptions::default()).await.expect("re-run q");
        let all: Affected = expected.union(&more).copied().collect();
        assert_eq!(link_keys(&engine, "q").await.into_keys().collect::<Affected>(), all);
        let history = engine.tracker().await.expect("tracker").history(20).await.expect("history");
        assert!(history.iter().any(|h| h.reason.as_deref() == Some("s3 test")), "{history:?}");
    });
}

#[test]
fn wrong_credentials_missing_bucket_and_unreachable_endpoint_are_named() {
    let Some(server) = start_server() else { return };
    rt().block_on(async {
        let lake = Lake::new();
        let opts = storage(&server.endpoint, SECRET);
        let url = url::Url::parse(&format!("s3://{BUCKET}/a")).expect("url");
        let mut a = ModelTable::create_at(url, &opts, true).await;
        a.insert(&[Some(1)]).await;
        let good = lake.engine_with_env(&s3_config(&server.endpoint, "DELTALINK_TEST_S3_GOOD"), &[("DELTALINK_TEST_S3_GOOD", SECRET)]);
        let tracker_absent = || async { good.tracker().await.expect("tracker").table().is_none() };
        let engine = lake.engine_with_env(&s3_config(&server.endpoint, "DELTALINK_TEST_S3_WRONG"), &[("DELTALINK_TEST_S3_WRONG", "not-the-secret-xyz")]);
        let e = format!("{:#}", engine.run("p", &RunOptions::default()).await.expect_err("wrong secret"));
        // The first request of a run takes the pipeline's lease, under the tracker location.
        assert!(e.contains("s3://lake/_deltalink/tracker") && e.contains("refused access (SignatureDoesNotMatch)"), "{e}");
        assert!(e.contains("fix: check the credentials"), "{e}");
        assert!(!e.contains("not-the-secret-xyz"), "the secret is never printed: {e}");
        assert!(tracker_absent().await, "nothing written");

        let cfg = s3_config(&server.endpoint, "DELTALINK_TEST_S3_GOOD").replace("s3://lake/a", "s3://no-such-bucket/a");
        let e = format!("{:#}", lake.engine_with_env(&cfg, &[("DELTALINK_TEST_S3_GOOD", SECRET)]).run("p", &RunOptions::default()).await.expect_err("no bucket"));
        assert!(e.contains("upstream `a`") && e.contains("bucket or container does not exist"), "{e}");

        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let cfg = s3_config(&format!("http://127.0.0.1:{port}"), "DELTALINK_TEST_S3_GOOD");
        let e = format!("{:#}", lake.engine_with_env(&cfg, &[("DELTALINK_TEST_S3_GOOD", SECRET)]).run("p", &RunOptions::default()).await.expect_err("unreachable"));
        assert!(e.contains("s3://lake/_deltalink/tracker") && e.contains("cannot be reached"), "{e}");
        assert!(e.contains("fix: check the endpoint"), "{e}");
        assert!(tracker_absent().await, "nothing written");
    });
}
