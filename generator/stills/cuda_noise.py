"""torch's CUDA `randn`/`rand` reproduced on any device: Philox4x32-10 + Box-Muller laid out as ATen launches it.

Why: the paper's ComfyUI graph (XlabsSampler) draws its initial latent with `torch.randn(..., device="cuda",
generator=torch.Generator("cuda").manual_seed(seed))`; to reproduce its images without a GPU the same numbers
must come out on the CPU. Everything below follows public sources, step by step:

- Engine: cuRAND's `curandStatePhilox4_32_10_t` (= Random123 Philox4x32-10). `curand_init(seed, subsequence,
  offset)` puts the seed in the key (low word first), the subsequence in counter words 2-3 and offset/4 in
  counter words 0-1; `curand4` returns the block at that counter and steps words 0-1 by one.
- Kernel (ATen `native/cuda/DistributionTemplates.h`): blocks of 256 threads; grid = min(ceil(numel / 256),
  multiProcessorCount * (maxThreadsPerMultiProcessor / 256)); thread `idx` uses subsequence `idx`, the
  generator's Philox offset, and per call fills elements `idx + T * ii + 4 * T * k` (T = all threads,
  ii = 0..3 the float4 lanes, k = the call) — the unroll factor is 4 for float/half/bfloat16.
  The generator's offset then advances by ceil(numel / (4 T)) * 4.
- Normal: `curand_normal4` = two Box-Muller pairs over the 4 words: u = x 2^-32 + 2^-33,
  v = y 2^-32 2pi + 2^-33 2pi, (sin v, cos v) * sqrt(-2 ln u); then `value * std + mean` in float, cast to
  the tensor's dtype (round to nearest even).
- Uniform (`torch.rand` / `uniform_`): `curand_uniform4` = x 2^-32 + 2^-33 per word, `value * range + from`
  cast to the dtype, and a value equal to `to` becomes `from`.

Where the result depends on the GPU: the grid is capped by the GPU's resident blocks, so a tensor of more than
256 x that cap elements is laid out differently on different GPU models (pytorch/pytorch#143086, #97097).
Below the cap (the workflow's 2x16x64x64 latent needs 512 blocks) every GPU with at least that many resident
blocks gives the same numbers; `GPUS` lists common ones. Float math: the device's `__sincosf`/`logf` are not
bit-identical to the float64 math used here, so a float32 value can differ in its last bits; after a bfloat16
cast values agree except near rounding ties (measured against published values only to 4 decimals here).
Double-precision draws (`curand_normal2_double`) are not emulated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from thermvision_db.errors import InputError

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
BLOCK_SIZE = 256  # ATen block_size_bound
UNROLL = 4  # float4 lanes per curand_normal4 / curand_uniform4 call
TWO_POW32_INV = np.float32(2.3283064e-10)  # cuRAND's CURAND_2POW32_INV
TWO_POW32_INV_2PI = np.float32(np.float32(2.3283064e-10) * np.float32(6.2831855))  # CURAND_2POW32_INV_2PI

# (multiProcessorCount, maxThreadsPerMultiProcessor) from NVIDIA's specifications.
GPUS: dict[str, tuple[int, int]] = {
    "H200": (132, 2048), "H100-SXM": (132, 2048), "H100-PCIe": (114, 2048), "A100": (108, 2048),
    "L40S": (142, 1536), "L4": (58, 1536), "A10": (72, 1536), "RTX-4090": (128, 1536), "RTX-3090": (82, 1536),
    "RTX-A4000": (48, 1536), "RTX-2070-Super": (40, 1024), "T4": (40, 1024), "V100": (80, 2048),
}

_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox4x32-10 blocks: counter (N, 4) and key (N, 2) or (2,) uint32 words -> (N, 4) uint32 words."""
    c = [np.asarray(counter, np.uint64)[..., i] for i in range(4)]
    key = np.broadcast_to(np.asarray(key, np.uint64), (*c[0].shape, 2))
    k0, k1 = key[..., 0].copy(), key[..., 1].copy()
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    for round_ in range(10):
        if round_:
            k0 = (k0 + np.uint64(PHILOX_W0)) & _MASK32
            k1 = (k1 + np.uint64(PHILOX_W1)) & _MASK32
        p0, p1 = m0 * c[0], m1 * c[2]  # 32 x 32 -> 64 bits, exact in uint64
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & _MASK32, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & _MASK32]
    return np.stack(c, axis=-1).astype(np.uint32)


def _fma32(a: np.ndarray, b: np.float32, c: np.float32) -> np.ndarray:
    """float32 a*b+c with one rounding, as nvcc contracts it (the float32 product is exact in float64)."""
    return (a.astype(np.float64) * np.float64(b) + np.float64(c)).astype(np.float32)


def uniform_from_words(words: np.ndarray) -> np.ndarray:
    """cuRAND `_curand_uniform`: uint32 -> float32 in (0, 1]."""
    return _fma32(words.astype(np.float32), TWO_POW32_INV, np.float32(TWO_POW32_INV / 2))


def box_muller(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cuRAND `_curand_box_muller`: two uint32 words -> (sin v, cos v) * sqrt(-2 ln u) as float32."""
    u = uniform_from_words(x)
    v = _fma32(y.astype(np.float32), TWO_POW32_INV_2PI, np.float32(TWO_POW32_INV_2PI / 2))
    s = np.sqrt(np.float32(-2.0) * np.log(u.astype(np.float64)).astype(np.float32))
    v64 = v.astype(np.float64)
    return (np.sin(v64).astype(np.float32) * s).astype(np.float32), (np.cos(v64).astype(np.float32) * s).astype(np.float32)


def launch_threads(numel: int, gpu: str | tuple[int, int] | None = None) -> int:
    """Threads ATen launches for `numel` elements: 256 per block, blocks capped by the GPU's resident blocks
    (`gpu` = a name in `GPUS` or (SMs, max threads per SM); None = no cap, i.e. a GPU big enough)."""
    blocks = (numel + BLOCK_SIZE - 1) // BLOCK_SIZE
    if gpu is not None:
        sms, threads_per_sm = GPUS[gpu] if isinstance(gpu, str) else gpu
        blocks = min(blocks, sms * (threads_per_sm // BLOCK_SIZE))
    return blocks * BLOCK_SIZE


class CudaGeneratorEmulation:
    """A CPU stand-in for `torch.Generator("cuda").manual_seed(seed)`: same seed handling, same offset bookkeeping,
    so consecutive `randn`/`rand` calls give what consecutive CUDA calls give."""

    def __init__(self, seed: int, gpu: str | tuple[int, int] | None = None):
        if isinstance(gpu, str) and gpu not in GPUS:
            raise InputError(f"unknown GPU {gpu!r}; give one of {', '.join(GPUS)} or (SMs, max threads per SM)")
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF  # manual_seed takes negative seeds modulo 2**64
        self.offset = 0  # Philox offset per thread, in 32-bit words (always a multiple of 4)
        self.gpu = gpu

    def _lanes(self, numel: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Philox words for flat `positions` of a `numel` draw: (words (N, 4), lane ii) ; advances nothing."""
        threads = launch_threads(numel, self.gpu)
        idx = positions % threads
        rest = positions // threads
        call, lane = rest // UNROLL, rest % UNROLL
        step = np.uint64(self.offset // 4) + call.astype(np.uint64)
        counter = np.stack([step & _MASK32, step >> np.uint64(32), idx.astype(np.uint64) & _MASK32,
                            idx.astype(np.uint64) >> np.uint64(32)], axis=-1)
        key = np.array([self.seed & 0xFFFFFFFF, self.seed >> 32], np.uint64)
        return philox4x32_10(counter, key), lane

    def _advance(self, numel: int) -> None:
        threads = launch_threads(numel, self.gpu)
        self.offset += ((numel - 1) // (threads * UNROLL) + 1) * 4

    def standard_normal(self, numel: int, positions: np.ndarray | None = None) -> np.ndarray:
        """float32 N(0, 1) values of a `numel`-element draw (all, or only at `positions`), then advance."""
        positions = np.arange(numel, dtype=np.int64) if positions is None else np.asarray(positions, np.int64)
        words, lane = self._lanes(numel, positions)
        pair = lane // 2  # lanes 0,1 from words (x, y); lanes 2,3 from (z, w)
        rows = np.arange(len(lane))
        sin_part, cos_part = box_muller(words[rows, 2 * pair], words[rows, 2 * pair + 1])
        self._advance(numel)
        return np.where(lane % 2 == 0, sin_part, cos_part)

    def standard_uniform(self, numel: int, positions: np.ndarray | None = None) -> np.ndarray:
        """float32 cuRAND uniforms in (0, 1] (before torch's bound reversal), then advance."""
        positions = np.arange(numel, dtype=np.int64) if positions is None else np.asarray(positions, np.int64)
        words, lane = self._lanes(numel, positions)
        self._advance(numel)
        return uniform_from_words(words[np.arange(len(lane)), lane])

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32, mean: float = 0.0,
              std: float = 1.0) -> torch.Tensor:
        """What `torch.randn(shape, dtype=dtype, device="cuda", generator=g)` returns, as a CPU tensor."""
        shape = _shape(shape)
        values = self.standard_normal(math.prod(shape))
        if mean != 0.0 or std != 1.0:
            values = _fma32(values, np.float32(std), np.float32(mean))
        return torch.from_numpy(values.reshape(shape)).to(dtype)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """What `torch.rand(shape, dtype=dtype, device="cuda", generator=g)` returns, as a CPU tensor."""
        shape = _shape(shape)
        value = torch.from_numpy(self.standard_uniform(math.prod(shape)).reshape(shape)).to(dtype)
        return torch.where(value == 1, torch.zeros((), dtype=dtype), value)


def _shape(shape: Sequence) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def cuda_randn(shape: Sequence[int], seed: int, dtype: torch.dtype = torch.float32, *, device: str = "emulate",
               gpu: str | tuple[int, int] | None = None) -> torch.Tensor:
    """`torch.randn(shape, dtype, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))`.

    `device="cuda"` asks torch's own CUDA generator (needs a GPU); "emulate" computes the same numbers on the
    CPU. Returned on the CPU either way.
    """
    shape = tuple(int(s) for s in shape)
    if device == "cuda":
        generator = torch.Generator("cuda").manual_seed(int(seed))
        return torch.randn(shape, dtype=dtype, device="cuda", generator=generator).cpu()
    if device != "emulate":
        raise InputError(f"device must be 'cuda' or 'emulate', got {device!r}")
    return CudaGeneratorEmulation(seed, gpu).randn(shape, dtype=dtype)


def xlabs_noise(seed: int, batch: int, height: int, width: int, dtype: torch.dtype = torch.bfloat16, *,
                device: str = "emulate", gpu: str | tuple[int, int] | None = None) -> torch.Tensor:
    """x-flux-comfyui `get_noise` as XlabsSampler calls it: one (batch, 16, 2 ceil(h/16), 2 ceil(w/16)) draw from
    a fresh CUDA generator seeded with the node's noise_seed, in the model dtype (bf16 where supported)."""
    shape = (int(batch), 16, 2 * math.ceil(height / 16), 2 * math.ceil(width / 16))
    return cuda_randn(shape, seed, dtype, device=device, gpu=gpu)
