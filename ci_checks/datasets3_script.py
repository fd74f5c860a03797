"""Check the root builder script under datasets < 4 (run by .ci/run in a venv with datasets==3.6.0).

Loads the miniature corpus through `datasets.load_dataset("thermvision_db.py", ..., trust_remote_code=True)`
and compares boxes with the ones the miniature placed.
"""

import sys
import tempfile
from pathlib import Path

import datasets
import numpy as np

from thermvision_db.demo.miniature import write_miniature

ROOT = Path(__file__).resolve().parent.parent
assert datasets.__version__.startswith("3."), datasets.__version__

with tempfile.TemporaryDirectory() as tmp:
    corpus = write_miniature(Path(tmp) / "mini", identities=["F_01", "M_24"], frames_per_video=4)
    ds = datasets.load_dataset(str(ROOT / "thermvision_db.py"), "frames", data_dir=str(corpus.root), split="train",
                               cache_dir=str(Path(tmp) / "cache"), trust_remote_code=True, split_by="none")
    assert ds.num_rows == 16, ds.num_rows
    checked = 0
    for row in ds:
        truth = corpus.boxes[row["video_id"]][row["frame_index"]]
        if row["faces"]:
            assert np.allclose(row["faces"][0]["bbox"], truth, atol=1e-3), (row["video_id"], row["frame_index"])
            checked += 1
    videos = datasets.load_dataset(str(ROOT / "thermvision_db.py"), "videos", data_dir=str(corpus.root), split="test",
                                   cache_dir=str(Path(tmp) / "cache"), trust_remote_code=True)
    assert videos.num_rows == 2 and videos[0]["num_frames"] == 4
print(f"datasets {datasets.__version__}: root script loaded {ds.num_rows} frames, {checked} boxes checked, {videos.num_rows} videos")
print("2 passed, 0 failed")
sys.exit(0)
