"""Single-file FLUX transformer checkpoints (BFL / ComfyUI layout) -> diffusers' FluxTransformer2DModel.

Why this exists: diffusers 0.42's `convert_flux_transformer_checkpoint_to_diffusers` hard-codes FLUX.1's width
(`inner_dim = 3072`) to split each single block's fused `linear1` into q, k, v and the MLP, so any other width
(the tiny test models, and any narrower FLUX) fails in `torch.split`. It also never reports missing keys (the
model is built on the meta device, so a missing tensor surfaces later as an opaque meta-tensor error).
This module renames the keys itself, taking the split from the checkpoint's own shapes, checks the key set and
the shapes against the transformer config, and then hands an already-converted state dict to
`FluxTransformer2DModel.from_single_file`, which skips its own converter when the keys already match.

Layouts read: BFL's original names (`double_blocks.0.img_attn.qkv.weight`, as in `flux1-dev.safetensors` and
fp8 files such as `flux1-dev-fp8.safetensors`), and the ComfyUI forms with a `model.diffusion_model.` or
`diffusion_model.` prefix, including all-in-one checkpoints whose text encoders and VAE sit beside the
transformer (those other components are not read). Float8 weights are upcast to the requested dtype.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from thermvision_db.errors import ThermVisionError

if TYPE_CHECKING:
    from diffusers import FluxTransformer2DModel

COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# Keys of other components in ComfyUI/A1111 all-in-one checkpoints; never part of the transformer.
OTHER_COMPONENT_PREFIXES = ("text_encoders.", "vae.", "first_stage_model.", "cond_stage_model.", "conditioner.",
                            "model_ema.")

# Modules that are renamed one to one (both .weight and .bias): BFL name -> diffusers name.
_TOP_LEVEL = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "final_layer.linear": "proj_out",
}
_GUIDANCE = {
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
}
_DOUBLE_QKV = {  # fused q|k|v rows -> three projections
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_DOUBLE_NORMS = {  # RMSNorm `.scale` -> `.weight`
    "img_attn.norm.query_norm": "attn.norm_q",
    "img_attn.norm.key_norm": "attn.norm_k",
    "txt_attn.norm.query_norm": "attn.norm_added_q",
    "txt_attn.norm.key_norm": "attn.norm_added_k",
}
_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out"}
_SINGLE_LINEAR1 = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")  # fused q|k|v|mlp rows
_SINGLE_NORMS = {"norm.query_norm": "attn.norm_q", "norm.key_norm": "attn.norm_k"}
_NORM_OUT = ("final_layer.adaLN_modulation.1", "norm_out.linear")  # BFL shift|scale, diffusers scale|shift

_WIDTH_KEY = "img_in.weight"  # rows = the transformer's inner dim; used to split linear1


class FluxCheckpointError(ThermVisionError, ValueError):
    """A single file that cannot be this FLUX transformer; the message names the file and what is wrong."""


def conversion_plan(num_layers: int, num_single_layers: int, guidance_embeds: bool) -> dict[str, tuple[str, tuple]]:
    """BFL key -> (operation, diffusers keys) for a transformer of this depth.

    Operations: "copy" (rename), "qkv" (split rows in 3 equal parts), "linear1" (split rows into inner, inner,
    inner, rest), "swap" (BFL's shift|scale halves become diffusers' scale|shift). One table drives both the
    key check and the conversion, so they cannot disagree.
    """
    plan: dict[str, tuple[str, tuple]] = {}

    def linear(bfl: str, targets: str | tuple[str, ...], op: str = "copy") -> None:
        targets = (targets,) if isinstance(targets, str) else targets
        for param in ("weight", "bias"):
            plan[f"{bfl}.{param}"] = (op, tuple(f"{t}.{param}" for t in targets))

    for bfl, diffusers_name in {**_TOP_LEVEL, **(_GUIDANCE if guidance_embeds else {})}.items():
        linear(bfl, diffusers_name)
    for i in range(num_layers):
        src, dst = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for bfl, name in _DOUBLE.items():
            linear(src + bfl, dst + name)
        for bfl, names in _DOUBLE_QKV.items():
            linear(src + bfl, tuple(dst + n for n in names), op="qkv")
        for bfl, name in _DOUBLE_NORMS.items():
            plan[f"{src}{bfl}.scale"] = ("copy", (f"{dst}{name}.weight",))
    for i in range(num_single_layers):
        src, dst = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        for bfl, name in _SINGLE.items():
            linear(src + bfl, dst + name)
        linear(src + "linear1", tuple(dst + n for n in _SINGLE_LINEAR1), op="linear1")
        for bfl, name in _SINGLE_NORMS.items():
            plan[f"{src}{bfl}.scale"] = ("copy", (f"{dst}{name}.weight",))
    linear(_NORM_OUT[0], _NORM_OUT[1], op="swap")
    return plan


def transformer_keys(keys: list[str]) -> tuple[str, list[str]]:
    """(prefix, transformer keys without it): ComfyUI prefixes are stripped, other components dropped."""
    for prefix in COMFY_PREFIXES:
        if any(k.startswith(prefix) for k in keys):
            return prefix, [k[len(prefix):] for k in keys if k.startswith(prefix)]
    return "", [k for k in keys if not k.startswith(OTHER_COMPONENT_PREFIXES)]


def bfl_to_diffusers(checkpoint: Mapping[str, torch.Tensor], plan: dict[str, tuple[str, tuple]] | None = None,
                     inner_dim: int | None = None) -> dict[str, torch.Tensor]:
    """Rename/split a BFL-layout transformer state dict (no prefix) into diffusers' FluxTransformer2DModel keys.

    `plan` defaults to the depth found in the keys; `inner_dim` (the width used to split single blocks' fused
    linear1) defaults to the rows of `img_in.weight`, i.e. the checkpoint's own width. Tensors are returned as
    views (chunks of the originals); nothing is copied here.
    """
    if plan is None:
        plan = conversion_plan(_count_blocks(checkpoint, "double_blocks."), _count_blocks(checkpoint, "single_blocks."),
                               any(k.startswith("guidance_in.") for k in checkpoint))
    inner = inner_dim if inner_dim is not None else checkpoint[_WIDTH_KEY].shape[0]
    converted: dict[str, torch.Tensor] = {}
    for key, (op, targets) in plan.items():
        tensor = checkpoint[key]
        if op == "copy":
            parts = (tensor,)
        elif op == "qkv":
            parts = torch.chunk(tensor, 3, dim=0)
        elif op == "linear1":
            parts = torch.split(tensor, [inner, inner, inner, tensor.shape[0] - 3 * inner], dim=0)
        else:  # swap
            shift, scale = torch.chunk(tensor, 2, dim=0)
            parts = (torch.cat([scale, shift], dim=0),)
        converted.update(zip(targets, parts))
    return converted


def _count_blocks(keys, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def load_flux_transformer(path: str | os.PathLike, config_folder: str | os.PathLike,
                          dtype: torch.dtype, patch=None) -> FluxTransformer2DModel:
    """A FluxTransformer2DModel from a single-file BFL/ComfyUI checkpoint, with the config in
    `config_folder/transformer/config.json`; float8 weights are upcast to `dtype`.

    The key check reads only the safetensors header, before any tensor: the file must hold every key the config
    implies (a non-FLUX file, or FLUX.1-schnell against a FLUX.1-dev config, is named with its missing keys) and
    no other transformer keys (e.g. scaled-fp8 `scale_weight` tensors, whose scaling would be silently lost).
    Then the converted shapes are checked against the config. Only the transformer's tensors are read from an
    all-in-one file. `patch(tensors) -> tensors` may rewrite the BFL-keyed tensors first.
    """
    from diffusers import FluxTransformer2DModel
    from safetensors import safe_open

    path, config_folder = Path(path), Path(config_folder)
    config = FluxTransformer2DModel.load_config(str(config_folder), subfolder="transformer", local_files_only=True)
    plan = conversion_plan(config["num_layers"], config["num_single_layers"], config["guidance_embeds"])
    with safe_open(str(path), framework="pt") as handle:
        all_keys = list(handle.keys())
        prefix, keys = transformer_keys(all_keys)
        _check_keys(path, plan, keys, all_keys)
        tensors = {k: handle.get_tensor(prefix + k) for k in keys}
    if patch is not None:  # e.g. ComfyUI's fp8 LoRA patching, on the BFL keys before conversion
        tensors = patch(tensors)
    with torch.device("meta"):
        expected = FluxTransformer2DModel.from_config(config).state_dict()
    converted = bfl_to_diffusers(tensors, plan, inner_dim=expected["x_embedder.weight"].shape[0])
    for key, tensor in converted.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            source = next(k for k, (_, targets) in plan.items() if key in targets)
            raise FluxCheckpointError(
                f"{path}: {prefix}{source} gives {key} of shape {tuple(tensor.shape)}, but "
                f"{config_folder / 'transformer' / 'config.json'} expects {tuple(expected[key].shape)}; the file is "
                "for a different FLUX model than the --flux-base folder")
    return FluxTransformer2DModel.from_single_file(converted, config=str(config_folder), subfolder="transformer",
                                                   dtype=dtype, local_files_only=True)


def _check_keys(path: Path, plan: dict, keys: list[str], all_keys: list[str]) -> None:
    present = set(keys)
    missing = [k for k in plan if k not in present]
    if missing:
        found = ", ".join(all_keys[:3]) + (", ..." if len(all_keys) > 3 else "") if all_keys else "no tensors"
        what = ("is not a FLUX transformer checkpoint" if len(missing) == len(plan)
                else "does not match the FLUX transformer config")
        hint = ("Pass a BFL/ComfyUI flux1-dev single file (bf16 or fp8) whose model matches --flux-base"
                if "x_embedder.weight" not in present else
                "It is in diffusers' layout: pass the diffusers FLUX folder that holds it as --flux instead")
        raise FluxCheckpointError(
            f"{path} {what}: {len(missing)} of {len(plan)} expected keys are missing, e.g. "
            f"{', '.join(missing[:5])} (the file has {found}). {hint}")
    extra = sorted(present - set(plan))
    if extra:
        hint = (" (a scaled-fp8 checkpoint: its per-tensor scales are not supported; use an unscaled fp8 or a bf16 "
                "file)" if any("scale_weight" in k or "scaled_fp8" in k for k in extra) else "")
        raise FluxCheckpointError(f"{path} has {len(extra)} keys that are not part of the FLUX transformer "
                                  f"config, e.g. {', '.join(extra[:5])}{hint}")
