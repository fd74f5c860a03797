"""Stage 2, animation: the clean-room thermal LivePortrait (`liveportrait/`) driven by motion sources (`motion/`)."""
