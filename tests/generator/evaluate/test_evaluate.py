"""The quality report: hand-checkable values for temporal stability, box QC and identity distinctness."""

import numpy as np
import pytest

from generator.evaluate.frames import EvaluationError, VideoFrames
from generator.evaluate.identity import OnnxEmbedder, face_crop, identity_scores
from generator.evaluate.stability import box_qc, frame_change, landmark_jitter
from generator.evaluate.report import evaluate
from thermvision_db.cli.main import main
from thermvision_db.demo.miniature import canonical_landmarks, write_miniature


def test_static_video_has_zero_jitter_and_zero_change():
    frame = np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)
    points = canonical_landmarks() * 20
    assert frame_change([frame] * 5) == 0.0
    assert landmark_jitter([points] * 5) == 0.0


def test_known_motion_gives_known_jitter_and_change():
    frame = np.full((8, 8), 100, dtype=np.uint8)
    assert frame_change([frame, frame + 10, frame]) == pytest.approx(10.0)
    points = canonical_landmarks() * 20
    # every point moves by (3, 4) = 5 px once, then not at all; a frame without landmarks breaks the chain
    assert landmark_jitter([points, points + [3, 4], points + [3, 4]]) == pytest.approx(2.5)
    assert landmark_jitter([points, None, points + 9]) == 0.0


def test_box_qc_counts_missing_multiple_and_jumps():
    frames = [np.zeros((100, 100), np.uint8)] * 4
    boxes = [[[10, 10, 20, 20]], [], [[10, 10, 20, 20], [60, 60, 5, 5]], [[40, 10, 20, 20]]]
    video = VideoFrames("F_01_S1", "F_01", frames, boxes, [None] * 4, ["ok", "missing", "multiple", "ok"])
    row = box_qc(video)
    assert (row["missing"], row["multiple"], row["jumps"]) == (1, 1, 1)  # the 30 px move is over 5 % of 100 px
    assert row["max_centre_jump"] == pytest.approx(0.30)


def test_masked_crop_replaces_the_face_by_the_frame_median():
    frame = np.zeros((40, 40), np.uint8)
    frame[10:30, 10:30] = 200  # the face; median of the frame is 0
    crop = face_crop(frame, [10, 10, 20, 20], mask_face=True)
    assert crop.shape == (24, 24) and crop.max() == 0
    assert face_crop(frame, [10, 10, 20, 20]).max() == 200


def test_identical_identities_are_not_distinct(tmp_path, tiny_model, hf_cache):
    # F_01 and M_01 share subject number 1: the miniature renders them pixel-identical
    mini = write_miniature(tmp_path / "twins", identities=["F_01", "M_01"], frames_per_video=4, zips=False,
                           landmarks=True, missing={}, multiple={}, missing_png={})
    results = evaluate(mini.root, tmp_path / "report", embedding=str(tiny_model), cache_dir=hf_cache, progress=False)
    for key in ("identity", "identity_masked"):
        scores = results[key]
        assert scores["between_max"] == pytest.approx(1.0, abs=1e-5)
        assert not scores["distinct"]
        assert not scores["per_identity"]["distinct"].any()
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.index("![box_qc](box_qc.png)") < report.index("## Box QC")
    assert "| NO |" in report
    for name in ("box_qc.png", "temporal.png", "identity.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_report_on_a_corpus_with_known_defects(tmp_path, tiny_model, hf_cache):
    mini = write_miniature(tmp_path / "c", identities=["F_01", "F_16"], frames_per_video=4, zips=False, landmarks=True,
                           missing={"F_01_S1": (1, 2)}, multiple={"F_16_S2": (3,)}, missing_png={})
    code = main(["evaluate", str(mini.root), "--out", str(tmp_path / "r"), "--embedding", str(tiny_model),
                 "--real-dir", str(tmp_path / "c"), "--cache-dir", hf_cache])
    assert code == 0
    table = {row["video_id"]: row for row in __import__("csv").DictReader(open(tmp_path / "r" / "box_qc.csv"))}
    assert (table["F_01_S1"]["missing"], table["F_16_S2"]["multiple"]) == ("2", "1")
    assert int(table["F_01_S2"]["missing"]) == 0 and int(table["F_01_S2"]["multiple"]) == 0
    assert float(table["F_16_S2"]["frame_change"]) > 0  # the face moves, so pixels change
    truth = np.asarray(mini.landmarks["F_01_S2"])
    expected_jitter = np.mean([np.linalg.norm(b - a, axis=1).mean() for a, b in zip(truth, truth[1:])])
    assert float(table["F_01_S2"]["landmark_jitter_px"]) == pytest.approx(expected_jitter, abs=1e-3)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Realism" in report and "FID" in report


def test_bad_inputs(tmp_path, tiny_model):
    with pytest.raises(EvaluationError, match="does not exist"):
        OnnxEmbedder(tmp_path / "missing.onnx")
    with pytest.raises(EvaluationError, match="corpus folder .* does not exist"):
        evaluate(tmp_path / "nowhere", tmp_path / "r")
    embed = OnnxEmbedder(tiny_model)
    lone = VideoFrames("F_01_S1", "F_01", [np.zeros((16, 16), np.uint8)], [[[2, 2, 8, 8]]], [None], ["ok"])
    with pytest.raises(EvaluationError, match="at least two videos"):
        identity_scores([lone], embed)
