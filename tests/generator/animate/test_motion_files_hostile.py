"""Motion files are input (docs/generator-hostile-inputs.md, 'Motion'): NaN, 0 frames, pickled objects."""

from __future__ import annotations

import numpy as np
import pytest

from generator.animate.liveportrait.template import MotionSequence
from generator.animate.motion.templates import load_template, save_template
from thermvision_db.errors import InputError


def _motion(frames: int = 3) -> MotionSequence:
    return MotionSequence(R=np.tile(np.eye(3, dtype=np.float32), (frames, 1, 1)), scale=np.ones((frames, 1)),
                          t=np.zeros((frames, 3)), name="m")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_rotations_are_refused_by_name(tmp_path, suffix, bad):
    path = save_template(_motion(), tmp_path / f"m{suffix}")
    assert len(load_template(path)) == 3  # the good file loads
    motion = _motion()
    motion.R[1, 0, 0] = bad
    path = tmp_path / f"bad{suffix}"
    arrays = {"R": motion.R, "scale": motion.scale, "t": motion.t}
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()}, str(path))
    with pytest.raises(InputError, match=r"R holds NaN or inf values \(frame 1\)"):
        load_template(path)


def test_a_zero_frame_template_is_refused(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, R=np.zeros((0, 3, 3), np.float32))
    with pytest.raises(InputError, match="0 frames"):
        load_template(path)


def test_a_template_holding_objects_is_refused_without_numpys_advice(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, R=np.array([object()] * 3, dtype=object))
    with pytest.raises(InputError) as err:
        load_template(path)
    assert "Python objects" in str(err.value) and "allow_pickle" not in str(err.value)


@pytest.mark.parametrize("junk", [b"", b"PK\x03\x04garbage", b"\x93NUMPY" + b"\xff" * 40])
def test_a_damaged_npz_is_refused_quoting_no_bytes(tmp_path, junk):
    path = tmp_path / "junk.npz"
    path.write_bytes(junk)
    with pytest.raises(InputError, match=r"junk\.npz: not a readable motion template \(\w+\)$"):
        load_template(path)


def test_a_library_entry_linking_out_of_its_folder_is_refused(tmp_path):
    from generator.animate.motion.library import ExpressionLibrary

    outside, folder = tmp_path / "outside", tmp_path / "library"
    outside.mkdir()
    folder.mkdir()
    frames = 4
    clip = MotionSequence(exp=np.random.default_rng(0).normal(size=(frames, 21, 3)), name="smile")
    save_template(clip, outside / "smile.npz")
    save_template(clip, folder / "real.npz")
    (folder / "smile.npz").symlink_to(outside / "smile.npz")
    (folder / "inside.npz").symlink_to(folder / "real.npz")
    with pytest.raises(InputError, match=r"smile\.npz \(smile\) is a link leaving its folder"):
        ExpressionLibrary.load({"smile": [folder / "smile.npz"]})
    assert ExpressionLibrary.load({"smile": [folder / "inside.npz"]}).count("smile") == 1  # a link inside is fine
