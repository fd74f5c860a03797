"""`load_dataset` / `load_dataset_builder`: drop-ins for the `datasets` functions of the same name.

`datasets` 4.0 removed loading scripts, so `datasets.load_dataset("thermvision_db", ...)` cannot run this
package's code. These wrappers build the package's builder directly and return ordinary `datasets`
objects; any other dataset name passes straight through to `datasets.load_dataset`.
"""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
from pathlib import Path

import datasets

from thermvision_db.errors import InputError, ThermVisionError
from thermvision_db.hf.per_call import one_call

NAMES = {"thermvision_db", "thermvision-db", "ThermVision-DB", "MAli-Farooq/ThermVision-DB"}
RELEASED_CONFIGS = {"frames", "videos", "images"}


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


def load_dataset_builder(name: str | None = None, *, data_dir: str | os.PathLike | None = None,
                         cache_dir: str | None = None, **config_kwargs) -> datasets.DatasetBuilder:
    """The builder for a configuration, its cache keyed on code, data folder and every option."""
    with one_call():
        return _builder(name, data_dir, cache_dir, config_kwargs)


def _builder(name, data_dir, cache_dir, config_kwargs, streaming: bool = False) -> datasets.DatasetBuilder:
    """`streaming`: no Arrow cache is read or written, so a local folder's files are not fingerprinted (0.6 s of
    listing and hashing on the full release, before the first row)."""
    from thermvision_db.hf import cache_key, door
    from thermvision_db.hf.builder import SYNTHETIC_CONFIGS, ThermVisionConfig, ThermVisionDB, opened_source

    name = name or ThermVisionDB.DEFAULT_CONFIG_NAME
    known = [c.name for c in ThermVisionDB.BUILDER_CONFIGS]
    if name not in known:
        raise InputError(f"unknown configuration {name!r}; choose one of {known}")
    check_cache_dir(cache_dir)
    code = cache_key.loader_code_hash()
    if name in RELEASED_CONFIGS:
        from thermvision_db.sources.base import is_url
        from thermvision_db.sources.hub import resolve_data_dir

        resolved = resolve_data_dir(data_dir)
        if is_url(resolved):
            data_dir, code = resolved, code + _fingerprint_or_hint(resolved, chosen=data_dir)
        else:
            data_dir = str(resolved.resolve())
            code += "streamed" if streaming else cache_key.released_fingerprint(name, resolved)
    elif name in SYNTHETIC_CONFIGS:
        if config_kwargs.get("num_identities") is not None:  # before datasets lists the identities' names
            door.check_identity_count(config_kwargs["num_identities"])
        code += cache_key.synthetic_key(ThermVisionConfig(name=name, **config_kwargs))
    return ThermVisionDB(config_name=name, data_dir=data_dir, cache_dir=cache_dir, hash=code, **config_kwargs)


def _fingerprint_or_hint(url: str, chosen) -> str:
    """The remote release's fingerprint; when the default Hub copy cannot be reached, the error says how to point
    at a local copy (data_dir / THERMVISION_DB_DIR) instead of only naming the Hub."""
    from thermvision_db.hf.builder import opened_source
    from thermvision_db.sources.base import SourceError
    from thermvision_db.sources.hub import ENV_DATA_DIR, local_copy_hint

    try:
        return opened_source(url).fingerprint()
    except SourceError as err:
        if chosen or os.environ.get(ENV_DATA_DIR):
            raise
        raise SourceError(f"{err}. No data_dir was given, so the Hub copy was tried: {local_copy_hint()}") from None


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
    with one_call():  # the generation settings and their fingerprint are made once for the whole call
        return _load(name, split, data_dir, cache_dir, streaming, num_proc, download_mode, verification_mode,
                     keep_in_memory, config_kwargs)


VIDEO_DECODERS = ("project", "torchcodec")


def _check_video_decoder(name: str | None, decoder: str) -> None:
    """`video_decoder="torchcodec"`: the `video` column decoded by `datasets.Video` as on every Hub video dataset;
    refused in one line, before any work, where torchcodec cannot decode (the default needs nothing)."""
    if decoder not in VIDEO_DECODERS:
        raise InputError(f"video_decoder must be one of {VIDEO_DECODERS}, got {decoder!r}")
    if decoder == "torchcodec":
        if name not in ("videos", "synthetic_videos"):
            raise InputError(f"video_decoder='torchcodec' is for the 'videos' and 'synthetic_videos' configurations, "
                             f"not {name!r}")
        from thermvision_db.io.decode import torchcodec_problem

        problem = torchcodec_problem()
        if problem:
            from thermvision_db.errors import MissingExtraError

            raise MissingExtraError(f"video_decoder='torchcodec' needs a working torchcodec ({problem}); the default "
                                    "video_decoder='project' decodes with PyAV through thermvision_db.video")


def _as_hub_video(ds, decoder: str):
    """The rows as stored (the Arrow cache does not depend on the decoder), cast to a decoding `datasets.Video`."""
    return ds.cast_column("video", datasets.Video()) if decoder == "torchcodec" else ds


def _load(name, split, data_dir, cache_dir, streaming, num_proc, download_mode, verification_mode, keep_in_memory,
          config_kwargs):
    decoder = config_kwargs.pop("video_decoder", "project")
    _check_video_decoder(name, decoder)
    builder = _builder(name, data_dir, cache_dir, config_kwargs, streaming=streaming)
    if streaming:
        if num_proc is not None:
            raise InputError("streaming=True reads lazily: parallelise with DataLoader(num_workers=...) instead of num_proc")
        return _as_hub_video(builder.as_streaming_dataset(split=split), decoder)
    try:
        builder.download_and_prepare(download_mode=download_mode, verification_mode=verification_mode, num_proc=num_proc)
    except (datasets.exceptions.DatasetGenerationError, OSError) as err:
        cause = err
        while cause is not None and not isinstance(cause, ThermVisionError):
            if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
                raise CacheDirError(f"the datasets cache folder {builder.cache_dir} ran out of disk space while "
                                    f"writing the Arrow files ({cause}); free space there, or pass cache_dir=... "
                                    f"(CLI: --cache-dir) on a larger disk") from err
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise
    return _as_hub_video(builder.as_dataset(split=split, in_memory=bool(keep_in_memory)), decoder)
