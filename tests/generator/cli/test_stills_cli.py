"""`thermvision-db generate --stage stills` end to end on the tiny preset, resume, and clear errors."""

import json

import numpy as np
import pytest
from PIL import Image

from generator.stills.prompts import sample_identity
from generator.stills.files import load_still
from thermvision_db.cli.main import main

SMALL = ["--stills-size", "32", "--stills-steps", "4"]


pytestmark = pytest.mark.usefixtures("private_hash_cache")


def test_cli_writes_stills_sidecars_and_a_contact_sheet_then_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["generate", "--stage", "stills", "-n", "3", "--preset", "tiny", "--out", str(out), "--seed", "5",
               "--batch-size", "2", *SMALL])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["contact_sheet.png"] + [f"still_00000{i}.{ext}" for i in range(3) for ext in ("json", "png")]
    for i in range(3):
        still = load_still(out / f"still_00000{i}.png")
        assert still.prompt == sample_identity(5, i).prompt and still.image.size == (32, 32)
        assert still.sidecar["sampler"]["steps_run"] == 3 and still.sidecar["lora"] is None
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (2 * 128, 2 * 128)  # 3 tiles -> 2 columns x 2 rows of 128 px

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("still_*")}
    rc = main(["generate", "--stage", "stills", "-n", "4", "--preset", "tiny", "--out", str(out), "--seed", "5",
               *SMALL])
    assert rc == 0
    assert "3 stills already in" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("still_*")}
    assert {k: after[k] for k in before} == before  # untouched
    assert set(after) - set(before) == {"still_000003.json", "still_000003.png"}
    assert json.loads((out / "still_000003.json").read_text())["identity_index"] == 3


def test_cli_first_index_shards_give_the_same_stills(tmp_path):
    whole, shard = tmp_path / "whole", tmp_path / "shard"
    assert main(["generate", "--stage", "stills", "-n", "3", "--out", str(whole), *SMALL]) == 0
    assert main(["generate", "--stage", "stills", "-n", "1", "--stills-first-index", "2", "--out", str(shard),
                 *SMALL]) == 0
    a = np.asarray(Image.open(whole / "still_000002.png"), dtype=int)
    b = np.asarray(Image.open(shard / "still_000002.png"), dtype=int)
    assert np.abs(a - b).max() <= 1


def test_cli_thermvision_without_lora_fails_clearly(tmp_path, capsys):
    rc = main(["generate", "--stage", "stills", "-n", "1", "--preset", "thermvision", "--out", str(tmp_path / "x"),
               "--device", "cpu"])
    assert rc == 2
    assert "--lora" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_tiny_preset_stills_default_to_the_pipelines_64_px(tmp_path):
    """The tiny preset's stills are as small as the whole pipeline's (512 px tiny stills cost ~1 s each on a CPU)."""
    out = tmp_path / "tiny"
    assert main(["generate", "--stage", "stills", "-n", "1", "--preset", "tiny", "--out", str(out),
                 "--stills-steps", "4"]) == 0
    assert load_still(out / "still_000000.png").image.size == (64, 64)


def test_cli_workflow_noise_and_separate_t5_text(tmp_path):
    out = tmp_path / "workflow"
    rc = main(["generate", "--stage", "stills", "-n", "3", "--out", str(out), "--stills-noise", "workflow",
               "--noise-seed", "42", "--prompt-template", "Hihh quality thermal male and female face data.",
               "--prompt-template-t5", "surprice face ", *SMALL])
    assert rc == 0
    sidecars = [json.loads((out / f"still_00000{i}.json").read_text()) for i in range(3)]
    assert [(s["noise"]["seed"], s["noise"]["position"]) for s in sidecars] == [(42, 0), (42, 1), (43, 0)]
    assert {s["prompt_t5"] for s in sidecars} == {"surprice face "}
    assert main(["generate", "--stage", "stills", "-n", "1", "--out", str(tmp_path / "bad"), "--stills-noise",
                 "workflow", "--noise-gpu", "GTX-9999", *SMALL]) == 2
