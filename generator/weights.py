"""Where weights come from, and proof of which ones were used.

Every generator stage (stills, animation, annotation) names its weights the same way: a local path (file or
folder) or a Hugging Face Hub id, resolved through `huggingface_hub`'s cache. Offline or gated failures become
one `WeightsNotFoundError` that says which option to pass. Files are identified by sha256 so each generated
identity can name the exact weights behind it; big checkpoints are hashed once per (path, size, mtime) and the
result is kept in a small JSON cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import threading
from pathlib import Path

from thermvision_db.errors import ThermVisionError
from thermvision_db.io.offline import hub_offline

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HASH_CHUNK = 16 * 1024 * 1024


class WeightsNotFoundError(ThermVisionError, FileNotFoundError):
    """Weights could not be found locally or fetched; the message names what to pass instead."""


class UnsafeWeightsError(ThermVisionError, ValueError):
    """A weight file is not in a safe format (safetensors) or is not a valid safetensors file."""


def is_hub_id(spec: str) -> bool:
    """True for 'org/name' or 'org/name/path/in/repo' specs that are not existing local paths."""
    if not spec or Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or "\\" in spec:
        return False
    parts = spec.split("/")
    return len(parts) >= 2 and all(parts)


def resolve_weights(
    spec: str | os.PathLike | None,
    *,
    what: str,
    hint: str,
    allow_patterns: list[str] | None = None,
    revision: str | None = None,
) -> Path:
    """Turn a local path or Hub id into a local path.

    `what` names the weights ("FLUX.1-dev", "thermal LoRA") and `hint` says how to pass them (e.g. "--flux
    /path/to/FLUX.1-dev"); both go into the error. A Hub id 'org/name' gives the snapshot folder (filtered by
    `allow_patterns`); 'org/name/sub/file.safetensors' gives that one file.
    """
    if spec is None or str(spec).strip() == "":
        raise WeightsNotFoundError(f"no {what} weights given: pass {hint}")
    spec = str(spec)
    local = Path(spec).expanduser()
    if local.exists():
        return local.resolve()
    if not is_hub_id(spec):
        raise WeightsNotFoundError(f"{what} weights not found at {local}: pass {hint}")
    return _download(spec, what=what, hint=hint, allow_patterns=allow_patterns, revision=revision)


def _download(spec: str, *, what: str, hint: str, allow_patterns, revision) -> Path:
    import huggingface_hub

    parts = spec.split("/")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    try:
        if filename:
            return Path(huggingface_hub.hf_hub_download(repo_id, filename, revision=revision))
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))
    except Exception as err:  # offline, gated, missing repo, network: all mean "pass a local path"
        offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
        raise WeightsNotFoundError(
            f"{what} weights {spec!r} are not a local path, and could not be fetched from the Hugging Face "
            f"Hub{offline}: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            f"Pass a local copy with {hint}, or go online (and accept the model's licence / log in with "
            f"`hf auth login` if it is gated)."
        ) from err


def weight_files(path: str | os.PathLike) -> list[Path]:
    """The weight files under `path` (itself if a file), sorted, so a folder's hash list is stable."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def _default_cache_file() -> Path:
    root = os.environ.get("THERMVISION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "thermvision_db"
    )
    return Path(root) / "sha256.json"


class HashCache:
    """sha256 of files keyed by (absolute path, size, mtime_ns); persisted as JSON so 24 GB files hash once."""

    def __init__(self, cache_file: str | os.PathLike | None = None):
        self.cache_file = Path(cache_file) if cache_file is not None else _default_cache_file()
        self._lock = threading.Lock()
        self._entries: dict[str, dict] | None = None

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            try:
                self._entries = json.loads(self.cache_file.read_text())
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def sha256(self, path: str | os.PathLike) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        key = str(path)
        with self._lock:
            entry = self._load().get(key)
            if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
                return entry["sha256"]
        digest = sha256_uncached(path)
        with self._lock:
            self._load()[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
            self._save()
        return digest

    def _save(self) -> None:
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_file.parent, prefix=".sha256-", suffix=".json")
            with os.fdopen(fd, "w") as handle:
                json.dump(self._entries, handle, indent=0, sort_keys=True)
            os.replace(tmp, self.cache_file)
        except OSError:
            pass  # a read-only cache folder only costs re-hashing


def sha256_uncached(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_DEFAULT_CACHE: HashCache | None = None


def default_hash_cache() -> HashCache:
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None or _DEFAULT_CACHE.cache_file != _default_cache_file():
        _DEFAULT_CACHE = HashCache()
    return _DEFAULT_CACHE


def sha256_file(path: str | os.PathLike, cache: HashCache | None = None) -> str:
    """sha256 hex digest of one file, from the (path, size, mtime) cache when it is unchanged."""
    return (cache or default_hash_cache()).sha256(path)


def hash_weights(path: str | os.PathLike, cache: HashCache | None = None) -> dict[str, str]:
    """{file path: sha256} for every weight file at `path` (a file or a folder)."""
    return {str(p): sha256_file(p, cache) for p in weight_files(path)}


def check_safetensors(path: str | os.PathLike, what: str = "weights") -> dict:
    """Validate that `path` is a safetensors file without executing anything; return its metadata.

    Pickle-based formats (.pt, .ckpt, .bin) are refused outright: loading them can run arbitrary code.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{what} file not found: {path}")
    if path.suffix != ".safetensors":
        raise UnsafeWeightsError(
            f"{what} {path} is not a .safetensors file; only safetensors are accepted (pickle-based "
            f"{path.suffix or 'extensionless'} files can run code when loaded). Convert it to safetensors first."
        )
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise UnsafeWeightsError(f"{what} {path} is not a valid safetensors file (only {size} bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len <= 0 or header_len > min(size - 8, 100_000_000):
            # the length is 8 bytes of the file: never quoted (a link to a secret would print them as a number)
            raise UnsafeWeightsError(f"{what} {path} is not a valid safetensors file (bad header length: its header "
                                     f"would be {'empty' if header_len <= 0 else 'longer than the file'}; "
                                     f"the file has {size:,} bytes)")
        try:
            header = json.loads(handle.read(header_len))
        except ValueError as err:
            raise UnsafeWeightsError(f"{what} {path} is not a valid safetensors file (header is not JSON)") from err
    if not isinstance(header, dict):
        raise UnsafeWeightsError(f"{what} {path} is not a valid safetensors file (header is not a table)")
    return header.get("__metadata__") or {}


def state_dict_sha256(module) -> str:
    """sha256 over a module's named tensors (name, dtype, shape, bytes): identifies in-memory random models."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

