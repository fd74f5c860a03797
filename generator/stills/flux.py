"""Building the FLUX pipeline per preset (local folder, Hub id, single file, tiny) and its speed/memory options."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from generator.weights import (
    WeightsNotFoundError,
    check_safetensors,
    hash_weights,
    resolve_weights,
    state_dict_sha256,
    weight_files,
)
from generator.stills import PRESETS  # noqa: F401  (defined where --help reads it without torch)
from thermvision_db.errors import InputError

FLUX_DEV_HUB_ID = "black-forest-labs/FLUX.1-dev"
FLUX_COMPONENTS = ("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "vae")

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
            raise InputError(f"offload must be none, model, sequential or auto, got {self.offload!r}")


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
        raise InputError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
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
    transformer_patch=None,
) -> tuple[object, list[dict]]:
    """(FluxPipeline on CPU, weight records) for a preset; records name every weight file and its sha256.
    `transformer_patch` rewrites a single-file transformer's tensors before conversion (ComfyUI fp8 LoRA)."""
    if preset == "tiny":
        from generator.stills.tiny_flux import build_tiny_flux

        pipe = build_tiny_flux(seed=tiny_seed)
        if dtype != torch.float32:
            pipe.to(dtype)
        records = [{"role": f"tiny/{name}", "path": None, "source": f"random, seed {tiny_seed}",
                    "sha256": state_dict_sha256(getattr(pipe, name))}
                   for name in ("transformer", "text_encoder", "text_encoder_2", "vae")]
        return pipe, records
    if preset != "thermvision":
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return _load_flux_dev(flux or FLUX_DEV_HUB_ID, flux_base, dtype, transformer_patch)


def _load_flux_dev(flux, flux_base, dtype, transformer_patch=None) -> tuple[object, list[dict]]:
    """FLUX.1-dev from a diffusers folder/Hub id, or a single-file transformer + `flux_base` for the rest."""
    from diffusers import FluxPipeline

    from generator.stills.single_file import load_flux_transformer

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
        transformer = load_flux_transformer(source, base, dtype, patch=transformer_patch)
        pipe = FluxPipeline.from_pretrained(str(base), transformer=transformer, dtype=dtype, local_files_only=True)
        files = [source] + [p for p in _component_files(base) if "transformer" not in p.relative_to(base).parts[:1]]
    else:
        if transformer_patch is not None:
            raise InputError(f"ComfyUI-style fp8 LoRA patching needs a single-file fp8 --flux checkpoint, not the "
                             f"folder {source}")
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



def quiet_libraries() -> None:
    """Keep progress bars readable: library warnings about tiny tokenizers and casting are noise here."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def library_versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}
