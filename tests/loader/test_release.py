import zipfile
from collections import Counter

import pytest

from thermvision_db.schema.members import IDENTITIES, MEMBERS
from thermvision_db.sources.base import SourceError
from thermvision_db.sources.hub import resolve_data_dir
from thermvision_db.sources.local import ReleaseSource
from thermvision_db.schema.splits import RELEASED_SPLITS, assign, released_split, synthetic_split


def test_member_table_matches_the_release():
    assert len(MEMBERS) == 100 and len(IDENTITIES) == 50
    assert sum(m.num_frames for m in MEMBERS) == 30_200
    assert Counter(i[0] for i in IDENTITIES) == {"F": 25, "M": 25}
    assert Counter(m.identity for m in MEMBERS) == {i: 2 for i in IDENTITIES}
    assert {m.num_frames for m in MEMBERS if m.set == 1} == {354} and {m.num_frames for m in MEMBERS if m.set == 2} == {250}
    assert sum(m.video_member.endswith("-n.mp4") for m in MEMBERS) == 8
    male_s1 = [m for m in MEMBERS if m.gender == "M" and m.set == 1]
    assert all("Set 1 Cropped  Headpose Variations/" in m.video_member and "/Face Animations/" in m.video_member for m in male_s1)
    lower = sorted(m.identity for m in MEMBERS if m.video_member.rsplit("/", 1)[1].startswith("subject"))
    assert lower == ["F_01", "F_02", "F_03"]
    assert any("Subject-23-n/" in m.video_member for m in MEMBERS)


def test_fixed_splits_are_identity_disjoint_and_gender_balanced():
    groups = assign(IDENTITIES)
    assert [len(groups[s]) for s in ("train", "validation", "test")] == [38, 6, 6]
    assert set(groups["train"]).isdisjoint(groups["validation"]) and set(groups["train"]).isdisjoint(groups["test"])
    for split, ids in groups.items():
        genders = Counter(i[0] for i in ids)
        assert genders["F"] == genders["M"], split
    assert all(released_split(i) == s for s, ids in RELEASED_SPLITS.items() for i in ids)
    assert assign(IDENTITIES, "none") == {"train": IDENTITIES}
    with pytest.raises(ValueError, match="split_by"):
        assign(IDENTITIES, "video")


def test_synthetic_split_is_balanced_per_block_of_50():
    splits = [synthetic_split(i) for i in range(50)]
    for split, count in (("train", 38), ("validation", 6), ("test", 6)):
        members = [i for i, s in enumerate(splits) if s == split]
        assert len(members) == count
        assert sum(i % 2 for i in members) == count // 2  # alternating genders


def test_sources_read_the_same_bytes_from_zip_and_folder(mini, mini_zips):
    folder, zipped = ReleaseSource(mini.root), ReleaseSource(mini_zips.root)
    member = mini.members[0]
    assert folder.local_path(member.gender, member.video_member) is not None
    assert zipped.local_path(member.gender, member.video_member) is None
    assert folder.read(member.gender, member.label_txt(1)) == zipped.read(member.gender, member.label_txt(1))
    assert [m.video_id for m in zipped.present_members()] == [m.video_id for m in mini.members]


def test_truncated_zip_gives_a_clear_error(tmp_path, mini_zips):
    data = (mini_zips.root / "Female Subjects.zip").read_bytes()
    (tmp_path / "Female Subjects.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="Female Subjects.zip.*truncated"):
        ReleaseSource(tmp_path).present_members()


def test_empty_folder_and_missing_folder(tmp_path):
    with pytest.raises(SourceError, match="Male Subjects.zip"):
        ReleaseSource(tmp_path)
    with pytest.raises(SourceError, match="not a folder"):
        ReleaseSource(tmp_path / "nope")


def test_zip_with_foreign_prefix_and_traversal_names_is_read_in_place(tmp_path, mini_zips):
    # members stored under an extra top folder still resolve; a '../' member is never written anywhere
    with zipfile.ZipFile(mini_zips.root / "Male Subjects.zip") as src, \
            zipfile.ZipFile(tmp_path / "Male Subjects.zip", "w") as dst:
        for name in src.namelist():
            dst.writestr("export/" + name, src.read(name))
        dst.writestr("../../evil.txt", b"x")
    source = ReleaseSource(tmp_path)
    assert {m.identity for m in source.present_members()} == {"M_10", "M_24"}
    assert not (tmp_path.parent / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_no_data_offline_says_what_to_pass(monkeypatch):
    monkeypatch.delenv("THERMVISION_DB_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError) as err:
        resolve_data_dir(None)
    assert "data_dir" in str(err.value) and "THERMVISION_DB_DIR" in str(err.value)


def test_env_variable_is_the_second_source(monkeypatch, tmp_path):
    monkeypatch.setenv("THERMVISION_DB_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"
