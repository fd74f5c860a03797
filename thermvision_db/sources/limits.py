"""Bounds on every network wait and every archive read, in one place so the docs and the errors agree.

A network attempt fails when no byte arrives for the idle limit, or when it runs past a total limit that grows
with the bytes asked for (a base plus bytes at a slowest plausible rate); attempts are bounded in number. A
zip member is read only when its declared size fits what that kind of member can be (zipfile stops inflating
at the declared size and checks the CRC), so a hostile member cannot inflate hundreds of MB in memory.
"""

from __future__ import annotations

import os
import zipfile

from thermvision_db.sources.base import SourceError

ENV_RETRIES = "THERMVISION_DB_RETRIES"
ENV_RETRY_WAIT = "THERMVISION_DB_RETRY_WAIT"
ENV_IDLE = "THERMVISION_DB_IDLE_TIMEOUT"
ENV_TOTAL = "THERMVISION_DB_TOTAL_TIMEOUT"
ENV_MIN_RATE = "THERMVISION_DB_MIN_RATE"

MiB = 1 << 20
# declared (inflated) size a member of each kind may have; a 512x512 PNG is well under 2 MiB
MEMBER_LIMITS = {"png": 16 * MiB, "txt": 1 * MiB, "json": 16 * MiB, "mp4": 256 * MiB}
OTHER_MEMBER_LIMIT = 64 * MiB
CENTRAL_DIRECTORY_LIMIT = 256 * MiB  # the release's directories are about 6 MB each

# compression methods by their zip id: what zipfile cannot read is named, with what to do
METHOD_NAMES = {0: "stored", 1: "shrunk", 6: "imploded", 8: "deflate", 9: "Deflate64", 12: "bzip2", 14: "LZMA",
                93: "Zstandard", 95: "xz", 98: "PPMd", 99: "AES-encrypted"}


def retries() -> int:
    return max(0, int(os.environ.get(ENV_RETRIES, "3")))


def retry_wait() -> float:
    return float(os.environ.get(ENV_RETRY_WAIT, "0.5"))


def idle_timeout() -> float:
    """Seconds without a byte after which an attempt fails."""
    return float(os.environ.get(ENV_IDLE, "30"))


def attempt_timeout(num_bytes: int) -> float:
    """Total seconds one attempt may take: a base plus `num_bytes` at the slowest accepted rate (64 KiB/s)."""
    base = float(os.environ.get(ENV_TOTAL, "120"))
    rate = float(os.environ.get(ENV_MIN_RATE, str(64 * 1024)))
    return base + max(num_bytes, 0) / rate


def timeout_hint() -> str:
    return (f"limits: no byte for {idle_timeout():g} s, or the attempt's total time; set {ENV_IDLE}, {ENV_TOTAL} "
            f"(seconds) or {ENV_RETRIES} to change them")


def member_limit(name: str) -> int:
    return MEMBER_LIMITS.get(name.rpartition(".")[2].lower(), OTHER_MEMBER_LIMIT)


def check_member(archive: str, member: str, info: zipfile.ZipInfo) -> None:
    """Refuse, naming archive and member, what zipfile cannot read or what would not fit the member's bound."""
    limit = member_limit(member)
    if info.file_size > limit:
        raise SourceError(f"{archive}: member {member!r} declares {info.file_size:,} bytes, more than a "
                          f"{member.rpartition('.')[2] or 'file'} member of this corpus can be ({limit:,}); refused "
                          f"(a damaged or hostile archive)")
    if info.flag_bits & 0x1:
        raise SourceError(f"{archive}: member {member!r} is encrypted; re-zip the files without a password")
    if info.compress_type not in _readable_methods():
        method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise SourceError(f"{archive}: member {member!r} uses the {method} compression method, which Python's "
                          f"zipfile cannot read (Windows' built-in compressor writes Deflate64 for large archives); "
                          f"extract the archive with another tool (7-Zip: `7z x`) and point data_dir at the folder, "
                          f"or re-zip it with Deflate (`zip -r -Z deflate`)")


def _readable_methods() -> set[int]:
    methods = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
    zstd = getattr(zipfile, "ZIP_ZSTANDARD", None)
    if zstd is not None:
        try:
            import compression.zstd  # noqa: F401 - Python 3.14 ships it optionally
            methods.add(zstd)
        except ImportError:
            pass
    return methods
