"""The one door between the loader and the generator: every use of `generator` by `thermvision_db` passes here.

The loader's core (schema, io, sources, tools, the builder) never imports the generator. The synthetic
configurations reach it through the functions below, and the `generate` / `evaluate` commands through
`COMMANDS`, an entry-point registry resolved by name when the CLI is built (as setuptools entry points are),
so the generator's evaluation code may itself read corpora through `load_dataset` without an import circle.

The generator is the top-level package `generator`, a common name: a user's own `generator.py` can shadow it.
Python puts the working directory (or the running script's folder) first on `sys.path`, so a file named
`generator.py` there would be imported instead. `check_generator_package` runs before any `import generator...`,
finds what that import would load without executing it, and names the file and what to do.

One `load_dataset` call builds the generation settings and their fingerprint (which stats every weight file)
once (`per_call.memo`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path

from thermvision_db.errors import ThermVisionError
from thermvision_db.hf.per_call import memo

OUR_PACKAGE = Path(__file__).resolve().parents[2] / "generator"
# name -> "module:attribute" of the generator's commands (each `add_*_parser(subparsers)` returns its parser)
COMMANDS = {
    "generate": ("generator.cli.generate:add_generate_parser", "generator.cli.generate:run_generate"),
    "evaluate": ("generator.cli.evaluate:add_evaluate_parser", None),
    "annotate": ("generator.cli.annotate:add_annotate_parser", "generator.cli.annotate:run_annotate"),
    "benchmark": ("generator.cli.benchmark:add_benchmark_parser", None),
}


# generator_options that choose how the corpus is made, not what it holds: never in the settings or fingerprint
ENGINE_OPTIONS = ("engine", "ray_address", "ray_workers", "max_retries")


class GeneratorShadowedError(ThermVisionError, ImportError):
    """`import generator` would load something other than thermvision-db's generator package."""


def _origin() -> str | None:
    module = sys.modules.get("generator")
    if module is not None:
        return getattr(module, "__file__", None)
    try:
        spec = importlib.util.find_spec("generator")  # locates; runs nothing
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None else None


def check_generator_package() -> None:
    """Raise `GeneratorShadowedError` naming the shadowing file unless `generator` is this installation's package."""
    origin = _origin()
    expected = OUR_PACKAGE / "__init__.py"
    if origin is not None and Path(origin).resolve() == expected:
        return
    if origin is None or origin in ("namespace", "built-in", "frozen"):
        raise GeneratorShadowedError(
            f"thermvision-db's generator package is not importable (expected {OUR_PACKAGE}); reinstall thermvision-db "
            "(pip install thermvision-db) to generate identities")
    shadow = Path(origin)
    raise GeneratorShadowedError(
        f"'import generator' would load {shadow}, not thermvision-db's generator package ({OUR_PACKAGE}): a file "
        f"named {shadow.name} in {shadow.parent} comes first on Python's path (the working directory or your "
        f"script's folder). Rename it (e.g. my_{shadow.name}, and delete {shadow.parent / '__pycache__'}/generator.*) "
        "or run from another folder.")


def _check_once() -> None:
    """`check_generator_package` once per `load_dataset` call (every call when none is running)."""
    memo(("generator-package",), lambda: check_generator_package() or True)


def _resolve(target: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def add_generator_commands(subparsers) -> None:
    """Register the generator's subcommands (`generate`, `evaluate`) on the CLI's subparsers."""
    _check_once()
    for add_parser, run in COMMANDS.values():
        parser = _resolve(add_parser)(subparsers)
        if run is not None:
            parser.set_defaults(func=_resolve(run))


# ------------------------------------------------------------------------------------ synthetic configurations
def check_identity_count(value) -> int:
    """`num_identities` as a plain integer within the generator's bounds, or one InputError line."""
    _check_once()
    from generator.corpus.workers import check_identity_count as check

    return check(value)


def generation_settings(preset: str, seed: int, motion: str | None, options: dict | None):
    """The generator's settings for a synthetic configuration (validated: unknown presets fail here)."""
    def make():
        _check_once()
        from generator.corpus.settings import GenerationSettings, default_motion

        settings = {k: v for k, v in (options or {}).items() if k not in ENGINE_OPTIONS}  # how, not what
        return GenerationSettings(preset=preset, seed=seed, motion=motion or default_motion(preset), **settings)

    return memo(("settings", json.dumps([preset, seed, motion, options], sort_keys=True, default=repr)), make)


def fingerprint(settings) -> str:
    """The settings' fingerprint (weight files by path, size and mtime), computed once per call."""
    # the settings are kept beside their fingerprint so that their id cannot be reused within the call
    return memo(("fingerprint", id(settings)), lambda: (settings, settings.fingerprint()))[1]


def default_output_dir(settings) -> Path:
    from generator.corpus.settings import generated_corpora_dir

    return generated_corpora_dir() / fingerprint(settings)


def generate(settings, output_dir: Path, num_identities: int, device: str | None, options: dict | None = None):
    """Make the missing identities of `output_dir` (waiting for other processes' claims); returns the run summary.
    `options` (generator_options) with engine="ray" runs the pipeline on Ray (ray_address, ray_workers, max_retries)."""
    from generator.corpus.pipeline import GenerationPipeline

    note = torchvision_note_once()
    if note:
        logging.getLogger(__name__).warning(note)
    engine = (options or {}).get("engine", "local")
    if engine not in ("local", "ray"):
        from thermvision_db.errors import InputError

        raise InputError(f"generator_options engine must be 'local' or 'ray', got {engine!r}")
    if engine == "ray":
        from generator.ray.engine import RayOptions, generate_on_ray

        ray_options = RayOptions(address=options.get("ray_address"), workers=options.get("ray_workers"),
                                 max_retries=int(options.get("max_retries", 2)))
        return generate_on_ray(settings, output_dir, num_identities, ray_options, device=device,
                               fingerprint=fingerprint(settings))

    pipeline = GenerationPipeline(settings, output_dir, device=device, fingerprint=fingerprint(settings))
    summary = pipeline.run(num_identities)
    if not summary.failures:
        pipeline.wait_for_identities(num_identities)
    return summary


def torchvision_note_once() -> str | None:
    """One line when an installed torchvision cannot import (it is then marked absent); None otherwise or said before."""
    _check_once()
    from generator.vision_check import note_once

    return note_once()


def generator_code_hash() -> str:
    """The generator's code decides the pixels and labels of a generated corpus: every file of the package."""
    _check_once()
    digest = hashlib.sha256()
    for path in sorted(OUR_PACKAGE.rglob("*.py")):
        if "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(OUR_PACKAGE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]
