"""Downstream benchmarks: does a corpus help a gender classifier, a face detector, a 54-point landmarker?

`thermvision-db benchmark gender|detect|landmarks`; each task writes results.json, report.md and plots. The same
in Python, imported on first use (torch, onnxruntime and pycocotools load only with the task that needs them):

    from generator.downstream import benchmark_gender, benchmark_detect, benchmark_landmarks
"""

from __future__ import annotations

import importlib

_API = {"benchmark_gender": "generator.downstream.gender", "benchmark_detect": "generator.downstream.detect",
        "benchmark_landmarks": "generator.downstream.landmarks"}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'generator.downstream' has no attribute {name!r}")
