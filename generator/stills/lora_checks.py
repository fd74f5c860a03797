"""What diffusers' FLUX loader reads beside the tensors, and what the merged weights must be.

A file saved by diffusers' own `save_lora_weights` keeps PEFT's `lora_alpha` (and `rank_pattern`/`alpha_pattern`,
`use_rslora`) in the safetensors metadata (`lora_adapter_metadata`); `load_lora_weights(path)` builds the PEFT
config from it, so the layer's scaling is alpha / rank (alpha / sqrt(rank) with rsLoRA). The project loads a
converted state dict, which carries no metadata: the same scaling is baked into lora_B here, giving the same
merged weights. Merged weights are checked finite (and within 10^4 x the layer's largest weight) before anything is fused: an alpha of 3e38 is refused naming
the key instead of giving an all-zero still.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from generator.stills.lora_keys import LoraError

METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
_UNSUPPORTED = ("lora_bias", "use_dora")
MAX_DELTA_RATIO = 1e4  # a trained LoRA changes weights by a fraction of their size; 10^4 x is overflow, not style


def adapter_metadata(path: Path) -> dict[str, dict]:
    """{component: PEFT config kwargs} from the file's metadata, as diffusers splits it ('transformer.r' ...)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get(METADATA_KEY)
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except ValueError:
        raise LoraError(f"LoRA {path}: its '{METADATA_KEY}' metadata is not JSON") from None
    if not isinstance(flat, dict):
        raise LoraError(f"LoRA {path}: its '{METADATA_KEY}' metadata is not an object")
    out: dict[str, dict] = {}
    for key, value in flat.items():
        component, _, name = str(key).partition(".")
        out.setdefault(component, {})[name] = value
    for component, config in out.items():
        for name in _UNSUPPORTED:
            if config.get(name):
                raise LoraError(f"LoRA {path}: metadata sets {component}.{name}; the project does not apply it")
    return out


def _peft_default_alpha() -> float:
    from peft import LoraConfig

    return float(LoraConfig().lora_alpha)  # what PEFT uses when the metadata gives no lora_alpha


def apply_adapter_metadata(converted: dict[str, torch.Tensor], metadata: dict[str, dict]) -> list[float]:
    """Bake each layer's metadata scaling into its lora_B; returns the scalings (empty without metadata)."""
    factors = []
    for key in [k for k in converted if k.endswith(".lora_B.weight")]:
        component, _, rest = key.partition(".")
        config = metadata.get(component)
        if config is None:
            continue
        module = rest.removesuffix(".lora_B.weight")
        rank = converted[key].shape[1]
        alpha = config.get("lora_alpha", _peft_default_alpha())
        for pattern, value in (config.get("alpha_pattern") or {}).items():
            if module == pattern or module.endswith(f".{pattern}"):
                alpha = value
        rank_used = next((v for p, v in (config.get("rank_pattern") or {}).items()
                          if module == p or module.endswith(f".{p}")), rank)
        factor = float(alpha) / (math.sqrt(rank_used) if config.get("use_rslora") else rank_used)
        converted[key] = converted[key] * factor
        factors.append(factor)
    return factors


def check_merged_finite(pipe, converted: dict[str, torch.Tensor], scale: float, path: Path) -> None:
    """W + scale * B @ A must be finite for every layer: refuse naming the key otherwise."""
    for key, up in converted.items():
        if not key.endswith(".lora_B.weight"):
            continue
        down = converted.get(key.replace(".lora_B.", ".lora_A."))
        component, _, rest = key.partition(".")
        model = getattr(pipe, component, None)
        if down is None or model is None:
            continue
        try:
            layer = model.get_submodule(rest.removesuffix(".lora_B.weight"))
        except AttributeError:
            continue
        weight = getattr(layer, "base_layer", layer).weight
        delta = scale * (up.to(weight.device, torch.float32) @ down.to(weight.device, torch.float32))
        merged = weight.float() + delta
        if not bool(torch.isfinite(merged).all()) or not bool(torch.isfinite(merged.to(weight.dtype)).all()):
            raise LoraError(f"LoRA {path}: merging {key!r} at scale {scale} gives non-finite weights (NaN or inf): "
                            "its alpha or factors are far too large; the file is damaged")
        bound = MAX_DELTA_RATIO * max(1.0, float(weight.detach().abs().max()))
        if float(delta.abs().max()) > bound:
            raise LoraError(f"LoRA {path}: merging {key!r} at scale {scale} changes a weight by "
                            f"{float(delta.abs().max()):.3g}, over {MAX_DELTA_RATIO:g} x the layer's largest weight: "
                            "its activations would overflow (non-finite still); the alpha or factors are damaged")
