#!/usr/bin/env python3
"""deltalink benchmark harness.

Generates (fixed seed) a lake of N CDF-enabled upstream tables written by the Python `deltalake`
package (another writer), M pipelines of 2-8 upstreams each, then measures in the same run:

  1. deltalink `run --all` from scratch and incrementally (wall time, change rows/s, keys/s, peak RSS),
     each phase `--trials` times from the same state, alternating with the baselines (medians);
  2. deltalink `status --json` (the console's refresh path);
  3. the baselines a data engineer would write instead, per pipeline over the same ranges: Python
     deltalake `load_cdf` + polars + `merge`, writing (a) the same link rows as deltalink (run_id,
     change time, upstreams, provenance; checked equal at the end), (b) the script a data engineer
     writes for the original Spark design's link table (per key its last version, last change time
     and upstreams, no provenance) and (c) the keys alone;
  4. the floor: a raw pyarrow scan of the key column of every data and change file.

and prints a table of figures with ratios to the baseline and the floor.

Usage:  python benches/bench.py [--tables 8] [--pipelines 6] [--rows 200000] [--commits 12] [--dir DIR]
Needs:  a release build of deltalink (cargo build --release) and deltalake, polars, pyarrow.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# pyarrow / polars / deltalake are imported only in the child processes (generation, baseline,
# floor): a child forked from a big parent inherits its resident set in ru_maxrss.


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=int, default=8)
    p.add_argument("--pipelines", type=int, default=6)
    p.add_argument("--rows", type=int, default=200_000, help="initial rows per table")
    p.add_argument("--commits", type=int, default=12, help="mixed commits per table after the initial load")
    p.add_argument("--incremental-commits", type=int, default=3)
    p.add_argument("--checkpoint-every", type=int, default=10,
                   help="write a checkpoint every N commits (0: none, as Python deltalake and delta-rs "
                        "leave tables below their default interval of 100 commits)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--key-span", type=int, default=None,
                   help="draw the key column from 0..N (default: 2 x rows, keys close together as an "
                        "identity column's; e.g. 2**40 for keys spread thin, which deltalink groups by hashing)")
    p.add_argument("--dir", default=None, help="lake folder (default: a temp dir, removed afterwards)")
    p.add_argument("--from-lake", default=None,
                   help="copy the upstream tables of a lake generated before with the same options "
                        "(`--generate --dir D`) instead of generating them: repeated runs on one lake")
    p.add_argument("--trials", type=int, default=3,
                   help="timed trials per phase, each from the same state (figures are their medians)")
    p.add_argument("--bin", default=None, help="deltalink binary (default: target dir release build)")
    p.add_argument("--python-baseline", choices=["keys", "script", "same-output"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--generate", action="store_true",
                   help="only generate the upstream tables into --dir (for --from-lake)")
    p.add_argument("--more-commits", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compare-links", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--floor-tables", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def deltalink_bin(args):
    if args.bin:
        return args.bin
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
    return os.path.join(target, "release", "deltalink")


CDF = {"delta.enableChangeDataFeed": "true"}


def gen_table(uri, rng, rows, commits, first_id, checkpoint_every=10, key_span=None):
    import pyarrow as pa
    from deltalake import write_deltalake
    ids = pa.array(range(first_id, first_id + rows), pa.int64())
    keys = pa.array([rng.randrange(key_span or rows * 2) for _ in range(rows)], pa.int64())
    payload = pa.array([f"p{i}" for i in range(rows)], pa.string())
    write_deltalake(uri, pa.table({"id": ids, "k": keys, "payload": payload}), configuration=CDF)
    apply_commits(uri, rng, commits, rows, checkpoint_every, key_span)


def apply_commits(uri, rng, commits, rows, checkpoint_every=10, key_span=None):
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake
    dt = DeltaTable(uri)
    for c in range(commits):
        choice = c % 4
        if choice == 0:
            n = max(1, rows // 50)
            start = 10_000_000 + rng.randrange(10_000_000) * 100
            t = pa.table({
                "id": pa.array(range(start, start + n), pa.int64()),
                "k": pa.array([rng.randrange(key_span or rows * 2) for _ in range(n)], pa.int64()),
                "payload": pa.array(["new"] * n, pa.string()),
            })
            write_deltalake(uri, t, mode="append")
        elif choice == 1:
            dt.update(updates={"payload": f"'u{c}'"}, predicate=f"id % 97 = {rng.randrange(97)}")
        elif choice == 2:
            dt.update(updates={"k": "k + 1"}, predicate=f"id % 211 = {rng.randrange(211)}")
        else:
            dt.delete(f"id % 199 = {rng.randrange(199)}")
        dt = DeltaTable(uri)
        if checkpoint_every and c % checkpoint_every == checkpoint_every - 1:
            dt.create_checkpoint()


def write_config(lake, tables, pipelines, state="_deltalink", name="deltalink.toml"):
    lines = ['[tracker]', f'uri = "{state}/tracker"']
    for t in tables:
        lines += [f"[upstreams.{t}]", f'uri = "{t}"']
    for p, ups in pipelines.items():
        lines += [f"[pipelines.{p}]", f'link_table = "{state}/links/{p}"', 'key = ["k"]']
        for u in ups:
            lines += [f"[[pipelines.{p}.sources]]", f'upstream = "{u}"', 'keys = ["k"]']
    path = os.path.join(lake, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def timed(cmd, env=None):
    """Run a command; return (seconds, peak RSS MiB of that very child, stdout)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        # wait4 reports the rusage of this child alone (RUSAGE_CHILDREN would be the max over all).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"{cmd} failed:\n{err.read().decode()}")
        return dt, usage.ru_maxrss / 1024.0, out.read().decode()


def new_changes(lake, pipeline, upstreams, state, columns):
    """Per upstream with commits the pipeline has not read: (name, its change rows as a pyarrow
    table of `columns`), reading up to its latest version and recording that in `state`."""
    import pyarrow as pa
    from deltalake import DeltaTable
    for u in upstreams:
        dt = DeltaTable(os.path.join(lake, u))
        latest = dt.version()
        start = state.get((pipeline, u), -1) + 1
        if start > latest:
            continue
        yield u, pa.table(dt.load_cdf(starting_version=start, ending_version=latest, columns=columns)).select(columns)
        state[(pipeline, u)] = latest


def typed_changes(lake, pipeline, upstreams, state, columns):
    """Per upstream with new commits, its change rows as a polars frame of `columns` with the
    metadata columns typed alike across tables and an `upstream` column; and the rows read."""
    import polars as pl
    casts = {"_change_type": pl.String, "_commit_version": pl.Int64, "_commit_timestamp": pl.Datetime("us", "UTC")}
    frames, rows = [], 0
    for u, t in new_changes(lake, pipeline, upstreams, state, columns):
        rows += t.num_rows
        frames.append(pl.from_arrow(t).with_columns(
            *[pl.col(c).cast(casts[c]) for c in columns if c in casts], pl.lit(u).alias("upstream")))
    return frames, rows


def write_or_merge(link, src, updated=None):
    """Write `src` as the link table, or MERGE it on `k` (updating `updated` columns, default
    all); the seconds it took."""
    from deltalake import DeltaTable, write_deltalake
    t0 = time.perf_counter()
    if not os.path.exists(os.path.join(link, "_delta_log")):
        write_deltalake(link, src, configuration=CDF)
    else:
        merge = DeltaTable(link).merge(src, "t.k = s.k", source_alias="s", target_alias="t")
        merge = merge.when_matched_update({c: f"s.{c}" for c in updated}) if updated else merge.when_matched_update_all()
        merge.when_not_matched_insert_all().execute()
    return time.perf_counter() - t0


def baseline(lake, pipelines, state):
    """What a data engineer writes instead, keys only: load_cdf + polars unique + merge, per
    pipeline. Less than deltalink writes (no run_id, change time, upstreams or provenance)."""
    import polars as pl
    change_rows = 0
    keys = 0
    for name, ups in pipelines.items():
        frames = []
        for u, t in new_changes(lake, name, ups, state, ["k"]):
            change_rows += t.num_rows
            frames.append(pl.from_arrow(t))
        if not frames:
            continue
        uniq = pl.concat(frames).drop_nulls().unique().with_columns(pl.lit(name).alias("pipeline_name"))
        keys += uniq.height
        write_or_merge(os.path.join(lake, "_baseline", name), uniq.to_arrow())
    return change_rows, keys, None


def baseline_script(lake, pipelines, state):
    """The script a data engineer writes for the original Spark design's link table (issue 23's
    "keys-only script"): each upstream's change feed, key columns only (plus the version and
    commit time load_cdf carries), grouped per key into its last version, last change time and
    the list of upstreams; written, then MERGEd. No run_id or provenance."""
    import polars as pl
    change_rows = 0
    keys = 0
    merge_s = 0.0
    for name, ups in pipelines.items():
        frames, rows = typed_changes(lake, name, ups, state, ["k", "_commit_version", "_commit_timestamp"])
        change_rows += rows
        if not frames:
            continue
        per_key = pl.concat(frames).drop_nulls("k").group_by("k").agg(
            pl.col("_commit_version").max().alias("last_version"),
            pl.col("_commit_timestamp").max().alias("last_change_ts"),
            pl.col("upstream").unique().sort().alias("upstreams"))
        keys += per_key.height
        merge_s += write_or_merge(os.path.join(lake, "_baseline_script", name), per_key.to_arrow())
    return change_rows, keys, merge_s


def baseline_same_output(lake, pipelines, state):
    """The same link table deltalink writes, done with load_cdf + polars + merge: per key the
    run_id, latest change time, the upstreams that caused it and per upstream its latest change
    (`upstream@version:change_type@commit time`), created_at kept on update."""
    import datetime
    import polars as pl
    change_rows = 0
    keys = 0
    merge_s = 0.0
    cols = ["k", "_change_type", "_commit_version", "_commit_timestamp"]
    now = datetime.datetime.now(datetime.timezone.utc)
    for name, ups in pipelines.items():
        frames, rows = typed_changes(lake, name, ups, state, cols)
        change_rows += rows
        if not frames:
            continue
        run_id = state.get((name, "__run_id"), 0) + 1
        state[(name, "__run_id")] = run_id
        changes = pl.concat(frames).drop_nulls("k")
        per_upstream = changes.group_by("k", "upstream").agg(
            pl.col("_commit_version", "_change_type", "_commit_timestamp").sort_by("_commit_version", "_change_type").last())
        per_upstream = per_upstream.with_columns(pl.format(
            "{}@{}:{}@{}", "upstream", "_commit_version", "_change_type",
            pl.col("_commit_timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).alias("provenance"))
        per_key = per_upstream.sort("k", "upstream").group_by("k", maintain_order=True).agg(
            pl.col("_commit_timestamp").max().alias("last_change_ts"),
            pl.col("upstream").alias("upstreams"),
            pl.col("provenance"))
        per_key = per_key.with_columns(
            pl.lit(name).alias("pipeline_name"), pl.lit(run_id, pl.Int64).alias("run_id"),
            pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("created_at"),
            pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("updated_at"))
        keys += per_key.height
        updated = ["run_id", "last_change_ts", "upstreams", "provenance", "updated_at"]
        merge_s += write_or_merge(os.path.join(lake, "_baseline_same_output", name), per_key.to_arrow(), updated)
    return change_rows, keys, merge_s


BASELINES = {"keys": baseline, "script": baseline_script, "same-output": baseline_same_output}


def run_baseline_child(args):
    lake = args.dir
    with open(os.path.join(lake, "_bench_pipelines.json")) as f:
        pipelines = json.load(f)
    state_path = os.path.join(lake, f"_baseline_state_{args.python_baseline}.json")
    state = {}
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = {tuple(k.split("|")): v for k, v in json.load(f).items()}
    rows, keys, merge_s = BASELINES[args.python_baseline](lake, pipelines, state)
    with open(state_path, "w") as f:
        json.dump({"|".join(k): v for k, v in state.items()}, f)
    print(json.dumps({"change_rows": rows, "keys": keys, "merge_s": merge_s}))


def compare_links(lake, pipelines):
    """Whether deltalink's link tables hold the same rows as the same-output baseline's."""
    import polars as pl
    cols = ["k", "run_id", "last_change_ts", "upstreams", "provenance"]
    for name in pipelines:
        # polars applies deletion vectors (deltalink's link tables take them; pyarrow datasets refuse them).
        ours = pl.read_delta(os.path.join(lake, "_deltalink", "links", name), columns=cols)
        theirs = pl.read_delta(os.path.join(lake, "_baseline_same_output", name), columns=cols)
        if not ours.sort("k").equals(theirs.sort("k")):
            return f"NO ({name} differs)"
    return f"yes ({len(pipelines)} pipelines)"


def floor_scan(lake, tables):
    """Raw parquet scan of the key column of every data and change file."""
    import pyarrow.dataset as ds
    rows = 0
    for t in tables:
        root = os.path.join(lake, t)
        files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                 if f.endswith(".parquet") and "_delta_log" not in d]
        rows += ds.dataset(files, format="parquet").to_table(columns=["k"]).num_rows
    return rows


def child(args, lake, flag):
    return [sys.executable, __file__, flag, "--dir", lake, "--tables", str(args.tables), "--pipelines",
            str(args.pipelines), "--rows", str(args.rows), "--commits", str(args.commits),
            "--incremental-commits", str(args.incremental_commits), "--seed", str(args.seed),
            "--checkpoint-every", str(args.checkpoint_every)] + (["--key-span", str(args.key_span)] if args.key_span else [])


def layout(args):
    rng = random.Random(args.seed)
    tables = [f"t{i:03d}" for i in range(args.tables)]
    pipelines = {f"p{j:02d}": rng.sample(tables, rng.randint(2, min(8, len(tables)))) for j in range(args.pipelines)}
    return rng, tables, pipelines


def main():
    args = parse_args()
    if args.python_baseline:
        return run_baseline_child(args)
    rng, tables, pipelines = layout(args)
    if args.generate:
        for i, t in enumerate(tables):
            gen_table(os.path.join(args.dir, t), rng, args.rows, args.commits, i * 10_000_000, args.checkpoint_every, args.key_span)
        return
    if args.more_commits:
        rng = random.Random(args.seed + 1)
        for t in tables:
            apply_commits(os.path.join(args.dir, t), rng, args.incremental_commits, args.rows, args.checkpoint_every, args.key_span)
        return
    if args.compare_links:
        return print(compare_links(args.dir, pipelines))
    if args.floor:
        t0 = time.perf_counter()
        rows = floor_scan(args.dir, args.floor_tables.split(",") if args.floor_tables else tables)
        print(json.dumps({"rows": rows, "seconds": time.perf_counter() - t0}))
        return

    lake = args.dir or tempfile.mkdtemp(prefix="deltalink-bench-")
    os.makedirs(lake, exist_ok=True)
    bin_ = deltalink_bin(args)
    with open(os.path.join(lake, "_bench_pipelines.json"), "w") as f:
        json.dump(pipelines, f)
    if args.from_lake:
        t0 = time.perf_counter()
        for t in tables:
            shutil.copytree(os.path.join(args.from_lake, t), os.path.join(lake, t))
        gen_s = time.perf_counter() - t0
    else:
        gen_s, _, _ = timed(child(args, lake, "--generate"))
    # The new lake's pages written out before anything is timed: a copy of the heavy-churn lake
    # leaves 2.3 GB dirty, which the kernel writes back about 30 s later, during whichever
    # phase (deltalink's or a baseline's) runs then.
    os.sync()
    config = write_config(lake, tables, pipelines)
    # A twin of deltalink's state, for timing each pipeline's MERGE alone (see `phase`).
    solo_config = write_config(lake, tables, pipelines, state="_deltalink_solo", name="deltalink-solo.toml")
    print(f"lake: {lake}  ({len(tables)} tables x {args.rows} rows, {args.commits} commits each, "
          f"{len(pipelines)} pipelines; generated in {gen_s:.1f}s)", file=sys.stderr)

    env = dict(os.environ, DELTALINK_LOG="error")
    dl = [bin_, "--config", config]
    baselines = {kind: child(args, lake, f"--python-baseline={kind}") for kind in ("same-output", "script", "keys")}
    results = {}

    # Everything a phase writes: deltalink's state and each baseline's link tables and state.
    written = ["_deltalink", "_baseline", "_baseline_script", "_baseline_same_output"] + \
        [f"_baseline_state_{kind}.json" for kind in baselines]
    start = os.path.join(lake, "_trial_start")

    def keep_start():
        shutil.rmtree(start, ignore_errors=True)
        os.makedirs(start)
        for w in written:
            src = os.path.join(lake, w)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(start, w))
            elif os.path.exists(src):
                shutil.copy2(src, os.path.join(start, w))

    def back_to_start():
        for w in written:
            dst = os.path.join(lake, w)
            shutil.rmtree(dst, ignore_errors=True) if os.path.isdir(dst) else (os.path.exists(dst) and os.remove(dst))
            src = os.path.join(start, w)
            if os.path.isdir(src):
                shutil.copytree(src, dst)
            elif os.path.exists(src):
                shutil.copy2(src, dst)
        # Copies written out before anything is timed (see the lake copy above).
        os.sync()

    def trial():
        s, rss, out = timed(dl + ["run", "--all", "--json"], env)
        reports = json.loads(out)
        r = dict(dl_s=s, dl_rss=rss, rows=sum(r["change_rows"] for r in reports),
                 distinct=sum(r["distinct_keys"] for r in reports), merge_s=sum(r["link_merge"] for r in reports))
        for kind, cmd in baselines.items():
            bs, brss, bout = timed(cmd)
            b = json.loads(bout)
            r[kind] = dict(s=bs, rss=brss, rows=b["change_rows"], keys=b["keys"], merge_s=b["merge_s"])
        return r

    def phase(name):
        # The same run, one pipeline at a time on a copy of the state: the MERGE timed as the
        # baseline's is (one pipeline's merge with the whole machine), beside the run of all
        # pipelines at once (whose merges share the cores, so their sum counts shared time twice).
        solo = os.path.join(lake, "_deltalink_solo")
        shutil.rmtree(solo, ignore_errors=True)
        if os.path.isdir(os.path.join(lake, "_deltalink")):
            shutil.copytree(os.path.join(lake, "_deltalink"), solo)
        solo_merge_s = 0.0
        for p in pipelines:
            _, _, out = timed([bin_, "--config", solo_config, "run", p, "--json"], env)
            solo_merge_s += sum(r["link_merge"] for r in json.loads(out))
        # `--trials` pairs, each from the same state, deltalink and then every baseline: times
        # vary from run to run by more than the margins the ratios are judged by, so each
        # figure is the median of its trials, each ratio the median of its trials' ratios (the
        # "median of three pairs" issue 23 measured by), peak RSS the highest of the trials.
        keep_start()
        trials = []
        for i in range(args.trials):
            if i:
                back_to_start()
            trials.append(trial())
        med = statistics.median
        r = dict(trials[-1], dl_s=med(t["dl_s"] for t in trials), dl_rss=max(t["dl_rss"] for t in trials),
                 merge_s=med(t["merge_s"] for t in trials), solo_merge_s=solo_merge_s, trials=trials)
        for kind in baselines:
            r[kind] = dict(trials[-1][kind], s=med(t[kind]["s"] for t in trials), rss=max(t[kind]["rss"] for t in trials),
                           merge_s=med(t[kind]["merge_s"] or 0.0 for t in trials) if trials[-1][kind]["merge_s"] is not None else None,
                           ratio=med(t["dl_s"] / t[kind]["s"] for t in trials),
                           ratios=[t["dl_s"] / t[kind]["s"] for t in trials])
        results[name] = r

    # The CDF read part alone: `preview` plans, reads and groups exactly like a run, and writes
    # nothing. Taken for the pipeline reading the most upstreams, against the floor of its tables.
    widest = max(pipelines, key=lambda p: len(pipelines[p]))
    read_s, read_rss, read_out = timed(dl + ["preview", widest, "--json", "--limit", "1"], env)
    _, _, wfout = timed(child(args, lake, "--floor") + ["--floor-tables", ",".join(pipelines[widest])])
    wfloor = json.loads(wfout)
    read_rows = json.loads(read_out).get("change_rows")

    phase("from scratch")
    timed(child(args, lake, "--more-commits"))
    phase("incremental")

    status = []
    for _ in range(3):
        s, rss, _ = timed(dl + ["status", "--json"], env)
        status.append((s, rss))
    _, _, fout = timed(child(args, lake, "--floor"))
    floor = json.loads(fout)

    print()
    print("baselines: same-output = load_cdf + polars + merge writing the same link rows as deltalink "
          "(run_id, change time, upstreams, provenance); script = the script a data engineer writes for the "
          "Spark design's link table (per key last version, last change time, upstreams); keys = load_cdf + "
          "polars unique + merge of the keys alone")
    kinds = list(baselines)
    print(f"{'phase':<14} {'deltalink s':>11} " + " ".join(f"{k + ' s':>13} {'ratio':>6}" for k in kinds)
          + f" {'change rows':>12} {'keys':>9} {'rows/s':>10} {'keys/s':>9}")
    # Three decimals: the bar is a ratio of 0.25, and two decimals print 0.254 as 0.25.
    for name, r in results.items():
        print(f"{name:<14} {r['dl_s']:>11.3f} "
              + " ".join(f"{r[k]['s']:>13.3f} {r[k]['ratio']:>6.3f}" for k in kinds)
              + f" {r['rows']:>12,} {r['distinct']:>9,} {r['rows'] / r['dl_s']:>10,.0f} {r['distinct'] / r['dl_s']:>9,.0f}")
    print(f"each figure above: the median of {args.trials} trials from the same state; per trial:")
    for name, r in results.items():
        print(f"  {name:<12} deltalink s " + ", ".join(f"{t['dl_s']:.3f}" for t in r["trials"]) + "; "
              + "; ".join(f"ratio to {k} " + ", ".join(f"{x:.3f}" for x in r[k]["ratios"]) for k in kinds))
    print(f"{'peak RSS MiB':<14} {'deltalink':>11} " + " ".join(f"{k:>13} {'ratio':>6}" for k in kinds))
    for name, r in results.items():
        print(f"{name:<14} {r['dl_rss']:>11.0f} "
              + " ".join(f"{r[k]['rss']:>13.0f} {r['dl_rss'] / max(r[k]['rss'], 1):>6.2f}" for k in kinds))
    for name, r in results.items():
        for kind in baselines:
            if (r["rows"], r["distinct"]) != (r[kind]["rows"], r[kind]["keys"]):
                print(f"  note ({name}): change rows / keys differ: deltalink {r['rows']:,} / {r['distinct']:,}, "
                      f"{kind} baseline {r[kind]['rows']:,} / {r[kind]['keys']:,}")
    for name, r in results.items():
        so = r["same-output"]
        print(f"link MERGE alone, {name}: deltalink {r['solo_merge_s']:.2f}s one pipeline at a time like the baseline "
              f"({r['merge_s']:.2f}s summed over pipelines run concurrently), same-output baseline's merge "
              f"{so['merge_s']:.2f}s -> {r['solo_merge_s'] / so['merge_s']:.2f} ({r['merge_s'] / so['merge_s']:.2f})")
    _, _, same = timed(child(args, lake, "--compare-links"))
    print(f"link rows equal to the same-output baseline's (key, run_id, last_change_ts, upstreams, provenance): {same.strip()}")
    best = min(s for s, _ in status)
    print(f"status refresh ({len(tables)} upstreams x {len(pipelines)} pipelines): best of 3 {best:.2f}s "
          f"(whole process incl. start-up), peak RSS {min(r for _, r in status):.0f} MiB")
    print(f"floor: raw parquet scan of the key column of all {floor['rows']:,} data+change rows: {floor['seconds']:.2f}s; "
          f"deltalink from scratch = {results['from scratch']['dl_s'] / floor['seconds']:.1f}x the floor (end to end, incl. MERGE)")
    print(f"CDF read + grouping only ({widest}, {len(pipelines[widest])} upstreams, `preview`, writes nothing): "
          f"{read_s:.2f}s for {read_rows if read_rows is not None else '?'} change rows, peak RSS {read_rss:.0f} MiB; "
          f"floor for the same tables ({wfloor['rows']:,} rows in all their data+change files): {wfloor['seconds']:.2f}s "
          f"-> {read_s / wfloor['seconds']:.1f}x the floor")
    if not args.dir:
        shutil.rmtree(lake, ignore_errors=True)


if __name__ == "__main__":
    main()
