"""`thermvision-db generate --stage stills`: identity stills + JSON sidecars + a contact sheet.

Only stills-specific options live here; generic ones (-n, --preset, --out, --seed, --device, --batch-size,
--dtype, --compile) come from generator/cli/generate.py. Options that could clash with other stages carry `--stills-`.
A rerun skips identities already on disk, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONTACT_SHEET = "contact_sheet.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("stills stage (FLUX.1-dev + thermal LoRA)")
    g.add_argument("--flux", default=None,
                   help="FLUX.1-dev: a diffusers folder, a Hub id (default black-forest-labs/FLUX.1-dev), or a "
                        "single-file transformer checkpoint such as flux1-dev-fp8.safetensors")
    g.add_argument("--flux-base", default=None,
                   help="with a single-file --flux: the diffusers folder or Hub id giving text encoders and VAE")
    g.add_argument("--lora", default=None, help="thermal LoRA .safetensors (kohya/FluxTrainer or ComfyUI keys)")
    g.add_argument("--lora-scale", type=float, default=0.9, help="LoRA strength (the paper's graph: 0.9)")
    g.add_argument("--lora-allow-ignored-keys", action="store_true",
                   help="apply a LoRA even if some of its keys cannot be mapped onto FLUX (they are listed in "
                        "each still's sidecar); without it such a file is refused")
    g.add_argument("--lora-mode", choices=["fuse", "comfy-fp8"], default="fuse",
                   help="fuse: add the LoRA to the upcast weights (default); comfy-fp8: with a single-file fp8 "
                        "--flux, patch in fp32 and round back to fp8 stochastically, as ComfyUI's LoraLoader")
    g.add_argument("--lora-fp8-gpu", default=None,
                   help="comfy-fp8 without a GPU: the GPU ComfyUI patched on (its CUDA draws are emulated), e.g. RTX-4090")
    g.add_argument("--prompt-template", default=None,
                   help="prompt wording with {fields}, e.g. '{person} aged {age_band}, {expression_phrase}' "
                        "(the CLIP-L text, and T5's unless --prompt-template-t5 is given)")
    g.add_argument("--prompt-template-t5", default=None,
                   help="a separate T5 text or template (ComfyUI's CLIPTextEncodeFlux takes two texts)")
    g.add_argument("--stills-noise", choices=["identity", "workflow"], default="identity",
                   help="identity: one CPU generator per image (default); workflow: XlabsSampler's CUDA draw, "
                        "emulated on the CPU without a GPU")
    g.add_argument("--noise-seed", type=int, default=None,
                   help="workflow noise: seed of the first draw (default the paper's 749840386044620)")
    g.add_argument("--noise-batch", type=int, default=2, help="workflow noise: images per draw (the paper's 2)")
    g.add_argument("--noise-gpu", default=None,
                   help="workflow noise emulation: GPU whose block cap shapes large draws (e.g. RTX-3090)")
    g.add_argument("--first-block-cache", type=float, nargs="?", const=0.1, default=None, metavar="THRESHOLD",
                   help="diffusers' first-block cache (lossy speed-up); threshold default 0.1")
    g.add_argument("--vae-tiling", action="store_true", help="decode the VAE in tiles (less memory)")
    g.add_argument("--stills-schedule", choices=["paper", "full"], default="paper",
                   help="paper: 40-step schedule stopped after 35 steps (denoise 0.88); full: all steps")
    g.add_argument("--stills-offload", choices=["auto", "none", "model", "sequential"], default="auto",
                   help="CPU offload (auto: model offload on CUDA GPUs under 48 GiB, e.g. 24 GB cards)")
    g.add_argument("--stills-fp8", action="store_true", help="fp8 transformer through torchao (extra 'fp8')")
    g.add_argument("--stills-size", type=int, default=None,
                   help="image height and width, a multiple of 16 (default 512, the paper's; 64 with --preset tiny)")
    g.add_argument("--stills-steps", type=int, default=40, help="schedule length before the denoise cut")
    g.add_argument("--stills-first-index", type=int, default=0, help="first identity index (for sharding)")
    g.add_argument("--stills-overwrite", action="store_true", help="regenerate stills already on disk")


def run(args: argparse.Namespace) -> int:
    from generator.stills.files import load_still, save_still, still_exists, still_filename
    from generator.stills.flux import SpeedOptions, quiet_libraries
    from generator.stills.generate import StillsGenerator
    from generator.stills.lora import LoraError
    from generator.weights import UnsafeWeightsError, WeightsNotFoundError
    from thermvision_db.tools.pictures import contact_sheet

    quiet_libraries()
    out = Path(args.out)
    indices = list(range(args.stills_first_index, args.stills_first_index + args.num_identities))
    todo = [i for i in indices if args.stills_overwrite or not still_exists(out, i)]
    if len(todo) < len(indices):
        print(f"{len(indices) - len(todo)} stills already in {out}; generating the other {len(todo)}")
    # the tiny preset's stills are 64 px, as in the whole pipeline (512 px tiny stills cost ~1 s each on a CPU)
    size = args.stills_size or (64 if args.preset == "tiny" else 512)
    if todo:
        speed = SpeedOptions(offload=args.stills_offload, vae_tiling=args.vae_tiling,
                             first_block_cache=args.first_block_cache, compile=args.compile, fp8=args.stills_fp8)
        try:
            generator = StillsGenerator.from_preset(
                args.preset, device=args.device, dtype=args.dtype, flux=args.flux, flux_base=args.flux_base,
                lora=args.lora, lora_scale=args.lora_scale,
                lora_allow_ignored_keys=args.lora_allow_ignored_keys, template=args.prompt_template, speed=speed,
                height=size, width=size, num_steps=args.stills_steps,
                schedule=args.stills_schedule, template_t5=args.prompt_template_t5, noise=args.stills_noise,
                noise_batch=args.noise_batch, noise_gpu=args.noise_gpu, lora_mode=args.lora_mode,
                lora_fp8_gpu=args.lora_fp8_gpu,
                **({"noise_seed": args.noise_seed} if args.noise_seed is not None else {}),
            )
        except (WeightsNotFoundError, UnsafeWeightsError, LoraError, ImportError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        batch_size = args.batch_size or 1  # per-image seeds: the batch size never changes a still
        for still in generator.iter_generate(todo, run_seed=args.seed, batch_size=batch_size):
            save_still(still, out)
    stills = [load_still(out / still_filename(i, ".png")) for i in indices]
    captions = [f"{s.index} {s.attributes['gender'][0].upper()} {s.attributes['expression']}" for s in stills]
    sheet_path = out / CONTACT_SHEET
    contact_sheet([s.image for s in stills], captions=captions).save(sheet_path)
    print(f"{len(stills)} stills in {out}; contact sheet {sheet_path}")
    return 0
