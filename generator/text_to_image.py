"""Thermal face stills: FLUX.1-dev + the thermal LoRA through diffusers' FluxPipeline.

Reads top to bottom: sampler settings (the paper's ComfyUI graph mapped to diffusers), LoRA loading with
checks, building a pipeline per preset, memory/speed options, then `StillsGenerator`, which turns identity
indices into `Still`s. Each image's noise comes from its own CPU generator seeded from (run seed, identity
index), so a still does not depend on batch size, shard or GPU count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from generator.prompts import IdentityPrompt, check_template, image_seed, sample_identity
from generator.weights import (
    WeightsNotFoundError,
    check_safetensors,
    hash_weights,
    resolve_weights,
    state_dict_sha256,
    weight_files,
)
from thermvision_db.atomic import atomic_write

SIDECAR_SCHEMA = "thermvision-db/still/1"
FLUX_DEV_HUB_ID = "black-forest-labs/FLUX.1-dev"
FLUX_COMPONENTS = ("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "vae")
PRESETS = ("thermvision", "tiny")


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


# ----------------------------------------------------------------------------------------------- LoRA


class LoraError(ValueError):
    """A LoRA file that cannot be applied to this transformer; the message names the file and the problem."""


def load_lora(pipe, path: str | os.PathLike, scale: float = 0.9, adapter_name: str = "thermal",
              fuse: bool = True) -> None:
    """Apply a kohya/FluxTrainer, ComfyUI (`diffusion_model.`) or diffusers/PEFT LoRA file at `scale`.

    The file must be safetensors (read here, never unpickled). Shapes are checked against the transformer
    before loading, so a LoRA for another model fails with a clear message instead of deep in PEFT. Fusing
    bakes the LoRA into the weights and removes the PEFT wrappers (faster, and friendlier to compile/fp8).
    """
    from safetensors.torch import load_file

    path = Path(path)
    check_safetensors(path, what="LoRA")
    raw = load_file(str(path))
    try:
        converted = pipe.lora_state_dict(dict(raw))
    except (AssertionError, KeyError, ValueError, RuntimeError) as err:
        raise LoraError(f"LoRA {path} could not be converted for FLUX ({type(err).__name__}: {err}); "
                        "is it a FLUX LoRA, and does it match this model's sizes?") from err
    if isinstance(converted, tuple):
        converted = converted[0]
    _check_lora_shapes(pipe, converted, path)
    pipe.load_lora_weights(converted, adapter_name=adapter_name)
    adapters = pipe.get_list_adapters()
    if not any(adapter_name in names for names in adapters.values()):
        raise LoraError(f"LoRA {path}: none of its keys matched the FLUX transformer or text encoders "
                        "(a diffusers-format file needs the 'transformer.' prefix)")
    if fuse:
        pipe.fuse_lora(lora_scale=scale, adapter_names=[adapter_name])
        pipe.unload_lora_weights()
    else:
        pipe.set_adapters([adapter_name], [scale])


def _check_lora_shapes(pipe, state_dict: dict, path: Path) -> None:
    components = {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder,
                  "text_encoder_2": pipe.text_encoder_2}
    for key, tensor in state_dict.items():
        prefix, _, rest = key.partition(".")
        module_name, _, kind = rest.partition(".lora_")
        if prefix not in components or not kind or components[prefix] is None:
            continue
        try:
            module = components[prefix].get_submodule(module_name)
        except AttributeError:
            raise LoraError(f"LoRA {path}: key {key!r} targets {prefix}.{module_name}, which this model "
                            "does not have") from None
        if not isinstance(module, torch.nn.Linear):
            continue
        if kind.startswith("A") and tensor.shape[-1] != module.in_features:
            raise LoraError(f"LoRA {path}: {key!r} has input size {tensor.shape[-1]} but {prefix}.{module_name} "
                            f"takes {module.in_features}; the LoRA was made for a different model")
        if kind.startswith("B") and tensor.shape[0] != module.out_features:
            raise LoraError(f"LoRA {path}: {key!r} has output size {tensor.shape[0]} but {prefix}.{module_name} "
                            f"gives {module.out_features}; the LoRA was made for a different model")


# ----------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SpeedOptions:
    """Memory/speed switches, all through maintained libraries (diffusers, torch, torchao)."""

    offload: str = "auto"  # none | model | sequential | auto (model offload on CUDA GPUs under 48 GiB)
    vae_tiling: bool = False
    first_block_cache: float | None = None  # residual-difference threshold, e.g. 0.08-0.12; lossy
    compile: bool = False  # regional torch.compile of the repeated transformer blocks
    fp8: bool = False  # torchao float8 quantisation of the transformer (Ada/Hopper GPUs)
    fuse_lora: bool = True

    def __post_init__(self):
        if self.offload not in ("none", "model", "sequential", "auto"):
            raise ValueError(f"offload must be none, model, sequential or auto, got {self.offload!r}")


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' means bf16 on CUDA (FLUX's native dtype) and fp32 on CPU (bf16 matmuls are slow there)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def apply_speed_options(pipe, options: SpeedOptions, device: torch.device) -> str:
    """Quantise, cache, compile and place the pipeline; returns the offload mode actually used."""
    if options.fp8:
        _quantize_fp8(pipe.transformer, device)
    if options.first_block_cache is not None:
        from diffusers import FirstBlockCacheConfig

        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=float(options.first_block_cache)))
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.compile:
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
    offload = options.offload
    if offload == "auto":
        big_enough = device.type == "cuda" and torch.cuda.get_device_properties(device).total_memory >= 48 * 2**30
        offload = "model" if device.type == "cuda" and not big_enough else "none"
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    return offload


def _quantize_fp8(transformer, device: torch.device) -> None:
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig, quantize_
    except ImportError as err:
        raise ImportError("fp8 needs torchao: pip install 'thermvision-db[fp8]' (or leave out --stills-fp8)") from err
    fp8_compute = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig() if fp8_compute else Float8WeightOnlyConfig())


# ----------------------------------------------------------------------------------------------- presets


def build_pipeline(
    preset: str,
    dtype: torch.dtype,
    *,
    flux: str | os.PathLike | None = None,
    flux_base: str | os.PathLike | None = None,
    tiny_seed: int = 0,
) -> tuple[object, list[dict]]:
    """(FluxPipeline on CPU, weight records) for a preset; records name every weight file and its sha256."""
    if preset == "tiny":
        from generator.tiny import build_tiny_flux

        pipe = build_tiny_flux(seed=tiny_seed)
        if dtype != torch.float32:
            pipe.to(dtype)
        records = [{"role": f"tiny/{name}", "path": None, "source": f"random, seed {tiny_seed}",
                    "sha256": state_dict_sha256(getattr(pipe, name))}
                   for name in ("transformer", "text_encoder", "text_encoder_2", "vae")]
        return pipe, records
    if preset != "thermvision":
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return _load_flux_dev(flux or FLUX_DEV_HUB_ID, flux_base, dtype)


def _load_flux_dev(flux, flux_base, dtype) -> tuple[object, list[dict]]:
    """FLUX.1-dev from a diffusers folder/Hub id, or a single-file transformer + `flux_base` for the rest."""
    from diffusers import FluxPipeline

    from generator.flux_checkpoint import load_flux_transformer

    hint = ("--flux with a local FLUX.1-dev diffusers folder or a single-file checkpoint such as "
            "flux1-dev-fp8.safetensors (Python: flux=...)")
    source = resolve_weights(flux, what="FLUX.1-dev", hint=hint, allow_patterns=_component_patterns())
    if source.is_file():
        check_safetensors(source, what="FLUX transformer checkpoint")
        base = resolve_weights(flux_base or FLUX_DEV_HUB_ID, what="FLUX.1-dev text encoders and VAE",
                               hint=f"--flux-base with a local FLUX.1-dev diffusers folder: the single file "
                                    f"{source.name} holds only the transformer (Python: flux_base=...)",
                               allow_patterns=_component_patterns(transformer_weights=False))
        if not (base / "model_index.json").is_file() or not (base / "transformer" / "config.json").is_file():
            raise WeightsNotFoundError(
                f"{base} is not a diffusers FLUX folder (it needs model_index.json and transformer/config.json): "
                f"the single file {source.name} brings only the transformer, so pass --flux-base with a FLUX.1-dev "
                "diffusers folder for the text encoders, VAE and configs (Python: flux_base=...)")
        transformer = load_flux_transformer(source, base, dtype)
        pipe = FluxPipeline.from_pretrained(str(base), transformer=transformer, dtype=dtype, local_files_only=True)
        files = [source] + [p for p in _component_files(base) if "transformer" not in p.relative_to(base).parts[:1]]
    else:
        if not (source / "model_index.json").is_file():
            raise WeightsNotFoundError(f"{source} is not a diffusers FLUX folder (no model_index.json); pass {hint}")
        pipe = FluxPipeline.from_pretrained(str(source), dtype=dtype, local_files_only=True)
        files = _component_files(source)
    records = [{"role": "flux", "path": str(p), "sha256": sha} for p in files for _, sha in hash_weights(p).items()]
    return pipe, records


def _component_patterns(transformer_weights: bool = True) -> list[str]:
    patterns = ["model_index.json"] + [f"{c}/*" for c in FLUX_COMPONENTS if c != "transformer"]
    return patterns + (["transformer/*"] if transformer_weights else ["transformer/config.json"])


def _component_files(folder: Path) -> list[Path]:
    """Weight files of the pipeline's components only (a FLUX.1-dev clone also holds BFL-format files)."""
    return [p for c in FLUX_COMPONENTS if (folder / c).is_dir() for p in weight_files(folder / c)]


# ----------------------------------------------------------------------------------------------- stills


@dataclass
class Still:
    """One generated identity still and everything needed to reproduce it."""

    index: int
    run_seed: int
    seed: int
    prompt: str
    attributes: dict
    image: Image.Image
    sidecar: dict = field(repr=False)


def to_white_hot_gray(images: np.ndarray) -> list[Image.Image]:
    """Float RGB in [0, 1] -> 3-channel uint8 grayscale (ITU-R 601 luma, as PIL's 'L'): hot is white."""
    luma = images[..., 0] * 0.299 + images[..., 1] * 0.587 + images[..., 2] * 0.114
    gray = np.clip(np.rint(luma * 255.0), 0, 255).astype(np.uint8)
    return [Image.fromarray(np.repeat(g[..., None], 3, axis=2)) for g in gray]  # HxWx3 uint8 -> RGB


class StillsGenerator:
    """Identity indices in, `Still`s out; holds one pipeline and the settings that define a run."""

    def __init__(self, pipe, *, sampler: SamplerSettings | None = None, preset: str = "custom",
                 weights: list[dict] | None = None, lora: dict | None = None, template: str | None = None,
                 device: torch.device | None = None, dtype: torch.dtype | None = None,
                 speed: SpeedOptions | None = None, offload_used: str = "none"):
        self.pipe = pipe
        self.sampler = sampler or SamplerSettings()
        self.preset = preset
        self.weights = weights or []
        self.lora = lora
        self.template = check_template(template) if template else None
        self.device = device or resolve_device(None)
        self.dtype = dtype or pipe.transformer.dtype
        self.speed = speed or SpeedOptions(offload="none")
        self.offload_used = offload_used
        self.last_final_sigma: float | None = None
        self._negative_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_preset(
        cls,
        preset: str = "tiny",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        *,
        flux: str | os.PathLike | None = None,
        flux_base: str | os.PathLike | None = None,
        lora: str | os.PathLike | None = None,
        lora_scale: float = 0.9,
        sampler: SamplerSettings | None = None,
        template: str | None = None,
        speed: SpeedOptions | None = None,
        tiny_seed: int = 0,
        **sampler_overrides,
    ) -> "StillsGenerator":
        """Build a generator. 'thermvision' needs `lora` (and `flux` offline); 'tiny' needs nothing.

        `sampler_overrides` (height, width, num_steps, schedule, ...) replace fields of the paper's sampler.
        """
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        speed = speed or SpeedOptions()
        sampler = replace(sampler or SamplerSettings(), **sampler_overrides)
        if template:
            check_template(template)
        lora_path = None
        if lora is not None or preset == "thermvision":
            lora_path = resolve_weights(lora, what="thermal LoRA",
                                        hint="--lora /path/to/thermal_lora.safetensors (the kohya/FluxTrainer "
                                             "file; Python: lora=...)")
            check_safetensors(lora_path, what="LoRA")
        pipe, records = build_pipeline(preset, dtype, flux=flux, flux_base=flux_base, tiny_seed=tiny_seed)
        lora_record = None
        if lora_path is not None:
            load_lora(pipe, lora_path, scale=lora_scale, fuse=speed.fuse_lora)
            records += [{"role": "lora", "path": str(lora_path), "sha256": sha}
                        for _, sha in hash_weights(lora_path).items()]
            lora_record = {"path": str(lora_path), "scale": lora_scale, "fused": speed.fuse_lora}
        offload_used = apply_speed_options(pipe, speed, device)
        return cls(pipe, sampler=sampler, preset=preset, weights=records, lora=lora_record, template=template,
                   device=device, dtype=dtype, speed=speed, offload_used=offload_used)

    # -- generation

    def identities(self, identity_indices: Iterable[int], run_seed: int) -> list[IdentityPrompt]:
        return [sample_identity(run_seed, int(i), self.template) for i in identity_indices]

    def generate(self, identity_indices: Iterable[int], run_seed: int = 0, batch_size: int = 1,
                 progress: bool = True) -> list[Still]:
        """Stills for `identity_indices` of run `run_seed`, `batch_size` images per pipeline call."""
        return list(self.iter_generate(identity_indices, run_seed, batch_size, progress))

    def iter_generate(self, identity_indices: Iterable[int], run_seed: int = 0, batch_size: int = 1,
                      progress: bool = True) -> Iterator[Still]:
        """Like `generate`, but yields each still as soon as its batch is done (for writing as you go)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        identities = self.identities(identity_indices, run_seed)
        with tqdm(total=len(identities), unit="still", desc="stills", disable=not progress) as bar:
            for start in range(0, len(identities), batch_size):
                chunk = identities[start:start + batch_size]
                yield from self.generate_batch(chunk)
                bar.update(len(chunk))

    @torch.inference_mode()
    def generate_batch(self, identities: Sequence[IdentityPrompt]) -> list[Still]:
        """One batch through the sampler; per-image CPU generators keep each still batch-independent."""
        seeds = [image_seed(ident.run_seed, ident.index) for ident in identities]
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        embeds, pooled, _ = self.pipe.encode_prompt(prompt=[ident.prompt for ident in identities], prompt_2=None,
                                                    max_sequence_length=self.sampler.max_sequence_length)
        images = self.sample(embeds, pooled, generators)
        return [self._make_still(ident, seed, image) for ident, seed, image in zip(identities, seeds, images)]

    @torch.inference_mode()
    def sample(self, prompt_embeds: torch.Tensor, pooled_prompt_embeds: torch.Tensor,
               generators: list[torch.Generator]) -> list[Image.Image]:
        """The paper's sampler on encoded prompts: steps before `cfg_start_step` without CFG, the rest with it,
        cut after `steps_run` steps; returns white-hot grayscale images."""
        s = self.sampler
        common = dict(prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                      guidance_scale=s.guidance_scale, height=s.height, width=s.width, generator=generators)
        cfg_start = s.cfg_start_step if s.true_cfg_scale > 1 else s.steps_run
        cfg_start = min(cfg_start, s.steps_run)
        latents, sigmas = None, np.linspace(1.0, 1 / s.num_steps, s.num_steps)  # FluxPipeline's unshifted grid
        self.last_final_sigma = None
        if cfg_start > 0:  # steps before CFG starts: conditional prediction only
            latents = self.pipe(**common, num_inference_steps=s.num_steps, output_type="latent",
                                callback_on_step_end=self._stop_after(cfg_start, s.num_steps)).images
        if cfg_start < s.steps_run or latents is None:
            n = prompt_embeds.shape[0]
            negative, negative_pooled = self._negative_embeddings()
            output = self.pipe(
                **common,
                latents=latents,
                sigmas=sigmas[cfg_start:],  # the scheduler shifts them with the same mu: the same schedule
                true_cfg_scale=s.true_cfg_scale,
                negative_prompt_embeds=negative.expand(n, *negative.shape[1:]),
                negative_pooled_prompt_embeds=negative_pooled.expand(n, *negative_pooled.shape[1:]),
                output_type="np",
                callback_on_step_end=self._stop_after(s.steps_run - cfg_start, s.num_steps - cfg_start),
            ).images
        else:  # no CFG at all: decode what the first call left
            output = self._decode(latents)
        return to_white_hot_gray(np.asarray(output, dtype=np.float32))

    def _decode(self, packed_latents: torch.Tensor) -> np.ndarray:
        """The tail of FluxPipeline.__call__: unpack, unscale, VAE-decode to float RGB in [0, 1]."""
        pipe, s = self.pipe, self.sampler
        latents = pipe._unpack_latents(packed_latents, s.height, s.width, pipe.vae_scale_factor)
        latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        from diffusers.utils.torch_utils import get_module_execution_device

        vae_device = get_module_execution_device(pipe.vae)  # the GPU under CPU offload, not where weights rest
        image = pipe.vae.decode(latents.to(vae_device, pipe.vae.dtype), return_dict=False)[0]
        image = pipe.image_processor.postprocess(image, output_type="np")
        pipe.maybe_free_model_hooks()
        return image

    def set_negative_embeddings(self, embeds: torch.Tensor, pooled: torch.Tensor) -> None:
        """Use precomputed negative embeddings (batch 1), e.g. when the text encoders are not loaded."""
        self._negative_cache = (embeds, pooled)

    def _negative_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The graph's negative: CLIP 'artefact, watermarks', T5 empty. `negative_prompt_2=""` would fall back
        to the CLIP text in diffusers, so the embeddings are encoded here (once) from a list [""]."""
        if self._negative_cache is None:
            s = self.sampler
            embeds, pooled, _ = self.pipe.encode_prompt(prompt=[s.negative_prompt], prompt_2=[s.negative_prompt_t5],
                                                        max_sequence_length=s.max_sequence_length)
            self._negative_cache = (embeds, pooled)
        return self._negative_cache

    def _stop_after(self, steps: int, total: int):
        """Callback that interrupts a call after `steps` of its `total` steps (XlabsSampler's denoise < 1)."""
        def callback(pipe, step, timestep, kwargs):
            if step == steps - 1:
                scheduler = pipe.scheduler
                self.last_final_sigma = float(scheduler.sigmas[scheduler.step_index])
                if steps < total:
                    pipe._interrupt = True  # later steps are skipped; the current latents are decoded
            return kwargs
        return callback

    def _make_still(self, ident: IdentityPrompt, seed: int, image: Image.Image) -> Still:
        attributes = ident.attributes.to_dict()
        sidecar = {
            "schema": SIDECAR_SCHEMA,
            "identity_index": ident.index,
            "run_seed": ident.run_seed,
            "seed": seed,
            "prompt": ident.prompt,
            "prompt_template": self.template,
            "attributes": attributes,
            "sampler": {**self.sampler.to_dict(), "final_sigma": self.last_final_sigma},
            "preset": self.preset,
            "lora": self.lora,
            "weights": self.weights,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device.type,
            "speed": {**asdict(self.speed), "offload": self.offload_used},
            "image": {"file": still_filename(ident.index, ".png"), "width": image.width, "height": image.height,
                      "channels": 3, "colour": "grayscale, white-hot"},
            "versions": _versions(),
        }
        return Still(index=ident.index, run_seed=ident.run_seed, seed=seed, prompt=ident.prompt,
                     attributes=attributes, image=image, sidecar=sidecar)


def quiet_libraries() -> None:
    """Keep progress bars readable: library warnings about tiny tokenizers and casting are noise here."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def _versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


# ----------------------------------------------------------------------------------------------- files


def still_filename(index: int, suffix: str) -> str:
    return f"still_{index:06d}{suffix}"


def save_still(still: Still, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `still_NNNNNN.png` and its `.json` sidecar atomically (temp name, then rename)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, sidecar = out_dir / still_filename(still.index, ".png"), out_dir / still_filename(still.index, ".json")
    atomic_write(png, lambda f: still.image.save(f, format="PNG"), fsync=False)
    atomic_write(sidecar, lambda f: f.write(json.dumps(still.sidecar, indent=2, sort_keys=True).encode()), fsync=False)
    return png, sidecar


def load_still(path: str | os.PathLike) -> Still:
    """Read a still back from its PNG or JSON path; the sidecar must describe the PNG beside it."""
    path = Path(path)
    sidecar_path, png_path = path.with_suffix(".json"), path.with_suffix(".png")
    sidecar = json.loads(sidecar_path.read_text())
    if sidecar.get("schema") != SIDECAR_SCHEMA:
        raise ValueError(f"{sidecar_path} is not a ThermVision still sidecar (schema {sidecar.get('schema')!r})")
    with Image.open(png_path) as handle:
        image = handle.convert("RGB")
    return Still(index=sidecar["identity_index"], run_seed=sidecar["run_seed"], seed=sidecar["seed"],
                 prompt=sidecar["prompt"], attributes=sidecar["attributes"], image=image, sidecar=sidecar)


def still_exists(out_dir: str | os.PathLike, index: int) -> bool:
    """True when both files of identity `index` are on disk (used to resume an interrupted run)."""
    out_dir = Path(out_dir)
    return all((out_dir / still_filename(index, s)).is_file() for s in (".png", ".json"))
