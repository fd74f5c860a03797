"""ThermVision-DB: load the released synthetic thermal face corpus, or generate new identities.

`from thermvision_db import load_dataset` is a drop-in for `datasets.load_dataset` that runs this package's
builder (datasets >= 4 no longer runs loading scripts). Heavy modules load lazily, so importing the package
needs neither torch nor the generator stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["load_dataset", "load_dataset_builder", "with_label_names", "ThermVisionDB", "ThermVisionConfig", "__version__"]

_LAZY = {
    "load_dataset": "thermvision_db.hf.api",
    "load_dataset_builder": "thermvision_db.hf.api",
    "with_label_names": "thermvision_db.tools.label_names",
    "ThermVisionDB": "thermvision_db.hf.builder",
    "ThermVisionConfig": "thermvision_db.hf.builder",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'thermvision_db' has no attribute {name!r}")
