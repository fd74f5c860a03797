"""A loopback HTTP server shaped like a distant Hub: a fixed delay per request and a bandwidth cap shared by all
connections (a token bucket), with single-range support (206 / Content-Range / 416), HEAD, ETag and
Last-Modified, counting requests, bytes sent and the most requests in flight at once.

Faults for the hostile tests, each bounded in count or size: `ignore_range` (200 with the whole body),
`wrong_range` (a Content-Range one byte off), `wrong_length` (a Content-Length 10 bytes over the range), `extra` (bytes beyond the asked range), `short` (half the body,
then close), `reset` (close without an answer), `status_416`, `etag_change` (a new ETag from then on), `drip`
(one byte per interval, at most a number of bytes), and `max_in_flight` (a request beyond it is reset: a server
that allows one connection at a time). Only 127.0.0.1; it stops by itself after `lifetime` seconds.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.support.loopback import QuietHandler


class TokenBucket:
    """`rate` bytes per second shared by every caller; bursts of at most `burst` bytes."""

    def __init__(self, rate: float | None, burst: int = 64 << 10):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= n:
                    self.tokens -= n
                    return
                wait = (n - self.tokens) / self.rate
            time.sleep(min(wait, 0.05))


@dataclass
class Fault:
    kind: str
    times: int
    match: object = None  # (start, end) -> bool; None: every ranged GET
    arg: object = None
    hits: int = 0


@dataclass
class Counters:
    requests: list = field(default_factory=list)  # (method, path, start, end, status)
    bytes_sent: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    refused: int = 0  # requests reset for going over `max_in_flight`
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_sent = 0
            self.max_in_flight = 0


class _Handler(QuietHandler):
    server: "ShapedServer"

    def _serve(self, head: bool):
        srv, c = self.server, self.server.counters
        with c.lock:
            c.in_flight += 1
            c.max_in_flight = max(c.max_in_flight, c.in_flight)
            over = srv.max_in_flight is not None and c.in_flight > srv.max_in_flight
            c.refused += over
        try:
            if over:  # a server that allows one connection at a time: the extra one is reset
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            time.sleep(srv.delay)  # the round trip to a distant server
            self._answer(head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with c.lock:
                c.in_flight -= 1

    def _answer(self, head: bool):
        srv = self.server
        path = unquote(urlsplit(self.path).path)
        if path in ("/_counters", "/_reset") and srv.control:  # for a server in another process (benchmarks)
            c = srv.counters
            body = json.dumps({"bytes_sent": c.bytes_sent, "requests": len(c.requests),
                               "max_in_flight": c.max_in_flight}).encode()
            if path == "/_reset":  # the counts so far, then zero
                c.reset()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        file = (srv.root / path.lstrip("/")).resolve()
        if srv.root not in file.parents or not file.is_file():
            return self._plain(404)
        size = file.stat().st_size
        etag = srv.etag(file)
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = 0, size
        if wanted:
            start = int(wanted[1])
            end = min(int(wanted[2]) + 1, size) if wanted[2] else size
        if (head or not wanted) and srv.head_resets > 0:  # a HEAD (or unranged GET) whose connection is reset (fsspec reads it as "not found")
            srv.head_resets -= 1
            self.close_connection = True
            return
        fault = srv.take_fault(start, end) if wanted and not head else None
        kind = fault.kind if fault else None
        if kind == "etag_change":
            srv.etag_suffix = srv.etag_suffix + "x"
            etag = srv.etag(file)
        if kind == "reset":
            self.close_connection = True
            return
        if wanted and (start >= size or kind == "status_416"):
            self._record(head, path, start, end, 416)
            return self._plain(416, {"Content-Range": f"bytes */{size}"})
        ranged = bool(wanted) and kind != "ignore_range"
        if not ranged:
            start, end = 0, size
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(end - start + (10 if kind == "wrong_length" else 0)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", formatdate(file.stat().st_mtime, usegmt=True))
        if ranged:
            shown = start + 1 if kind == "wrong_range" else start
            self.send_header("Content-Range", f"bytes {shown}-{end - 1}/{size}")
        self.end_headers()
        self._record(head, path, start, end, 206 if ranged else 200)
        if head:
            return
        with open(file, "rb") as handle:
            handle.seek(start)
            body = handle.read(end - start)
        if kind == "wrong_length":
            body += b"\0" * 10
        if kind == "extra":
            body += b"\0" * int(fault.arg or 4096)
        if kind == "short":
            body = body[: len(body) // 2]
        if kind == "drip":
            interval, limit = fault.arg
            for i in range(min(limit, len(body))):
                self._send(body[i:i + 1])
                time.sleep(interval)
            self.close_connection = True
            return
        for at in range(0, len(body), 16 << 10):
            self._send(body[at:at + (16 << 10)])
        if kind == "short":
            self.close_connection = True

    def _send(self, piece: bytes) -> None:
        self.server.bucket.take(len(piece))
        self.wfile.write(piece)
        with self.server.counters.lock:
            self.server.counters.bytes_sent += len(piece)

    def _record(self, head, path, start, end, status):
        with self.server.counters.lock:
            self.server.counters.requests.append(("HEAD" if head else "GET", path, start, end, status))

    def _plain(self, status: int, headers: dict | None = None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


class ShapedServer(ThreadingHTTPServer):
    """`with ShapedServer(folder, delay=0.05, rate=20e6) as server:` serves `folder` at `server.url`."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, root, delay: float = 0.05, rate: float | None = 20e6, lifetime: float = 300.0,
                 max_in_flight: int | None = None, control: bool = False):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root).resolve()
        self.delay = delay
        self.bucket = TokenBucket(rate)
        self.lifetime = lifetime
        self.max_in_flight = max_in_flight
        self.control = control
        self.counters = Counters()
        self.faults: list[Fault] = []
        self.etag_suffix = ""
        self.head_resets = 0  # reset the connection of this many HEAD (and fsspec's fallback GET) requests
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def etag(self, file: Path) -> str:
        """Size and mtime, as many servers make it (cheap: a HEAD of a 10 GB zip is not slowed by hashing)."""
        stat = file.stat()
        return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}{self.etag_suffix}"'
    def fault(self, kind: str, times: int = 1, match=None, arg=None) -> Fault:
        found = Fault(kind, times, match, arg)
        with self._lock:
            self.faults.append(found)
        return found

    def take_fault(self, start: int, end: int) -> Fault | None:
        with self._lock:
            for found in self.faults:
                if found.hits < found.times and (found.match is None or found.match(start, end)):
                    found.hits += 1
                    return found
        return None

    def gets(self) -> list:
        return [r for r in self.counters.requests if r[0] == "GET"]

    def __enter__(self) -> "ShapedServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.shutdown)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.shutdown()
        self.server_close()


def main(argv=None) -> None:
    """`python -m tests.support.shaped_server ROOT --delay 0.05 --rate 20e6`: prints the URL, serves until killed
    or `--lifetime`; GET /_counters and /_reset report and reset the counters."""
    import argparse
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--rate", type=float, default=20e6)
    parser.add_argument("--lifetime", type=float, default=1800)
    args = parser.parse_args(argv)
    with ShapedServer(args.root, delay=args.delay, rate=args.rate or None, lifetime=args.lifetime, control=True) as srv:
        print(srv.url, flush=True)
        sys.stdin.read()  # until the parent closes the pipe


if __name__ == "__main__":
    main()
