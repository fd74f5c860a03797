"""A zip read where it lives (Hub, HTTP, S3, GCS) through range requests, never downloaded whole.

The central directory is fetched once and kept on disk beside the `datasets` cache, keyed by the archive's
sha256 or ETag; after that only the bytes of the members a row needs travel. Members of one folder sit next
to each other in the archive, so a read also fetches the following members of the same folder and kind ahead of
the reader: coalesced range requests, several in flight, within a byte budget (sources/readahead.py); a video's
354 label files cost a few requests, not 354. `http(s)://` ranges go through a checked client
(sources/http_range.py), other backends through fsspec. Python's `zipfile` parses everything (zip64, CRC checks,
compression methods) from a sparse file that holds only the fetched byte ranges.
"""

from __future__ import annotations

import bisect
import io
import logging
import os
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field

from thermvision_db.sources.base import MissingRemoteFile, SourceError
from thermvision_db.sources import limits
from thermvision_db.sources.http_range import Dropped, HttpRanges, Limit, etag_of
from thermvision_db.sources.readahead import ReadAhead, workers as default_workers
from thermvision_db.sources.local import ZipArchive
from thermvision_db.sources.zip_directory import (ENV_CACHE, archive_identity, cache_root, central_directory,  # noqa: F401
                                                 directory_cache_path)

logger = logging.getLogger(__name__)

STREAMS = 3  # runs read ahead at once per archive: a video's PNGs, its labels, its MP4
_ALONE = {"mp4"}  # videos are read one at a time: no read-ahead into the decoy MP4s beside them


class _Transient(Exception):
    """A short or failed read worth retrying."""


def _is_timeout(err: BaseException) -> bool:
    import asyncio

    return isinstance(err, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in type(err).__name__


def http_timeout(fs, num_bytes: int) -> dict:
    """The total limit of one request (fsspec's own `timeout`, for async backends); the idle limit is the
    HTTP session's (see `_url_to_fs`)."""
    from fsspec.asyn import AsyncFileSystem

    return {"timeout": limits.attempt_timeout(num_bytes)} if isinstance(fs, AsyncFileSystem) else {}


def _is_transient(err: BaseException) -> bool:
    """Dropped connections, timeouts and 408/429/5xx are retried; missing files and refusals are not."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, SourceError)):
        return False
    status = getattr(err, "status", None) or getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in (408, 429) or status >= 500
    return True


@dataclass
class RangeReader:
    """Byte ranges of one remote file with bounded retries; counts what it fetched."""

    fs: object
    path: str
    url: str
    size: int
    retries: int = 3
    retry_wait: float = 0.5
    info: dict = field(default_factory=dict)
    http: HttpRanges | None = None  # the checked client for http(s)://; None: fsspec
    in_flight: int = 4

    def __post_init__(self):
        self.bytes_read = 0
        self.requests = 0
        self._lock = threading.Lock()
        self.limit = Limit(self.in_flight)

    def read(self, start: int, end: int, what: str) -> bytes:
        """Bytes [start, end): a dropped connection or short answer is retried, then named in the error."""
        end = min(end, self.size)
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_wait * 2 ** (attempt - 1))
                logger.info("retry %d/%d of %s in %s after: %s", attempt, self.retries, what, self.url, last)
            try:
                self.limit.acquire(limits.attempt_timeout(end - start) * (self.retries + 1))
                try:
                    data = self._fetch(start, end, what)
                finally:
                    self.limit.release()
            except Exception as err:  # noqa: BLE001 - backends raise their own types (aiohttp, httpx, botocore)
                if isinstance(err, Dropped) and self.limit.limit > 1:
                    logger.info("%s refused or reset a connection (%s): one request in flight from now on", self.url, err)
                    self.limit.lower()
                if _is_timeout(err):
                    err = _Transient(f"timed out ({limits.timeout_hint()})")
                if not _is_transient(err):
                    raise SourceError(f"cannot read {what} from {self.url}: {type(err).__name__}: {err}") from err
                last = err
                continue
            with self._lock:
                self.bytes_read += len(data)
                self.requests += 1
            if len(data) == end - start:
                return data
            if len(data) > end - start:
                raise SourceError(f"{self.url} ignores HTTP Range requests (asked for {end - start:,} bytes of {what}, "
                                  f"got {len(data):,}); download the archives instead (`thermvision-db download`)")
            last = _Transient(f"short read: {len(data):,} of {end - start:,} bytes")
        raise SourceError(f"cannot read {what} (bytes {start:,}-{end:,}) from {self.url} after {self.retries + 1} "
                          f"attempts: {type(last).__name__}: {last}. The connection keeps failing; retry later, or "
                          f"download the archives (`thermvision-db download`)") from last

    def _fetch(self, start: int, end: int, what: str) -> bytes:
        from fsspec.asyn import AsyncFileSystem

        if self.http is not None:
            return self.http.get(start, end, what)

        if isinstance(self.fs, AsyncFileSystem):  # HTTP, S3, GCS: one ranged GET, bounded in time for HTTP
            return self.fs.cat_file(self.path, start=start, end=end, **http_timeout(self.fs, end - start))
        # HfFileSystem and other sync backends: one ranged read without the read-ahead block cache
        with self.fs.open(self.path, "rb", block_size=max(end - start, 1), cache_type="none") as handle:
            handle.seek(start)
            return handle.read(end - start)


class _SparseFile(io.RawIOBase):
    """A file of `size` bytes of which only some ranges are known; `zipfile` reads it like the real archive.

    `fixed` is the central directory; `windows` the last few fetched member ranges (bounded memory)."""

    def __init__(self, size: int, fixed: tuple[int, bytes], keep: int = 3):
        self.size = size
        self.fixed = fixed
        self.windows: OrderedDict[int, bytes] = OrderedDict()
        self.keep = keep
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def covering(self, start: int, end: int) -> tuple[int, bytes] | None:
        for begin, data in (*self.windows.items(), self.fixed):
            if begin <= start and end <= begin + len(data):
                return begin, data
        return None

    def add_window(self, start: int, data: bytes) -> None:
        self.windows[start] = data
        while len(self.windows) > self.keep:
            self.windows.popitem(last=False)

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.pos + n, self.size)
        found = self.covering(self.pos, end)
        if found is None:
            raise OSError(f"bytes {self.pos}-{end} of the remote zip were not fetched")
        begin, data = found
        out = data[self.pos - begin:end - begin]
        self.pos = end
        return out


class RemoteZipArchive(ZipArchive):
    """One released zip at a URL, read member by member; picklable for `num_proc` and DataLoader workers."""

    def __init__(self, url: str, root: str, storage_options: dict | None = None, readahead: int | None = None,
                 workers: int | None = None):
        """`readahead`: the read-ahead byte budget (None: $THERMVISION_DB_READAHEAD_BYTES or 64 MiB); `workers`:
        range requests in flight (None: $THERMVISION_DB_REMOTE_WORKERS or 4)."""
        super().__init__(url, root)  # `path` is the URL: error messages name it
        self.url = url
        self.storage_options = storage_options or {}
        self.readahead = readahead
        self.workers = workers
        self._setup_lock = threading.RLock()
        self._reader: RangeReader | None = None
        self._reader_pid: int | None = None
        self._ahead: ReadAhead | None = None
        self._directory: tuple[int, bytes] | None = None

    def __getstate__(self):
        return {"url": self.url, "root": self.root, "storage_options": self.storage_options, "readahead": self.readahead,
                "workers": self.workers}

    def __setstate__(self, state):
        self.__init__(**state)

    @property
    def reader(self) -> RangeReader:
        with self._setup_lock:
            if self._reader is None or self._reader_pid != os.getpid():  # a forked worker opens its own session
                self._reader = open_range_reader(self.url, self.storage_options, self.workers)
                self._reader_pid = os.getpid()
                self._ahead = None
            return self._reader

    @property
    def ahead(self) -> ReadAhead:
        """The read-ahead of this process (`peak` and `held` count its buffered bytes)."""
        reader = self.reader
        with self._setup_lock:
            if self._ahead is None:
                self._ahead = ReadAhead(reader.read, self.url, self.readahead, reader.in_flight - STREAMS,
                                        streams=STREAMS, attempts=reader.retries + 1)
            return self._ahead

    def info(self) -> dict:
        return self.reader.info

    def _zip(self) -> zipfile.ZipFile:
        handle = getattr(self._local, "zip", None)
        if handle is None or self._pid != os.getpid():
            try:
                start, sparse, handle = self._parse(use_cache=True)
            except (zipfile.BadZipFile, OSError, ValueError) as err:  # a damaged cache file: fetch it again
                cache = directory_cache_path(self.reader)
                logger.warning("%s: the cached central directory %s does not parse (%s); discarded, fetching it again",
                               self.url, cache, err)
                if cache is not None:
                    cache.unlink(missing_ok=True)
                try:
                    start, sparse, handle = self._parse(use_cache=False)
                except (zipfile.BadZipFile, OSError, ValueError) as err2:
                    raise SourceError(f"{self.url}: the central directory does not parse ({err2}); is this a zip?") from err2
            self._local.zip, self._local.sparse = handle, sparse
            self._local.order = sorted(handle.infolist(), key=lambda i: i.header_offset)
            self._local.offsets = [i.header_offset for i in self._local.order]
            self._local.directory_start = handle.start_dir  # not `start`: a small archive's tail holds members too
            self._local.runs = _runs(self._local.order)
            self._pid = os.getpid()
        return handle

    def _parse(self, use_cache: bool) -> tuple[int, _SparseFile, zipfile.ZipFile]:
        start, data = self.directory(use_cache)
        sparse = _SparseFile(self.reader.size, (start, data))
        return start, sparse, zipfile.ZipFile(sparse)

    def directory(self, use_cache: bool = True) -> tuple[int, bytes]:
        """(offset, bytes) from the central directory to the end of the archive: from the disk cache or fetched."""
        with self._setup_lock:
            if self._directory is None or not use_cache:
                self._directory = central_directory(self.reader, use_cache)
            return self._directory

    def read(self, member: str) -> bytes:
        if member not in self.index:
            return super().read(member)  # the parent's KeyError path names the member
        zf = self._zip()
        info = zf.getinfo(self.index[member])
        limits.check_member(self.url, member, info)  # before any byte of it travels
        self._ensure_window(info, member)
        try:
            return super().read(member)
        finally:
            self._local.sparse.windows.clear()

    def prefetch(self, member: str) -> None:
        """Start fetching `member` and the rest of its run without waiting (a hint; a read reports any error)."""
        if member not in self.index:
            return
        info = self._zip().getinfo(self.index[member])
        try:
            limits.check_member(self.url, member, info)
        except SourceError:
            return  # the read names it
        self._ensure_window(info, member, wait=False)

    def _ensure_window(self, info: zipfile.ZipInfo, member: str, wait: bool = True) -> None:
        """Fetch this member through the read-ahead of its run (its folder's members of its kind, in order)."""
        local = self._local
        order, offsets, sparse, runs = local.order, local.offsets, local.sparse, local.runs
        k = bisect.bisect_left(offsets, info.header_offset)
        first, last = runs[k]

        def extents(base: int) -> list[tuple[int, int, str]]:
            return [(order[i].header_offset, _member_end(order, i, local.directory_start), order[i].filename)
                    for i in range(base, last)]

        if not wait:
            return self.ahead.start((first, last), extents, k)
        start, data = self.ahead.get((first, last), k, extents, k)
        sparse.windows.clear()  # the chunk is held by the read-ahead; the sparse file only borrows it
        sparse.add_window(start, data)


def _runs(order: list[zipfile.ZipInfo]) -> list[tuple[int, int]]:
    """For each member (in archive order) the [first, last) indices of its run: the neighbours of the same folder
    and kind. MP4s are runs of one: no read-ahead into the decoy MP4s beside a video."""
    runs: list[tuple[int, int]] = []
    k = 0
    while k < len(order):
        folder_kind = _folder_and_suffix(order[k].filename)
        j = k + 1
        if folder_kind[1] not in _ALONE:
            while j < len(order) and _folder_and_suffix(order[j].filename) == folder_kind:
                j += 1
        runs.extend([(k, j)] * (j - k))
        k = j
    return runs


def _folder_and_suffix(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    return folder, base.rpartition(".")[2].lower()


def _member_end(order: list[zipfile.ZipInfo], k: int, directory_start: int) -> int:
    """A member ends where the next one starts (data descriptors included), the last one at the directory."""
    return order[k + 1].header_offset if k + 1 < len(order) else directory_start


def _url_to_fs(url: str, storage_options: dict):
    """The fsspec filesystem; for http(s) an aiohttp session that gives up after the idle limit without a byte
    (aiohttp's default waits 5 minutes per read)."""
    from fsspec.core import url_to_fs

    if url.split("://", 1)[0].lower() in ("http", "https") and "timeout" not in storage_options.get("client_kwargs", {}):
        import aiohttp

        idle = limits.idle_timeout()
        client = {**storage_options.get("client_kwargs", {}),
                  "timeout": aiohttp.ClientTimeout(total=None, sock_connect=idle, sock_read=idle)}
        storage_options = {**storage_options, "client_kwargs": client}
    return url_to_fs(url, **storage_options)


def _dropped(err: BaseException | None) -> bool:
    """A connection refused, reset or closed early (retried), not a timeout, a refusal or a missing file."""
    if isinstance(err, ConnectionError):
        return True
    try:
        import aiohttp
    except ImportError:
        return False
    return isinstance(err, aiohttp.ClientConnectionError) and not _is_timeout(err)


def open_range_reader(url: str, storage_options: dict | None = None, workers: int | None = None) -> RangeReader:
    """A RangeReader for `url`; a missing backend or file gives an error that says which and what to do."""
    try:
        fs, path = _url_to_fs(url, storage_options or {})
    except ImportError as err:
        raise SourceError(f"cannot read {url}: its fsspec backend is not installed ({err}); e.g. `pip install s3fs` "
                          f"for s3://, `pip install gcsfs` for gs://") from err
    retries, wait = limits.retries(), limits.retry_wait()
    for attempt in range(retries + 1):
        try:
            info = fs.info(path, **http_timeout(fs, 0))
            break
        except FileNotFoundError as err:
            if not _dropped(err.__cause__):  # fsspec's HTTP info says "not found" for a reset connection too
                raise MissingRemoteFile(f"{url} does not exist (or needs credentials to be seen)") from err
            why, last = f"{type(err.__cause__).__name__}: {err.__cause__}", err
        except Exception as err:  # noqa: BLE001 - offline mode, DNS, TLS, auth, redirect loops: the URL named
            why = f"timed out ({limits.timeout_hint()})" if _is_timeout(err) else f"{type(err).__name__}: {err}"
            if not _dropped(err):
                raise SourceError(f"cannot reach {url}: {why}") from err
            last = err
        if attempt < retries:
            logger.info("retry %d/%d of the HEAD of %s after: %s", attempt + 1, retries, url, why)
            time.sleep(wait * 2 ** attempt)
    else:
        raise SourceError(f"cannot reach {url} after {retries + 1} attempts: {why}") from last
    if not info.get("size"):
        raise SourceError(f"{url} reports no size: the server must send Content-Length and honour Range requests")
    size = int(info["size"])
    http = None
    options = storage_options or {}
    if url.split("://", 1)[0].lower() in ("http", "https") and set(options) <= {"headers"}:
        http = HttpRanges(url, size, etag_of(info), options.get("headers"))
    return RangeReader(fs, path, url, size, retries=retries, retry_wait=wait, info=info, http=http,
                       in_flight=(default_workers() if workers is None else max(1, workers)) + STREAMS)


