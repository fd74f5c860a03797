"""The ThermVision generator: FLUX.1-dev + thermal LoRA stills, thermal LivePortrait animation, annotation.

Importable as `generator`. It uses the loader's schema, io and errors (and reads corpora through `load_dataset`);
the loader reaches it only through one door, `thermvision_db/hf/door.py` (see docs/architecture.md).
"""
