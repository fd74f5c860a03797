"""Stage 1, stills: identity prompts -> FLUX.1-dev + thermal LoRA through diffusers -> 512x512 white-hot stills."""
