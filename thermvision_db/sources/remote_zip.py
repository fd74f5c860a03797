"""A zip read where it lives (Hub, HTTP, S3, GCS) through fsspec range requests, never downloaded whole.

The central directory is fetched once and kept on disk beside the `datasets` cache, keyed by the archive's
sha256 or ETag; after that only the bytes of the members a row needs travel. Members of one folder sit next
to each other in the archive, so a read also fetches the following members of the same folder and kind (a
bounded window): a video's 354 label files cost one request, not 354. Python's `zipfile` parses everything (zip64,
CRC checks, compression methods) from a sparse file that holds only the fetched byte ranges.
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
from thermvision_db.sources.local import ZipArchive
from thermvision_db.sources.zip_directory import (ENV_CACHE, archive_identity, cache_root, central_directory,  # noqa: F401
                                                 directory_cache_path)

logger = logging.getLogger(__name__)

READAHEAD_BYTES = 8 << 20
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

    def __post_init__(self):
        self.bytes_read = 0
        self.requests = 0
        self._lock = threading.Lock()

    def read(self, start: int, end: int, what: str) -> bytes:
        """Bytes [start, end): a dropped connection or short answer is retried, then named in the error."""
        end = min(end, self.size)
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_wait * 2 ** (attempt - 1))
                logger.info("retry %d/%d of %s in %s after: %s", attempt, self.retries, what, self.url, last)
            try:
                data = self._fetch(start, end)
            except Exception as err:  # noqa: BLE001 - backends raise their own types (aiohttp, httpx, botocore)
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

    def _fetch(self, start: int, end: int) -> bytes:
        from fsspec.asyn import AsyncFileSystem

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

    def __init__(self, url: str, root: str, storage_options: dict | None = None, readahead: int = READAHEAD_BYTES):
        super().__init__(url, root)  # `path` is the URL: error messages name it
        self.url = url
        self.storage_options = storage_options or {}
        self.readahead = readahead
        self._setup_lock = threading.RLock()
        self._reader: RangeReader | None = None
        self._reader_pid: int | None = None
        self._directory: tuple[int, bytes] | None = None

    def __getstate__(self):
        return {"url": self.url, "root": self.root, "storage_options": self.storage_options, "readahead": self.readahead}

    def __setstate__(self, state):
        self.__init__(**state)

    @property
    def reader(self) -> RangeReader:
        with self._setup_lock:
            if self._reader is None or self._reader_pid != os.getpid():  # a forked worker opens its own session
                self._reader = open_range_reader(self.url, self.storage_options)
                self._reader_pid = os.getpid()
            return self._reader

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
        return super().read(member)

    def _ensure_window(self, info: zipfile.ZipInfo, member: str) -> None:
        """Fetch this member and the next members of its folder (up to `readahead` bytes) in one request."""
        local = self._local
        order, offsets, sparse = local.order, local.offsets, local.sparse
        k = bisect.bisect_left(offsets, info.header_offset)
        end = _member_end(order, k, local.directory_start)
        if sparse.covering(info.header_offset, end) is not None:
            return
        folder, suffix = _folder_and_suffix(info.filename)
        j = k + 1
        while suffix not in _ALONE and j < len(order) and _folder_and_suffix(order[j].filename) == (folder, suffix):
            next_end = _member_end(order, j, local.directory_start)
            if next_end - info.header_offset > self.readahead:
                break
            end, j = next_end, j + 1
        sparse.add_window(info.header_offset, self.reader.read(info.header_offset, end, f"member {member!r}"))


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


def open_range_reader(url: str, storage_options: dict | None = None) -> RangeReader:
    """A RangeReader for `url`; a missing backend or file gives an error that says which and what to do."""
    try:
        fs, path = _url_to_fs(url, storage_options or {})
    except ImportError as err:
        raise SourceError(f"cannot read {url}: its fsspec backend is not installed ({err}); e.g. `pip install s3fs` "
                          f"for s3://, `pip install gcsfs` for gs://") from err
    try:
        info = fs.info(path, **http_timeout(fs, 0))
    except FileNotFoundError as err:
        raise MissingRemoteFile(f"{url} does not exist (or needs credentials to be seen)") from err
    except Exception as err:  # noqa: BLE001 - offline mode, DNS, TLS, auth, redirect loops: the URL named
        why = f"timed out ({limits.timeout_hint()})" if _is_timeout(err) else f"{type(err).__name__}: {err}"
        raise SourceError(f"cannot reach {url}: {why}") from err
    if not info.get("size"):
        raise SourceError(f"{url} reports no size: the server must send Content-Length and honour Range requests")
    retries, wait = limits.retries(), limits.retry_wait()
    return RangeReader(fs, path, url, int(info["size"]), retries=retries, retry_wait=wait, info=info)


