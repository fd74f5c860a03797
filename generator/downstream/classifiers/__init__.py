"""The paper's three gender classifiers in plain torch, named as torchvision names them so a user's ImageNet
weights file (torchvision's state_dict as .safetensors or .pth) loads; the 1000-class head becomes 2 classes.

Weights are read with safetensors or `torch.load(weights_only=True)` only: a pickle that would run code is
refused. Without a file the network starts from random initialisation, and the report says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from thermvision_db.errors import ThermVisionError

MODELS = {
    "resnet18": "generator.downstream.classifiers.resnet18:ResNet18",
    "mobilenet_v2": "generator.downstream.classifiers.mobilenet_v2:MobileNetV2",
    "efficientnet_b0": "generator.downstream.classifiers.efficientnet_b0:EfficientNetB0",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassifierWeightsError(ThermVisionError, ValueError):
    """A weights file that does not fit the network: missing, unreadable, a pickle, wrong keys or shapes."""


def model_class(name: str):
    if name not in MODELS:
        raise ClassifierWeightsError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    import importlib

    module, _, attribute = MODELS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def _head(model):
    module = model
    for part in model.head.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def replace_head(model, num_classes: int):
    """A fresh Linear for `num_classes` in place of the network's last layer (fc or classifier.1)."""
    from torch import nn

    old = _head(model)
    new = nn.Linear(old.in_features, num_classes)
    parent_name, _, leaf = model.head.rpartition(".")
    parent = model
    for part in filter(None, parent_name.split(".")):
        parent = parent[int(part)] if part.isdigit() else getattr(parent, part)
    if leaf.isdigit():
        parent[int(leaf)] = new
    else:
        setattr(parent, leaf, new)
    return model


def read_state_dict(path: str | os.PathLike) -> dict:
    """A flat {name: tensor} from .safetensors or a weights-only torch file (.pth/.pt/.bin); never a pickle."""
    from generator.animate.liveportrait.checkpoint import CheckpointError, flatten, read_tensors

    path = Path(path)
    try:
        return flatten(read_tensors(path))
    except CheckpointError as err:
        raise ClassifierWeightsError(str(err)) from None


def load_backbone(model, state: dict, source: str = "weights") -> list[str]:
    """Load `state` into `model` except its classification head (another class count); every other key must be
    there with its shape. Raise one line naming the missing, unexpected and mis-shaped keys. Returns the head keys
    skipped."""
    own = model.state_dict()
    head = model.head + "."
    missing = sorted(k for k in own if k not in state and not k.startswith(head))
    unexpected = sorted(k for k in state if k not in own and not k.startswith(head))
    shapes = sorted(f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
                    if k in state and not k.startswith(head) and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        def few(items):
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        parts = [f"{len(missing)} missing: {few(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {few(unexpected)}" if unexpected else "",
                 f"{len(shapes)} wrong shape: {few(shapes)}" if shapes else ""]
        raise ClassifierWeightsError(f"{source} does not fit {type(model).__name__} (torchvision names expected): "
                                     + "; ".join(p for p in parts if p))
    skipped = []
    for key in list(own):
        if key.startswith(head):
            if key in state and tuple(state[key].shape) == tuple(own[key].shape):
                own[key] = state[key]
            else:
                skipped.append(key)
        else:
            own[key] = state[key].to(own[key].dtype)
    model.load_state_dict(own)
    return skipped


def build_classifier(name: str, num_classes: int = 2, weights: str | os.PathLike | None = None):
    """(model, description): `name` with a `num_classes` head, ImageNet backbone from `weights` or random."""
    cls = model_class(name)
    if weights is None:
        return replace_head(cls(), num_classes), "random initialisation (no ImageNet weights given)"
    model = replace_head(cls(), num_classes)
    skipped = load_backbone(model, read_state_dict(weights), str(weights))
    note = f" (head replaced for {num_classes} classes)" if skipped else ""
    return model, f"weights from {weights}{note}"


def parse_weights(specs: list[str] | None, models) -> dict[str, Path]:
    """`MODEL=PATH` options -> {model: path}; an unknown model or a missing file is one line naming it."""
    out = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise ClassifierWeightsError(f"--weights {spec!r}: expected MODEL=PATH, e.g. resnet18=resnet18.safetensors")
        if name not in MODELS:
            raise ClassifierWeightsError(f"--weights {spec!r}: unknown model {name!r}; choose from {', '.join(MODELS)}")
        if name not in models:
            raise ClassifierWeightsError(f"--weights {spec!r}: {name} is not among --models ({', '.join(models)})")
        if not Path(path).expanduser().is_file():
            raise ClassifierWeightsError(f"--weights {spec!r}: file {path} does not exist")
        out[name] = Path(path).expanduser()
    return out
