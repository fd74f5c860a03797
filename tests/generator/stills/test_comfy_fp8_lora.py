"""ComfyUI's fp8 LoRA patching (fp32 patch + seeded stochastic rounding back to fp8), checked piece by piece."""

import pytest
import torch

from generator.stills.comfy_fp8_lora import (
    comfy_key_seed,
    kohya_to_bfl,
    patch_fp8_checkpoint,
    round_to_fp8,
    stochastic_round,
)
from generator.stills.cuda_noise import CudaGeneratorEmulation

E4M3 = torch.float8_e4m3fn


def comfy_string_to_seed(data: str) -> int:
    """ComfyUI's loop as published (comfy/model_patcher.py), written out as a second implementation."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= ord(byte)
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("key", ["diffusion_model.double_blocks.0.img_attn.qkv.weight", "", "a"])
def test_key_seed_is_comfys_crc(key):
    assert comfy_key_seed(key) == comfy_string_to_seed(key)


def test_rounding_lands_on_one_of_the_two_neighbouring_fp8_values():
    x = torch.tensor([0.3, -1.7, 100.0, 0.001, 0.0, 500.0])
    lo = torch.tensor([0.28125, -1.75, 96.0, 0.0, 0.0, 448.0])  # fp8 e4m3 neighbours of x (2^-9: subnormal step)
    hi = torch.tensor([0.3125, -1.625, 104.0, 0.001953125, 0.0, 448.0])
    for r in (0.0, 0.5, 0.999):
        y = round_to_fp8(x, E4M3, torch.full_like(x, r, dtype=torch.float16)).float()
        assert all(float(v) in (float(a), float(b)) for v, a, b in zip(y, lo, hi))
    assert round_to_fp8(x, E4M3, torch.zeros_like(x, dtype=torch.float16))[0] == 0.28125  # rand 0: round down
    # a value at 3/4 of the step goes up for draws above 1/4 (here 0.3 = 0.28125 + 0.6 * 0.03125)
    assert round_to_fp8(x, E4M3, torch.full_like(x, 0.5, dtype=torch.float16))[0] == 0.3125


def test_stochastic_rounding_is_unbiased_and_seeded():
    x = torch.full((64, 64), 0.3)
    a = stochastic_round(x, E4M3, 11, device="cpu")
    assert a.dtype == E4M3 and torch.equal(a, stochastic_round(x, E4M3, 11, device="cpu"))
    assert not torch.equal(a, stochastic_round(x, E4M3, 12, device="cpu"))
    assert abs(float(a.float().mean()) - 0.3) < 0.002  # E[round] = x (plain rounding would give 0.3125)


def test_emulated_cuda_draws_are_the_ones_the_rounding_uses():
    x = torch.randn(32, 48, generator=torch.Generator().manual_seed(0))
    seed = comfy_key_seed("diffusion_model.single_blocks.0.linear2.weight")
    expected = round_to_fp8(x, E4M3, CudaGeneratorEmulation(seed).rand(32, 48, dtype=torch.float16))
    assert torch.equal(stochastic_round(x, E4M3, seed, device="emulate").float(), expected.to(E4M3).float())


def test_patch_adds_the_scaled_lora_in_fp32_and_rounds_each_key_with_its_own_seed():
    g = torch.Generator().manual_seed(1)
    weights = {"double_blocks.0.img_attn.qkv.weight": (torch.randn(12, 4, generator=g) * 0.1).to(E4M3),
               "single_blocks.0.linear2.weight": (torch.randn(4, 8, generator=g) * 0.1).to(E4M3),
               "final_layer.linear.weight": torch.randn(4, 4, generator=g).to(E4M3)}
    lora = {}
    for name, (rows, cols) in {"lora_unet_double_blocks_0_img_attn_qkv": (12, 4),
                               "lora_unet_single_blocks_0_linear2": (4, 8)}.items():
        lora[f"{name}.lora_down.weight"] = torch.randn(2, cols, generator=g)
        lora[f"{name}.lora_up.weight"] = torch.randn(rows, 2, generator=g) * 0.05
        lora[f"{name}.alpha"] = torch.tensor(1.0)
    out = patch_fp8_checkpoint(weights, lora, 0.9, device="cpu")
    assert out["final_layer.linear.weight"] is weights["final_layer.linear.weight"]
    for name, key in (("lora_unet_double_blocks_0_img_attn_qkv", "double_blocks.0.img_attn.qkv.weight"),
                      ("lora_unet_single_blocks_0_linear2", "single_blocks.0.linear2.weight")):
        exact = weights[key].float() + 0.9 * 0.5 * lora[f"{name}.lora_up.weight"] @ lora[f"{name}.lora_down.weight"]
        assert out[key].dtype == E4M3
        step = torch.maximum(exact.abs() * 2 ** -3, torch.tensor(2.0 ** -9))  # one e4m3 step at this magnitude
        assert ((out[key].float() - exact).abs() <= step + 1e-6).all()
        seed = comfy_key_seed("diffusion_model." + key)
        assert torch.equal(out[key].float(), stochastic_round(exact, E4M3, seed, device="cpu").float())
    assert kohya_to_bfl("lora_unet_single_blocks_3_modulation_lin") == "single_blocks.3.modulation.lin.weight"
    with pytest.raises(KeyError, match="lora_unet_double_blocks_9_img_attn_qkv"):
        patch_fp8_checkpoint(weights, {"lora_unet_double_blocks_9_img_attn_qkv.lora_down.weight": torch.ones(1, 4),
                                       "lora_unet_double_blocks_9_img_attn_qkv.lora_up.weight": torch.ones(12, 1)}, 1.0)
