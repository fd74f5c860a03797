"""A stand-in for pip's CUDA torchvision wheel beside a CPU torch: installed (with metadata), fails on import.

The real wheel raises `RuntimeError: operator torchvision::nms does not exist` from its meta registrations; this
package raises the same error, so tests see the project's behaviour without installing torchvision into the
shared environment. Put the returned folder first on PYTHONPATH of a subprocess.
"""

from __future__ import annotations

from pathlib import Path

ERROR = "operator torchvision::nms does not exist"
VERSION = "0.28.0"


def plant_broken_torchvision(folder: Path) -> Path:
    """Write `torchvision/` and its `dist-info` under `folder` (created); returns `folder`."""
    package = folder / "torchvision"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(f"raise RuntimeError({ERROR!r})\n")
    info = folder / f"torchvision-{VERSION}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {VERSION}\n")
    (info / "top_level.txt").write_text("torchvision\n")
    return folder
