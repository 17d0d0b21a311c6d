//! Join mapping (`sql` sources) against an oracle of the delta rule, and central reads.

use std::collections::{BTreeMap, BTreeSet};

use deltalink::engine::RunOptions;
use rand::Rng;

use crate::common::*;

/// Pipeline `j`: downstream rows are `a ⋈ b ON a.k = b.k`, keyed by `b.payload`.
const JOIN_CONFIG: &str = r#"
[tracker]
uri = "_deltalink/tracker"
[upstreams.a]
uri = "a"
[upstreams.b]
uri = "b"
[pipelines.j]
link_table = "_deltalink/links/j"
key = ["payload"]
[[pipelines.j.sources]]
upstream = "a"
sql = "SELECT b.payload AS payload FROM changes c JOIN b ON c.k = b.k"
[[pipelines.j.sources]]
upstream = "b"
sql = "SELECT c.payload AS payload FROM changes c JOIN a ON c.k = a.k"
"#;

/// A row of `a` or `b` as the oracle sees it: (row_id, k, payload).
type Row = (i64, Option<i64>, String);

fn rows_of(t: &ModelTable, payloads: &BTreeMap<i64, String>) -> Vec<Row> {
    t.rows.iter().map(|(id, k)| (*id, *k, payloads.get(id).cloned().unwrap_or_default())).collect()
}

/// Joined downstream rows: (a row, b row) pairs with equal non-null k.
fn join(a: &[Row], b: &[Row]) -> BTreeSet<(Row, Row)> {
    let mut out = BTreeSet::new();
    for ra in a {
        for rb in b {
            if ra.1.is_some() && ra.1 == rb.1 {
                out.insert((ra.clone(), rb.clone()));
            }
        }
    }
    out
}

/// Tracks payloads alongside ModelTable (which tracks keys), mirroring what each commit writes.
struct Side {
    t: ModelTable,
    payloads: BTreeMap<i64, String>,
    /// Every row image this run produced (pre and post), for the oracle's upper bound.
    images: Vec<Row>,
}

impl Side {
    fn rows(&self) -> Vec<Row> {
        rows_of(&self.t, &self.payloads)
    }
    async fn random_commit(&mut self, rng: &mut rand::rngs::SmallRng) {
        let before = self.rows();
        let ids: Vec<i64> = self.t.rows.keys().copied().collect();
        let pick = |rng: &mut rand::rngs::SmallRng| ids[rng.gen_range(0..ids.len())];
        match if ids.is_empty() { 0 } else { rng.gen_range(0..4) } {
            0 => {
                let n = rng.gen_range(1..4);
                let first = self.t.next_row;
                let keys: Vec<Option<i64>> = (0..n).map(|_| Some(rng.gen_range(0..6))).collect();
                self.t.insert(&keys).await;
                for id in first..first + n as i64 {
                    self.payloads.insert(id, format!("p{id}"));
                }
            }
            1 => {
                let id = pick(rng);
                let value = format!("u{}", self.t.version() + 1);
                self.t.update_payload(&[id]).await;
                self.payloads.insert(id, value);
            }
            2 => {
                let id = pick(rng);
                self.t.update_key(&[id], 1).await;
            }
            _ => {
                let id = pick(rng);
                self.t.delete(&[id]).await;
                self.payloads.remove(&id);
            }
        }
        let after = self.rows();
        for r in before.iter().filter(|r| !after.contains(r)).chain(after.iter().filter(|r| !before.contains(r))) {
            self.images.push(r.clone());
        }
    }
}

async fn link_payloads(engine: &deltalink::Engine) -> BTreeSet<String> {
    link_rows(engine, "j").await.into_iter().map(|(k, _)| k[0].clone()).collect()
}

#[test]
fn join_mapping_follows_the_delta_rule_over_random_histories() {
    rt().block_on(async {
        for seed in 0..6u64 {
            let lake = Lake::new();
            let mut rng = seeded(1000 + seed);
            let mut a = Side { t: ModelTable::create(&lake.path("a"), true).await, payloads: BTreeMap::new(), images: vec![] };
            let mut b = Side { t: ModelTable::create(&lake.path("b"), true).await, payloads: BTreeMap::new(), images: vec![] };
            let engine = lake.engine(JOIN_CONFIG);
            engine.validate_sql().await.expect("sql validates");
            let mut linked: BTreeSet<String> = BTreeSet::new();
            for round in 0..3 {
                let (a0, b0) = (a.rows(), b.rows());
                a.images.clear();
                b.images.clear();
                for _ in 0..rng.gen_range(1..4) {
                    a.random_commit(&mut rng).await;
                }
                for _ in 0..rng.gen_range(0..3) {
                    b.random_commit(&mut rng).await;
                }
                let (a1, b1) = (a.rows(), b.rows());
                let (start, end) = (join(&a0, &b0), join(&a1, &b1));
                let must: BTreeSet<String> = start.symmetric_difference(&end).map(|(_, rb)| rb.2.clone()).collect();
                // Upper bound: keys that some change image joins to (other side: start ∪ end ∪ images).
                let mut b_all = b0.clone();
                b_all.extend(b1.clone());
                b_all.extend(b.images.clone());
                let mut a_all = a0.clone();
                a_all.extend(a1.clone());
                a_all.extend(a.images.clone());
                let may: BTreeSet<String> = join(&a.images, &b_all)
                    .into_iter()
                    .chain(join(&a_all, &b.images))
                    .map(|(_, rb)| rb.2)
                    .collect();
                let before = link_payloads(&engine).await;
                let report = engine.run("j", &RunOptions::default()).await.expect("run");
                let after = link_payloads(&engine).await;
                linked.extend(must.iter().cloned());
                // Empty while there is no key yet: a pipeline of `sql` sources creates its table with the first key.
                let all = link_rows(&engine, "j").await;
                let written: BTreeSet<String> = all
                .into_iter()
                .filter(|(_, run)| Some(*run) == report.run_id)
                .map(|(k, _)| k[0].clone())
                .collect();
                assert!(must.is_subset(&written), "seed {seed} round {round}: missed {:?}", must.difference(&written).collect::<Vec<_>>());
                assert!(written.is_subset(&may), "seed {seed} round {round}: invented {:?}", written.difference(&may).collect::<Vec<_>>());
                assert!(before.is_subset(&after));
            }
        }
    });
}

#[test]
fn both_sides_deleted_in_one_run_still_mark_the_key() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        let engine = lake.engine(JOIN_CONFIG);
        a.insert(&[Some(1)]).await; // row 1, k=1
        b.insert(&[Some(1)]).await; // row 1, k=1, payload p1
        engine.run("j", &RunOptions::default()).await.expect("first run");
        a.delete(&[1]).await;
        b.delete(&[1]).await;
        let r = engine.run("j", &RunOptions::default()).await.expect("second run");
        assert_eq!(r.distinct_keys, 1, "ΔA ⋈ B_end and A_end ⋈ ΔB both miss it; the images catch it");
        let p = engine.preview("j", None).await.expect("preview");
        assert!(p.rows.is_empty());
    });
}

#[test]
fn a_change_only_in_the_non_driving_table_marks_the_key() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        let engine = lake.engine(JOIN_CONFIG);
        a.insert(&[Some(5)]).await;
        engine.run("j", &RunOptions::default()).await.expect("run");
        // A new b row joining the unchanged a row marks its key.
        b.insert(&[Some(5)]).await; // payload p1
        let p = engine.preview("j", None).await.expect("preview");
        let keys: Vec<(String, String, String)> = p.rows.iter().map(|r| (r.key[0].clone(), r.upstream.clone(), r.change_type.clone())).collect();
        assert_eq!(keys, vec![("p1".to_string(), "b".to_string(), "insert".to_string())]);
        assert_eq!(p.rows[0].commit_version, b.version() as i64, "provenance names b's commit");
    });
}

#[test]
fn sql_errors_fail_at_validation_with_a_clear_message() {
    rt().block_on(async {
        let lake = Lake::new();
        ModelTable::create(&lake.path("a"), true).await;
        ModelTable::create(&lake.path("b"), true).await;
        let check = |sql: &str, want: &str| {
            let cfg = JOIN_CONFIG.replace("SELECT b.payload AS payload FROM changes c JOIN b ON c.k = b.k", sql);
            let engine = lake.engine(&cfg);
            let want = want.to_string();
            async move {
                let e = format!("{:#}", engine.validate_sql().await.expect_err("must fail"));
                assert!(e.contains("pipeline `j`, source `a`"), "{e}");
                assert!(e.contains(&want), "{e}");
            }
        };
        check("SELECT x.payload AS payload FROM changes c JOIN nope x ON c.k = x.k", "unknown table `nope`").await;
        check("SELECT b.k FROM changes c JOIN b ON c.k = b.k", "must return exactly the key columns").await;
        check("SELEC b.payload FROM changes", "does not parse").await;
        check("SELECT b.nocol AS payload FROM changes c JOIN b ON c.k = b.k", "does not plan").await;
    });
}

#[test]
fn pipelines_sharing_an_upstream_read_it_once_per_cycle() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p1", &["a"]), ("p2", &["a"])]));
        a.insert(&[Some(1), Some(2)]).await;
        a.update_key(&[1], 10).await;
        let before = engine.scans.get();
        let results = engine.run_many(&[], &RunOptions::default()).await;
        assert_eq!(engine.scans.get() - before, 1, "one CDF scan for two pipelines");
        for (name, r) in results {
            let r = r.expect("run");
            assert_eq!(r.distinct_keys, 3, "{name}");
        }
        let keys = |m: BTreeMap<Key, i64>| m.into_keys().collect::<Vec<_>>();
        assert_eq!(keys(link_keys(&engine, "p1").await), vec![1, 2, 11]);
        assert_eq!(keys(link_keys(&engine, "p2").await), vec![1, 2, 11]);
    });
}

/// A `sql` source that returns the key as text while the link table's key is a LONG (from a
/// `keys` source): its keys are cast to the link table's type, so "10" and 10 are one key and
/// the MERGE sees them in numeric order — no duplicate, none lost, over several runs.
#[test]
fn a_sql_key_of_another_type_is_cast_to_the_link_tables() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        let cfg = simple_config(&["a", "b"], &[("p", &["b"])]).replace(
            "[[pipelines.p.sources]]",
            "[[pipelines.p.sources]]\nupstream = \"a\"\nsql = \"SELECT CAST(c.k AS VARCHAR) AS k FROM changes c\"\n[[pipelines.p.sources]]",
        );
        let engine = lake.engine(&cfg).with_link_file_size(1024);
        let mut expected = Affected::new();
        expected.extend(b.insert(&(0..200).map(Some).collect::<Vec<_>>()).await);
        engine.run("p", &RunOptions::default()).await.expect("first run");
        for round in 0..3 {
            // Keys whose text order differs from their numeric order (9 < 10 < 100 < 1000).
            expected.extend(a.insert(&[Some(9 + round), Some(10 + round), Some(100 + round), Some(1000 + round)]).await);
            expected.extend(b.insert(&[Some(10 + round), Some(500 + round)]).await);
            engine.run("p", &RunOptions::default()).await.expect("run");
            let link = link_keys(&engine, "p").await;
            assert_eq!(link.keys().copied().collect::<Affected>(), expected, "round {round}");
            let rows = link_rows(&engine, "p").await;
            assert_eq!(rows.len(), expected.len(), "round {round}: one row per key");
        }
    });
}

/// A replay of one upstream of a `sql` pipeline still joins the upstreams it does not replay
/// (at their latest versions), and writes what a fresh pipeline driven by that upstream alone
/// writes over the same range.
#[test]
fn replaying_one_upstream_of_a_sql_pipeline_joins_the_others() {
    use deltalink::engine::Replay;
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        a.insert(&[Some(1), Some(2), Some(3)]).await;
        b.insert(&[Some(1), Some(3), Some(4), Some(3)]).await;
        a.insert(&[Some(4), Some(5)]).await;
        let engine = lake.engine(JOIN_CONFIG);
        let scratch = url_of(&lake.path("scratch"));
        let replay = Replay {
            pipeline: "j".into(),
            from_version: 0,
            to_version: None,
            upstreams: vec!["a".into()],
            into: Some(scratch.clone()),
            execute: true,
            reason: None,
        };
        let r = engine.replay(&replay).await.expect("replay of `a` alone");
        let t = deltalink::store::lake::open_owned(&scratch, &Default::default()).await.expect("open").expect("scratch exists");
        let replayed: BTreeSet<String> =
            deltalink::store::link::all_keys(&t, &["payload".to_string()]).await.expect("keys").into_iter().map(|(k, _)| k[0].clone()).collect();

        // Oracle from the models: every b row whose k is one of a's keys (a changed them all).
        let a_keys: BTreeSet<i64> = a.rows.values().flatten().copied().collect();
        let expected: BTreeSet<String> =
            b.rows.iter().filter(|(_, k)| k.is_some_and(|k| a_keys.contains(&k))).map(|(id, _)| format!("p{id}")).collect();
        assert_eq!(expected.len(), 4, "b's rows with k 1, 3, 4, 3 join a's changes: {expected:?}");
        assert_eq!((replayed, r.distinct_keys), (expected, 4));
    });
}

/// A change that joins a few rows of a bigger table reads the files whose statistics can hold
/// the change rows' join keys, not the whole table (the bench's 10x table rests on this); a
/// query that does not allow narrowing (a LIMIT between the table and the join) reads it all.
/// Both write the keys the models say.
#[test]
fn a_joined_table_is_read_only_where_the_change_rows_join_it() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        a.insert(&(0..100).map(Some).collect::<Vec<_>>()).await;
        for file in 0..10 {
            // One file per commit, holding k in [10·file, 10·file + 9]: clustered, as a sorted table is.
            b.insert(&(0..30).map(|i| Some(file * 10 + i % 10)).collect::<Vec<_>>()).await;
        }
        let whole = r#"
[pipelines.whole]
link_table = "_deltalink/links/whole"
key = ["payload"]
[[pipelines.whole.sources]]
upstream = "a"
sql = "SELECT b.payload AS payload FROM changes c JOIN (SELECT * FROM b LIMIT 1000000) b ON c.k = b.k"
[[pipelines.whole.sources]]
upstream = "b"
sql = "SELECT c.payload AS payload FROM changes c"
"#;
        let engine = lake.engine(&format!("{JOIN_CONFIG}{whole}"));
        for p in ["j", "whole"] {
            engine.run(p, &RunOptions::default()).await.expect("first run");
        }
        let ids: Vec<i64> = a.rows.iter().filter(|(_, k)| matches!(k, Some(42) | Some(47))).map(|(id, _)| *id).collect();
        a.update_payload(&ids).await;
        let expected: BTreeSet<String> =
            b.rows.iter().filter(|(_, k)| matches!(k, Some(42) | Some(47))).map(|(id, _)| format!("p{id}")).collect();
        assert_eq!(expected.len(), 6, "three rows of b for each changed k");
        for (pipeline, narrowed) in [("j", true), ("whole", false)] {
            let report = engine.run(pipeline, &RunOptions::default()).await.expect("run");
            let written: BTreeSet<String> = link_rows(&engine, pipeline)
                .await
                .into_iter()
                .filter(|(_, run)| Some(*run) == report.run_id)
                .map(|(k, _)| k[0].clone())
                .collect();
            assert_eq!(written, expected, "{pipeline}: keys of this run");
            let read = report.joined.iter().find(|j| j.source == "a" && j.upstream == "b").expect("b, joined by a's sql");
            if narrowed {
                assert_eq!((read.pruned_on.clone(), read.files_read, read.files_total), (vec!["k".to_string()], 1, 10), "{read:?}");
                assert!((6..=30).contains(&read.rows_read), "{read:?}");
            } else {
                assert_eq!((read.pruned_on.is_empty(), read.files_read, read.files_total, read.rows_read), (true, 10, 10, 300), "{read:?}");
            }
        }
    });
}
