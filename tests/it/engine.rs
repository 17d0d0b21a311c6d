//! The engine against real Delta tables, checked against an independent oracle.

use std::collections::BTreeMap;

use deltalink::engine::{Outcome, RunOptions, Step};

use crate::common::*;

/// Expected link table after a run: every key affected so far, with the last run that touched it.
fn apply(expected: &mut BTreeMap<Key, i64>, affected: &Affected, run_id: i64) {
    for k in affected {
        expected.insert(*k, run_id);
    }
}

#[test]
fn link_table_matches_oracle_over_random_histories() {
    rt().block_on(async {
        for seed in 1..=3u64 {
            let lake = Lake::new();
            let mut rng = seeded(seed);
            let mut a = ModelTable::create(&lake.path("a"), true).await;
            let mut b = ModelTable::create(&lake.path("b"), true).await;
            let engine = lake.engine(&simple_config(&["a", "b"], &[("p", &["a", "b"])]));
            let mut expected = BTreeMap::new();
            let mut run_id = 0;
            for round in 0..4 {
                let mut affected = Affected::new();
                for _ in 0..rng.gen_range(1..4) {
                    affected.extend(a.random_commit(&mut rng, 30).await);
                }
                if round != 2 {
                    for _ in 0..rng.gen_range(1..3) {
                        affected.extend(b.random_commit(&mut rng, 30).await);
                    }
                }
                let preview = engine.preview("p", None).await.expect("preview");
                let previewed: Affected = preview.rows.iter().map(|r| r.key[0].parse::<i64>().expect("int")).collect();
                assert_eq!(previewed, affected, "seed {seed} round {round}: preview {:?}", preview.rows);
                let report = engine.run("p", &RunOptions::default()).await.expect("run");
                run_id += 1;
                assert_eq!(report.outcome, Outcome::Written, "seed {seed} round {round}");
                assert_eq!(report.run_id, Some(run_id));
                assert_eq!(report.distinct_keys as usize, affected.len(), "seed {seed} round {round}: distinct keys");
                apply(&mut expected, &affected, run_id);
                assert_eq!(link_keys(&engine, "p").await, expected, "seed {seed} round {round}");
            }
            let st = deltalink::ops::status::status(&engine).await.expect("status");
            for u in &st.pipelines[0].upstreams {
                assert_eq!(u.lag_versions, Some(0), "{u:?}");
                assert_eq!(u.processed_version.map(|v| v as u64), u.latest_version);
            }
            assert_eq!(st.pipelines[0].link_rows, Some(expected.len() as u64));
        }
    });
}

use rand::Rng;

#[test]
fn pipelines_sharing_an_upstream_keep_separate_progress() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        let engine = lake.engine(&simple_config(&["a", "b"], &[("p1", &["a"]), ("p2", &["a", "b"])]));
        let mut seen_p1 = a.insert(&[Some(1), Some(2)]).await;
        let mut seen_p2 = seen_p1.clone();
        engine.run("p1", &RunOptions::default()).await.expect("run p1");
        let more = a.insert(&[Some(3)]).await;
        seen_p1.extend(more.iter());
        seen_p2.extend(more.iter());
        seen_p2.extend(b.insert(&[Some(10)]).await);
        // p2 has never run: it must still see a's first commit, which p1 already consumed.
        engine.run("p2", &RunOptions::default()).await.expect("run p2");
        engine.run("p1", &RunOptions::default()).await.expect("run p1 again");
        let keys = |m: BTreeMap<Key, i64>| m.into_keys().collect::<Affected>();
        assert_eq!(keys(link_keys(&engine, "p1").await), seen_p1);
        assert_eq!(keys(link_keys(&engine, "p2").await), seen_p2);
        let p1 = link_keys(&engine, "p1").await;
        assert_eq!(p1[&1], 1);
        assert_eq!(p1[&3], 2, "key 3 arrived in p1's second run");
    });
}

#[test]
fn a_run_with_no_new_commits_writes_nothing() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        a.insert(&[Some(1)]).await;
        engine.run("p", &RunOptions::default()).await.expect("first run");
        let versions = || async {
            let t = engine.tracker().await.expect("tracker");
            let tv = t.table().and_then(|t| t.version());
            let lv = link_table(&engine, "p").await.and_then(|t| t.version());
            (tv, lv)
        };
        let before = versions().await;
        let report = engine.run("p", &RunOptions::default()).await.expect("second run");
        assert_eq!(report.outcome, Outcome::NothingNew);
        assert_eq!(versions().await, before, "tracker and link table versions unchanged");
    });
}

#[test]
fn versions_without_data_change_are_processed_without_keys() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        a.insert(&[Some(1)]).await;
        a.insert(&[Some(2)]).await;
        engine.run("p", &RunOptions::default()).await.expect("run");
        // OPTIMIZE rewrites files with dataChange=false: no key is affected.
        let (t, _) = a.table.clone().optimize().await.expect("optimize");
        a.table = t;
        let report = engine.run("p", &RunOptions::default()).await.expect("run after optimize");
        assert_eq!(report.outcome, Outcome::Written);
        assert_eq!(report.change_rows, 0);
        assert_eq!(report.distinct_keys, 0);
        assert_eq!(link_keys(&engine, "p").await, BTreeMap::from([(1, 1), (2, 1)]));
        let st = deltalink::ops::status::status(&engine).await.expect("status");
        assert_eq!(st.pipelines[0].upstreams[0].lag_versions, Some(0));
    });
}

#[test]
fn null_keys_are_counted_not_written() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        a.insert(&[Some(1), None, None, Some(2)]).await;
        let preview = engine.preview("p", None).await.expect("preview");
        assert_eq!(preview.null_key_rows, 2);
        let report = engine.run("p", &RunOptions::default()).await.expect("run");
        assert_eq!(report.null_key_rows, 2);
        assert_eq!(report.distinct_keys, 2);
        assert_eq!(link_keys(&engine, "p").await.into_keys().collect::<Vec<_>>(), vec![1, 2]);
    });
}

/// Tens of thousands of integer keys, extreme ones and ones sharing their low or high bits
/// among them, from two upstreams that share some keys (twice over in one): grouping keeps
/// every distinct key once, with exactly the upstreams that touched it, however its table grew.
#[test]
fn grouping_keeps_every_distinct_key_with_the_upstreams_that_touched_it() {
    use rand::Rng;
    use std::collections::{BTreeMap, BTreeSet};
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(11);
        let mut keys: Vec<i64> = vec![i64::MIN, i64::MAX, -1, 0, 1];
        keys.extend((1..600).map(|i| i << 32));
        keys.extend((1..600).map(|i| -(i << 20)));
        // Tens of thousands of keys per grouping shard (a preview on two cores groups in two),
        // many hit by both upstreams: the shards' keys and overflow hits are merged.
        keys.extend(2..80_000);
        keys.extend((0..3_000).map(|_| rng.gen::<i64>()));
        let some = |ks: &[i64]| ks.iter().map(|k| Some(*k)).collect::<Vec<_>>();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        let mut oracle: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        let (in_a, in_b) = (&keys[..keys.len() * 2 / 3], &keys[keys.len() / 3..]);
        for k in a.insert(&some(in_a)).await.into_iter().chain(a.insert(&some(&in_a[..5_000])).await) {
            oracle.entry(k).or_default().insert("a");
        }
        for k in b.insert(&some(in_b)).await {
            oracle.entry(k).or_default().insert("b");
        }
        let engine = lake.engine(&simple_config(&["a", "b"], &[("p", &["a", "b"])]));
        let preview = engine.preview("p", None).await.expect("preview");
        let mut previewed: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        for r in &preview.rows {
            let upstream = if r.upstream == "a" { "a" } else { "b" };
            assert!(previewed.entry(r.key[0].parse().expect("int key")).or_default().insert(upstream), "{r:?} twice");
        }
        assert_eq!(previewed, oracle);
        let order: Vec<i64> = preview.rows.iter().map(|r| r.key[0].parse().expect("int key")).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "preview rows in key order");
        let report = engine.run("p", &RunOptions::default()).await.expect("run");
        assert_eq!(report.distinct_keys, oracle.len() as u64);
        assert_eq!(link_keys(&engine, "p").await.into_keys().collect::<Vec<_>>(), oracle.into_keys().collect::<Vec<_>>());
    });
}

#[test]
fn preview_is_exactly_what_the_run_writes_and_writes_nothing() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(7);
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        let mut affected = Affected::new();
        for _ in 0..5 {
            affected.extend(a.random_commit(&mut rng, 20).await);
        }
        let preview = engine.preview("p", None).await.expect("preview");
        assert!(engine.tracker().await.expect("tracker").table().is_none(), "preview created no tracker");
        let previewed: Affected = preview.rows.iter().map(|r| r.key[0].parse::<i64>().expect("int")).collect();
        assert_eq!(previewed, affected);
        for r in &preview.rows {
            assert_eq!(r.upstream, "a");
            assert!(r.commit_version >= 1 && r.commit_version <= a.version() as i64, "{r:?}");
        }
        engine.run("p", &RunOptions::default()).await.expect("run");
        assert_eq!(link_keys(&engine, "p").await.into_keys().collect::<Affected>(), previewed);
    });
}

/// A fault (an injected error, as if the process died there) after every step of a run, over
/// several random histories each, with and without earlier runs in the link table: the restart
/// and one catch-up run leave exactly the oracle's link rows and run ids, and the tracker at
/// the latest version with nothing pending.
#[test]
fn a_fault_at_any_step_converges_to_one_clean_run() {
    let steps = [Step::Pinned, Step::IntentRecorded, Step::ChangesRead, Step::LinkFilesWritten, Step::LinkCommitted, Step::TrackerCommitted];
    rt().block_on(async {
        for (i, step) in steps.into_iter().enumerate() {
            for history in 0..4u64 {
                let lake = Lake::new();
                let mut rng = seeded(100 + 10 * i as u64 + history);
                let mut a = ModelTable::create(&lake.path("a"), true).await;
                let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
                let mut expected = BTreeMap::new();
                // Odd histories already have a run in the link table: the faulted run MERGEs.
                let prior = history % 2;
                if prior == 1 {
                    let mut earlier = Affected::new();
                    for _ in 0..3 {
                        earlier.extend(a.random_commit(&mut rng, 25).await);
                    }
                    engine.run("p", &RunOptions::default()).await.expect("earlier run");
                    apply(&mut expected, &earlier, 1);
                }
                let (this, next) = (prior as i64 + 1, prior as i64 + 2);
                let mut first = Affected::new();
                for _ in 0..4 {
                    first.extend(a.random_commit(&mut rng, 25).await);
                }
                let err = engine.run("p", &RunOptions::default().with_fault_after(step)).await;
                assert!(err.is_err(), "fault after {step:?} must surface");
                // A commit lands after the crashed run pinned its versions: it belongs to a later run.
                let late = a.random_commit(&mut rng, 25).await;
                let r = engine.run("p", &RunOptions::default()).await.expect("restart");
                match step {
                    // Died before the intent: the restart is a fresh run that also sees the late commit.
                    Step::Pinned => {
                        apply(&mut expected, &first, this);
                        apply(&mut expected, &late, this);
                    }
                    // Died with the intent recorded but before/after the link commit: same run, same pins.
                    Step::IntentRecorded | Step::ChangesRead | Step::LinkFilesWritten | Step::LinkCommitted => {
                        apply(&mut expected, &first, this);
                    }
                    // Completed: the restart is the next run, with the late commit.
                    Step::TrackerCommitted => {
                        apply(&mut expected, &first, this);
                        apply(&mut expected, &late, next);
                    }
                }
                let case = format!("fault at {step:?}, history {history}");
                assert_eq!(link_keys(&engine, "p").await, expected, "{case}: after the restart ({r:?})");
                // One more run catches up; link rows and run ids keep agreeing with the oracle.
                let r2 = engine.run("p", &RunOptions::default()).await.expect("catch up");
                if matches!(step, Step::IntentRecorded | Step::ChangesRead | Step::LinkFilesWritten | Step::LinkCommitted) {
                    assert_eq!(r2.run_id, Some(next), "{case}");
                    apply(&mut expected, &late, next);
                } else {
                    assert_eq!(r2.outcome, Outcome::NothingNew, "{case}");
                }
                assert_eq!(link_keys(&engine, "p").await, expected, "{case}: after catch-up");
                let rows = engine.tracker().await.expect("tracker").rows(Some("p")).await.expect("rows");
                assert_eq!(rows[0].last_processed_version, Some(a.version() as i64), "{case}");
                assert_eq!(rows[0].pending_run_id, None, "{case}");
            }
        }
    });
}

/// The same faults in a `run_many` cycle whose two pipelines share their upstreams (one scan,
/// fanned out), one of them join-mapped: after a restart of the cycle both equal pipelines of
/// an engine that never failed.
#[test]
fn a_fault_in_a_cycle_with_shared_reads_converges_for_every_pipeline() {
    let steps = [Step::IntentRecorded, Step::ChangesRead, Step::LinkFilesWritten, Step::LinkCommitted, Step::TrackerCommitted];
    let config = |prefix: &str| {
        format!(
            "[tracker]\nuri = \"{prefix}/tracker\"\n[upstreams.a]\nuri = \"a\"\n[upstreams.b]\nuri = \"b\"\n\
             [pipelines.direct]\nlink_table = \"{prefix}/direct\"\nkey = [\"k\"]\n\
             [[pipelines.direct.sources]]\nupstream = \"a\"\nkeys = [\"k\"]\n[[pipelines.direct.sources]]\nupstream = \"b\"\nkeys = [\"k\"]\n\
             [pipelines.joined]\nlink_table = \"{prefix}/joined\"\nkey = [\"k\"]\n\
             [[pipelines.joined.sources]]\nupstream = \"a\"\nsql = \"SELECT b.k AS k FROM changes c JOIN b ON c.k = b.k\"\n\
             [[pipelines.joined.sources]]\nupstream = \"b\"\nsql = \"SELECT c.k AS k FROM changes c JOIN a ON c.k = a.k\"\n"
        )
    };
    rt().block_on(async {
        for (i, step) in steps.into_iter().enumerate() {
            let lake = Lake::new();
            let mut rng = seeded(300 + i as u64);
            let mut a = ModelTable::create(&lake.path("a"), true).await;
            let mut b = ModelTable::create(&lake.path("b"), true).await;
            let faulty = lake.engine(&config("faulty"));
            let clean = lake.engine(&config("clean"));
            let all = ["direct".to_string(), "joined".to_string()];
            for round in 0..3 {
                for _ in 0..3 {
                    a.random_commit(&mut rng, 20).await;
                    b.random_commit(&mut rng, 20).await;
                }
                if round == 1 {
                    let failed = faulty.run_many(&all, &RunOptions::default().with_fault_after(step)).await;
                    assert!(failed.iter().all(|(_, r)| r.is_err()), "fault after {step:?} surfaces in every pipeline");
                }
                for (p, r) in faulty.run_many(&all, &RunOptions::default()).await {
                    r.unwrap_or_else(|e| panic!("{p} after a fault at {step:?}: {e:#}"));
                }
                for (p, r) in clean.run_many(&all, &RunOptions::default()).await {
                    r.unwrap_or_else(|e| panic!("clean {p}: {e:#}"));
                }
            }
            for p in &all {
                // Same keys, run ids, change times, upstreams and provenance; same change feed.
                let rows = assert_link_tables_agree(&faulty, p, &clean, p, &format!("after a fault at {step:?}")).await;
                assert!(!rows.is_empty(), "{p} has keys");
            }
        }
    });
}

/// A cycle of more pipelines than it gives turns at the heavy part of a run (twice as many
/// pipelines as cores are in flight, as many as cores read and merge at once), reading the
/// same upstreams in every combination, so runs wait for turns and for each other's shared
/// reads: after each cycle every link table holds exactly the keys its upstreams' commits
/// touched (the model's oracle), each with the run id of the last cycle that touched it.
#[test]
fn a_cycle_of_more_pipelines_than_turns_over_shared_upstreams_writes_every_pipelines_keys() {
    let upstreams = ["a", "b", "c"];
    let pipelines: [(&str, &[&str]); 7] = [
        ("p1", &["a"]),
        ("p2", &["b"]),
        ("p3", &["c"]),
        ("p4", &["a", "b"]),
        ("p5", &["b", "c"]),
        ("p6", &["a", "c"]),
        ("p7", &["a", "b", "c"]),
    ];
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(700);
        let mut tables = BTreeMap::new();
        for u in upstreams {
            tables.insert(u, ModelTable::create(&lake.path(u), true).await);
        }
        let engine = lake.engine(&simple_config(&upstreams, &pipelines));
        let names: Vec<String> = pipelines.iter().map(|(p, _)| p.to_string()).collect();
        let mut expected: BTreeMap<&str, BTreeMap<Key, i64>> = BTreeMap::new();
        for cycle in 0..3 {
            let mut touched: BTreeMap<&str, Affected> = BTreeMap::new();
            for (u, table) in tables.iter_mut() {
                for _ in 0..2 {
                    touched.entry(*u).or_default().extend(table.random_commit(&mut rng, 40).await);
                }
            }
            let reports: BTreeMap<String, deltalink::RunReport> = engine
                .run_many(&names, &RunOptions::default())
                .await
                .into_iter()
                .map(|(p, r)| {
                    let report = r.unwrap_or_else(|e| panic!("{p} in cycle {cycle}: {e:#}"));
                    (p, report)
                })
                .collect();
            for (p, ups) in pipelines {
                let run_id = reports[p].run_id.unwrap_or_else(|| panic!("{p} wrote nothing in cycle {cycle}"));
                for u in ups {
                    for k in &touched[u] {
                        expected.entry(p).or_default().insert(*k, run_id);
                    }
                }
            }
            for (p, _) in pipelines {
                let want = expected.get(p).cloned().unwrap_or_default();
                assert_eq!(link_keys(&engine, p).await, want, "{p} after cycle {cycle}");
            }
        }
    });
}

#[test]
fn start_latest_skips_history_and_reads_what_comes_after() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let cfg = simple_config(&["a"], &[("p", &["a"])]).replace("key = [\"k\"]\n", "key = [\"k\"]\nstart = \"latest\"\n");
        let engine = lake.engine(&cfg);
        a.insert(&[Some(1)]).await;
        let r = engine.run("p", &RunOptions::default()).await.expect("first");
        assert_eq!(r.distinct_keys, 0);
        let later = a.insert(&[Some(2)]).await;
        engine.run("p", &RunOptions::default()).await.expect("second");
        assert_eq!(link_keys(&engine, "p").await.into_keys().collect::<Affected>(), later);
    });
}

#[test]
fn earliest_on_a_truncated_log_starts_from_the_oldest_snapshot() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(3);
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        for _ in 0..6 {
            a.random_commit(&mut rng, 40).await;
        }
        let cp = a.version();
        deltalake::checkpoints::create_checkpoint(&a.table, None).await.expect("checkpoint");
        let at_checkpoint = a.current_keys();
        // Log retention removed the commits before the checkpoint.
        for v in 0..cp {
            std::fs::remove_file(lake.path(&format!("a/_delta_log/{v:020}.json"))).expect("remove old commit");
        }
        let mut after = Affected::new();
        for _ in 0..3 {
            after.extend(a.random_commit(&mut rng, 40).await);
        }
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        let preview = engine.preview("p", None).await.expect("preview");
        let range = preview.upstreams[0].range.expect("range");
        assert_eq!(range.snapshot, Some(cp));
        engine.run("p", &RunOptions::default()).await.expect("run on truncated log");
        let mut expected = at_checkpoint;
        expected.extend(after);
        assert_eq!(link_keys(&engine, "p").await.into_keys().collect::<Affected>(), expected);
    });
}

#[test]
fn an_incremental_run_of_clustered_keys_rewrites_only_the_files_it_touches() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let keys: Vec<Option<Key>> = (0..60_000).map(Some).collect();
        a.insert(&keys).await;
        // Small link files so a modest table spans many of them (the default is 8 MiB).
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])])).with_link_file_size(32 * 1024);
        engine.run("p", &RunOptions::default()).await.expect("first run");
        let link = link_table(&engine, "p").await.expect("link table");
        let files = link.snapshot().expect("snapshot").log_data().num_files();
        assert!(files >= 8, "the first write split the sorted keys over many files: {files}");

        // Recent keys change (clustered at the top of the key range), as is typical.
        let recent: Vec<i64> = a.rows.iter().filter(|(_, k)| k.is_some_and(|k| k >= 59_900)).map(|(id, _)| *id).collect();
        let touched = a.update_payload(&recent).await;
        let r = engine.run("p", &RunOptions::default()).await.expect("incremental run");
        assert_eq!(r.keys_updated, touched.len() as u64);
        eprintln!("clustered MERGE: {} keys, {} of {files} link files rewritten", touched.len(), r.link_files_rewritten);
        assert!(
            r.link_files_rewritten <= 2,
            "a MERGE of 100 clustered keys rewrote {} of {files} files",
            r.link_files_rewritten
        );
        assert_eq!(link_keys(&engine, "p").await.len(), 60_000);
    });
}

/// The same for a text key (a `sql` source casting the key to VARCHAR): string ranges from the
/// link files' statistics prune as integer ones do. Keys "59900".."59999" sort together (with a
/// few shorter ones such as "5991"), so the run touches one or two of the many files.
#[test]
fn an_incremental_run_of_clustered_text_keys_touches_only_their_files() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&(0..60_000).map(Some).collect::<Vec<_>>()).await;
        let config = "[tracker]\nuri = \"_deltalink/tracker\"\n[upstreams.a]\nuri = \"a\"\n[pipelines.p]\nlink_table = \"_deltalink/links/p\"\n\
             key = [\"k\"]\n[[pipelines.p.sources]]\nupstream = \"a\"\nsql = \"SELECT CAST(c.k AS VARCHAR) AS k FROM changes c\"\n";
        let engine = lake.engine(config).with_link_file_size(32 * 1024);
        engine.run("p", &RunOptions::default()).await.expect("first run");
        let files = link_table(&engine, "p").await.expect("link table").snapshot().expect("snapshot").log_data().num_files();
        assert!(files >= 8, "the first write split the sorted keys over many files: {files}");

        let recent: Vec<i64> = a.rows.iter().filter(|(_, k)| k.is_some_and(|k| k >= 59_900)).map(|(id, _)| *id).collect();
        let touched = a.update_payload(&recent).await;
        let r = engine.run("p", &RunOptions::default()).await.expect("incremental run");
        assert_eq!(r.keys_updated, touched.len() as u64);
        // Routed by range, the touched files are marked (without ranges the MERGE read every
        // file and rewrote those holding a touched key).
        assert_eq!(r.link_files_rewritten, 0, "nothing rewritten");
        assert!((1..=2).contains(&r.link_files_marked), "a MERGE of 100 clustered text keys marked {} of {files} files", r.link_files_marked);
        assert_eq!(link_keys(&engine, "p").await.len(), 60_000);
    });
}

/// (min, max) of the key column of every data file of a pipeline's link table, sorted.
async fn link_file_ranges(engine: &deltalink::engine::Engine, pipeline: &str) -> Vec<(i64, i64)> {
    let link = link_table(engine, pipeline).await.expect("link table");
    let snapshot = link.snapshot().expect("snapshot");
    let mut ranges: Vec<(i64, i64)> = snapshot
        .log_data()
        .iter()
        .map(|f| {
            let stats: serde_json::Value = serde_json::from_str(&f.stats().expect("link files have statistics")).expect("stats json");
            (stats["minValues"]["k"].as_i64().expect("min"), stats["maxValues"]["k"].as_i64().expect("max"))
        })
        .collect();
    ranges.sort();
    ranges
}

/// Copy-on-write, the files' ranges stay disjoint; with deletion vectors, files that replaced
/// rows overlap the range they belong to, and ranges (overlapping files together) must never
/// merge: a run would then read and mark across both.
#[test]
fn new_keys_in_the_gaps_between_link_files_keep_the_file_ranges_disjoint() {
    for deletion_vectors in [false, true] {
        new_keys_in_the_gaps_keep_ranges_disjoint(deletion_vectors);
    }
}

fn new_keys_in_the_gaps_keep_ranges_disjoint(deletion_vectors: bool) {
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(11);
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        // Even keys only: between two files' ranges there is always an odd key free.
        a.insert(&(0..20_000).map(|k| Some(k * 2)).collect::<Vec<_>>()).await;
        let mut config = simple_config(&["a"], &[("p", &["a"])]);
        if !deletion_vectors {
            config = without_deletion_vectors(&config, "p");
        }
        let engine = lake.engine(&config).with_link_file_size(16 * 1024);
        engine.run("p", &RunOptions::default()).await.expect("first run");
        let first = link_file_ranges(&engine, "p").await;
        assert!(first.len() >= 8, "the first write split the keys over many files: {first:?}");
        let mut ranges_before = key_ranges(&first).len();
        let mut expected: Affected = (0..20_000).map(|k| k * 2).collect();
        for round in 0..4 {
            let ranges = link_file_ranges(&engine, "p").await;
            // A key inside one file, one in the gap after the next file (whose range holds no
            // key of the run), one inside the file after that: the gap key must not stretch the
            // first file over the second's range.
            let j = rng.gen_range(0..ranges.len() - 3);
            let picks = [ranges[j].0 + 1, ranges[j + 1].1 + 1, ranges[j + 2].0 + 1, ranges[ranges.len() - 1].1 + 7];
            let new: Vec<Key> = picks.into_iter().filter(|k| !expected.contains(k)).collect();
            a.insert(&new.iter().copied().map(Some).collect::<Vec<_>>()).await;
            expected.extend(&new);
            engine.run("p", &RunOptions::default()).await.expect("incremental run");
            let after = link_file_ranges(&engine, "p").await;
            assert!(
                deletion_vectors || after.windows(2).all(|w| w[0].1 < w[1].0),
                "round {round}: keys {new:?} left overlapping link files: {after:?}"
            );
            let ranges_now = key_ranges(&after).len();
            assert!(ranges_now >= ranges_before, "round {round}: keys {new:?} merged key ranges: {after:?}");
            ranges_before = ranges_now;
        }
        assert_eq!(link_keys(&engine, "p").await.into_keys().collect::<Affected>(), expected);
        // The layout still prunes: one key inside one file rewrites that file alone.
        let ranges = link_file_ranges(&engine, "p").await;
        let key = ranges[ranges.len() / 2].0;
        let ids: Vec<i64> = a.rows.iter().filter(|(_, k)| **k == Some(key)).map(|(id, _)| *id).collect();
        a.update_payload(&ids).await;
        let r = engine.run("p", &RunOptions::default()).await.expect("update run");
        let expected = if deletion_vectors { (1, 0, 1) } else { (1, 1, 0) };
        assert_eq!(
            (r.keys_updated, r.link_files_rewritten, r.link_files_marked),
            expected,
            "touching key {key} alone rewrites (or, with deletion vectors, marks) its file alone"
        );
    });
}

/// How many files each key range (files whose ranges overlap, see [`key_ranges`]) holds.
fn files_per_key_range(files: &[(i64, i64)]) -> Vec<usize> {
    let mut counts: Vec<(i64, usize)> = Vec::new();
    for &(min, max) in files {
        match counts.last_mut() {
            Some((end, n)) if min <= *end => {
                *end = (*end).max(max);
                *n += 1;
            }
            _ => counts.push((max, 1)),
        }
    }
    counts.into_iter().map(|(_, n)| n).collect()
}

/// File ranges (sorted by minimum) joined where they overlap.
fn key_ranges(files: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for &(min, max) in files {
        match ranges.last_mut() {
            Some(last) if min <= last.1 => last.1 = last.1.max(max),
            _ => ranges.push((min, max)),
        }
    }
    ranges
}


/// deltalink's sorted-key MERGE against delta-rs's MERGE as the oracle: over random histories
/// of two upstreams, with link files small enough that runs touch some files and skip others,
/// both give the same link rows and the same change feed, version by version.
#[test]
fn sorted_key_merge_equals_delta_rs_merge_over_random_histories() {
    use deltalink::store::link::MergeStrategy;
    rt().block_on(async {
        let mut marked = 0;
        for seed in 11..=13u64 {
            let lake = Lake::new();
            let mut rng = seeded(seed);
            let mut a = ModelTable::create(&lake.path("a"), true).await;
            let mut b = ModelTable::create(&lake.path("b"), true).await;
            // `mixed` is written by delta-rs for two rounds (files not sorted, ranges that
            // overlap), then by the sorted-key MERGE, which must fall back where its layout
            // assumptions do not hold.
            // `sorted` takes deletion vectors; `cow` is the same MERGE copy-on-write.
            let config = simple_config(
                &["a", "b"],
                &[("sorted", &["a", "b"]), ("cow", &["a", "b"]), ("oracle", &["a", "b"]), ("mixed", &["a", "b"])],
            );
            let config = without_deletion_vectors(&config, "cow");
            let sorted = lake.engine(&config).with_link_file_size(2048);
            let oracle = lake.engine(&config).with_link_file_size(2048).with_merge_strategy(MergeStrategy::DeltaRs);
            let first: Vec<Option<Key>> = (0..400).map(|_| Some(rng.gen_range(0..600))).collect();
            a.insert(&first).await;
            for round in 0..5 {
                for _ in 0..rng.gen_range(1..4) {
                    a.random_commit(&mut rng, 600).await;
                }
                for _ in 0..rng.gen_range(0..3) {
                    b.random_commit(&mut rng, 600).await;
                }
                let s = sorted.run("sorted", &RunOptions::default()).await.expect("sorted-key run");
                let c = sorted.run("cow", &RunOptions::default()).await.expect("copy-on-write run");
                let o = oracle.run("oracle", &RunOptions::default()).await.expect("delta-rs run");
                marked += s.link_files_marked;
                let mixed_engine = if round < 2 { &oracle } else { &sorted };
                mixed_engine.run("mixed", &RunOptions::default()).await.expect("mixed run");
                assert_eq!((s.keys_inserted, s.keys_updated), (o.keys_inserted, o.keys_updated), "seed {seed} round {round}");
                assert_last_write_is(&sorted, "sorted", &s, &format!("seed {seed} round {round}")).await;
                assert_last_write_is(&oracle, "oracle", &o, &format!("seed {seed} round {round}")).await;
                let context = format!("seed {seed} round {round}");
                for p in ["sorted", "cow", "mixed"] {
                    assert_link_tables_agree(&sorted, p, &oracle, "oracle", &context).await;
                }
                assert_eq!(c.link_files_marked, 0, "seed {seed} round {round}: copy-on-write marks nothing");
                if round > 0 && s.keys_updated > 0 {
                    assert!(s.link_files_rewritten + s.link_files_marked > 0, "an update rewrites or marks at least one file");
                    assert!(c.link_files_rewritten > 0, "a copy-on-write update rewrites at least one file");
                }
                let ranges = link_file_ranges(&sorted, "cow").await;
                assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "seed {seed} round {round}: copy-on-write layout overlaps: {ranges:?}");
            }
            for p in ["sorted", "cow", "mixed"] {
                let orphans = unreferenced_data_files(&lake.path(&format!("_deltalink/links/{p}")));
                assert!(orphans.is_empty(), "seed {seed}: `{p}` has data files no commit references: {orphans:?}");
            }
        }
        assert!(marked > 0, "some run replaced rows through deletion vectors");
    });
}


/// A MERGE that touches one link file of several row groups rewrites it in parts (row-group
/// runs, each with the keys of its range, at once): the same link rows and change feed as
/// delta-rs's MERGE, key ranges still disjoint, nothing left unreferenced.
///
/// With deletion vectors the same MERGE marks the touched rows of that file instead and writes
/// them anew with the new keys: again exactly delta-rs's rows and change feed.
#[test]
fn a_lone_link_file_is_rewritten_in_parts_exactly_as_delta_rs_merges() {
    for deletion_vectors in [false, true] {
        lone_link_file_merges_as_delta_rs(deletion_vectors);
    }
}

fn lone_link_file_merges_as_delta_rs(deletion_vectors: bool) {
    use deltalink::store::link::MergeStrategy;
    use rand::Rng;
    use std::collections::BTreeSet;
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(21);
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        // Even keys: one link file of three 128k-row row groups. Odd keys come later, inside
        // every row group's range and beyond the last.
        a.insert(&(0..300_000).map(|k| Some(k * 2)).collect::<Vec<_>>()).await;
        let mut config = simple_config(&["a"], &[("sorted", &["a"]), ("oracle", &["a"])]);
        if !deletion_vectors {
            config = without_deletion_vectors(&config, "sorted");
        }
        let sorted = lake.engine(&config);
        let oracle = lake.engine(&config).with_merge_strategy(MergeStrategy::DeltaRs);
        sorted.run("sorted", &RunOptions::default()).await.expect("first sorted-key run");
        oracle.run("oracle", &RunOptions::default()).await.expect("first delta-rs run");
        assert_eq!(link_file_ranges(&sorted, "sorted").await.len(), 1, "one link file to start with");

        let ids: BTreeSet<i64> = (0..2_000).map(|_| rng.gen_range(1..=300_000)).collect();
        a.update_payload(&ids.into_iter().collect::<Vec<_>>()).await;
        a.insert(&(0..2_000).map(|_| Some(rng.gen_range(0..320_000) * 2 + 1)).collect::<Vec<_>>()).await;
        let s = sorted.run("sorted", &RunOptions::default()).await.expect("sorted-key run");
        let o = oracle.run("oracle", &RunOptions::default()).await.expect("delta-rs run");
        assert_eq!((s.keys_inserted, s.keys_updated), (o.keys_inserted, o.keys_updated));
        let s_rows = assert_link_tables_agree(&sorted, "sorted", &oracle, "oracle", "delta-rs's MERGE as the oracle").await;
        assert_eq!(s_rows.len(), 300_000 + s.keys_inserted as usize);
        let ranges = link_file_ranges(&sorted, "sorted").await;
        if deletion_vectors {
            assert_eq!((s.link_files_rewritten, s.link_files_marked), (0, 1), "the lone file is marked, not rewritten");
            let table = link_table(&sorted, "sorted").await.expect("link table");
            assert_eq!(files_with_deletion_vectors(&table), 1, "the lone file took a deletion vector");
        } else {
            assert!(ranges.len() >= 2, "the lone file was rewritten in parts: {ranges:?}");
            assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "layout overlaps: {ranges:?}");
        }
        let orphans = unreferenced_data_files(&lake.path("_deltalink/links/sorted"));
        assert!(orphans.is_empty(), "data files no commit references: {orphans:?}");
    });
}

/// Run after run of small updates into one large link file: the touched rows are marked
/// (deletion vectors, new files over the same range) until the range holds four files, and the
/// next MERGE into it rewrites it whole again. Against the model's keys and delta-rs's MERGE
/// after every run; no key range ever holds more than four files.
#[test]
fn marked_rows_accumulate_until_the_range_is_rewritten_whole() {
    use deltalink::store::link::MergeStrategy;
    use rand::Rng;
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(31);
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&(0..20_000).map(Some).collect::<Vec<_>>()).await;
        let config = simple_config(&["a"], &[("sorted", &["a"]), ("oracle", &["a"])]);
        let sorted = lake.engine(&config);
        let oracle = lake.engine(&config).with_merge_strategy(MergeStrategy::DeltaRs);
        let mut expected = a.current_keys();
        let (mut marked, mut rewritten) = (0, 0);
        for round in 0..7 {
            let ids: Vec<i64> = (0..200).map(|_| rng.gen_range(1..=20_000)).collect();
            expected.extend(a.update_payload(&ids).await);
            expected.extend(a.insert(&(0..50).map(|_| Some(rng.gen_range(0..25_000))).collect::<Vec<_>>()).await);
            let s = sorted.run("sorted", &RunOptions::default()).await.expect("sorted-key run");
            oracle.run("oracle", &RunOptions::default()).await.expect("delta-rs run");
            marked += s.link_files_marked;
            rewritten += s.link_files_rewritten;
            assert_eq!(link_keys(&sorted, "sorted").await.into_keys().collect::<Affected>(), expected, "round {round}");
            // The console's count (statistics where the scan has them) must not count marked rows.
            let table = link_table(&sorted, "sorted").await.expect("link table");
            assert_eq!(deltalink::store::link::row_count(&table).await.expect("count"), expected.len() as u64, "round {round}: row count");
            assert_link_tables_agree(&sorted, "sorted", &oracle, "oracle", &format!("round {round}")).await;
            let files = link_file_ranges(&sorted, "sorted").await;
            let most = files_per_key_range(&files).into_iter().max().unwrap_or(0);
            assert!(most <= 4, "round {round}: a key range holds {most} files: {files:?}");
        }
        assert!(marked >= 3 && rewritten >= 1, "rows were marked ({marked} files) and the range rewritten ({rewritten} files)");
        // A checkpoint (delta-rs writes one every 100 commits) keeps the vectors: the table read
        // from it holds the same rows.
        let table = link_table(&sorted, "sorted").await.expect("link table");
        deltalake::checkpoints::create_checkpoint(&table, None).await.expect("checkpoint");
        let from_checkpoint = deltalake::open_table(table.table_url().clone()).await.expect("open from the checkpoint");
        assert!(files_with_deletion_vectors(&from_checkpoint) > 0, "the checkpoint holds the deletion vectors");
        assert_eq!(deltalink::store::link::row_count(&from_checkpoint).await.expect("count"), expected.len() as u64, "read from the checkpoint");
        // delta-rs's MERGE into the marked table (a library user's choice) reads through the
        // deletion vectors and removes the files with them: no key twice, none lost.
        let ids: Vec<i64> = (0..200).map(|_| rng.gen_range(1..=20_000)).collect();
        expected.extend(a.update_payload(&ids).await);
        let before = files_with_deletion_vectors(&link_table(&sorted, "sorted").await.expect("link table"));
        assert!(before > 0, "the table holds marked files when delta-rs's MERGE runs");
        let by_delta_rs = lake.engine(&config).with_merge_strategy(MergeStrategy::DeltaRs);
        by_delta_rs.run("sorted", &RunOptions::default()).await.expect("delta-rs run into a marked table");
        let table = link_table(&sorted, "sorted").await.expect("link table");
        assert_eq!(deltalink::store::link::row_count(&table).await.expect("count"), expected.len() as u64, "delta-rs's MERGE: row count");
        assert_eq!(link_keys(&sorted, "sorted").await.into_keys().collect::<Affected>(), expected, "delta-rs's MERGE");
        let orphans = unreferenced_data_files(&lake.path("_deltalink/links/sorted"));
        assert!(orphans.is_empty(), "files no commit references: {orphans:?}");
    });
}

/// What a run's commit records of its write (ours in metadata, delta-rs's in its operation
/// metrics) reads back as the pipeline's last write: run_id, kind and key counts.
async fn assert_last_write_is(engine: &deltalink::Engine, pipeline: &str, run: &deltalink::engine::RunReport, context: &str) {
    let t = link_table(engine, pipeline).await.expect("link table");
    let w = deltalink::store::link::last_write(&t).await.expect("read").expect("a write");
    assert_eq!((w.run_id, w.kind.as_str()), (run.run_id.expect("written"), "run"), "{context} {pipeline}");
    assert_eq!((w.keys_inserted, w.keys_updated), (Some(run.keys_inserted), Some(run.keys_updated)), "{context} {pipeline}");
}

/// The same oracle for a composite key `(k, rid)`: one `k` spans many link files, so file
/// ranges of the first key column overlap and the sorted-key MERGE must fall back to whole
/// rewrites where they do, and still agree with delta-rs's MERGE row for row.
#[test]
fn sorted_key_merge_equals_delta_rs_merge_for_a_composite_key() {
    let source = "keys = [\"k\", \"row_id\"]";
    for seed in 21..=22u64 {
        // Composite keys are (k, rid) pairs: at least the 400 rows first inserted.
        sorted_key_merge_agrees_with_delta_rs(&["k", "rid"], source, seed, (400, 40), 400);
    }
}

/// The same oracle for a text key (a `sql` source casting the key to VARCHAR): link files'
/// string ranges route and prune as integer ones do, touched rows are marked, and the table
/// must still agree with delta-rs's MERGE row for row and in the change feed.
#[test]
fn sorted_key_merge_equals_delta_rs_merge_for_a_text_key() {
    let source = "sql = \"SELECT CAST(c.k AS VARCHAR) AS k FROM changes c\"";
    let (marked, _) = sorted_key_merge_agrees_with_delta_rs(&["k"], source, 41, (3_000, 5_000), 2_001);
    assert!(marked > 0, "text-keyed link files were marked, not only rewritten");
}

/// Pipelines `sorted` and `oracle` over one upstream, keyed by `key` through `source` (a
/// `keys = ...` or `sql = ...` line): `first` random keys (rows, key space), then five rounds
/// of random commits, each run by the sorted-key MERGE and by delta-rs's. Every round: the same
/// key counts and last writes, at least `min_rows` link rows, the same rows and change feed; at
/// the end, no file that no commit references. Returns the link files the sorted-key MERGE
/// marked and rewrote over the rounds.
fn sorted_key_merge_agrees_with_delta_rs(key: &[&str], source: &str, seed: u64, first: (usize, i64), min_rows: usize) -> (u64, u64) {
    use deltalink::store::link::MergeStrategy;
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(seed);
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let key = key.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ");
        let mut config = String::from("[tracker]\nuri = \"_deltalink/tracker\"\n[upstreams.a]\nuri = \"a\"\n");
        for p in ["sorted", "oracle"] {
            config += &format!(
                "[pipelines.{p}]\nlink_table = \"_deltalink/links/{p}\"\nkey = [{key}]\n[[pipelines.{p}.sources]]\nupstream = \"a\"\n{source}\n"
            );
        }
        let sorted = lake.engine(&config).with_link_file_size(2048);
        let oracle = lake.engine(&config).with_link_file_size(2048).with_merge_strategy(MergeStrategy::DeltaRs);
        let (rows, key_space) = first;
        a.insert(&(0..rows).map(|_| Some(rng.gen_range(0..key_space))).collect::<Vec<_>>()).await;
        let (mut marked, mut rewritten) = (0, 0);
        for round in 0..5 {
            for _ in 0..rng.gen_range(1..4) {
                a.random_commit(&mut rng, key_space).await;
            }
            let context = format!("seed {seed} round {round}");
            let s = sorted.run("sorted", &RunOptions::default()).await.expect("sorted-key run");
            let o = oracle.run("oracle", &RunOptions::default()).await.expect("delta-rs run");
            (marked, rewritten) = (marked + s.link_files_marked, rewritten + s.link_files_rewritten);
            assert_eq!((s.keys_inserted, s.keys_updated), (o.keys_inserted, o.keys_updated), "{context}");
            assert_last_write_is(&sorted, "sorted", &s, &context).await;
            assert_last_write_is(&oracle, "oracle", &o, &context).await;
            let s_rows = assert_link_tables_agree(&sorted, "sorted", &oracle, "oracle", &context).await;
            assert!(s_rows.len() >= min_rows, "{context}: {} link rows", s_rows.len());
        }
        let orphans = unreferenced_data_files(&lake.path("_deltalink/links/sorted"));
        assert!(orphans.is_empty(), "files no commit references: {orphans:?}");
        (marked, rewritten)
    })
}

/// A run that dies after writing a MERGE's files (rewritten files, change data) but before its
/// commit leaves the link table as it was; the restart redoes the same run, and the table and
/// its change feed equal those of a pipeline that never failed.
///
/// Both ways a MERGE replaces rows: rewriting files, and (deletion vectors) marking rows in
/// new deletion-vector files plus writing them anew — the vectors written before the fault
/// are deleted too.
#[test]
fn a_fault_between_merge_files_and_commit_leaves_no_trace() {
    for deletion_vectors in [false, true] {
        fault_between_merge_files_and_commit(deletion_vectors);
    }
}

fn fault_between_merge_files_and_commit(deletion_vectors: bool) {
    rt().block_on(async {
        let lake = Lake::new();
        let mut rng = seeded(77);
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut config = simple_config(&["a"], &[("faulted", &["a"]), ("clean", &["a"])]);
        if !deletion_vectors {
            config = without_deletion_vectors(&without_deletion_vectors(&config, "faulted"), "clean");
        }
        let engine = lake.engine(&config).with_link_file_size(2048);
        let first: Vec<Option<Key>> = (0..300).map(|_| Some(rng.gen_range(0..400))).collect();
        a.insert(&first).await;
        for p in ["faulted", "clean"] {
            engine.run(p, &RunOptions::default()).await.expect("first run");
        }
        for _ in 0..4 {
            a.random_commit(&mut rng, 400).await;
        }
        let before = link_rows_and_feed(&engine, "faulted").await;
        let err = engine.run("faulted", &RunOptions::default().with_fault_after(Step::LinkFilesWritten)).await;
        assert!(err.is_err(), "the injected fault surfaces");
        assert_eq!(link_rows_and_feed(&engine, "faulted").await, before, "nothing committed before the fault");
        let strays = unreferenced_data_files(&lake.path("_deltalink/links/faulted"));
        assert!(strays.is_empty(), "the written but uncommitted files are deleted: {strays:?}");
        let redone = engine.run("faulted", &RunOptions::default()).await.expect("restart");
        let clean = engine.run("clean", &RunOptions::default()).await.expect("clean run");
        assert_eq!((redone.run_id, redone.keys_updated), (Some(2), clean.keys_updated), "the same run 2, redone");
        if deletion_vectors {
            assert!(redone.link_files_marked > 0, "the redone run marks rows through deletion vectors");
        } else {
            assert!(redone.link_files_rewritten > 0, "the redone run is a MERGE that rewrites files");
        }
        assert_link_tables_agree(&engine, "faulted", &engine, "clean", "the redone run against a clean one").await;
    });
}

/// The console's link-table browser against a real table: pages, filters and sorts are done by
/// the query, and agree with the keys and runs the test wrote.
#[test]
fn browsing_a_link_table_pages_filters_and_sorts_by_the_query() {
    use deltalink::store::link::{browse, LinkQuery, LinkSort};
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        a.insert(&(1..=30).map(Some).collect::<Vec<_>>()).await;
        engine.run("p", &RunOptions::default()).await.expect("run 1");
        let touched: Vec<i64> = a.rows.iter().filter(|(_, k)| matches!(k, Some(5 | 15 | 25))).map(|(id, _)| *id).collect();
        a.update_payload(&touched).await;
        a.insert(&[Some(31)]).await;
        engine.run("p", &RunOptions::default()).await.expect("run 2");
        let table = link_table(&engine, "p").await.expect("link table");
        let key = vec!["k".to_string()];
        let page = |filter: Option<&str>, sort, offset, limit| {
            let q = LinkQuery { filter: filter.map(String::from), sort, offset, limit };
            let (table, key) = (table.clone(), key.clone());
            async move { browse(&table, &key, &q).await.expect("browse") }
        };
        let keys_and_runs = |p: &deltalink::store::link::LinkPage| -> Vec<(String, String)> { p.rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect() };

        // Newest run first, then by key: run 2's keys lead.
        let newest = page(None, LinkSort::RunIdDesc, 0, 5).await;
        assert_eq!(newest.total_matching, 31);
        let run2: Vec<(String, String)> = [5, 15, 25, 31].iter().map(|k| (k.to_string(), "2".to_string())).collect();
        assert_eq!(keys_and_runs(&newest)[..4], run2[..]);
        assert_eq!(keys_and_runs(&newest)[4], ("1".to_string(), "1".to_string()));
        assert!(newest.columns.contains(&"provenance".to_string()));
        // A filter on the key's text, counted before paging.
        let fives = page(Some("5"), LinkSort::Key, 0, 50).await;
        assert_eq!(fives.total_matching, 3);
        assert_eq!(keys_and_runs(&fives).into_iter().map(|(k, _)| k).collect::<Vec<_>>(), ["5", "15", "25"]);
        // Pages by key.
        let third = page(None, LinkSort::Key, 10, 5).await;
        assert_eq!(keys_and_runs(&third).into_iter().map(|(k, _)| k).collect::<Vec<_>>(), ["11", "12", "13", "14", "15"]);
    });
}
