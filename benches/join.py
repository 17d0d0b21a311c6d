#!/usr/bin/env python3
"""Join mapping against a big table: the same 200-row change of `d_spmaster`, mapped through
`SELECT ra.institution_key FROM changes c JOIN <affiliations> ra ON c.sp_id = ra.sp_id`, against
an affiliation table and one 10x larger (both sorted by sp_id, the larger in 10x the files).
A run's cost should follow the change, not the joined table's size.

Usage:  python benches/join.py [--ids 100000] [--dir DIR] [--bin PATH] [--trials 3]
Needs:  a release build of deltalink, and deltalake + pyarrow.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402

CDF = {"delta.enableChangeDataFeed": "true"}


def generate(lake, ids):
    import pyarrow as pa
    from deltalake import write_deltalake
    rng = random.Random(7)
    spmaster = pa.table({"sp_id": pa.array(range(ids * 10), pa.int64()),
                         "name": pa.array([f"n{i}" for i in range(ids * 10)], pa.string())})
    write_deltalake(os.path.join(lake, "d_spmaster"), spmaster, configuration=CDF)
    for name, n, files in (("aff_small", ids, 20), ("aff_large", ids * 10, 200)):
        per = 6
        sp = pa.array([i for i in range(n) for _ in range(per)], pa.int64())
        inst = pa.array([rng.randrange(10_000) for _ in range(n * per)], pa.int64())
        table = pa.table({"sp_id": sp, "institution_key": inst})
        chunk = len(table) // files
        # One append per file: files hold disjoint, sorted sp_id ranges, as a clustered table does.
        for f in range(files):
            write_deltalake(os.path.join(lake, name), table.slice(f * chunk, chunk), configuration=CDF,
                            mode="error" if f == 0 else "append")
    lines = ['[tracker]', 'uri = "_deltalink/tracker"']
    for t in ("d_spmaster", "aff_small", "aff_large"):
        lines += [f"[upstreams.{t}]", f'uri = "{t}"']
    for p, aff in (("join_small", "aff_small"), ("join_large", "aff_large")):
        lines += [f"[pipelines.{p}]", f'link_table = "_deltalink/links/{p}"', 'key = ["institution_key"]', 'start = "latest"',
                  f"[[pipelines.{p}.sources]]", 'upstream = "d_spmaster"',
                  f'sql = "SELECT ra.institution_key FROM changes c JOIN {aff} ra ON c.sp_id = ra.sp_id"',
                  f"[[pipelines.{p}.sources]]", f'upstream = "{aff}"', 'keys = ["institution_key"]']
    with open(os.path.join(lake, "deltalink.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def rename(lake, ids, trial, pattern):
    from deltalake import DeltaTable
    rng = random.Random(100 + trial)
    if pattern == "clustered":
        start = rng.randrange(ids - 200)
        changed = list(range(start, start + 200))  # one batch of neighbouring sp_ids
    else:
        changed = sorted(rng.sample(range(ids), 200))  # spread over the whole key range
    table = DeltaTable(os.path.join(lake, "d_spmaster"))
    # A new name each time (an update to the same value writes no change rows).
    table.update(updates={"name": f"'renamed{table.version() + 1}'"}, predicate=f"sp_id IN ({', '.join(map(str, changed))})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ids", type=int, default=100_000, help="sp_ids of the smaller affiliation table (6 rows each)")
    p.add_argument("--dir", default=None)
    p.add_argument("--bin", default=None)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rename", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--pattern", default="scattered", help=argparse.SUPPRESS)
    args = p.parse_args()
    lake = args.dir or tempfile.mkdtemp(prefix="deltalink-join-")
    if args.generate:
        return generate(lake, args.ids)
    if args.rename is not None:
        return rename(lake, args.ids, args.rename, args.pattern)
    me = [sys.executable, __file__, "--dir", lake, "--ids", str(args.ids)]
    if not os.path.exists(os.path.join(lake, "deltalink.toml")):
        subprocess.run(me + ["--generate"], check=True)
    binary = args.bin or bench.deltalink_bin(args)
    dl = [binary, "--config", os.path.join(lake, "deltalink.toml")]
    env = dict(os.environ, DELTALINK_LOG="error")
    subprocess.run(dl + ["run", "--all"], check=True, capture_output=True, env=env)
    patterns = ("scattered", "clustered")
    times = {(pat, p): [] for pat in patterns for p in ("join_small", "join_large")}
    reports = {}
    for trial in range(args.trials):
        for pattern in patterns:
            subprocess.run(me + ["--rename", str(trial), "--pattern", pattern], check=True)
            for pipeline in ("join_small", "join_large"):
                s, _, out = bench.timed(dl + ["run", pipeline, "--json"], env)
                times[(pattern, pipeline)].append(s)
                reports[(pattern, pipeline)] = json.loads(out)[0]
    print(f"200 renamed d_spmaster rows, joined with {args.ids * 6:,} and {args.ids * 60:,} affiliation rows "
          f"(median of {args.trials}, whole process; last run's reads):")
    for pattern in patterns:
        print(f"  {pattern} sp_ids" + (" (spread over the key range)" if pattern == "scattered" else " (200 neighbours)"))
        med = {p: statistics.median(times[(pattern, p)]) for p in ("join_small", "join_large")}
        for pipeline in ("join_small", "join_large"):
            r = reports[(pattern, pipeline)]
            reads = ", ".join(f"{j['files_read']} of {j['files_total']} files, {j['rows_read']:,} rows" for j in r.get("joined", []))
            print(f"    {pipeline:<11} {med[pipeline]:.2f}s  ({r['change_rows']} change rows -> {r['distinct_keys']} keys); read {reads}")
        print(f"    large / small: {med['join_large'] / med['join_small']:.2f}x")

if __name__ == "__main__":
    main()
