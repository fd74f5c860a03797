"""A torchvision that is installed but cannot import must not break the generator.

pip's torchvision wheels are CUDA builds: beside a CPU torch they install and then fail on import
(`operator torchvision::nms does not exist`). transformers, diffusers and torchmetrics import torchvision
whenever `importlib.util.find_spec("torchvision")` finds it, so a broken one crashes every FLUX pipeline
(`Could not import module 'CLIPTextModel'`), although none of them needs it for what the generator does.

`block_broken_torchvision` tries the import once; if it fails it sets `sys.modules["torchvision"] = None`
(Python's own way of marking a module absent: `find_spec` then returns None and `import torchvision` raises
ImportError), so those libraries take their no-torchvision paths; torchmetrics, which reads package metadata
instead, gets its torchvision and torch-fidelity flags set false as its flag module loads. It returns one line saying so, which the
`generate`, `evaluate` and `demo` commands print. Only the FID Inception extractor needs a working torchvision.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import importlib.util
import sys

# torchmetrics decides from package metadata (not find_spec) whether torchvision is there; torch-fidelity imports it
TORCHMETRICS_FLAGS = "torchmetrics.utilities.imports"
FLAGS = ("_TORCHVISION_AVAILABLE", "_TORCH_FIDELITY_AVAILABLE")

_NOTE: list[str | None] = []  # [note] once checked
_SAID: list[bool] = []  # [True] once a command has shown the note


def _mark_unavailable(flags_module) -> None:
    for flag in FLAGS:
        value = getattr(flags_module, flag, None)
        if isinstance(value, bool):
            setattr(flags_module, flag, False)
        elif value is not None:  # lightning_utilities' RequirementCache: `available` is what `bool()` returns
            value.available, value.message = False, f"{flag}: torchvision does not import with this torch"


class _FlagLoader(importlib.abc.Loader):
    """torchmetrics' flag module as usual, then its torchvision flags set false (before any metric module reads them)."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        _mark_unavailable(module)


class _FlagFinder(importlib.abc.MetaPathFinder):
    """Finds torchmetrics' flag module through the other finders and wraps its loader; one use."""

    def find_spec(self, name, path=None, target=None):
        if name != TORCHMETRICS_FLAGS:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _FlagLoader(spec.loader)
        return spec


def _block_torchmetrics_flags() -> None:
    if TORCHMETRICS_FLAGS in sys.modules:
        _mark_unavailable(sys.modules[TORCHMETRICS_FLAGS])
    else:
        sys.meta_path.insert(0, _FlagFinder())


def _installed_version() -> str:
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return "(no version)"


def block_broken_torchvision() -> str | None:
    """None when torchvision imports or is not installed; else block it and return a one-line note (cached)."""
    if _NOTE:
        return _NOTE[0]
    note = None
    present = sys.modules.get("torchvision", False)
    if present is False:
        try:
            found = importlib.util.find_spec("torchvision") is not None
        except (ImportError, ValueError):
            found = False
        if found:
            try:
                import torchvision  # noqa: F401  (the trial import; a working one is imported anyway by transformers)
            except Exception as err:  # RuntimeError for a CUDA build beside a CPU torch; ImportError, OSError for others
                for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                    del sys.modules[name]
                sys.modules["torchvision"] = None
                _block_torchmetrics_flags()
                import torch

                cause = " ".join(str(err).split())[:120] or type(err).__name__
                note = (f"torchvision {_installed_version()} is installed but does not import with torch "
                        f"{torch.__version__} ({cause}); running without it (only the FID Inception extractor needs "
                        "it: install the torchvision built for this torch, or pip uninstall torchvision)")
                cached = getattr(sys.modules.get("transformers.utils.import_utils"), "is_torchvision_available", None)
                if hasattr(cached, "cache_clear"):  # transformers imported before this check: forget its answer
                    cached.cache_clear()
    _NOTE.append(note)
    return note


def torchvision_note() -> str | None:
    """The note of an earlier `block_broken_torchvision` (None when torchvision is fine or was not checked)."""
    return _NOTE[0] if _NOTE else None


def note_once() -> str | None:
    """Check (blocking a broken torchvision) and return the note the first time in a process, then None.

    The commands print what this returns, so a user sees the line once however many entry points run.
    """
    note = block_broken_torchvision()
    if note is None or _SAID:
        return None
    _SAID.append(True)
    return note
