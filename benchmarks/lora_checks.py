"""Cost of applying a LoRA whole or not at all: the per-module conversion and checks vs diffusers' one-shot
conversion of the same file, measured in the same run.

    python benchmarks/lora_checks.py [--rank 16] [--repeats 3]

The file is a kohya/FluxTrainer LoRA with FLUX.1-dev's real layout (19 double + 38 single blocks, 3072 wide),
random values. Only key conversion and checks are timed (no transformer is needed for them): `baseline` is
`FluxPipeline.lora_state_dict(file)`, `checked` is what `load_lora` adds before loading (grouping, shape and
finiteness checks, one conversion per module). Prints seconds and the ratio checked/baseline, plus a JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one
from generator.stills.lora import _convert_per_module  # noqa: E402
from generator.stills.lora_keys import check_modules, group_modules  # noqa: E402


def flux_kohya_lora(rank: int, d: int = 3072) -> dict[str, torch.Tensor]:
    shapes = {}
    for i in range(19):
        for s in ("img", "txt"):
            shapes.update({f"double_blocks_{i}_{s}_attn_qkv": (d, 3 * d), f"double_blocks_{i}_{s}_attn_proj": (d, d),
                           f"double_blocks_{i}_{s}_mlp_0": (d, 4 * d), f"double_blocks_{i}_{s}_mlp_2": (4 * d, d),
                           f"double_blocks_{i}_{s}_mod_lin": (d, 6 * d)})
    for i in range(38):
        shapes.update({f"single_blocks_{i}_linear1": (d, 7 * d), f"single_blocks_{i}_linear2": (5 * d, d),
                       f"single_blocks_{i}_modulation_lin": (d, 3 * d)})
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, (fan_in, fan_out) in shapes.items():
        sd[f"lora_unet_{name}.lora_down.weight"] = torch.randn(rank, fan_in, generator=g)
        sd[f"lora_unet_{name}.lora_up.weight"] = torch.randn(fan_out, rank, generator=g)
        sd[f"lora_unet_{name}.alpha"] = torch.tensor(float(rank))
    return sd


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from diffusers import FluxPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    sd = flux_kohya_lora(args.rank)
    pipe = SimpleNamespace(lora_state_dict=FluxPipeline.lora_state_dict)
    baseline = best(lambda: FluxPipeline.lora_state_dict(dict(sd)), args.repeats)

    def checked():
        modules = group_modules(sd)
        check_modules(modules, "bench")
        return _convert_per_module(pipe, modules, Path("bench"))

    converted, _, ignored = _convert_per_module(pipe, group_modules(sd), Path("bench"))
    assert not ignored and set(converted) == set(FluxPipeline.lora_state_dict(dict(sd)))
    ours = best(checked, args.repeats)
    result = {"keys": len(sd), "rank": args.rank, "baseline_s": round(baseline, 3), "checked_s": round(ours, 3),
              "ratio": round(ours / baseline, 2), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    print(f"{len(sd)} keys, rank {args.rank}: diffusers conversion {baseline:.3f} s, checked per-module "
          f"{ours:.3f} s, ratio {ours / baseline:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
