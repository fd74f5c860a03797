"""Reading and writing LivePortrait weights in the three published layouts.

- upstream `.pth`: `module.` (DDP) prefixes; S is `{retarget_shoulder, retarget_mouth, retarget_eye}` nested dicts;
  G's convs are spectral-normed (`weight_orig`, `weight_u`, `weight_v`).
- ComfyUI `.safetensors`: the same tensors, S flattened as `retarget_{shoulder,mouth,eye}_module.mlp.*`.
- ThermVision: `thermal_motion_extractor` and `thermal_spade_generator` file names, either format.

Only safetensors and `torch.load(weights_only=True)` are used. Spectral norm is folded once at load with
torch's own eval-mode operations (weight = weight_orig / dot(u, mv(W, v)) in the weight's dtype). Loading is
strict; problems are named.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from thermvision_db.errors import ThermVisionError

from .networks.stitching_retargeting_network import GROUPS

ROLES = ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator",
         "stitching_retargeting_module")
# File stems tried for each role, first match wins (ThermVision names before upstream ones).
FILE_STEMS = {
    "appearance_feature_extractor": ("appearance_feature_extractor",),
    "motion_extractor": ("thermal_motion_extractor", "motion_extractor"),
    "warping_module": ("warping_module",),
    "spade_generator": ("thermal_spade_generator", "spade_generator"),
    "stitching_retargeting_module": ("stitching_retargeting_module",),
}
SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
SPECTRAL_LEAVES = ("conv_0", "conv_1", "conv_s")


class CheckpointError(ThermVisionError, ValueError):
    """A checkpoint file that cannot be used, with the file and the reason in the message."""


def read_tensors(path: str | os.PathLike) -> dict:
    """Raw (possibly nested) dict of tensors from a .safetensors or a weights-only torch file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable .safetensors file: {err}") from err
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{path} could not be loaded with torch.load(weights_only=True) (only plain "
                                  f"tensors and containers are accepted): {weights_only_cause(err)}") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} holds a {type(data).__name__}, expected a dict of tensors")
        return data
    raise CheckpointError(f"{path}: unsupported checkpoint type {path.suffix!r}; use .safetensors or .pth")


def weights_only_cause(err: Exception) -> str:
    """The one line of torch's weights-only refusal that says what the file asked for (e.g. `Unsupported global:
    GLOBAL builtins.exec`), without torch's advice to retry with weights_only=False, which would run it."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1].strip()
        line = rest.splitlines()[0] if rest else "refused"
        return "refused " + line.split(" was not an allowed global")[0].strip()[:200]
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"{type(err).__name__}: {first[:200]}"


def flatten(data: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts -> dotted keys; unwraps a lone 'state_dict'/'model' wrapper."""
    if set(data) in ({"state_dict"}, {"model"}):
        data = next(iter(data.values()))
    out: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, torch.Tensor):
            out[name] = value
        else:
            raise CheckpointError(f"entry {name!r} is a {type(value).__name__}, not a tensor")
    return out


def check_weight_values(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Refuse weights that would be cast and rendered black: integer/bool weights, and NaN/inf values.

    Every LivePortrait parameter and buffer is floating point except BatchNorm's `num_batches_tracked` counter;
    an int8 or bool tensor is a quantised or damaged file, never something a cast could repair.
    """
    for key, tensor in sd.items():
        if key.endswith("num_batches_tracked"):
            continue
        if not tensor.is_floating_point():
            raise CheckpointError(f"tensor {key!r} is stored as {str(tensor.dtype).removeprefix('torch.')}; "
                                  "LivePortrait weights must be float (fp32/fp16/bf16): the file is quantised or "
                                  "damaged")
        values = tensor.float() if tensor.element_size() == 1 else tensor  # fp8 has no float64 sum
        if not bool(torch.isfinite(values.sum(dtype=torch.float64))):  # a NaN/inf anywhere makes the sum so
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"tensor {key!r} holds {bad} non-finite value(s) (NaN or inf) of "
                                  f"{tensor.numel()}; the file is damaged")
    return sd


def strip_ddp(key: str) -> str:
    """Drop `module` path segments (DDP/DataParallel), keeping names like `retarget_eye_module`."""
    return ".".join(part for part in key.split(".") if part != "module")


def regroup_stitching(key: str) -> str:
    """`retarget_shoulder.mlp.0.weight` or `retarget_shoulder_module.mlp.0.weight` -> `stitching.mlp.0.weight`."""
    for ours, theirs in GROUPS.items():
        for sep in ("_module.", "."):
            if key.startswith(theirs + sep):
                return ours + "." + key[len(theirs + sep):]
    return key


def fold_spectral_norm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every `x.weight_orig/_u/_v` triple by `x.weight` = weight_orig / sigma (torch's eval formula)."""
    out = dict(sd)
    for key in [k for k in sd if k.endswith(".weight_orig")]:
        base = key[: -len("_orig")]
        try:
            u, v = sd[base + "_u"], sd[base + "_v"]
        except KeyError as err:
            raise CheckpointError(f"spectral-norm weight {key} lacks its {err.args[0]} vector") from None
        w = sd[key]
        # torch.nn.utils.spectral_norm in eval: sigma = dot(u, mv(W_mat, v)), weight = weight_orig / sigma, both
        # in the weight's own dtype (fp32 for the published files), so the folded weight is torch's, bit for bit
        # fresh (aligned) copies: a tensor read from inside a safetensors buffer may sit at an offset that sends
        # the CPU reduction down another vector path, moving sigma's last bit between file formats
        w, u, v = w.clone(), u.to(w.dtype).clone(), v.to(w.dtype).clone()
        sigma = torch.dot(u, torch.mv(w.reshape(w.shape[0], -1), v))
        out[base] = w / sigma
        for k in (key, base + "_u", base + "_v"):
            del out[k]
    return out


def normalise_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        new = regroup_stitching(strip_ddp(key))
        if new in out:
            raise CheckpointError(f"two entries map to {new!r} after removing prefixes")
        out[new] = value
    return fold_spectral_norm(out)


def load_into(module: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with every problem named: missing, unexpected, and shape-mismatched keys."""
    own = module.state_dict()
    sd = dict(sd)
    for key in own:  # BN step counters are unused at inference; some converters drop them
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = own[key].clone()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:12])}"
                         f"{' ...' if len(unexpected) > 12 else ''}")
        if wrong:
            parts.append(f"shape mismatches ({len(wrong)}): {'; '.join(wrong[:8])}")
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + " | ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in sd.items()})


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read one checkpoint file into our parameter names (prefixes stripped, S regrouped, spectral norm folded)."""
    try:
        return normalise_keys(check_weight_values(flatten(read_tensors(path))))
    except CheckpointError as err:
        if str(path) in str(err):
            raise
        raise CheckpointError(f"{path}: {err}") from None


def find_checkpoint(folder: str | os.PathLike, role: str) -> Path:
    """The file for `role` in `folder` (searched recursively), preferring ThermVision names and safetensors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"weights folder {folder} does not exist")
    for stem in FILE_STEMS[role]:
        for suffix in SUFFIXES:
            hits = sorted(folder.rglob(stem + suffix))
            if hits:
                return hits[0]
    names = [s + x for s in FILE_STEMS[role] for x in (".safetensors", ".pth")]
    raise CheckpointError(f"no {role} weights in {folder}: looked for {', '.join(names)}")


def image_channels(sd: dict[str, torch.Tensor], key: str, source: str) -> int:
    """Input channel count read from the first conv weight (thermal forks may differ from 3)."""
    if key not in sd:
        raise CheckpointError(f"{source} has no {key!r}; is it the right network?")
    return int(sd[key].shape[1])


# ---------------------------------------------------------------- writing
def spectral_triplets(sd: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Express each SPADE-block conv weight W as (weight_orig, weight_u, weight_v) that folds back to W.

    With a unit v and u = W v / |W v|^2, u . (W v) = 1, so any weight_orig = c * W folds to exactly W.
    (Published files have a unit u from power iteration; the fold formula is the same.)
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, w in sd.items():
        parts = key.split(".")
        if len(parts) >= 3 and parts[-1] == "weight" and parts[-2] in SPECTRAL_LEAVES:
            base = key[: -len(".weight")]
            mat = w.double().reshape(w.shape[0], -1)
            v = torch.randn(mat.shape[1], generator=gen, dtype=torch.float64)
            v = v / v.norm()
            wv = mat @ v
            scale = 1.0 + torch.rand((), generator=gen, dtype=torch.float64)
            out[base + ".weight_orig"] = (w.double() * scale).to(w.dtype)
            out[base + ".weight_u"] = (wv / wv.dot(wv)).to(w.dtype)
            out[base + ".weight_v"] = v.to(w.dtype)
        else:
            out[key] = w
    return out


def save_network(sd: dict[str, torch.Tensor], path: str | os.PathLike, role: str, layout: str) -> Path:
    """Write one network in `layout` ('upstream' .pth or 'comfyui'/'thermvision' .safetensors)."""
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    if role == "spade_generator":
        sd = spectral_triplets(sd)
    if layout == "upstream":
        if role == "stitching_retargeting_module":
            data: dict = {theirs: {f"module.{k[len(ours) + 1:]}": v for k, v in sd.items() if k.startswith(ours + ".")}
                          for ours, theirs in GROUPS.items()}
        else:
            data = sd
        tmp = path.with_name(path.name + ".partial")
        torch.save(data, tmp)
        os.replace(tmp, path)
        return path
    if role == "stitching_retargeting_module":
        renamed = {}
        for key, value in sd.items():
            ours, rest = key.split(".", 1)
            renamed[f"{GROUPS[ours]}_module.{rest}"] = value
        sd = renamed
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".partial")
    save_file(sd, str(tmp))
    os.replace(tmp, path)
    return path
