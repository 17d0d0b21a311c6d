//! Real object storage, every store deltalink ships: S3 (moto), Azure (Azurite, from npm) and
//! GCS (tests/gcs_server.py: no emulator on PyPI or npm accepts object_store's writes; see its
//! docstring), each on loopback with credentials enforced. The same cases run on each:
//! create-if-absent puts (eight writers, one wins), two pipelines committing to one tracker at
//! once, two engines racing on one pipeline, status, an audited reset and re-run, and the
//! storage rows of the bad-input catalogue (wrong credentials, missing bucket or container,
//! unreachable endpoint). `.ci/run` installs the servers and sets DELTALINK_REQUIRE_S3,
//! DELTALINK_REQUIRE_AZURE and DELTALINK_REQUIRE_GCS, so there a missing server is a failure;
//! elsewhere the tests say SKIPPED.

// Each store's test exists in the build that has its feature (`all-stores` in CI); a build
// with fewer stores leaves some of the helpers below unused.
#![cfg_attr(not(all(feature = "s3", feature = "azure", feature = "gcs")), allow(dead_code, unused_imports))]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use deltalake::logstore::object_store::{self, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use deltalink::Engine;
use deltalink::engine::{Outcome, RunOptions};
use deltalink::ops::reset::{ResetTarget, execute_reset, plan_reset};

use crate::common::*;

const BUCKET: &str = "lake";
/// Azurite's published development account and key (the same in every install).
const AZURE_ACCOUNT: &str = "devstoreaccount1";
const AZURE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    S3,
    Azure,
    Gcs,
}

impl Kind {
    fn scheme(self) -> &'static str {
        match self {
            Kind::S3 => "s3",
            Kind::Azure => "az",
            Kind::Gcs => "gs",
        }
    }

    fn required(self) -> bool {
        let var = match self {
            Kind::S3 => "DELTALINK_REQUIRE_S3",
            Kind::Azure => "DELTALINK_REQUIRE_AZURE",
            Kind::Gcs => "DELTALINK_REQUIRE_GCS",
        };
        std::env::var(var).is_ok_and(|v| v == "1")
    }
}

/// A store server child; dropping it closes its stdin, which stops it.
struct Server {
    kind: Kind,
    child: Child,
    endpoint: String,
    /// GCS: the folder holding the accepted and the stranger's service-account keys.
    keys: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn start(kind: Kind) -> Option<Server> {
    let skip = |why: String| {
        assert!(!kind.required(), "{kind:?} is required here but its server cannot start: {why}");
        eprintln!("SKIPPED {kind:?}: {why} (.ci/run installs the servers: moto and cryptography in a venv, Azurite from npm)");
        None
    };
    let Ok(py) = std::env::var("DELTALINK_PYTHON") else { return skip("DELTALINK_PYTHON is not set".into()) };
    let keys = tempfile::tempdir().expect("tempdir");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let args: Vec<String> = match kind {
        Kind::S3 => vec![format!("{dir}/s3_server.py"), BUCKET.into()],
        Kind::Azure => vec![format!("{dir}/azurite_server.py"), BUCKET.into()],
        Kind::Gcs => vec![format!("{dir}/gcs_server.py"), keys.path().display().to_string(), BUCKET.into()],
    };
    let mut child = match Command::new(&py).args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn() {
        Ok(c) => c,
        Err(e) => return skip(format!("cannot start {py}: {e}")),
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    match line.trim().strip_prefix("READY ") {
        Some(endpoint) => Some(Server { kind, endpoint: endpoint.to_string(), child, keys }),
        None => {
            let _ = child.kill();
            skip(format!("{} did not start, said {line:?}", args[0]))
        }
    }
}

/// The secret a store is given: the right one or one it must refuse.
#[derive(Clone, Copy, PartialEq)]
enum Secret {
    Right,
    Wrong,
}

impl Server {
    fn root(&self, bucket: &str) -> String {
        format!("{}://{bucket}", self.kind.scheme())
    }

    fn secret(&self, which: Secret) -> String {
        match (self.kind, which) {
            (Kind::S3, Secret::Right) => "test".into(),
            (Kind::S3, Secret::Wrong) => "not-the-secret-xyz".into(),
            (Kind::Azure, Secret::Right) => AZURE_KEY.into(),
            // A well-formed key of another account.
            (Kind::Azure, Secret::Wrong) => "bm90LXRoZS1rZXktbm90LXRoZS1rZXktbm90LXRoZS1rZXktbm90LXRoZS1rZXk=".into(),
            (Kind::Gcs, w) => {
                let file = if w == Secret::Right { "service-account.json" } else { "stranger.json" };
                std::fs::read_to_string(self.keys.path().join(file)).expect("service-account key")
            }
        }
    }

    /// Storage options, the secret's value given by `secret`.
    fn options(&self, secret: &str) -> Vec<(&'static str, String)> {
        let mut o: Vec<(&'static str, String)> = match self.kind {
            Kind::S3 => vec![
                ("AWS_ENDPOINT_URL", self.endpoint.clone()),
                ("AWS_ALLOW_HTTP", "true".into()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", secret.into()),
            ],
            // The endpoint is AZURITE_BLOB_STORAGE_URL (object_store reads it in emulator mode).
            Kind::Azure => vec![
                ("azure_storage_use_emulator", "true".into()),
                ("azure_storage_account_name", AZURE_ACCOUNT.into()),
                ("azure_storage_account_key", secret.into()),
            ],
            // The endpoint is in the key file (`gcs_base_url`), as a real key names Google's.
            Kind::Gcs => vec![("google_service_account_key", secret.into()), ("allow_http", "true".into())],
        };
        o.push(("max_retries", "1".into()));
        o.push(("retry_timeout", "5s".into()));
        o
    }

    fn storage(&self, which: Secret) -> HashMap<String, String> {
        self.options(&self.secret(which)).into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Pipelines p and q over upstream `a` under `root`; the secret comes from the environment
    /// through `${…}` so it is never in the file. `extra` storage lines override.
    fn config(&self, root: &str, secret_var: &str, extra: &[(&str, String)]) -> String {
        let mut s = "[storage]\n".to_string();
        for (k, v) in self.options(&format!("${{{secret_var}}}")) {
            if !extra.iter().any(|(e, _)| *e == k) {
                s += &format!("{k} = {}\n", toml_string(&v));
            }
        }
        for (k, v) in extra {
            s += &format!("{k} = {}\n", toml_string(v));
        }
        s += &format!("[tracker]\nuri = \"{root}/_deltalink/tracker\"\n[upstreams.a]\nuri = \"{root}/a\"\n");
        for p in ["p", "q"] {
            s += &format!(
                "[pipelines.{p}]\nlink_table = \"{root}/_deltalink/links/{p}\"\nkey = [\"k\"]\n\
                 [[pipelines.{p}.sources]]\nupstream = \"a\"\nkeys = [\"k\"]\n"
            );
        }
        s
    }

    fn engine(&self, lake: &Lake, root: &str, which: Secret, extra: &[(&str, String)]) -> Engine {
        let var = match which {
            Secret::Right => "DELTALINK_TEST_STORE_SECRET",
            Secret::Wrong => "DELTALINK_TEST_STORE_WRONG",
        };
        lake.engine_with_env(&self.config(root, var, extra), &[(var, &self.secret(which))])
    }
}

fn toml_string(v: &str) -> String {
    serde_json::to_string(v).expect("a JSON string is a TOML basic string")
}

async fn processed(engine: &Engine, pipeline: &str) -> Option<i64> {
    let tracker = engine.tracker().await.expect("tracker");
    tracker.rows(Some(pipeline)).await.expect("rows").first().and_then(|r| r.processed())
}

fn every_case_on(kind: Kind) {
    let Some(server) = start(kind) else { return };
    if kind == Kind::Azure {
        // object_store's emulator mode takes Azurite's address from the environment only; the
        // one Azurite test sets it before any Azure client exists.
        std::env::set_var("AZURITE_BLOB_STORAGE_URL", &server.endpoint);
    }
    rt().block_on(async {
        create_if_absent_has_one_winner(&server).await;
        runs_status_resets_and_concurrent_commits(&server).await;
        wrong_credentials_missing_bucket_and_unreachable_endpoint_are_named(&server).await;
    });
}

#[cfg(feature = "s3")]
#[test]
fn every_case_on_s3() {
    every_case_on(Kind::S3);
}

#[cfg(feature = "azure")]
#[test]
fn every_case_on_azure() {
    every_case_on(Kind::Azure);
}

#[cfg(feature = "gcs")]
#[test]
fn every_case_on_gcs() {
    every_case_on(Kind::Gcs);
}

/// Leases and commits are create-if-absent puts: eight writers of one new object, one wins,
/// the others are told it exists, and the object is the winner's.
async fn create_if_absent_has_one_winner(server: &Server) {
    let url = url::Url::parse(&format!("{}/race/", server.root(BUCKET))).expect("url");
    let store = deltalink::store::lake::builder(&url, &server.storage(Secret::Right)).expect("builder").build().expect("handle").object_store();
    let path = object_store::path::Path::from("_delta_log/00000000000000000000.json");
    let puts = (0..8u8).map(|i| {
        let store = store.clone();
        let path = path.clone();
        async move { (i, store.put_opts(&path, PutPayload::from(vec![i; 16]), PutOptions::from(PutMode::Create)).await) }
    });
    let results = futures::future::join_all(puts).await;
    let winners: Vec<u8> = results.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
    assert_eq!(winners.len(), 1, "{:?}: exactly one create wins: {results:?}", server.kind);
    for (i, r) in &results {
        if let Err(e) = r {
            assert!(matches!(e, object_store::Error::AlreadyExists { .. }), "{:?}: writer {i} got {e}", server.kind);
        }
    }
    let stored = store.get(&path).await.expect("get").bytes().await.expect("bytes");
    assert_eq!(stored.as_ref(), &[winners[0]; 16], "{:?}: the object is the winner's", server.kind);
}

async fn runs_status_resets_and_concurrent_commits(server: &Server) {
    let kind = server.kind;
    let lake = Lake::new();
    let root = format!("{}/e2e", server.root(BUCKET));
    let url = url::Url::parse(&format!("{root}/a")).expect("url");
    let mut a = ModelTable::create_at(url, &server.storage(Secret::Right), true).await;
    let mut rng = seeded(31);
    let mut expected = Affected::new();
    for _ in 0..6 {
        expected.extend(a.random_commit(&mut rng, 40).await);
    }
    let engine = server.engine(&lake, &root, Secret::Right, &[]);

    // Two pipelines run concurrently: their tracker commits race on the store's conditional put.
    let results = engine.run_many(&[], &RunOptions::default()).await;
    for (name, r) in &results {
        let r = r.as_ref().unwrap_or_else(|e| panic!("{kind:?}: run {name}: {e:#}"));
        assert_eq!(r.outcome, Outcome::Written, "{kind:?}: {name}");
    }
    for p in ["p", "q"] {
        let got: Affected = link_keys(&engine, p).await.into_keys().collect();
        assert_eq!(got, expected, "{kind:?}: pipeline {p} matches the oracle");
        assert_eq!(processed(&engine, p).await, Some(a.version() as i64));
    }

    // Two engines racing on one pipeline: the lease (a create-if-absent put) lets one write.
    let more = a.insert(&[Some(1000), Some(1001)]).await;
    let other = server.engine(&lake, &root, Secret::Right, &[]);
    let run_opts = RunOptions::default();
    let (r1, r2) = tokio::join!(engine.run("p", &run_opts), other.run("p", &run_opts));
    let written = [&r1, &r2].iter().filter(|r| matches!(r, Ok(rep) if rep.outcome == Outcome::Written)).count();
    assert_eq!(written, 1, "{kind:?}: exactly one run writes: {r1:?} / {r2:?}");
    let p_keys: BTreeMap<i64, i64> = link_keys(&engine, "p").await;
    assert!(more.iter().all(|k| p_keys.get(k) == Some(&2)), "{kind:?}: new keys written once, by run 2: {p_keys:?}");

    // Status.
    let st = deltalink::ops::status::status(&engine).await.expect("status");
    assert_eq!(st.upstreams[0].latest_version, Some(a.version()));
    assert!(st.upstreams[0].cdf_enabled);
    let p = st.pipelines.iter().find(|p| p.name == "p").expect("p");
    assert_eq!(p.upstreams[0].lag_versions, Some(0), "{kind:?}");
    let q = st.pipelines.iter().find(|p| p.name == "q").expect("q");
    assert_eq!(q.upstreams[0].lag_versions, Some(1), "{kind:?}");

    // Reset q to the earliest and re-run: same keys, tracker audited.
    let plan = plan_reset(&engine, "q", &[], ResetTarget::Earliest).await.expect("plan");
    execute_reset(&engine, &plan, "store test").await.expect("execute");
    assert_eq!(processed(&engine, "q").await, Some(-1));
    engine.run("q", &RunOptions::default()).await.expect("re-run q");
    let all: Affected = expected.union(&more).copied().collect();
    assert_eq!(link_keys(&engine, "q").await.into_keys().collect::<Affected>(), all, "{kind:?}");
    let history = engine.tracker().await.expect("tracker").history(20).await.expect("history");
    assert!(history.iter().any(|h| h.reason.as_deref() == Some("store test")), "{kind:?}: {history:?}");
}

async fn wrong_credentials_missing_bucket_and_unreachable_endpoint_are_named(server: &Server) {
    let kind = server.kind;
    let lake = Lake::new();
    let root = format!("{}/bad", server.root(BUCKET));
    let url = url::Url::parse(&format!("{root}/a")).expect("url");
    let mut a = ModelTable::create_at(url, &server.storage(Secret::Right), true).await;
    a.insert(&[Some(1)]).await;
    let good = server.engine(&lake, &root, Secret::Right, &[]);
    let tracker = format!("{root}/_deltalink/tracker");
    let tracker_absent = || async { good.tracker().await.expect("tracker").table().is_none() };

    let engine = server.engine(&lake, &root, Secret::Wrong, &[]);
    let e = format!("{:#}", engine.run("p", &RunOptions::default()).await.expect_err("wrong secret"));
    // The first request of a run takes the pipeline's lease, under the tracker location.
    assert!(e.contains(&tracker) && e.contains("refused access"), "{kind:?}: {e}");
    assert!(e.contains("fix: check the credentials"), "{kind:?}: {e}");
    let wrong = server.secret(Secret::Wrong);
    assert!(!e.contains(&wrong) && !e.contains("PRIVATE KEY"), "{kind:?}: the secret is never printed: {e}");
    assert!(tracker_absent().await, "{kind:?}: nothing written");

    let other_root = server.root("no-such-bucket");
    let cfg = server.config(&root, "DELTALINK_TEST_STORE_SECRET", &[]).replace(&format!("{root}/a"), &format!("{other_root}/a"));
    let e = format!(
        "{:#}",
        lake.engine_with_env(&cfg, &[("DELTALINK_TEST_STORE_SECRET", &server.secret(Secret::Right))])
            .run("p", &RunOptions::default())
            .await
            .expect_err("no bucket")
    );
    assert!(e.contains("upstream `a`") && e.contains("bucket or container does not exist"), "{kind:?}: {e}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let dead = format!("http://127.0.0.1:{port}");
    let extra: Vec<(&str, String)> = match kind {
        Kind::S3 => vec![("AWS_ENDPOINT_URL", dead)],
        // Outside emulator mode, the endpoint is an option.
        Kind::Azure => vec![
            ("azure_storage_use_emulator", "false".into()),
            ("azure_storage_endpoint", format!("{dead}/{AZURE_ACCOUNT}")),
            ("azure_allow_http", "true".into()),
        ],
        Kind::Gcs => vec![("google_base_url", dead)],
    };
    let e = format!("{:#}", server.engine(&lake, &root, Secret::Right, &extra).run("p", &RunOptions::default()).await.expect_err("unreachable"));
    assert!(e.contains(&tracker) && e.contains("cannot be reached"), "{kind:?}: {e}");
    assert!(e.contains("fix: check the endpoint"), "{kind:?}: {e}");
    assert!(tracker_absent().await, "{kind:?}: nothing written");
}
