"""The cache key covers every module of the package, and one load builds the generation settings once."""

import shutil

import pytest

from thermvision_db.hf import cache_key


@pytest.fixture()
def package_copy(tmp_path, monkeypatch):
    copy = tmp_path / "thermvision_db"
    shutil.copytree(cache_key.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache_key, "PACKAGE", copy)
    return copy


@pytest.mark.parametrize("relative", ["tools/qc.py", "io/video_writer.py", "tools/label_names.py", "schema/rows.py",
                                      "data/members.tsv"])
def test_a_change_in_any_module_or_the_member_table_changes_the_key(package_copy, relative):
    before = cache_key.loader_code_hash()
    assert cache_key.loader_code_hash() == before  # stable while nothing changes
    with open(package_copy / relative, "a") as handle:
        handle.write("\n# edited\n")
    assert cache_key.loader_code_hash() != before


def test_a_new_module_changes_the_key(package_copy):
    before = cache_key.loader_code_hash()
    (package_copy / "tools" / "new_tool.py").write_text("X = 1\n")
    assert cache_key.loader_code_hash() != before


def test_one_synthetic_load_builds_the_settings_and_fingerprint_once(tmp_path, monkeypatch):
    from generator.corpus import settings as settings_module
    from thermvision_db import load_dataset
    from thermvision_db.hf import door

    counts = {"settings": 0, "fingerprint": 0, "package_checks": 0}
    real_post_init, real_fingerprint = settings_module.GenerationSettings.__post_init__, \
        settings_module.GenerationSettings.fingerprint
    real_check = door.check_generator_package

    def post_init(self):
        counts["settings"] += 1
        real_post_init(self)

    def fingerprint(self):
        counts["fingerprint"] += 1
        return real_fingerprint(self)

    def check():
        counts["package_checks"] += 1
        real_check()

    monkeypatch.setattr(settings_module.GenerationSettings, "__post_init__", post_init)
    monkeypatch.setattr(settings_module.GenerationSettings, "fingerprint", fingerprint)
    monkeypatch.setattr(door, "check_generator_package", check)
    monkeypatch.setenv("THERMVISION_DB_GENERATED", str(tmp_path / "generated"))
    rows = load_dataset("thermvision_db", "synthetic", num_identities=1, motion="head_pose=3,expression=10",
                        cache_dir=str(tmp_path / "cache"), split="train", split_by="none", device="cpu",
                        generator_options={"still_steps": 2})
    assert len(rows) == 13  # 3 head-pose + 10 expression frames of identity S000000
    assert counts["settings"] == 1 and counts["fingerprint"] == 1
    assert counts["package_checks"] <= 2  # the settings, the generator's code hash


def test_a_streamed_load_lists_no_files_before_its_first_row_and_a_cached_one_does(tmp_path, monkeypatch):
    """Streaming reads no Arrow cache, so the local files are not fingerprinted up front (on the full release that
    is 60,400 files listed and hashed); the cached load keys its Arrow files on them, and both give the same rows."""
    import numpy as np

    from thermvision_db import load_dataset
    from thermvision_db.demo.miniature import write_miniature

    corpus = write_miniature(tmp_path / "mini", identities=1, frames_per_video=3, size=32, zips=False)
    calls = []
    real = cache_key.released_fingerprint
    monkeypatch.setattr(cache_key, "released_fingerprint", lambda *a: calls.append(a) or real(*a))
    options = dict(data_dir=str(corpus.root), split="train", split_by="none", cache_dir=str(tmp_path / "cache"))
    streamed = load_dataset("thermvision_db", "frames", streaming=True, **options)
    assert calls == []
    cached = load_dataset("thermvision_db", "frames", **options)
    assert len(calls) == 1
    rows = list(streamed)
    assert [r["frame_index"] for r in rows] == cached["frame_index"] and len(rows) == 6
    assert all(np.array_equal(np.asarray(a["image"]), np.asarray(b)) for a, b in zip(rows, cached["image"]))
    assert [r["identity"] for r in rows] == cached["identity"] and [r["faces"][0]["bbox"] for r in rows] == \
        [f[0]["bbox"] for f in cached["faces"]]
