"""`video_decoder="torchcodec"`: the `video` column as a decoding `datasets.Video`, the Hub's convention.

torchcodec cannot run on the machines these tests run on (the PyPI wheels need CUDA's libnvrtc), so the wiring
is tested with a stand-in `torchcodec.decoders.VideoDecoder` that records what `datasets` asks of it; the
frames of real torchcodec against the project's decoder are compared by `ci_checks/torchcodec_parity.py` where
torchcodec works (a CUDA machine).
"""

from __future__ import annotations

import sys
import types

import datasets
import numpy as np
import pytest

from thermvision_db import load_dataset
from thermvision_db.errors import MissingExtraError
from thermvision_db.io.decode import read_frames, torchcodec_problem


class _StandInDecoder:
    """Indexable like torchcodec's VideoDecoder (frame i as a (C, H, W) array), backed by the project's PyAV path."""

    made: list[str] = []

    def __init__(self, source, **options):
        self.source, self.options = source, options
        self.metadata = types.SimpleNamespace(path=None)  # datasets writes the row's path here
        _StandInDecoder.made.append(source)

    def __getitem__(self, index: int) -> np.ndarray:
        return read_frames(self.source, [index])[0].transpose(2, 0, 1)


def _install_stand_in(monkeypatch) -> None:
    package, decoders = types.ModuleType("torchcodec"), types.ModuleType("torchcodec.decoders")
    decoders.VideoDecoder = _StandInDecoder
    package.decoders = decoders
    monkeypatch.setitem(sys.modules, "torchcodec", package)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", decoders)
    monkeypatch.setattr(datasets.config, "TORCHCODEC_AVAILABLE", True)
    _StandInDecoder.made = []


def test_torchcodec_rows_are_decoded_by_datasets_video(mini, hf_cache, monkeypatch):
    plain = load_dataset("thermvision_db", "videos", data_dir=mini.root, cache_dir=hf_cache, split_by="none",
                         split="train")
    _install_stand_in(monkeypatch)  # after the Arrow cache is written (datasets' writer imports more of torchcodec)
    hub = load_dataset("thermvision_db", "videos", data_dir=mini.root, cache_dir=hf_cache, split_by="none",
                       split="train", video_decoder="torchcodec")
    assert hub.features["video"] == datasets.Video() and plain.features["video"] == datasets.Video(decode=False)
    assert hub.cache_files == plain.cache_files  # one Arrow cache: the decoder is how rows are read, not stored
    row, stored = hub[0], plain[0]
    assert isinstance(row["video"], _StandInDecoder) and row["video"].source == stored["video"]["path"]
    assert np.array_equal(row["video"][5], read_frames(stored["video"]["path"], [5])[0].transpose(2, 0, 1))
    assert {k: v for k, v in row.items() if k != "video"} == {k: v for k, v in stored.items() if k != "video"}
    stream = load_dataset("thermvision_db", "videos", data_dir=mini.root, split_by="none", split="train",
                          streaming=True, video_decoder="torchcodec")
    assert stream.features["video"] == datasets.Video()


def test_torchcodec_that_cannot_load_is_refused_in_one_line_naming_the_cause(mini, hf_cache, monkeypatch):
    broken = types.ModuleType("torchcodec.decoders")

    def fail(name):
        raise OSError("libnvrtc.so.13: cannot open shared object file: No such file or directory")

    broken.__getattr__ = fail
    monkeypatch.setitem(sys.modules, "torchcodec", types.ModuleType("torchcodec"))
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", broken)
    assert torchcodec_problem() == "OSError: libnvrtc.so.13: cannot open shared object file: No such file or directory"
    with pytest.raises(MissingExtraError, match=r"needs a working torchcodec \(OSError: libnvrtc.so.13.*default "
                                                r"video_decoder='project'") as caught:
        load_dataset("thermvision_db", "videos", data_dir=mini.root, cache_dir=hf_cache, video_decoder="torchcodec")
    assert "\n" not in str(caught.value)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # not installed at all
    assert torchcodec_problem().startswith(("ImportError", "ModuleNotFoundError"))


def test_video_decoder_typos_and_frame_configurations_are_refused(mini, hf_cache):
    with pytest.raises(ValueError, match=r"video_decoder must be one of \('project', 'torchcodec'\), got 'pyav'"):
        load_dataset("thermvision_db", "videos", data_dir=mini.root, cache_dir=hf_cache, video_decoder="pyav")
    with pytest.raises(ValueError, match="is for the 'videos' and 'synthetic_videos' configurations, not 'frames'"):
        load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache, video_decoder="torchcodec")
