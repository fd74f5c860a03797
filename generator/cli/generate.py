"""`thermvision-db generate`: one subcommand, one stage switch; each stage adds its own options.

Stage modules expose `add_arguments(parser)` and `run(args) -> int`; this file only wires them, so the
stills, animation and pipeline code stay independent.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from thermvision_db.errors import InputError

STAGES = {
    "stills": "generator.cli.stills",
    "animate": "generator.cli.animate",
    "all": "generator.cli.pipeline",
}


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("generate", help="generate thermal stills, animations or whole identities")
    p.add_argument("--stage", choices=sorted(STAGES), default="all", help="which part of the pipeline to run")
    p.add_argument("-n", "--num-identities", type=int, default=4, help="identities (stills) to generate")
    p.add_argument("--preset", default="tiny",
                   help="model preset: 'thermvision' (real weights) or 'tiny' (random tiny networks, offline)")
    p.add_argument("--out", default="thermvision_generated", help="output folder (created; a rerun resumes it)")
    p.add_argument("--seed", type=int, default=0, help="run seed; identity i uses a seed derived from it")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="stills per FLUX call (default 8 in the whole pipeline, 1 with --stage stills); with --stage animate, "
                        "frames per W+G call unless --chunk-size is given (default 16)")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="compute dtype (auto on CUDA: bf16 for stills, fp16 autocast for animation as "
                   "upstream; fp32 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the heavy networks")
    for module in STAGES.values():
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
    return p


def check_values(args: argparse.Namespace) -> None:
    """Counts, seeds and indices checked before any model loads: one line each (InputError, rc 2)."""
    from generator.corpus.settings import check_seed
    from generator.corpus.workers import check_identity_count

    check_identity_count(args.num_identities)
    check_seed(args.seed, "--seed")
    if getattr(args, "noise_seed", None) is not None:
        check_seed(args.noise_seed, "--noise-seed")
    for name in ("batch_size", "writers", "noise_batch"):
        value = getattr(args, name, None)
        if value is not None and not (0 if name == "writers" else 1) <= value <= 10**4:
            raise InputError(f"--{name.replace('_', '-')} must be between {0 if name == 'writers' else 1} and "
                             f"10,000, got {value:,}")
    first = getattr(args, "stills_first_index", None)
    if first is not None and not 0 <= first <= 10**7:
        raise InputError(f"--stills-first-index must be between 0 and 10,000,000, got {first:,}")


def run_generate(args: argparse.Namespace) -> int:
    check_values(args)
    from generator.vision_check import note_once

    note = note_once()  # before any stage imports diffusers: a broken torchvision is marked absent and named
    if note:
        print(f"note: {note}", file=sys.stderr)
    try:
        module = importlib.import_module(STAGES[args.stage])
    except ModuleNotFoundError as err:
        if err.name == STAGES[args.stage]:
            raise SystemExit(f"stage {args.stage!r} is not available in this build") from err
        raise
    return int(module.run(args) or 0)
