"""ComfyUI's way of putting a LoRA into fp8 weights: patch in fp32, round back to fp8 stochastically.

Why: the paper's graph loads flux1-dev in float8_e4m3fn and applies the thermal LoRA with LoraLoader. ComfyUI
(`comfy/model_patcher.py` `patch_weight_to_device`, `comfy/lora.py`, `comfy/float.py`, the manual path before
comfy_kitchen) then, for every patched weight `key` (e.g. `diffusion_model.double_blocks.0.img_attn.qkv.weight`,
the fused BFL matrices):
1. W = float32(W_fp8); W += (strength * alpha / rank) * (up @ down)       (fp32)
2. a fresh generator on the weight's device, seeded with string_to_seed(key) (a CRC-32 of the key);
3. rows in slices of round(rows / max(1, numel / 4096^2)); per slice, in float16:
   exponent = clamp(floor(log2|x|) + bias, 0, 2^E - 1); mantissa = (|x| / 2^(e - bias) - 1) 2^M (normal) or
   |x| / 2^(1 - bias - M) (subnormal); mantissa = floor(mantissa + rand) / 2^M with rand = torch.rand(slice,
   float16, generator); x = sign * 2^(e - bias) (1 + mantissa) (or 2^(1 - bias) mantissa); clamp to fp8's range;
4. the result is stored as fp8, and the model computes in bf16 from it.
The project's default fuses the LoRA into upcast weights instead (no rounding back). This module reproduces
ComfyUI's result; with the weights on a GPU the random draws are torch's CUDA ones, reproduced here on the CPU by
`cuda_noise` (the GPU model matters for tensors over 256 x its resident blocks: name it).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping

import torch

from thermvision_db.errors import InputError

FP8_FORMATS = {torch.float8_e4m3fn: (4, 3, 7), torch.float8_e5m2: (5, 2, 15)}  # exponent bits, mantissa, bias
SLICE_NUMEL = 4096 * 4096


def comfy_key_seed(key: str) -> int:
    """ComfyUI's `string_to_seed`: a bitwise CRC-32 (IEEE, reflected) of the key, i.e. zlib.crc32."""
    return zlib.crc32(key.encode())


def round_to_fp8(x: torch.Tensor, dtype: torch.dtype, rand: torch.Tensor) -> torch.Tensor:
    """ComfyUI's `manual_stochastic_round_to_float8` with the uniform draws given (float16, x's shape)."""
    exponent_bits, mantissa_bits, bias = FP8_FORMATS[dtype]
    x = x.half()
    sign = torch.sign(x)
    abs_x = x.abs()
    sign = torch.where(abs_x == 0, 0, sign)
    exponent = torch.clamp(torch.floor(torch.log2(abs_x)) + bias, 0, 2 ** exponent_bits - 1)
    normal = ~(exponent == 0)
    mantissa = torch.where(normal, (abs_x / (2.0 ** (exponent - bias)) - 1.0) * (2 ** mantissa_bits),
                           abs_x / (2.0 ** (-bias + 1 - mantissa_bits)))
    mantissa += rand
    abs_x[:] = mantissa.floor() / (2 ** mantissa_bits)
    sign *= torch.where(normal, (2.0 ** (exponent - bias)) * (1.0 + abs_x), (2.0 ** (-bias + 1)) * abs_x)
    info = torch.finfo(dtype)
    torch.clamp(sign, min=info.min, max=info.max, out=sign)
    return sign


def stochastic_round(value: torch.Tensor, dtype: torch.dtype, seed: int, *, device: str = "emulate",
                     gpu: str | tuple[int, int] | None = None) -> torch.Tensor:
    """ComfyUI's `stochastic_rounding(value, dtype, seed)` for fp8, its draws made by torch's generator on
    `device` ("cpu", "cuda") or by the CPU emulation of a CUDA generator on `gpu` ("emulate")."""
    from generator.stills.cuda_noise import CudaGeneratorEmulation

    if dtype not in FP8_FORMATS:
        return value.to(dtype)
    if device == "emulate":
        if gpu is None and value.shape[0] and value.numel() > 40 * 4 * 256:  # beyond the smallest GPU's grid
            raise InputError(f"a {tuple(value.shape)} weight is drawn in a GPU-dependent layout: name the GPU "
                             "ComfyUI patched on (gpu=..., one of generator.stills.cuda_noise.GPUS)")
        emulation = CudaGeneratorEmulation(seed, gpu)
        draw = lambda shape: emulation.rand(*shape, dtype=torch.float16)  # noqa: E731
    else:
        generator = torch.Generator(device=device).manual_seed(seed)
        draw = lambda shape: torch.rand(shape, dtype=torch.float16, device=device, generator=generator).cpu()  # noqa: E731
    output = torch.empty_like(value, dtype=dtype)
    slices = max(1, value.numel() / SLICE_NUMEL)
    size = max(1, round(value.shape[0] / slices))
    for i in range(0, value.shape[0], size):
        part = value[i:i + size]
        output[i:i + size].copy_(round_to_fp8(part, dtype, draw(tuple(part.shape)).to(part.device)))
    return output


_KOHYA = re.compile(r"^lora_unet_(double_blocks|single_blocks)_(\d+)_(.+)$")
_MODULES = {"img_attn_qkv": "img_attn.qkv", "img_attn_proj": "img_attn.proj", "img_mlp_0": "img_mlp.0",
            "img_mlp_2": "img_mlp.2", "img_mod_lin": "img_mod.lin", "txt_attn_qkv": "txt_attn.qkv",
            "txt_attn_proj": "txt_attn.proj", "txt_mlp_0": "txt_mlp.0", "txt_mlp_2": "txt_mlp.2",
            "txt_mod_lin": "txt_mod.lin", "linear1": "linear1", "linear2": "linear2",
            "modulation_lin": "modulation.lin"}


def kohya_to_bfl(name: str) -> str | None:
    """`lora_unet_double_blocks_0_img_attn_qkv` -> `double_blocks.0.img_attn.qkv.weight` (None if not FLUX)."""
    match = _KOHYA.match(name)
    if not match or match.group(3) not in _MODULES:
        return None
    return f"{match.group(1)}.{match.group(2)}.{_MODULES[match.group(3)]}.weight"


def patch_fp8_checkpoint(checkpoint: Mapping[str, torch.Tensor], lora: Mapping[str, torch.Tensor], strength: float,
                         *, device: str = "emulate", gpu: str | tuple[int, int] | None = None,
                         prefix: str = "diffusion_model.") -> dict[str, torch.Tensor]:
    """A BFL-layout fp8 transformer state dict with a kohya LoRA patched in as ComfyUI does it (see module doc).

    Keys the LoRA does not touch are returned as they are. `prefix` is how ComfyUI names the key it seeds from.
    """
    patched = dict(checkpoint)
    names = {k.rsplit(".", 2)[0] for k in lora if k.endswith(".lora_down.weight")}
    for name in sorted(names):
        key = kohya_to_bfl(name)
        if key is None or key not in checkpoint:
            raise KeyError(f"LoRA module {name} has no FLUX transformer weight ({key or 'unknown name'})")
        weight = checkpoint[key]
        down = lora[f"{name}.lora_down.weight"].float()
        up = lora[f"{name}.lora_up.weight"].float()
        rank = down.shape[0]
        alpha = float(lora[f"{name}.alpha"]) / rank if f"{name}.alpha" in lora else 1.0
        w32 = weight.float().clone()
        w32 += ((strength * alpha) * torch.mm(up.flatten(start_dim=1), down.flatten(start_dim=1))).reshape(w32.shape)
        patched[key] = stochastic_round(w32, weight.dtype, comfy_key_seed(prefix + key), device=device, gpu=gpu) \
            if weight.dtype in FP8_FORMATS else w32.to(weight.dtype)
    return patched
