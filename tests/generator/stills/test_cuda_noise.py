"""The CPU emulation of torch's CUDA randn against published CUDA outputs and Philox's known-answer vectors.

Published values (printed to 4 decimals by `torch.randn`/`normal_` on real GPUs, copied from the threads):
- pytorch/pytorch#79496: torch.manual_seed(10); torch.randn(3, device="cuda") -> [-0.1029, 1.6810, -0.2708].
- pytorch/pytorch#143086 (torch 2.5.1): Generator("cuda").manual_seed(1); randn(1, 49*12*112*144): same head on
  H100 and A100, different tails (the grid is capped by the GPU's resident blocks).
- pytorch/pytorch#97097 (torch 2.0, RTX A4000): manual_seed(14); cuda.FloatTensor(1000, 100).normal_(5, 5**.5).
- pytorch/pytorch#158398: Generator("cuda").manual_seed(42); randn([1, 64, 2048]) (131,072 values, the size of
  the workflow's 2x16x64x64 latent) on a GPU with 168 resident blocks (an RTX 3060: 28 SMs x 6).
Philox4x32-10 known answers: Random123 `examples/kat_vectors` ("philox4x32 10" lines).
"""

import math

import numpy as np
import pytest
import torch

from generator.stills.cuda_noise import (
    CudaGeneratorEmulation,
    box_muller,
    cuda_randn,
    launch_threads,
    philox4x32_10,
)


@pytest.mark.parametrize("counter, key, expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox4x32_10_matches_random123_known_answers(counter, key, expected):
    out = philox4x32_10(np.array([counter], np.uint32), np.array(key, np.uint32))
    assert tuple(int(v) for v in out[0]) == expected


def test_box_muller_is_curands_sin_cos_pair():
    x = np.array([0, 2**31, 2**24, 123456768], np.uint32)  # words a float32 holds exactly, as cuRAND converts them
    y = np.array([0, 2**30, 3 * 2**30, 987654336], np.uint32)
    first, second = box_muller(x, y)
    u = (x.astype(np.float64) + 0.5) / 2**32  # (x + 1/2) 2^-32: in (0, 1)
    v = (y.astype(np.float64) + 0.5) / 2**32 * 2 * math.pi
    radius = np.sqrt(-2 * np.log(u))
    np.testing.assert_allclose(first, radius * np.sin(v), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(second, radius * np.cos(v), rtol=2e-6, atol=2e-6)
    assert second[1] == pytest.approx(0.0, abs=1e-6)  # u = 1/2 + 2^-33: the radius is sqrt(2 ln 2) ...
    assert first[1] == pytest.approx(math.sqrt(-2 * math.log(u[1])), rel=1e-6)  # ... at v = pi/2
    top = box_muller(np.array([2**32 - 1], np.uint32), np.array([5], np.uint32))
    assert top[0][0] == 0 and top[1][0] == 0  # float32(2^32 - 1) = 2^32: u rounds to 1, radius 0, as on the GPU


def test_small_draw_matches_pytorch_issue_79496():
    values = CudaGeneratorEmulation(10).randn(3)
    np.testing.assert_allclose(values.numpy(), [-0.1029, 1.6810, -0.2708], atol=5e-5)


@pytest.mark.parametrize("gpu, tail", [("H100-SXM", [-0.6970, -0.7780, 0.3267]),
                                       ("A100", [0.1549, -0.6797, -0.1656])])
def test_grid_capped_by_the_gpu_matches_pytorch_issue_143086(gpu, tail):
    n = 49 * 12 * 112 * 144
    values = CudaGeneratorEmulation(1, gpu).standard_normal(n, np.array([0, 1, 2, n - 3, n - 2, n - 1]))
    np.testing.assert_allclose(values, [-0.2963, 2.6764, -0.1408, *tail], atol=5e-5)


def test_normal_with_mean_and_std_matches_pytorch_issue_97097_rtx_a4000():
    x = CudaGeneratorEmulation(14, "RTX-A4000").randn(1000, 100, mean=5, std=5 ** 0.5)
    published = [[2.8731, 5.2727, 2.9889, 1.6853, 9.6331, 6.6319], [3.9968, 3.8097, 5.7328, 4.4029, 3.9804, 7.4698],
                 [6.5552, 4.0857, 4.2315, 2.7704, 3.5479, 3.3063], [8.6297, 2.3137, 6.2596, 7.9358, 4.4697, 2.7475],
                 [7.0551, 7.8583, 3.9990, 4.1139, 8.9315, 4.2042], [2.7337, 2.2106, 7.7815, 8.2207, 6.5395, 4.2604]]
    rows, cols = [0, 1, 2, -3, -2, -1], [0, 1, 2, -3, -2, -1]
    np.testing.assert_allclose(x[rows][:, cols].numpy(), published, atol=5e-5)


def test_workflow_sized_draw_matches_pytorch_issue_158398_on_168_blocks():
    x = CudaGeneratorEmulation(42, (28, 1536)).randn(1, 64, 2048)[0]
    published = {0: [0.1940, 2.1614, -0.1721, 1.4540, -2.7733, -0.8932],
                 61: [-0.4861, 0.3358, 1.0578, -0.7282, 0.5087, 0.1318],
                 62: [0.7881, 0.8339, -1.1424, -0.6297, -1.1112, -0.4091],
                 63: [-1.2356, -0.4083, -0.4695, -0.4841, 1.2850, -0.0282]}
    for row, values in published.items():
        np.testing.assert_allclose(x[row, [0, 1, 2, -3, -2, -1]].numpy(), values, atol=5e-5)
    # With 512 resident blocks or more (H100/H200, A100, RTX 4090) the first row is the same, the last is not.
    uncapped = CudaGeneratorEmulation(42).randn(1, 64, 2048)[0]
    assert torch.equal(uncapped[0, :256], x[0, :256]) and not torch.allclose(uncapped[63], x[63])


def test_offset_advances_like_the_cuda_generator():
    """Two draws in a row: the second starts 4 words later (ceil(3 / 1024) * 4), i.e. the second curand4 call of
    each thread, which a single 1-block draw of 1024 + 3 values exposes at positions 1024..1026."""
    g = CudaGeneratorEmulation(7, (1, 256))
    g.randn(3)
    assert g.offset == 4
    second = g.randn(3)
    single = CudaGeneratorEmulation(7, (1, 256)).randn(1027)
    assert torch.equal(second, single[1024:])
    assert launch_threads(10**6, "H100-SXM") == 132 * 8 * 256 and launch_threads(10**6) == 3907 * 256


def test_rand_is_curand_uniform_with_the_bound_reversed():
    g = CudaGeneratorEmulation(3)
    u = g.rand(4096, dtype=torch.float16)
    assert u.dtype == torch.float16 and float(u.min()) >= 0 and float(u.max()) < 1
    raw = CudaGeneratorEmulation(3).standard_uniform(4096)
    expect = torch.from_numpy(raw).half()
    assert torch.equal(u, torch.where(expect == 1, torch.zeros((), dtype=torch.float16), expect))
    assert 0.45 < float(u.float().mean()) < 0.55


def test_workflow_latent_is_one_bf16_draw_and_standard_normal():
    x = cuda_randn((2, 16, 64, 64), 749840386044620, torch.bfloat16)
    assert x.shape == (2, 16, 64, 64) and x.dtype == torch.bfloat16
    assert abs(float(x.float().mean())) < 0.02 and abs(float(x.float().std()) - 1) < 0.02
    fp32 = cuda_randn((2, 16, 64, 64), 749840386044620)
    assert torch.equal(fp32.to(torch.bfloat16), x)  # bf16 is the float draw rounded, not another draw
    with pytest.raises(ValueError, match="unknown GPU"):
        CudaGeneratorEmulation(0, "GTX-9999")
