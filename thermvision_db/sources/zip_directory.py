"""The central directory of a remote zip: found from the end record (zip64 too), bounded in size, and kept on
disk beside the `datasets` cache, keyed by the archive's sha256 or ETag. A cache file carries its own sha256:
one that fails it is named in a warning, deleted and fetched again, never blamed on the remote zip.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path

from thermvision_db.io.atomic import atomic_write_bytes
from thermvision_db.sources import limits
from thermvision_db.sources.base import SourceError

logger = logging.getLogger(__name__)

ENV_CACHE = "THERMVISION_DB_REMOTE_CACHE"
_TAIL = (1 << 16) + 22 + 20 + 56  # longest zip comment + end record + zip64 locator + zip64 end record
_CACHE_MAGIC = b"TVDBCD2\n"  # then start, size (<QQ), sha256 of the directory bytes, the bytes


def cache_root() -> Path:
    """Central directories live beside the `datasets` cache unless $THERMVISION_DB_REMOTE_CACHE says otherwise."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "thermvision_db_zip_directories"


def archive_identity(info: dict) -> str | None:
    """A content identity from fsspec metadata: the Hub's LFS sha256, else an ETag/MD5, else nothing."""
    lfs = info.get("lfs")
    if lfs:
        sha = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
        if sha:
            return f"sha256:{sha}"
    for key in ("sha256", "ETag", "etag", "md5Hash", "blob_id"):
        if info.get(key):
            return f"{key}:{str(info[key]).strip(chr(34))}"
    return None


def directory_cache_path(reader) -> Path | None:
    """The disk cache file of this archive's central directory, keyed by its content identity and size."""
    identity = archive_identity(reader.info)
    if not identity:
        return None
    return cache_root() / f"{hashlib.sha256(f'{identity}:{reader.size}'.encode()).hexdigest()[:32]}.zipdir"


def central_directory(reader, use_cache: bool = True) -> tuple[int, bytes]:
    cache = directory_cache_path(reader)
    if cache is not None:
        cached = _load_cached_directory(cache, reader.size) if use_cache else None
        if cached is not None:
            return cached
    else:
        logger.info("%s carries no ETag or sha256: its central directory is not cached on disk", reader.url)
    # a short tail first (an archive without a comment ends in 22 bytes); the longest comment needs 64 KiB
    tail_start = max(reader.size - 4096, 0)
    tail = reader.read(tail_start, reader.size, "the zip's end record")
    at = tail.rfind(b"PK\x05\x06")
    if tail_start and (at < 0 or at + 22 != len(tail)):  # a comment: zipfile scans the last 64 KiB for the record
        tail_start = max(reader.size - _TAIL, 0)
        tail = reader.read(tail_start, reader.size - len(tail), "the zip's end record") + tail
    start = min(_directory_start(tail, tail_start, reader.url), tail_start)
    if tail_start - start > limits.CENTRAL_DIRECTORY_LIMIT:
        raise SourceError(f"{reader.url}: the end record declares a central directory of {tail_start - start:,} bytes, "
                          f"more than {limits.CENTRAL_DIRECTORY_LIMIT:,}; refused (a damaged or hostile archive)")
    data = reader.read(start, tail_start, "the zip's central directory") + tail if start < tail_start else tail
    if cache is not None:
        atomic_write_bytes(cache, _CACHE_MAGIC + struct.pack("<QQ", start, reader.size) + hashlib.sha256(data).digest() + data)
    return start, data


def _load_cached_directory(path: Path, size: int) -> tuple[int, bytes] | None:
    """The cached directory, or None; a file that fails its own checks is named, deleted and fetched again."""
    try:
        if path.stat().st_size > limits.CENTRAL_DIRECTORY_LIMIT + 64:
            raise ValueError("larger than any central directory")
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        return _discard(path, str(err))
    head = len(_CACHE_MAGIC) + 16 + 32
    if not blob.startswith(_CACHE_MAGIC) or len(blob) < head:
        return _discard(path, "not a central-directory cache file of this version")
    start, cached_size = struct.unpack("<QQ", blob[len(_CACHE_MAGIC):len(_CACHE_MAGIC) + 16])
    checksum, data = blob[head - 32:head], blob[head:]
    if cached_size != size or start + len(data) != size or hashlib.sha256(data).digest() != checksum:
        return _discard(path, "its bytes do not match its checksum or the archive's size")
    return start, data


def _discard(path: Path, why: str) -> None:
    logger.warning("the central-directory cache file %s is damaged (%s): deleted, fetched again", path, why)
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        logger.warning("cannot delete %s (%s); the directory is fetched from the server each time", path, err)
    return None


def _directory_start(tail: bytes, tail_start: int, url: str) -> int:
    """Where the central directory begins, from the end record (zip64 when the archive is over 4 GiB)."""
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise SourceError(f"{url} has no zip end record in its last {len(tail):,} bytes: not a zip, or truncated")
    cd_size, cd_offset = struct.unpack("<II", tail[at + 12:at + 20])
    record = tail_start + at
    locator = at - 20
    if (cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF) or (locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07"):
        if locator < 0 or tail[locator:locator + 4] != b"PK\x06\x07":
            raise SourceError(f"{url}: the zip64 locator is missing before the end record")
        zip64_at = locator - 56
        if zip64_at < 0 or tail[zip64_at:zip64_at + 4] != b"PK\x06\x06":
            raise SourceError(f"{url}: the zip64 end record is not where the locator says")
        cd_size = struct.unpack("<Q", tail[zip64_at + 40:zip64_at + 48])[0]
        record = tail_start + zip64_at
    start = record - cd_size
    if start < 0:
        raise SourceError(f"{url}: the end record gives a central directory of {cd_size:,} bytes, more than the file")
    return start
