"""Thermal face stills: FLUX.1-dev + the thermal LoRA through diffusers' FluxPipeline.

Reads top to bottom: sampler settings (the paper's ComfyUI graph mapped to diffusers), LoRA loading with
checks, building a pipeline per preset, memory/speed options, then `StillsGenerator`, which turns identity
indices into `Still`s. Each image's noise comes from its own CPU generator seeded from (run seed, identity
index), so a still does not depend on batch size, shard or GPU count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, replace

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from generator.stills.files import SIDECAR_SCHEMA, Still, still_filename
from generator.stills.flux import (
    PRESETS,
    SpeedOptions,
    apply_speed_options,
    build_pipeline,
    library_versions,
    resolve_device,
    resolve_dtype,
)
from generator.stills.lora import load_lora
from generator.stills.prompts import IdentityPrompt, check_template, image_seed, sample_identity
from generator.stills.sampler import SamplerSettings
from generator.weights import check_safetensors, hash_weights, resolve_weights
from thermvision_db.errors import InputError


def _comfy_fp8_patch(lora_path, scale: float, device: torch.device, gpu: str | None):
    """The single-file loader's hook: the kohya LoRA patched into the fp8 BFL tensors as ComfyUI does."""
    from safetensors.torch import load_file

    from generator.stills.comfy_fp8_lora import patch_fp8_checkpoint

    lora = load_file(str(lora_path))
    rounding_device = "cuda" if device.type == "cuda" else "emulate"
    return lambda tensors: patch_fp8_checkpoint(tensors, lora, scale, device=rounding_device, gpu=gpu)


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
                 speed: SpeedOptions | None = None, offload_used: str = "none", template_t5: str | None = None):
        self.pipe = pipe
        self.sampler = sampler or SamplerSettings()
        self.preset = preset
        self.weights = weights or []
        self.lora = lora
        self.template = check_template(template) if template else None
        self.template_t5 = check_template(template_t5) if template_t5 is not None else None
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
        lora_allow_ignored_keys: bool = False,
        sampler: SamplerSettings | None = None,
        template: str | None = None,
        template_t5: str | None = None,
        speed: SpeedOptions | None = None,
        tiny_seed: int = 0,
        lora_mode: str = "fuse",
        lora_fp8_gpu: str | None = None,
        **sampler_overrides,
    ) -> "StillsGenerator":
        """Build a generator. 'thermvision' needs `lora` (and `flux` offline); 'tiny' needs nothing.

        A LoRA is applied whole or refused; `lora_allow_ignored_keys` applies the rest of a file some of whose
        keys the FLUX loader cannot map (the sidecar lists them).

        `sampler_overrides` (height, width, num_steps, schedule, noise, ...) replace fields of the paper's sampler.
        `template` is the CLIP-L text (and T5's unless `template_t5` gives T5 its own). `lora_mode="comfy-fp8"`
        patches the LoRA into a single-file fp8 transformer as ComfyUI does (fp32 patch, seeded stochastic
        rounding back to fp8; its draws from torch's CUDA generator on a GPU, or emulated for `lora_fp8_gpu`).
        """
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
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
        if lora_mode not in ("fuse", "comfy-fp8"):
            raise InputError(f"lora_mode must be 'fuse' or 'comfy-fp8', got {lora_mode!r}")
        patch = None
        if lora_mode == "comfy-fp8":
            if lora_path is None:
                raise InputError("lora_mode 'comfy-fp8' needs a LoRA file")
            patch = _comfy_fp8_patch(lora_path, lora_scale, device, lora_fp8_gpu)
        pipe, records = build_pipeline(preset, dtype, flux=flux, flux_base=flux_base, tiny_seed=tiny_seed,
                                       transformer_patch=patch)
        lora_record = None
        if lora_path is not None and patch is not None:
            records += [{"role": "lora", "path": str(lora_path), "sha256": sha}
                        for _, sha in hash_weights(lora_path).items()]
            lora_record = {"path": str(lora_path), "scale": lora_scale, "mode": "comfy-fp8",
                           "rounding_draws": "torch cuda" if device.type == "cuda" else f"emulated {lora_fp8_gpu}"}
        elif lora_path is not None:
            applied = load_lora(pipe, lora_path, scale=lora_scale, fuse=speed.fuse_lora,
                                allow_ignored_keys=lora_allow_ignored_keys)
            records += [{"role": "lora", "path": str(lora_path), "sha256": sha}
                        for _, sha in hash_weights(lora_path).items()]
            lora_record = {**applied, "scale": lora_scale, "fused": speed.fuse_lora, "mode": "fuse"}
        offload_used = apply_speed_options(pipe, speed, device)
        return cls(pipe, sampler=sampler, preset=preset, weights=records, lora=lora_record, template=template,
                   device=device, dtype=dtype, speed=speed, offload_used=offload_used, template_t5=template_t5)

    # -- generation

    def identities(self, identity_indices: Iterable[int], run_seed: int) -> list[IdentityPrompt]:
        return [sample_identity(run_seed, int(i), self.template, self.template_t5) for i in identity_indices]

    def generate(self, identity_indices: Iterable[int], run_seed: int = 0, batch_size: int = 1,
                 progress: bool = True) -> list[Still]:
        """Stills for `identity_indices` of run `run_seed`, `batch_size` images per pipeline call."""
        return list(self.iter_generate(identity_indices, run_seed, batch_size, progress))

    def iter_generate(self, identity_indices: Iterable[int], run_seed: int = 0, batch_size: int = 1,
                      progress: bool = True) -> Iterator[Still]:
        """Like `generate`, but yields each still as soon as its batch is done (for writing as you go)."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        identities = self.identities(identity_indices, run_seed)
        with tqdm(total=len(identities), unit="still", desc="stills", disable=not progress) as bar:
            for start in range(0, len(identities), batch_size):
                chunk = identities[start:start + batch_size]
                yield from self.generate_batch(chunk)
                bar.update(len(chunk))

    @torch.inference_mode()
    def generate_batch(self, identities: Sequence[IdentityPrompt]) -> list[Still]:
        """One batch through the sampler. Identity noise: per-image CPU generators; workflow noise: each image's
        slice of its XlabsSampler draw. Either way a still does not depend on how the caller batches."""
        t5 = [ident.prompt_t5 for ident in identities]
        embeds, pooled, _ = self.pipe.encode_prompt(prompt=[ident.prompt for ident in identities],
                                                    prompt_2=None if all(t is None for t in t5)
                                                    else [t if t is not None else i.prompt for t, i in zip(t5, identities)],
                                                    max_sequence_length=self.sampler.max_sequence_length)
        if self.sampler.noise == "workflow":
            noise = [self._workflow_noise(ident.index) for ident in identities]
            seeds, latents = [n[0] for n in noise], self._pack(torch.stack([n[2] for n in noise]))
            images = self.sample(embeds, pooled, None, latents=latents)
        else:
            seeds = [image_seed(ident.run_seed, ident.index) for ident in identities]
            noise = [None] * len(identities)
            images = self.sample(embeds, pooled, [torch.Generator("cpu").manual_seed(seed) for seed in seeds])
        return [self._make_still(ident, seed, image, n and n[1]) for ident, seed, image, n
                in zip(identities, seeds, images, noise)]

    def _workflow_noise(self, index: int) -> tuple[int, dict, torch.Tensor]:
        """(seed, record, (16, h/8, w/8) latent) of identity `index`'s slice of its XlabsSampler-style draw."""
        from generator.stills.cuda_noise import xlabs_noise

        s = self.sampler
        seed, position = s.workflow_draw(index)
        device = s.noise_device
        if device == "auto":
            device = "cuda" if self.device.type == "cuda" else "emulate"
        draw = xlabs_noise(seed, s.noise_batch, s.height, s.width, torch.bfloat16, device=device, gpu=s.noise_gpu)
        record = {"mode": "workflow", "seed": seed, "batch": s.noise_batch, "position": position,
                  "generator": "torch cuda" if device == "cuda" else "cpu emulation of torch cuda",
                  "gpu": s.noise_gpu if device != "cuda" else torch.cuda.get_device_name(self.device),
                  "dtype": "bfloat16"}
        return seed, record, draw[position]

    def _pack(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> FluxPipeline's packed (B, h/2 * w/2, 4C): BFL's 'b c (h 2) (w 2) -> b (h w) (c 2 2)'."""
        b, c, h, w = latents.shape
        if c * 4 != self.pipe.transformer.config.in_channels:
            raise InputError(f"workflow noise has {c} latent channels; this transformer takes "
                             f"{self.pipe.transformer.config.in_channels // 4}")
        packed = self.pipe._pack_latents(latents, b, c, h, w)
        return packed.to(self.dtype)

    @torch.inference_mode()
    def sample(self, prompt_embeds: torch.Tensor, pooled_prompt_embeds: torch.Tensor,
               generators: list[torch.Generator] | None, latents: torch.Tensor | None = None) -> list[Image.Image]:
        """The paper's sampler on encoded prompts: steps before `cfg_start_step` without CFG, the rest with it,
        cut after `steps_run` steps; returns white-hot grayscale images. `latents` (packed) replace the noise
        the generators would draw."""
        s = self.sampler
        common = dict(prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                      guidance_scale=s.guidance_scale, height=s.height, width=s.width, generator=generators)
        cfg_start = s.cfg_start_step if s.true_cfg_scale > 1 else s.steps_run
        cfg_start = min(cfg_start, s.steps_run)
        sigmas = np.linspace(1.0, 1 / s.num_steps, s.num_steps)  # FluxPipeline's unshifted grid
        self.last_final_sigma = None
        if cfg_start > 0:  # steps before CFG starts: conditional prediction only
            latents = self.pipe(**common, latents=latents, num_inference_steps=s.num_steps, output_type="latent",
                                callback_on_step_end=self._stop_after(cfg_start, s.num_steps)).images
        if cfg_start < s.steps_run or cfg_start == 0:
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

    def _make_still(self, ident: IdentityPrompt, seed: int, image: Image.Image, noise: dict | None = None) -> Still:
        attributes = ident.attributes.to_dict()
        sidecar = {
            "schema": SIDECAR_SCHEMA,
            "identity_index": ident.index,
            "run_seed": ident.run_seed,
            "seed": seed,
            "prompt": ident.prompt,
            "prompt_t5": ident.prompt_t5,
            "prompt_template": self.template,
            "prompt_template_t5": self.template_t5,
            "noise": noise or {"mode": "identity", "seed": seed, "generator": "torch.Generator('cpu')"},
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
            "versions": library_versions(),
        }
        return Still(index=ident.index, run_seed=ident.run_seed, seed=seed, prompt=ident.prompt,
                     attributes=attributes, image=image, sidecar=sidecar)
