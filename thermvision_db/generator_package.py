"""The generator is the top-level package `generator`, a common name: a user's own `generator.py` can shadow it.

Python puts the working directory (or the running script's folder) first on `sys.path`, so a file named
`generator.py` there is imported instead, and `load_dataset(..., "synthetic")` fails deep inside with
"'generator' is not a package". The check runs before any `import generator...`, finds what that import would
load without executing it, and names the file and what to do.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from thermvision_db.errors import ThermVisionError

OUR_PACKAGE = Path(__file__).resolve().parent.parent / "generator"


class GeneratorShadowedError(ThermVisionError, ImportError):
    """`import generator` would load something other than thermvision-db's generator package."""


def _origin() -> str | None:
    module = sys.modules.get("generator")
    if module is not None:
        return getattr(module, "__file__", None)
    try:
        spec = importlib.util.find_spec("generator")  # locates; runs nothing
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None else None


def check_generator_package() -> None:
    """Raise `GeneratorShadowedError` naming the shadowing file unless `generator` is this installation's package."""
    origin = _origin()
    expected = OUR_PACKAGE / "__init__.py"
    if origin is not None and Path(origin).resolve() == expected:
        return
    if origin is None or origin in ("namespace", "built-in", "frozen"):
        raise GeneratorShadowedError(
            f"thermvision-db's generator package is not importable (expected {OUR_PACKAGE}); reinstall thermvision-db "
            "(pip install thermvision-db) to generate identities")
    shadow = Path(origin)
    raise GeneratorShadowedError(
        f"'import generator' would load {shadow}, not thermvision-db's generator package ({OUR_PACKAGE}): a file "
        f"named {shadow.name} in {shadow.parent} comes first on Python's path (the working directory or your "
        f"script's folder). Rename it (e.g. my_{shadow.name}, and delete {shadow.parent / '__pycache__'}/generator.*) "
        "or run from another folder.")
