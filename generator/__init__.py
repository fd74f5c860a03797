"""The ThermVision generator: FLUX.1-dev + thermal LoRA stills, thermal LivePortrait animation, annotation.

Importable as `generator`; the loader (`thermvision_db`) never imports it except for the `synthetic` configs.
"""
