"""The paper's workflow noise and prompts through the stills generator (tiny preset, CPU emulation of CUDA noise)."""

import numpy as np
import pytest
import torch

from generator.stills.cuda_noise import xlabs_noise
from generator.stills.generate import StillsGenerator
from generator.stills.sampler import WORKFLOW_SEED, SamplerSettings

SMALL = dict(height=32, width=32, num_steps=4, cfg_start_step=1)
CLIP_TEXT, T5_TEXT = "Hihh quality thermal male and female face data.", "surprice face "

pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.fixture(scope="module")
def workflow():
    return StillsGenerator.from_preset("tiny", device="cpu", noise="workflow", template=CLIP_TEXT,
                                       template_t5=T5_TEXT, **SMALL)


def pixels(still) -> np.ndarray:
    return np.asarray(still.image, dtype=np.int16)


def bfl_pack(latent: torch.Tensor) -> torch.Tensor:
    """BFL's rearrange 'b c (h ph) (w pw) -> b (h w) (c ph pw)', written out independently of diffusers."""
    b, c, h, w = latent.shape
    return latent.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def test_workflow_noise_is_each_images_slice_of_the_xlabs_draw(workflow):
    stills = workflow.generate([0, 1, 2], run_seed=0, batch_size=3, progress=False)
    assert [s.sidecar["noise"]["seed"] for s in stills] == [WORKFLOW_SEED, WORKFLOW_SEED, WORKFLOW_SEED + 1]
    assert [s.sidecar["noise"]["position"] for s in stills] == [0, 1, 0]
    pipe = workflow.pipe
    embeds, pooled, _ = pipe.encode_prompt(prompt=[CLIP_TEXT], prompt_2=[T5_TEXT], max_sequence_length=256)
    for still in stills[1:]:
        n = still.sidecar["noise"]
        draw = xlabs_noise(n["seed"], 2, 32, 32)  # (2, 16, 4, 4) bf16, as XlabsSampler draws it
        expected = workflow.sample(embeds, pooled, None, latents=bfl_pack(draw[n["position"]][None].float()))[0]
        assert np.abs(np.asarray(expected, np.int16) - pixels(still)).max() <= 1


def test_workflow_noise_does_not_depend_on_the_callers_batching(workflow):
    one = workflow.generate(range(3), run_seed=0, batch_size=1, progress=False)
    three = workflow.generate(range(3), run_seed=0, batch_size=3, progress=False)
    for a, b in zip(one, three):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1
    assert np.abs(pixels(one[0]) - pixels(one[1])).mean() > 3  # two positions of one draw: two images


def test_workflow_noise_differs_from_identity_noise_and_is_recorded(workflow):
    identity = StillsGenerator.from_preset("tiny", device="cpu", template=CLIP_TEXT, template_t5=T5_TEXT, **SMALL)
    a = identity.generate([0], progress=False)[0]
    b = workflow.generate([0], progress=False)[0]
    assert np.abs(pixels(a) - pixels(b)).mean() > 3
    assert a.sidecar["noise"]["mode"] == "identity" and b.sidecar["noise"]["mode"] == "workflow"
    assert b.sidecar["noise"]["generator"] == "cpu emulation of torch cuda" and b.seed == WORKFLOW_SEED
    assert b.sidecar["sampler"]["noise"] == "workflow"


def test_clip_and_t5_texts_are_encoded_separately(workflow):
    still = workflow.generate([0], progress=False)[0]
    assert still.prompt == CLIP_TEXT and still.sidecar["prompt_t5"] == T5_TEXT
    same_t5 = StillsGenerator.from_preset("tiny", device="cpu", noise="workflow", template=CLIP_TEXT,
                                          template_t5=CLIP_TEXT, **SMALL).generate([0], progress=False)[0]
    no_t5 = StillsGenerator.from_preset("tiny", device="cpu", noise="workflow", template=CLIP_TEXT,
                                        **SMALL).generate([0], progress=False)[0]
    assert (pixels(same_t5) == pixels(no_t5)).all()  # T5 given the CLIP text = T5 not given (diffusers' default)
    assert (pixels(still) != pixels(no_t5)).any()  # its own T5 text changes the image


@pytest.mark.parametrize("bad", [dict(noise="cuda"), dict(noise_batch=0), dict(noise_device="gpu"),
                                 dict(noise_gpu="GTX-9999")])
def test_bad_noise_settings_are_refused(bad):
    with pytest.raises(ValueError):
        SamplerSettings(**bad)
