"""The `datasets` cache key of a load: the code that makes the rows, the files they come from, every option.

Code is hashed by whole package folders (every `.py` under `thermvision_db/`, and under `generator/` for the
synthetic configurations) plus the member table, so no module can change the rows without changing the key.
Files are keyed by size and mtime (hashing 20 GB of zips per load would be slow); remote zips by their ETag or
sha256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from thermvision_db.hf import door

PACKAGE = Path(__file__).resolve().parents[1]


def loader_code_hash() -> str:
    """Every Python file of the loader package and the member table, by relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes())
    digest.update((PACKAGE / "data" / "members.tsv").read_bytes())
    return digest.hexdigest()[:16]


def tree_fingerprint(root: Path) -> str:
    """Size and mtime of every file under `root` (a generated corpus, the 2D stills): an edit anywhere shows."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:
                continue  # a broken link: the loader names it when it reads the folder
            digest.update(f"{os.path.relpath(os.path.join(folder, name), root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def released_fingerprint(name: str, data_dir: Path) -> str:
    """The files the rows of `name` come from, by size and mtime (see `ReleaseSource.fingerprint`)."""
    if name == "images":
        return tree_fingerprint(data_dir)
    from thermvision_db.hf.builder import opened_source

    return opened_source(data_dir).fingerprint()


def synthetic_key(config) -> str:
    """The generator's code, the corpus folder, and every generation setting (weights by path, size and mtime)
    or, when reading a corpus as it is, the state of its identity records."""
    out = config.synthetic_output_dir()
    key = door.generator_code_hash() + str(out.resolve())  # the same settings elsewhere is another corpus
    if config.num_identities is not None:
        return key + door.fingerprint(config.generation_settings())
    return key + tree_fingerprint(out / "identities")
