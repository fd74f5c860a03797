"""Shared fixtures. Everything is offline: nothing downloads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from thermvision_db.miniature import write_miniature


@pytest.fixture(scope="session")
def mini(tmp_path_factory):
    """The default miniature corpus (5 identities, 10 videos, 8 frames of 64x64), zips and folders."""
    return write_miniature(tmp_path_factory.mktemp("mini"), landmarks=True)


@pytest.fixture(scope="session")
def mini_zips(tmp_path_factory):
    """The same corpus as zips only: every member is read from inside the archives."""
    return write_miniature(tmp_path_factory.mktemp("mini_zips"), folders=False, landmarks=True)


@pytest.fixture(scope="session")
def hf_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))
