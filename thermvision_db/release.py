"""The released corpus: its member table, its two zips (or the folders extracted from them), checksums.

The archive's names are inconsistent (a double space, Face/Thermal folders, lower-case and `-n` file names)
and it holds other MP4 files too, so every path comes from the shipped member table: nothing is globbed.
Zip members are read in place; nothing is ever extracted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import threading
import zipfile
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from thermvision_db.errors import ThermVisionError

logger = logging.getLogger(__name__)

HUB_REPO_ID = "MAli-Farooq/ThermVision-DB"
ENV_DATA_DIR = "THERMVISION_DB_DIR"
ARCHIVES = {
    "F": "Female Subjects.zip",
    "M": "Male Subjects.zip",
}
ARCHIVE_SHA256 = {
    "Male Subjects.zip": "24d59ed6b1559904089d9e0589c88e7b4945fe50d31ebf108a594f4fccb67318",
    "Female Subjects.zip": "45eccef45dffebd20ed422feb7be86caf6666c0a2dceadd47b28d72a0cddaeea",
}
GENDER_ROOT = {"F": "Female Subjects", "M": "Male Subjects"}
GENDER_NAME = {"F": "female", "M": "male"}


class SourceError(ThermVisionError, RuntimeError):
    """The corpus cannot be found or read; the message says what was looked for and what to do."""


@dataclass(frozen=True)
class Member:
    """One released video and where its frames and labels live inside the archive."""

    video_id: str
    gender: str  # "F" / "M"
    subject: int
    set: int
    set_name: str
    driving_template: str
    num_frames: int
    video_member: str
    frames_dir: str
    labels_dir: str

    @property
    def identity(self) -> str:
        return f"{self.gender}_{self.subject:02d}"

    @property
    def gender_name(self) -> str:
        return GENDER_NAME[self.gender]

    def frame_png(self, index: int) -> str:
        return f"{self.frames_dir}/frame_{index:04d}.png"

    def label_txt(self, index: int) -> str:
        return f"{self.labels_dir}/frame_{index:04d}.txt"

    def landmark_candidates(self, index: int) -> list[str]:
        """Where landmark files would sit if an archive carries them (the release does not document it)."""
        detection = self.labels_dir.rsplit("/", 1)[0]
        return [f"{detection}/{folder}/frame_{index:04d}.txt" for folder in ("landmarks", "Landmarks", "landmark")]


def load_members() -> list[Member]:
    """The 100-video member table shipped with the package."""
    text = resources.files("thermvision_db").joinpath("data/members.tsv").read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO(text), delimiter="\t")
    return [
        Member(
            video_id=r["video_id"],
            gender=r["gender"],
            subject=int(r["subject"]),
            set=int(r["set"]),
            set_name=r["set_name"],
            driving_template=r["driving_template"],
            num_frames=int(r["num_frames"]),
            video_member=r["video_member"],
            frames_dir=r["frames_dir"],
            labels_dir=r["labels_dir"],
        )
        for r in rows
    ]


MEMBERS: list[Member] = load_members()
IDENTITIES: list[str] = sorted({m.identity for m in MEMBERS})


class _ZipArchive:
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
        """Member path relative to `<Gender> Subjects/` -> the name stored in the zip (any leading folder)."""
        marker = self.root + "/"
        out = {}
        for name in self._zip().namelist():
            if name.endswith("/"):
                continue
            at = name.find(marker)
            if at >= 0:
                out[name[at:]] = name
        if not out:
            raise SourceError(f"{self.path} holds no '{marker}' folder: is this the right archive?")
        return out

    def exists(self, member: str) -> bool:
        return member in self.index

    def read(self, member: str) -> bytes:
        try:
            return self._zip().read(self.index[member])
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise SourceError(f"{self.path}: cannot read {member!r} ({err}); the zip looks truncated or damaged, re-download it") from err

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


class _FolderArchive:
    def __init__(self, path: Path):
        self.path = path  # the folder that holds `<Gender> Subjects/`
        self._listings: dict[str, frozenset[str]] = {}

    def exists(self, member: str) -> bool:
        """Looked up in one cached listing per folder: a video's 600 frame and label files cost one scandir."""
        folder, _, name = member.rpartition("/")
        listing = self._listings.get(folder)
        if listing is None:
            try:
                listing = frozenset(e.name for e in os.scandir(self.path / folder) if e.is_file())
            except (FileNotFoundError, NotADirectoryError):
                listing = frozenset()
            self._listings[folder] = listing
        return name in listing

    def read(self, member: str) -> bytes:
        return (self.path / member).read_bytes()

    def local_path(self, member: str) -> str:
        return str(self.path / member)

    def __getstate__(self):  # listings are rebuilt in each worker
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])


class ReleaseSource:
    """Reads released members from a data folder holding the two zips, their extracted folders, or both.

    Extracted folders win when both are present (no decompression); zips fill in whatever is missing.
    """

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir).expanduser()
        if not self.data_dir.is_dir():
            raise SourceError(f"data_dir {self.data_dir} is not a folder")
        self.archives: dict[str, list] = {}
        for gender, zip_name in ARCHIVES.items():
            found = []
            root = GENDER_ROOT[gender]
            for folder in (self.data_dir, self.data_dir / root):
                if (folder / root).is_dir():
                    found.append(_FolderArchive(folder))
                    break
            zip_path = self.data_dir / zip_name
            if zip_path.is_file():
                found.append(_ZipArchive(zip_path, root))
            self.archives[gender] = found
        if not any(self.archives.values()):
            raise SourceError(
                f"{self.data_dir} holds neither {' nor '.join(repr(z) for z in ARCHIVES.values())} nor the folders "
                f"{' / '.join(repr(r) for r in GENDER_ROOT.values())} extracted from them"
            )

    def genders(self) -> list[str]:
        return [g for g, found in self.archives.items() if found]

    def _find(self, gender: str, member: str):
        for archive in self.archives.get(gender, []):
            if archive.exists(member):
                return archive
        return None

    def exists(self, gender: str, member: str) -> bool:
        return self._find(gender, member) is not None

    def read(self, gender: str, member: str) -> bytes:
        archive = self._find(gender, member)
        if archive is None:
            raise SourceError(f"{member!r} is in neither the zip nor the folder under {self.data_dir}")
        return archive.read(member)

    def local_path(self, gender: str, member: str) -> str | None:
        """A file path when the member is extracted on disk (cheaper than bytes), else None."""
        archive = self._find(gender, member)
        return archive.local_path(member) if isinstance(archive, _FolderArchive) else None

    def present_members(self, members: list[Member] | None = None) -> list[Member]:
        """Members whose video or frames folder is present (a partial copy or the miniature holds a subset)."""
        members = MEMBERS if members is None else members
        present = [m for m in members if self.exists(m.gender, m.video_member) or self.exists(m.gender, m.frame_png(0))]
        missing = [m.video_id for m in members if m not in present and self.archives.get(m.gender)]
        if missing:
            logger.info("%d of %d videos are not in %s: %s", len(missing), len(members), self.data_dir, ", ".join(missing[:8]))
        return present


HUB_URL = f"hf://datasets/{HUB_REPO_ID}"


def is_url(value) -> bool:
    """An fsspec URL (hf://, https://, s3://, gs://, ...) rather than a local folder."""
    return isinstance(value, str) and "://" in value and not value.startswith("file://")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | str:
    """`data_dir` (a folder or a URL), else $THERMVISION_DB_DIR, else the Hub dataset (see `hub_source`)."""
    chosen = data_dir or os.environ.get(ENV_DATA_DIR)
    if chosen:
        return str(chosen) if is_url(chosen) else Path(chosen).expanduser()
    return hub_source()


def hub_source(repo_id: str = HUB_REPO_ID) -> Path | str:
    """The Hub's zips: the local Hub cache when a full download is there, else read in place (hf:// URL).

    With HF_HUB_OFFLINE set only the local cache is possible; `thermvision-db download` makes the full copy.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return download_from_hub(repo_id)
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(ARCHIVES.values()),
                                        local_files_only=True))
    except Exception:  # noqa: BLE001 - not downloaded: stream it
        return f"hf://datasets/{repo_id}"
    return folder if all((folder / name).is_file() for name in ARCHIVES.values()) else f"hf://datasets/{repo_id}"


def download_from_hub(repo_id: str = HUB_REPO_ID, token: str | None = None) -> Path:
    """Fetch the two zips from the Hub, resumable (gated: accept the licence on the dataset page, then set HF_TOKEN)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    hint = (
        f"pass data_dir=... (a folder holding {' and '.join(repr(z) for z in ARCHIVES.values())} or their extracted "
        f"folders) or set {ENV_DATA_DIR}"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        try:
            return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(ARCHIVES.values()), local_files_only=True))
        except Exception as err:
            raise SourceError(f"HF_HUB_OFFLINE is set and {repo_id} is not in the local Hub cache: {hint}") from err
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(ARCHIVES.values()), token=token))
    except GatedRepoError as err:
        raise SourceError(
            f"{repo_id} is gated: accept its non-commercial licence at https://huggingface.co/datasets/{repo_id}, "
            f"then `hf auth login` or set HF_TOKEN; or {hint}"
        ) from err
    except RepositoryNotFoundError as err:
        raise SourceError(f"{repo_id} was not found on the Hub (private or gated without a token?): set HF_TOKEN, or {hint}") from err
    except LocalEntryNotFoundError as err:
        raise SourceError(f"cannot reach the Hub to download {repo_id}: {hint}") from err


def sha256_file(path: str | os.PathLike, chunk: int = 8 << 20, progress: bool = True) -> str:
    """Streaming sha256 with a progress bar: the zips are about 10 GiB each."""
    from tqdm.auto import tqdm

    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=not progress) as bar:
        while block := handle.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()
