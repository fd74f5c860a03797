"""`with_label_names`: ClassLabel codes as names on Dataset, IterableDataset and their dicts; decord says its extra."""

from __future__ import annotations

import datasets
import pytest

from thermvision_db import load_dataset, with_label_names
from thermvision_db.errors import MissingExtraError


@pytest.fixture(scope="module")
def repaired(mini, hf_cache):
    """Frames with repaired boxes: the miniature's missing frames come back with an interpolated face."""
    return load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache, repair_boxes=True)


def _expected(mini, video_id: str, frame: int) -> dict:
    """Names known from how the miniature was written, not from the loader."""
    qc = "missing" if frame in mini.missing.get(video_id, ()) else "multiple" if frame in mini.multiple.get(video_id, ()) else "ok"
    return {"identity": video_id[:4], "gender": "female" if video_id[0] == "F" else "male",
            "set": "head_pose" if video_id.endswith("S1") else "expression", "qc": qc,
            "source": "detector" if qc == "ok" else "interpolated"}  # repair marks what it filled or chose


def _check(rows, mini) -> int:
    seen = 0
    for row in rows:
        want = _expected(mini, row["video_id"], row["frame_index"])
        assert {k: row[k] for k in ("identity", "gender", "set", "qc")} == {k: want[k] for k in ("identity", "gender", "set", "qc")}
        assert row["faces"] and all(f["source"] == want["source"] for f in row["faces"][:1]), row["video_id"]
        seen += 1
    return seen


def test_dataset_dict_rows_read_as_names(repaired, mini):
    named = with_label_names(repaired)
    assert isinstance(named, datasets.DatasetDict) and set(named) == set(repaired)
    total = sum(_check(split, mini) for split in named.values())
    assert total == len(mini.members) * mini.frames_per_video
    train = named["train"]
    for column in ("identity", "gender", "set", "qc"):
        assert train.features[column] == datasets.Value("string")
    assert train.features["faces"].feature["source"] == datasets.Value("string")
    assert train.features["image"] == repaired["train"].features["image"]
    assert sorted(train.filter(lambda qc: qc == "missing", input_columns="qc")["video_id"]) == \
        sorted(v for v, frames in mini.missing.items() for _ in frames if v in set(train["video_id"]))
    # the original is untouched and its codes map to the same names
    original = repaired["train"]
    assert [original.features["qc"].int2str(q) for q in original["qc"]] == train["qc"]


def test_selected_shuffled_and_formatted_datasets(repaired, mini):
    part = repaired["train"].shuffle(seed=3).select(range(0, 20, 3))
    named = with_label_names(part)
    assert named["video_id"] == part["video_id"] and _check(named, mini) == len(part)
    sliced = repaired["train"].select(range(5, 30))  # contiguous: a slice of the Arrow table, not an index map
    joined = datasets.concatenate_datasets([sliced, repaired["test"]])  # a concatenation table
    for dataset in (sliced, joined):
        assert _check(with_label_names(dataset), mini) == len(dataset)
    torch_named = with_label_names(part.with_format("torch", columns=["qc", "frame_index"]))
    row = torch_named[0]
    assert set(row) == {"qc", "frame_index"} and row["qc"] == named[0]["qc"] and int(row["frame_index"]) == named[0]["frame_index"]


def test_iterable_dataset_rows_read_as_names(mini):
    stream = load_dataset("thermvision_db", "frames", data_dir=mini.root, split="validation", streaming=True,
                          repair_boxes=True)
    named = with_label_names(stream)
    assert isinstance(named, datasets.IterableDataset)
    assert named.features["qc"] == datasets.Value("string")
    assert _check(named, mini) == 2 * mini.frames_per_video  # one validation identity, two videos
    both = with_label_names(datasets.IterableDatasetDict({"validation": stream}))
    assert next(iter(both["validation"]))["gender"] == "female"


def test_video_rows_per_frame_qc(mini, hf_cache):
    videos = with_label_names(load_dataset("thermvision_db", "videos", data_dir=mini.root, cache_dir=hf_cache,
                                           split="train"))
    assert videos.features["qc"].feature == datasets.Value("string")
    for row in videos:
        assert row["qc"] == [_expected(mini, row["video_id"], i)["qc"] for i in range(row["num_frames"])]


def test_no_features_no_guessing():
    stream = datasets.IterableDataset.from_generator(lambda: iter([{"qc": 0}]))
    with pytest.raises(ValueError, match="needs the dataset's features"):
        with_label_names(stream)


def test_missing_decord_names_the_extra_before_generation(mini, tmp_path, monkeypatch):
    from thermvision_db.io import decode as video

    monkeypatch.setattr(video, "available_backends", lambda: ["pyav", "opencv"])  # a machine without decord
    with pytest.raises(MissingExtraError) as info:
        load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=str(tmp_path), video_backend="decord")
    message = str(info.value)
    assert "\n" not in message and "thermvision-db[decord]" in message and "video_backend='pyav'" in message
    assert not isinstance(info.value, datasets.exceptions.DatasetGenerationError)
    assert not list(tmp_path.rglob("*.arrow"))  # stopped before any generation
