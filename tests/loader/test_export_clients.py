"""Exports read by the clients users load them into: pycocotools COCOeval, ultralytics' data.yaml rules, plain
`datasets.load_dataset` on a re-exported folder; Parquet shard sizes and the card; a generated corpus folder
exported from the command line."""

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from thermvision_db.cli.main import main
from thermvision_db.tools.export import export, load_rows
from thermvision_db.tools.export_parquet import export_parquet, shard_ranges
from thermvision_db.schema.labels import NUM_LANDMARKS, coco_to_yolo
from thermvision_db.demo.miniature import write_miniature

UNLABELLED = (3, 17, 40)


@pytest.fixture()
def corpus(tmp_path):
    """F_01 (train) and F_16 (validation), 3 frames of 64 px with landmarks; F_01_S1 frame 1 has two faces and
    frame 0 three points written as YOLO-pose `0 0 0` (unlabelled)."""
    corpus = write_miniature(tmp_path / "corpus", identities=["F_01", "F_16"], frames_per_video=3, zips=False,
                             landmarks=True, missing={}, multiple={"F_01_S1": (1,)}, missing_png={})
    member = next(m for m in corpus.members if m.video_id == "F_01_S1")
    label = corpus.root / member.label_txt(0)
    values = label.read_text().split()
    points = [values[5 + 2 * i: 7 + 2 * i] for i in range(NUM_LANDMARKS)]
    triples = ["0 0 0" if i in UNLABELLED else f"{x} {y} 2" for i, (x, y) in enumerate(points)]  # as YOLO-pose writes
    label.write_text(" ".join(values[:5] + triples) + "\n")
    return corpus


def _coco_eval(gt_path: Path, detections: list, iou_type: str) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(gt_path))
    dt = gt.loadRes(detections)
    evaluator = COCOeval(gt, dt, iou_type)
    if iou_type == "keypoints":
        evaluator.params.kpt_oks_sigmas = np.asarray(gt.loadCats(1)[0]["oks_sigmas"])  # shipped in the category
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


def test_cocoeval_scores_the_export_against_itself_at_ap_1(corpus, tmp_path, hf_cache):
    export(corpus.root, "coco", tmp_path / "coco", cache_dir=hf_cache, progress=False)
    path = tmp_path / "coco" / "annotations" / "train.json"
    document = json.loads(path.read_text())
    annotations = document["annotations"]
    from pycocotools.coco import COCO

    gt = COCO(str(path))  # the box polygon: annToMask covers the box (pixel-rounded) on every annotation
    for a in annotations:
        x, y, w, h = a["bbox"]
        mask = gt.annToMask(a)
        rows, cols = np.nonzero(mask)
        assert abs(cols.min() - x) <= 1 and abs(cols.max() + 1 - (x + w)) <= 1 and abs(rows.min() - y) <= 1
        assert abs(mask.sum() - w * h) <= 2 * (w + h) + 4
    first = next(a for a in annotations if document["images"][a["image_id"] - 1]["video_id"] == "F_01_S1")
    triples = np.asarray(first["keypoints"]).reshape(NUM_LANDMARKS, 3)
    assert first["num_keypoints"] == NUM_LANDMARKS - len(UNLABELLED)
    assert (triples[list(UNLABELLED)] == 0).all() and (np.delete(triples[:, 2], UNLABELLED) == 2).all()
    boxes = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0} for a in annotations]
    points = [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a["keypoints"], "score": 1.0}
              for a in annotations]
    assert _coco_eval(path, boxes, "bbox") == pytest.approx(1.0)
    assert _coco_eval(path, points, "keypoints") == pytest.approx(1.0)
    shifted = [{**d, "bbox": [d["bbox"][0] + 0.6 * d["bbox"][2], *d["bbox"][1:]]} for d in boxes]
    assert _coco_eval(path, shifted, "bbox") < 0.5  # the scorer does see a wrong box


def _ultralytics_split_dirs(data_yaml: Path) -> dict[str, Path]:
    """ultralytics/data/utils.py check_det_dataset: 'train' and 'val' are required; the root is `path`, or the
    yaml's folder when `path` is empty or absent; a relative root that does not exist goes to DATASETS_DIR."""
    data = yaml.safe_load(data_yaml.read_text())
    for key in ("train", "val"):
        if key not in data:
            raise SyntaxError(f"'{key}:' key missing; 'train' and 'val' are required in all data YAMLs")
    root = Path(data.get("path") or data_yaml.parent)
    return {k: (root / data[k]).resolve() for k in ("train", "val", "test") if data.get(k)}


def test_yolo_data_yaml_follows_ultralytics_and_survives_a_move(corpus, tmp_path, hf_cache):
    export(corpus.root, "yolo-pose", tmp_path / "y", cache_dir=hf_cache, progress=False)
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "y", moved)
    dirs = _ultralytics_split_dirs(moved / "data.yaml")
    assert dirs == {"train": (moved / "images/train").resolve(), "val": (moved / "images/validation").resolve()}
    for folder in dirs.values():
        images = sorted(folder.glob("*.png"))
        assert images
        for image in images:  # img2label_paths: /images/ -> /labels/, suffix .txt
            assert Path(str(image).replace("/images/", "/labels/")).with_suffix(".txt").is_file()
    line = (moved / "labels/train/F_01_S1_0000.txt").read_text().split()
    triples = np.asarray([float(v) for v in line[5:]]).reshape(NUM_LANDMARKS, 3)
    assert (triples[list(UNLABELLED)] == 0).all()
    export(corpus.root, "yolo", tmp_path / "val_only", split="validation", cache_dir=hf_cache, progress=False)
    only = _ultralytics_split_dirs(tmp_path / "val_only" / "data.yaml")
    assert only["train"] == only["val"] == (tmp_path / "val_only/images/validation").resolve()


def test_parquet_reexport_is_read_fresh_by_plain_datasets(corpus, tmp_path, hf_cache):
    out, cache = tmp_path / "pq", str(tmp_path / "plain_cache")
    export(corpus.root, "parquet", out, cache_dir=hf_cache, progress=False)
    before = datasets.load_dataset(str(out), "frames", cache_dir=cache)["train"].remove_columns("image")
    first_shards = sorted((out / "frames").glob("*.parquet"))
    member = next(m for m in corpus.members if m.video_id == "F_01_S2")
    moved = [5.0, 6.0, 30.0, 31.0]
    (corpus.root / member.label_txt(2)).write_text("0 " + " ".join(f"{v:g}" for v in coco_to_yolo(moved, 64, 64)) + "\n")
    export(corpus.root, "parquet", out, cache_dir=hf_cache, progress=False)
    after = datasets.load_dataset(str(out), "frames", cache_dir=cache)["train"].remove_columns("image")

    def box(ds):
        return next(r for r in ds if r["video_id"] == "F_01_S2" and r["frame_index"] == 2)["faces"][0]["bbox"]

    assert not np.allclose(box(before), moved, atol=1e-3)
    np.testing.assert_allclose(box(after), moved, atol=1e-3)
    assert sorted((out / "frames").glob("*.parquet")) != first_shards  # the old shards are gone, not shadowing
    assert len(list((out / "frames").glob("*.parquet"))) == 2


def test_parquet_shards_card_and_unique_image_names(corpus, tmp_path, hf_cache):
    rows = load_rows(corpus.root, cache_dir=hf_cache)
    png = [len(r["bytes"]) if r["bytes"] else Path(r["path"]).stat().st_size
           for r in rows["train"].cast_column("image", datasets.Image(decode=False))["image"]]
    limit = 3 * max(png)
    written = export_parquet(rows, tmp_path / "pq", progress=False, max_shard_bytes=limit)
    shards = sorted(p for p in written if p.name.startswith("train-"))
    assert len(shards) >= 2
    names = []
    for shard in shards:
        cells = pq.read_table(shard).column("image").to_pylist()
        assert sum(len(c["bytes"]) for c in cells) <= limit
        names += [c["path"] for c in cells]
    assert names == [f"{r['video_id']}_{r['frame_index']:04d}.png" for r in rows["train"].remove_columns("image")]
    assert len(set(names)) == len(names)
    card = (tmp_path / "pq" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "other" and meta["license_name"] == "non-commercial-research"
    assert meta["license_link"].startswith("https://huggingface.co/datasets/")
    assert meta["task_categories"] == ["object-detection", "keypoint-detection"] and meta["size_categories"] == ["n<1K"]
    assert "thermal" in meta["tags"]
    split_bytes = {s["name"]: s["num_bytes"] for s in meta["dataset_info"]["splits"]}
    assert split_bytes["train"] == sum(p.stat().st_size for p in shards)
    ds = datasets.load_dataset(str(tmp_path / "pq"), "frames", cache_dir=str(tmp_path / "c"))
    assert len(ds["train"]) == len(rows["train"]) and len(ds["validation"]) == len(rows["validation"])


def test_full_corpus_shards_stay_under_500_mb():
    rng = np.random.default_rng(0)
    sizes = rng.integers(120_000, 260_000, size=30_200).tolist()  # 512x512 thermal PNGs
    ranges = shard_ranges(sizes, 500 * 1024**2)
    assert [i for r in ranges for i in r] == list(range(30_200))
    assert all(sum(sizes[i] + 512 for i in r) <= 500 * 1024**2 for r in ranges)
    assert len(ranges) == int(np.ceil((sum(sizes) + 512 * 30_200) / (500 * 1024**2)))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One identity made by the generator (tiny preset, CPU), as `thermvision-db generate` writes it."""
    from generator.corpus.pipeline import GenerationPipeline
    from generator.corpus.settings import GenerationSettings

    out = tmp_path_factory.mktemp("generated")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THERMVISION_CACHE", str(tmp_path_factory.mktemp("hash_cache")))
        summary = GenerationPipeline(GenerationSettings(motion="head_pose=5,expression=10", still_batch=1, still_steps=2), out,
                                     device="cpu", progress=False).run(1)
    assert summary.failures == []
    return out


@pytest.mark.parametrize("fmt", ["coco", "yolo", "yolo-pose", "parquet"])
def test_cli_exports_a_generated_folder(generated, tmp_path, hf_cache, fmt):
    labels = {}
    identity = generated / "identities" / "S000000"
    for path in identity.glob("*.labels.json"):
        video = path.name.split(".")[0]
        labels[video] = json.loads(path.read_text())["frames"]
    out = tmp_path / fmt
    assert main(["export", str(generated), "--format", fmt, "--out", str(out), "--cache-dir", hf_cache]) == 0
    frames = sum(len(v) for v in labels.values())
    if fmt == "coco":
        document = json.loads((out / "annotations" / "train.json").read_text())
        assert len(document["images"]) == frames
        image = document["images"][0]
        ann = next(a for a in document["annotations"] if a["image_id"] == image["id"])
        video = image["video_id"].split("_", 1)[1]
        np.testing.assert_allclose(ann["bbox"], labels[video][image["frame_index"]]["faces"][0]["bbox"], atol=1e-3)
    elif fmt == "parquet":
        ds = datasets.load_dataset(str(out), "frames", cache_dir=str(tmp_path / "c"))["train"]
        assert len(ds) == frames and ds.features["identity"].names == ["S000000"]
    else:
        dirs = _ultralytics_split_dirs(out / "data.yaml")
        assert dirs["train"] == dirs["val"] == (out / "images/train").resolve()
        assert len(list((out / "labels/train").glob("*.txt"))) == frames


def test_generated_labels_edited_in_place_are_reloaded(generated, tmp_path, hf_cache):
    from thermvision_db.hf.api import load_dataset

    def first_box():
        ds = load_dataset("thermvision_db", "synthetic", output_dir=str(generated), cache_dir=hf_cache, split="train")
        row = next(r for r in ds.remove_columns("image") if r["video_id"].endswith("head_pose") and r["frame_index"] == 0)
        return row["faces"][0]["bbox"]

    copy = tmp_path / "copy"
    shutil.copytree(generated, copy)
    generated = copy
    path = generated / "identities" / "S000000" / "head_pose.labels.json"
    document = json.loads(path.read_text())
    before = first_box()
    np.testing.assert_allclose(before, document["frames"][0]["faces"][0]["bbox"], atol=1e-3)
    document["frames"][0]["faces"][0]["bbox"] = [1.0, 2.0, 3.0, 4.0]
    with open(path, "r+") as handle:  # edited in place: the identity folder's own mtime does not change
        handle.write(json.dumps(document))
        handle.truncate()
    np.testing.assert_allclose(first_box(), [1.0, 2.0, 3.0, 4.0])


def test_preview_draws_a_generated_folder(generated, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from thermvision_db.tools.pictures import legend

    gif = tmp_path / "g.gif"
    assert main(["preview", str(generated), "--video", "S000000_head_pose", "--out", str(gif)]) == 0
    assert "(5 frames;" in capsys.readouterr().out and Image.open(gif).n_frames >= 1  # head_pose=5 frames (GIF merges equal ones)
    sheet = tmp_path / "g.png"
    assert main(["preview", str(generated), "--frames", "5", "--tile", "40", "--out", str(sheet)]) == 0
    assert "yellow propagated" in capsys.readouterr().out
    picture = np.asarray(Image.open(sheet).convert("RGB"))
    strip = np.asarray(legend(picture.shape[1], sources=["propagated"]))  # the legend names what was drawn
    assert np.array_equal(picture[-strip.shape[0]:], strip)
    assert main(["preview", str(generated), "--video", "F_01_S1"]) == 2
    assert "not in the generated corpus" in capsys.readouterr().err
