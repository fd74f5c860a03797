"""The gender benchmark end to end: planted answers, chance on shuffled labels, determinism, the CLI on corpora."""

import json

import numpy as np
import pytest

from generator.downstream.gender import benchmark_gender
from tests.support.gender_sets import planted_set

FAST = dict(image_size=32, batch_size=16, progress=False, threads=1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_set(tmp_path_factory.mktemp("planted") / "real", subjects_per_class=10, images=4)


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    return planted_set(tmp_path_factory.mktemp("shuffled") / "real", subjects_per_class=10, images=2, shuffle=5)


def test_a_brightness_every_classifier_learns_gives_near_perfect_accuracy(planted, tmp_path):
    results = benchmark_gender(real=planted, seeds=[0], epochs=6, lr=3e-3, test_subjects_per_class=4,
                               val_subjects_per_class=0, out_dir=tmp_path, **{**FAST, "batch_size": 8})
    for model in ("resnet18", "mobilenet_v2", "efficientnet_b0"):  # 6 short epochs from random initialisation:
        cell = results["summary"][model]["real"]  # near-perfect (chance is 0.5; one test image in 32 is 0.03)
        assert cell["accuracy"]["mean"] >= 0.9, (model, cell)
        assert cell["balanced_accuracy"]["mean"] >= 0.9, (model, cell)
    assert results["regimes"] == ["real"] and results["test_set"] == "held-out real subjects"


def test_shuffled_labels_stay_near_chance(shuffled, tmp_path):
    results = benchmark_gender(real=shuffled, models=["resnet18"], seeds=[0, 1], epochs=3, test_subjects_per_class=4,
                               out_dir=tmp_path, **FAST)
    cell = results["summary"]["resnet18"]["real"]
    assert 0.25 <= cell["accuracy"]["mean"] <= 0.75, cell
    assert 0.25 <= cell["balanced_accuracy"]["mean"] <= 0.75, cell


def test_the_same_seed_gives_the_same_numbers(planted, tmp_path):
    def numbers(out):
        results = benchmark_gender(real=planted, models=["mobilenet_v2"], seeds=[3], epochs=2, frames_per_subject=1,
                                   test_subjects_per_class=2, out_dir=out, **FAST)
        return [{k: v for k, v in run.items()} for run in results["runs"]], results["splits"]

    first, again = numbers(tmp_path / "a"), numbers(tmp_path / "b")
    assert first == again
    assert first[0][0]["history"][0]["train_loss"] > 0


def test_cli_on_the_miniature_corpus(mini, hf_cache, tmp_path, capsys):
    from thermvision_db.cli import main

    out = tmp_path / "gender"
    code = main(["benchmark", "gender", "--synthetic", str(mini.root), "--out", str(out), "--models", "resnet18",
                 "--seeds", "0", "1", "--epochs", "1", "--image-size", "32", "--frames-per-subject", "4",
                 "--test-subjects-per-class", "1", "--val-subjects-per-class", "0", "--cache-dir", hf_cache,
                 "--threads", "1", "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["regimes"] == ["synthetic"] and results["test_set"] == "held-out synthetic subjects"
    for seed in ("0", "1"):
        split = results["splits"][seed]["synthetic"]
        assert len(split["test"]) == 2 and not set(split["test"]) & set(split["train"])
        assert {s.split("/")[1] for s in split["test"] + split["train"]} == set(mini.identities)
    run = results["runs"][0]
    assert run["images"] == {"train": 12, "val": 0, "test": 8}
    report = (out / "report.md").read_text()
    assert "| resnet18 |" in report and "random initialisation (no ImageNet weights given)" in report
    assert "seed 0, synthetic: train (3)" in report and "torch " in report
    assert (out / "gender_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| model | synthetic |" in capsys.readouterr().out


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two identities (one female, one male) made by the generator (tiny preset, CPU)."""
    from generator.corpus.pipeline import GenerationPipeline
    from generator.corpus.settings import GenerationSettings

    out = tmp_path_factory.mktemp("generated")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THERMVISION_CACHE", str(tmp_path_factory.mktemp("hash_cache")))
        summary = GenerationPipeline(GenerationSettings(motion="head_pose=5,expression=10", still_batch=2, still_steps=2),
                                     out, device="cpu", progress=False).run(2)
    assert summary.failures == []
    return out


def test_cli_on_a_generated_corpus_with_a_real_set_runs_every_regime(generated, planted, hf_cache, tmp_path):
    from thermvision_db.cli import main

    out = tmp_path / "gender"
    code = main(["benchmark", "gender", "--synthetic", str(generated), "--real", str(planted), "--out", str(out),
                 "--models", "efficientnet_b0", "--seeds", "0", "--epochs", "1", "--image-size", "32",
                 "--frames-per-subject", "3", "--test-subjects-per-class", "2", "--val-subjects-per-class", "0",
                 "--cache-dir", hf_cache, "--threads", "1", "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["regimes"] == ["synthetic", "hybrid", "real"]
    splits = results["splits"]["0"]
    assert splits["synthetic"]["test"] == [] and len(splits["synthetic"]["train"]) == 2
    images = {run["regime"]: run["images"] for run in results["runs"]}
    assert images == {"synthetic": {"train": 6, "val": 0, "test": 12}, "hybrid": {"train": 6 + 48, "val": 0, "test": 12},
                      "real": {"train": 48, "val": 0, "test": 12}}
    assert {run["n"] for run in results["runs"]} == {12}  # one test set (2 real subjects per class) for every regime
    assert "| efficientnet_b0 |" in (out / "report.md").read_text()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from thermvision_db.cli import main

    assert main(["benchmark", "gender", "--real", str(tmp_path / "typo"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --real {tmp_path / 'typo'} does not exist"
    assert main(["benchmark", "gender", "--synthetic", str(tmp_path), "--regimes", "real", "--out", str(tmp_path / "o")]) == 2
    assert "--regimes real: needs a real set (--real)" in capsys.readouterr().err


@pytest.mark.usefixtures("private_hash_cache")
def test_weights_given_are_loaded_and_their_sha256_reported(planted, tmp_path):
    import hashlib

    from safetensors.torch import save_file

    from generator.downstream.classifiers import model_class

    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model_class("resnet18")().state_dict().items()}, str(path))
    results = benchmark_gender(real=planted, models=["resnet18"], seeds=[0], epochs=1, frames_per_subject=1,
                               test_subjects_per_class=2, weights={"resnet18": path}, out_dir=tmp_path / "o", **FAST)
    assert results["weights"]["resnet18"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    report = (tmp_path / "o" / "report.md").read_text()
    assert f"resnet18: weights from {path} (head replaced for 2 classes) (sha256 {results['weights']['resnet18']['sha256']})" in report


def test_cuda_asked_without_cuda_is_one_line(planted, tmp_path, monkeypatch):
    import torch

    from generator.downstream.gender_data import GenderDataError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # runs the same on a CUDA machine
    with pytest.raises(GenderDataError, match="--device cuda: CUDA is not available"):
        benchmark_gender(real=planted, models=["resnet18"], device="cuda", out_dir=tmp_path)


def test_a_separate_real_test_set_is_the_test_set_of_every_regime(planted, tmp_path):
    other = planted_set(tmp_path / "other", subjects_per_class=2, images=3, layout="prefix")
    results = benchmark_gender(real=planted, real_test=other, models=["resnet18"], seeds=[0], epochs=1,
                               frames_per_subject=1, test_subjects_per_class=5, out_dir=tmp_path / "o", **FAST)
    splits = results["splits"]["0"]
    assert splits["real"]["test"] == [] and len(splits["real"]["train"]) == 18 and len(splits["real"]["val"]) == 2
    assert splits["real-test"]["test"] == ["real-test/s00", "real-test/s01", "real-test/s100", "real-test/s101"]
    assert results["runs"][0]["images"] == {"train": 18, "val": 2, "test": 4}  # 1 frame per subject
    assert results["test_set"].startswith("the real test set") and results["subjects"]["real-test"] == 4


def test_accuracy_charts_use_a_fixed_axis_with_chance_marked():
    """0.5 on a 0..1 axis fills half the plot (it filled all of it when the axis followed the largest value)."""
    import io as _io

    from PIL import Image as _Image

    from generator.evaluate.plots import COLOURS, bar_chart

    def bar_top(png):
        pixels = np.asarray(_Image.open(_io.BytesIO(png)).convert("RGB"))
        rows = np.where((pixels[:, :, :] == np.array(COLOURS[0][:3])).all(axis=2).any(axis=1))[0]
        return rows.min(), rows.max()

    top, bottom = 24 + 10, 320 - 60  # the plot area of a one-series chart
    fixed = bar_top(bar_chart(["resnet18"], {"synthetic": [0.5]}, "accuracy", y_max=1.0, reference=(0.5, "chance")))
    assert abs(fixed[0] - (bottom - (bottom - top) * 0.5)) <= 1 and fixed[1] == bottom
    assert bar_top(bar_chart(["resnet18"], {"synthetic": [0.5]}, "accuracy"))[0] == top  # the old autoscale
