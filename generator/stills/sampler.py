"""The paper's sampler (ComfyUI XlabsSampler) expressed as diffusers FluxPipeline arguments."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from thermvision_db.errors import InputError

# ----------------------------------------------------------------------------------------------- sampler

WORKFLOW_SEED = 749840386044620  # the released ComfyUI graph's XlabsSampler noise_seed
NOISE_MODES = ("identity", "workflow")


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
    noise: str = "identity"  # "identity": one CPU generator per image; "workflow": XlabsSampler's batch draw
    noise_seed: int = WORKFLOW_SEED  # workflow noise: the seed of the first batch (ComfyUI "increment" after)
    noise_batch: int = 2  # workflow noise: images per draw (the graph's EmptyLatentImage batch)
    noise_device: str = "auto"  # workflow noise: "cuda" (torch's generator), "emulate" (CPU), "auto"
    noise_gpu: str | None = None  # emulation only: a GPU name whose resident-block cap shapes large draws

    def __post_init__(self):
        if self.schedule not in ("paper", "full"):
            raise InputError(f"schedule must be 'paper' or 'full', got {self.schedule!r}")
        if self.height % 16 or self.width % 16 or self.height < 16 or self.width < 16:
            raise InputError(f"height and width must be multiples of 16 (>= 16), got {self.height}x{self.width}")
        if self.num_steps < 1 or not 0 < self.denoise <= 1 or self.cfg_start_step < 0:
            raise InputError("num_steps must be >= 1, denoise in (0, 1] and cfg_start_step >= 0")
        if self.noise not in NOISE_MODES:
            raise InputError(f"noise must be one of {', '.join(NOISE_MODES)}, got {self.noise!r}")
        if self.noise_device not in ("auto", "cuda", "emulate") or self.noise_batch < 1:
            raise InputError("noise_device must be auto, cuda or emulate, and noise_batch >= 1")
        if self.noise_gpu is not None:
            from generator.stills.cuda_noise import GPUS

            if self.noise_gpu not in GPUS:
                raise InputError(f"noise_gpu {self.noise_gpu!r} is not one of {', '.join(GPUS)}")

    @property
    def steps_run(self) -> int:
        """Steps actually taken: XlabsSampler keeps timesteps[:int((steps + 1) * denoise)]."""
        if self.schedule == "full":
            return self.num_steps
        return max(1, min(self.num_steps, int((self.num_steps + 1) * self.denoise) - 1))

    def to_dict(self) -> dict:
        return {**asdict(self), "steps_run": self.steps_run}

    def workflow_draw(self, index: int) -> tuple[int, int]:
        """(seed, position) of identity `index` under workflow noise: identities come in draws of `noise_batch`,
        draw b seeded `noise_seed + b` (ComfyUI's "increment" after each run), so the first draw is the graph's."""
        return self.noise_seed + index // self.noise_batch, index % self.noise_batch
