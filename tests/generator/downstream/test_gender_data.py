"""Gender benchmark sources and splits: the layouts, each item of the hostile list, subject-disjoint splits."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from generator.downstream import gender_data
from generator.downstream.gender_data import GenderDataError, cap_frames, read_real
from generator.downstream.gender_train import ImageCache, metrics, split_subjects
from tests.support.gender_sets import planted_set


@pytest.mark.parametrize("layout", ["folders", "prefix"])
def test_folder_layouts_give_subjects_and_genders(tmp_path, layout):
    samples = read_real(planted_set(tmp_path, subjects_per_class=3, images=2, layout=layout))
    assert len(samples) == 12
    assert {(s.subject, s.gender) for s in samples} == {(f"s{i:02d}", 0) for i in range(3)} | {(f"s{i}", 1) for i in range(100, 103)}


def test_csv_layout(tmp_path):
    planted_set(tmp_path, subjects_per_class=2, images=1)
    rows = ["path,gender,subject", "female/s00/0.png,female,a", "female/s01/0.png,F,b", "male/s100/0.png,1,c"]
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    assert [(s.gender, s.subject) for s in read_real(tmp_path / "set.csv")] == [(0, "a"), (0, "b"), (1, "c")]
    (tmp_path / "bad.csv").write_text("path,gender,subject\nfemale/s00/0.png,other,a\n")
    with pytest.raises(GenderDataError, match="bad.csv line 2: gender 'other'"):
        read_real(tmp_path / "bad.csv")
    (tmp_path / "out.csv").write_text("path,gender,subject\n../../etc/passwd,f,a\n")
    with pytest.raises(GenderDataError, match="outside"):
        read_real(tmp_path / "out.csv")


# ------------------------------------------------------------------------------------------------ hostile list
def test_hostile_empty_class_folder(tmp_path):
    planted_set(tmp_path, subjects_per_class=2, images=1)
    for path in (tmp_path / "male").rglob("*.png"):
        path.unlink()
    with pytest.raises(GenderDataError, match=r"male holds no images"):
        read_real(tmp_path)


def test_hostile_missing_class_folder_and_typo_path(tmp_path):
    (tmp_path / "female").mkdir()
    with pytest.raises(GenderDataError, match="no male/ folder"):
        read_real(tmp_path)
    with pytest.raises(GenderDataError, match=r"^--real .*nope does not exist$"):
        read_real(tmp_path / "nope")
    with pytest.raises(GenderDataError, match=r"^--synthetic .*nope does not exist$"):
        gender_data.read_corpus(tmp_path / "nope", 4)
    planted_set(tmp_path / "real", subjects_per_class=1, images=1)
    with pytest.raises(GenderDataError, match=r"^--synthetic .*real: .*given with --real\)$"):
        gender_data.read_corpus(tmp_path / "real", 4)


def test_hostile_one_subject_only_cannot_be_split(tmp_path):
    subjects = {"a": 0, "b": 1, "c": 1, "d": 1}
    with pytest.raises(GenderDataError, match=r"--real: 1 female subject \(a\); .* at least 3 per class"):
        split_subjects(subjects, 1, 1, 0, "--real")


def test_hostile_corrupt_image_is_named(tmp_path):
    planted_set(tmp_path, subjects_per_class=2, images=1)
    bad = tmp_path / "female" / "s00" / "0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    sample = next(s for s in read_real(tmp_path) if s.name == str(bad))
    with pytest.raises(GenderDataError, match=f"image {bad} cannot be read"):
        ImageCache(16).array(sample)


def test_hostile_symlink_out_of_the_root_is_refused(tmp_path):
    root = planted_set(tmp_path / "set", subjects_per_class=2, images=1)
    outside = tmp_path / "secret.png"
    Image.new("L", (8, 8)).save(outside)
    os.symlink(outside, root / "female" / "s00" / "link.png")
    with pytest.raises(GenderDataError, match="link.png leads outside"):
        read_real(root)
    os.unlink(root / "female" / "s00" / "link.png")
    os.symlink(tmp_path, root / "male" / "s999")
    with pytest.raises(GenderDataError, match="s999 leads outside"):
        read_real(root)


def test_hostile_mixed_sizes_and_modes_become_gray_squares(tmp_path):
    planted_set(tmp_path, subjects_per_class=2, images=1)
    Image.new("RGB", (40, 17), (255, 0, 0)).save(tmp_path / "female" / "s00" / "rgb.jpg")
    Image.new("I;16", (5, 9)).save(tmp_path / "female" / "s00" / "deep.png")
    Image.new("LA", (30, 30)).save(tmp_path / "male" / "s100" / "alpha.png")
    cache = ImageCache(16)
    x, y = cache.tensors(read_real(tmp_path))
    assert tuple(x.shape) == (7, 16, 16) and str(x.dtype) == "torch.uint8"


def test_hostile_subject_in_both_gender_folders(tmp_path):
    planted_set(tmp_path, subjects_per_class=2, images=1)
    (tmp_path / "male" / "s00").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "male" / "s00" / "0.png")
    with pytest.raises(GenderDataError, match="subject s00 appears as both female and male"):
        read_real(tmp_path)


def test_hostile_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    planted_set(tmp_path, subjects_per_class=2, images=1)
    monkeypatch.setattr(gender_data, "MAX_PIXELS", 24 * 24 - 1)
    sample = read_real(tmp_path)[0]
    with pytest.raises(GenderDataError, match=r"is 24x24, over the 575-pixel bound"):
        sample.load()


def test_hostile_file_without_a_subject_prefix(tmp_path):
    planted_set(tmp_path, subjects_per_class=2, images=1, layout="prefix")
    Image.new("L", (8, 8)).save(tmp_path / "male" / "nosubject.png")
    with pytest.raises(GenderDataError, match="nosubject.png has no subject id"):
        read_real(tmp_path)


# ------------------------------------------------------------------------------------------------ splits
@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.integers(0, 3), st.integers(0, 2), st.integers(0, 2**31))
def test_splits_are_subject_disjoint_and_cover_every_subject(females, males, test, val, seed):
    subjects = {f"f{i}": 0 for i in range(females)} | {f"m{i}": 1 for i in range(males)}
    if min(females, males) < test + val + 1:
        with pytest.raises(GenderDataError):
            split_subjects(subjects, test, val, seed)
        return
    split = split_subjects(subjects, test, val, seed)
    train, val_ids, test_ids = (set(split[k]) for k in ("train", "val", "test"))
    assert not (train & val_ids or train & test_ids or val_ids & test_ids)
    assert train | val_ids | test_ids == set(subjects)
    for gender in (0, 1):
        assert sum(subjects[s] == gender for s in test_ids) == test
        assert sum(subjects[s] == gender for s in val_ids) == val
        assert any(subjects[s] == gender for s in train)
    assert split == split_subjects(dict(reversed(list(subjects.items()))), test, val, seed)  # order-free, seeded


def test_frames_per_subject_are_capped_evenly(tmp_path):
    samples = read_real(planted_set(tmp_path, subjects_per_class=2, images=9, size=8))
    capped = cap_frames(samples, 3)
    assert len(capped) == 12
    assert [s.name.rsplit("/", 1)[1] for s in capped[:3]] == ["0.png", "4.png", "8.png"]


def test_metrics():
    m = metrics([0, 0, 0, 1], [0, 0, 1, 0])
    assert m["accuracy"] == 0.5 and m["recall_female"] == pytest.approx(2 / 3) and m["recall_male"] == 0
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)
    assert np.isnan(metrics([0, 0], [0, 1])["recall_male"])
