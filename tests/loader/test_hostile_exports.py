"""Exports into folders that hold the user's files, clients' expectations (COCO OKS, yolo-pose without
landmarks, a single split), hidden files in `images` folders judged by `datasets`' ImageFolder, `file://`
URLs, a full disk under the Arrow cache, and a labelled frame that neither its PNG nor the MP4 can give."""

import errno
import json
import warnings

import datasets
import numpy as np
import pytest
from PIL import Image

from thermvision_db.cli.main import main
from thermvision_db.demo.miniature import write_miniature
from thermvision_db.hf.api import CacheDirError, load_dataset
from thermvision_db.io.decode import read_frames
from thermvision_db.sources.base import SourceError
from thermvision_db.tools.export import SFTL54_OKS_SIGMAS, ExportError, export
from thermvision_db.tools.export_manifest import MANIFEST, ExportConflict


@pytest.fixture()
def corpus(tmp_path):
    return write_miniature(tmp_path / "corpus", identities=["F_01", "F_16"], frames_per_video=2, zips=False,
                           landmarks=True, missing={}, multiple={}, missing_png={})


def test_parquet_into_a_folder_with_the_users_files_stops_and_overwrite_keeps_theirs(corpus, tmp_path, hf_cache, capsys):
    out = tmp_path / "out"
    (out / "frames").mkdir(parents=True)
    (out / "README.md").write_text("my notes\n")
    (out / "frames" / "mine.parquet").write_bytes(b"PAR1 mine")
    with pytest.raises(ExportConflict, match="README.md.*--overwrite"):
        export(corpus.root, "parquet", out, cache_dir=hf_cache, progress=False)
    assert (out / "README.md").read_text() == "my notes\n" and not (out / MANIFEST).exists()
    assert main(["export", str(corpus.root), "--format", "parquet", "--out", str(out), "--cache-dir", hf_cache]) == 2
    assert "--overwrite" in capsys.readouterr().err
    first = export(corpus.root, "parquet", out, cache_dir=hf_cache, progress=False, overwrite=True)
    assert (out / "frames" / "mine.parquet").read_bytes() == b"PAR1 mine"  # replaced only what it writes
    # a re-export replaces its own files without --overwrite and removes only its own stale shards
    (out / "frames" / "mine.parquet").unlink()
    stale = out / "frames" / "validation-00000-of-00001-000000000000.parquet"
    stale.write_bytes(b"user")
    with pytest.raises(ExportConflict, match="validation-00000"):
        export(corpus.root, "parquet", out, cache_dir=hf_cache, progress=False)
    stale.unlink()
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["parquet:frames"]) == sorted(str(p.relative_to(out)) for p in first)
    second = export(corpus.root, "parquet", out, cache_dir=hf_cache, progress=False, split="train")
    assert all(p.exists() for p in second)
    assert not [p for p in first if p not in second and p.exists()]  # the previous validation shard is gone
    loaded = datasets.load_dataset(str(out), "frames", cache_dir=str(tmp_path / "plain"))
    assert set(loaded) == {"train"}


def test_coco_export_keeps_a_users_same_name_file_and_ships_oks_sigmas(corpus, tmp_path, hf_cache):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "coco"
    export(corpus.root, "coco", out, cache_dir=hf_cache, progress=False)
    image = next((out / "images" / "train").glob("*.png"))
    original = image.read_bytes()
    image.write_bytes(b"edited by the user")  # the manifest lists it: a re-export may replace it
    export(corpus.root, "coco", out, cache_dir=hf_cache, progress=False)
    assert image.read_bytes() == original
    (out / "images" / "train" / "notes.txt").write_text("mine")
    export(corpus.root, "coco", out, cache_dir=hf_cache, progress=False, split="validation")
    assert (out / "images" / "train" / "notes.txt").read_text() == "mine"
    assert not image.exists()  # the earlier export's train images were its own: removed
    gt = COCO(str(out / "annotations" / "validation.json"))
    sigmas = np.asarray(gt.loadCats(1)[0]["oks_sigmas"])
    assert np.array_equal(sigmas, SFTL54_OKS_SIGMAS) and len(sigmas) == 54
    # OKS of a prediction shifted by d pixels, by hand: mean over labelled points of exp(-d^2 / (2 area (2 sigma)^2))
    annotation = gt.loadAnns(gt.getAnnIds())[0]
    points = np.asarray(annotation["keypoints"], float).reshape(54, 3)
    shifted = points.copy()
    shifted[:, 0] += 1.5
    evaluator = COCOeval(gt, gt.loadRes([{"image_id": annotation["image_id"], "category_id": 1, "score": 1.0,
                                          "keypoints": shifted.ravel().tolist()}]), "keypoints")
    evaluator.params.kpt_oks_sigmas = sigmas
    evaluator.params.imgIds = [annotation["image_id"]]
    evaluator.evaluate()
    got = evaluator.computeOks(annotation["image_id"], 1)
    visible = points[:, 2] > 0
    expected = np.mean(np.exp(-(1.5 ** 2) / (annotation["area"] + np.spacing(1)) / ((2 * sigmas[visible]) ** 2) / 2))
    assert got[0, 0] == pytest.approx(expected, rel=1e-6)


def test_yolo_pose_without_landmarks_stops_and_one_split_warns(tmp_path, hf_cache):
    plain = write_miniature(tmp_path / "plain", identities=["F_01", "F_16"], frames_per_video=2, zips=False,
                            landmarks=False, missing={}, multiple={}, missing_png={})
    with pytest.raises(ExportError, match="no face in this corpus has landmarks.*--format yolo"):
        export(plain.root, "yolo-pose", tmp_path / "pose", cache_dir=hf_cache, progress=False)
    assert not (tmp_path / "pose").exists() or not any((tmp_path / "pose").rglob("*.txt"))
    with pytest.warns(UserWarning, match="val` is the training split"):
        export(plain.root, "yolo", tmp_path / "one", cache_dir=hf_cache, progress=False, split="train")
    assert "WARNING: val is the training split" in (tmp_path / "one" / "data.yaml").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both splits: no warning
        export(plain.root, "yolo", tmp_path / "two", cache_dir=hf_cache, progress=False)


def test_images_folders_skip_hidden_files_as_datasets_imagefolder_does(tmp_path, hf_cache):
    root = tmp_path / "stills"
    folder = root / "Frontal pose" / "female"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"s{i}.png")
    (folder / "._s0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS companion
    (folder / ".thumb.png").write_bytes(b"not an image")
    (root / "Frontal pose" / "__MACOSX").mkdir()
    (root / "Frontal pose" / "__MACOSX" / "s1.png").write_bytes(b"resource fork")
    (root / ".ipynb_checkpoints").mkdir()
    ours = load_dataset("thermvision_db", "images", data_dir=str(root), cache_dir=hf_cache, split="train")
    theirs = datasets.load_dataset("imagefolder", data_dir=str(root / "Frontal pose"), split="train",
                                   cache_dir=str(tmp_path / "if"))
    assert len(ours) == len(theirs) == 3
    assert sorted(np.asarray(r["image"]).mean() for r in ours) == sorted(np.asarray(r["image"]).mean() for r in theirs)


def test_file_urls_are_local_folders(corpus, hf_cache):
    url = corpus.root.resolve().as_uri()
    assert url.startswith("file:///")
    by_url = load_dataset("thermvision_db", "frames", data_dir=url, cache_dir=hf_cache, split="train", split_by="none")
    by_path = load_dataset("thermvision_db", "frames", data_dir=str(corpus.root), cache_dir=hf_cache, split="train",
                           split_by="none")
    assert by_url.select_columns(["video_id", "frame_index", "faces"]).to_list() == \
        by_path.select_columns(["video_id", "frame_index", "faces"]).to_list()
    with pytest.raises(SourceError, match="must name this machine"):
        load_dataset("thermvision_db", "frames", data_dir="file://otherhost/data", cache_dir=hf_cache)


def test_a_full_disk_under_the_arrow_cache_names_the_folder(corpus, tmp_path, monkeypatch):
    from datasets.arrow_writer import ArrowWriter

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ArrowWriter, "write", full)
    cache = tmp_path / "small-disk"
    with pytest.raises(CacheDirError, match=f"{cache}.*ran out of disk space"):
        load_dataset("thermvision_db", "frames", data_dir=str(corpus.root), cache_dir=str(cache))


def test_a_labelled_frame_without_png_beyond_a_short_mp4_is_named_not_dropped(tmp_path, hf_cache):
    import av

    one = write_miniature(tmp_path / "c", identities=["F_01"], frames_per_video=4, zips=False, missing={},
                          multiple={}, missing_png={})
    member = next(m for m in one.members if m.video_id == "F_01_S1")
    video = one.root / member.video_member
    frames = read_frames(video)[:3]
    with av.open(str(video), "w") as container:  # cut short: 3 of 4 frames
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width = frames[0].shape[:2]
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (one.root / member.frame_png(3)).unlink()
    assert (one.root / member.label_txt(3)).exists()
    with pytest.raises(SourceError, match=r"frame_0003.png' has no PNG.*frame 3 cannot be decoded.*decodes 3 frames"):
        load_dataset("thermvision_db", "frames", data_dir=str(one.root), cache_dir=hf_cache, split_by="none")
