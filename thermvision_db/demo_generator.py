"""The demo's generator step: tiny random FLUX stills, animated by a tiny random LivePortrait, on the CPU.

Random weights make noise pictures, but every file, shape, sidecar and motion record is the real one, so a
newcomer sees the whole pipeline run before downloading any weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run(out: Path, identities: int = 2, frames: int = 24) -> str:
    from generator.liveportrait import LivePortraitConfig, LivePortraitNetworks, LivePortraitPipeline, write_animation
    from generator.motion import head_pose_sweep
    from generator.text_to_image import StillsGenerator, save_still
    from thermvision_db.visualize import contact_sheet, save_gif

    stills_dir = out / "generated" / "stills"
    generator = StillsGenerator.from_preset("tiny", device="cpu", height=64, width=64)
    stills = generator.generate(range(identities), run_seed=0, batch_size=identities, progress=False)
    for still in stills:
        save_still(still, stills_dir)
    pipe = LivePortraitPipeline(LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=0), device="cpu", progress=False)
    motion = head_pose_sweep(num_frames=frames)
    written = []
    for still in stills:
        source = pipe.prepare_source(np.asarray(still.image))
        written.append(write_animation(pipe, source, motion, out / "generated" / "animate", f"identity_{still.index:05d}", png=False))
    from thermvision_db.video import read_frames

    clip = read_frames(written[0]["mp4"])
    sheet = out / "demo_generated.png"
    contact_sheet([s.image for s in stills] + list(clip[:: max(1, frames // 6)]),
                  [f"still {s.index}" for s in stills] + [f"frame {i}" for i in range(0, frames, max(1, frames // 6))],
                  columns=4, tile=128).save(sheet)
    save_gif(list(clip), out / "demo_generated.gif", fps=12, size=128)
    return (f"{len(stills)} stills (tiny FLUX, random weights: noise by design) with sidecars in {stills_dir}; "
            f"{len(written)} head-pose animations of {frames} frames in {out / 'generated' / 'animate'}; picture: {sheet}")
