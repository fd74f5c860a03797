"""pip's torchvision beside a CPU torch installs, then fails on import; the generator must run anyway.

transformers, diffusers and torchmetrics import torchvision whenever it is found. The project marks a torchvision
that cannot import as absent (`generator/vision_check.py`) and says so in one line; only the FID Inception
extractor needs it, and its error names the broken torchvision. A planted package stands in for the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.broken_torchvision import ERROR, VERSION, plant_broken_torchvision

ROOT = Path(__file__).resolve().parents[2]
NOTE = f"torchvision {VERSION} is installed but does not import with torch"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    fake = plant_broken_torchvision(tmp_path_factory.mktemp("site"))
    return {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{ROOT}", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
            "HF_DATASETS_CACHE": str(tmp_path_factory.mktemp("hf"))}


def _run(args, env, cwd):
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_planted_package_fails_like_the_wheel(env, tmp_path):
    result = _run(["-c", "import torchvision"], env, tmp_path)
    assert result.returncode == 1 and f"RuntimeError: {ERROR}" in result.stderr
    # and without the guard transformers crashes on it, as users saw (so the test below is not vacuous)
    result = _run(["-c", "from transformers import CLIPTextModel"], env, tmp_path)
    assert result.returncode == 1 and "CLIPTextModel" in result.stderr, result.stderr[-1500:]


def test_generate_load_dataset_and_evaluate_run_beside_it(env, tmp_path):
    result = _run(["-m", "thermvision_db", "generate", "-n", "1", "--batch-size", "1", "--motion", "short",
                   "--out", str(tmp_path / "cli")], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stderr.splitlines() if NOTE in line]
    assert len(notes) == 1 and ERROR in notes[0] and notes[0].startswith("note: "), result.stderr[-2000:]
    assert (tmp_path / "cli" / "identities" / "S000000" / "identity.json").is_file()
    # the README's generation block: load_dataset("thermvision_db", "synthetic") logs the same line once
    code = ("from thermvision_db import load_dataset; import importlib.util; "
            "syn = load_dataset('thermvision_db', 'synthetic', num_identities=1, motion='short', output_dir='gen', "
            "generator_options={'still_batch': 1}); print(syn['train'].num_rows, importlib.util.find_spec('torchvision'))")
    result = _run(["-c", code], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["24", "None"]  # short motion: 12 + 12 frames; torchvision marked absent
    assert sum(NOTE in line for line in result.stderr.splitlines()) == 1, result.stderr[-2000:]
    # evaluate: the report is written; FID with the Inception extractor is skipped, naming the broken torchvision
    real = tmp_path / "real"
    real.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(real / f"{i}.png")
    result = _run(["-m", "thermvision_db", "evaluate", "gen", "--out", "report", "--real-dir", str(real)], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "report" / "report.md").is_file()
    lines = [line for line in result.stderr.splitlines() if NOTE in line]
    assert lines[0].startswith("note: ") and any("Inception feature extractor needs torchvision" in x for x in lines), result.stderr[-2000:]
