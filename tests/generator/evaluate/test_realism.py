"""FID/KID through torchmetrics with a pluggable extractor, checked against numpy/scipy and against known facts."""

import hashlib

import numpy as np
import pytest
import scipy.linalg
import torch

import generator.evaluate.realism as realism
from generator.evaluate.realism import INCEPTION_URL, OnnxFeatures, RealismUnavailable, feature_extractor, fid_kid, resolve_inception_weights, to_batch

SIZE = 24


class TinyFeatures(torch.nn.Module):
    """Deterministic stand-in for Inception: 4x4 mean-pooled gray levels through a fixed random projection."""

    def __init__(self, dims: int = 6):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(48, dims, generator=generator, dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.double() / 255.0, 4).flatten(1)
        return pooled @ self.projection


def numpy_fid(x: np.ndarray, y: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), sample covariances."""
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def numpy_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 over all samples (one subset, equal sizes)."""
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2)


def images(seed: int, n: int = 30, shift: int = 0) -> list[np.ndarray]:
    """Thermal-ish random frames: a warm blob of random size on noise; `shift` brightens every pixel."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        frame = rng.normal(60, 15, (SIZE, SIZE))
        r = rng.uniform(4, 10)
        yy, xx = np.mgrid[:SIZE, :SIZE]
        frame[(yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 < r**2] += rng.uniform(80, 140)
        out.append(np.clip(frame + shift, 0, 255).astype(np.uint8))
    return out


def features(module: torch.nn.Module, frames: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return module(to_batch(frames, SIZE)).numpy()


def test_fid_and_kid_match_an_independent_implementation():
    module = TinyFeatures()
    a, b = images(1), images(2, shift=25)
    result = fid_kid(a, b, feature=module, image_size=SIZE)
    fa, fb = features(module, a), features(module, b)
    assert result["fid"] == pytest.approx(numpy_fid(fa, fb), rel=1e-6)
    # every KID subset is all 30 samples of each set, so each equals the one-subset value and the spread is 0
    assert result["kid_subset_size"] == 30
    assert result["kid_mean"] == pytest.approx(numpy_kid(fa, fb), rel=1e-6)
    assert result["kid_std"] == pytest.approx(0.0, abs=1e-9)


def test_known_facts_same_set_zero_shifted_set_larger():
    module = TinyFeatures()
    a = images(1)
    same = fid_kid(a, a, feature=module, image_size=SIZE)
    other_draw = fid_kid(a, images(3), feature=module, image_size=SIZE)
    shifted = fid_kid(a, images(3, shift=40), feature=module, image_size=SIZE)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert abs(same["kid_mean"]) < 0.05 * shifted["kid_mean"]  # unbiased MMD^2 of a set with itself is ~0
    assert other_draw["fid"] < shifted["fid"] and other_draw["kid_mean"] < shifted["kid_mean"]
    assert fid_kid(a, images(3), feature=module, image_size=SIZE) == other_draw  # fixed seed: reproducible


def test_onnx_model_as_feature_extractor(tiny_model):
    weight = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
    module = feature_extractor(str(tiny_model))
    frames = [np.random.default_rng(i).integers(0, 256, (16, 16), dtype=np.uint8) for i in range(3)]
    expected = np.stack([(f.astype(np.float32) / 127.5 - 1).ravel() @ weight for f in frames])
    with torch.no_grad():
        assert np.allclose(module(to_batch(frames, 16)).numpy(), expected, atol=1e-4)
    assert isinstance(module, OnnxFeatures)
    result = fid_kid(images(1, n=12), images(2, n=12, shift=30), feature=str(tiny_model), image_size=16)
    assert result["feature"] == str(tiny_model) and result["fid"] > 0


def test_inception_needs_torch_fidelity_and_says_so(monkeypatch):
    real_find_spec = realism.importlib.util.find_spec
    monkeypatch.setattr(realism.importlib.util, "find_spec", lambda name: None if name == "torch_fidelity" else real_find_spec(name))
    with pytest.raises(RealismUnavailable, match="needs torch_fidelity.*not installed.*--fid-features"):
        feature_extractor("inception")
    with pytest.raises(RealismUnavailable, match="unknown feature extractor"):
        feature_extractor("resnet")
    with pytest.raises(RealismUnavailable, match="at least two images"):
        fid_kid(images(1, n=1), images(2), feature=TinyFeatures(), image_size=SIZE)


def test_inception_weights_are_found_offline_or_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(realism.WEIGHTS_ENV, raising=False)
    cache = tmp_path / "torch" / "hub" / "checkpoints" / realism.INCEPTION_FILE
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RealismUnavailable, match=f"downloads are off.*{INCEPTION_URL}.*{cache}"):
        resolve_inception_weights()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RealismUnavailable, match="download failed: OSError: network unreachable.*--inception-weights"):
        resolve_inception_weights()
    with pytest.raises(RealismUnavailable, match="do not exist"):
        resolve_inception_weights(tmp_path / "nowhere.pth")

    # a plain state dict whose hash is declared the published one is accepted, from the hub cache or the env variable
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fc.weight": torch.zeros(2, 2)}, cache)
    monkeypatch.setattr(realism, "INCEPTION_SHA256_PREFIX", hashlib.sha256(cache.read_bytes()).hexdigest()[:8])
    assert resolve_inception_weights() == cache
    monkeypatch.setenv(realism.WEIGHTS_ENV, str(cache))
    assert resolve_inception_weights() == cache
    # any other file is refused before torch-fidelity's torch.load(weights_only=False) could see it
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.ones(2, 2)}, other)
    with pytest.raises(RealismUnavailable, match="is not the FID Inception weights"):
        resolve_inception_weights(other)
    pickled = tmp_path / "pickled.pth"
    torch.save({"hook": TinyFeatures}, pickled)  # a class reference: not loadable with weights_only=True
    monkeypatch.setattr(realism, "INCEPTION_SHA256_PREFIX", hashlib.sha256(pickled.read_bytes()).hexdigest()[:8])
    with pytest.raises(RealismUnavailable, match="not a plain state dict"):
        resolve_inception_weights(pickled)
