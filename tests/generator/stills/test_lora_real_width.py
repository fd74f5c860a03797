"""LoRA layouts at FLUX.1's real width (inner 3072, MLP 12288), conversion only: the same file through diffusers'
own `FluxPipeline.lora_state_dict` and through the project's per-module conversion, each layer's merged delta
(scaling x B @ A) compared (docs/generator-hostile-inputs.md, 'LoRA'). The factors are rank 2, so this needs no
12-billion-parameter model; kohya's `linear1` / `qkv` splits only work at the real sizes. The fused comparison
through diffusers' `load_lora_weights` on a built model is `test_lora_differential.py` (tiny width)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import FluxPipeline
from safetensors.torch import save_file

from generator.stills.lora import LoraError, _convert_per_module, load_lora
from generator.stills.lora_checks import adapter_metadata, apply_adapter_metadata
from generator.stills.lora_keys import describe_format, group_modules
from generator.stills.tiny_flux import build_tiny_flux

D, MLP, RANK = 3072, 12288, 2
# FLUX.1 layer -> (out, in) in the original (BFL) names; kohya names replace '.' by '_'
BFL_LAYERS = {
    "double_blocks.0.img_attn.qkv": (3 * D, D), "double_blocks.0.img_attn.proj": (D, D),
    "double_blocks.0.img_mlp.0": (MLP, D), "double_blocks.0.img_mlp.2": (D, MLP),
    "double_blocks.0.img_mod.lin": (6 * D, D), "double_blocks.0.txt_attn.qkv": (3 * D, D),
    "double_blocks.0.txt_mlp.0": (MLP, D), "double_blocks.0.txt_mod.lin": (6 * D, D),
    "single_blocks.0.linear1": (3 * D + MLP, D), "single_blocks.0.linear2": (D, D + MLP),
    "single_blocks.0.modulation.lin": (3 * D, D),
}
# diffusers' names of the same layers (what AI-toolkit and diffusers' save_lora_weights write)
DIFFUSERS_LAYERS = {
    "transformer_blocks.0.attn.to_q": (D, D), "transformer_blocks.0.attn.add_k_proj": (D, D),
    "transformer_blocks.0.ff.net.0.proj": (MLP, D), "transformer_blocks.0.norm1.linear": (6 * D, D),
    "single_transformer_blocks.0.proj_mlp": (MLP, D), "single_transformer_blocks.0.proj_out": (D, D + MLP),
    "single_transformer_blocks.0.attn.to_v": (D, D),
}
pytestmark = pytest.mark.usefixtures("private_hash_cache")


def _factors(layers: dict, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {name: (torch.randn(RANK, i, generator=g) * 0.05, torch.randn(o, RANK, generator=g) * 0.05)
            for name, (o, i) in layers.items()}


def _kohya(prefix: str, alpha: float | None) -> dict:
    out = {}
    for name, (down, up) in _factors(BFL_LAYERS, 1).items():
        key = f"lora_unet_{name.replace('.', '_')}" if prefix == "lora_unet_" else f"diffusion_model.{name}"
        out[f"{key}.lora_down.weight"], out[f"{key}.lora_up.weight"] = down, up
        if alpha is not None:
            out[f"{key}.alpha"] = torch.tensor(alpha)
    return out


def _peft(alpha: float | None) -> dict:
    out = {}
    for name, (a, b) in _factors(DIFFUSERS_LAYERS, 2).items():
        out[f"transformer.{name}.lora_A.weight"], out[f"transformer.{name}.lora_B.weight"] = a, b
        if alpha is not None:
            out[f"transformer.{name}.alpha"] = torch.tensor(alpha)
    return out


def _xlabs() -> dict:
    out = {}
    for block in range(2):
        for name, rows in (("qkv_lora1", 3 * D), ("proj_lora1", D), ("qkv_lora2", 3 * D), ("proj_lora2", D)):
            g = torch.Generator().manual_seed(block * 10 + len(name))
            out[f"double_blocks.{block}.processor.{name}.down.weight"] = torch.randn(RANK, D, generator=g) * 0.05
            out[f"double_blocks.{block}.processor.{name}.up.weight"] = torch.randn(rows, RANK, generator=g) * 0.05
    return out


def _diffusers_deltas(path, metadata_alpha: float | None = None) -> dict[str, torch.Tensor]:
    """diffusers' reading: its conversion, then the scaling its loader gives (network alphas: alpha / rank, as
    `load_lora_weights` passes them to PEFT; metadata: PEFT's lora_alpha / r)."""
    state, alphas, metadata = FluxPipeline.lora_state_dict(str(path), return_alphas=True, return_lora_metadata=True)
    deltas = {}
    for key in [k for k in state if k.endswith(".lora_A.weight")]:
        module = key.removesuffix(".lora_A.weight")
        a, b = state[key], state[f"{module}.lora_B.weight"]
        scaling = 1.0
        if alphas and f"{module}.alpha" in alphas:
            scaling = float(alphas[f"{module}.alpha"]) / a.shape[0]
        if metadata:
            scaling = float(metadata["transformer.lora_alpha"]) / float(metadata["transformer.r"])
        deltas[module] = scaling * _applied(a, b)
    return deltas


def _applied(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """B @ A applied to fixed random probes: equal for equal deltas, without forming 21504 x 3072 matrices."""
    probes = torch.randn(a.shape[1], 8, generator=torch.Generator().manual_seed(a.shape[1]), dtype=torch.float64)
    return b.double() @ (a.double() @ probes)


def _project_deltas(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    converted, _, ignored = _convert_per_module(FluxPipeline, group_modules(load_file(str(path))), path)
    assert ignored == []
    apply_adapter_metadata(converted, adapter_metadata(path))
    return {k.removesuffix(".lora_A.weight"): _applied(converted[k], converted[f"{k.removesuffix('.lora_A.weight')}"
                                                                              ".lora_B.weight"])
            for k in converted if k.endswith(".lora_A.weight")}


LAYOUTS = {
    "kohya, alpha 4": (lambda: _kohya("lora_unet_", 4.0), {}),
    "kohya, no alpha": (lambda: _kohya("lora_unet_", None), {}),
    "ComfyUI (diffusion_model., kohya factors), alpha 1": (lambda: _kohya("diffusion_model.", 1.0), {}),
    "AI-toolkit (transformer. + PEFT names)": (lambda: _peft(None), {"software": "ai-toolkit"}),
    "AI-toolkit with alpha tensors": (lambda: _peft(8.0), {"software": "ai-toolkit"}),
    "PEFT, lora_alpha 8 in metadata": (lambda: _peft(None), {"lora_adapter_metadata": json.dumps(
        {"transformer.r": RANK, "transformer.lora_alpha": 8, "transformer.target_modules": list(DIFFUSERS_LAYERS)})}),
    "XLabs": (_xlabs, {}),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_real_width_conversion_equals_diffusers(tmp_path, layout):
    build, metadata = LAYOUTS[layout]
    path = tmp_path / "lora.safetensors"
    save_file(build(), str(path), metadata=metadata or None)
    reference, ours = _diffusers_deltas(path), _project_deltas(path)
    assert reference and sorted(ours) == sorted(reference)
    largest = max(float(d.abs().max()) for d in reference.values())
    difference = max(float((ours[k] - reference[k]).abs().max()) for k in reference)
    assert largest > 1e-4 and difference <= 1e-6 * largest, (layout, difference, largest)


@pytest.mark.parametrize("prefix, layout", [("", "BFL names with PEFT factors"),
                                            ("diffusion_model.", "ComfyUI with PEFT names")])
def test_layouts_diffusers_does_not_convert_are_refused_with_the_reason(tmp_path, prefix, layout):
    state = {}
    for name, (a, b) in _factors({"double_blocks.0.img_attn.qkv": (3 * D, D)}, 3).items():
        state[f"{prefix}{name}.lora_A.weight"], state[f"{prefix}{name}.lora_B.weight"] = a, b
    path = tmp_path / "unconverted.safetensors"
    save_file(state, str(path))
    converted = FluxPipeline.lora_state_dict(str(path))
    assert not any(k.startswith("transformer.") for k in converted)  # diffusers would land nothing from it
    assert describe_format(state) == layout
    with pytest.raises(LoraError, match=rf"unconverted\.safetensors \({layout} layout\): none of its keys.*re-save"):
        load_lora(build_tiny_flux(), path)


def test_a_bfl_control_lora_is_refused_by_name(tmp_path):
    state = {"double_blocks.0.img_attn.norm.query_norm.scale": torch.ones(128),
             "double_blocks.0.img_attn.qkv.lora_A.weight": torch.zeros(RANK, D),
             "double_blocks.0.img_attn.qkv.lora_B.weight": torch.zeros(3 * D, RANK)}
    path = tmp_path / "canny.safetensors"
    save_file(state, str(path))
    with pytest.raises(LoraError, match=r"canny\.safetensors is a BFL control \(FLUX\.1 Canny/Depth\) LoRA"):
        load_lora(build_tiny_flux(), path)
