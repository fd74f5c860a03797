"""`--engine ray`: the corpus pipeline as Ray actors (stills, then animation + labels + files), see docs/ray.md."""
