"""`thermvision-db annotate`: labels written in the release's layout, read back with the loader's own parser and
equal to the detector's boxes and the predictor's points; the models named by sha256 in annotations.json."""

import hashlib
import json

import av
import numpy as np
import pytest
from PIL import Image

from generator.annotate.dlib_models import DlibFaceDetector, DlibLandmarker54
from tests.generator.annotate.dlib_training import thermal_face, train_detector, train_predictor
from thermvision_db.cli.main import main
from thermvision_db.schema.labels import parse_yolo_text

SIZE = (450, 600)
BOXES = [(250.0, 150.0, 120.0, 120.0), None, (100.0, 200.0, 140.0, 140.0)]  # frame 1 has no face


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dlib_cli")
    return train_detector(folder / "face.svm"), train_predictor(folder / "sftl54.dat")


def _frames():
    return [thermal_face(SIZE, box) if box else np.full(SIZE, 40, np.uint8) for box in BOXES]


def test_folder_of_frames_is_labelled_as_the_release(models, tmp_path, capsys):
    svm, dat = models
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate(_frames()):
        Image.fromarray(np.stack([frame] * 3, -1)).save(frames_dir / f"frame_{i:04d}.png")  # 3-channel gray
    out = tmp_path / "out"
    assert main(["annotate", str(frames_dir), "--label-detector", str(svm), "--label-landmarker", str(dat),
                 "--out", str(out)]) == 0
    assert "labelled 2 of 3 frames" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["frame_0000.txt", "frame_0002.txt"]
    detector, landmarker = DlibFaceDetector(svm), DlibLandmarker54(dat)
    for i in (0, 2):
        frame = np.stack([_frames()[i]] * 3, -1)
        labels = parse_yolo_text((out / "labels" / f"frame_{i:04d}.txt").read_text(), SIZE[1], SIZE[0])
        faces = detector(frame)
        assert labels.qc in ("ok", "multiple") and len(labels.faces) == len(faces)
        # %g keeps 6 significant digits: 1e-6 of 600 px
        assert np.allclose(labels.faces[0].bbox, faces[0].box_xywh, atol=2e-3)
        assert np.allclose(labels.faces[0].landmarks, landmarker(frame, faces[0].box_xywh), atol=2e-3)
    manifest = json.loads((out / "annotations.json").read_text())
    assert manifest["missing"] == ["frame_0001"]
    assert manifest["detector"]["sha256"] == hashlib.sha256(svm.read_bytes()).hexdigest()
    assert manifest["landmarker"]["kind"] == "dlib shape_predictor"


def test_video_frames_are_extracted_and_labelled(models, tmp_path):
    svm, _ = models
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = SIZE[1], SIZE[0], "yuv444p"
        for frame in _frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.stack([frame] * 3, -1), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    assert main(["annotate", str(video), "--label-detector", str(svm), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "Extracted_frames").iterdir()) == [f"frame_{i:04d}.png" for i in range(3)]
    extracted = np.asarray(Image.open(out / "Extracted_frames" / "frame_0000.png"))
    faces = DlibFaceDetector(svm)(extracted)
    labels = parse_yolo_text((out / "labels" / "frame_0000.txt").read_text(), SIZE[1], SIZE[0])
    assert np.allclose(labels.faces[0].bbox, faces[0].box_xywh, atol=2e-3) and labels.faces[0].landmarks is None


@pytest.mark.parametrize("case", ["missing_source", "wrong_model"])
def test_errors_are_one_line_rc_2(models, tmp_path, capsys, case):
    svm, dat = models
    args = [str(tmp_path / "nothing"), "--label-detector", str(svm)] if case == "missing_source" else \
        [str(tmp_path), "--label-detector", str(dat)]
    assert main(["annotate", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
