"""Export round trips: each target re-read with its own conventions gives the loader's and the miniature's labels."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from thermvision_db.hf.api import load_dataset
from thermvision_db.cli.main import main
from thermvision_db.tools.export import ExportError, export, flip_index
from thermvision_db.schema.labels import NUM_LANDMARKS, SFTL54_FLIP_PAIRS, SFTL54_NAMES
from thermvision_db.demo.miniature import write_miniature

MISSING = {"F_01_S1": (1,)}
MULTIPLE = {"F_16_S2": (2,)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """2 identities (F_01 trains, F_16 validates), 4 frames of 64 px, one missing box and one double box."""
    return write_miniature(tmp_path_factory.mktemp("tiny_export"), identities=["F_01", "F_16"], frames_per_video=4,
                           zips=False, landmarks=True, missing=MISSING, multiple=MULTIPLE, missing_png={})


@pytest.fixture(scope="module")
def loader_rows(tiny, hf_cache):
    ds = load_dataset("thermvision_db", "frames", data_dir=tiny.root, cache_dir=hf_cache)
    rows = {}
    for split, dataset in ds.items():
        for row in dataset.remove_columns("image"):
            rows[(split, row["video_id"], row["frame_index"])] = row["faces"]
    return rows


def _check_against_truth(tiny, video_id, frame, faces):
    """The first face is the placed face; a frame in MISSING has none, one in MULTIPLE has two."""
    if frame in MISSING.get(video_id, ()):
        assert faces == []
        return
    assert len(faces) == (2 if frame in MULTIPLE.get(video_id, ()) else 1)
    np.testing.assert_allclose(faces[0][0], tiny.boxes[video_id][frame], atol=1e-3)
    np.testing.assert_allclose(faces[0][1], tiny.landmarks[video_id][frame], atol=2e-3)


def _loader_pairs(faces):
    return [(f["bbox"], f["landmarks"]) for f in faces]


def test_coco_round_trip(tiny, loader_rows, hf_cache, tmp_path):
    export(tiny.root, "coco", tmp_path, cache_dir=hf_cache, progress=False)
    seen = 0
    for split in ("train", "validation"):
        document = json.loads((tmp_path / "annotations" / f"{split}.json").read_text())
        category = document["categories"][0]
        assert category["keypoints"] == SFTL54_NAMES and len(category["keypoints"]) == NUM_LANDMARKS
        assert [tuple(p) for p in category["flip_pairs"]] == SFTL54_FLIP_PAIRS
        assert all(1 <= a <= 54 and 1 <= b <= 54 for a, b in category["skeleton"])
        by_image = {image["id"]: [] for image in document["images"]}
        for ann in document["annotations"]:
            assert ann["segmentation"] == [[ann["bbox"][0], ann["bbox"][1], ann["bbox"][0] + ann["bbox"][2], ann["bbox"][1],
                                              ann["bbox"][0] + ann["bbox"][2], ann["bbox"][1] + ann["bbox"][3], ann["bbox"][0],
                                              ann["bbox"][1] + ann["bbox"][3]]] and ann["iscrowd"] == 0 and ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3])
            points = np.asarray(ann["keypoints"], dtype=float).reshape(NUM_LANDMARKS, 3)
            assert ann["num_keypoints"] == 54 and set(points[:, 2]) == {2.0}
            by_image[ann["image_id"]].append((ann["bbox"], points[:, :2].tolist()))
        for image in document["images"]:
            assert (tmp_path / "images" / image["file_name"]).is_file()
            assert (image["width"], image["height"]) == (64, 64)
            faces = by_image[image["id"]]
            key = (split, image["video_id"], image["frame_index"])
            expected = _loader_pairs(loader_rows[key])
            assert len(faces) == len(expected)
            for (box, points), (box_l, points_l) in zip(faces, expected):
                np.testing.assert_allclose(box, box_l, atol=1e-4)
                np.testing.assert_allclose(points, points_l, atol=1e-4)
            _check_against_truth(tiny, image["video_id"], image["frame_index"], faces)
            seen += 1
    assert seen == 16


@pytest.mark.parametrize("fmt", ["yolo", "yolo-pose"])
def test_yolo_round_trip(tiny, loader_rows, hf_cache, tmp_path, fmt):
    import yaml

    export(tiny.root, fmt, tmp_path, cache_dir=hf_cache, progress=False)
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert data["names"] == {0: "face"} and data["train"] == "images/train" and data["val"] == "images/validation"
    if fmt == "yolo-pose":
        assert data["kpt_shape"] == [54, 3]
        assert data["flip_idx"][0] == 16 and data["flip_idx"][36] == 45 and data["flip_idx"][27] == 27
        assert sorted(data["flip_idx"]) == list(range(54)) == [data["flip_idx"][i] for i in data["flip_idx"]]
    else:
        assert "kpt_shape" not in data
    labels = sorted((tmp_path / "labels").glob("*/*.txt"))
    assert len(labels) == 16
    for path in labels:
        split = path.parent.name
        video_id, frame = path.stem.rsplit("_", 1)
        assert (tmp_path / "images" / split / f"{path.stem}.png").is_file()
        faces = []
        for line in path.read_text().splitlines():
            values = [float(v) for v in line.split()]
            assert values[0] == 0
            xc, yc, w, h = (v * 64 for v in values[1:5])
            box = [xc - w / 2, yc - h / 2, w, h]
            if fmt == "yolo-pose":
                assert len(values) == 5 + 3 * 54
                triples = np.asarray(values[5:]).reshape(54, 3)
                assert set(triples[:, 2]) == {2.0}
                faces.append((box, (triples[:, :2] * 64).tolist()))
            else:
                assert len(values) == 5
                faces.append((box, None))
        expected = _loader_pairs(loader_rows[(split, video_id, int(frame))])
        assert len(faces) == len(expected)
        for (box, points), (box_l, points_l) in zip(faces, expected):
            np.testing.assert_allclose(box, box_l, atol=1e-3)
            if points is not None:
                np.testing.assert_allclose(points, points_l, atol=1e-3)
        if fmt == "yolo-pose":
            _check_against_truth(tiny, video_id, int(frame), faces)


def test_parquet_loads_with_plain_datasets_and_typed_features(tiny, loader_rows, hf_cache, tmp_path):
    import datasets

    export(tiny.root, "parquet", tmp_path / "pq", cache_dir=hf_cache, progress=False)
    readme = (tmp_path / "pq" / "README.md").read_text()
    assert readme.startswith("---\n") and "configs:" in readme and "config_name: frames" in readme
    # images are embedded: the Parquet shards stand alone, without the corpus folder
    (shard,) = (tmp_path / "pq" / "frames").glob("train-00000-of-00001-*.parquet")
    table = pq.read_table(shard)
    assert all(cell["bytes"] for cell in table.column("image").to_pylist())
    ds = datasets.load_dataset(str(tmp_path / "pq"), "frames", cache_dir=str(tmp_path / "cache"))
    assert sorted(ds) == ["train", "validation"]
    features = ds["train"].features
    assert isinstance(features["identity"], datasets.ClassLabel) and features["identity"].num_classes == 50
    assert isinstance(features["qc"], datasets.ClassLabel) and features["qc"].names[1] == "missing"
    assert isinstance(features["image"], datasets.Image)
    assert isinstance(features["faces"]["source"] if isinstance(features["faces"], dict) else features["faces"].feature["source"], datasets.ClassLabel)
    row = ds["train"][0]
    assert row["image"].size == (64, 64)
    count = 0
    for split, dataset in ds.items():
        for row in dataset.remove_columns("image"):
            expected = loader_rows[(split, row["video_id"], row["frame_index"])]
            assert row["faces"] == expected
            _check_against_truth(tiny, row["video_id"], row["frame_index"], _loader_pairs(row["faces"]))
            count += 1
    assert count == 16
    assert ds["train"].features["identity"].int2str(ds["train"][0]["identity"]) == "F_01"


def test_flip_index_is_an_involution_matching_the_pairs():
    index = flip_index()
    assert [index[index[i]] for i in range(54)] == list(range(54))
    assert index[48] == 50 and index[49] == 49 and index[53] == 53


def test_bad_input_errors(tiny, tmp_path, hf_cache):
    with pytest.raises(ExportError, match="unknown export format 'voc'"):
        export(tiny.root, "voc", tmp_path)
    with pytest.raises(ExportError, match="does not exist"):
        export(tmp_path / "nowhere", "coco", tmp_path)
    with pytest.raises(ExportError, match="split 'test' is not in this corpus"):
        export(tiny.root, "coco", tmp_path, split="test", cache_dir=hf_cache, progress=False)


def test_cli_export_and_offline_push_error(tiny, tmp_path, hf_cache, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["export", str(tiny.root), "--format", "yolo", "--out", str(tmp_path / "y"),
                 "--split", "validation", "--cache-dir", hf_cache, "--push-to-hub", "someone/thermal"])
    assert code == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    assert len(list((tmp_path / "y" / "labels" / "validation").glob("*.txt"))) == 8  # the export itself completed
    assert not (tmp_path / "y" / "labels" / "train").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    assert main(["export", str(tiny.root), "--format", "coco", "--out", str(tmp_path / "c"), "--cache-dir", hf_cache]) == 0
    assert (tmp_path / "c" / "annotations" / "train.json").is_file()
