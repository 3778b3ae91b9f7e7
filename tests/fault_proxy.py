"""A loopback HTTP proxy in front of a real S3 server (moto) that injects one kind of fault into matching requests.

Faults (`FaultProxy(upstream, fault=...)`):
- `pass`: forward everything untouched (a baseline, and a way to count requests)
- `delay`: wait `delay_s`, then forward (a slow link: keeps uploads in flight long enough to interrupt them)
- `stall`: accept the request and never answer (until the proxy stops): the client's read timeout fires
- `500`: answer 500 InternalError without asking the server
- `deny-write`: answer 403 AccessDenied to PUT/POST/DELETE (a read-only credential); reads pass
- `truncate`: send the real headers (full Content-Length) and half the body, then close the connection
- `short`: rewrite Content-Length to half and send half the body (invisible at the HTTP level)
- `flip`: flip one byte in the middle of the body
- `throttle`: forward, then send the body at `bytes_per_s` (a slow link of limited bandwidth)

`match(method, path)` limits the fault to some requests (e.g. GETs of blobs); `rate` injects it into
that fraction of them, drawn from a seeded generator so a failing trial can be replayed;
`strip_checksums` removes the x-amz-checksum-* response headers, as from a server without them, so
that only buildml's own digest check stands between a damaged body and the caches.
"""

from __future__ import annotations

import http.client
import json
import os
import http.server
import random
import threading
from urllib.parse import urlsplit

FAULTS = ("pass", "delay", "stall", "500", "deny-write", "truncate", "short", "flip", "throttle")
WRITES = ("PUT", "POST", "DELETE")
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
ERROR_XML = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{msg}</Message></Error>"


def blob_reads(method: str, path: str) -> bool:
    """GETs of content-addressed blobs (cas/), the bodies a fault can damage."""
    return method == "GET" and "/cas/" in path


def writes(method: str, path: str) -> bool:
    """Uploads: PUT, POST (multipart), DELETE."""
    return method in WRITES


class FaultProxy:
    """Forwards HTTP to `upstream`, injecting `fault` into a `rate` of the requests `match` selects."""

    def __init__(self, upstream: str, fault: str = "pass", match=None, rate: float = 1.0, seed: int = 0,
                 strip_checksums: bool = False, delay_s: float = 0.5, bytes_per_s: float = 1e6):
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        self.upstream = urlsplit(upstream)
        self.fault, self.match, self.rate = fault, match or (lambda method, path: True), rate
        self.strip_checksums = strip_checksums  # drop x-amz-checksum-* (a server without checksums)
        self.delay_s = delay_s
        self.bytes_per_s = bytes_per_s  # throttle
        self.hit = threading.Event()  # set at the first injected fault
        self.rng = random.Random(seed)
        self.release = threading.Event()  # set on stop: stalled requests give up
        self.lock = threading.Lock()
        self.requests = 0
        self.injected = 0
        self.log: list = []  # (method, path, fault applied or "pass")
        handler = type("Handler", (_Handler,), {"proxy": self})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client hanging up mid-reply is part of the game
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def decide(self, method: str, path: str) -> str:
        """The fault for this request ('pass' when it is not selected)."""
        with self.lock:
            self.requests += 1
            hit = self.fault != "pass" and self.match(method, path) and self.rng.random() < self.rate
            if self.fault == "deny-write" and method not in WRITES:
                hit = False
            applied = self.fault if hit else "pass"
            self.injected += hit
            if hit:
                self.hit.set()
            self.log.append((method, path, applied))
            return applied


class _Handler(http.server.BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue answered for us
    _conn = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._forward()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self):
        body = self._body()
        fault = self.proxy.decide(self.command, self.path)
        if fault == "delay":
            self.proxy.release.wait(self.proxy.delay_s)
        if fault == "stall":
            self.proxy.release.wait(600)
            self.close_connection = True
            return
        if fault == "500":
            return self._error(500, "InternalError", "injected fault: internal error")
        if fault == "deny-write":
            return self._error(403, "AccessDenied", "injected fault: Access Denied")
        status, reason, headers, data = self._upstream(body)
        if status in (200, 206) and self.command == "GET" and len(data) > 1 and fault in ("truncate", "short", "flip"):
            return self._damaged(fault, status, reason, headers, data)
        self._reply(status, reason, headers, data, throttle=fault == "throttle")

    def _upstream(self, body: bytes):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if body or self.command in WRITES:
            headers["Content-Length"] = str(len(body))
        for attempt in range(2):  # a kept-alive upstream connection may have been closed meanwhile
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.proxy.upstream.hostname, self.proxy.upstream.port, timeout=120)
            try:
                self._conn.request(self.command, self.path, body=body, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
                return resp.status, resp.reason, resp.getheaders(), data
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise

    def _reply(self, status, reason, headers, data: bytes, length: int | None = None, throttle: bool = False):
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() in HOP or name.lower() == "content-length":
                continue
            if self.proxy.strip_checksums and name.lower().startswith("x-amz-checksum"):
                continue
            self.send_header(name, value)
        if self.command == "HEAD":
            upstream_length = next((v for n, v in headers if n.lower() == "content-length"), "0")
            self.send_header("Content-Length", upstream_length)
        else:
            self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        if self.command != "HEAD" and throttle:
            step = max(1, int(self.proxy.bytes_per_s / 20))  # 20 writes a second
            for i in range(0, len(data), step):
                self.wfile.write(data[i:i + step])
                self.wfile.flush()
                self.proxy.release.wait(len(data[i:i + step]) / self.proxy.bytes_per_s)
        elif self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _damaged(self, fault, status, reason, headers, data: bytes):
        half = data[: len(data) // 2]
        if fault == "flip":
            damaged = bytearray(data)
            damaged[len(damaged) // 2] ^= 0xFF
            return self._reply(status, reason, headers, bytes(damaged))
        if fault == "short":
            return self._reply(status, reason, headers, half)
        self._reply(status, reason, headers, half, length=len(data))  # truncate: promise all, send half, hang up
        self.close_connection = True

    def _error(self, status: int, code: str, msg: str):
        data = ERROR_XML.format(code=code, msg=msg).encode()
        self._reply(status, http.HTTPStatus(status).phrase, [("Content-Type", "application/xml")], data)

    def finish(self):
        super().finish()
        if self._conn is not None:
            self._conn.close()


def record_figures(guarantee: str, trials: int, failures: int, **figures) -> None:
    """Append one line of figures to $BUILDML_RELIABILITY_LOG (benchmarks/reliability.py collects them)."""
    path = os.environ.get("BUILDML_RELIABILITY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"guarantee": guarantee, "trials": trials, "failures": failures, **figures}) + "\n")


def s3_env(proxy: FaultProxy, server_env: dict) -> dict:
    """The client environment of a moto server, pointed at the proxy instead."""
    return {**server_env, "AWS_ENDPOINT_URL": proxy.endpoint}


__all__ = ["FaultProxy", "FAULTS", "blob_reads", "writes", "s3_env", "record_figures"]
