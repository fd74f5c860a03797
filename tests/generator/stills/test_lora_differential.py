"""The same LoRA file through diffusers' own FLUX loader (`load_lora_weights(path)` + `fuse_lora`) and through the
project's `load_lora`: the fused weights must agree (docs/generator-hostile-inputs.md, 'LoRA')."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxPipeline
from safetensors.torch import save_file

from generator.stills.lora import LoraError, load_lora
from generator.stills.tiny_flux import TINY_INNER_DIM, build_tiny_flux

D = TINY_INNER_DIM
TARGETS = ("transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "single_transformer_blocks.0.proj_out")
pytestmark = pytest.mark.usefixtures("private_hash_cache")


def _factors(pipe, rank: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in TARGETS:
        layer = pipe.transformer.get_submodule(name)
        out[f"{name}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=g) * 0.1
        out[f"{name}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=g) * 0.1
    return out


def _diffusers_fused(path, scale: float) -> dict[str, torch.Tensor]:
    pipe = build_tiny_flux()
    pipe.load_lora_weights(str(path), adapter_name="ref")
    pipe.fuse_lora(lora_scale=scale, adapter_names=["ref"])
    pipe.unload_lora_weights()
    return {k: v.detach().clone() for k, v in pipe.transformer.state_dict().items()}


def _project_fused(path, scale: float) -> tuple[dict[str, torch.Tensor], dict]:
    pipe = build_tiny_flux()
    record = load_lora(pipe, path, scale=scale)
    return {k: v.detach().clone() for k, v in pipe.transformer.state_dict().items()}, record


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("metadata", [{"r": 2, "lora_alpha": 8}, {"r": 2, "lora_alpha": 1}, None])
def test_peft_files_saved_by_diffusers_match_diffusers_loader(tmp_path, metadata):
    """PEFT layout with lora_alpha in the metadata (diffusers' save_lora_weights) and without metadata."""
    base = build_tiny_flux()
    layers = _factors(base, rank=2)
    path = tmp_path / "peft.safetensors"
    if metadata is None:
        save_file({f"transformer.{k}": v for k, v in layers.items()}, str(path))
    else:
        FluxPipeline.save_lora_weights(tmp_path, transformer_lora_layers=layers, weight_name=path.name,
                                       transformer_lora_adapter_metadata={**metadata, "target_modules": list(TARGETS)})
    reference = _diffusers_fused(path, 0.9)
    ours, record = _project_fused(path, 0.9)
    base_weights = base.transformer.state_dict()
    assert _max_difference(reference, base_weights) > 1e-3  # the LoRA did change the weights
    assert _max_difference(ours, reference) < 1e-6
    expected = [round(0.9 * metadata["lora_alpha"] / 2, 8)] if metadata else [0.9]
    assert record["effective_scale"] == expected


def test_alpha_keys_beside_diffusers_keys_match_diffusers_loader(tmp_path):
    base = build_tiny_flux()
    layers = {f"transformer.{k}": v for k, v in _factors(base, rank=4, seed=1).items()}
    layers.update({f"transformer.{t}.alpha": torch.tensor(16.0) for t in TARGETS})
    path = tmp_path / "alphas.safetensors"
    save_file(layers, str(path))
    assert _max_difference(_project_fused(path, 1.0)[0], _diffusers_fused(path, 1.0)) < 1e-6


def test_rank_zero_factors_are_refused_naming_the_key(tmp_path):
    layers = {f"transformer.{k}": v[:0] if "lora_A" in k else v[:, :0]
              for k, v in _factors(build_tiny_flux(), rank=2).items()}
    path = tmp_path / "rank0.safetensors"
    save_file(layers, str(path))
    with pytest.raises(LoraError, match=r"(to_q|to_k|proj_out)\.lora_A\.weight has shape \(0, .*rank 0"):
        load_lora(build_tiny_flux(), path)


def test_an_alpha_that_overflows_the_merged_weights_is_refused(tmp_path):
    pipe = build_tiny_flux()
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    layers = {f"transformer.{k}": v for k, v in _factors(pipe, rank=2).items()}
    layers.update({f"transformer.{t}.alpha": torch.tensor(3e38) for t in TARGETS})
    path = tmp_path / "huge_alpha.safetensors"
    save_file(layers, str(path))
    with pytest.raises(LoraError, match=r"(to_q|to_k|proj_out).*(non-finite|overflow)"):
        load_lora(pipe, path)
    assert _max_difference(pipe.transformer.state_dict(), before) == 0  # nothing stays applied


def test_xlabs_files_match_diffusers_loader(tmp_path):
    """The x-flux layout (`double_blocks.N.processor.qkv_lora1.down.weight`), no alpha, as diffusers reads it."""
    g = torch.Generator().manual_seed(5)
    layers = {}
    for name, rows in (("qkv_lora1", 3 * D), ("proj_lora1", D), ("qkv_lora2", 3 * D), ("proj_lora2", D)):
        layers[f"double_blocks.0.processor.{name}.down.weight"] = torch.randn(2, D, generator=g) * 0.1
        layers[f"double_blocks.0.processor.{name}.up.weight"] = torch.randn(rows, 2, generator=g) * 0.1
    path = tmp_path / "xlabs.safetensors"
    save_file(layers, str(path))
    ours, record = _project_fused(path, 0.9)
    reference = _diffusers_fused(path, 0.9)
    assert _max_difference(reference, build_tiny_flux().transformer.state_dict()) > 1e-3
    assert _max_difference(ours, reference) < 1e-6
    assert record["format"] == "XLabs" and record["applied_keys"] == len(layers) == 8


def test_kohya_and_comfyui_files_match_diffusers_loader(tmp_path):
    from generator.stills.tiny_flux import write_tiny_kohya_lora
    from safetensors.torch import load_file

    kohya = write_tiny_kohya_lora(tmp_path / "kohya.safetensors")
    comfy = tmp_path / "comfy.safetensors"
    save_file({k.replace("lora_unet_", "diffusion_model.").replace("double_blocks_", "double_blocks.")
               .replace("_img_attn_", ".img_attn.").replace("_txt_attn_", ".txt_attn."): v
               for k, v in load_file(str(kohya)).items()}, str(comfy))
    for path in (kohya, comfy):
        assert _max_difference(_project_fused(path, 0.9)[0], _diffusers_fused(path, 0.9)) < 1e-6, path.name
