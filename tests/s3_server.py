#!/usr/bin/env python3
"""Loopback S3 API server for deltalink tests (moto, in-process).

Usage: s3_server.py [BUCKET ...]

* Listens on 127.0.0.1 on a free port and prints exactly one line to stdout:
      READY http://127.0.0.1:PORT
  (flushed), after the bucket(s) given as arguments exist.
* Exits with status 1 (traceback on stderr) if startup fails, e.g. an invalid
  bucket name (S3 names are 3-63 chars of [a-z0-9.-]).
* Runs until its stdin reaches EOF (the spawning test dropped the child's
  stdin, or died), or until SIGTERM / SIGINT.
* Credentials are enforced: only S3_SERVER_ACCESS_KEY_ID /
  S3_SERVER_SECRET_ACCESS_KEY (default "test" / "test") are accepted; any other
  key gets 403 InvalidAccessKeyId, a wrong secret 403 SignatureDoesNotMatch.
  Set S3_SERVER_NO_AUTH=1 to accept any credentials (moto's default).
* Requests that change state (PUT/POST/DELETE) are serialised, so moto's
  "If-None-Match: *" check and the write that follows it happen atomically
  (delta-rs commits rely on that to detect concurrent writers).
* Region: us-east-1. Logs go to stderr only when S3_SERVER_VERBOSE=1.
"""

import os
import signal
import sys
import threading

ACCESS_KEY = os.environ.get("S3_SERVER_ACCESS_KEY_ID", "test")
SECRET_KEY = os.environ.get("S3_SERVER_SECRET_ACCESS_KEY", "test")
ENFORCE_AUTH = os.environ.get("S3_SERVER_NO_AUTH", "") not in ("1", "true", "yes")
VERBOSE = os.environ.get("S3_SERVER_VERBOSE", "") in ("1", "true", "yes")

# moto reads some settings from the environment at import time.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")

from moto import settings  # noqa: E402
from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.core.authorization import ActionAuthenticatorMixin  # noqa: E402
from moto.iam.models import iam_backends  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

_write_lock = threading.Lock()


def _serialised(app):
    def wrapped(environ, start_response):
        if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
            with _write_lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def _setup_auth():
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
    iam.create_user("us-east-1", "deltalink-test")
    iam.put_user_policy(
        "deltalink-test",
        "allow-s3",
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
    )
    key = iam.create_access_key("deltalink-test")
    del iam.access_keys[key.access_key_id]
    key.access_key_id = ACCESS_KEY
    key.secret_access_key = SECRET_KEY
    iam.access_keys[key.access_key_id] = key
    ActionAuthenticatorMixin.request_count = 0
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0


def main():
    if not VERBOSE:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    for bucket in sys.argv[1:]:
        s3_backends[DEFAULT_ACCOUNT_ID]["aws"].create_bucket(bucket, "us-east-1")
    if ENFORCE_AUTH:
        _setup_auth()

    app = _serialised(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler
    )
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def watch_stdin():
        try:
            while os.read(0, 4096):
                pass
        except (OSError, ValueError):
            pass
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    sys.stdout.write(f"READY http://127.0.0.1:{port}\n")
    sys.stdout.flush()

    while not done.wait(0.2):
        pass
    # Daemon threads may be blocked in read(0) / accept(): skip interpreter
    # teardown, the OS closes the listening socket.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
