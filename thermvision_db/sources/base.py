"""What every corpus source shares: its error, telling a URL from a local folder, and member lookups.

A source of the released corpus is a set of archives per gender (extracted folders, local zips, zips at a URL),
tried in order. `ArchiveSource` answers `exists`, `read`, `local_path` and `describe` over them; each kind of
source finds its archives and keys its files for the cache (`fingerprint`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname
from abc import ABC, abstractmethod

from thermvision_db.errors import ThermVisionError
from thermvision_db.schema.members import MEMBERS, Member

logger = logging.getLogger(__name__)


class SourceError(ThermVisionError, RuntimeError):
    """The corpus cannot be found or read; the message says what was looked for and what to do."""


def is_url(value) -> bool:
    """An fsspec URL (hf://, https://, s3://, gs://, ...) rather than a local folder."""
    return isinstance(value, str) and "://" in value and not value.startswith("file://")


def local_folder(value) -> Path:
    """A local path from a folder name or a `file://` URL (`file:///data/x`, `file://localhost/data/x`)."""
    if isinstance(value, str) and value.startswith("file://"):
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"{value}: a file:// URL must name this machine (file:///path), not {parts.netloc!r}")
        return Path(url2pathname(parts.path))
    return Path(value).expanduser()


class MissingRemoteFile(SourceError, FileNotFoundError):
    """A URL names no file (or one the credentials cannot see)."""


class ArchiveSource(ABC):
    """Members looked up in each gender's archives, in order of preference (the first that holds one wins)."""

    def __init__(self, data_dir, archives: dict[str, list]):
        self.data_dir = data_dir
        self.archives = archives

    def genders(self) -> list[str]:
        return [g for g, found in self.archives.items() if found]

    def archive_of(self, gender: str, member: str):
        """The archive holding `member`, or None."""
        for archive in self.archives.get(gender, []):
            if archive.exists(member):
                return archive
        return None

    def exists(self, gender: str, member: str) -> bool:
        return self.archive_of(gender, member) is not None

    def present(self, gender: str, members: list[str]) -> list[bool]:
        """`exists` for many members at once (a video's frames): one look at each archive's index per call where
        the archive offers `present` (an extracted folder's listing), else member by member."""
        found = [False] * len(members)
        for archive in self.archives.get(gender, []):
            missing = [i for i, hit in enumerate(found) if not hit]
            if not missing:
                break
            many = getattr(archive, "present", None)
            hits = many([members[i] for i in missing]) if many is not None else \
                [archive.exists(members[i]) for i in missing]
            for i, hit in zip(missing, hits):
                found[i] = hit
        return found

    def read(self, gender: str, member: str) -> bytes:
        archive = self.archive_of(gender, member)
        if archive is None:
            raise SourceError(f"{member!r} is in neither the zip nor the folder under {self.data_dir}")
        return archive.read(member)

    def prefetch(self, gender: str, members: list[str]) -> None:
        """A hint that these members will be read soon: a remote archive starts fetching them (and their runs)
        concurrently; local sources ignore it."""
        for member in members:
            archive = self.archive_of(gender, member)
            if archive is not None and hasattr(archive, "prefetch"):
                archive.prefetch(member)

    def local_path(self, gender: str, member: str) -> str | None:
        """A file path when the member is extracted on disk (cheaper than bytes), else None."""
        archive = self.archive_of(gender, member)
        local = getattr(archive, "local_path", None)
        return local(member) if local is not None else None

    def describe(self, gender: str, member: str) -> str:
        """How errors name a member: its file, or `archive:member`."""
        local = self.local_path(gender, member)
        if local:
            return local
        archive = self.archive_of(gender, member)
        return f"{getattr(archive, 'path', None) or getattr(archive, 'url', None) or self.data_dir}:{member}"

    def present_members(self, members: list[Member] | None = None) -> list[Member]:
        """Members whose video or frames folder is present (a partial copy or the miniature holds a subset)."""
        members = MEMBERS if members is None else members
        present = [m for m in members if self.exists(m.gender, m.video_member) or self.exists(m.gender, m.frame_png(0))]
        missing = [m.video_id for m in members if m not in present and self.archives.get(m.gender)]
        if missing:
            logger.info("%d of %d videos are not in %s: %s", len(missing), len(members), self.data_dir, ", ".join(missing[:8]))
        return present

    @abstractmethod
    def fingerprint(self, members: list[Member] | None = None) -> str:
        """Cache-key part of the files the rows of `members` come from (each kind of source keys its own)."""
