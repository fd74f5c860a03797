"""The released corpus on local disk: the two zips (read in place, never extracted) or their extracted folders."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import zipfile
from functools import cached_property
from pathlib import Path

from thermvision_db.schema.members import ARCHIVES, GENDER_ROOT, Member
from thermvision_db.sources.base import ArchiveSource, SourceError, local_folder
from thermvision_db.sources.limits import check_member


class ZipArchive:
    """A zip opened lazily once per process (readers are not shared across fork), indexed by member name."""

    def __init__(self, path: Path, root: str):
        self.path = path
        self.root = root
        self._local = threading.local()
        self._pid = None

    def _zip(self) -> zipfile.ZipFile:
        handle = getattr(self._local, "zip", None)
        if handle is None or self._pid != os.getpid():
            handle = _open_zip(self.path)
            self._local.zip = handle
            self._pid = os.getpid()
        return handle

    @cached_property
    def index(self) -> dict[str, str]:
        """Member path relative to `<Gender> Subjects/` -> the name stored in the zip (any leading folder).

        Zips written on Windows by some tools store `\\` separators (against the zip specification): they are
        indexed as `/`.
        """
        marker = self.root + "/"
        out = {}
        for name in self._zip().namelist():
            normal = name.replace("\\", "/")
            if normal.endswith("/"):
                continue
            at = normal.find(marker)
            if at >= 0:
                out[normal[at:]] = name
        if not out:
            raise SourceError(f"{self.path} holds no '{marker}' folder: is this the right archive?")
        return out

    def exists(self, member: str) -> bool:
        return member in self.index

    def read(self, member: str) -> bytes:
        """The member's bytes, after its declared size and compression method are checked (see `limits`)."""
        zf = self._zip()
        info = zf.getinfo(self.index[member])
        check_member(str(self.path), member, info)
        try:
            return zf.read(info)
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise SourceError(f"{self.path}: cannot read {member!r} ({err}); the zip looks truncated or damaged, re-download it") from err
        except (NotImplementedError, RuntimeError) as err:  # zipfile's words for methods and encryption it lacks
            raise SourceError(f"{self.path}: cannot read {member!r}: {err}") from err

    def __getstate__(self):  # picklable for num_proc / DataLoader workers: reopen in the child
        return {"path": self.path, "root": self.root}

    def __setstate__(self, state):
        self.__init__(state["path"], state["root"])


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        size = path.stat().st_size
        raise SourceError(
            f"{path} is not a readable zip ({size:,} bytes): truncated or damaged download. "
            f"Re-download it, or run `thermvision-db verify {path.parent}` to compare checksums."
        ) from err


class FolderArchive:
    def __init__(self, path: Path):
        self.path = path  # the folder that holds `<Gender> Subjects/`
        self._root = str(path) if str(path).endswith("/") else f"{path}/"  # Path("/") is the one ending in "/"
        self._listings: dict[str, dict[str, tuple[int, int] | str]] = {}

    def listing(self, folder: str) -> dict[str, tuple[int, int] | str]:
        """One scandir per folder: file name -> (size, mtime_ns), or the reason a symbolic link is broken.

        A video's 600 frame and label files cost one scandir; the cache key reuses the same sizes and times.
        """
        listing = self._listings.get(folder)
        if listing is None:
            listing = {}
            try:
                with os.scandir(self.path / folder) as entries:
                    for entry in entries:
                        try:
                            stat = entry.stat()
                        except OSError as err:
                            if entry.is_symlink():
                                listing[entry.name] = broken_link_reason(Path(entry.path), err)
                            continue
                        if not entry.is_dir():
                            listing[entry.name] = (stat.st_size, stat.st_mtime_ns)
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as err:
                raise SourceError(f"{self.path / folder}: {broken_link_reason(self.path / folder, err)}") from err
            self._listings[folder] = listing
        return listing

    def exists(self, member: str) -> bool:
        folder, _, name = member.rpartition("/")
        found = self.listing(folder).get(name)
        if isinstance(found, str):
            raise SourceError(f"{self.path / member}: {found}")
        return found is not None

    def present(self, members: list[str]) -> list[bool]:
        """`exists` of each member, each folder's listing looked up once (a broken link is a `SourceError`)."""
        out = []
        folder, listing = None, {}
        for member in members:
            parent, _, name = member.rpartition("/")
            if parent != folder:
                folder, listing = parent, self.listing(parent)
            found = listing.get(name)
            if isinstance(found, str):
                raise SourceError(f"{self.path / member}: {found}")
            out.append(found is not None)
        return out

    def read(self, member: str) -> bytes:
        """The file's bytes through a raw descriptor: a label file is read for every streamed frame, and a file
        object costs twice the system calls of open, read to the end, close."""
        fd = os.open(self.local_path(member), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)

    def local_path(self, member: str) -> str:
        # string joins, not pathlib: two of these per streamed frame (members are relative, `/`-separated names)
        return self._root + member

    def __getstate__(self):  # listings are rebuilt in each worker
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])


def broken_link_reason(path: Path, err: OSError) -> str:
    """Say plainly why a path cannot be followed: a symbolic link loop, a dangling link, or the OS error."""
    if err.errno == errno.ELOOP:
        return "a symbolic link loop (the link points back to itself); remove or fix the link"
    if path.is_symlink():
        return f"a dangling symbolic link to {os.readlink(path)!r} (its target does not exist); remove or fix the link"
    return f"cannot be read ({err.strerror or err})"


class ReleaseSource(ArchiveSource):
    """Reads released members from a data folder holding the two zips, their extracted folders, or both.

    Extracted folders win when both are present (no decompression); zips fill in whatever is missing.
    """

    def __init__(self, data_dir: str | os.PathLike):
        data_dir = local_folder(data_dir)
        self.data_dir = data_dir
        if not self.data_dir.is_dir():
            try:
                self.data_dir.stat()
            except FileNotFoundError:
                if self.data_dir.is_symlink():
                    raise SourceError(f"data_dir {self.data_dir}: {broken_link_reason(self.data_dir, OSError())}") from None
            except OSError as err:
                raise SourceError(f"data_dir {self.data_dir}: {broken_link_reason(self.data_dir, err)}") from err
            raise SourceError(f"data_dir {self.data_dir} is not a folder")
        archives: dict[str, list] = {}
        for gender, zip_name in ARCHIVES.items():
            found = []
            root = GENDER_ROOT[gender]
            for folder in (self.data_dir, self.data_dir / root):
                if (folder / root).is_dir():
                    found.append(FolderArchive(folder))
                    break
            zip_path = self.data_dir / zip_name
            if zip_path.is_file():
                found.append(ZipArchive(zip_path, root))
            archives[gender] = found
        super().__init__(data_dir, archives)
        if not any(self.archives.values()):
            raise SourceError(
                f"{self.data_dir} holds neither {' nor '.join(repr(z) for z in ARCHIVES.values())} nor the folders "
                f"{' / '.join(repr(r) for r in GENDER_ROOT.values())} extracted from them"
            )

    def fingerprint(self, members: list[Member] | None = None) -> str:
        """Cache key of the files `members`' rows come from: size and mtime of each, from the same listings the
        loader reads (no hashing); a zip by its own size and mtime. A label corrected in place changes it."""
        members = self.present_members() if members is None else members
        digest = hashlib.sha256()
        for gender, archives in self.archives.items():
            for archive in archives:
                if not isinstance(archive, FolderArchive):  # a local zip; remote sources have their own key
                    stat = Path(archive.path).stat()
                    digest.update(f"zip:{archive.path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
                    continue
                folders = set()
                for member in members:
                    if member.gender == gender:
                        folders.update([member.video_member.rsplit("/", 1)[0], member.frames_dir, member.labels_dir,
                                        *(path.rsplit("/", 1)[0] for path in member.landmark_candidates(0))])
                for folder in sorted(folders):
                    for name, stat in sorted(archive.listing(folder).items()):
                        digest.update(f"{folder}/{name}:{stat}\n".encode())
        return digest.hexdigest()[:16]
