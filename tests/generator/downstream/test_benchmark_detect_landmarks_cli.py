"""`thermvision-db benchmark detect|landmarks` end to end: the miniature, a tiny generated corpus, COCO and YOLO
sets, dlib and ONNX models; every number checked against one computed here by hand."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import numpy as np
import pytest

from generator.annotate.labels import TEMPLATE_LAYOUT
from generator.downstream.detect import iou_matrix
from generator.downstream.labelled_sets import from_corpus
from tests.generator.annotate.dlib_training import thermal_face, train_detector, train_predictor
from tests.support.tiny_onnx import write_landmarker54, write_yolo_detector
from thermvision_db.cli.main import main
from thermvision_db.demo.miniature import canonical_landmarks, write_miniature

pytestmark = pytest.mark.usefixtures("private_hash_cache")
BOX = [21.0, 19.0, 33.0, 38.0]  # the planted detector's one face, in the miniature's 64 x 64 pixels
CROP = 1.2  # Landmarker54's square crop: 1.2 x the box's longer side


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return write_miniature(tmp_path_factory.mktemp("bench_mini") / "mini", identities=("F_01", "F_23", "M_10"),
                           frames_per_video=6, zips=False, landmarks=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_models")
    x, y, w, h = BOX
    write_yolo_detector(folder / "det.onnx", [[x + w / 2, y + h / 2, w, h, 0.9]], input_size=(64, 64))
    c = canonical_landmarks()  # (x, y) in the unit box -> (y, x) in the crop
    write_landmarker54(folder / "lm.onnx", np.stack([(c[:, 1] - 0.5) / CROP + 0.5, (c[:, 0] - 0.5) / CROP + 0.5], 1))
    return {"det": folder / "det.onnx", "lm": folder / "lm.onnx", "svm": train_detector(folder / "face.svm"),
            "dat": train_predictor(folder / "sftl54.dat")}


def _run(*argv) -> dict:
    assert main(["benchmark", *map(str, argv), "--no-progress"]) == 0
    out = argv[argv.index("--out") + 1]
    return json.loads((out / "results.json").read_text())


def test_detect_on_the_miniature_gives_the_hand_computed_recall(mini, models, hf_cache, tmp_path):
    res = _run("detect", mini.root, "--detector", models["det"], "--out", tmp_path / "d", "--cache-dir", hf_cache)
    truth = from_corpus(mini.root, cache_dir=hf_cache)  # qc ok frames: one face each
    hit = [f.frame_id for f in truth.frames if iou_matrix(np.array([BOX]), f.boxes).max() >= 0.5]
    assert res["counts"]["frames"] == len(truth.frames) and res["data"]["skipped"] == dict(truth.skipped)
    assert res["metrics"]["best_threshold"] == pytest.approx(0.9, abs=1e-6)  # the only score there is
    assert res["metrics"]["recall_at_best_threshold"] == pytest.approx(len(hit) / len(truth.frames))
    assert set(res["misses"]) == {f.frame_id for f in truth.frames} - set(hit) != set()
    assert 0 <= res["metrics"]["AP"] <= res["metrics"]["AP50"] <= 1
    assert res["weights"]["detector"]["sha256"] and res["versions"]["pycocotools"]
    assert res["data"]["splits"] == ["train"] and res["arguments"]["seed"] == 0
    for name in ("report.md", "pr_curve.png", "misses.png"):
        assert (tmp_path / "d" / name).is_file()
    again = [_run("detect", mini.root, "--detector", models["det"], "--out", tmp_path / f"s{k}", "--cache-dir",
                  hf_cache, "--max-frames", 7, "--seed", seed) for k, seed in enumerate((4, 4, 5))]
    assert again[0]["metrics"] == again[1]["metrics"] and again[0]["data"] == again[1]["data"]
    assert again[0]["data"]["frames"] == 7 and again[0]["data"] != again[2]["data"]


def _expected_nme(frame) -> tuple[float, float]:
    """The tiny landmarker's points: the canonical face in the square of side max(w, h) centred on the box."""
    x, y, w, h = frame.boxes[0]
    side = max(w, h)
    pred = canonical_landmarks() * side + [x + w / 2 - side / 2, y + h / 2 - side / 2]
    truth = frame.landmarks[0]
    error = np.linalg.norm(pred - truth, axis=1).mean()
    return error / np.linalg.norm(truth[36] - truth[45]), error / math.hypot(w, h)


def test_landmarks_on_the_miniature_give_the_hand_computed_nme(mini, models, hf_cache, tmp_path):
    res = _run("landmarks", mini.root, "--landmarker", models["lm"], "--out", tmp_path, "--cache-dir", hf_cache)
    truth = from_corpus(mini.root, cache_dir=hf_cache)
    expected = np.array([_expected_nme(f) for f in truth.frames])
    for k, name in enumerate(("inter_ocular", "box_diagonal")):
        assert res["metrics"][name]["nme_mean"] == pytest.approx(expected[:, k].mean(), rel=1e-4)
        assert res["metrics"][name]["failure_rate"] == pytest.approx(float((expected[:, k] > 0.1).mean()))
    assert res["per_pose"] is None and "36 (right_eye_0)" in res["normalisers"]["inter_ocular"]
    report = (tmp_path / "report.md").read_text()
    assert "given the ground-truth box" in report and "![ced](ced.png)" in report


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from generator.corpus.pipeline import GenerationPipeline
    from generator.corpus.settings import GenerationSettings

    out = tmp_path_factory.mktemp("bench_generated")
    # one identity, a 12-frame head-pose video: identity 0's varied program turns the head up to |yaw| 36 degrees
    GenerationPipeline(GenerationSettings(motion="head_pose=12", still_batch=1), out, device="cpu",
                       progress=False).run(1)
    return out


def test_a_generated_corpus_is_scored_per_head_pose_bin(generated, models, hf_cache, tmp_path):
    from thermvision_db import load_dataset

    res = _run("landmarks", generated, "--landmarker", models["lm"], "--out", tmp_path / "l", "--cache-dir", hf_cache)
    rows = load_dataset("thermvision_db", "synthetic", output_dir=str(generated), cache_dir=hf_cache)["train"]
    yaws = [abs(p["yaw"]) for p in rows["head_pose"]]
    by_hand = {"0-15": sum(a < 15 for a in yaws), "15-30": sum(15 <= a < 30 for a in yaws),
               "30-45": sum(30 <= a < 45 for a in yaws), ">45": sum(a >= 45 for a in yaws)}
    assert res["data"]["kind"] == "generated corpus" and res["data"]["frames_with_head_pose"] == rows.num_rows
    assert {b: s["faces"] for b, s in res["per_pose"]["yaw"].items()} == by_hand
    assert sum(n > 0 for n in by_hand.values()) >= 2  # the bins are really told apart
    assert "per |yaw| bin" in (tmp_path / "l" / "report.md").read_text()
    det = _run("detect", generated, "--detector", models["det"], "--out", tmp_path / "d", "--cache-dir", hf_cache)
    assert det["counts"]["faces"] == rows.num_rows and det["data"]["kind"] == "generated corpus"


def _yolo_pose_set(root, count=3):
    """YOLO-pose folder of thermal faces at known boxes, landmarks on the template layout (dlib models' training)."""
    rng = np.random.default_rng(7)
    from PIL import Image

    for i in range(count):
        w = int(rng.integers(50, 70))
        x, y = (int(v) for v in rng.integers(5, 120 - w - 5, size=2))
        (root / "images" / "val").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
        Image.fromarray(thermal_face((120, 120), (x, y, w, w))).save(root / "images" / "val" / f"{i}.png")
        points = TEMPLATE_LAYOUT * [w, w] + [x, y]
        values = [(x + w / 2) / 120, (y + w / 2) / 120, w / 120, w / 120]
        values += [v for px, py in points for v in (px / 120, py / 120, 2)]
        (root / "labels" / "val" / f"{i}.txt").write_text("0 " + " ".join(f"{v:.6f}" for v in values) + "\n")
    return root


def test_dlib_models_on_a_yolo_pose_set_and_onnx_on_a_coco_export(models, mini, hf_cache, tmp_path):
    from generator.weights import sha256_file
    from thermvision_db.tools.export import export

    pose = _yolo_pose_set(tmp_path / "yolo")
    det = _run("detect", "--yolo", pose, "--detector", models["svm"], "--out", tmp_path / "d", "--device", "cpu")
    assert det["model"]["kind"] == "dlib simple_object_detector" and det["counts"]["frames"] == 3
    assert det["weights"]["detector"]["sha256"] == sha256_file(models["svm"])
    assert det["data"]["kind"] == "yolo" and det["data"]["splits"] == ["val"]
    lm = _run("landmarks", "--yolo", pose, "--landmarker", models["dat"], "--out", tmp_path / "l")
    assert lm["counts"]["faces_scored"] == 3 and lm["metrics"]["inter_ocular"]["nme_mean"] is not None
    export(mini.root, "coco", tmp_path / "coco", cache_dir=hf_cache, progress=False)
    coco = _run("detect", "--coco", tmp_path / "coco" / "annotations" / "train.json", "--images",
                tmp_path / "coco" / "images", "--detector", models["det"], "--out", tmp_path / "c")
    assert coco["data"]["kind"] == "coco" and coco["counts"]["frames"] == len(mini.members) * 6


@pytest.mark.parametrize("argv, message", [
    (["detect", "--detector", "x.onnx", "--out", "o"], "exactly one of DATA_DIR"),
    (["detect", "{mini}", "--yolo", "{mini}", "--detector", "x.onnx", "--out", "o"], "exactly one of"),
    (["detect", "--coco", "{mini}/nothing.json", "--detector", "x.onnx", "--out", "o"], "--coco needs --images"),
    (["detect", "{mini}", "--detector", "{mini}/none.onnx", "--out", "o"], "--detector .* does not exist"),
    (["landmarks", "{mini}", "--landmarker", "{mini}/none.dat", "--out", "o"], "--landmarker .* does not exist"),
    (["landmarks", "{mini}", "--landmarker", "{lm}", "--out", "o", "--max-error", "0"], "--max-error"),
])
def test_bad_arguments_are_named(mini, models, argv, message, capsys):
    import re

    argv = [a.format(mini=mini.root, lm=models["lm"]) for a in argv]
    assert main(["benchmark", *argv]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_without_pycocotools_the_command_names_the_extra(mini, models, monkeypatch, hf_cache, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pycocotools.cocoeval", None)
    argv = ["benchmark", "detect", str(mini.root), "--detector", str(models["det"]), "--out", str(tmp_path),
            "--cache-dir", hf_cache, "--no-progress"]
    assert main(argv) == 2
    assert "pip install 'thermvision-db[benchmark]'" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_the_command_modules_import_only_the_standard_library():
    import subprocess

    code = ("import sys; import generator.downstream.detect_cli, generator.downstream.landmarks_cli; "
            "print(sorted(m for m in ('numpy', 'PIL', 'onnxruntime', 'pycocotools', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_python_api_and_the_command_name_the_same_tasks():
    import generator.downstream as downstream
    from generator.cli.benchmark import TASKS
    from generator.downstream import benchmark_detect, benchmark_gender, benchmark_landmarks

    assert {f"benchmark_{task}" for task in TASKS} == set(downstream.__all__)
    assert benchmark_detect.__module__ == "generator.downstream.detect"
    assert benchmark_gender.__module__ == "generator.downstream.gender"
    assert benchmark_landmarks.__module__ == "generator.downstream.landmarks"
    for module in TASKS.values():  # every task registered is in this installation
        assert importlib.util.find_spec(module) is not None, module
