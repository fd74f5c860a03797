"""`thermvision-db benchmark TASK`: the downstream benchmarks (gender, detect, landmarks) from a shell.

Each task lives in `generator.downstream.<task>_cli`, a module that imports only the standard library at the top
(so `--help` stays fast) and exposes `HELP`, `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import importlib
import importlib.util

TASKS = {
    "gender": "generator.downstream.gender_cli",
    "detect": "generator.downstream.detect_cli",
    "landmarks": "generator.downstream.landmarks_cli",
}


def add_benchmark_parser(sub):
    """`thermvision-db benchmark`: registered by `thermvision_db.hf.door.COMMANDS`."""
    parser = sub.add_parser(
        "benchmark", help="downstream benchmarks: does a corpus help a gender classifier, a face detector, a landmarker?",
        description="Each task writes results.json, report.md and plots into --out. Nothing is downloaded or uploaded: "
                    "real sets, detectors and weights are given by path.")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for name, module_name in TASKS.items():
        if importlib.util.find_spec(module_name) is None:  # a task not in this installation (tests check all are)
            continue
        module = importlib.import_module(module_name)
        task = tasks.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(task)
        task.set_defaults(func=module.run)
    return parser
