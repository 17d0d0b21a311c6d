#!/usr/bin/env python3
"""Input-to-frame latency of the console, idle and while `run all` is in flight.

Starts `deltalink --config CONFIG` in a detached tmux session (120x32), switches views with
`6`/`1` and polls `tmux capture-pane` until the new view is on screen; the time from send-keys to
that capture is the latency (polling adds ~2-4 ms, so the figures are upper bounds). It first
measures 10 switches idle, then presses `R`, confirms with `y`, and keeps switching until the
Activity view shows every pipeline finished. Reset the pipelines first (e.g.
`deltalink tracker reset P --to-earliest --execute --reason latency`) so the run is large.

Usage: python benches/latency.py CONFIG [DELTALINK_BINARY]
"""
import os
import statistics
import subprocess
import sys
import time

S = "deltalink-latency"


def tmux(*a):
    return subprocess.run(["tmux", *a], capture_output=True, text=True).stdout


def screen():
    return tmux("capture-pane", "-p", "-t", S)


def wait(pred, timeout=60):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        s = screen()
        if pred(s):
            return s
        time.sleep(0.002)
    raise SystemExit("timed out; screen:\n" + screen())


def switch(i):
    key, marker = ("6", "Activity ·") if i % 2 == 0 else ("1", "Upstreams ")
    t0 = time.perf_counter()
    tmux("send-keys", "-t", S, key)
    s = wait(lambda s: marker in s)
    return (time.perf_counter() - t0) * 1000, s


def main():
    cfg = sys.argv[1]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    binary = sys.argv[2] if len(sys.argv) > 2 else os.path.join(target, "release", "deltalink")
    pipelines = int(subprocess.run([binary, "--config", cfg, "status", "--json"], capture_output=True, text=True)
                    .stdout.count('"link_table"'))
    subprocess.run(["tmux", "kill-session", "-t", S], capture_output=True)
    tmux("new-session", "-d", "-s", S, "-x", "120", "-y", "32", f"{binary} --config {cfg} --log-file /tmp/deltalink-latency.log")
    try:
        wait(lambda s: "refreshed" in s)
        idle = [switch(i)[0] for i in range(10)]
        tmux("send-keys", "-t", S, "R")
        wait(lambda s: "run all" in s.lower())
        tmux("send-keys", "-t", S, "y")
        t0 = time.perf_counter()
        busy, i = [], 0
        while time.perf_counter() - t0 < 600:
            ms, s = switch(i)
            busy.append(ms)
            i += 1
            if "Activity ·" in s and ("run all: finished" in s or s.count("written") >= pipelines):
                break
        run_s = time.perf_counter() - t0
        p90 = sorted(busy)[int(len(busy) * 0.9)]
        print(f"idle: {len(idle)} view switches, median {statistics.median(idle):.0f} ms, max {max(idle):.0f} ms")
        print(f"during run all ({run_s:.1f} s): {len(busy)} view switches, median {statistics.median(busy):.0f} ms, "
              f"p90 {p90:.0f} ms, max {max(busy):.0f} ms")
    finally:
        tmux("send-keys", "-t", S, "C-c")
        subprocess.run(["tmux", "kill-session", "-t", S], capture_output=True)


if __name__ == "__main__":
    main()
