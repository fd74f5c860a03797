"""What a LoRA file holds, read before anything is applied: its format, its modules and their shapes.

kohya / LyCORIS / PEFT files name one tensor per (module, part): `lora_unet_x.lora_down.weight`, `x.alpha`,
`x.dora_scale`, `x.lokr_w1`, `transformer.x.lora_A.weight`. Grouping keys by module lets the loader say, per file,
which keys were applied and which were not, and refuse malformed modules (rank mismatch, 3-D tensors, non-finite
values) with the key and shapes instead of a torch error deep in PEFT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from thermvision_db.errors import ThermVisionError

# Parts a module's key can end with. Order matters: longer names first so `lokr_w1_a` is not read as `lokr_w1`.
LORA_PARTS = ("lora_down.weight", "lora_up.weight", "lora_A.weight", "lora_B.weight", "lora_magnitude_vector",
              "alpha", "dora_scale", "down.weight", "up.weight")  # the last two: XLabs `processor.qkv_lora1.down`
LYCORIS_PARTS = ("lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_w1", "lokr_w2", "lokr_t2",
                 "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
                 "lora_mid.weight", "oft_blocks", "oft_diag", "diff_b", "diff", "w_norm", "b_norm", "scale", "rescale")
_PART_RE = re.compile(r"^(?P<module>.+)\.(?P<part>" + "|".join(re.escape(p) for p in LORA_PARTS + LYCORIS_PARTS)
                      + r")$")

# LyCORIS algorithms that diffusers cannot load for FLUX.1: named so the refusal says what the file is.
_LYCORIS_FORMATS = {"lokr_": "LyCORIS LoKr (Kronecker product: lokr_w1/lokr_w2)",
                    "hada_": "LyCORIS LoHa (Hadamard product: hada_w1_a/hada_w2_b)",
                    "oft_": "LyCORIS OFT/BOFT (orthogonal: oft_blocks)",
                    "lora_mid": "LyCORIS LoCon with Tucker decomposition (lora_mid)"}


BFL_CONTROL = "BFL control (FLUX.1 Canny/Depth)"
# Layouts diffusers' FLUX loader reads without converting their names: its key names stay, nothing lands.
UNCONVERTED_LAYOUTS = {
    "ComfyUI with PEFT names": "diffusers converts 'diffusion_model.' names only with kohya factors "
                               "(lora_down/lora_up)",
    "BFL names with PEFT factors": "diffusers converts FLUX's original block names (double_blocks, single_blocks) "
                                   "only in kohya, XLabs or BFL control files",
}


class LoraError(ThermVisionError, ValueError):
    """A LoRA file that cannot be applied to this transformer; the message names the file and the problem."""


@dataclass
class LoraModule:
    """The tensors of one adapted layer, keyed by part ('lora_down.weight', 'alpha', ...)."""

    name: str
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return [f"{self.name}.{part}" for part in self.parts] if self.name else list(self.parts)

    @property
    def down(self) -> str | None:
        return next((p for p in ("lora_down.weight", "lora_A.weight", "down.weight") if p in self.parts), None)

    @property
    def up(self) -> str | None:
        return next((p for p in ("lora_up.weight", "lora_B.weight", "up.weight") if p in self.parts), None)


def group_modules(state_dict: dict[str, torch.Tensor]) -> dict[str, LoraModule]:
    """Keys grouped by module; a key with no known part becomes its own module with part '' (never applied)."""
    modules: dict[str, LoraModule] = {}
    for key, tensor in state_dict.items():
        match = _PART_RE.match(key)
        if match:
            modules.setdefault(match["module"], LoraModule(match["module"])).parts[match["part"]] = tensor
        else:
            modules[key] = LoraModule("", {key: tensor})
    return modules


def lycoris_format(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The LyCORIS algorithm's name when the file uses one diffusers cannot load for FLUX.1, else None."""
    for marker, name in _LYCORIS_FORMATS.items():
        if any(f".{marker}" in key for key in state_dict):
            return name
    return None


def describe_format(state_dict: dict[str, torch.Tensor]) -> str:
    """A short name for the file's layout, recorded in the still sidecar."""
    keys = list(state_dict)
    lycoris = lycoris_format(state_dict)
    if lycoris:
        return lycoris
    dora = " + DoRA magnitudes" if any(k.endswith((".dora_scale", ".lora_magnitude_vector")) for k in keys) else ""
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        return "kohya" + dora
    if any(".processor." in k for k in keys):
        return "XLabs" + dora
    if any("query_norm.scale" in k for k in keys):  # what diffusers' own check for these files looks at
        return BFL_CONTROL
    plain = any(".lora_A." in k or ".lora_B." in k for k in keys)
    if any(k.startswith("diffusion_model.") for k in keys):
        return ("ComfyUI with PEFT names" if plain else "ComfyUI") + dora
    if plain and any(k.startswith(("double_blocks.", "single_blocks.")) for k in keys):
        return "BFL names with PEFT factors" + dora
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "diffusers/PEFT" + dora
    return "unknown"


def all_finite(tensor: torch.Tensor) -> bool:
    """True when no value is NaN or inf. One float64 sum (no bool copy of the tensor): any NaN/inf makes it
    non-finite, and float64 cannot overflow on float32/16 values; only a non-finite sum needs the full check."""
    values = tensor.float() if tensor.element_size() == 1 else tensor  # fp8 has neither float64 sums nor isfinite
    return bool(torch.isfinite(values.sum(dtype=torch.float64))) or bool(torch.isfinite(values).all())


def check_modules(modules: dict[str, LoraModule], path) -> None:
    """Refuse malformed modules naming key and shapes: non-finite values, wrong ranks, non-2-D factors."""
    for module in modules.values():
        for part, tensor in module.parts.items():
            key = f"{module.name}.{part}" if module.name else part
            if tensor.is_floating_point() and not all_finite(tensor):
                raise LoraError(f"LoRA {path}: {key!r} holds non-finite values (NaN or inf); the file is damaged")
        down, up = module.down, module.up
        if down is None and up is None:
            continue
        if down is None or up is None:
            have = down or up
            raise LoraError(f"LoRA {path}: module {module.name!r} has {have!r} but not its "
                            f"{'up' if up is None else 'down'} factor; the file is incomplete")
        d, u = module.parts[down], module.parts[up]
        if d.dim() != 2 or u.dim() != 2:
            raise LoraError(f"LoRA {path}: {module.name}.{down} has shape {tuple(d.shape)} and {module.name}.{up} "
                            f"{tuple(u.shape)}; FLUX LoRA factors are 2-D matrices (rank x in, out x rank)")
        if 0 in (d.shape[0], u.shape[1]) or 0 in (d.shape[1], u.shape[0]):
            raise LoraError(f"LoRA {path}: {module.name}.{down} has shape {tuple(d.shape)} and {module.name}.{up} "
                            f"{tuple(u.shape)}: a factor of rank 0 (or an empty side) adds nothing; the file is damaged")
        if d.shape[0] != u.shape[1]:
            raise LoraError(f"LoRA {path}: rank mismatch in {module.name!r}: {down} {tuple(d.shape)} has rank "
                            f"{d.shape[0]} but {up} {tuple(u.shape)} has rank {u.shape[1]}")
        if "alpha" in module.parts and module.parts["alpha"].numel() != 1:
            raise LoraError(f"LoRA {path}: {module.name}.alpha has shape {tuple(module.parts['alpha'].shape)}; "
                            "alpha is one number")
        for magnitude in ("dora_scale", "lora_magnitude_vector"):
            if magnitude in module.parts:
                check_magnitude(module, magnitude, tuple(u.shape), path)


def check_magnitude(module: LoraModule, part: str, up_shape: tuple, path) -> None:
    """DoRA magnitudes must be one per output row (LyCORIS' default wd_on_out): that is what PEFT applies."""
    shape = tuple(module.parts[part].shape)
    if shape in ((up_shape[0],), (up_shape[0], 1)):
        return
    reason = (" (per input column: LyCORIS wd_on_out=False, which PEFT's DoRA cannot apply)"
              if len(shape) == 2 and shape[0] == 1 else "")
    raise LoraError(f"LoRA {path}: DoRA magnitude {module.name}.{part} has shape {shape}, but the layer has "
                    f"{up_shape[0]} output rows{reason}; expected ({up_shape[0]}, 1)")
