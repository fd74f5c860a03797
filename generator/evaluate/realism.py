"""FID and KID between two sets of frames through torchmetrics, with a pluggable feature extractor.

The published figures use torchmetrics' Inception-v3 (the TF-compatible FID network from torch-fidelity). That
network is an optional stack: `torch-fidelity` imports `torchvision`, which must match the installed torch, so
the project does not require either; and its weights come from GitHub, which offline machines cannot reach.
Any `torch.nn.Module` mapping uint8 images (N, 3, S, S) to features (N, D) can stand in (an ONNX model through
`OnnxFeatures`, a tiny deterministic one in tests); values are only comparable under the same extractor.

Offline Inception weights: copy `weights-inception-2015-12-05-6726825d.pth` (from INCEPTION_URL) to the torch
hub cache (`$TORCH_HOME/hub/checkpoints/`, default `~/.cache/torch/hub/checkpoints/`), or give its path with
`inception_weights=` / `--inception-weights` / the THERMVISION_INCEPTION_WEIGHTS environment variable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from thermvision_db.errors import ThermVisionError
from thermvision_db.io.offline import hub_offline

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]
INCEPTION_SHA256_PREFIX = "6726825d"  # torch hub's convention: the file name carries its sha256 prefix
INCEPTION_SIZE = 299
WEIGHTS_ENV = "THERMVISION_INCEPTION_WEIGHTS"


class RealismUnavailable(ThermVisionError, RuntimeError):
    """FID/KID cannot be computed here: a package or the Inception weights are missing; the message says which."""


# ---------------------------------------------------------------------------------------------- feature extractors
def _hub_checkpoint() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_inception_weights(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The local FID Inception weights file: `path`, else $THERMVISION_INCEPTION_WEIGHTS, else the torch hub cache.

    Downloads into the hub cache only when none is found, `download` is true and HF_HUB_OFFLINE is not set. The
    file is checked against its published sha256 prefix and must load with `weights_only=True`, so the
    `torch.load` torch-fidelity does on it later reads a verified plain state dict.
    """
    given = path or os.environ.get(WEIGHTS_ENV)
    if given:
        candidate = Path(given).expanduser()
        if not candidate.is_file():
            raise RealismUnavailable(f"Inception weights {candidate} do not exist (expected {INCEPTION_FILE})")
    else:
        candidate = _hub_checkpoint()
        if not candidate.is_file():
            offline = hub_offline()
            if not download or offline:
                raise RealismUnavailable(_missing_weights_message(candidate, "downloads are off"))
            try:
                candidate.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(INCEPTION_URL, str(candidate), hash_prefix=INCEPTION_SHA256_PREFIX, progress=False)
            except Exception as err:  # no network, proxy, partial file: all end in the same instructions
                raise RealismUnavailable(_missing_weights_message(candidate, f"download failed: {type(err).__name__}: {err}")) from err
    digest = hashlib.sha256(candidate.read_bytes()).hexdigest()
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise RealismUnavailable(f"{candidate} is not the FID Inception weights file {INCEPTION_FILE} "
                                 f"(sha256 {digest[:16]}..., expected {INCEPTION_SHA256_PREFIX}...)")
    try:
        torch.load(candidate, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RealismUnavailable(f"{candidate} is not a plain state dict ({type(err).__name__}: {err})") from err
    return candidate


def _missing_weights_message(where: Path, why: str) -> str:
    return (f"FID Inception weights not found ({why}). On a machine with internet, download {INCEPTION_URL} and copy it "
            f"to {where}, or pass its path with --inception-weights / ${WEIGHTS_ENV}.")


def inception_features(weights: str | os.PathLike | None = None, download: bool = True) -> torch.nn.Module:
    """torchmetrics' FID Inception-v3 (2048-d pool features); needs torch-fidelity + torchvision and the weights."""
    from generator.vision_check import block_broken_torchvision

    broken = block_broken_torchvision()
    if broken:
        raise RealismUnavailable(f"the default Inception feature extractor needs torchvision: {broken}; or give another "
                                 "feature extractor (--fid-features model.onnx)")
    missing = [name for name in ("torchmetrics", "torch_fidelity", "torchvision") if importlib.util.find_spec(name) is None]
    if missing:
        raise RealismUnavailable(
            f"the default Inception feature extractor needs {', '.join(missing)} (not installed). Install "
            "'thermvision-db[eval]' for torchmetrics, then torchvision matching your torch and 'torch-fidelity' "
            "(pip install torch-fidelity --no-deps after torchvision), or give another feature extractor "
            "(--fid-features model.onnx).")
    path = resolve_inception_weights(weights, download)
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path))


class OnnxFeatures(torch.nn.Module):
    """Wraps an ONNX image-to-vector model as a torch module: uint8 (N, 3, S, S) in, float64 features out.

    The model sees pixels scaled to [-1, 1] at its fixed input size, with as many channels as it declares.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        from generator.evaluate.identity import OnnxEmbedder

        self.embedder = OnnxEmbedder(path)  # checks the file and its N x C x H x W input
        self.source = str(path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        width, height = self.embedder.size
        batch = torch.nn.functional.interpolate(images.float(), size=(height, width), mode="bilinear", align_corners=False)
        batch = (batch / 127.5 - 1.0).numpy().astype(np.float32)
        channels = self.embedder.channels
        batch = batch[:, :channels] if batch.shape[1] >= channels else np.repeat(batch[:, :1], channels, axis=1)
        session, name = self.embedder.session, self.embedder.input_name
        out = [session.run(None, {name: np.ascontiguousarray(batch[i:i + 1])})[0].reshape(1, -1) for i in range(len(batch))]
        return torch.from_numpy(np.concatenate(out)).double()


def feature_extractor(spec: str | os.PathLike | torch.nn.Module | None, inception_weights: str | os.PathLike | None = None,
                      download: bool = True) -> torch.nn.Module:
    """A feature module from a spec: "inception", a path to an ONNX model, or an `nn.Module` used as given."""
    if isinstance(spec, torch.nn.Module):
        return spec
    if spec in (None, "inception"):
        return inception_features(inception_weights, download)
    if str(spec).lower().endswith(".onnx"):
        return OnnxFeatures(spec)
    raise RealismUnavailable(f"unknown feature extractor {spec!r}: use 'inception' or a path to an .onnx model")


# ---------------------------------------------------------------------------------------------- the metrics
def to_batch(images: Sequence[np.ndarray | Image.Image], size: int) -> torch.Tensor:
    """Gray or RGB images -> uint8 tensor (N, 3, size, size): every set at one size so any two can be compared."""
    def gray(image) -> Image.Image:
        return (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).convert("L")

    arrays = [np.asarray(gray(i).resize((size, size), Image.BILINEAR)) for i in images]
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays)[:, None].repeat(3, axis=1)))


def fid_kid(images_a: Sequence, images_b: Sequence, feature="inception", image_size: int = INCEPTION_SIZE,
            kid_subsets: int = 100, kid_subset_size: int = 1000, batch_size: int = 64,
            inception_weights: str | os.PathLike | None = None, seed: int = 0) -> dict:
    """FID and KID (torchmetrics) between two image sets; `a` is the reference ("real") set.

    KID draws `kid_subsets` subsets of min(len(a), len(b), kid_subset_size) images from each set under a fixed
    seed, so a report is reproducible. Raises RealismUnavailable when torchmetrics or the extractor is missing.
    """
    if importlib.util.find_spec("torchmetrics") is None:
        raise RealismUnavailable("FID/KID need torchmetrics: pip install 'thermvision-db[eval]' (or 'torchmetrics>=1.4,<2')")
    if len(images_a) < 2 or len(images_b) < 2:
        raise RealismUnavailable(f"FID/KID need at least two images per set (got {len(images_a)} and {len(images_b)})")
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    module = feature_extractor(feature, inception_weights)
    subset = min(len(images_a), len(images_b), kid_subset_size)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        fid = FrechetInceptionDistance(feature=module, input_img_size=(3, image_size, image_size), reset_real_features=True)
        with warnings.catch_warnings():  # "KID keeps all features in memory": known, and bounded by max_images
            warnings.simplefilter("ignore", UserWarning)
            kid = KernelInceptionDistance(feature=module, subsets=kid_subsets, subset_size=subset)
        for images, real in ((images_a, True), (images_b, False)):
            for start in range(0, len(images), batch_size):
                batch = to_batch(images[start:start + batch_size], image_size)
                fid.update(batch, real=real)
                kid.update(batch, real=real)
        kid_mean, kid_std = kid.compute()
        fid_value = fid.compute()
    name = "inception" if feature in (None, "inception") else getattr(module, "source", type(module).__name__)
    return {"fid": float(fid_value), "kid_mean": float(kid_mean), "kid_std": float(kid_std), "kid_subset_size": subset,
            "kid_subsets": kid_subsets, "images_a": len(images_a), "images_b": len(images_b), "feature": str(name),
            "image_size": image_size}
