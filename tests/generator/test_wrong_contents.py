"""Files with the wrong contents are refused by name: LivePortrait weights stored as int8/bool or holding NaN/inf,
embedding models that do not give one vector per image; 16-bit and float thermal sources are scaled by their own
range (never clipped to 255)."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from generator.animate.liveportrait.checkpoint import CheckpointError
from generator.animate.liveportrait.config import LivePortraitConfig
from generator.animate.liveportrait.model import LivePortraitNetworks
from generator.annotate.onnx_models import ModelIOError
from generator.evaluate.identity import OnnxEmbedder
from generator.preprocess import preprocess, scale_rule, to_gray


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    nets = LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=1)
    return nets.save_pretrained(tmp_path_factory.mktemp("lp"), layout="comfyui")


def _damage(folder, tmp_path, change):
    """A copy of the weights folder whose warping module has one tensor changed by `change`."""
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(folder, copy)
    path = copy / "warping_module.safetensors"
    sd = load_file(str(path))
    key = sorted(k for k in sd if k.endswith(".weight") and sd[k].dim() == 5)[0]
    sd[key] = change(sd[key])
    save_file(sd, str(path))
    return copy, key


@pytest.mark.parametrize("change,cause", [
    (lambda t: (t * 100).to(torch.int8), r"stored as int8; LivePortrait weights must be float"),
    (lambda t: t > 0, r"stored as bool"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), r"holds \d+ non-finite value\(s\) \(NaN or inf\)"),
    (lambda t: t.index_fill(0, torch.tensor([1]), float("inf")), r"non-finite"),
])
def test_liveportrait_weights_of_the_wrong_kind_are_refused_naming_the_tensor(weights, tmp_path, change, cause):
    folder, key = _damage(weights, tmp_path, change)
    with pytest.raises(CheckpointError, match=rf"warping_module\.safetensors.*{key.replace('.', '[.]')}.*{cause}"):
        LivePortraitNetworks.from_pretrained(folder)


def test_upstream_pth_with_int8_weights_is_refused_too(tmp_path):
    nets = LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=1)
    folder = nets.save_pretrained(tmp_path / "up", layout="upstream")
    path = folder / "appearance_feature_extractor.pth"
    sd = torch.load(path, weights_only=True)
    sd["first.conv.weight"] = sd["first.conv.weight"].to(torch.int8)
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"appearance_feature_extractor\.pth.*'first\.conv\.weight' is stored "
                                              r"as int8"):
        LivePortraitNetworks.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------- sources


@pytest.mark.parametrize("mode,values", [
    ("I;16", np.array([[1000, 2000], [3000, 9000]], np.uint16)),   # a 16-bit radiometric PNG
    ("F", np.array([[20.5, 30.5], [36.5, 37.0]], np.float32)),      # a float TIFF in degrees Celsius
])
def test_high_bit_depth_sources_are_scaled_by_their_own_range(tmp_path, mode, values):
    path = tmp_path / ("source.png" if mode == "I;16" else "source.tif")
    big = np.kron(values, np.ones((16, 16), values.dtype))
    Image.fromarray(big).save(path)
    with Image.open(path) as image:
        assert image.mode == mode
        raw = np.asarray(image)
    out = preprocess(raw)[..., 0]
    lo, hi = float(values.min()), float(values.max())
    expected = np.round((values.astype(np.float64) - lo) / (hi - lo) * 255).astype(np.uint8)
    assert np.array_equal(out[::16, ::16], expected)  # not a white (clipped) image
    assert len(np.unique(out)) == 4
    assert scale_rule(to_gray(raw)) == f"min-max of the {raw.dtype} source's own range {lo:g}..{hi:g} -> 0..255"
    assert scale_rule(np.zeros((2, 2), np.uint8)) is None


def test_a_source_with_nan_is_refused_naming_it():
    image = np.ones((8, 8), np.float32)
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match=r"hot\.tif holds NaN or inf values \(float32\)"):
        preprocess(image, source="hot.tif")


def test_animate_cli_prints_the_scaling_rule_of_a_16_bit_source(tmp_path, capsys):
    from thermvision_db.cli.main import main

    Image.fromarray(np.kron(np.array([[500, 700], [900, 1100]], np.uint16), np.ones((32, 32), np.uint16))).save(
        tmp_path / "id16.png")
    assert main(["generate", "--stage", "animate", "--source", str(tmp_path / "id16.png"), "--driving", "head_pose",
                 "--frames", "3", "--out", str(tmp_path / "out"), "--chunk-size", "3"]) == 0
    assert "id16.png: min-max of the uint16 source's own range 500..1100 -> 0..255" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- embeddings


def _embedder(path, op="feature_map"):
    """An ONNX model on (N, 1, 16, 16) images: a conv feature map, or (N, 8) vectors of zeros."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if op == "feature_map":  # (N, 4, 16, 16): a backbone exported without its pooling head
        w = np.random.default_rng(0).normal(size=(4, 1, 3, 3)).astype(np.float32)
        nodes = [helper.make_node("Conv", ["image", "w"], ["embedding"], pads=[1, 1, 1, 1])]
        inits = [numpy_helper.from_array(w, "w")]
    else:  # the right shape, but a zero weight matrix: every vector is 0
        nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
                 helper.make_node("MatMul", ["flat", "w"], ["embedding"])]
        inits = [numpy_helper.from_array(np.zeros((256, 8), np.float32), "w")]
    graph = helper.make_graph(nodes, "embedder", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                ["N", 1, 16, 16])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_embedding_model_that_gives_a_feature_map_is_refused(tmp_path):
    embed = OnnxEmbedder(_embedder(tmp_path / "backbone.onnx"))
    with pytest.raises(ModelIOError, match=r"backbone\.onnx: embedding model output 'embedding': expected one vector "
                                           r"per image.*got shape \(1, 4, 16, 16\)"):
        embed([np.zeros((20, 20), np.uint8)])


def test_embedding_model_that_gives_zeros_is_refused(tmp_path):
    embed = OnnxEmbedder(_embedder(tmp_path / "zeros.onnx", op="zeros"))
    with pytest.raises(ModelIOError, match=r"zeros\.onnx: .*all zeros"):
        embed([np.full((20, 20), 90, np.uint8)])


def test_a_good_embedding_model_still_gives_unit_vectors(tiny_model):
    vectors = OnnxEmbedder(tiny_model)([np.full((20, 20), 90, np.uint8), np.eye(20, dtype=np.uint8) * 200])
    assert vectors.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)


def test_evaluate_cli_with_a_feature_map_embedding_exits_2_naming_the_model(mini, tmp_path, hf_cache, capsys):
    from thermvision_db.cli.main import main

    model = _embedder(tmp_path / "backbone.onnx")
    code = main(["evaluate", str(mini.root), "--out", str(tmp_path / "r"), "--embedding", str(model),
                 "--fid-features", "none", "--cache-dir", hf_cache])
    assert code == 2
    assert "backbone.onnx: embedding model output 'embedding': expected one vector per image" in capsys.readouterr().err
