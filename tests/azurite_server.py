#!/usr/bin/env python3
"""Azurite (the Azure Storage emulator, from npm) on loopback for deltalink tests.

Usage: azurite_server.py CONTAINER [CONTAINER ...]

* Starts Azurite's blob service (`azurite-blob`: $DELTALINK_AZURITE_BIN, else on PATH) on
  127.0.0.1 on a free port, in memory, creates the containers (Shared Key signed requests with
  the emulator's well-known account, as any client would), and prints one line:
      READY http://127.0.0.1:PORT
  Clients use it with `azure_storage_use_emulator = true` and AZURITE_BLOB_STORAGE_URL set to
  that URL (object_store's emulator mode; it filters listings by offset itself, which Azurite
  does not).
* Azurite enforces Shared Key signatures: a wrong account key gets 403 AuthorizationFailure.
* Runs until its stdin reaches EOF (the spawning test dropped it, or died), then stops Azurite.
* Prints `UNAVAILABLE <why>` and exits 2 when Azurite is not installed.
"""

import base64
import hashlib
import hmac
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
# The emulator's published development key (the same in every Azurite install).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_container(port, name):
    """PUT ?restype=container, signed with Shared Key (the string-to-sign of the Blob service)."""
    path = f"/{ACCOUNT}/{name}"
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2023-11-03", "Content-Length": "0"}
    canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(h for h in headers if h.startswith("x-ms-")))
    string_to_sign = "PUT\n" + "\n" * 11 + canonical_headers + f"/{ACCOUNT}{path}\nrestype:container"
    signature = base64.b64encode(hmac.new(base64.b64decode(KEY), string_to_sign.encode(), hashlib.sha256).digest()).decode()
    headers["Authorization"] = f"SharedKey {ACCOUNT}:{signature}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("PUT", f"{path}?restype=container", headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status not in (201, 409):
        sys.exit(f"creating container {name}: {response.status} {body[:300]!r}")


def wait_listening(port, child, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            sys.exit(f"azurite-blob exited with {child.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"azurite-blob did not listen on {port} within {seconds}s")


def main():
    binary = os.environ.get("DELTALINK_AZURITE_BIN") or shutil.which("azurite-blob")
    if not binary or not os.path.exists(binary):
        print("UNAVAILABLE azurite-blob is not installed (set DELTALINK_AZURITE_BIN or put it on PATH)", flush=True)
        sys.exit(2)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="deltalink-azurite-")
    child = subprocess.Popen(
        [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence", "--disableTelemetry", "--silent"],
        cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sys.stderr,
    )
    try:
        wait_listening(port, child)
        for name in sys.argv[1:]:
            create_container(port, name)
        print(f"READY http://127.0.0.1:{port}", flush=True)
        sys.stdin.read()
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
