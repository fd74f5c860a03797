"""A loopback HTTP server with Range support that counts the bytes it sends: the remote tests and benchmark.

It serves a folder on 127.0.0.1 only, stops by itself after `lifetime` seconds, can drop the connection
part-way through chosen answers (network faults), and can answer the few Hub API routes `HfFileSystem` uses
(repo info, tree listing with LFS sha256, resolve with Range), so the Hub code path runs with no network.

Hostile servers for the download and range-read tests, every one bounded: `change_during` replaces a file
after some bytes of an answer (the rest of that answer and every later one come from the new content, with a
new ETag), `drip` sends one byte per interval for at most a number of bytes then closes, `swaps_after_head` replaces a file right after
answering a HEAD for it, `redirect_loop`
answers a path with a redirect to itself, `publish_sha256` adds a `Digest` header. `If-Range` is honoured
(a stale validator gets the whole file, 200), as RFC 9110 says.
"""

from __future__ import annotations

import base64
import hashlib
import os
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HUB_SHA = "0" * 39 + "1"  # the fake Hub's only commit


@dataclass
class Fault:
    """Drop the connection after `after` body bytes of the next `times` GETs that `match(path, start, end)`."""

    match: Callable[[str, int, int], bool]
    times: int
    after: int = 0
    hits: int = 0


@dataclass
class Traffic:
    bytes_sent: int = 0
    requests: list = field(default_factory=list)  # (method, path, start, end)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.bytes_sent = 0
            self.requests.clear()


@lru_cache(maxsize=32)
def _sha256(path: Path, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no request log; HEAD and GET both go to `_serve(head)` (the test servers' common part)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)


class _Handler(QuietHandler):
    server: "LoopbackServer"

    def _serve(self, head: bool):
        path = unquote(urlsplit(self.path).path)
        hub = self.server.hub_repo
        api = f"/api/datasets/{hub}"
        if hub and (path == api or path.startswith(api + "/")):
            return self._hub_api(path[len(api) + 1:])
        if hub:
            prefix = f"/datasets/{hub}/resolve/"
            if not path.startswith(prefix):
                return self._send_json(404, {"error": "not found"})
            path = "/" + path[len(prefix):].split("/", 1)[1]
        if path in self.server.redirect_loops:
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        file = (self.server.root / path.lstrip("/")).resolve()
        if self.server.root not in file.parents or not file.is_file():
            return self._send_json(404, {"error": "not found"})
        self._send_file(file, path, head)

    def _send_file(self, file: Path, path: str, head: bool):
        size = file.stat().st_size
        start, end, status = 0, size, 200
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        etag = f'"{_sha256(file, file.stat().st_mtime_ns)[:32]}"'
        if wanted and self.headers.get("If-Range") not in (None, etag):
            wanted = None  # the client's copy is of another version: the whole current file
        if wanted:
            start = int(wanted[1])
            end = min(int(wanted[2]) + 1, size) if wanted[2] else size
            status = 206
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if self.server.publish_sha256:
            digest = bytes.fromhex(_sha256(file, file.stat().st_mtime_ns))
            self.send_header("Digest", "sha-256=" + base64.b64encode(digest).decode())
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        traffic = self.server.traffic
        with traffic.lock:
            traffic.requests.append(("HEAD" if head else "GET", path, start, end))
        if head:
            swap = self.server.swaps_after_head.pop(path, None)
            if swap is not None:  # the file changes between a client's HEAD and its GET
                _replace(file, swap)
            return
        with open(file, "rb") as handle:
            handle.seek(start)
            body = handle.read(end - start)
        change = self.server.changes.pop(path, None)
        if change is not None:  # the old bytes up to `after`, then the file is replaced and the rest is new
            after, new = change
            _replace(file, new)
            body = body[:after] + new[start + after:end]
        fault = self.server.take_fault(path, start, end)
        if fault is not None:
            body = body[: fault.after]
        drip = self.server.drips.get(path)
        try:
            if drip is not None:  # one byte per interval, at most `limit` bytes, then the connection closes
                interval, limit = drip
                for i in range(min(limit, len(body))):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    with traffic.lock:
                        traffic.bytes_sent += 1
                    time.sleep(interval)
                self.close_connection = True
                return
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout under test)
            self.close_connection = True
            return
        finally:
            if drip is None:
                with traffic.lock:
                    traffic.bytes_sent += len(body)
        if fault is not None:  # a dropped connection: fewer bytes than Content-Length, then close
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _hub_api(self, rest: str):
        root = self.server.root
        if rest == "" or rest.startswith("revision/"):
            siblings = [{"rfilename": p.name} for p in sorted(root.iterdir()) if p.is_file()]
            return self._send_json(200, {"id": self.server.hub_repo, "sha": HUB_SHA, "siblings": siblings, "private": False})
        if rest.startswith("tree/"):
            folder = rest.split("/", 2)[2] if rest.count("/") >= 2 else ""
            base = (root / folder).resolve()
            if base != root and root not in base.parents or not base.is_dir():
                return self._send_json(404, {"error": "not found"})
            entries = []
            for p in sorted(base.iterdir()):
                relative = str(p.relative_to(root))
                if p.is_dir():
                    entries.append({"type": "directory", "oid": "0" * 40, "path": relative})
                else:
                    size, sha = p.stat().st_size, _sha256(p, p.stat().st_mtime_ns)
                    entries.append({"type": "file", "oid": sha[:40], "size": size, "path": relative,
                                    "lfs": {"oid": sha, "size": size, "pointerSize": 134}})
            return self._send_json(200, entries)
        return self._send_json(404, {"error": f"route {rest!r} is not faked"})

    def _send_json(self, status: int, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _replace(file: Path, data: bytes) -> None:
    """New content under the same name, with a new mtime (so a new ETag)."""
    stat = file.stat()
    tmp = file.with_name(file.name + ".swap")
    tmp.write_bytes(data)
    os.replace(tmp, file)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


class LoopbackServer(ThreadingHTTPServer):
    """`with LoopbackServer(folder) as server:` serves `folder` at `server.url` until the block ends."""

    daemon_threads = True

    def __init__(self, root: str | Path, lifetime: float = 300.0, hub_repo: str | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root).resolve()
        self.hub_repo = hub_repo
        self.lifetime = lifetime
        self.traffic = Traffic()
        self.faults: list[Fault] = []
        self.changes: dict[str, tuple[int, bytes]] = {}
        self.drips: dict[str, tuple[float, int]] = {}
        self.redirect_loops: set[str] = set()
        self.swaps_after_head: dict[str, bytes] = {}
        self.publish_sha256 = False
        self._fault_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        """The plain HTTP base URL (or, in Hub mode, the endpoint to give huggingface_hub)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add_fault(self, match: Callable[[str, int, int], bool], times: int, after: int = 0) -> Fault:
        fault = Fault(match, times, after)
        with self._fault_lock:
            self.faults.append(fault)
        return fault

    def change_during(self, path: str, new: bytes, after: int) -> None:
        """The next GET of `path` sends `after` old bytes, then the file becomes `new` (answer and file)."""
        self.changes[path] = (after, new)

    def drip(self, path: str, interval: float, limit: int) -> None:
        """Every GET of `path` sends one byte per `interval` seconds, at most `limit` bytes, then closes."""
        self.drips[path] = (interval, limit)

    def redirect_loop(self, path: str) -> None:
        self.redirect_loops.add(path)

    def take_fault(self, path: str, start: int, end: int) -> Fault | None:
        with self._fault_lock:
            for fault in self.faults:
                if fault.hits < fault.times and fault.match(path, start, end):
                    fault.hits += 1
                    return fault
        return None

    def __enter__(self) -> "LoopbackServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.shutdown)  # stops by itself if the caller hangs
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.shutdown()
        self.server_close()
