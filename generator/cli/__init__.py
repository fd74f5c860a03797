"""The generator's command line, in one place: `thermvision-db generate` (stills, animate, all) and `evaluate`."""
