"""Hostile files for every reader on the generator side: LivePortrait `.pth` (torch.load weights_only), safetensors
(LivePortrait, LoRA, FLUX single file, motion templates), ONNX models, LoRA files, `.pkl` motion templates.

Each hostile file is built here the way an attacker would write it. Each test asserts that nothing it carries ran
(a marker file the payload would create never appears) and that the error names the file and the cause.
"""

import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from generator.animate import motion as motions
from generator.animate.liveportrait.checkpoint import CheckpointError, read_tensors
from generator.annotate.onnx_models import ModelIOError, YoloFaceDetector
from generator.evaluate.frames import EvaluationError
from generator.evaluate.identity import OnnxEmbedder
from generator.stills.lora import LoraError, load_lora
from generator.stills.tiny_flux import build_tiny_flux
from generator.weights import UnsafeWeightsError, check_safetensors


class _Payload:
    """Pickles as a call of `exec` on code that creates the marker file: what torch.save / pickle.dump write for it."""

    def __init__(self, marker):
        self.code = f"open({str(marker)!r}, 'w').write('ran')"

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.fixture()
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "a hostile file ran code"


def _torch_pth(path, marker, legacy=False):
    torch.save({"first.conv.weight": torch.zeros(2, 2), "evil": _Payload(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


def _raw_pickle(path, marker):
    path.write_bytes(pickle.dumps({"evil": _Payload(marker)}, protocol=4))
    return path


def _header_bomb(path, claimed=10 * 2**30):
    """A safetensors file whose first 8 bytes claim a 10 GB JSON header (the reader would try to allocate it)."""
    path.write_bytes(struct.pack("<Q", claimed) + b'{"__metadata__": {}}')
    return path


def _offsets_past_end(path):
    """A well-formed header whose tensor claims bytes the file does not have."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1024, 1024], "data_offsets": [0, 4 * 1024 * 1024]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    return path


# ---------------------------------------------------------------------------------------------- .pth checkpoints


@pytest.mark.parametrize("build", [
    lambda p, m: _torch_pth(p, m),
    lambda p, m: _torch_pth(p, m, legacy=True),
    lambda p, m: _raw_pickle(p, m),
])
def test_liveportrait_pth_with_a_code_payload_is_refused(tmp_path, marker, build):
    path = build(tmp_path / "appearance_feature_extractor.pth", marker)
    with pytest.raises(CheckpointError, match=r"appearance_feature_extractor\.pth could not be loaded with "
                                              r"torch\.load\(weights_only=True\).*: refused (Unsupported global: GLOBAL "
                                              r"(builtins\.)?exec|Unsupported operand \d+)$") as err:
        read_tensors(path)
    assert "weights_only` set to `False`" not in str(err.value)  # torch's advice to run the file is not relayed


def test_liveportrait_folder_with_a_hostile_pth_refuses_before_any_network_is_built(tmp_path, marker):
    from generator.animate.liveportrait.config import LivePortraitConfig
    from generator.animate.liveportrait.model import LivePortraitNetworks

    folder = LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=0).save_pretrained(
        tmp_path / "lp", layout="upstream")
    _torch_pth(folder / "warping_module.pth", marker)
    with pytest.raises(CheckpointError, match=r"warping_module\.pth could not be loaded"):
        LivePortraitNetworks.from_pretrained(folder)


def test_pth_zip_with_a_member_outside_the_archive_root_extracts_nothing(tmp_path, marker):
    """torch reads zip members in memory; a `../` member name must not be written anywhere."""
    path = tmp_path / "lp" / "motion_extractor.pth"
    path.parent.mkdir()
    _torch_pth(path, marker)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("../../escaped.txt", "x")
    with pytest.raises(CheckpointError, match=r"motion_extractor\.pth could not be loaded"):
        read_tensors(path)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


# ---------------------------------------------------------------------------------------------- safetensors


@pytest.mark.parametrize("load,name,error,cause", [
    (lambda p: read_tensors(p), "spade_generator.safetensors", CheckpointError, r"not a readable \.safetensors"),
    (lambda p: load_lora(build_tiny_flux(), p), "thermal.safetensors", UnsafeWeightsError,
     r"bad header length: its header would be longer than the file"),
    (lambda p: motions.load_motion(p), "expressions.safetensors", UnsafeWeightsError,
     r"bad header length: its header would be longer than the file"),
    (lambda p: check_safetensors(p, what="FLUX transformer checkpoint"), "flux1-dev.safetensors",
     UnsafeWeightsError, r"bad header length"),
])
def test_safetensors_header_claiming_10_gb_is_refused_clearly(tmp_path, load, name, error, cause):
    path = _header_bomb(tmp_path / name)
    with pytest.raises(error, match=rf"{name.replace('.', '[.]')}.*{cause}") as err:
        load(path)
    assert "motion template" in str(err.value) or name != "expressions.safetensors"


def test_motion_template_error_is_the_weight_loaders_error_not_a_raw_safetensor_error(tmp_path):
    path = _header_bomb(tmp_path / "template.safetensors")
    with pytest.raises(UnsafeWeightsError) as from_template:
        motions.load_motion(path)
    with pytest.raises(UnsafeWeightsError) as from_checker:
        check_safetensors(path, what="motion template")
    assert str(from_template.value) == str(from_checker.value)


@pytest.mark.parametrize("load,name,error", [
    (lambda p: read_tensors(p), "warping_module.safetensors", CheckpointError),
    (lambda p: load_lora(build_tiny_flux(), p), "thermal.safetensors", LoraError),
    (lambda p: motions.load_motion(p), "template.safetensors", ValueError),
])
def test_safetensors_whose_tensor_runs_past_the_end_is_refused(tmp_path, load, name, error):
    path = _offsets_past_end(tmp_path / name)
    with pytest.raises(error, match=rf"{name.replace('.', '[.]')}.*(readable|read|invalid|Invalid|offset)"):
        load(path)


@pytest.mark.parametrize("load,name,error,cause", [
    (lambda p: read_tensors(p), "motion_extractor.safetensors", CheckpointError, "not a readable"),
    (lambda p: load_lora(build_tiny_flux(), p), "thermal.safetensors", UnsafeWeightsError, "not a valid safetensors"),
    (lambda p: motions.load_motion(p), "template.safetensors", UnsafeWeightsError, "not a valid safetensors"),
])
def test_a_pickle_named_safetensors_is_never_unpickled(tmp_path, marker, load, name, error, cause):
    path = _raw_pickle(tmp_path / name, marker)
    with pytest.raises(error, match=rf"{name.replace('.', '[.]')}.*{cause}"):
        load(path)


# ---------------------------------------------------------------------------------------------- LoRA files


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin", ".pth"])
def test_pickled_lora_is_refused_unread(tmp_path, marker, suffix):
    path = _torch_pth(tmp_path / f"thermal{suffix}", marker)
    with pytest.raises(UnsafeWeightsError, match=rf"thermal\{suffix} is not a \.safetensors file.*can run code"):
        load_lora(build_tiny_flux(), path)


def test_lora_with_a_non_table_header_is_refused(tmp_path):
    header = b'["not", "a", "table"]'
    path = tmp_path / "list.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(UnsafeWeightsError, match=r"list\.safetensors is not a valid safetensors file \(header is not "
                                                 r"a table\)"):
        load_lora(build_tiny_flux(), path)


# ---------------------------------------------------------------------------------------------- .pkl templates


def test_pkl_motion_template_with_a_reduce_payload_is_refused(tmp_path, marker):
    path = tmp_path / "d6.pkl"
    path.write_bytes(pickle.dumps({"n_frames": 1, "motion": [_Payload(marker)]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"d6\.pkl: refused global (__builtin__|builtins)\.exec"):
        motions.load_motion(path)


# ---------------------------------------------------------------------------------------------- ONNX models


def _onnx_with_external_weight(path, location):
    """A valid graph whose weight lives in an external file at `location` (ONNX external-data format)."""
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[256, 8], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(256 * 8 * 4))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["e"])],
        "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["N", 8])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _secret(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-" * 1000)
    return secret


@pytest.mark.parametrize("location", ["../secret.txt", "ABSOLUTE", "link.bin"])
def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    secret = _secret(tmp_path)
    folder = tmp_path / "models"
    folder.mkdir()
    if location == "ABSOLUTE":
        location = str(secret)
    if location == "link.bin":
        os.symlink(secret, folder / "link.bin")
    path = _onnx_with_external_weight(folder / "embedder.onnx", location)
    with pytest.raises(EvaluationError, match=r"embedder\.onnx.*External data path") as err:
        OnnxEmbedder(path)
    assert "TOPSECRET" not in str(err.value)


@pytest.mark.parametrize("load,error", [
    (lambda p: YoloFaceDetector(p), ModelIOError),
    (lambda p: OnnxEmbedder(p), EvaluationError),
    (lambda p: motions.OnnxFaceDetector(p), ValueError),
])
def test_onnx_readers_refuse_a_pickle_and_a_custom_op_naming_the_file(tmp_path, marker, load, error):
    pickled = _raw_pickle(tmp_path / "detector.onnx", marker)
    with pytest.raises(error, match=r"(cannot load .*)?detector\.onnx.*(cannot be loaded|Protobuf parsing failed)"):
        load(pickled)
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("PyOp", ["image"], ["out"], domain="ai.onnx.contrib")], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("ai.onnx.contrib", 1)])
    model.ir_version = 8
    custom = tmp_path / "custom_op.onnx"
    onnx.save(model, str(custom))
    with pytest.raises(error, match=r"custom_op\.onnx.*(PyOp|ai\.onnx\.contrib)"):
        load(custom)


def test_valid_files_still_load(tmp_path):
    """The refusals above are specific: a plain LivePortrait safetensors and a numpy template still load."""
    from safetensors.torch import save_file

    save_file({"first.conv.weight": torch.ones(2, 3, 3, 3)}, str(tmp_path / "ok.safetensors"))
    assert torch.equal(read_tensors(tmp_path / "ok.safetensors")["first.conv.weight"], torch.ones(2, 3, 3, 3))
    template = motions.head_pose_sweep(3)
    from generator.animate.motion.templates import save_template

    loaded = motions.load_motion(save_template(template, tmp_path / "sweep.safetensors"))
    assert np.array_equal(loaded.R, template.R)


def test_fid_inception_weights_with_a_payload_are_refused_before_torch_load(tmp_path, marker):
    from generator.evaluate.realism import RealismUnavailable, resolve_inception_weights

    path = _torch_pth(tmp_path / "weights-inception-2015-12-05-6726825d.pth", marker)
    with pytest.raises(RealismUnavailable, match=r"weights-inception-2015-12-05-6726825d\.pth is not the FID "
                                                 r"Inception weights file .*sha256"):
        resolve_inception_weights(path, download=False)
