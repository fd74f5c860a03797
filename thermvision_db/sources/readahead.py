"""Read-ahead for a zip read in place: the members of a run (one folder's files of one kind, in archive order)
are fetched ahead of the reader as coalesced range requests, several in flight, within a byte budget.

A run is read through a `_Stream`: its first chunk is the member asked for and the next ones up to 64 KiB (the
first frame comes after one request); the following chunks coalesce the next members up to `chunk` bytes each
(default 2 MiB) and are submitted to a small pool of daemon threads, at most `workers` (default 4) read-ahead
chunks in flight, while the stream's share of the budget allows (`budget // streams`; at most `streams` runs are
kept per archive, the oldest dropped). A chunk asked for never queues behind read-ahead (the pool has a thread
per stream beyond `workers`), and each arriving chunk submits the next one, so the link stays busy while the
reader decodes. A chunk is released once the reader asks for a member after it. Every
byte asked for counts against the budget from the moment it is requested until it is released (`held`, `peak`),
so `peak <= budget`, except one chunk larger than a stream's share, which is fetched alone (nothing else held)
and is bounded by the member limits. Every wait has a timeout.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from thermvision_db.sources import limits
from thermvision_db.sources.base import SourceError

ENV_WORKERS = "THERMVISION_DB_REMOTE_WORKERS"
ENV_BUDGET = "THERMVISION_DB_READAHEAD_BYTES"
ENV_CHUNK = "THERMVISION_DB_READAHEAD_CHUNK"

DEFAULT_WORKERS = 4
DEFAULT_BUDGET = 64 << 20
DEFAULT_CHUNK = 2 << 20
FIRST_CHUNK = 64 << 10  # a run's first request: one 512x512 PNG, or all of a video's label files


def workers() -> int:
    return max(1, int(os.environ.get(ENV_WORKERS, DEFAULT_WORKERS)))


def budget() -> int:
    return max(1, int(float(os.environ.get(ENV_BUDGET, DEFAULT_BUDGET))))


def chunk() -> int:
    return max(1, int(float(os.environ.get(ENV_CHUNK, DEFAULT_CHUNK))))


class _DaemonPool:
    """A few daemon threads running fetches: unlike ThreadPoolExecutor's, they never hold up interpreter exit
    (a stream abandoned mid-run would otherwise finish its read-ahead first)."""

    def __init__(self, size: int):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        for n in range(size):
            threading.Thread(target=self._work, name=f"thermvision-range-{n}", daemon=True).start()
        self.size = size

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            result = None
            try:
                result = fn(*args)
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(err)
            else:
                future.set_result(result)
            item = future = fn = args = result = None  # an idle thread keeps no chunk (nor its read-ahead) alive

    def shutdown(self) -> None:
        while True:  # queued fetches are cancelled; running ones end within their own timeouts
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in range(self.size):
            self._queue.put(None)


@dataclass
class _Chunk:
    first: int  # index of its first member in the run's extents
    last: int  # one past its last member
    start: int
    end: int
    future: object = None
    released: bool = False
    unreserved: bool = False
    ahead: bool = False  # submitted as read-ahead (not asked for): counts against `workers`

    @property
    def size(self) -> int:
        return self.end - self.start


class _Stream:
    """One run being read: `extents` are the (start, end, name) of its members from the first one asked for."""

    def __init__(self, key, base: int, extents: list[tuple[int, int, str]]):
        self.key, self.base, self.extents = key, base, extents
        self.chunks: OrderedDict[int, _Chunk] = OrderedDict()  # by first member
        self.planned = 0  # members covered by planned chunks
        self.reserved = 0
        self.started = False
        self.closed = False

    def plan(self, target: int) -> _Chunk | None:
        """The next chunk: members coalesced up to `target` bytes (the first one of a run up to FIRST_CHUNK, so
        the first frame waits for little more than its own member)."""
        if self.planned >= len(self.extents):
            return None
        if not self.started:
            target = min(target, FIRST_CHUNK)
        first = last = self.planned
        start = self.extents[first][0]
        end = self.extents[first][1]
        last += 1
        while last < len(self.extents) and self.extents[last][1] - start <= target:
            end = self.extents[last][1]
            last += 1
        self.planned, self.started = last, True
        piece = _Chunk(first, last, start, end)
        self.chunks[first] = piece
        return piece

    def find(self, i: int) -> _Chunk | None:
        for piece in self.chunks.values():
            if piece.first <= i < piece.last:
                return piece
        return None


class ReadAhead:
    """Runs of one archive fetched ahead through `fetch(start, end, what) -> bytes` (which retries)."""

    def __init__(self, fetch, url: str, budget_bytes: int | None = None, num_workers: int | None = None,
                 chunk_bytes: int | None = None, streams: int = 3, attempts: int = 4):
        self.fetch, self.url = fetch, url
        self.budget = budget() if budget_bytes is None else max(1, budget_bytes)
        self.workers = workers() if num_workers is None else max(1, num_workers)
        self.chunk = chunk() if chunk_bytes is None else max(1, chunk_bytes)
        self.max_streams = max(1, streams)
        self.attempts = attempts
        self.held = 0
        self.peak = 0
        self.ahead_in_flight = 0
        self._cond = threading.Condition()
        self._streams: OrderedDict[object, _Stream] = OrderedDict()
        self._pool: _DaemonPool | None = None
        self._pid: int | None = None

    @property
    def share(self) -> int:
        return max(1, self.budget // self.max_streams)

    def get(self, key, base: int, extents_from, index: int) -> tuple[int, bytes]:
        """(start, bytes) of the fetched chunk holding member `index` of run `key` (whose members from `base` on
        `extents_from(base)` lists); releases what lies before it and submits what the budget allows after it."""
        stream, piece = self._locate(key, extents_from, index)
        return piece.start, self._wait(stream, piece, index - stream.base)

    def start(self, key, extents_from, index: int) -> None:
        """Begin fetching run `key` at member `index` without waiting (a hint: rows will ask for it soon)."""
        with self._cond:
            if key not in self._streams:
                self._locate(key, extents_from, index)

    def _locate(self, key, extents_from, index: int) -> tuple[_Stream, _Chunk]:
        with self._cond:
            stream = self._streams.get(key)
            if stream is not None and (index < stream.base or stream.find(index - stream.base) is None
                                       and index - stream.base < stream.planned):
                self._close(stream)  # went back to a released member, or skipped: start over at `index`
                stream = None
            if stream is not None and index - stream.base > stream.planned:
                self._close(stream)
                stream = None
            if stream is None:
                stream = self._open(key, index, extents_from(index))
            self._streams.move_to_end(key)
            i = index - stream.base
            for first, piece in list(stream.chunks.items()):
                if piece.last <= i:
                    self._release(stream, piece)
                    del stream.chunks[first]
            self._pump(stream, demand=i)
            return stream, stream.find(i)

    def _open(self, key, base: int, extents) -> _Stream:
        while len(self._streams) >= self.max_streams:
            self._close(next(iter(self._streams.values())))
        stream = _Stream(key, base, extents)
        self._streams[key] = stream
        return stream

    def _close(self, stream: _Stream) -> None:
        stream.closed = True
        for piece in stream.chunks.values():
            self._release(stream, piece)
        stream.chunks.clear()
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]

    def _release(self, stream: _Stream, piece: _Chunk) -> None:
        """Done chunks free their bytes now; chunks in flight when they finish (`_done`)."""
        if piece.released:
            return
        piece.released = True
        if piece.future is None or piece.future.done():
            self._unreserve(stream, piece)

    def _unreserve(self, stream: _Stream, piece: _Chunk) -> None:
        if piece.future is not None and not piece.unreserved:
            piece.unreserved = True
            stream.reserved -= piece.size
            self.held -= piece.size
            self._cond.notify_all()

    def _pump(self, stream: _Stream, demand: int) -> None:
        """Submit the chunk holding `demand` (evicting other runs if it does not fit) and what follows it."""
        deadline = time.monotonic() + self._wait_limit(self.chunk)
        while True:
            piece = stream.find(demand)
            if piece is None:
                piece = stream.plan(self.chunk)
            if piece.future is not None:
                break
            if self._fits(stream, piece):
                self._submit(stream, piece)
                break
            for other in [s for s in self._streams.values() if s is not stream]:
                self._close(other)
            left = deadline - time.monotonic()
            if left <= 0:
                raise SourceError(f"{self.url}: read-ahead budget still full after {self._wait_limit(self.chunk):g} s")
            self._cond.wait(min(left, 1.0))
        self._fill(stream)

    def _fill(self, stream: _Stream) -> None:
        """Submit the next chunks of the run while fewer than `workers` are in flight and its share allows."""
        if stream.closed:
            return
        while self.ahead_in_flight < self.workers:
            nxt = next((p for p in stream.chunks.values() if p.future is None), None) or stream.plan(self.chunk)
            if nxt is None or not self._fits(stream, nxt) or stream.reserved + nxt.size > self.share:
                break
            self._submit(stream, nxt, ahead=True)

    def _fits(self, stream: _Stream, piece: _Chunk) -> bool:
        if stream.reserved == 0 and self.held == 0:
            return True  # alone: one chunk larger than the budget (a large member) is still read
        return stream.reserved + piece.size <= self.share and self.held + piece.size <= self.budget

    def _submit(self, stream: _Stream, piece: _Chunk, ahead: bool = False) -> None:
        if self._pool is None or self._pid != os.getpid():  # a forked worker makes its own threads
            # read-ahead uses `workers` threads; a chunk asked for (or a run's first) never queues behind it
            self._pool = _DaemonPool(self.workers + self.max_streams)
            weakref.finalize(self, self._pool.shutdown)  # its threads end with the archive that used them
            self._pid = os.getpid()
            self.ahead_in_flight = 0
        piece.ahead = ahead
        self.ahead_in_flight += ahead
        stream.reserved += piece.size
        self.held += piece.size
        self.peak = max(self.peak, self.held)
        name = stream.extents[piece.first][2]
        what = f"member {name!r}" if piece.last - piece.first == 1 else \
            f"members {name!r} .. {stream.extents[piece.last - 1][2]!r}"
        piece.future = self._pool.submit(self.fetch, piece.start, piece.end, what)
        piece.future.add_done_callback(lambda _f, s=stream, p=piece: self._done(s, p))

    def _done(self, stream: _Stream, piece: _Chunk) -> None:
        """A chunk arrived: free it if already released, and keep the pipe full (the reader may be busy)."""
        with self._cond:
            self.ahead_in_flight -= piece.ahead
            if piece.released:
                self._unreserve(stream, piece)
            if not piece.future.cancelled() and piece.future.exception() is None:
                self._fill(stream)
            self._cond.notify_all()

    def _wait_limit(self, num_bytes: int) -> float:
        """Longest a fetch can take: every attempt at its total limit, plus the retry waits."""
        waits = sum(limits.retry_wait() * 2 ** k for k in range(self.attempts))
        return self.attempts * limits.attempt_timeout(num_bytes) + waits + 1.0

    def _wait(self, stream: _Stream, piece: _Chunk, i: int) -> bytes:
        limit = self._wait_limit(piece.size) * 2  # it may queue behind the chunks in flight before it
        name = stream.extents[i][2]
        try:
            data = piece.future.result(timeout=limit)
        except FutureTimeout as err:
            if piece.future.done():
                raise
            with self._cond:
                self._close(stream)
            raise SourceError(f"cannot read member {name!r} from {self.url}: no answer within {limit:g} s") from err
        except BaseException:
            with self._cond:
                self._close(stream)  # the next read of this run starts over (and retries)
            raise
        return data

    def close(self) -> None:
        with self._cond:
            for stream in list(self._streams.values()):
                self._close(stream)
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown()
        self._pool = None
