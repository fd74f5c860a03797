"""The `datasets` layer: the builder, `load_dataset`, its cache key, and the one door to the generator."""
