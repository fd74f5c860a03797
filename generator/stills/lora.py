"""LoRA loading with checks: kohya / ComfyUI / PEFT keys (and DoRA magnitudes) applied to FLUX through diffusers + PEFT.

A LoRA is applied whole or refused. diffusers converts kohya files but drops what it cannot map (DoRA's
`dora_scale`, T5 keys, `diff_b`, unknown modules) with a log warning the project's log quieting hides. So every
module of the file is converted on its own here, each converted key is checked to have landed in a PEFT layer, and
the result is counted per file: applied keys, ignored keys. Ignored keys are an error unless the caller allows them.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from generator.stills.lora_checks import adapter_metadata, apply_adapter_metadata, check_merged_finite
from generator.stills.lora_keys import (
    BFL_CONTROL,
    LORA_PARTS,
    UNCONVERTED_LAYOUTS,
    LoraError,
    LoraModule,
    check_modules,
    describe_format,
    group_modules,
    lycoris_format,
)
from generator.weights import check_safetensors

__all__ = ["LoraError", "load_lora"]
log = logging.getLogger(__name__)

_COMPONENTS = ("transformer", "text_encoder", "text_encoder_2")
_TARGET_SUFFIX = re.compile(r"\.(lora_A\.weight|lora_B\.weight|lora\.(down|up)\.weight|"
                            r"lora_linear_layer\.(down|up)\.weight|lora_magnitude_vector)$")
_SHOWN = 8  # ignored keys quoted in an error; the sidecar records them all


def load_lora(pipe, path: str | os.PathLike, scale: float = 0.9, adapter_name: str = "thermal",
              fuse: bool = True, allow_ignored_keys: bool = False) -> dict:
    """Apply a kohya/FluxTrainer, ComfyUI (`diffusion_model.`) or diffusers/PEFT LoRA file at `scale`.

    The file must be safetensors (read here, never unpickled). Shapes are checked against the transformer
    before loading, so a LoRA for another model fails with a clear message instead of deep in PEFT. DoRA
    magnitudes (`dora_scale`, one per output row) are applied through PEFT's DoRA; LyCORIS LoKr/LoHa/OFT are
    refused by name. Fusing bakes the LoRA into the weights and removes the PEFT wrappers.

    Returns the record for the still sidecar: format, key counts, and the keys that were not applied (only
    possible with `allow_ignored_keys`).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    check_safetensors(path, what="LoRA")
    try:
        raw = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise LoraError(f"LoRA {path} could not be read as safetensors ({err})") from None
    if not raw:
        raise LoraError(f"LoRA {path} holds no tensors")
    lycoris = lycoris_format(raw)
    if lycoris:
        raise LoraError(f"LoRA {path} is a {lycoris} file; diffusers' FLUX.1 loader cannot apply it and the "
                        "project does not apply it partially. Convert it to a plain LoRA (e.g. extract a "
                        "low-rank LoRA from the merged weights) or retrain with network_module=networks.lora_flux")
    if describe_format(raw) == BFL_CONTROL:
        raise LoraError(f"LoRA {path} is a {BFL_CONTROL} LoRA: it conditions FLUX on a control image through a "
                        "widened input layer, which text-to-image stills do not have; use a text-to-image LoRA")
    modules = group_modules(raw)
    check_modules(modules, path)
    converted, sources, ignored = _convert_per_module(pipe, modules, path)
    factors = apply_adapter_metadata(converted, adapter_metadata(path))
    _check_lora_shapes(pipe, converted, path)
    if any(k.endswith(".lora_magnitude_vector") for k in converted):
        converted.update(_plain_lora_magnitudes(pipe, converted, scale))
    if not converted:
        raise LoraError(f"LoRA {path} ({describe_format(raw)} layout): none of its keys matched the FLUX "
                        f"transformer or text encoders{_prefix_hint(raw)}; first keys: {', '.join(list(raw)[:3])}")
    converted, failed = _load_weights(pipe, converted, adapter_name, path)
    lost = failed | _keys_not_landed(pipe, converted, adapter_name)
    for name, keys in sources.items():
        if any(k in lost for k in keys):
            ignored += [k for k in modules[name].keys() if k not in ignored]
    applied_keys = len(raw) - len(ignored)
    if applied_keys == 0 or (ignored and not allow_ignored_keys):
        _remove_adapter(pipe, adapter_name)  # nothing stays half-applied
        if applied_keys == 0:
            raise LoraError(f"LoRA {path} ({describe_format(raw)} layout): none of its keys matched the FLUX "
                            f"transformer or text encoders{_prefix_hint(raw)}")
        shown = ", ".join(ignored[:_SHOWN]) + (f" ... ({len(ignored)} in all)" if len(ignored) > _SHOWN else "")
        raise LoraError(f"LoRA {path} ({describe_format(raw)}): {len(ignored)} of {len(raw)} keys would be ignored "
                        f"by the FLUX loader: {shown}. Refusing to apply it partially; pass "
                        "--lora-allow-ignored-keys (Python: allow_ignored_keys=True) to apply the rest anyway")
    try:
        check_merged_finite(pipe, converted, scale, path)
    except LoraError:
        _remove_adapter(pipe, adapter_name)
        raise
    if fuse:
        pipe.fuse_lora(lora_scale=scale, adapter_names=[adapter_name])
        pipe.unload_lora_weights()
    else:
        pipe.set_adapters([adapter_name], [scale])
    return {"path": str(path), "format": describe_format(raw), "keys": len(raw), "applied_keys": applied_keys,
            "ignored_keys": sorted(ignored), "dora": any(k.endswith(".lora_magnitude_vector") for k in converted),
            "scale": scale, "effective_scale": sorted({round(scale * f, 8) for f in factors}) or [scale],
            "alpha_from": "safetensors metadata" if factors else "file tensors (kohya alpha / rank) or none"}


def _prefix_hint(raw: dict) -> str:
    """The 'transformer.' hint only where it can be the cause: PEFT keys without a component prefix; the reason
    for layouts diffusers reads without converting."""
    layout = describe_format(raw).removesuffix(" + DoRA magnitudes")
    if layout in UNCONVERTED_LAYOUTS:
        return f" ({UNCONVERTED_LAYOUTS[layout]}; re-save it in kohya or diffusers names)"
    if layout == "diffusers/PEFT" and not any(k.startswith(_COMPONENTS) for k in raw):
        return " (a diffusers-format file needs the 'transformer.' prefix)"
    return ""


def _remove_adapter(pipe, adapter_name: str) -> None:
    if adapter_name in {a for names in pipe.get_list_adapters().values() for a in names}:
        pipe.delete_adapters(adapter_name)
    if not any(pipe.get_list_adapters().values()):
        pipe.unload_lora_weights()  # and no empty PEFT wrappers stay behind


def _load_weights(pipe, converted: dict, adapter_name: str, path: Path) -> tuple[dict, set[str]]:
    """Load into PEFT; if diffusers fails on the text-encoder part (kohya `lora_te1_` keys come out in a layout
    its CLIP loader cannot read with recent transformers), load the transformer part alone and report the rest.
    Returns (what was loaded, keys that could not be)."""
    try:
        pipe.load_lora_weights(dict(converted), adapter_name=adapter_name)
        return converted, set()
    except (ValueError, KeyError, RuntimeError, AttributeError) as err:
        _remove_adapter(pipe, adapter_name)
        failed = {k for k in converted if not k.startswith("transformer.")}
        rest = {k: v for k, v in converted.items() if k not in failed}
        if not failed or not rest:
            raise LoraError(f"LoRA {path}: diffusers could not load it ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''})") from None
        log.warning("LoRA %s: its text-encoder keys could not be loaded (%s: %s)", path, type(err).__name__, err)
    try:
        pipe.load_lora_weights(rest, adapter_name=adapter_name)
    except (ValueError, KeyError, RuntimeError, AttributeError) as err:
        _remove_adapter(pipe, adapter_name)
        raise LoraError(f"LoRA {path}: diffusers could not load it ({type(err).__name__}: {err})") from None
    return rest, failed


def _convert_per_module(pipe, modules: dict[str, LoraModule], path: Path):
    """(diffusers state dict, {module: its converted keys}, raw keys nothing came of) — one module at a time, so
    what diffusers drops without an error is seen and counted."""
    converted: dict[str, torch.Tensor] = {}
    sources: dict[str, list[str]] = {}
    ignored: list[str] = []
    for name, module in modules.items():
        # parts diffusers' FLUX loader drops (diff_b, diff, w_norm, ...): counted as ignored, never passed on
        ignored += [f"{name}.{p}" for p in module.parts if name and p not in LORA_PARTS]
        plain = {f"{name}.{p}": v for p, v in module.parts.items() if name and p in LORA_PARTS and p != "dora_scale"}
        plain = plain if name else dict(module.parts)
        try:
            out = _lora_state_dict(pipe, plain) if plain else {}
        except (AssertionError, KeyError, ValueError, RuntimeError, IndexError):
            out = {}
        out = {k: v for k, v in out.items() if k.split(".", 1)[0] in _COMPONENTS}
        if not out:
            ignored += [k for k in module.keys() if k not in ignored]
            continue
        if "dora_scale" in module.parts:
            magnitudes = _dora_magnitudes(pipe, module)
            if magnitudes:
                out.update(magnitudes)
            else:
                ignored.append(f"{name}.dora_scale")
        converted.update(out)
        sources[name] = list(out)
    return converted, sources, ignored


def _lora_state_dict(pipe, state_dict: dict) -> dict:
    """diffusers' conversion; alphas it returns apart (`x.alpha` beside diffusers keys) are baked into lora_B as
    alpha / rank, the scaling diffusers' loader gives them, so the state dict alone carries the file's strength."""
    out = pipe.lora_state_dict(dict(state_dict), return_alphas=True)
    converted, alphas = out if isinstance(out, tuple) else (out, None)
    for key, alpha in (alphas or {}).items():
        up = f"{key.removesuffix('.alpha')}.lora_B.weight"
        if up not in converted:
            raise KeyError(key)  # an alpha whose layer is not in the file: the module is counted as ignored
        converted[up] = converted[up] * (float(alpha) / converted[up].shape[1])
    return converted


def _dora_magnitudes(pipe, module: LoraModule) -> dict[str, torch.Tensor]:
    """kohya/LyCORIS `dora_scale` (out, 1) -> PEFT `lora_magnitude_vector` per diffusers layer.

    diffusers splits fused layers (qkv -> to_q/to_k/to_v) by rows; a rank-1 probe whose up-matrix holds each
    row's number, converted the same way, says which rows of the magnitude go to which layer. Row norms do not
    mix rows, so the split magnitudes are exact.
    """
    down, up = module.parts[module.down], module.parts[module.up]
    rows = up.shape[0]
    probe = {f"{module.name}.{module.down}": torch.ones(1, down.shape[1], dtype=torch.float64),
             f"{module.name}.{module.up}": torch.arange(1, rows + 1, dtype=torch.float64)[:, None],
             f"{module.name}.alpha": torch.tensor(1.0, dtype=torch.float64)}
    magnitude = module.parts["dora_scale"].reshape(-1)
    out = {}
    for key, value in _lora_state_dict(pipe, probe).items():
        if key.endswith(".lora_B.weight") and value.shape[1:] == (1,):
            index = value[:, 0].round().long() - 1
            if torch.equal(index.double() + 1, value[:, 0]) and int(index.min()) >= 0 and int(index.max()) < rows:
                out[key.removesuffix(".lora_B.weight") + ".lora_magnitude_vector"] = magnitude[index].clone()
    return out


def _plain_lora_magnitudes(pipe, converted: dict, scale: float) -> dict[str, torch.Tensor]:
    """PEFT applies DoRA to every layer of an adapter or to none. For layers the file gives no magnitude,
    m = ||W + scale * B A||_row makes PEFT's DoRA merge W + scale * B A exactly: the plain LoRA they are."""
    out = {}
    for key in converted:
        if not key.endswith(".lora_B.weight"):
            continue
        target = key.removesuffix(".lora_B.weight")
        if f"{target}.lora_magnitude_vector" in converted or f"{target}.lora_A.weight" not in converted:
            continue
        module = _target(pipe, key)
        if isinstance(module, torch.nn.Linear):
            up, down = converted[key].float(), converted[f"{target}.lora_A.weight"].float()
            weight = module.weight.detach().float() + scale * (up @ down)
            out[f"{target}.lora_magnitude_vector"] = weight.norm(dim=1).to(converted[key].dtype)
    return out


def _target(pipe, key: str):
    component, _, rest = key.partition(".")
    model = getattr(pipe, component, None)
    if model is None:
        return None
    try:
        return model.get_submodule(_TARGET_SUFFIX.sub("", rest))
    except AttributeError:
        return None


def _keys_not_landed(pipe, converted: dict, adapter_name: str) -> set[str]:
    """Converted keys whose layer did not get a PEFT adapter (PEFT only warns about those)."""
    lost = set()
    for key in converted:
        module = _target(pipe, key)
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter_name not in lora_a:
            lost.add(key)
        elif key.endswith(".lora_magnitude_vector"):
            magnitudes = getattr(module, "lora_magnitude_vector", None)
            if magnitudes is None or adapter_name not in magnitudes:
                lost.add(key)
    return lost


def _check_lora_shapes(pipe, state_dict: dict, path: Path) -> None:
    components = {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder,
                  "text_encoder_2": pipe.text_encoder_2}
    for key, tensor in state_dict.items():
        prefix, _, rest = key.partition(".")
        module_name, _, kind = rest.partition(".lora_")
        if prefix not in components or not kind or components[prefix] is None:
            continue
        try:
            module = components[prefix].get_submodule(module_name)
        except AttributeError:
            raise LoraError(f"LoRA {path}: key {key!r} targets {prefix}.{module_name}, which this model "
                            "does not have") from None
        if not isinstance(module, torch.nn.Linear):
            continue
        if kind.startswith("A") and tensor.shape[-1] != module.in_features:
            raise LoraError(f"LoRA {path}: {key!r} has input size {tensor.shape[-1]} but {prefix}.{module_name} "
                            f"takes {module.in_features}; the LoRA was made for a different model")
        if kind.startswith("B") and tensor.shape[0] != module.out_features:
            raise LoraError(f"LoRA {path}: {key!r} has output size {tensor.shape[0]} but {prefix}.{module_name} "
                            f"gives {module.out_features}; the LoRA was made for a different model")
        if kind.startswith("magnitude") and tensor.shape[0] != module.out_features:
            raise LoraError(f"LoRA {path}: DoRA magnitude {key!r} has {tensor.shape[0]} rows but "
                            f"{prefix}.{module_name} gives {module.out_features}")
