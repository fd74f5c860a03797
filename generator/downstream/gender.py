"""Does a synthetic corpus help a thermal gender classifier? The paper's table, on the user's own data.

`benchmark_gender` trains each model (ResNet-18, MobileNet-V2, EfficientNet-B0) in each regime over several seeds:

- `synthetic`: trained on the synthetic corpora only;
- `hybrid`: trained on the synthetic corpora and the real training subjects;
- `real`: trained on the real training subjects only.

Every regime of one seed is tested on the same held-out real subjects (5 per class by default, as the paper's
subject-based split), so the columns compare. Without a real set only `synthetic` runs, tested on held-out
synthetic subjects. results.json, report.md and gender_accuracy.png are written into `out_dir`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from generator.downstream import records
from generator.downstream.gender_data import GenderDataError, cap_frames, read_corpus, read_real
from generator.downstream.gender_train import (ImageCache, resolve_device, select, split_subjects,
                                               subject_genders, train_once)

MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0")
REGIMES = ("synthetic", "hybrid", "real")
METRICS = ("accuracy", "balanced_accuracy", "recall_female", "recall_male")


def _regimes(regimes, has_synthetic: bool, has_real: bool) -> tuple[str, ...]:
    possible = tuple(r for r in REGIMES if (r != "real" or has_real) and (r == "real" or has_synthetic)
                     and (r != "hybrid" or has_real))
    if regimes is None:
        return possible
    for regime in regimes:
        if regime not in REGIMES:
            raise GenderDataError(f"--regimes: unknown regime {regime!r}; choose from {', '.join(REGIMES)}")
        if regime not in possible:
            need = "a real set (--real)" if regime == "real" or not has_real else "synthetic corpora (--synthetic)"
            raise GenderDataError(f"--regimes {regime}: needs {need}" +
                                  (" and synthetic corpora" if regime == "hybrid" and not has_synthetic else ""))
    return tuple(regimes)


def load_sources(synthetic: Sequence, real, frames_per_subject: int, crop: str = "face", cache_dir=None,
                 real_test=None):
    """(synthetic, real or None, real test or None) samples; subject ids prefixed `syn<i>/`, `real/` and `real-test/`
    so sources never share one."""
    syn = []
    for index, path in enumerate(synthetic):
        syn += read_corpus(path, frames_per_subject, tag=f"syn{index}/", crop=crop, cache_dir=cache_dir)

    def real_set(path, option, prefix):
        if path is None:
            return None
        samples = cap_frames(read_real(path, option), frames_per_subject)
        return [dataclasses.replace(s, subject=f"{prefix}/{s.subject}") for s in samples]

    return syn, real_set(real, "--real", "real"), real_set(real_test, "--real-test", "real-test")


def seed_splits(syn, real, seed: int, test_per_class: int, val_per_class: int, real_test=None) -> dict:
    """{'synthetic': {train, val, test}, 'real': {...}, 'real-test': {test}}: the test subjects are the whole
    --real-test set when given, else held out of the real set when there is one, else of the synthetic corpora."""
    out = {}
    if real is not None:
        out["real"] = split_subjects(subject_genders(real), 0 if real_test else test_per_class, val_per_class, seed,
                                     "--real")
    if syn:
        held_out = real is None and real_test is None
        out["synthetic"] = split_subjects(subject_genders(syn), test_per_class if held_out else 0, val_per_class,
                                          seed, "--synthetic")
    if real_test is not None:
        out["real-test"] = {"train": [], "val": [], "test": sorted(subject_genders(real_test))}
    return out


def regime_sets(regime: str, syn, real, splits: dict, real_test=None) -> dict[str, list]:
    """The train, val and test samples of one regime."""
    parts = {"synthetic": [("synthetic", syn)], "real": [("real", real)], "hybrid": [("synthetic", syn), ("real", real)]}
    sets = {name: [] for name in ("train", "val")}
    for source, samples in parts[regime]:
        for name in sets:
            sets[name] += select(samples, splits[source][name])
    test_source, samples = next((k, v) for k, v in (("real-test", real_test), ("real", real), ("synthetic", syn))
                                if v is not None)
    sets["test"] = select(samples, splits[test_source]["test"])
    return sets


def summarise(runs: list[dict]) -> dict:
    """{model: {regime: {metric: {mean, std, values}}}} over seeds (std: population std, 0 for one seed)."""
    summary: dict = {}
    for run in runs:
        cell = summary.setdefault(run["model"], {}).setdefault(run["regime"], {m: [] for m in METRICS})
        for metric in METRICS:
            cell[metric].append(run[metric])
    for model in summary.values():
        for regime, cell in model.items():
            model[regime] = {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
                             for m, v in cell.items()}
    return summary


def benchmark_gender(synthetic: Sequence[str | os.PathLike] = (), real: str | os.PathLike | None = None,
                     models: Sequence[str] = MODELS, regimes: Sequence[str] | None = None,
                     seeds: Sequence[int] = (0, 1, 2), epochs: int = 10, image_size: int = 112, batch_size: int = 32,
                     lr: float = 1e-3, weight_decay: float = 1e-4, frames_per_subject: int = 16,
                     test_subjects_per_class: int = 5, val_subjects_per_class: int = 1, crop: str = "face",
                     weights: dict | None = None, device: str = "auto", num_workers: int = 0, threads: int | None = None,
                     out_dir: str | os.PathLike = "gender_benchmark", cache_dir: str | None = None,
                     progress: bool = True, real_test: str | os.PathLike | None = None) -> dict:
    """Train and test every (model, regime, seed); write results.json, report.md and gender_accuracy.png; return
    the results dict. `real_test`: a separate real set used only as the test set (all its subjects); otherwise
    the test subjects are held out of `real` (or of the synthetic corpora without `real`). See the module
    docstring and docs/downstream-gender.md."""
    args = dict(locals())
    from generator.downstream.classifiers import model_class

    started, cpu_started = time.time(), time.process_time()
    args.update(synthetic=[str(p) for p in synthetic], real=None if real is None else str(real),
                real_test=None if real_test is None else str(real_test), seeds=list(seeds), models=list(models),
                weights={k: str(v) for k, v in (weights or {}).items()})
    if not synthetic and real is None:
        raise GenderDataError("give synthetic corpora (--synthetic) and/or a real set (--real)")
    for name in models:
        model_class(name)
    if crop not in ("face", "frame"):
        raise GenderDataError(f"--crop {crop!r}: choose face or frame")
    if epochs < 1 or image_size < 32 or batch_size < 2 or frames_per_subject < 1 or not seeds:
        raise GenderDataError("--epochs >= 1, --image-size >= 32, --batch-size >= 2, --frames-per-subject >= 1 "
                              "and at least one --seeds value are needed")
    args["regimes"] = _regimes(regimes, bool(synthetic), real is not None)
    args["device"] = resolve_device(device)
    import torch

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)  # on a shared CPU, fewer threads than cores is often much faster
    try:
        return _benchmark(args, dict(weights or {}), started, cpu_started)
    finally:
        torch.set_num_threads(previous_threads)


def _benchmark(args: dict, weights: dict, started: float, cpu_started: float) -> dict:
    import torch

    models, regimes, seeds = args["models"], args["regimes"], args["seeds"]
    syn, real, real_test = load_sources(args["synthetic"], args["real"], args["frames_per_subject"], args["crop"],
                                        args["cache_dir"], args["real_test"])
    cache = ImageCache(args["image_size"])
    runs, splits = [], {}
    bar = tqdm(total=len(seeds) * len(models) * len(regimes), desc="gender benchmark", disable=not args["progress"])
    for seed in seeds:
        splits[str(seed)] = seed_splits(syn, real, seed, args["test_subjects_per_class"],
                                        args["val_subjects_per_class"], real_test)
        for regime in regimes:
            sets = regime_sets(regime, syn, real, splits[str(seed)], real_test)
            tensors = {name: cache.tensors(samples) for name, samples in sets.items()}
            for model in models:
                result = train_once(model, tensors["train"], tensors["val"], tensors["test"], seed=seed,
                                    epochs=args["epochs"], batch_size=args["batch_size"], lr=args["lr"],
                                    weight_decay=args["weight_decay"], device=args["device"],
                                    weights=weights.get(model), num_workers=args["num_workers"],
                                    progress=args["progress"], desc=f"{model} {regime} seed {seed}")
                runs.append({"model": model, "regime": regime, "seed": seed,
                             "images": {k: len(v) for k, v in sets.items()}, **result})
                bar.update(1)
    bar.close()
    test_set = ("the real test set (--real-test, all its subjects)" if real_test is not None else
                "held-out real subjects" if real is not None else "held-out synthetic subjects")
    results = {**records.run_record("gender", {k: v for k, v in args.items() if k not in ("regimes", "device")},
                                    {m: weights.get(m) for m in models}),
               "device": args["device"], "threads": torch.get_num_threads(), "regimes": list(regimes),
               "models": list(models), "seeds": list(seeds), "test_set": test_set,
               "initialisation": {m: next(r["initialisation"] for r in runs if r["model"] == m) for m in models},
               "subjects": {name: len(subject_genders(samples)) if samples is not None else 0
                            for name, samples in (("synthetic", syn), ("real", real), ("real-test", real_test))},
               "splits": splits, "summary": summarise(runs), "runs": runs,
               "time": {"wall_s": time.time() - started, "cpu_s": time.process_time() - cpu_started}}
    out = Path(args["out_dir"])
    results["plots"] = write_plots(out, results)
    records.write_results(out, results, render_report(results))
    return results


def _cell(summary: dict, model: str, regime: str, metric: str) -> str:
    value = summary.get(model, {}).get(regime, {}).get(metric)
    if value is None or value["mean"] != value["mean"]:
        return "n/a"
    return f"{value['mean']:.3f} ± {value['std']:.3f}"


def render_report(results: dict) -> str:
    """report.md: the paper-like table (rows models, columns regimes), the other metrics, splits and provenance."""
    summary, regimes, models = results["summary"], results["regimes"], results["models"]
    seeds = results["seeds"]
    lines = [f"# Gender classification benchmark\n",
             f"Accuracy (mean ± std over {len(seeds)} seed{'s' if len(seeds) != 1 else ''}: "
             f"{', '.join(map(str, seeds))}), tested on {results['test_set']}.\n",
             records.markdown_table(["model", *regimes], [[m, *(_cell(summary, m, r, "accuracy") for r in regimes)]
                                                           for m in models])]
    for metric in ("balanced_accuracy", "recall_female", "recall_male"):
        lines += [f"\n{metric.replace('_', ' ').capitalize()}:\n",
                  records.markdown_table(["model", *regimes], [[m, *(_cell(summary, m, r, metric) for r in regimes)]
                                                               for m in models])]
    lines.append("\n## Initialisation\n")
    lines += [f"- {m}: {init}" + (f" (sha256 {results['weights'][m]['sha256']})" if results["weights"].get(m) else "")
              for m, init in results["initialisation"].items()]
    args = results["arguments"]
    lines += ["\n## Setup\n",
              f"- synthetic corpora: {', '.join(args['synthetic']) or 'none'}; real set: {args['real'] or 'none'}"
              + (f"; real test set: {args['real_test']}" if args.get("real_test") else ""),
              f"- subjects: {results['subjects']['synthetic']} synthetic, {results['subjects']['real']} real"
              + (f", {results['subjects']['real-test']} real test" if args.get("real_test") else "") + "; "
              f"{args['test_subjects_per_class']} test and {args['val_subjects_per_class']} validation subjects per "
              f"class, drawn per seed; at most {args['frames_per_subject']} frames per subject",
              f"- {args['epochs']} epochs, image {args['image_size']}x{args['image_size']} ({args['crop']} crop), batch "
              f"{args['batch_size']}, AdamW lr {args['lr']}, weight decay {args['weight_decay']}, device "
              f"{results['device']} ({results['threads']} CPU thread{'s' if results['threads'] != 1 else ''})",
              f"- versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}",
              f"- time: {results['time']['wall_s']:.1f} s wall, {results['time']['cpu_s']:.1f} s CPU"]
    lines.append("\n## Splits (subject ids)\n")
    for seed, per_source in results["splits"].items():
        for source, split in per_source.items():
            lines.append(f"- seed {seed}, {source}: " + "; ".join(f"{name} ({len(ids)}): {', '.join(ids) or 'none'}"
                                                                   for name, ids in split.items()))
    lines += ["", *(f"![{name}]({name})" for name in results.get("plots", []))]
    return "\n".join(lines) + "\n"


def write_plots(out: Path, results: dict) -> list[str]:
    """gender_accuracy.png: accuracy and balanced accuracy per model, one bar per regime."""
    from generator.evaluate.plots import bar_chart, chart_panels
    from thermvision_db.io.atomic import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    summary, models = results["summary"], results["models"]
    charts = [bar_chart(models, {r: [summary[m][r][metric]["mean"] for m in models] for r in results["regimes"]},
                        f"gender {metric.replace('_', ' ')} (mean over {len(results['seeds'])} seeds"
                        + (f"; regime {results['regimes'][0]})" if len(results["regimes"]) == 1 else ")"),
                        y_max=1.0, reference=(0.5, "chance"))
              for metric in ("accuracy", "balanced_accuracy")]
    atomic_write_bytes(out / "gender_accuracy.png", chart_panels(charts))
    return ["gender_accuracy.png"]
