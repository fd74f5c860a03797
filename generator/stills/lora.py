"""LoRA loading with checks: kohya / ComfyUI keys applied to the FLUX transformer through diffusers + PEFT."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from generator.weights import check_safetensors

# ----------------------------------------------------------------------------------------------- LoRA


class LoraError(ValueError):
    """A LoRA file that cannot be applied to this transformer; the message names the file and the problem."""


def load_lora(pipe, path: str | os.PathLike, scale: float = 0.9, adapter_name: str = "thermal",
              fuse: bool = True) -> None:
    """Apply a kohya/FluxTrainer, ComfyUI (`diffusion_model.`) or diffusers/PEFT LoRA file at `scale`.

    The file must be safetensors (read here, never unpickled). Shapes are checked against the transformer
    before loading, so a LoRA for another model fails with a clear message instead of deep in PEFT. Fusing
    bakes the LoRA into the weights and removes the PEFT wrappers (faster, and friendlier to compile/fp8).
    """
    from safetensors.torch import load_file

    path = Path(path)
    check_safetensors(path, what="LoRA")
    raw = load_file(str(path))
    try:
        converted = pipe.lora_state_dict(dict(raw))
    except (AssertionError, KeyError, ValueError, RuntimeError) as err:
        raise LoraError(f"LoRA {path} could not be converted for FLUX ({type(err).__name__}: {err}); "
                        "is it a FLUX LoRA, and does it match this model's sizes?") from err
    if isinstance(converted, tuple):
        converted = converted[0]
    _check_lora_shapes(pipe, converted, path)
    pipe.load_lora_weights(converted, adapter_name=adapter_name)
    adapters = pipe.get_list_adapters()
    if not any(adapter_name in names for names in adapters.values()):
        raise LoraError(f"LoRA {path}: none of its keys matched the FLUX transformer or text encoders "
                        "(a diffusers-format file needs the 'transformer.' prefix)")
    if fuse:
        pipe.fuse_lora(lora_scale=scale, adapter_names=[adapter_name])
        pipe.unload_lora_weights()
    else:
        pipe.set_adapters([adapter_name], [scale])


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
