"""A user's files reach errors only as short excerpts, and a user's own `generator.py` cannot shadow the generator."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from thermvision_db.errors import EXCERPT_CHARS, excerpt
from thermvision_db.schema.labels import LabelError, parse_yolo_text

REPO = Path(__file__).resolve().parents[2]
SECRET = "root:$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP:19000:0:99999:7:::"


def test_excerpt_is_short_escaped_and_says_how_long_the_text_was():
    assert excerpt("0 0.5 0.5 0.2 0.3") == "'0 0.5 0.5 0.2 0.3'"
    cut = excerpt(SECRET)
    assert cut == f"{SECRET[:EXCERPT_CHARS]!r}... ({len(SECRET)} chars)"
    assert excerpt(b"\x00\xff bytes") == repr("\x00\ufffd bytes")


def test_a_symlinked_label_quotes_only_an_excerpt_of_the_file_it_points_to(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\nsecond line\n")
    label = tmp_path / "F_01_S1_00000.txt"
    os.symlink(secret, label)
    with pytest.raises(LabelError) as err:
        parse_yolo_text(label.read_text(), 64, 64, name=str(label))
    message = str(err.value)
    assert str(label) in message and "line 1" in message
    assert SECRET[:EXCERPT_CHARS] in message and SECRET[EXCERPT_CHARS:EXCERPT_CHARS + 8] not in message
    assert "second line" not in message


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.fixture()
def shadowed(tmp_path):
    """A working directory holding the user's own generator.py (it would leave a marker if it were imported)."""
    (tmp_path / "generator.py").write_text(f"open({str(tmp_path / 'IMPORTED')!r}, 'w')\nprint('my generator')\n")
    yield tmp_path
    assert not (tmp_path / "IMPORTED").exists()  # detected before `import generator` could run it


def test_load_dataset_synthetic_names_a_shadowing_generator_py(shadowed):
    code = ("from thermvision_db import load_dataset\n"
            f"load_dataset('thermvision_db', 'synthetic', num_identities=1, output_dir={str(shadowed / 'out')!r})")
    done = subprocess.run([sys.executable, "-c", code], cwd=shadowed, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert "GeneratorShadowedError" in done.stderr and "is not a package" not in done.stderr
    assert (f"'import generator' would load {shadowed / 'generator.py'}, not thermvision-db's generator package "
            f"({REPO / 'generator'})") in done.stderr
    assert "Rename it (e.g. my_generator.py" in done.stderr


def test_the_cli_refuses_clearly_when_run_beside_a_generator_py(shadowed):
    done = subprocess.run([sys.executable, "-m", "thermvision_db", "generate", "-n", "1"], cwd=shadowed, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: 'import generator' would load ")
    assert "Traceback" not in done.stderr


def test_without_a_shadow_the_check_passes_in_a_subprocess(tmp_path):
    code = "from thermvision_db.hf.door import check_generator_package as c; c(); import generator; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
