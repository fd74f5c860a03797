"""Stage 1, stills: identity prompts -> FLUX.1-dev + thermal LoRA through diffusers -> 512x512 white-hot stills."""

from generator.vision_check import block_broken_torchvision

block_broken_torchvision()  # before diffusers/transformers: a torchvision that cannot import is marked absent

PRESETS = ("thermvision", "tiny")  # one list of presets for every stage (here: readable without importing torch)
