"""Checked HTTP range GETs for zips read in place over http(s)://, safe to call from several threads.

fsspec's HTTP `cat_file` reads whatever body comes back (a server that ignores Range sends the whole archive
into memory) and checks neither `Content-Range` nor the ETag. Here every answer is checked before its body is
read: 206 with exactly the asked `Content-Range` and `Content-Length`, the ETag the HEAD gave (else the file
changed under us), and the body is read in bounded pieces up to the asked length, never more. Connections are
kept alive in a small shared pool; an in-flight limit (`Limit`) drops to one when the server refuses a
connection, so a server that allows one connection at a time is still read.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from urllib.parse import quote, urljoin, urlsplit

from thermvision_db.sources import limits
from thermvision_db.sources.base import SourceError

_PIECE = 256 << 10
_REDIRECTS = 5


class Refused(SourceError):
    """An answer that retrying will not fix (wrong range, changed file, Range ignored)."""


class Dropped(ConnectionError):
    """A connection refused, reset or cut short: worth a retry, and a sign to lower the in-flight limit."""


class Limit:
    """How many range requests may be in flight; lowered (never below 1) when the server refuses connections."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.active = 0
        self._cond = threading.Condition()

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.active >= self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no request slot within {timeout:g} s")
                self._cond.wait(left)
            self.active += 1

    def release(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def lower(self) -> None:
        with self._cond:
            self.limit = 1


def etag_of(info: dict) -> str | None:
    for key in ("ETag", "etag"):
        if info.get(key):
            return str(info[key])
    return None


class HttpRanges:
    """Range GETs of one URL; `etag` is the validator from the HEAD (None: the server gave none)."""

    def __init__(self, url: str, size: int, etag: str | None, headers: dict | None = None):
        self.url, self.size, self.etag = url, size, etag
        self.headers = dict(headers or {})
        self._idle: list[tuple[str, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"url": self.url, "size": self.size, "etag": self.etag, "headers": self.headers}

    def __setstate__(self, state):
        self.__init__(**state)

    def get(self, start: int, end: int, what: str) -> bytes:
        """Bytes [start, end) of the file; raises Refused, Dropped, TimeoutError or OSError."""
        deadline = time.monotonic() + limits.attempt_timeout(end - start)
        url = self.url
        for _ in range(_REDIRECTS + 1):
            conn, key = self._connection(url)
            try:
                data, location, reusable = self._request(conn, url, start, end, what, deadline)
            except BaseException:
                conn.close()
                raise
            if location is None:
                if data is not None and reusable:
                    self._give_back(key, conn)
                else:
                    conn.close()  # bytes beyond the asked range may still be on the wire
                return data
            conn.close()
            url = urljoin(url, location)
        raise Refused(f"{self.url}: more than {_REDIRECTS} redirects while reading {what}")

    def _request(self, conn, url, start, end, what, deadline):
        parts = urlsplit(url)
        target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~") + (f"?{parts.query}" if parts.query else "")
        headers = {**self.headers, "Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as err:
            raise Dropped(f"connection refused or reset ({type(err).__name__}: {err})") from err
        status = response.status
        if status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            return None, response.getheader("Location"), False
        if status == 416:
            raise Refused(f"{self.url} answers 416 (range not satisfiable) for bytes {start:,}-{end - 1:,} of {what}: "
                          f"the file is shorter than the {self.size:,} bytes its HEAD gave; it changed, reload")
        if status == 200:
            raise Refused(f"{self.url} ignores HTTP Range requests (200 with the whole file when {end - start:,} bytes of "
                          f"{what} were asked; nothing of it was read); download the archives instead "
                          f"(`thermvision-db download`)")
        if status != 206:
            err = OSError(f"HTTP {status} {response.reason}")
            err.status = status  # 408/429/5xx are retried (see remote_zip._is_transient)
            raise err
        etag = response.getheader("ETag")
        if self.etag and etag and etag != self.etag:
            raise Refused(f"{url} changed under us while reading {what}: its ETag was {self.etag}, this answer's is "
                          f"{etag}; the rows would mix two versions of the archive. Load again")
        expected = f"bytes {start}-{end - 1}/{self.size}"
        answered = (response.getheader("Content-Range") or "").strip()
        if answered != expected:
            raise Refused(f"{url} answered Content-Range {answered or 'none'!r} for {what} where {expected!r} was "
                          f"asked; refused")
        length = response.getheader("Content-Length")
        if length is not None and length.strip() != str(end - start):
            raise Refused(f"{url} answered Content-Length {length} for {what} where {end - start:,} bytes were asked; "
                          f"refused")
        data = _read_body(response, end - start, deadline)
        return data, None, response.isclosed() and not response.will_close and not _pending(conn.sock)

    def _connection(self, url: str):
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            for i, (k, conn) in enumerate(self._idle):
                if k == key:
                    del self._idle[i]
                    return conn, key
        idle = limits.idle_timeout()
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=idle,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=idle)
        return conn, key

    def _give_back(self, key: str, conn) -> None:
        with self._lock:
            self._idle.append((key, conn))
            while len(self._idle) > 16:
                self._idle.pop(0)[1].close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()


def _pending(sock) -> bool:
    """Readable right after a complete answer: more bytes than asked, or the server closed it. Not reused."""
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable) or bool(getattr(sock, "pending", lambda: 0)())


def _read_body(response, want: int, deadline: float) -> bytes:
    """Exactly `want` bytes in bounded pieces; the socket's timeout is the idle limit, `deadline` the total."""
    pieces, got = [], 0
    while got < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the attempt ran past its total limit with {got:,} of {want:,} bytes")
        try:
            piece = response.read1(min(_PIECE, want - got))  # what has arrived: the deadline is checked
        except socket.timeout as err:
            raise TimeoutError(f"no byte for {limits.idle_timeout():g} s") from err
        except (ConnectionError, http.client.IncompleteRead) as err:
            raise Dropped(f"connection cut after {got:,} of {want:,} bytes ({type(err).__name__})") from err
        if not piece:
            raise Dropped(f"short body: {got:,} of {want:,} bytes")
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)
