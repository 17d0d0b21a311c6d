#!/usr/bin/env python3
"""Loopback Google Cloud Storage server for deltalink tests: the XML API that object_store's GCS
client speaks, in memory, with credentials enforced.

Why a server of our own: no emulator on PyPI or npm accepts object_store's writes.
`gcp-storage-emulator` ignores `x-goog-if-generation-match: 0` (a second create succeeds), sends
no ETag and answers HEAD and listings with 501; fake-gcs-server (on PyPI as a binary wrapper)
refuses the XML API's object PUT ("invalid uploadType") and copies. This one implements exactly
the requests object_store 0.13 issues (see the README's Object storage section), with GCS's
semantics where deltalink depends on them: create-if-absent answers 412, every object carries an
ETag and a generation, listings are the XML `ListBucketResult`.

Usage: gcs_server.py DIR BUCKET [BUCKET ...]

* Generates an RSA key and writes DIR/service-account.json (accepted) and
  DIR/stranger.json (a valid key this server does not know), in the service-account JSON
  form object_store reads (`google_service_account_key`); both carry `gcs_base_url`.
* Listens on 127.0.0.1 on a free port and prints one line: READY http://127.0.0.1:PORT
* Every request must carry `Authorization: Bearer <JWT>` signed (RS256) by the accepted key,
  as object_store's self-signed service-account JWTs are; otherwise 401.
* Runs until its stdin reaches EOF (the spawning test dropped it, or died).
"""

import base64
import hashlib
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

LOCK = threading.Lock()  # one writer at a time: a precondition and its write are atomic
BUCKETS = {}  # bucket -> {key: Obj}
UPLOADS = {}  # upload id -> {part number: bytes}
GENERATION = [int(time.time() * 1e6)]


class Obj:
    def __init__(self, data):
        GENERATION[0] += 1
        self.data = data
        self.generation = GENERATION[0]
        self.etag = '"' + hashlib.md5(data).hexdigest() + '"'
        self.modified = time.time()


def new_key(path, base_url):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with open(path, "w") as f:
        json.dump({"type": "service_account", "private_key": pem.decode(), "private_key_id": "test",
                   "client_email": "deltalink-test@example.iam.gserviceaccount.com", "gcs_base_url": base_url}, f)
    return key.public_key()


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    public_key = None

    def log_message(self, *args):
        if os.environ.get("GCS_SERVER_VERBOSE"):
            super().log_message(*args)

    # -- plumbing --------------------------------------------------------------------------
    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code, message):
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        self.reply(status, body.encode(), {"Content-Type": "application/xml"})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def authorised(self):
        auth = self.headers.get("Authorization", "")
        try:
            header, payload, signature = auth.removeprefix("Bearer ").split(".")
            self.public_key.verify(b64url(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
            return json.loads(b64url(payload)).get("exp", 0) > time.time()
        except (ValueError, InvalidSignature):
            return False

    def target(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        parts = url.path.lstrip("/").split("/", 1)
        bucket = urllib.parse.unquote(parts[0])
        key = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        return bucket, key, query

    def meta_headers(self, obj):
        return {"ETag": obj.etag, "x-goog-generation": str(obj.generation),
                "Last-Modified": formatdate(obj.modified, usegmt=True), "Content-Type": "application/octet-stream"}

    def dispatch(self):
        self.body_bytes = self.body()  # read before any reply, so the connection stays usable
        if not self.authorised():
            return self.error(401, "AuthenticationRequired", "Invalid Credentials")
        bucket, key, query = self.target()
        if bucket not in BUCKETS:
            return self.error(404, "NoSuchBucket", f"The specified bucket does not exist: {bucket}")
        getattr(self, "on_" + self.command.lower())(BUCKETS[bucket], bucket, key, query)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = dispatch

    # -- operations ------------------------------------------------------------------------
    def on_get(self, objects, bucket, key, query):
        if not key:
            return self.list(objects, query)
        return self.on_head(objects, bucket, key, query)

    def on_head(self, objects, bucket, key, query):
        obj = objects.get(key)
        if obj is None or ("generation" in query and query["generation"] != str(obj.generation)):
            return self.error(404, "NoSuchKey", f"No such object: {bucket}/{key}")
        if (m := self.headers.get("If-Match")) and m != obj.etag:
            return self.error(412, "PreconditionFailed", "If-Match")
        if (m := self.headers.get("If-None-Match")) and m == obj.etag:
            return self.reply(304, b"", self.meta_headers(obj))
        data, status, headers = obj.data, 200, self.meta_headers(obj)
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start, _, end = rng[6:].partition("-")
            if start == "":
                first, last = max(0, len(data) - int(end)), len(data) - 1
            else:
                first, last = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
            if first >= len(data):
                return self.error(416, "InvalidRange", rng)
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            data, status = data[first:last + 1], 206
        self.reply(status, data, headers)

    def on_put(self, objects, bucket, key, query):
        if "uploadId" in query:
            UPLOADS.setdefault(query["uploadId"], {})[int(query["partNumber"])] = self.body_bytes
            etag = '"' + hashlib.md5(self.body_bytes).hexdigest() + '"'
            return self.reply(200, b"", {"ETag": etag})
        with LOCK:
            source = self.headers.get("x-goog-copy-source")
            if source:
                src_bucket, _, src_key = urllib.parse.unquote(source).lstrip("/").partition("/")
                src = BUCKETS.get(src_bucket, {}).get(src_key)
                if src is None:
                    return self.error(404, "NoSuchKey", f"No such object: {source}")
                data = src.data
            else:
                data = self.body_bytes
            if not self.precondition_holds(objects.get(key)):
                return self.error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.")
            objects[key] = obj = Obj(data)
        if source:
            body = f"<CopyObjectResult><ETag>{escape(obj.etag)}</ETag></CopyObjectResult>".encode()
            return self.reply(200, body, {"ETag": obj.etag, "x-goog-generation": str(obj.generation)})
        self.reply(200, b"", {"ETag": obj.etag, "x-goog-generation": str(obj.generation)})

    def precondition_holds(self, current):
        wanted = self.headers.get("x-goog-if-generation-match")
        if wanted is None:
            return True
        return current is None if wanted == "0" else (current is not None and str(current.generation) == wanted)

    def on_post(self, objects, bucket, key, query):
        if "uploads" in query:
            upload = os.urandom(12).hex()
            UPLOADS[upload] = {}
            body = f"<InitiateMultipartUploadResult><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key><UploadId>{upload}</UploadId></InitiateMultipartUploadResult>"
            return self.reply(200, body.encode(), {"Content-Type": "application/xml"})
        if "uploadId" in query:
            parts = UPLOADS.pop(query["uploadId"], None)
            if parts is None:
                return self.error(404, "NoSuchUpload", query["uploadId"])
            order = [int(n) for n in re.findall(rb"<PartNumber>(\d+)</PartNumber>", self.body_bytes)]
            with LOCK:
                if not self.precondition_holds(objects.get(key)):
                    return self.error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.")
                objects[key] = obj = Obj(b"".join(parts[n] for n in order))
            body = f"<CompleteMultipartUploadResult><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key><ETag>{escape(obj.etag)}</ETag></CompleteMultipartUploadResult>"
            return self.reply(200, body.encode(), {"Content-Type": "application/xml", "ETag": obj.etag})
        self.error(400, "InvalidArgument", "unsupported POST")

    def on_delete(self, objects, bucket, key, query):
        if "uploadId" in query:
            UPLOADS.pop(query["uploadId"], None)
            return self.reply(204)
        with LOCK:
            if objects.pop(key, None) is None:
                return self.error(404, "NoSuchKey", f"No such object: {bucket}/{key}")
        self.reply(204)

    def list(self, objects, query):
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        after = max(query.get("start-after", ""), query.get("continuation-token", ""))
        limit = int(query.get("max-keys") or 1000)
        with LOCK:
            keys = sorted(k for k in objects if k.startswith(prefix) and k > after)
            contents, prefixes, last, truncated = [], [], None, False
            for k in keys:
                if len(contents) + len(prefixes) >= limit:
                    truncated = True
                    break
                rest = k[len(prefix):]
                if delimiter and delimiter in rest:
                    p = prefix + rest.split(delimiter, 1)[0] + delimiter
                    if p not in prefixes:
                        prefixes.append(p)
                    last = k
                    continue
                o = objects[k]
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(o.modified)) + ".000Z"
                contents.append(f"<Contents><Key>{escape(k)}</Key><Size>{len(o.data)}</Size><LastModified>{stamp}</LastModified><ETag>{escape(o.etag)}</ETag></Contents>")
                last = k
        token = f"<NextContinuationToken>{escape(last)}</NextContinuationToken>" if truncated else ""
        body = ("<?xml version='1.0' encoding='UTF-8'?><ListBucketResult>"
                f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents) + len(prefixes)}</KeyCount>"
                f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{token}"
                + "".join(contents)
                + "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes)
                + "</ListBucketResult>")
        self.reply(200, body.encode(), {"Content-Type": "application/xml"})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that stops reading mid-body (a reader that got what it needed) is not an error.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    folder, buckets = sys.argv[1], sys.argv[2:]
    for b in buckets:
        BUCKETS[b] = {}
    server = Server(("127.0.0.1", 0), Handler)
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    Handler.public_key = new_key(os.path.join(folder, "service-account.json"), base_url)
    new_key(os.path.join(folder, "stranger.json"), base_url)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY {base_url}", flush=True)
    sys.stdin.read()  # until the test drops our stdin
    server.shutdown()


if __name__ == "__main__":
    main()
