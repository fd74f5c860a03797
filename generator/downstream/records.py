"""What every downstream benchmark records next to its numbers: versions, weights' sha256, seeds, splits.

A result nobody can trace back to its inputs cannot be compared across papers or machines, so each task's
`results.json` carries `run_record(...)` and is written atomically with `write_results`.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from thermvision_db.io.atomic import atomic_write_text

PACKAGES = ("thermvision-db", "torch", "numpy", "datasets", "onnxruntime", "pycocotools", "dlib-bin", "dlib")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """{distribution: version} for the installed ones among `packages`."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_sha256(path: str | Path | None) -> str | None:
    """sha256 of a user file (weights, detector) via the generator's hash cache; None for no file."""
    if path is None:
        return None
    from generator.weights import sha256_file

    return sha256_file(path)


def run_record(task: str, arguments: dict, weights: dict[str, str | Path | None] | None = None) -> dict:
    """The header of a results.json: task, arguments, versions, platform and the sha256 of each weight file."""
    return {
        "task": task,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in arguments.items()},
        "versions": package_versions(),
        "platform": {"machine": platform.machine(), "system": platform.system(), "processor": platform.processor(),
                     "python": sys.version.split()[0]},
        "weights": {name: {"path": str(path), "sha256": file_sha256(path)} if path is not None else None
                    for name, path in (weights or {}).items()},
    }


def _finite(value):
    """JSON has no NaN/Infinity: write them as null so every JSON reader can load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_results(out_dir: str | Path, results: dict, report_md: str) -> Path:
    """Write results.json and report.md into `out_dir` atomically; return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(_finite(results), indent=2, sort_keys=False) + "\n")
    atomic_write_text(out / "report.md", report_md)
    return out


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table; floats with 3 decimals."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
