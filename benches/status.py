#!/usr/bin/env python3
"""Fleet status benchmark: how long `deltalink status --json` takes on many upstream tables, cold
(a new process, the way cron, a monitor or an operator's shell asks) and warm (a long-running
`watch` answering a Prometheus scrape from its caches, the console's refresh path), against what
a user would write instead: a Python `deltalake` script reading each table's version, last commit
and properties.

Two shapes by default, generated with a fixed seed by the Python `deltalake` package (another
writer): tables whose logs have no checkpoint (Python deltalake and delta-rs checkpoint every 100
commits, so a 61-commit table has none), and the same tables checkpointed every 10 commits.

Usage:  python benches/status.py [--tables 100] [--pipelines 20] [--commits 60] [--dir DIR]
                                 [--bin PATH] [--bin-old PATH]
Needs:  a release build of deltalink, and deltalake + pyarrow.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402  (the lake generator and config writer)

BASELINE = r"""
import json, sys, time
from deltalake import DeltaTable
t0 = time.perf_counter()
out = []
for uri in sys.argv[1:]:
    dt = DeltaTable(uri)
    last = dt.history(1)[0]
    conf = dt.metadata().configuration
    out.append((dt.version(), last.get("timestamp"), last.get("operation"),
                conf.get("delta.enableChangeDataFeed") == "true"))
print(json.dumps({"seconds": time.perf_counter() - t0, "tables": len(out)}))
"""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=int, default=100)
    p.add_argument("--pipelines", type=int, default=20)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--commits", type=int, default=60)
    p.add_argument("--dir", default=None, help="parent folder of the lakes (kept; reused when present)")
    p.add_argument("--bin", default=None)
    p.add_argument("--bin-old", default=None, help="another deltalink binary to time in the same run")
    p.add_argument("--runs", type=int, default=3)
    return p.parse_args()


def generate(lake, args, checkpoint_every):
    if os.path.exists(os.path.join(lake, "deltalink.toml")):
        return
    os.makedirs(lake, exist_ok=True)
    cmd = [sys.executable, bench.__file__, "--generate", "--dir", lake, "--tables", str(args.tables),
           "--pipelines", str(args.pipelines), "--rows", str(args.rows), "--commits", str(args.commits),
           "--checkpoint-every", str(checkpoint_every)]
    subprocess.run(cmd, check=True)

    class Layout:
        seed, tables, pipelines = 42, args.tables, args.pipelines
    _, tables, pipelines = bench.layout(Layout)
    bench.write_config(lake, tables, pipelines)
    # The same pipelines paused: `watch` then only serves metrics (nothing runs).
    with open(os.path.join(lake, "deltalink.toml")) as f:
        text = f.read()
    with open(os.path.join(lake, "paused.toml"), "w") as f:
        f.write(text.replace('key = ["k"]\n', 'key = ["k"]\npaused = true\n'))


def cold(binary, lake, runs):
    config = os.path.join(lake, "deltalink.toml")
    env = dict(os.environ, DELTALINK_LOG="error")
    subprocess.run([binary, "--config", config, "status", "--json"], check=True, capture_output=True, env=env)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([binary, "--config", config, "status", "--json"], check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return times


def warm(binary, lake, scrapes=10):
    port = 9400 + os.getpid() % 500
    proc = subprocess.Popen([binary, "--config", os.path.join(lake, "paused.toml"), "watch", "--interval", "1h",
                             "--metrics-addr", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, DELTALINK_LOG="error"))
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
                break
            except OSError:
                time.sleep(0.05)
        times = []
        for _ in range(scrapes + 1):
            t0 = time.perf_counter()
            urllib.request.urlopen(url, timeout=60).read()
            times.append(time.perf_counter() - t0)
        return times[0], times[1:]
    finally:
        proc.terminate()
        proc.wait()


def baseline(lake, tables):
    uris = [os.path.join(lake, t) for t in tables]
    out = subprocess.run([sys.executable, "-c", BASELINE, *uris], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["seconds"]


def main():
    args = parse_args()
    parent = args.dir or tempfile.mkdtemp(prefix="deltalink-status-")
    binary = args.bin or bench.deltalink_bin(args)
    tables = [f"t{i:03d}" for i in range(args.tables)]
    print(f"{args.tables} upstreams x {args.commits + 1} commits, {args.pipelines} pipelines; median of {args.runs} after a warm-up")
    print(f"{'shape':<22} {'python deltalake':>17} {'status (cold)':>14} {'ratio':>6} {'first scrape':>13} {'warm scrape':>12}"
          + ("  old binary (cold)" if args.bin_old else ""))
    for shape, every in (("no checkpoint", 0), ("checkpoint every 10", 10)):
        lake = os.path.join(parent, shape.replace(" ", "-"))
        generate(lake, args, every)
        base = statistics.median(baseline(lake, tables) for _ in range(args.runs))
        ours = statistics.median(cold(binary, lake, args.runs))
        first, scrapes = warm(binary, lake)
        line = (f"{shape:<22} {base:>16.2f}s {ours:>13.2f}s {ours / base:>5.2f}x {first * 1000:>11.0f}ms "
                f"{statistics.median(scrapes) * 1000:>6.0f}ms (max {max(scrapes) * 1000:.0f})")
        if args.bin_old:
            line += f"  {statistics.median(cold(args.bin_old, lake, args.runs)):.2f}s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
