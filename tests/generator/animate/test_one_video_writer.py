"""`generate --stage animate` and the corpus write an animation's files through one writer: same bytes."""

from types import SimpleNamespace

import numpy as np
import torch

from generator.animate.liveportrait.output import write_animation
from generator.corpus.writers import VideoSpec, WriterPool


class _FixedFrames:
    """Stands in for the animator: known gray frames (3 equal channels, as the gray animator returns them)."""

    def __init__(self, frames):
        self.frames = frames

    def driving_keypoints(self, source, motion, options):
        n = len(self.frames)
        return {"yaw": torch.zeros(n), "pitch": torch.zeros(n), "roll": torch.zeros(n),
                "scale": torch.ones(n, 1), "t": torch.zeros(n, 3)}

    def iter_frames(self, source, motion, options, chunk_size=None, keypoints=None):
        yield from self.frames


def test_animate_stage_and_corpus_writer_give_identical_files(tmp_path):
    rng = np.random.default_rng(3)
    gray = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(5)]
    frames = [np.repeat(g[..., None], 3, axis=2) for g in gray]
    paths = write_animation(_FixedFrames(frames), None, SimpleNamespace(fps=30.0), tmp_path / "stage", "clip")

    corpus = tmp_path / "corpus"
    with WriterPool(processes=1) as pool:
        job = pool.open(VideoSpec(mp4=str(corpus / "clip.mp4"), fps=30.0, png_dir=str(corpus / "clip_frames")))
        for frame in frames:
            job.write(frame)
        job.close()
        job.result()

    assert paths["mp4"].read_bytes() == (corpus / "clip.mp4").read_bytes()
    stage_pngs = sorted(paths["frames"].iterdir())
    assert [p.name for p in stage_pngs] == [f"{i:05d}.png" for i in range(5)]
    assert [p.read_bytes() for p in stage_pngs] == [(corpus / "clip_frames" / p.name).read_bytes() for p in stage_pngs]
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(stage_pngs[2])), gray[2])  # one channel, lossless
