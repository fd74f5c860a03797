"""The paper's sampler (ComfyUI XlabsSampler) expressed as diffusers FluxPipeline arguments."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# ----------------------------------------------------------------------------------------------- sampler


@dataclass(frozen=True)
class SamplerSettings:
    """The released ComfyUI graph's sampler (XlabsSampler) expressed as diffusers FluxPipeline arguments.

    `schedule="paper"` keeps XlabsSampler's denoise=0.88 quirk: the 40-step schedule is cut after
    int(41 * 0.88) - 1 = 35 steps, so the image is decoded at sigma ~0.21 with residual noise. "full" runs all
    steps. True CFG starts at step `cfg_start_step` (3 in the graph): stock FluxPipeline applies CFG to every
    step, so the first steps run as a separate call without CFG and the rest continue from its latents on the
    remaining sigmas of the same schedule.
    """

    height: int = 512
    width: int = 512
    num_steps: int = 40
    schedule: str = "paper"
    denoise: float = 0.88
    true_cfg_scale: float = 3.5
    cfg_start_step: int = 3  # XlabsSampler timestep_to_start_cfg
    negative_prompt: str = "artefact, watermarks"  # CLIP-L side of the negative
    negative_prompt_t5: str = ""  # the graph's T5 negative is empty
    guidance_scale: float = 4.5  # FLUX.1-dev distilled-guidance embedding
    max_sequence_length: int = 256  # ComfyUI pads T5 to 256 tokens

    def __post_init__(self):
        if self.schedule not in ("paper", "full"):
            raise ValueError(f"schedule must be 'paper' or 'full', got {self.schedule!r}")
        if self.height % 16 or self.width % 16 or self.height < 16 or self.width < 16:
            raise ValueError(f"height and width must be multiples of 16 (>= 16), got {self.height}x{self.width}")
        if self.num_steps < 1 or not 0 < self.denoise <= 1 or self.cfg_start_step < 0:
            raise ValueError("num_steps must be >= 1, denoise in (0, 1] and cfg_start_step >= 0")

    @property
    def steps_run(self) -> int:
        """Steps actually taken: XlabsSampler keeps timesteps[:int((steps + 1) * denoise)]."""
        if self.schedule == "full":
            return self.num_steps
        return max(1, min(self.num_steps, int((self.num_steps + 1) * self.denoise) - 1))

    def to_dict(self) -> dict:
        return {**asdict(self), "steps_run": self.steps_run,
                "noise": "torch.Generator('cpu').manual_seed(seed), one per image"}
