#!/usr/bin/env python3
"""Chaos test of deltalink's exactly-once protocol with many actors at once (issue 18).

What it does: builds a fresh lake (three CDF-enabled upstream Delta tables written with Python
`deltalake`, a config with three pipelines: one reading two upstreams, two sharing one), then runs,
all at once, for a fixed time:
  * a writer committing appends, payload updates, key moves (id -> id + offset) and deletes;
  * three `deltalink watch --interval 200ms` processes (restarted whenever they die);
  * an operator issuing audited backward resets and replays into the pipelines' own link tables;
  * faults: SIGKILL of random watchers (often the one holding a pipeline's lease), SIGSTOP of a
    lease holder for longer than the lease TTL then SIGCONT, a watcher 30 s ahead of the others
    with libfaketime preloaded (Debian's `faketime`, when installed), and with `--store s3` a
    proxy in front of the S3 server (moto) that delays, drops and fails requests (HTTP 500/503,
    resets, lost responses, stalls).
Then it quiesces (faults off, every process continued, watchers catch up until every tracker row
is at its upstream's latest version with no run pending), stops the watchers with SIGINT and checks
with an oracle of its own (Python deltalake/polars and the raw Delta logs, no deltalink code):
  a. no key lost, none invented: each link table holds exactly the keys of every change row
     (insert, delete, both update images) of the upstreams its pipeline reads;
  b. no run_id applied twice or out of order: link commits carry strictly increasing run_ids;
  c. tracker and link table agree: the tracker's run_ids cover the link's, and the link's
     application transaction is the highest run_id it committed;
  d. every executed reset is honoured or refused, never silently undone: replaying the tracker's
     audit log (its Delta history) per (pipeline, upstream), each run reads from exactly where the
     previous audited commit left the position, and the replay ends where the tracker is;
  e. the audit log is complete: every operator command that exited 0 is in it, with its reason.
It prints the figures (actions, kills, freezes, store faults, keys checked) and every violation,
and exits 1 if there is any (2 if the test itself could not run).

Run (with the venv that has deltalake, pyarrow, polars and moto[server]):
  short, for CI (~3 min on 2 cores):
    ~/.cache/deltalink-venv/bin/python benches/chaos.py --bin $T/release/deltalink --short --ttl 2
  long, for the benchmark folder (>= 30 min, >= 200 kills/freezes with --ttl 2):
    ~/.cache/deltalink-venv/bin/python benches/chaos.py --bin $T/release/deltalink --minutes 30 --ttl 2
  on S3 (moto on loopback behind the fault proxy): add --store s3
  re-run a failing case: add the --seed it printed (timing still varies; the choices do not).
`--ttl N` writes `lease_ttl_seconds = N` into [tracker]; a binary that refuses the field runs with
its default 60 s TTL (then a freeze lasts > 60 s, so short mode gets one). The lake is kept in
`--workdir` (default: a temp folder, removed after a clean run) with every watcher's log.
"""

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder, write_deltalake

ROOT = Path(__file__).resolve().parent.parent
UPSTREAMS = ("a", "b", "c")
# One pipeline reading two upstreams; `joined` and `b_feed` share upstream b.
PIPELINES = {"joined": ("a", "b"), "b_feed": ("b",), "c_feed": ("c",)}
KEY = "id"
DEFAULT_TTL = 60  # deltalink's lease TTL when the config does not set one
MOVE_STEP = 10_000_000  # a key move adds a multiple of this: ids never collide
CLOCK_OFFSET = "+30s"
T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Options


@dataclass
class Pace:
    """Seconds between actions of each actor (uniform in each range)."""

    writer: tuple = (0.15, 0.6)
    operator: tuple = (0.5, 2.5)
    kill: tuple = (2.0, 7.0)
    freeze_gap: tuple = (1.0, 5.0)
    store_fault_rate: float = 0.04


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the deltalink binary")
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="length of the chaos phase")
    length.add_argument("--minutes", type=float, help="length of the chaos phase")
    ap.add_argument("--short", action="store_true", help="CI mode: a 90 s chaos phase, ~3 min in all")
    ap.add_argument("--seed", type=int, help="seed of every random choice (printed when not given)")
    ap.add_argument("--workdir", help="where the lake and logs go (kept)")
    ap.add_argument("--store", choices=("local", "s3"), default="local")
    ap.add_argument("--ttl", type=int, help="lease TTL to configure (lease_ttl_seconds); e.g. 2")
    ap.add_argument("--watchers", type=int, default=3)
    args = ap.parse_args(argv)
    if args.seconds is not None:
        args.chaos_seconds = args.seconds
    elif args.minutes is not None:
        args.chaos_seconds = args.minutes * 60
    else:
        args.chaos_seconds = 90 if args.short else 30 * 60
    args.quiesce_seconds = 60 if args.short else 300
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    args.bin = str(Path(args.bin).resolve())
    if not os.access(args.bin, os.X_OK):
        ap.error(f"--bin {args.bin} is not an executable")
    return args


# ---------------------------------------------------------------------------------------------
# Where the lake lives: local disk or S3 (moto). The oracle reads through here, never through
# the fault proxy.


def upstream_rel(u):
    return f"upstreams/{u}"


def link_rel(p):
    return f"_deltalink/links/{p}"


TRACKER_REL = "_deltalink/tracker"


class LocalStore:
    kind = "local"
    options = None  # storage options for Python deltalake

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.faults = None

    def uri(self, rel):
        return str(self.root / rel)

    def config_uri(self, rel, config_dir):
        return os.path.relpath(self.uri(rel), config_dir)

    def storage_section(self):
        return ""

    def list(self, rel_dir):
        try:
            return os.listdir(self.root / rel_dir)
        except FileNotFoundError:
            return []

    def read(self, rel_path):
        try:
            return (self.root / rel_path).read_bytes()
        except FileNotFoundError:
            return None

    def close(self):
        pass


class S3Store:
    """A moto S3 server on loopback (tests/s3_server.py) and a fault proxy in front of it that
    every deltalink process talks to; the writer and the oracle talk to moto directly."""

    kind = "s3"
    bucket = "lake"

    def __init__(self, rng):
        from pyarrow import fs as pafs

        script = ROOT / "tests" / "s3_server.py"
        self.server = subprocess.Popen([sys.executable, str(script), self.bucket], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        line = self.server.stdout.readline().strip()
        if not line.startswith("READY "):
            raise SystemExit(f"tests/s3_server.py did not start (is moto[server] installed?): {line!r}")
        self.endpoint = line.split()[1]
        host, port = self.endpoint.rsplit("//", 1)[1].split(":")
        self.faults = FaultProxy((host, int(port)), rng)
        self.options = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        self.fs = pafs.S3FileSystem(access_key="test", secret_key="test", endpoint_override=self.endpoint,
                                    scheme="http", region="us-east-1")
        log(f"S3 server (moto) at {self.endpoint}; fault proxy at {self.faults.endpoint}")

    def uri(self, rel):
        return f"s3://{self.bucket}/{rel}"

    def config_uri(self, rel, config_dir):
        return self.uri(rel)

    def storage_section(self):
        return (
            "[storage]\n"
            f'AWS_ENDPOINT_URL = "{self.faults.endpoint}"\n'
            'AWS_ALLOW_HTTP = "true"\nAWS_REGION = "us-east-1"\n'
            'AWS_ACCESS_KEY_ID = "test"\nAWS_SECRET_ACCESS_KEY = "test"\n'
            'max_retries = "3"\nretry_timeout = "10s"\n\n'
        )

    def list(self, rel_dir):
        from pyarrow import fs as pafs

        sel = pafs.FileSelector(f"{self.bucket}/{rel_dir}", allow_not_found=True)
        return [Path(i.path).name for i in self.fs.get_file_info(sel)]

    def read(self, rel_path):
        try:
            with self.fs.open_input_stream(f"{self.bucket}/{rel_path}") as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def close(self):
        self.faults.close()
        if self.server.poll() is None:
            self.server.stdin.close()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()


# ---------------------------------------------------------------------------------------------
# The S3 fault proxy: one request per client connection (the moto server closes every
# connection after its response, so clients never reuse one).


class FaultProxy:
    FAULTS = (("delay", 35), ("http503", 20), ("http500", 15), ("reset", 10), ("lost_response", 10), ("stall", 10))

    def __init__(self, upstream, rng):
        self.upstream = upstream
        self.rng = rng
        self.rng_lock = threading.Lock()
        self.rate = 0.0  # set while the chaos phase runs
        self.counts = collections.Counter()
        self.requests = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed = False
        threading.Thread(target=self.accept_loop, daemon=True).start()

    @property
    def total(self):
        return sum(self.counts.values())

    def accept_loop(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def pick(self):
        with self.rng_lock:
            self.requests += 1
            if self.rng.random() >= self.rate:
                return None, 0.0
            kinds, weights = zip(*self.FAULTS)
            kind = self.rng.choices(kinds, weights)[0]
            pause = {"delay": self.rng.uniform(0.1, 1.5), "stall": self.rng.uniform(2.0, 6.0)}.get(kind, 0.0)
            self.counts[kind] += 1
            return kind, pause

    def handle(self, conn):
        try:
            head, body = read_http_message(conn)
            if head is None:
                return
            kind, pause = self.pick()
            if kind in ("reset", "stall"):
                time.sleep(pause)
                return reset(conn)
            if kind in ("http500", "http503"):
                return conn.sendall(s3_error(500 if kind == "http500" else 503))
            if kind == "delay":
                time.sleep(pause)
            response = self.forward(head, body)
            if kind == "lost_response":
                return reset(conn)  # the request took effect; its client never hears so
            conn.sendall(response)
        except OSError:
            pass
        finally:
            conn.close()

    def forward(self, head, body):
        with socket.create_connection(self.upstream, timeout=60) as up:
            up.sendall(with_header(head, "Connection", "close") + body)
            chunks = []
            while True:
                data = up.recv(1 << 16)
                if not data:
                    break
                chunks.append(data)
        response = b"".join(chunks)
        end = response.find(b"\r\n\r\n")
        if end < 0:
            return response
        return with_header(response[: end + 4], "Connection", "close") + response[end + 4:]

    def close(self):
        self.closed = True
        self.sock.close()


def read_http_message(conn):
    """One HTTP request: its head (up to the blank line) and its body (Content-Length or chunked)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(1 << 16)
        if not data:
            return None, b""
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head, rest = buf[:end], buf[end:]
    headers = head.decode("latin-1").lower()
    m = re.search(r"\r\ncontent-length:\s*(\d+)", headers)
    if m:
        need = int(m.group(1))
        while len(rest) < need:
            data = conn.recv(1 << 16)
            if not data:
                break
            rest += data
    elif "transfer-encoding: chunked" in headers:
        while not rest.endswith(b"0\r\n\r\n"):
            data = conn.recv(1 << 16)
            if not data:
                break
            rest += data
    return head, rest


def with_header(head, name, value):
    lines = head[:-4].split(b"\r\n")
    kept = [ln for ln in lines[1:] if not ln.lower().startswith(name.lower().encode() + b":")]
    return b"\r\n".join([lines[0], *kept, f"{name}: {value}".encode()]) + b"\r\n\r\n"


def s3_error(status):
    text = {500: "Internal Server Error", 503: "Service Unavailable"}[status]
    code = {500: "InternalError", 503: "SlowDown"}[status]
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>chaos</Message></Error>'.encode()
    return (f"HTTP/1.1 {status} {text}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def reset(conn):
    """Close with a TCP reset (SO_LINGER 0) instead of an orderly close."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


# ---------------------------------------------------------------------------------------------
# The lake and the config


@dataclass
class TableModel:
    """What the writer knows of one upstream (it is its only writer)."""

    live: list = field(default_factory=list)
    next_id: int = 1
    moves: int = 0


def create_upstreams(store, rng):
    models = {}
    for u in UPSTREAMS:
        m = TableModel()
        n = rng.randint(20, 60)
        ids = list(range(m.next_id, m.next_id + n))
        m.next_id += n
        m.live.extend(ids)
        write_deltalake(store.uri(upstream_rel(u)), rows(ids, "init"), storage_options=store.options,
                        configuration={"delta.enableChangeDataFeed": "true"})
        models[u] = m
    return models


def rows(ids, payload):
    return pa.table({KEY: pa.array(ids, pa.int64()), "payload": pa.array([f"{payload}-{i}" for i in ids])})


def config_text(store, config_dir, ttl):
    out = store.storage_section()
    out += f'[tracker]\nuri = "{store.config_uri(TRACKER_REL, config_dir)}"\n'
    if ttl is not None:
        out += f"lease_ttl_seconds = {ttl}\n"
    for u in UPSTREAMS:
        out += f'\n[upstreams.{u}]\nuri = "{store.config_uri(upstream_rel(u), config_dir)}"\n'
    for p, ups in PIPELINES.items():
        out += (f'\n[pipelines.{p}]\nlink_table = "{store.config_uri(link_rel(p), config_dir)}"\n'
                f'key = ["{KEY}"]\nstart = "earliest"\n')
        for u in ups:
            out += f'[[pipelines.{p}.sources]]\nupstream = "{u}"\nkeys = ["{KEY}"]\n'
    return out


def write_config(args, store, workdir):
    """Write the config, with `lease_ttl_seconds` when asked and the binary takes it. Returns
    (path, effective TTL)."""
    path = workdir / "deltalink.toml"
    if args.ttl is not None:
        path.write_text(config_text(store, workdir, args.ttl))
        res = Deltalink(args.bin, path).run("status", timeout=120)
        if res.rc == 0:
            log(f"lease TTL: {args.ttl} s (lease_ttl_seconds accepted by the binary)")
            return path, args.ttl
        log(f"lease TTL: the binary refuses lease_ttl_seconds ({first_line(res.err)}); "
            f"running without it, at the default {DEFAULT_TTL} s")
    path.write_text(config_text(store, workdir, None))
    res = Deltalink(args.bin, path).run("status", timeout=120)
    if res.rc != 0:
        raise SystemExit(f"deltalink refuses the chaos config {path}:\n{res.err}")
    if args.ttl is None:
        log(f"lease TTL: default ({DEFAULT_TTL} s; pass --ttl N to configure a shorter one)")
    return path, DEFAULT_TTL


def one_line(e):
    return first_line(str(e)) or type(e).__name__


def first_line(text):
    """The gist of a deltalink error on stderr: its chain of causes (color-eyre numbers them)."""
    lines = [ln.rstrip() for ln in strip_ansi(text).splitlines()]
    chain = error_chain(lines)
    if chain:
        return chain
    meaningful = (ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith(("Location:", "Backtrace")))
    return next(meaningful, "")[:300]


def error_chain(lines):
    causes = []
    for ln in lines:
        if ln.strip().startswith("Location:"):
            break
        m = re.match(r"\s*\d+: (.*)", ln)
        if m:
            causes.append(m.group(1).strip())
    return " <- ".join(causes)[:300]


def strip_ansi(text):
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# ---------------------------------------------------------------------------------------------
# The deltalink command line


@dataclass
class CmdResult:
    rc: int
    out: str
    err: str
    secs: float


class Deltalink:
    def __init__(self, binary, config):
        self.binary = binary
        self.config = str(config)

    def argv(self, *args):
        return [self.binary, "--config", self.config, *args]

    @staticmethod
    def env(user):
        return {**os.environ, "USER": user, "NO_COLOR": "1", "RUST_BACKTRACE": "0"}

    def run(self, *args, timeout=120, user="chaos-operator"):
        started = time.monotonic()
        try:
            p = subprocess.run(self.argv(*map(str, args)), capture_output=True, text=True, timeout=timeout,
                               env=self.env(user))
            return CmdResult(p.returncode, p.stdout, p.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as e:
            err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            return CmdResult(-999, "", f"TIMEOUT after {timeout}s\n{err}", time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# Actor 1: the upstream writer


class Writer(threading.Thread):
    WEIGHTS = {"append": 4, "update": 3, "move": 2, "delete": 2}

    def __init__(self, store, models, rng, pace, stop):
        super().__init__(name="writer", daemon=True)
        self.store, self.models, self.rng, self.pace, self.stop = store, models, rng, pace, stop
        self.tables = {u: DeltaTable(store.uri(upstream_rel(u)), storage_options=store.options) for u in UPSTREAMS}
        self.commits = collections.Counter()
        self.errors = []

    def run(self):
        while not self.stop.wait(self.rng.uniform(*self.pace)):
            u = self.rng.choice(UPSTREAMS)
            op = self.rng.choices(list(self.WEIGHTS), list(self.WEIGHTS.values()))[0]
            if not self.models[u].live:
                op = "append"
            try:
                self.tables[u].update_incremental()
                getattr(self, op)(self.tables[u], self.models[u])
                self.commits[op] += 1
            except Exception as e:  # the writer is not under test: note it and go on
                self.errors.append(f"{op} on {u}: {one_line(e)}")

    def append(self, dt, m):
        ids = list(range(m.next_id, m.next_id + self.rng.randint(1, 12)))
        m.next_id += len(ids)
        write_deltalake(dt, rows(ids, f"v{sum(self.commits.values())}"), mode="append")
        m.live.extend(ids)

    def pick(self, m):
        return self.rng.sample(m.live, min(len(m.live), self.rng.randint(1, 5)))

    def update(self, dt, m):
        dt.update(updates={"payload": f"'u{sum(self.commits.values())}'"}, predicate=in_list(self.pick(m)))

    def move(self, dt, m):
        ids = self.pick(m)
        m.moves += 1
        offset = MOVE_STEP * m.moves
        dt.update(updates={KEY: f"{KEY} + {offset}"}, predicate=in_list(ids))
        moved = set(ids)
        m.live = [i for i in m.live if i not in moved] + [i + offset for i in ids]

    def delete(self, dt, m):
        ids = set(self.pick(m))
        dt.delete(in_list(sorted(ids)))
        m.live = [i for i in m.live if i not in ids]


def in_list(ids):
    return f"{KEY} IN ({', '.join(str(i) for i in ids)})"


# ---------------------------------------------------------------------------------------------
# Actor 2: the watch processes


@dataclass(eq=False)
class Slot:
    index: int
    skewed: bool  # runs with libfaketime preloaded (its clock ahead)
    proc: subprocess.Popen = None
    incarnation: int = 0
    frozen: bool = False
    killed_by_us: bool = False
    log_path: Path = None
    started: float = 0.0
    exit_seen: float = None  # when the supervisor saw it exit on its own


class Watchers:
    def __init__(self, dl, n, logdir, faketime):
        self.dl, self.logdir, self.faketime = dl, logdir, faketime  # libfaketime's path, or None
        self.slots = [Slot(i, skewed=(i == 0 and faketime is not None)) for i in range(n)]
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.restarts = 0
        self.unexpected_exits = []  # (slot, incarnation, rc, last log lines)

    def start(self):
        for s in self.slots:
            self.spawn(s)
        threading.Thread(target=self.supervise, name="supervisor", daemon=True).start()

    def spawn(self, s):
        s.incarnation += 1
        s.killed_by_us = False
        s.frozen = False
        s.started, s.exit_seen = time.monotonic(), None
        s.log_path = self.logdir / f"watch{s.index}.{s.incarnation}.log"
        argv = self.dl.argv("watch", "--interval", "200ms")
        env = Deltalink.env(f"watch{s.index}.{s.incarnation}")
        if s.skewed:
            env.update(LD_PRELOAD=self.faketime, FAKETIME=CLOCK_OFFSET, FAKETIME_DONT_FAKE_MONOTONIC="1")
        with open(s.log_path, "wb") as out:
            s.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def supervise(self):
        while not self.stopping.wait(0.2):
            with self.lock:
                for s in self.slots:
                    if s.proc.poll() is None or s.frozen or self.stopping.is_set():
                        continue
                    if not s.killed_by_us and not self.note_exit(s):
                        continue  # in a crash loop: restarted a little later
                    reap_group(s.proc.pid)
                    self.restarts += 1
                    self.spawn(s)

    def note_exit(self, s):
        """Record a watcher that exited on its own; False while its restart should wait (one
        that dies at once is restarted once a second, not five times)."""
        if s.exit_seen is None:
            s.exit_seen = time.monotonic()
            tail = s.log_path.read_text(errors="replace").splitlines()[-6:]
            self.unexpected_exits.append((s.index, s.incarnation, s.proc.returncode, tail))
            if sum(e[0] == s.index for e in self.unexpected_exits) <= 3:
                log(f"watcher {s.index}.{s.incarnation} exited by itself (rc {s.proc.returncode}): "
                    f"{first_line(chr(10).join(tail))}")
        return time.monotonic() - s.started >= 2 or time.monotonic() - s.exit_seen >= 1

    def signal(self, s, sig):
        try:
            os.killpg(s.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self, s):
        with self.lock:
            if s.frozen or s.proc.poll() is not None:
                return False
            s.killed_by_us = True
            self.signal(s, signal.SIGKILL)
            return True

    def freeze(self, s):
        with self.lock:
            if s.frozen or s.proc.poll() is not None:
                return False
            s.frozen = True
            self.signal(s, signal.SIGSTOP)
            return True

    def thaw(self, s):
        with self.lock:
            self.signal(s, signal.SIGCONT)
            s.frozen = False

    def thaw_all(self):
        for s in self.slots:
            self.thaw(s)

    def live(self):
        with self.lock:
            return [s for s in self.slots if not s.frozen and s.proc.poll() is None]

    def slot_of_pid(self, pid):
        """The slot whose process group `pid` is in."""
        group = process_group(pid)
        with self.lock:
            return next((s for s in self.slots if s.proc.pid in (pid, group)), None)

    def stop(self, timeout):
        """SIGINT every watcher (watch stops after the in-flight run); SIGKILL what is left after
        `timeout`. Returns the slots that had to be killed."""
        self.stopping.set()
        with self.lock:
            for s in self.slots:
                self.signal(s, signal.SIGCONT)
                self.signal(s, signal.SIGINT)
        deadline = time.monotonic() + timeout
        stuck = []
        for s in self.slots:
            while time.monotonic() < deadline and group_alive(s.proc.pid):
                s.proc.poll()
                time.sleep(0.1)
            if group_alive(s.proc.pid):
                stuck.append(s.index)
                self.signal(s, signal.SIGKILL)
            s.proc.wait()
        return stuck

    def error_summary(self):
        """FAILED runs and panics in the watchers' logs, by kind (numbers blanked out)."""
        kinds = collections.Counter()
        for path in sorted(self.logdir.glob("watch*.log")):
            lines = strip_ansi(path.read_text(errors="replace")).splitlines()
            for i, line in enumerate(lines):
                if "panicked" in line:
                    kinds[line.strip()[:220]] += 1
                elif line.endswith(": FAILED"):
                    what = f"{line.strip()} {error_chain(lines[i + 1:i + 15]) or first_line(chr(10).join(lines[i + 1:i + 3]))}"
                    kinds[re.sub(r"\d+", "N", what)[:220]] += 1
        return kinds


def process_group(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def group_alive(pgid):
    """Whether any non-zombie process is in process group `pgid`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def libfaketime():
    """libfaketime (Debian's package `faketime`), if installed. Preloaded directly, as the health
    test does: the `faketime` wrapper opens a semaphore named after its pid, and one left behind
    by a killed wrapper made the next wrapper with that pid refuse to start."""
    arch = os.uname().machine
    for path in (f"/usr/lib/{arch}-linux-gnu/faketime/libfaketime.so.1", "/usr/lib64/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1"):
        if os.path.exists(path):
            return path
    return None


def reap_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)  # anything the watcher's group left behind
    except ProcessLookupError:
        pass


def lease_holder_pids(store):
    """Pid of the newest lease generation's holder, per pipeline (read from the lease objects)."""
    out = {}
    for p in PIPELINES:
        rel = f"{TRACKER_REL}/_leases/{p}"
        names = sorted(n for n in store.list(rel) if n.endswith(".json"))
        if not names:
            continue
        body = store.read(f"{rel}/{names[-1]}")
        try:
            out[p] = json.loads(body)["pid"]
        except (TypeError, ValueError, KeyError):
            pass
    return out


# ---------------------------------------------------------------------------------------------
# Actor 3: the operator


@dataclass
class Action:
    n: int
    kind: str  # reset | replay
    pipeline: str
    upstream: str
    detail: str
    reason: str
    rc: int
    outcome: str
    stderr: str
    to_version: int = None


OUTCOMES = (
    ("is busy", "refused: busy"),
    ("moved since the dry run", "refused: tracker moved"),
    ("unfinished run", "refused: run pending"),
    ("out of range", "refused: version out of range"),
    ("cannot replay", "refused: version out of range"),
)
STORE_ERRORS = ("503", "500", "slowdown", "internalerror", "error sending request", "connection", "timed out",
                "reset by peer", "generic s3 error", "io error", "broken pipe")


def classify(res):
    if res.rc == 0:
        return "ok"
    if res.rc == -999:
        return "failed: timeout"
    err = strip_ansi(res.err).lower()
    for needle, label in OUTCOMES:
        if needle in err:
            return label
    if any(s in err for s in STORE_ERRORS):
        return "failed: store"
    return "failed: other"


class Operator(threading.Thread):
    def __init__(self, dl, store, rng, pace, stop, hints):
        super().__init__(name="operator", daemon=True)
        self.dl, self.store, self.rng, self.pace, self.stop, self.hints = dl, store, rng, pace, stop, hints
        self.actions = []
        self.lookups_failed = 0
        self.n = 0

    def run(self):
        while not self.stop.wait(self.rng.uniform(*self.pace)):
            self.n += 1
            p = self.pick_pipeline()
            u = self.rng.choice(PIPELINES[p])
            processed = self.processed(p, u)
            if processed is None:
                continue  # never read yet, or the look-up failed
            if self.rng.random() < 0.6:
                self.reset(p, u, processed)
            else:
                self.replay(p, u, processed)

    def pick_pipeline(self):
        """Half the time a pipeline whose lease holder is frozen right now (the dangerous case)."""
        frozen = sorted(self.hints.frozen_pipelines)
        if frozen and self.rng.random() < 0.5:
            return self.rng.choice(frozen)
        return self.rng.choice(list(PIPELINES))

    def processed(self, p, u):
        res = self.dl.run("tracker", "show", p, "--json", "--history", "1", timeout=60)
        try:
            rows = json.loads(res.out)["rows"] if res.rc == 0 else None
        except (ValueError, KeyError):
            rows = None
        if rows is None:
            self.lookups_failed += 1
            return None
        return next((r["last_processed_version"] for r in rows if r["upstream"] == u), None)

    def reset(self, p, u, processed):
        v = self.rng.randint(max(-1, processed - 8), processed)  # backwards only
        reason = f"chaos-{self.n}"
        res = self.dl.run("tracker", "reset", p, "--upstream", u, "--to-version", v, "--execute", "--reason", reason)
        self.record("reset", p, u, f"{processed} -> {v}", reason, res, to_version=v)

    def replay(self, p, u, processed):
        if processed < 0:
            return
        y = self.rng.randint(0, processed)
        x = self.rng.randint(max(0, y - 6), y)
        reason = f"chaos-{self.n}"
        argv = ["replay", p, "--from-version", x, "--to-version", y, "--upstream", u, "--execute", "--reason", reason]
        # A quarter name the pipeline's own link table with --into: the same target by another road.
        into = self.rng.random() < 0.25
        if into:
            argv += ["--into", self.store.uri(link_rel(p))]
        res = self.dl.run(*argv)
        self.record("replay", p, u, f"{x}..={y}" + (" --into own link" if into else ""), reason, res)

    def record(self, kind, p, u, detail, reason, res, to_version=None):
        outcome = classify(res)
        self.actions.append(Action(self.n, kind, p, u, detail, reason, res.rc, outcome, first_line(res.err), to_version))
        if outcome.startswith("failed"):
            log(f"operator {kind} {p}/{u} {detail} ({reason}): {outcome}: {first_line(res.err)}")


# ---------------------------------------------------------------------------------------------
# Actor 4: faults


class Faults:
    def __init__(self, watchers, store, ttl, rng, pace, stop, chaos_end):
        self.watchers, self.store, self.ttl, self.rng, self.pace = watchers, store, ttl, rng, pace
        self.stop, self.chaos_end = stop, chaos_end
        self.rng_lock = threading.Lock()
        self.kills = 0
        self.kills_of_holders = 0
        self.freezes = 0  # frozen past the TTL
        self.freezes_of_holders = 0
        self.freezes_cut_short = 0
        self.frozen_pipelines = set()  # read by the operator
        self.threads = [threading.Thread(target=self.kill_loop, name="kills", daemon=True),
                        threading.Thread(target=self.freeze_loop, name="freezes", daemon=True)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join()

    def uniform(self, lo, hi):
        with self.rng_lock:
            return self.rng.uniform(lo, hi)

    def target(self, wait_for_holder):
        """A lease holder among the watchers (polled for up to `wait_for_holder` s), else any
        live watcher. Returns (slot, pipeline or None)."""
        deadline = time.monotonic() + wait_for_holder
        while True:
            holders = []
            try:
                leases = lease_holder_pids(self.store)
            except Exception:  # a lease object replaced while read: look again
                leases = {}
            for p, pid in leases.items():
                s = self.watchers.slot_of_pid(pid)
                if s is not None and s in self.watchers.live():
                    holders.append((s, p))
            if holders:
                with self.rng_lock:
                    return self.rng.choice(holders)
            if time.monotonic() >= deadline or self.stop.is_set():
                break
            time.sleep(0.05 if self.store.kind == "local" else 0.15)
        live = self.watchers.live()
        if not live:
            return None, None
        with self.rng_lock:
            return self.rng.choice(live), None

    def kill_loop(self):
        while not self.stop.wait(self.uniform(*self.pace.kill)):
            slot, pipeline = self.target(wait_for_holder=self.uniform(0, 2))
            if slot and self.watchers.kill(slot):
                self.kills += 1
                self.kills_of_holders += pipeline is not None

    def freeze_loop(self):
        while not self.stop.wait(self.uniform(*self.pace.freeze_gap)):
            hold = self.ttl + self.uniform(2, 2 + max(2, self.ttl * 0.1))
            if time.monotonic() + hold > self.chaos_end:
                continue  # would be cut short by the end of the chaos phase
            slot, pipeline = self.target(wait_for_holder=3)
            if not slot or not self.watchers.freeze(slot):
                continue
            holding = {pipeline} if pipeline else set()
            self.frozen_pipelines |= holding
            started = time.monotonic()
            self.stop.wait(hold)
            self.watchers.thaw(slot)
            self.frozen_pipelines -= holding
            if time.monotonic() - started >= self.ttl:
                self.freezes += 1
                self.freezes_of_holders += bool(holding)
            else:
                self.freezes_cut_short += 1


# ---------------------------------------------------------------------------------------------
# Quiesce: every tracker row at its upstream's latest version, no run pending.


def latest_versions(store):
    return {u: DeltaTable(store.uri(upstream_rel(u)), storage_options=store.options).version() for u in UPSTREAMS}


def tracker_rows(store):
    try:
        dt = DeltaTable(store.uri(TRACKER_REL), storage_options=store.options)
    except Exception:
        return []
    return pl.from_arrow(dt.to_pyarrow_table()).to_dicts()


def lagging(store):
    latest = latest_versions(store)
    rows = {(r["pipeline_name"], r["upstream"]): r for r in tracker_rows(store)}
    behind = []
    for p, ups in PIPELINES.items():
        for u in ups:
            r = rows.get((p, u), {})
            if r.get("last_processed_version") != latest[u] or r.get("pending_run_id") is not None:
                behind.append(f"{p}/{u}: processed {r.get('last_processed_version')}, latest {latest[u]}, "
                              f"pending run {r.get('pending_run_id')}")
    return behind


def quiesce(store, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            behind = lagging(store)
        except Exception as e:  # a tracker commit landing while read: look again
            behind = [f"(tracker not readable: {one_line(e)})"]
        if not behind:
            return []
        if time.monotonic() > deadline:
            return behind
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# The oracle


def read_log(store, rel):
    """Every commit of a Delta table's log: [(version, [action, ...])], by version."""
    names = sorted(n for n in store.list(f"{rel}/_delta_log") if re.fullmatch(r"\d{20}\.json", n))

    def load(name):
        body = store.read(f"{rel}/_delta_log/{name}")
        if body is None:
            raise RuntimeError(f"{rel}/_delta_log/{name} is listed but cannot be read")
        return int(name[:20]), [json.loads(ln) for ln in body.decode().splitlines() if ln.strip()]

    with ThreadPoolExecutor(16 if store.kind == "s3" else 4) as pool:
        return list(pool.map(load, names))


def commit_info(actions):
    return next((a["commitInfo"] for a in actions if "commitInfo" in a), {})


def audits_of(info):
    """The audits one tracker commit carries: each of a group commit's `deltalink.batch`, else its own."""
    batch = info.get("deltalink.batch")
    audits = batch if isinstance(batch, list) else ([info] if "deltalink.action" in info else [])
    out = []
    for a in audits:
        details = a.get("deltalink.details") or {}
        if isinstance(details, str):
            details = json.loads(details)
        out.append({"action": a.get("deltalink.action"), "pipeline": a.get("deltalink.pipeline"),
                    "operator": a.get("deltalink.operator"), "reason": a.get("deltalink.reason"),
                    "details": details})
    return out


class Verdict:
    def __init__(self):
        self.violations = []
        self.notes = []
        self.figures = {}

    def fail(self, check, msg):
        self.violations.append(f"[{check}] {msg}")

    def note(self, msg):
        self.notes.append(msg)


def check_keys(store, latest, verdict):
    """(a) Each link table holds exactly the keys of every change row of its upstreams."""
    changed = {}
    for u in UPSTREAMS:
        dt = DeltaTable(store.uri(upstream_rel(u)), storage_options=store.options)
        cdf = pl.from_arrow(pa.table(dt.load_cdf(starting_version=0, ending_version=latest[u],
                                                 columns=[KEY, "_change_type"])))
        changed[u] = set(cdf[KEY].to_list())
        by_type = dict(cdf.group_by("_change_type").len().iter_rows())
        verdict.figures[f"change rows of {u}"] = ", ".join(f"{k} {v}" for k, v in sorted(by_type.items()))
    checked = 0
    for p, ups in PIPELINES.items():
        expected = set().union(*(changed[u] for u in ups))
        checked += len(expected)
        try:
            keys = link_keys(store, p)
        except Exception as e:
            verdict.fail("a", f"{p}: the link table cannot be read: {one_line(e)}")
            continue
        got = set(keys)
        if len(keys) != len(got):
            dup = [k for k, n in collections.Counter(keys).items() if n > 1]
            verdict.fail("a", f"{p}: {len(dup)} keys have several link rows, e.g. {sorted(dup)[:10]}")
        if expected - got:
            lost = sorted(expected - got)
            verdict.fail("a", f"{p}: {len(lost)} changed keys missing from the link table, e.g. {lost[:10]}")
        if got - expected:
            extra = sorted(got - expected)
            verdict.fail("a", f"{p}: {len(extra)} link keys that no change row has, e.g. {extra[:10]}")
    verdict.figures["keys checked"] = checked


def link_keys(store, p):
    dt = DeltaTable(store.uri(link_rel(p)), storage_options=store.options)
    names = [f.name for f in dt.schema().fields]
    if KEY not in names or "run_id" not in names:
        raise ValueError(f"the link table's columns are {names}; expected the key `{KEY}` and `run_id`")
    if store.kind == "local":  # polars' own reader: deletion vectors are read too
        return pl.read_delta(store.uri(link_rel(p)), columns=[KEY])[KEY].to_list()
    reader = QueryBuilder().register("link", dt).execute(f'SELECT "{KEY}" FROM link')
    return pa.table(reader).column(KEY).to_pylist()


def check_link_logs(store, verdict):
    """(b) strictly increasing run_ids across link commits; (c, part) the txn is the highest.
    Returns {pipeline: {"max_run": .., "max_run_kind_run": .., "replay_runs": set, "txn": ..}}."""
    out = {}
    for p in PIPELINES:
        log_ = read_log(store, link_rel(p))
        prev = None
        info = {"max_run": None, "max_run_kind_run": None, "replay_runs": set(), "txn": None, "commits": 0}
        for version, actions in log_:
            for a in actions:
                if "txn" in a and a["txn"].get("appId") == f"deltalink:{p}":
                    info["txn"] = a["txn"]["version"]
            ci = commit_info(actions)
            run_id = ci.get("deltalink.run_id")
            if run_id is None:
                continue
            info["commits"] += 1
            if prev is not None and run_id <= prev[1]:
                what = "applied twice" if run_id == prev[1] else "out of order"
                verdict.fail("b", f"{p}: link v{version} commits run {run_id} ({ci.get('deltalink.kind')}) after "
                                  f"v{prev[0]} committed run {prev[1]}: {what}")
            prev = (version, run_id) if prev is None or run_id > prev[1] else prev
            info["max_run"] = max(run_id, info["max_run"] or 0)
            if ci.get("deltalink.kind") == "replay":
                info["replay_runs"].add(run_id)
            else:
                info["max_run_kind_run"] = max(run_id, info["max_run_kind_run"] or 0)
        if info["txn"] != info["max_run"]:
            verdict.fail("c", f"{p}: the link table's application transaction is {info['txn']} but its highest "
                              f"committed run_id is {info['max_run']}")
        try:
            dt = DeltaTable(store.uri(link_rel(p)), storage_options=store.options)
            via_deltalake = dt.transaction_version(f"deltalink:{p}")
            if via_deltalake != info["txn"]:
                verdict.note(f"{p}: txn read from the log ({info['txn']}) and by deltalake ({via_deltalake}) differ")
        except Exception as e:
            verdict.note(f"{p}: deltalake could not read the txn version: {one_line(e)}")
        out[p] = info
    return out


class Position:
    """The replayed tracker state of one (pipeline, upstream): its processed version (None =
    never read), the audit that set it, and the intent pending on it."""

    def __init__(self):
        self.version = None
        self.set_by = "the start (never read)"
        self.pending = None  # (run_id, to)


def check_audit_log(store, rows, links, actions, verdict):
    """(c, rest) tracker run_ids cover the link's; (d) the audit chain; (e) operator commands audited."""
    positions = collections.defaultdict(Position)
    reasons = collections.defaultdict(set)  # action -> reasons
    resets_by_reason = {}
    replay_runs = collections.defaultdict(set)
    last_audit = {}  # pipeline -> its previous audit
    tracker_log = read_log(store, TRACKER_REL)
    verdict.figures["tracker commits"] = len(tracker_log)

    def check_from(p, u, frm, version, what):
        pos = positions[(p, u)]
        if frm != pos.version:
            verdict.fail("d", f"tracker v{version}: {what} read {p}/{u} from {fmt(frm)}, but the audit log had "
                              f"left it at {fmt(pos.version)} (set by {pos.set_by})")

    for version, acts in tracker_log:
        for a in audits_of(commit_info(acts)):
            p, d, action = a["pipeline"], a["details"], a["action"]
            who = a["operator"]
            if a["reason"]:
                reasons[action].add(a["reason"])
            same = (action, a["reason"], d)
            if last_audit.get(p) == same and action != "replay":
                verdict.note(f"tracker v{version}: {action} {d.get('run_id', a['reason'])} of {p} committed a second "
                             f"time (by {who}): a retried commit whose first attempt had landed?")
                continue
            last_audit[p] = same
            if action == "reset":
                for c in d.get("changes", []):
                    u = c["upstream"]
                    check_from(p, u, c.get("from"), version, f"reset {a['reason']} (by {who})")
                    pos = positions[(p, u)]
                    pos.version, pos.pending = c.get("to"), None
                    pos.set_by = f"reset {a['reason']} at v{version}, by {who}"
                    resets_by_reason[a["reason"]] = (p, u, c.get("to"))
            elif action == "run-intent":
                run = d.get("run_id")
                for x in d.get("upstreams", []):
                    check_from(p, x["upstream"], x.get("from"), version, f"intent of run {run} (by {who})")
                    pos = positions[(p, x["upstream"])]
                    pos.version, pos.pending = x.get("from"), (run, x.get("to"))
            elif action == "run":
                run = d.get("run_id")
                for x in d.get("upstreams", []):
                    check_from(p, x["upstream"], x.get("from"), version, f"run {run} (by {who})")
                    pos = positions[(p, x["upstream"])]
                    pos.version, pos.pending = x.get("to"), None
                    pos.set_by = f"run {run} at v{version}, by {who}"
            elif action == "run-recovered":
                run = d.get("run_id")
                mine = [(k, pos) for k, pos in positions.items() if k[0] == p and pos.pending and pos.pending[0] == run]
                if not mine:
                    verdict.fail("d", f"tracker v{version}: run {run} of {p} 'recovered' (by {who}) but no intent of "
                                      f"run {run} was pending in the audit log (a reset cleared it, or it was done)")
                # Newer binaries list what the recovery completed; older ones only name the run.
                listed = {x["upstream"]: x for x in d.get("upstreams", [])}
                for x in listed.values():
                    check_from(p, x["upstream"], x.get("from"), version, f"recovery of run {run} (by {who})")
                for (_, u), pos in mine:
                    to = listed[u].get("to") if u in listed else pos.pending[1]
                    pos.version, pos.pending = to, None
                    pos.set_by = f"recovery of run {run} at v{version}, by {who}"
            elif action in ("replay-intent", "replay"):
                if d.get("run_id") is not None:
                    replay_runs[p].add(d["run_id"])
            else:
                verdict.note(f"tracker v{version}: unknown audit action {action!r}")

    final = {(r["pipeline_name"], r["upstream"]): r for r in rows}
    for p, ups in PIPELINES.items():
        for u in ups:
            got = final.get((p, u), {}).get("last_processed_version")
            if got != positions[(p, u)].version:
                verdict.fail("d", f"{p}/{u}: the tracker is at {fmt(got)} but its audit log leads to "
                                  f"{fmt(positions[(p, u)].version)} (last set by {positions[(p, u)].set_by})")
        tracker_max = max((final.get((p, u), {}).get("run_id") or 0 for u in ups), default=0)
        link = links.get(p, {})
        if (link.get("max_run_kind_run") or 0) > tracker_max:
            verdict.fail("c", f"{p}: the link table committed run {link['max_run_kind_run']} but the tracker's "
                              f"highest run_id is {tracker_max}")
        unaudited = sorted(link.get("replay_runs", set()) - replay_runs[p])
        if unaudited:
            verdict.fail("c", f"{p}: link commits of replays {unaudited} have no replay audit in the tracker")
        known = max([tracker_max, *replay_runs[p]])
        if (link.get("txn") or 0) > known:
            verdict.fail("c", f"{p}: the link's transaction is run {link.get('txn')}, beyond every run_id the tracker "
                              f"records ({known})")

    for act in actions:
        audited = act.reason in reasons[act.kind]
        if act.rc == 0 and not audited:
            verdict.fail("e", f"{act.kind} {act.reason} of {act.pipeline}/{act.upstream} ({act.detail}) exited 0 "
                              f"but has no '{act.kind}' audit in the tracker history")
        if act.rc == 0 and act.kind == "reset" and act.reason in resets_by_reason:
            p, u, to = resets_by_reason[act.reason]
            if (p, u, to) != (act.pipeline, act.upstream, act.to_version):
                verdict.fail("e", f"reset {act.reason} asked {act.pipeline}/{act.upstream} -> {act.to_version}, "
                                  f"its audit says {p}/{u} -> {to}")
        if act.rc != 0 and audited:
            verdict.note(f"{act.kind} {act.reason} of {act.pipeline}/{act.upstream} exited {act.rc} "
                         f"({act.outcome}: {act.stderr}) but its '{act.kind}' audit is in the history")


def fmt(v):
    return "never read" if v is None else str(v)


# ---------------------------------------------------------------------------------------------
# Main


def interrupted(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(argv or sys.argv[1:])
    signal.signal(signal.SIGTERM, interrupted)  # so the watchers and servers are cleaned up
    master = random.Random(args.seed)
    rngs = {name: random.Random(master.randrange(1 << 30)) for name in
            ("lake", "writer", "operator", "faults", "proxy")}
    pace = Pace()
    faketime = libfaketime()
    workdir = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="deltalink-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    log(f"seed {args.seed}; workdir {workdir}; store {args.store}; chaos phase {args.chaos_seconds:.0f} s; "
        f"{args.watchers} watchers; binary {args.bin}")
    log("clock offset: " + (f"on (watcher 0 runs {CLOCK_OFFSET} with {faketime} preloaded)" if faketime
                            else "SKIPPED (no libfaketime; apt-get install faketime)"))

    store = S3Store(rngs["proxy"]) if args.store == "s3" else LocalStore(workdir / "lake")
    watchers = None
    stop = threading.Event()
    try:
        models = create_upstreams(store, rngs["lake"])
        config, ttl = write_config(args, store, workdir)
        dl = Deltalink(args.bin, config)
        started = time.monotonic()
        chaos_end = started + args.chaos_seconds

        watchers = Watchers(dl, args.watchers, workdir / "logs", faketime)
        watchers.start()
        writer = Writer(store, models, rngs["writer"], pace.writer, stop)
        faults = Faults(watchers, store, ttl, rngs["faults"], pace, stop, chaos_end)
        operator = Operator(dl, store, rngs["operator"], pace.operator, stop, faults)
        if store.faults:
            store.faults.rate = pace.store_fault_rate
        for actor in (writer, operator, faults):
            actor.start()
        while not stop.wait(min(15, max(0, chaos_end - time.monotonic()))):
            if time.monotonic() >= chaos_end:
                break
            log(progress(writer, operator, faults, watchers, store))
        stop.set()
        log("chaos phase over: stopping the writer, the operator and the faults")
        writer.join()
        operator.join()
        faults.join()
        if store.faults:
            store.faults.rate = 0.0
        watchers.thaw_all()
        chaos_secs = time.monotonic() - started

        log(f"quiescing: watchers catch up (at most {args.quiesce_seconds} s)")
        behind = quiesce(store, args.quiesce_seconds)
        quiesce_secs = time.monotonic() - started - chaos_secs
        stuck = watchers.stop(timeout=30)

        log("verifying with the oracle")
        verdict = Verdict()
        if behind:
            verdict.fail("quiesce", f"watchers did not catch up within {args.quiesce_seconds} s: " + "; ".join(behind))
        if stuck:
            verdict.fail("quiesce", f"watchers {stuck} did not stop within 30 s of SIGINT (killed)")
        latest = latest_versions(store)
        rows = tracker_rows(store)
        check_keys(store, latest, verdict)
        links = check_link_logs(store, verdict)
        check_audit_log(store, rows, links, operator.actions, verdict)
        report(args, verdict, writer, operator, faults, watchers, store, faketime, ttl,
               chaos_secs, quiesce_secs, time.monotonic() - T0, workdir)
        failed = bool(verdict.violations)
    finally:
        stop.set()
        if watchers:
            watchers.stopping.set()
            for s in watchers.slots:
                watchers.signal(s, signal.SIGCONT)
                watchers.signal(s, signal.SIGKILL)
        store.close()
    if not failed and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif failed:
        log(f"lake, config and watcher logs kept in {workdir}")
    return 1 if failed else 0


def progress(writer, operator, faults, watchers, store):
    ok = sum(a.outcome == "ok" for a in operator.actions)
    store_faults = f", store faults {store.faults.total}" if store.faults else ""
    return (f"upstream commits {sum(writer.commits.values())}, operator actions {len(operator.actions)} ({ok} ok), "
            f"kills {faults.kills}, freezes {faults.freezes}, restarts {watchers.restarts}{store_faults}")


def report(args, verdict, writer, operator, faults, watchers, store, faketime, ttl, chaos_secs, quiesce_secs,
           total_secs, workdir):
    lines = ["", "=" * 100, f"deltalink chaos test — seed {args.seed}, store {args.store}, lease TTL {ttl} s"]
    add = lines.append
    add(f"duration            chaos {chaos_secs:.0f} s, quiesce {quiesce_secs:.0f} s, total {total_secs:.0f} s")
    ops = ", ".join(f"{k} {v}" for k, v in sorted(writer.commits.items()))
    add(f"upstream commits    {sum(writer.commits.values())} ({ops}); writer errors {len(writer.errors)}")
    for kind in ("reset", "replay"):
        acts = [a for a in operator.actions if a.kind == kind]
        outcomes = collections.Counter(a.outcome for a in acts)
        add(f"{kind + 's':<19} attempted {len(acts)}, succeeded {outcomes.pop('ok', 0)}, "
            + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    if operator.lookups_failed:
        add(f"operator look-ups   {operator.lookups_failed} `tracker show` calls failed")
    add(f"kills               {faults.kills} (of a lease holder: {faults.kills_of_holders}); watcher restarts "
        f"{watchers.restarts}; exits on their own {len(watchers.unexpected_exits)}")
    add(f"freezes             {faults.freezes} past the TTL (of a lease holder: {faults.freezes_of_holders}); "
        f"cut short {faults.freezes_cut_short}")
    add(f"clock offset        {'on: watcher 0 at ' + CLOCK_OFFSET if faketime else 'off (no libfaketime)'}")
    if store.faults:
        add(f"store faults        {store.faults.total} of {store.faults.requests} requests ("
            + ", ".join(f"{k} {v}" for k, v in sorted(store.faults.counts.items())) + ")")
    else:
        add("store faults        0 (local store)")
    for k, v in verdict.figures.items():
        add(f"{k:<19} {v}")
    errors = watchers.error_summary()
    if errors:
        add("watcher errors      (FAILED runs in the watchers' logs, by kind)")
        for what, n in errors.most_common(10):
            add(f"  {n:>5}  {what}")
    for idx, inc, rc, tail in watchers.unexpected_exits[:5]:
        add(f"watcher {idx}.{inc} exited with {rc}: " + " | ".join(tail)[-300:])
    failures = [a for a in operator.actions if a.outcome.startswith("failed")]
    for a in failures[:8]:
        add(f"operator {a.kind} {a.reason} {a.pipeline}/{a.upstream} {a.detail}: {a.outcome}: {a.stderr}")
    for n in verdict.notes[:20]:
        add(f"note: {n}")
    if writer.errors:
        add(f"writer errors: {writer.errors[:3]}")
    add(f"violations          {len(verdict.violations)}")
    for v in verdict.violations:
        add(f"  VIOLATION {v}")
    add("RESULT: " + ("FAIL" if verdict.violations else "PASS")
        + f" (re-run: {Path(sys.argv[0]).name} --bin {args.bin} --seed {args.seed}"
        + (" --short" if args.short else "")
        + (f" --seconds {args.chaos_seconds:.0f}" if not args.short or args.seconds or args.minutes else "")
        + (f" --store {args.store}" if args.store != "local" else "")
        + (f" --ttl {args.ttl}" if args.ttl is not None else "") + ")")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
