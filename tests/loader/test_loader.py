from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from thermvision_db import load_dataset
from thermvision_db.schema.labels import LabelError
from thermvision_db.demo.miniature import write_miniature
from thermvision_db.schema.splits import released_split
from thermvision_db.io.decode import read_frames


def _by_key(ds):
    return {(r["video_id"], r["frame_index"]): r for r in ds}


@pytest.fixture(scope="module")
def frames(mini, hf_cache):
    return load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache, split_by="none", split="train")


def test_frames_rows_and_boxes_match_the_placed_faces(frames, mini):
    assert frames.num_rows == len(mini.members) * mini.frames_per_video
    qc_names = frames.features["qc"].names
    for (video_id, i), row in _by_key(frames).items():
        qc = qc_names[row["qc"]]
        if i in mini.missing.get(video_id, ()):
            assert qc == "missing" and row["faces"] == []
            continue
        expected = 2 if i in mini.multiple.get(video_id, ()) else 1
        assert len(row["faces"]) == expected and qc == ("multiple" if expected == 2 else "ok")
        assert np.allclose(row["faces"][0]["bbox"], mini.boxes[video_id][i], atol=1e-3)
        assert np.allclose(row["faces"][0]["landmarks"], mini.landmarks[video_id][i], atol=1e-2)


def test_typed_features(frames):
    f = frames.features
    assert isinstance(f["image"], datasets.Image) and f["gender"].names == ["female", "male"]
    assert f["identity"].num_classes == 50 and f["set"].names == ["head_pose", "expression"]
    row = frames[0]
    assert f["identity"].int2str(row["identity"]) == row["video_id"][:4]
    assert row["head_pose"] is None and row["seed"] is None


def test_zips_read_in_place_give_identical_rows(frames, mini_zips, hf_cache):
    zipped = load_dataset("thermvision_db", "frames", data_dir=mini_zips.root, cache_dir=hf_cache, split_by="none", split="train")
    a, b = _by_key(frames), _by_key(zipped)
    assert a.keys() == b.keys()
    decoded = {(v, i) for v, idx in mini_zips.missing_png.items() for i in idx}  # from each corpus's own MP4
    for key in list(a):
        assert a[key]["faces"] == b[key]["faces"]
        if key not in decoded:
            assert np.array_equal(np.asarray(a[key]["image"]), np.asarray(b[key]["image"]))
    assert not any(p.suffix == ".mp4" for p in Path(mini_zips.root).rglob("*"))  # nothing was extracted


def test_missing_png_is_decoded_from_the_mp4(frames, mini):
    (video_id, indices), = mini.missing_png.items()
    member = next(m for m in mini.members if m.video_id == video_id)
    decoded = read_frames(Path(mini.root) / member.video_member, [indices[0]])[0]
    row = _by_key(frames)[(video_id, indices[0])]
    assert np.array_equal(np.asarray(row["image"]), decoded)
    neighbour = np.asarray(Image.open(Path(mini.root) / member.frame_png(indices[0] + 1)), dtype=float)
    assert np.abs(np.asarray(row["image"], dtype=float) - neighbour).mean() > 0  # a different frame, not a copy


def test_identity_disjoint_splits(mini, hf_cache):
    dd = load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache)
    seen = {}
    for split, ds in dd.items():
        ids = {ds.features["identity"].int2str(i) for i in ds["identity"]}
        assert all(released_split(i) == split for i in ids)
        seen[split] = ids
    assert set.union(*seen.values()) == set(mini.identities)
    assert sum(ds.num_rows for ds in dd.values()) == len(mini.members) * mini.frames_per_video


def test_repair_boxes_fills_every_frame(mini, hf_cache):
    ds = load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache, split_by="none", split="train", repair_boxes=True)
    sources = ds.features["faces"].feature["source"].names
    rows = _by_key(ds)
    for (video_id, i), row in rows.items():
        assert len(row["faces"]) == 1
        flagged = i in mini.missing.get(video_id, ()) or i in mini.multiple.get(video_id, ())
        assert (sources[row["faces"][0]["source"]] == "interpolated") == flagged
        # the faces move smoothly, so a repaired box lands within a few pixels of the true one
        assert np.abs(np.asarray(row["faces"][0]["bbox"]) - mini.boxes[video_id][i]).max() < 6


def test_videos_config_and_decoders_agree(mini, hf_cache):
    ds = load_dataset("thermvision_db", "videos", data_dir=mini.root, cache_dir=hf_cache, split_by="none", split="train")
    assert ds.num_rows == len(mini.members)
    row = ds[0]
    assert (row["num_frames"], row["width"], row["height"]) == (mini.frames_per_video, mini.size, mini.size)
    assert row["fps"] == pytest.approx(30.0)
    assert np.allclose([b[0] for b in row["boxes"]], mini.boxes[row["video_id"]], atol=1e-3)
    pyav = read_frames(row["video"]["path"], backend="pyav")
    cv = read_frames(row["video"]["path"], backend="opencv")
    assert pyav.shape == (mini.frames_per_video, mini.size, mini.size, 3) and np.array_equal(pyav, cv)
    assert np.array_equal(read_frames(row["video"]["path"], [5, 1]), pyav[[5, 1]])


def test_videos_from_zips_carry_bytes(mini_zips, hf_cache):
    ds = load_dataset("thermvision_db", "videos", data_dir=mini_zips.root, cache_dir=hf_cache, split="validation")
    row = ds[0]
    assert row["video"]["bytes"] and read_frames(row["video"]["bytes"]).shape[0] == row["num_frames"]


def test_streaming_one_shard_per_video_and_same_rows(mini, frames):
    it = load_dataset("thermvision_db", "frames", data_dir=mini.root, split="train", streaming=True, split_by="none")
    assert isinstance(it, datasets.IterableDataset) and it.n_shards == len(mini.members)
    streamed = {(r["video_id"], r["frame_index"]): r["faces"] for r in it}
    stored = {k: r["faces"] for k, r in _by_key(frames).items()}
    assert streamed.keys() == stored.keys()
    assert all(np.allclose(streamed[k][0]["bbox"], stored[k][0]["bbox"]) for k in stored if stored[k])


def test_streaming_workers_and_nodes_get_disjoint_work(mini):
    from datasets.distributed import split_dataset_by_node

    it = load_dataset("thermvision_db", "frames", data_dir=mini.root, split="train", streaming=True, split_by="none")
    it = it.remove_columns(["image"])
    loader = torch.utils.data.DataLoader(it, batch_size=None, num_workers=2)
    keys = [(r["video_id"], int(r["frame_index"])) for r in loader]
    assert len(keys) == len(set(keys)) == len(mini.members) * mini.frames_per_video
    parts = [[(r["video_id"], r["frame_index"]) for r in split_dataset_by_node(it, rank, 2)] for rank in range(2)]
    assert set(parts[0]).isdisjoint(parts[1]) and len(parts[0]) + len(parts[1]) == len(keys)


def test_num_proc_gives_the_same_rows(mini, tmp_path):
    ds = load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=str(tmp_path), split_by="none", split="train", num_proc=2)
    assert ds.num_rows == len(mini.members) * mini.frames_per_video
    assert len(ds.cache_files) == 2


def test_cache_is_reused(mini, hf_cache, frames):
    again = load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache, split_by="none", split="train")
    assert again.cache_files == frames.cache_files


def test_unknown_config_and_field(mini):
    with pytest.raises(ValueError, match="unknown configuration 'frame'.*frames"):
        load_dataset("thermvision_db", "frame", data_dir=mini.root)
    with pytest.raises(ValueError, match="repair_box"):
        load_dataset("thermvision_db", "frames", data_dir=mini.root, repair_box=True)
    with pytest.raises(ValueError, match="unknown identities"):
        load_dataset("thermvision_db", "frames", data_dir=mini.root, identities=["X_99"])


def test_identities_option_restricts_rows(mini, hf_cache):
    ds = load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache, split="train", split_by="none", identities=["F_23"])
    assert set(ds["video_id"]) == {"F_23_S1", "F_23_S2"}


def test_malformed_label_names_file_and_line_and_leaves_no_cache(tmp_path):
    corpus = write_miniature(tmp_path / "bad", identities=["F_01"], frames_per_video=3, zips=False)
    member = corpus.members[0]
    (Path(corpus.root) / member.label_txt(1)).write_text("0 0.5 0.5 0.3 0.3\n0 0.5 nan? 0.3\n")
    cache = tmp_path / "cache"
    with pytest.raises(LabelError, match=r"frame_0001\.txt, line 2"):
        load_dataset("thermvision_db", "frames", data_dir=corpus.root, cache_dir=str(cache))
    leftovers = [p for p in cache.rglob("*") if p.suffix == ".arrow" or p.name == "dataset_info.json"]
    assert leftovers == []


def test_images_config_reads_category_folders(tmp_path):
    for rel in ["Frontal pose/Female/a.png", "Frontal pose/Male/b.png", "Beard/c.png", "Head poses/male/d.jpg", "Mix/notes.txt"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".txt":
            path.write_text("x")
        else:
            Image.new("RGB", (8, 8), (100, 100, 100)).save(path)
    ds = load_dataset("thermvision_db", "images", data_dir=tmp_path, cache_dir=str(tmp_path / "c"), split="train")
    cats, genders = ds.features["category"], ds.features["gender"]
    got = {r["path"]: (cats.int2str(r["category"]), None if r["gender"] is None else genders.int2str(r["gender"])) for r in ds}
    assert got == {
        "Frontal pose/Female/a.png": ("frontal", "female"), "Frontal pose/Male/b.png": ("frontal", "male"),
        "Beard/c.png": ("beard", None), "Head poses/male/d.jpg": ("head_poses", "male"),
    }


def test_other_names_pass_through_to_datasets(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    ds = load_dataset("csv", data_files=str(tmp_path / "t.csv"), split="train", cache_dir=str(tmp_path / "c"))
    assert ds[0] == {"a": 1, "b": 2}
