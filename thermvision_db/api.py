"""`load_dataset` / `load_dataset_builder`: drop-ins for the `datasets` functions of the same name.

`datasets` 4.0 removed loading scripts, so `datasets.load_dataset("thermvision_db", ...)` cannot run this
package's code. These wrappers build the package's builder directly and return ordinary `datasets`
objects; any other dataset name passes straight through to `datasets.load_dataset`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from importlib import resources
from pathlib import Path

import datasets

from thermvision_db.errors import ThermVisionError

NAMES = {"thermvision_db", "thermvision-db", "ThermVision-DB", "MAli-Farooq/ThermVision-DB"}
_SOURCE_MODULES = ("builder", "features", "labels", "release", "released_rows", "images2d", "splits", "video",
                   "generated", "remote", "remote_zip")
RELEASED_CONFIGS = {"frames", "videos", "images"}


def _code_hash() -> str:
    """Cache key part that changes whenever the code producing the rows changes."""
    digest = hashlib.sha256()
    package = resources.files("thermvision_db")
    for name in _SOURCE_MODULES:
        digest.update(package.joinpath(f"{name}.py").read_bytes())
    digest.update(package.joinpath("data/members.tsv").read_bytes())
    return digest.hexdigest()[:16]


def _tree_fingerprint(root: Path) -> str:
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


def _released_fingerprint(name: str, data_dir: Path) -> str:
    """The files the rows of `name` come from, by size and mtime (see `ReleaseSource.fingerprint`)."""
    if name == "images":
        return _tree_fingerprint(data_dir)
    from thermvision_db.release import ReleaseSource

    source = ReleaseSource(data_dir)
    return source.fingerprint(source.present_members())


def check_cache_dir(cache_dir: str | os.PathLike | None) -> None:
    """Fail before any work when the datasets cache folder cannot be written, naming it."""
    folder = Path(cache_dir).expanduser() if cache_dir else Path(datasets.config.HF_DATASETS_CACHE)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".thermvision-write-check-"):
            pass
    except OSError as err:
        raise CacheDirError(f"the datasets cache folder {folder} is not writable ({err.strerror or err}); pass "
                            "cache_dir=... (CLI: --cache-dir) or set HF_DATASETS_CACHE to a writable folder") from err


class CacheDirError(ThermVisionError, PermissionError):
    """The datasets cache folder cannot be written."""


def _generator_code_hash() -> str:
    """The generator's code decides the pixels and labels of a generated corpus: it is part of its cache key."""
    from thermvision_db.generator_package import check_generator_package

    check_generator_package()  # resources.files imports it: a user's generator.py would be loaded instead
    digest = hashlib.sha256()
    package = resources.files("generator")
    for entry in sorted(_python_files(package), key=str):
        digest.update(entry.read_bytes())
    return digest.hexdigest()[:12]


def _python_files(folder):
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name != "__pycache__":
            yield from _python_files(entry)
        elif entry.name.endswith(".py"):
            yield entry


def _synthetic_key(config_kwargs: dict) -> str:
    """Every generation setting (weights by path, size and mtime) and, when reading a corpus as it is, the
    state of its identity records."""
    from thermvision_db.builder import ThermVisionConfig

    config = ThermVisionConfig(name="synthetic", **config_kwargs)
    key = _generator_code_hash() + str(config.synthetic_output_dir().resolve())  # the same settings elsewhere
    if config.num_identities is not None:
        key += config.generation_settings().fingerprint()
    else:
        key += _tree_fingerprint(config.synthetic_output_dir() / "identities")
    return key


def load_dataset_builder(name: str | None = None, *, data_dir: str | os.PathLike | None = None,
                         cache_dir: str | None = None, **config_kwargs) -> datasets.DatasetBuilder:
    """The builder for a configuration, its cache keyed on code, data folder and every option."""
    from thermvision_db.builder import SYNTHETIC_CONFIGS, ThermVisionDB

    name = name or ThermVisionDB.DEFAULT_CONFIG_NAME
    known = [c.name for c in ThermVisionDB.BUILDER_CONFIGS]
    if name not in known:
        raise ValueError(f"unknown configuration {name!r}; choose one of {known}")
    check_cache_dir(cache_dir)
    code = _code_hash()
    if name in RELEASED_CONFIGS:
        from thermvision_db.release import is_url, resolve_data_dir

        resolved = resolve_data_dir(data_dir)
        if is_url(resolved):
            from thermvision_db.remote import remote_fingerprint

            data_dir, code = resolved, code + remote_fingerprint(resolved)
        else:
            data_dir = str(resolved.resolve())
            code += _released_fingerprint(name, resolved)
    elif name in SYNTHETIC_CONFIGS:
        code += _synthetic_key(config_kwargs)
    return ThermVisionDB(config_name=name, data_dir=data_dir, cache_dir=cache_dir, hash=code, **config_kwargs)


def load_dataset(path: str = "thermvision_db", name: str | None = None, *, split=None,
                 data_dir: str | os.PathLike | None = None, cache_dir: str | None = None, streaming: bool = False,
                 num_proc: int | None = None, download_mode=None, verification_mode=None,
                 keep_in_memory: bool | None = None, trust_remote_code: bool | None = None, **config_kwargs):
    """Load ThermVision-DB (`frames`, `videos`, `images`) as `datasets` objects; other names go to `datasets`."""
    if path not in NAMES:
        extra = {} if trust_remote_code is None else {"trust_remote_code": trust_remote_code}
        return datasets.load_dataset(path, name, split=split, data_dir=data_dir, cache_dir=cache_dir,
                                     streaming=streaming, num_proc=num_proc, download_mode=download_mode,
                                     verification_mode=verification_mode, keep_in_memory=keep_in_memory,
                                     **extra, **config_kwargs)
    if trust_remote_code is not None:
        warnings.warn("trust_remote_code is ignored: thermvision_db runs its own installed code", stacklevel=2)
    builder = load_dataset_builder(name, data_dir=data_dir, cache_dir=cache_dir, **config_kwargs)
    if streaming:
        if num_proc is not None:
            raise ValueError("streaming=True reads lazily: parallelise with DataLoader(num_workers=...) instead of num_proc")
        return builder.as_streaming_dataset(split=split)
    try:
        builder.download_and_prepare(download_mode=download_mode, verification_mode=verification_mode, num_proc=num_proc)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, ThermVisionError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
    return builder.as_dataset(split=split, in_memory=bool(keep_in_memory))
