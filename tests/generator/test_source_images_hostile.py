"""Sources of any size and type (docs/generator-hostile-inputs.md, 'Sources')."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator.cli.animate import pad_to_even
from generator.preprocess import preprocess, scale_rule, to_gray


@given(st.integers(0, 255), st.integers(0, 255), st.sampled_from([1, 3, 4]))
def test_eight_bit_images_are_used_as_they_are_whatever_the_channels(low, high, channels):
    gray = np.array([[low, high], [high, low]], np.uint8)
    image = gray[..., None].repeat(channels, axis=2) if channels > 1 else gray
    if channels == 4:
        image[..., 3] = 7  # alpha is not a colour
    out = preprocess(image)
    assert out.dtype == np.uint8 and np.array_equal(out[..., 0], gray)  # no min-max stretch
    assert scale_rule(to_gray(image)) is None


def test_sixteen_bit_and_float_sources_are_rescaled_by_the_rule():
    for image in (np.array([[1000, 3000]], np.uint16), np.array([[20.5, 36.5]], np.float32),
                  np.array([[[1000] * 3, [3000] * 3]], np.uint16)):
        assert preprocess(image)[0, :, 0].tolist() == [0, 255]
        assert "min-max" in scale_rule(to_gray(image))


@pytest.mark.parametrize("size", [(151, 201), (150, 201), (151, 200), (150, 200)])
def test_odd_sizes_are_padded_to_even_and_recorded(size):
    import av

    image = np.random.default_rng(0).integers(0, 256, (*size, 3), np.uint8)
    out, note = pad_to_even(image)
    assert out.shape[0] % 2 == 0 and out.shape[1] % 2 == 0
    assert np.array_equal(out[: size[0], : size[1]], image)  # the source is untouched, only edges are added
    assert (note is None) == (size == (150, 200))
    codec = av.CodecContext.create("libx264", "w")  # the encoder's own check: it opens at the padded size
    codec.width, codec.height, codec.pix_fmt = out.shape[1], out.shape[0], "yuv420p"
    codec.open()


def test_an_odd_sized_still_with_a_source_box_animates_and_records_the_padding(tmp_path, capsys):
    """The rebuilt case: a 201x151 still with --source-box crashed in the H.264 encoder after animating."""
    import json

    import av
    from PIL import Image

    from thermvision_db.cli.main import main

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(60, 200, (151, 201), np.uint8)).save(tmp_path / "odd.png")
    assert main(["generate", "--stage", "animate", "--source", str(tmp_path / "odd.png"), "--driving", "head_pose",
                 "--frames", "3", "--out", str(tmp_path / "out"), "--chunk-size", "3",
                 "--source-box", "40,20,160,140"]) == 0
    folder = tmp_path / "out" / "animate" / "odd"
    record = json.loads((folder / "source.json").read_text())
    assert record["size"] == [201, 151] and record["scale_rule"] is None
    assert record["padding"].startswith("padded 201x151 -> ") and "padded 201x151" in capsys.readouterr().out
    with av.open(str(folder / "head_pose.mp4")) as container:  # FFmpeg's own reading of what was written
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="gray") for f in container.decode(stream)]
    assert len(frames) == 3 and frames[0].shape[0] % 2 == 0 and frames[0].shape[1] % 2 == 0
    assert len(list((folder / "head_pose_frames").glob("*.png"))) == 3
