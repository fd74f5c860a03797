import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from thermvision_db.cli.main import main
from tests.support.broken_torchvision import plant_broken_torchvision
from thermvision_db.tools.pictures import legend


def test_verify_recognises_the_miniature_and_still_catches_a_changed_zip(mini, capsys, tmp_path):
    assert main(["verify", str(mini.root), "-q"]) == 0  # the miniature's zips match the sha256 it recorded
    out = capsys.readouterr().out
    assert out.count("the miniature corpus") == 2 and "MISMATCH" not in out
    missing = sum(len(v) for v in mini.missing.values())
    multiple = sum(len(v) for v in mini.multiple.values())
    assert f"{missing} missing, {multiple} multiple" in out
    assert f"member table: {len(mini.members)} of 100 videos present" in out
    copy = tmp_path / "copy"
    shutil.copytree(mini.root, copy)
    with open(copy / "Male Subjects.zip", "ab") as handle:  # a changed archive beside the marker: still a mismatch
        handle.write(b"\0")
    assert main(["verify", str(copy), "-q"]) == 1
    out = capsys.readouterr().out
    assert "Male Subjects.zip" in out.split("MISMATCH")[0] and out.count("the miniature corpus") == 1


def test_miniature_command_writes_the_example_folder_and_refuses_a_real_one(tmp_path, capsys):
    from thermvision_db import load_dataset

    target = tmp_path / "ThermVision-DB"
    assert main(["miniature", str(target)]) == 0
    assert "5 identities" in capsys.readouterr().out
    frames = load_dataset("thermvision_db", "frames", data_dir=str(target), split_by="none", split="train",
                          cache_dir=str(tmp_path / "hf"))
    assert frames.num_rows == 10 * 8 and len(frames[0]["faces"][0]["landmarks"]) == 54
    assert main(["miniature", str(target)]) == 0  # an earlier miniature may be rewritten
    real = tmp_path / "release"
    real.mkdir()
    (real / "Female Subjects.zip").write_bytes(b"PK")  # a folder with data of its own is never overwritten
    assert main(["miniature", str(real)]) == 2
    assert "not empty" in capsys.readouterr().err and (real / "Female Subjects.zip").read_bytes() == b"PK"


def test_preview_names_a_video_absent_from_this_copy(mini, tmp_path, capsys):
    assert main(["preview", str(mini.root), "--video", "F_08_S1", "--out", str(tmp_path / "x.png")]) == 2
    assert "in the member table but not in this copy" in capsys.readouterr().err
    assert main(["preview", str(mini.root), "--video", "F_99_S1", "--out", str(tmp_path / "x.png")]) == 2
    assert "not a ThermVision-DB video" in capsys.readouterr().err


def test_verify_without_checksums_passes(mini, capsys):
    assert main(["verify", str(mini.root), "--no-checksums", "-q"]) == 0


def test_preview_png_and_gif(mini, tmp_path):
    png = tmp_path / "sheet.png"
    assert main(["preview", str(mini.root), "--videos", "2", "--frames", "4", "--tile", "50", "--out", str(png)]) == 0
    sheet = Image.open(png).convert("RGB")
    strip = legend(4 * 50, sources=["detector"])  # the colour legend under the 2 x 4 frames
    assert sheet.size == (4 * 50, 2 * 50 + strip.height)
    assert np.array_equal(np.asarray(sheet)[2 * 50:], np.asarray(strip))
    gif = tmp_path / "v.gif"
    assert main(["preview", str(mini.root), "--video", "F_01_S1", "--out", str(gif)]) == 0
    assert Image.open(gif).n_frames == mini.frames_per_video


def test_bad_data_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path), "--no-checksums"]) == 2
    assert "Male Subjects.zip" in capsys.readouterr().err


def test_demo_runs_end_to_end(tmp_path):
    # beside a torchvision that cannot import (pip's CUDA wheel next to a CPU torch): the demo says so and runs
    site = plant_broken_torchvision(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).resolve().parents[2])])}
    result = subprocess.run([sys.executable, "-m", "thermvision_db", "demo", "--out", str(tmp_path / "demo")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[3/3]" in result.stdout
    notes = [line for line in (result.stdout + result.stderr).splitlines() if "torchvision 0.28.0 is installed" in line]
    assert len(notes) == 1 and "does not import" in notes[0], result.stdout[-2000:]
    tmp_path = tmp_path / "demo"
    for name in ("demo_frames.png", "demo_generated.png", "demo_generated.gif"):
        assert (tmp_path / name).stat().st_size > 0
    assert len(list((tmp_path / "generated" / "stills").glob("*.json"))) == 2
    # only the stills it uses: two identities are one FLUX batch of two, not the pipeline's default block of eight
    run = json.loads((tmp_path / "generated" / "run.json").read_text())
    assert run["settings"]["still_batch"] == 2
    # the GIF shows the propagated boxes (yellow) and landmarks (red) on the frames of the head-pose sweep
    gif = Image.open(tmp_path / "demo_generated.gif")
    for index in (0, gif.n_frames - 1):
        gif.seek(index)
        r, g, b = np.asarray(gif.convert("RGB")).astype(int).transpose(2, 0, 1)  # GIF palette: near the colours
        assert ((r > 200) & (g > 200) & (b < 90)).sum() > 100, index
        assert ((r > 200) & (g < 100) & (b < 100)).sum() > 50, index
    # the tiny preset's labels look like a face: positive scale, a neutral first frame keeps the template
    # landmarks upright where the prior placed them, a turned head moves them
    from generator.annotate.labels import template_still_labels

    identity = tmp_path / "generated" / "identities" / "S000000"
    frames = json.loads((identity / "head_pose.labels.json").read_text())["frames"]
    with np.load(identity / "head_pose.motion.npz") as motion:
        assert (motion["scale"] > 0).all()  # random heads gave negative scales: every label mirrored
    width, height = Image.open(identity / "head_pose_frames" / "00000.png").size
    first = np.asarray(frames[0]["faces"][0]["landmarks"])
    assert max(abs(v) for v in frames[0]["head_pose"].values()) < 1e-3  # the sweep starts neutral
    assert np.abs(first - template_still_labels(width, height).landmarks).max() < 0.05 * width
    assert first[8, 1] > first[0, 1] and first[8, 1] > first[27, 1]  # chin below the ears and the nose bridge
    turned = max(frames, key=lambda f: abs(f["head_pose"]["yaw"]))
    assert abs(turned["head_pose"]["yaw"]) > 20
    assert np.abs(np.asarray(turned["faces"][0]["landmarks"]) - first).mean() > 0.01 * width  # a yaw moves them
    # both sheets end in the colour legend
    for name, sources in (("demo_frames.png", ["detector", "interpolated"]), ("demo_generated.png", ["propagated"])):
        sheet = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        strip = np.asarray(legend(sheet.shape[1], sources=sources))
        assert np.array_equal(sheet[-strip.shape[0]:], strip), name


def test_help_does_not_wait_for_torch():
    """`thermvision-db --help` (and each command's parser) builds without importing torch: 3.7 s became 1.3 s here."""
    import subprocess
    import sys

    code = ("import sys; from thermvision_db.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]", out
