"""Shared fixtures. Everything is offline: nothing downloads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest

from thermvision_db.demo.miniature import write_miniature


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 16x16 gray -> 8-d embedding ONNX model: flatten, then `default_rng(0).normal(size=(256, 8))` as float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["embedding"])],
        "tiny_embedder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 8])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def private_hash_cache(tmp_path_factory):
    """Keep the sha256 cache out of the user's ~/.cache during tests (modules opt in with usefixtures)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THERMVISION_CACHE", str(tmp_path_factory.mktemp("hash_cache")))
        yield
