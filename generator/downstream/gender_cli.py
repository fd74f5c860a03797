"""`thermvision-db benchmark gender`: the paper's gender classifiers trained on synthetic, hybrid or real data.

Only the standard library is imported here; the work (torch, the loader) is imported by `run`.
"""

from __future__ import annotations


HELP = "train ResNet-18 / MobileNet-V2 / EfficientNet-B0 gender classifiers (synthetic, hybrid, real regimes) on subject-disjoint splits"
MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0")


def add_arguments(parser) -> None:
    parser.add_argument("--synthetic", action="append", default=[], metavar="CORPUS",
                        help="a corpus folder: released/miniature (frames) or generated (has run.json); repeatable")
    parser.add_argument("--real", metavar="PATH", default=None,
                        help="a real set: a folder with female/ and male/ (subject subfolders or <subject>_*.png) "
                             "or a CSV path,gender,subject")
    parser.add_argument("--real-test", metavar="PATH", default=None,
                        help="a separate real set (same layouts) used only for testing, all its subjects; "
                             "default: test subjects held out of --real")
    parser.add_argument("--out", required=True, help="folder for results.json, report.md and gender_accuracy.png")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--regimes", nargs="+", default=None, choices=("synthetic", "hybrid", "real"),
                        help="default: every regime the given sources allow")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--frames-per-subject", type=int, default=16, help="frames per subject, sampled evenly")
    parser.add_argument("--test-subjects-per-class", type=int, default=5, help="held-out test subjects per gender")
    parser.add_argument("--val-subjects-per-class", type=int, default=1, help="validation subjects per gender")
    parser.add_argument("--crop", choices=("face", "frame"), default="face",
                        help="corpora: the labelled face box with a 10%% margin, or the whole frame")
    parser.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                        help="torchvision ImageNet weights (.safetensors, or .pth read with weights_only=True); "
                             "without them: random initialisation")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cache-dir", default=None, help="datasets cache for the corpora")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from pathlib import Path

    from generator.downstream.classifiers import parse_weights
    from generator.downstream.gender import benchmark_gender

    results = benchmark_gender(  # project errors are printed in one line by the CLI's main
        synthetic=args.synthetic, real=args.real, real_test=args.real_test, models=args.models, regimes=args.regimes,
        seeds=args.seeds,
        epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, frames_per_subject=args.frames_per_subject,
        test_subjects_per_class=args.test_subjects_per_class, val_subjects_per_class=args.val_subjects_per_class,
        crop=args.crop, weights=parse_weights(args.weights, args.models), device=args.device,
        num_workers=args.num_workers, threads=args.threads, out_dir=args.out, cache_dir=args.cache_dir, progress=not args.no_progress)

    print((Path(args.out) / "report.md").read_text().split("\n## Initialisation")[0])
    print(f"wrote {Path(args.out) / 'results.json'}, report.md and {', '.join(results['plots'])}")
    return 0
