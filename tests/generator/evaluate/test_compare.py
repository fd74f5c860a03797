"""The side-by-side comparison: two miniature corpora with boxes placed by the test, numbers checked against them."""

import json

import numpy as np
import pytest
import torch

import thermvision_db.demo.miniature as miniature
from generator.evaluate.compare import compare_corpora
from generator.evaluate.realism import fid_kid
from thermvision_db import load_dataset
from thermvision_db.cli.main import main
from thermvision_db.schema.features import frame_features
from thermvision_db.tools.label_names import named_frame_row

SIZE, FRAMES = 64, 6
STILL = [8.0, 12.0, 24.0, 30.0]  # corpus "released": the face never moves


def moving(i: int) -> list[float]:
    """Corpus "generated": a bigger face sliding 4 px right per frame (4 / 64 = 6.25 % > the 5 % jump threshold)."""
    return [2.0 + 4 * i, 10.0, 36.0, 44.0]


class TinyFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("projection", torch.randn(48, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(images.double() / 255.0, 4).flatten(1) @ self.projection


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Two miniature folders, boxes placed by replacing the miniature's box path, loaded as frame rows."""
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(miniature, "face_box", lambda i, n, size, set_number, subject: list(STILL))
        still = miniature.write_miniature(root / "released", identities=["F_01"], frames_per_video=FRAMES, size=SIZE,
                                          zips=False, landmarks=True, missing={"F_01_S1": (2,)},
                                          multiple={"F_01_S2": (4,)}, missing_png={})
        patch.setattr(miniature, "face_box", lambda i, n, size, set_number, subject: moving(i))
        slide = miniature.write_miniature(root / "generated", identities=["M_10"], frames_per_video=FRAMES, size=SIZE,
                                          zips=False, landmarks=True, missing={}, multiple={}, missing_png={})
    cache = str(root / "hf_cache")
    rows = [load_dataset("thermvision_db", "frames", data_dir=c.root, cache_dir=cache, split_by="none")["train"] for c in (still, slide)]
    return still, slide, rows, cache


def test_numbers_match_the_placed_boxes(corpora, tmp_path):
    _, _, (released, generated), _ = corpora
    result = compare_corpora(released, generated, tmp_path, feature=TinyFeatures(), fid_image_size=24)
    assert json.loads((tmp_path / "comparison.json").read_text()) == result
    a, b = result["corpora"]["released"], result["corpora"]["generated"]
    assert (a["frames"], a["videos"], a["identities"]) == (2 * FRAMES, 2, 1)
    assert a["qc_counts"]["missing"] == 1 and a["qc_rates"]["multiple"] == pytest.approx(1 / 12)
    assert b["qc_rates"]["ok"] == 1.0
    # released: 11 boxed frames, all 24 x 30 px, width 0.375 of the frame -> all in the 0.3-0.4 bin
    assert (a["box"]["mean_w_px"], a["box"]["mean_h_px"]) == (pytest.approx(24), pytest.approx(30))
    assert a["box"]["hist_w"]["counts"] == [0, 0, 0, 11, 0, 0, 0, 0, 0, 0]
    assert a["box"]["mean_cx"] == pytest.approx((8 + 12) / SIZE)
    # generated: 36 x 44 px (0.5625 and 0.6875 of the frame), centres x = 20, 24, ..., 40 px
    assert (b["box"]["mean_w_px"], b["box"]["mean_h_px"]) == (pytest.approx(36), pytest.approx(44))
    assert b["box"]["hist_w"]["counts"][5] == 12 and b["box"]["hist_h"]["counts"][6] == 12
    centres = [(moving(i)[0] + 18) / SIZE for i in range(FRAMES)]
    assert b["box"]["mean_cx"] == pytest.approx(np.mean(centres))
    assert b["box"]["hist_cx"]["counts"] == list(np.histogram(centres * 2, bins=np.linspace(0, 1, 11))[0])
    # temporal: a still face has zero jitter and change; a face sliding 4 px moves every landmark 4 px
    assert a["temporal"]["landmark_jitter_px"] == 0.0 and a["temporal"]["frame_change"] == 0.0
    assert a["temporal"]["box_jumps"] == 0
    assert b["temporal"]["landmark_jitter_px"] == pytest.approx(4.0, abs=1e-3)
    assert b["temporal"]["box_jumps"] == 2 * (FRAMES - 1) and b["temporal"]["frame_change"] > 0
    assert sum(a["intensity"]["fraction"]) == pytest.approx(1.0)
    # FID/KID over the same frames fid_kid sees directly
    frames = [[np.asarray(r["image"].convert("L")) for r in rows] for rows in (released, generated)]
    direct = fid_kid(*frames, feature=TinyFeatures(), image_size=24)
    assert result["realism"]["fid"] == pytest.approx(direct["fid"], rel=1e-6) and direct["fid"] > 0
    picture = (tmp_path / "comparison.png").read_bytes()
    assert picture[:4] == b"\x89PNG"
    report = (tmp_path / "comparison.md").read_text()
    assert report.index("![comparison](comparison.png)") < report.index("| mean box width (px) | 24 | 36 |")


def test_a_corpus_against_itself_and_plain_dict_rows(corpora, tmp_path):
    _, _, (released, _), _ = corpora
    # plain dicts with names instead of ids (any iterable of frame rows): the same numbers as the Dataset
    plain = [named_frame_row(row, released.features) for row in released]
    assert plain[0]["qc"] == "ok" and plain[0]["identity"] == "F_01"
    result = compare_corpora(released, plain, tmp_path, names=("dataset", "dicts"), feature=TinyFeatures(), fid_image_size=24)
    assert result["corpora"]["dataset"] == result["corpora"]["dicts"]
    assert result["realism"]["fid"] == pytest.approx(0.0, abs=1e-6)


def test_without_an_extractor_the_report_says_why(corpora, tmp_path):
    _, _, (released, generated), _ = corpora
    result = compare_corpora(released, generated, tmp_path, feature=None)
    assert result["realism"] == {"skipped": "no feature extractor requested"}
    assert "FID/KID not computed: no feature extractor requested" in (tmp_path / "comparison.md").read_text()


def test_cli_evaluate_compare(corpora, tmp_path, tiny_model, capsys):
    still, slide, _, cache = corpora
    out = tmp_path / "report"
    code = main(["evaluate", str(slide.root), "--out", str(out), "--compare", str(still.root), "--names", "miniature", "mine",
                 "--fid-features", str(tiny_model), "--cache-dir", cache])
    assert code == 0
    assert "comparison.png" in capsys.readouterr().out
    result = json.loads((out / "comparison.json").read_text())
    assert result["names"] == ["miniature", "mine"]
    assert result["corpora"]["mine"]["box"]["mean_w_px"] == pytest.approx(36)
    assert result["realism"]["feature"] == str(tiny_model) and result["realism"]["fid"] > 0
    report = (out / "report.md").read_text()
    assert "## mine side by side with miniature" in report and "![comparison](comparison.png)" in report


def test_row_names_helper():
    features = frame_features(["F_01", "M_10"])
    row = {"identity": 1, "gender": 0, "set": 1, "qc": 2, "faces": [{"bbox": [0, 0, 1, 1], "landmarks": None, "source": 1}]}
    named = named_frame_row(row, features)
    assert (named["identity"], named["gender"], named["set"], named["qc"]) == ("M_10", "female", "expression", "multiple")
    assert named["faces"][0]["source"] == "interpolated" and row["qc"] == 2  # the input row is not changed
    assert named_frame_row(row)["identity"] == 1  # identity names belong to the corpus, not the schema
    assert named_frame_row(named, features) == named
    with pytest.raises(ValueError, match="class id 7"):
        named_frame_row({**row, "qc": 7})
