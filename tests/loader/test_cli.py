import subprocess
import sys

from PIL import Image

from thermvision_db.cli import main


def test_verify_reports_checksum_mismatch_and_placed_qc(mini, capsys):
    assert main(["verify", str(mini.root), "-q"]) == 1  # the miniature zips are not the released archives
    out = capsys.readouterr().out
    assert "MISMATCH" in out
    missing = sum(len(v) for v in mini.missing.values())
    multiple = sum(len(v) for v in mini.multiple.values())
    assert f"{missing} missing, {multiple} multiple" in out
    assert f"member table: {len(mini.members)} of 100 videos present" in out


def test_verify_without_checksums_passes(mini, capsys):
    assert main(["verify", str(mini.root), "--no-checksums", "-q"]) == 0


def test_preview_png_and_gif(mini, tmp_path):
    png = tmp_path / "sheet.png"
    assert main(["preview", str(mini.root), "--videos", "2", "--frames", "4", "--tile", "50", "--out", str(png)]) == 0
    assert Image.open(png).size == (4 * 50, 2 * 50)
    gif = tmp_path / "v.gif"
    assert main(["preview", str(mini.root), "--video", "F_01_S1", "--out", str(gif)]) == 0
    assert Image.open(gif).n_frames == mini.frames_per_video


def test_bad_data_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path), "--no-checksums"]) == 2
    assert "Male Subjects.zip" in capsys.readouterr().err


def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run([sys.executable, "-m", "thermvision_db", "demo", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[3/3]" in result.stdout
    for name in ("demo_frames.png", "demo_generated.png", "demo_generated.gif"):
        assert (tmp_path / name).stat().st_size > 0
    assert len(list((tmp_path / "generated" / "stills").glob("*.json"))) == 2
