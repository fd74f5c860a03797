"""What an export wrote, so a later export replaces only its own files and never a user's.

`<out>/.thermvision-export.json` lists, per format, the files the last export of that format wrote. A new
export may overwrite those; a file it would write that is not listed (the user's README.md, a same-name PNG)
stops it before anything is written, unless `overwrite=True`. Files of the previous export of the same format
that the new one did not write again are removed, and only those: regular files inside `out`, never a link.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from thermvision_db.errors import ThermVisionError
from thermvision_db.io.atomic import atomic_write_json

logger = logging.getLogger(__name__)

MANIFEST = ".thermvision-export.json"


class ExportConflict(ThermVisionError, FileExistsError):
    """The export would replace files it did not write."""


class ExportManifest:
    def __init__(self, out: Path, fmt: str, overwrite: bool = False):
        self.out, self.fmt, self.overwrite = out, fmt, overwrite
        self.path = out / MANIFEST
        self.all = self._load()
        self.owned = {name for files in self.all.values() for name in files}
        self.written: list[str] = []

    def _load(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            logger.warning("%s is unreadable (%s): every existing file counts as the user's", self.path, err)
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: [f for f in v if isinstance(f, str)] for k, v in data.items() if isinstance(v, list)}

    def check(self, planned) -> None:
        """Stop, before writing, when a planned file exists and no export wrote it."""
        if self.overwrite:
            return
        clashes = []
        for path in planned:
            relative = str(Path(path).relative_to(self.out))
            if os.path.lexists(path) and relative not in self.owned:
                clashes.append(relative)
        if clashes:
            raise ExportConflict(f"{self.out} already holds {len(clashes)} file(s) this export would replace and did "
                                 f"not write (first: {clashes[0]}); export into an empty folder, or pass --overwrite")

    def wrote(self, path: Path) -> None:
        self.written.append(str(Path(path).relative_to(self.out)))

    def finish(self) -> None:
        """Remove this format's stale files from the previous export, then record what this one wrote."""
        keep = set(self.written)
        for relative in self.all.get(self.fmt, []):
            path = self.out / relative
            inside = Path(os.path.abspath(path)).is_relative_to(Path(os.path.abspath(self.out)))
            if relative not in keep and inside and path.is_file() and not path.is_symlink():
                path.unlink()
        atomic_write_json(self.path, {**self.all, self.fmt: sorted(keep)})
