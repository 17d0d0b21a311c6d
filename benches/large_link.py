#!/usr/bin/env python3
"""A link table of N keys (default 10M), then incremental runs that touch 10k of them.

Measures what issue 7 asks of a large link table: how much of it an incremental run rewrites.
One upstream of N rows with unique keys; deltalink builds the link table from scratch, then
10k keys change twice: clustered (the newest ids, as is typical) and spread over the key range.
Prints per run the wall time, peak RSS of the deltalink process, link files rewritten and link
files in all. Data is written by child processes so the measured process's RSS is its own.
With `--text-keys` the key is a 16-hex-digit string that scrambles the id (as UUID-keyed
entities sort: the newest ids are spread over the key range too).

    python benches/large_link.py [--rows 10000000] [--text-keys] [--dir /tmp/large-link]   # needs deltalake, pyarrow
"""
import argparse, json, os, shutil, subprocess, sys, time

CDF = {"delta.enableChangeDataFeed": "true"}


def scrambled(i):
    """A 16-hex-digit key for id `i`: unique (an odd multiplier is a bijection mod 2^64), unordered."""
    return f"{(i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF:016x}"


def generate(up, rows, text_keys):
    import pyarrow as pa
    from deltalake import write_deltalake
    chunk = 2_000_000
    for start in range(0, rows, chunk):
        span = range(start, min(start + chunk, rows))
        ids = pa.array(span, pa.int64())
        keys = pa.array([scrambled(i) for i in span], pa.string()) if text_keys else ids
        write_deltalake(up, pa.table({"id": ids, "k": keys, "payload": pa.array(["p"] * len(ids))}),
                        mode="append", configuration=CDF if start == 0 else None)


def update(up, predicate):
    from deltalake import DeltaTable
    DeltaTable(up).update(updates={"payload": "'u'"}, predicate=predicate)


def count_files(link):
    from deltalake import DeltaTable
    print(len(DeltaTable(link).file_uris()))


def child(*args):
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def run(bin_, config):
    """One `run --all`: wall time, the deltalink process's peak RSS (MiB), its report."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([bin_, "--config", config, "run", "--all", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, DELTALINK_LOG="error"))
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(err.decode())
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, json.loads(out)[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--dir", default="/tmp/large-link")
    p.add_argument("--text-keys", action="store_true", help="string keys that scramble the ids (UUID-like order)")
    p.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "deltalink"))
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    up, link = os.path.join(args.dir, "t"), os.path.join(args.dir, "_deltalink", "links", "p")
    if args.child:
        what, *rest = args.child
        return {"generate": lambda: generate(up, args.rows, args.text_keys), "update": lambda: update(up, rest[0]),
                "files": lambda: count_files(link)}[what]()
    passthrough = ["--rows", str(args.rows), "--dir", args.dir] + (["--text-keys"] if args.text_keys else [])
    # Start from nothing: the upstream is written by appends, so a second run over the same
    # folder would double it and run "from scratch" over the previous run's link table.
    for own in ("t", "_deltalink"):
        shutil.rmtree(os.path.join(args.dir, own), ignore_errors=True)
    child(*passthrough, "--child", "generate")
    config = os.path.join(args.dir, "deltalink.toml")
    with open(config, "w") as f:
        f.write('[tracker]\nuri = "_deltalink/tracker"\n[upstreams.t]\nuri = "t"\n'
                '[pipelines.p]\nlink_table = "_deltalink/links/p"\nkey = ["k"]\n'
                '[[pipelines.p.sources]]\nupstream = "t"\nkeys = ["k"]\n')
    print(f"{'run':<32} {'s':>6} {'RSS MiB':>8} {'keys':>10} {'files rewritten':>16} {'files marked':>13} {'link files':>10}")

    def report(name):
        s, rss, r = run(args.bin, config)
        files = child(*passthrough, "--child", "files")
        print(f"{name:<32} {s:>6.2f} {rss:>8.0f} {r['distinct_keys']:>10,} {r['link_files_rewritten']:>16} "
              f"{r['link_files_marked']:>13} {files:>10}")

    report("from scratch")
    for name, predicate in [("10k clustered keys (newest ids)", f"id >= {args.rows - 10_000}"),
                            ("10k keys spread over the range", f"id % {args.rows // 10_000} = 7")]:
        child(*passthrough, "--child", "update", predicate)
        report(name)


if __name__ == "__main__":
    main()
