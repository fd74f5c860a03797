"""The gender benchmark's plain steps: subject-disjoint splits, images to tensors, one seeded training run, metrics.

Splits are drawn per class from the sorted subject ids with `numpy.random.default_rng([seed, gender])`, so a seed
gives the same subjects on every machine. Training is AdamW on cross entropy with seeded initialisation, shuffling
and flips, deterministic algorithms where torch has them; the epoch with the best validation balanced accuracy is
kept (the last epoch when there is no validation split).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from generator.downstream.gender_data import GENDERS, GenderDataError, Sample

SPLITS = ("train", "val", "test")


def subject_genders(samples: Sequence[Sample]) -> dict[str, int]:
    return {s.subject: s.gender for s in samples}


def split_subjects(subjects: dict[str, int], test_per_class: int, val_per_class: int, seed: int,
                   what: str = "the set") -> dict[str, list[str]]:
    """{train, val, test: sorted subject ids}: per class `test_per_class` test and `val_per_class` validation
    subjects drawn by `seed`, the rest for training. Each class needs at least one training subject."""
    if test_per_class < 0 or val_per_class < 0:
        raise GenderDataError("--test-subjects-per-class and --val-subjects-per-class must be 0 or more")
    split = {name: [] for name in SPLITS}
    for gender, name in enumerate(GENDERS):
        ids = sorted(s for s, g in subjects.items() if g == gender)
        need = test_per_class + val_per_class + 1
        if len(ids) < need:
            raise GenderDataError(
                f"{what}: {len(ids)} {name} subject{'s' if len(ids) != 1 else ''} ({', '.join(ids[:6]) or 'none'}); "
                f"a subject-disjoint split needs at least {need} per class ({test_per_class} test + {val_per_class} "
                f"val + 1 train): lower --test-subjects-per-class / --val-subjects-per-class or add subjects")
        order = [ids[i] for i in np.random.default_rng([seed, gender]).permutation(len(ids))]
        split["test"] += order[:test_per_class]
        split["val"] += order[test_per_class:test_per_class + val_per_class]
        split["train"] += order[test_per_class + val_per_class:]
    return {name: sorted(ids) for name, ids in split.items()}


def select(samples: Sequence[Sample], subjects: Sequence[str]) -> list[Sample]:
    wanted = set(subjects)
    return [s for s in samples if s.subject in wanted]


class ImageCache:
    """Each sample decoded, gray, resized to `size` x `size` once (uint8), whatever its mode and size."""

    def __init__(self, size: int):
        self.size = size
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def array(self, sample: Sample) -> np.ndarray:
        key = (sample.origin, sample.name)  # a file path, or a corpus path and row
        if key not in self._arrays:
            image = sample.load().convert("L").resize((self.size, self.size), Image.BILINEAR)
            self._arrays[key] = np.asarray(image, dtype=np.uint8)
        return self._arrays[key]

    def tensors(self, samples: Sequence[Sample]):
        import torch

        if not samples:
            return torch.zeros((0, self.size, self.size), dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
        x = torch.from_numpy(np.stack([self.array(s) for s in samples]))
        y = torch.tensor([s.gender for s in samples], dtype=torch.long)
        return x, y


def metrics(y_true, y_pred) -> dict[str, float]:
    """accuracy, balanced accuracy (mean of the per-class recalls present) and each gender's recall (NaN if absent)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {"accuracy": float((y_true == y_pred).mean()) if len(y_true) else math.nan}
    recalls = []
    for gender, name in enumerate(GENDERS):
        mask = y_true == gender
        recall = float((y_pred[mask] == gender).mean()) if mask.any() else math.nan
        out[f"recall_{name}"] = recall
        if mask.any():
            recalls.append(recall)
    out["balanced_accuracy"] = float(np.mean(recalls)) if recalls else math.nan
    out["n"] = int(len(y_true))
    return out


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenderDataError(f"--device {device}: CUDA is not available here (torch {torch.__version__}); use cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise GenderDataError(f"--device {device!r}: choose auto, cpu or cuda")
    if device.startswith("cuda"):
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (read at CUDA start)
    return device


def _prepare(x, device, flip_generator=None):
    """uint8 (N, S, S) -> ImageNet-normalised float (N, 3, S, S); a seeded random horizontal flip when training."""
    import torch

    from generator.downstream.classifiers import IMAGENET_MEAN, IMAGENET_STD

    x = x.to(device).float().div_(255.0)
    if flip_generator is not None:
        flip = torch.rand(x.shape[0], generator=flip_generator) < 0.5
        x[flip.to(device)] = x[flip.to(device)].flip(-1)
    x = x.unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def predict(model, x, batch_size: int, device: str) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(model(_prepare(x[start:start + batch_size], device)).argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def precise_batchnorm(model, x, batch_size: int, device: str, limit: int = 2048) -> None:
    """BatchNorm running statistics recomputed as exact averages over (up to `limit`) training images.

    After a few hundred steps the running averages (momentum 0.1) still lag the weights, and a network that
    separates the training batches can predict one class in eval mode; the exact averages remove that lag
    (precise BN, Wu & Johnson 2021)."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the batches seen
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:limit]  # mixed classes per batch
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = x[order[start:start + batch_size]]
            if len(batch) > 1:
                model(_prepare(batch, device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def train_once(model_name: str, train, val, test, *, seed: int, epochs: int, batch_size: int, lr: float,
               weight_decay: float, device: str, weights=None, num_workers: int = 0, progress: bool = True,
               desc: str = "") -> dict:
    """Train `model_name` on (x, y) `train`, keep the best epoch on `val`, score `test`. Same seed, same numbers."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from generator.downstream.classifiers import build_classifier

    if len(train[1]) == 0:
        raise GenderDataError("the training split is empty")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        torch.manual_seed(seed)
        model, init = build_classifier(model_name, 2, weights)
        model.to(device)
        loader_generator = torch.Generator().manual_seed(seed)
        flips = torch.Generator().manual_seed(seed + 1)
        loader = DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True, generator=loader_generator,
                            num_workers=num_workers, drop_last=len(train[1]) > batch_size and len(train[1]) % batch_size == 1)
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        best, best_score, history = None, -1.0, []
        for epoch in tqdm(range(epochs), desc=desc or model_name, disable=not progress, leave=False):
            model.train()
            total, count = 0.0, 0
            for x, y in loader:
                loss = torch.nn.functional.cross_entropy(model(_prepare(x, device, flips)), y.to(device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total, count = total + loss.item() * len(y), count + len(y)
            entry = {"epoch": epoch + 1, "train_loss": total / max(count, 1)}
            if len(val[1]) or epoch == epochs - 1:  # statistics only where the network is evaluated
                precise_batchnorm(model, train[0], batch_size, device)
            if len(val[1]):
                entry["val_balanced_accuracy"] = metrics(val[1].numpy(), predict(model, val[0], batch_size, device))[
                    "balanced_accuracy"]
                if entry["val_balanced_accuracy"] >= best_score:  # ties: the later, longer-trained epoch
                    best_score, best = entry["val_balanced_accuracy"], (epoch + 1, copy.deepcopy(model.state_dict()))
            history.append(entry)
        kept = epochs
        if best is not None:
            kept, state = best
            model.load_state_dict(state)
        result = metrics(test[1].numpy(), predict(model, test[0], batch_size, device))
        return {**result, "epoch_kept": kept, "initialisation": init, "history": history}
    finally:
        torch.use_deterministic_algorithms(previous)
